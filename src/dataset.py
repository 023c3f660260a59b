"""Reading BERT input records (MindRecord or TFRecord) into batched MindSpore datasets.

Every file is checked before training starts (columns present, sequence length as configured),
so a wrong path or stale conversion fails in one line instead of deep inside the data pipeline.
Columns come out as input_ids, input_mask, segment_ids (int32, (B, seq_length)) and, with labels,
label_ids ((B,), int32 for classification, float32 for regression).
"""
import json
import re
from pathlib import Path

import numpy as np
import mindspore as ms
import mindspore.dataset as ds
import mindspore.dataset.transforms as transforms

from src.records_writer import FORMATS, ID_COLUMNS, LABEL_COLUMN

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
                fix = ("convert labelled data with src.glue_to_records" if name == LABEL_COLUMN
                       else "convert the text with src.corpus_to_records or src.glue_to_records")
                raise ValueError(f"record file {file} has no column {name!r} (it has {', '.join(row)}): {fix}")
        stored = row[ID_COLUMNS[0]].shape[-1]
        if stored != seq_length:
            raise ValueError(f"record file {file} stores sequences of length {stored} but seq_length is "
                             f"{seq_length}: set seq_length to {stored} or convert again with --seq_length "
                             f"{seq_length}")
    return next(iter(rows.values()))


def _check_schema(schema_file, columns, seq_length):
    """Raises if a TFRecord schema json lacks a required column or declares another length."""
    path = Path(schema_file)
    if not path.is_file():
        raise FileNotFoundError(f"schema file {path} does not exist: pass the .schema.json written "
                                f"beside the TFRecord files, or leave it empty")
    declared = json.loads(path.read_text()).get("columns", {})
    for name in columns:
        if name not in declared:
            raise ValueError(f"schema file {path} has no column {name!r}: add it, or leave the schema "
                             f"empty to read the columns from the records")
        shape = declared[name].get("shape")
        if name in ID_COLUMNS and shape and shape[-1] != seq_length:
            raise ValueError(f"schema file {path} declares {name} of length {shape[-1]} but seq_length is "
                             f"{seq_length}: set seq_length to {shape[-1]} or convert again")


def count_examples(path, data_format, schema_file=""):
    """Number of records in `path` (a file or a folder of record files)."""
    files = record_files(path, data_format)
    if data_format == "mindrecord":
        return ds.MindDataset(_source(path, files, data_format), shuffle=False).get_dataset_size()
    return ds.TFRecordDataset(files, schema=schema_file or None, shuffle=False).get_dataset_size()


def _flatten(labels):
    """(B, 1) labels, as a TFRecord schema with rank 1 declares them, to (B,)."""
    return labels.reshape(-1)


def create_dataset(path, data_format, batch_size, seq_length, with_labels, shuffle=True, num_shards=1,
                   shard_id=0, drop_remainder=True, schema_file="", seed=0):
    """Batched dataset of BERT inputs (and labels) from MindRecord or TFRecord files.

    Sharding gives each of `num_shards` ranks an equal number of rows, disjoint and together
    complete when the row count divides by `num_shards`; otherwise MindSpore repeats up to
    num_shards - 1 rows so every rank runs the same number of steps. Shuffling is global and
    reshuffles every epoch, at any shard count, for both formats.

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

    Returns:
        mindspore.dataset.Dataset with columns input_ids, input_mask, segment_ids (int32,
        (B, seq_length)) and, with labels, label_ids ((B,), int32 or float32 for regression).
    """
    files = record_files(path, data_format)
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id {shard_id} is outside 0..{num_shards - 1}: pass the rank of this device")
    columns = list(ID_COLUMNS) + ([LABEL_COLUMN] if with_labels else [])
    first_row = _check_files(files, data_format, columns, seq_length)
    ds.config.set_seed(seed)
    if data_format == "mindrecord":
        data = ds.MindDataset(_source(path, files, data_format), columns_list=columns, shuffle=shuffle,
                              num_shards=num_shards, shard_id=shard_id)
    else:
        if schema_file:
            _check_schema(schema_file, columns, seq_length)
        # shard_equal_rows: shard by rows, not by file, so every rank gets as many rows (and steps)
        # even from fewer files than ranks or files of uneven sizes.
        data = ds.TFRecordDataset(files, schema=schema_file or None, columns_list=columns,
                                  shuffle=ds.Shuffle.GLOBAL if shuffle else False, num_shards=num_shards,
                                  shard_id=shard_id, shard_equal_rows=num_shards > 1)
    for name in ID_COLUMNS:
        data = data.map(transforms.TypeCast(ms.int32), input_columns=name)
    if with_labels:
        label_type = ms.float32 if np.issubdtype(first_row[LABEL_COLUMN].dtype, np.floating) else ms.int32
        data = data.map(transforms.TypeCast(label_type), input_columns=LABEL_COLUMN)
    data = data.batch(batch_size, drop_remainder=drop_remainder)
    if with_labels:
        data = data.map(_flatten, input_columns=LABEL_COLUMN)
    return data.project(columns)
