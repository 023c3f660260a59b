"""Reading BERT input records (MindRecord or TFRecord) into batched MindSpore datasets.

Every file is checked before training starts (columns present, sequence length as configured),
so a wrong path or stale conversion fails in one line instead of deep inside the data pipeline.
Columns come out under the model's (Hugging Face's) names, in its input order: input_ids,
attention_mask, token_type_ids (int32, (B, T)); with labels, label_ids ((B,), int32 for
classification, float32 for regression; (B, T) for per-token labels); on request example_id
((B,), int64). The records keep the model zoo's names (input_mask, segment_ids); this module is
the one place that maps them. Records with the teacher's own tokenization (glue_to_records
--teacher_vocab_file) can also give teacher_input_ids, teacher_attention_mask,
teacher_token_type_ids, right after the student's three; `teacher_and_student_batches` hands each
model its own.

T is seq_length with `padding='max_length'`. With 'longest' each batch is cut to its longest
example, with 'buckets' to the next of a few lengths: only columns that are padding in every row
of the batch are removed, so masked models give the same outputs, and the few bucket lengths
bound the number of graphs GRAPH_MODE compiles (one per input shape).
"""
import json
import logging
import re
from pathlib import Path

import numpy as np
import mindspore as ms
import mindspore.dataset as ds
import mindspore.dataset.transforms as transforms

from src.cli import require_file
from src.logger import LOGGER_NAME
from src.records_writer import EXAMPLE_ID_COLUMN, FORMATS, ID_COLUMNS, LABEL_COLUMN, TEACHER_ID_COLUMNS

# Record column (zoo name) -> model input (Hugging Face name), in the model's input order.
MODEL_INPUTS = dict(zip(ID_COLUMNS, ("input_ids", "attention_mask", "token_type_ids")))
TEACHER_INPUTS = dict(zip(TEACHER_ID_COLUMNS, (f"teacher_{name}" for name in MODEL_INPUTS.values())))
PADDING = ("max_length", "longest", "buckets")
_FILE_PATTERNS = {"mindrecord": re.compile(r".*\.mindrecord\d*"), "tfrecord": re.compile(r".*\.tfrecord")}


def record_files(path, data_format):
    """The record files `path` names: the file itself, or every record file in a folder, sorted.

    In a folder, MindRecord files are `*.mindrecord` and MindSpore's shards `*.mindrecordN`
    (their `.db` index files are not records); TFRecord files are `*.tfrecord`.
    """
    if data_format not in FORMATS:
        raise ValueError(f"data_format {data_format!r} is not one of {', '.join(FORMATS)}")
    path = Path(path)
    if path.is_file():
        files = [str(path)]
    elif path.is_dir():
        files = sorted(str(f) for f in path.iterdir()
                       if f.is_file() and _FILE_PATTERNS[data_format].fullmatch(f.name))
        if not files:
            raise FileNotFoundError(f"no {data_format} files in folder {path}: convert the data first, "
                                    f"or set the data format to the one the files have")
    else:
        hint = f" (sharded MindRecord files are named {path.name}0, {path.name}1, ...: pass their folder)" \
            if data_format == "mindrecord" and path.with_name(path.name + "0").is_file() else ""
        raise FileNotFoundError(f"data path {path} does not exist{hint}")
    if data_format == "tfrecord":
        # MindSpore refuses an empty TFRecord file, which is what a shard without rows is.
        files = [f for f in files if Path(f).stat().st_size > 0]
        if not files:
            raise ValueError(f"the tfrecord files of {path} hold no records: convert the data again")
    return files


def _source(path, files, data_format):
    """What to hand to MindSpore: one MindRecord file stands for its whole shard set (`name0` brings
    `name1`, ... as `MindDataset` does), so a zoo-style path to the first shard reads all of them."""
    return files[0] if data_format == "mindrecord" and Path(path).is_file() else files


def _first_row(file, data_format, columns):
    """The first record of one file, or None for an empty shard."""
    reader = ds.MindDataset if data_format == "mindrecord" else ds.TFRecordDataset

    def peek(columns_list):
        data = reader([file], columns_list=columns_list, shuffle=False, num_samples=1)
        return next(data.create_dict_iterator(num_epochs=1, output_numpy=True), None)

    try:
        return peek(columns)  # naming the columns spares a TFRecord performance warning per file
    except RuntimeError:
        pass
    try:
        return peek(None)  # every column the file has, so the check can name the missing one
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if line.startswith("[ERROR]")), lines[0]).removeprefix("[ERROR] ")
        raise ValueError(f"record file {file} is not a readable {data_format} file ({reason}): "
                         f"convert the data again, or set the data format to the one the file has") from None


def _check_files(files, data_format, columns, seq_length):
    """Raises if a file lacks a column or stores sequences of another length; returns a first row."""
    rows = {file: _first_row(file, data_format, columns) for file in files}
    rows = {file: row for file, row in rows.items() if row is not None}
    if not rows:
        raise ValueError(f"record files {', '.join(files)} hold no records: convert the data again")
    for file, row in rows.items():
        for name in columns:
            if name not in row:
                fix = {LABEL_COLUMN: "convert labelled data with src.glue_to_records",
                       EXAMPLE_ID_COLUMN: "convert the data again with src.glue_to_records, which writes example ids",
                       **dict.fromkeys(TEACHER_ID_COLUMNS, "convert the data again with src.glue_to_records "
                                                           "--teacher_vocab_file")
                       }.get(name, "convert the text with src.corpus_to_records or src.glue_to_records")
                raise ValueError(f"record file {file} has no column {name!r} (it has {', '.join(row)}): {fix}")
        stored = row[ID_COLUMNS[0]].shape[-1]
        if stored != seq_length:
            raise ValueError(f"record file {file} stores sequences of length {stored} but seq_length is "
                             f"{seq_length}: set seq_length to {stored} or convert again with --seq_length "
                             f"{seq_length}")
    return next(iter(rows.values()))


def _read_schema(schema_file):
    """The columns a TFRecord schema json declares; raises if the file is missing or not such a json."""
    path = Path(schema_file)
    require_file(path, "schema file", "pass the .schema.json written beside the TFRecord files, or leave it empty")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        schema = None
    if not isinstance(schema, dict) or not isinstance(schema.get("columns"), dict):
        raise ValueError(f"schema file {path} is not a MindSpore schema json (an object with a \"columns\" "
                         f"mapping): pass the .schema.json written beside the TFRecord files, or leave it empty")
    return schema["columns"]


def _check_schema(schema_file, columns, seq_length):
    """Raises if a TFRecord schema json lacks a required column or declares another length."""
    declared = _read_schema(schema_file)
    for name in columns:
        if name not in declared:
            raise ValueError(f"schema file {schema_file} has no column {name!r}: add it, or leave the schema "
                             f"empty to read the columns from the records")
        shape = declared[name].get("shape")
        if name in ID_COLUMNS and shape and shape[-1] != seq_length:
            raise ValueError(f"schema file {schema_file} declares {name} of length {shape[-1]} but seq_length is "
                             f"{seq_length}: set seq_length to {shape[-1]} or convert again")


def stored_seq_length(path, data_format):
    """The sequence length the records of `path` store: the last dimension of the first record's
    input_ids, in the first file that holds records. For readers whose model takes any length (the
    deploy folder's ONNX files), where `create_dataset` must be given the records' own length.

    Raises:
        FileNotFoundError, ValueError: as `record_files`; ValueError when no file holds records.
    """
    for file in record_files(path, data_format):
        row = _first_row(file, data_format, [ID_COLUMNS[0]])
        if row is not None:
            return int(row[ID_COLUMNS[0]].shape[-1])
    raise ValueError(f"record files of {path} hold no records: convert the data again")


def count_examples(path, data_format, schema_file=""):
    """Number of records in `path` (a file or a folder of record files)."""
    files = record_files(path, data_format)
    if data_format == "mindrecord":
        return ds.MindDataset(_source(path, files, data_format), shuffle=False).get_dataset_size()
    if schema_file:
        _read_schema(schema_file)
    return ds.TFRecordDataset(files, schema=schema_file or None, shuffle=False).get_dataset_size()


def _column_batches(path, data_format, columns, schema_file):
    """Batches of the named columns of every record of `path`, in file order, as numpy arrays."""
    files = record_files(path, data_format)
    if data_format == "mindrecord":
        data = ds.MindDataset(_source(path, files, data_format), columns_list=list(columns), shuffle=False)
    else:
        data = ds.TFRecordDataset(files, schema=schema_file or None, columns_list=list(columns), shuffle=False)
    return data.batch(4096).create_tuple_iterator(output_numpy=True, num_epochs=1)


def label_values(path, data_format, label_columns, schema_file=""):
    """Every label value of every record in `path`, flattened: (N * values per record,), in file order.

    Reads only the label columns, so checking a task's labels in full before training costs one
    quick pass. Call it after `create_dataset` has checked the same files (columns, lengths).
    """
    values = [column.reshape(-1) for batch in _column_batches(path, data_format, label_columns, schema_file)
              for column in batch]
    return np.concatenate(values) if values else np.zeros(0)


def largest_token_id(path, data_format, schema_file="", column=ID_COLUMNS[0]):
    """The largest id in `column` (input_ids, or the teacher's teacher_input_ids) of every record in
    `path` (-1 for no records): one streaming pass, so a corpus is checked against the vocabulary
    before training starts. Call it after `create_dataset` has checked the same files."""
    return max((int(batch[0].max()) for batch in _column_batches(path, data_format, (column,), schema_file)),
               default=-1)


def has_teacher_inputs(path, data_format, schema_file=""):
    """Whether the records of `path` carry the teacher's own token columns (any of
    TEACHER_ID_COLUMNS; `create_dataset` then requires all three). Read from the TFRecord schema json
    when one is given, else from the first record.

    Raises:
        FileNotFoundError, ValueError: as `record_files`, or the first file is not readable records.
    """
    if data_format == "tfrecord" and schema_file:
        return any(name in _read_schema(schema_file) for name in TEACHER_ID_COLUMNS)
    files = record_files(path, data_format)
    row = next((row for row in (_first_row(file, data_format, list(ID_COLUMNS + TEACHER_ID_COLUMNS))
                                for file in files) if row is not None), {})
    return any(name in row for name in TEACHER_ID_COLUMNS)


def teacher_and_student_batches(batch, with_teacher_inputs):
    """(the teacher's batch, the student's batch) of one `create_dataset` batch.

    With teacher inputs the batch is (input_ids, attention_mask, token_type_ids, teacher_input_ids,
    teacher_attention_mask, teacher_token_type_ids, *rest): each model gets its own three inputs, in
    the model's order, followed by the shared rest (labels, example ids). Without, both get `batch`.
    """
    if not with_teacher_inputs:
        return batch, batch
    width = len(MODEL_INPUTS)
    rest = tuple(batch[2 * width:])
    return tuple(batch[width:2 * width]) + rest, tuple(batch[:width]) + rest


def fit_buckets(row_lengths, batch_size, num_buckets):
    """The `num_buckets` padding lengths that cut the most padding from shuffled batches of this data.
    (Batches in a known order: their longest rows' lengths as `row_lengths`, and batch_size 1.)

    A batch of `batch_size` rows is padded to the shortest bucket that holds its longest row. With
    F(x) the fraction of rows of length <= x, a batch of rows drawn at random has its longest row
    <= x with probability P(x) = F(x) ** batch_size (drawing with replacement, close to a shuffled
    epoch's draw for more than a few batches of rows), so buckets b_1 < ... < b_K pad a batch to
    sum_k b_k * (P(b_k) - P(b_{k-1})) positions a row on average. Dynamic programming over the
    lengths that occur gives the K lengths with the least of it, the longest row's length the last.
    (Written here, not taken from a library: it is the padding model of this pipeline, a few lines.)

    Args:
        row_lengths (np.ndarray): (N,) ints, each row's length in tokens (its attention-mask ones).
        batch_size (int): rows per batch.
        num_buckets (int): how many lengths to choose, at least 1 (`data.buckets` as a number).

    Returns:
        list[int]: at most `num_buckets` ascending lengths (fewer when fewer distinct lengths occur),
        ending with the longest row's length.

    Raises:
        ValueError: num_buckets is not a positive whole number, or there are no rows.
    """
    if isinstance(num_buckets, bool) or not isinstance(num_buckets, int) or num_buckets < 1:
        raise ValueError(f"data.buckets: {num_buckets!r} must be a positive number of buckets to fit to the "
                         f"data, like 4, or a list of lengths, like [32, 64, 96]")
    row_lengths = np.asarray(row_lengths)
    if row_lengths.size == 0:
        raise ValueError("no rows to fit padding buckets to: convert the data again")
    lengths = np.unique(np.maximum(row_lengths, 1))  # the candidate lengths, ascending
    share = np.searchsorted(np.sort(row_lengths), lengths, side="right") / row_lengths.size  # F at each
    below = share ** batch_size  # P(longest row of a batch <= length)
    count = min(num_buckets, lengths.size)
    # cost[i]: least expected width of the batches whose longest row is <= lengths[i], with a bucket
    # at lengths[i] and the buckets so far below it; previous[j][i]: the bucket before it.
    cost = lengths * below
    previous = []
    for _ in range(count - 1):
        options = cost[None, :] + lengths[:, None] * (below[:, None] - below[None, :])  # [i, h]: h below i
        options[np.triu_indices(lengths.size)] = np.inf
        options[0, 0] = cost[0]  # the lowest length can only be the lowest bucket
        best = options.argmin(axis=1)
        previous.append(best)
        cost = options[np.arange(lengths.size), best]
    chosen = [lengths.size - 1]
    for best in reversed(previous):
        chosen.append(best[chosen[-1]])
    return sorted({int(lengths[i]) for i in chosen})


def padding_lengths(padding, buckets, seq_length):
    """The lengths batches are padded to, checked: what `data.padding` and `data.buckets` mean.

    Args:
        padding (str): 'max_length' (every batch to seq_length, as the records store it),
            'longest' (each batch to its longest example) or 'buckets' (to the shortest bucket that
            holds its longest example).
        buckets (list[int]): ascending bucket lengths, each at most seq_length; seq_length is
            always the last bucket (`fit_buckets` turns a number of buckets into lengths first).
            Used with 'buckets' only.
        seq_length (int): the length the records store.

    Returns:
        tuple[int] | None: the allowed lengths, ascending and ending with seq_length; None for
        'longest' (any length up to seq_length).

    Raises:
        ValueError: an unknown padding, or buckets that are not ascending positive lengths up to
            seq_length; the message names the setting.
    """
    if padding not in PADDING:
        raise ValueError(f"data.padding: {padding!r} is not one of {', '.join(PADDING)}")
    if padding == "max_length":
        return (seq_length,)
    if padding == "longest":
        return None
    if not buckets or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in buckets):
        raise ValueError(f"data.buckets: {list(buckets)} must be positive whole lengths, like [32, 64, 96], "
                         f"or a number of buckets to fit to the data, like 4")
    if any(a >= b for a, b in zip(buckets, buckets[1:])):
        raise ValueError(f"data.buckets: {list(buckets)} must be in ascending order without repeats, "
                         f"like {sorted(set(buckets))}")
    if buckets[-1] > seq_length:
        raise ValueError(f"data.buckets: {buckets[-1]} exceeds seq_length {seq_length}: use buckets up to "
                         f"seq_length (seq_length itself is always the last bucket)")
    return tuple(buckets) + ((seq_length,) if buckets[-1] < seq_length else ())


def _row_lengths(path, data_format, schema_file):
    """(N,) each record's length (its input_mask's ones), in file order: one pass over that column.
    Call it after `create_dataset` has checked the files."""
    return np.concatenate([batch[0].sum(axis=1) for batch in
                           _column_batches(path, data_format, (ID_COLUMNS[1],), schema_file)])


def _fitted_buckets(row_lengths, batch_size, num_buckets, known_batches, path):
    """`fit_buckets` for rows of these lengths, logged. With `known_batches` (the rows are read in
    the order given, unshuffled and unsharded) the fit is to the batches' longest rows exactly."""
    if known_batches:
        row_lengths = np.maximum.reduceat(row_lengths, np.arange(0, row_lengths.size, batch_size))
    buckets = fit_buckets(row_lengths, 1 if known_batches else batch_size, num_buckets)
    logging.getLogger(LOGGER_NAME).info("padding: batches of %d rows of %s cut to %s (data.buckets fitted to "
                                        "their lengths)", batch_size, path, ", ".join(map(str, buckets)))
    return buckets


def _flatten(values):
    """(B, 1) labels or example ids, as a TFRecord schema with rank 1 declares them, to (B,)."""
    return values.reshape(-1)


def _cut_padding(lengths):
    """Batch map cutting (B, seq_length) columns to the batch's longest example, or the next of `lengths`.

    Only trailing positions that are padding in every row (attention_mask 0) are removed, so every
    real token stays where it was. The mask is the second column (the model's input order).
    """
    def cut(*columns):
        used = np.flatnonzero(columns[1].any(axis=0))
        longest = int(used[-1]) + 1 if used.size else 1
        width = longest if lengths is None else lengths[np.searchsorted(lengths, longest)]
        return tuple(column[:, :width] for column in columns)
    return cut


def create_dataset(path, data_format, batch_size, seq_length, with_labels, shuffle=True, num_shards=1,
                   shard_id=0, drop_remainder=True, schema_file="", seed=0, padding="max_length", buckets=4,
                   with_example_ids=False, label_columns=(LABEL_COLUMN,), with_teacher_inputs=False, by_length=False):
    """Batched dataset of BERT inputs (and labels) from MindRecord or TFRecord files.

    Sharding gives each of `num_shards` ranks an equal number of rows, disjoint and together
    complete when the row count divides by `num_shards`; otherwise MindSpore repeats up to
    num_shards - 1 rows so every rank runs the same number of steps. Shuffling is global and
    reshuffles every epoch, at any shard count, for both formats. Padding is cut after batching,
    so the rows, their order and their batches are the same with every `padding`. A pass whose
    order does not matter (the teacher-logits cache, evaluation) can read the rows shortest first
    (`by_length`): its batches then hold rows of like lengths, and padding cuts the most.

    Args:
        path (str): a record file, or a folder of them (see `record_files`); a MindRecord file
            brings the other shards of its set, as `MindDataset` does.
        data_format (str): 'mindrecord' or 'tfrecord'.
        batch_size (int): rows per batch.
        seq_length (int): the sequence length the records must have.
        with_labels (bool): also return label_ids (task distillation, evaluation).
        shuffle (bool): shuffle rows every epoch. Default: True.
        num_shards (int): number of data-parallel ranks. Default: 1.
        shard_id (int): this rank. Default: 0.
        drop_remainder (bool): drop the last partial batch; False for evaluation, so every
            example is seen. Default: True.
        schema_file (str): TFRecord schema json; empty to read the columns from the records.
            Default: "".
        seed (int): dataset seed, set globally so every rank draws the same shuffle and the
            shards stay disjoint. Default: 0.
        padding (str): 'max_length', 'longest' or 'buckets' (see `padding_lengths`).
            Default: 'max_length'.
        buckets (int | list[int]): for padding='buckets', a number of lengths to fit to the
            lengths of these records (`fit_buckets`; logged), or the lengths (see `padding_lengths`).
            Default: 4.
        with_example_ids (bool): also return example_id, the id the converter wrote with each
            row (src.glue_to_records: its row in the source file), to match predictions back to
            the examples. Default: False.
        label_columns (tuple[str]): the label columns with_labels reads: label_ids, or for
            extractive QA start_positions and end_positions. Default: ('label_ids',).
        with_teacher_inputs (bool): also return the teacher's own token columns (records written
            with glue_to_records --teacher_vocab_file). Default: False.
        by_length (bool): read the rows in order of length, shortest first (ties in file order),
            with shuffle=False and one shard; MindRecord only (TFRecord readers take no sampler:
            they keep the file order). Default: False.

    Returns:
        mindspore.dataset.Dataset with columns input_ids, attention_mask, token_type_ids (int32,
        (B, T), T <= seq_length as `padding` says); with teacher inputs, teacher_input_ids,
        teacher_attention_mask, teacher_token_type_ids (int32, (B, T_teacher), cut by the teacher's
        own mask); with labels, label_ids ((B,), int32 or float32 for regression; (B, T) for
        per-token labels, cut with the ids); with example ids, example_id ((B,), int64).

    Raises:
        FileNotFoundError: the path or schema file does not exist.
        ValueError: a file lacks a column or has another sequence length, a bad shard id, a
            bad padding setting (see `padding_lengths`), or by_length with shuffling or shards.
    """
    files = record_files(path, data_format)
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id {shard_id} is outside 0..{num_shards - 1}: pass the rank of this device")
    id_columns = list(ID_COLUMNS) + (list(TEACHER_ID_COLUMNS) if with_teacher_inputs else [])
    columns = id_columns + (list(label_columns) if with_labels else []) + \
        ([EXAMPLE_ID_COLUMN] if with_example_ids else [])
    first_row = _check_files(files, data_format, columns, seq_length)
    if data_format == "tfrecord" and schema_file:
        _check_schema(schema_file, columns, seq_length)
    if by_length and (shuffle or num_shards > 1):
        raise ValueError("by_length reads every row once in one order: give shuffle=False and num_shards=1")
    sort = by_length and data_format == "mindrecord"
    fit = padding == "buckets" and not isinstance(buckets, (list, tuple))
    row_lengths = _row_lengths(path, data_format, schema_file) if sort or fit else None
    order = np.argsort(row_lengths, kind="stable") if sort else None
    ds.config.set_seed(seed)
    if data_format == "mindrecord":
        reading = {"sampler": ds.SubsetSampler(order.tolist())} if sort else \
            {"shuffle": shuffle, "num_shards": num_shards, "shard_id": shard_id}
        data = ds.MindDataset(_source(path, files, data_format), columns_list=columns, **reading)
    else:
        # shard_equal_rows: shard by rows, not by file, so every rank gets as many rows (and steps)
        # even from fewer files than ranks or files of uneven sizes.
        data = ds.TFRecordDataset(files, schema=schema_file or None, columns_list=columns,
                                  shuffle=ds.Shuffle.GLOBAL if shuffle else False, num_shards=num_shards,
                                  shard_id=shard_id, shard_equal_rows=num_shards > 1)
    if fit:
        buckets = _fitted_buckets(row_lengths if order is None else row_lengths[order], batch_size, buckets,
                                  not shuffle and num_shards == 1, path)
    lengths = padding_lengths(padding, buckets, seq_length)
    renames = {**MODEL_INPUTS, **(TEACHER_INPUTS if with_teacher_inputs else {})}
    data = data.rename(list(renames), list(renames.values()))
    inputs = list(renames.values())
    for name in inputs:
        data = data.map(transforms.TypeCast(ms.int32), input_columns=name)
    per_row = []  # columns with one value per row, (B, 1) from a TFRecord schema of rank 1
    per_token = list(MODEL_INPUTS.values())  # columns that padding cuts by the student's mask
    for name in label_columns if with_labels else ():
        label_type = ms.float32 if np.issubdtype(first_row[name].dtype, np.floating) else ms.int32
        data = data.map(transforms.TypeCast(label_type), input_columns=name)
        # Per-token labels (token classification) hold one value per position; the others one.
        (per_token if first_row[name].size > 1 else per_row).append(name)
    if with_example_ids:
        data = data.map(transforms.TypeCast(ms.int64), input_columns=EXAMPLE_ID_COLUMN)
        per_row.append(EXAMPLE_ID_COLUMN)
    data = data.batch(batch_size, drop_remainder=drop_remainder)
    for name in per_row:
        data = data.map(_flatten, input_columns=name)
    if lengths != (seq_length,):
        data = data.map(_cut_padding(lengths), input_columns=per_token, output_columns=per_token)
        if with_teacher_inputs:  # the teacher's tokens end elsewhere: cut by its own mask
            teacher_inputs = list(TEACHER_INPUTS.values())
            data = data.map(_cut_padding(lengths), input_columns=teacher_inputs, output_columns=teacher_inputs)
    return data.project(inputs + columns[len(id_columns):])
