"""create_dataset: column order and types, sharding, shuffling, evaluation coverage, padding cut to the
batch, clear errors."""
import itertools
import json
import logging

import numpy as np
import mindspore as ms
import pytest

from src import losses
from src.dataset import count_examples, create_dataset, fit_buckets, label_values
from src.logger import LOGGER_NAME
from src.records_writer import RecordsWriter
from src.tinybert_model import BertForSequenceClassification, BertModel

SEQ = 7
FORMATS = ["mindrecord", "tfrecord"]


def write_records(folder, data_format, count, num_shards=1, labels=np.int32, seq_length=SEQ, name="data"):
    """Rows whose input_ids[:, 0] is the row number, so a read-back says which rows came."""
    ids = np.arange(count * seq_length, dtype=np.int32).reshape(count, seq_length) % 1000
    ids[:, 0] = np.arange(count)
    columns = {"input_ids": ids, "input_mask": np.ones_like(ids), "segment_ids": ids % 2}
    if labels is not None:
        columns["label_ids"] = (np.arange(count) % 3).astype(labels)
    path = folder / f"{name}.{data_format}"
    with RecordsWriter(path, data_format, seq_length, labels, num_shards) as writer:
        writer.write(columns)
    return path


def row_numbers(data, epochs=1):
    iterator = data.create_dict_iterator(num_epochs=epochs, output_numpy=True)
    return [[int(n) for batch in iterator for n in batch["input_ids"][:, 0]] for _ in range(epochs)]


@pytest.mark.parametrize("data_format", FORMATS)
def test_columns_order_types_and_shapes(tmp_path, data_format):
    write_records(tmp_path, data_format, 13)
    data = create_dataset(str(tmp_path), data_format, batch_size=4, seq_length=SEQ, with_labels=True)
    assert data.get_col_names() == ["input_ids", "attention_mask", "token_type_ids", "label_ids"]
    batch = next(data.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert [(a.dtype, a.shape) for a in batch] == [(np.int32, (4, SEQ))] * 3 + [(np.int32, (4,))]
    no_labels = create_dataset(str(tmp_path), data_format, batch_size=4, seq_length=SEQ, with_labels=False)
    assert no_labels.get_col_names() == ["input_ids", "attention_mask", "token_type_ids"]


@pytest.mark.parametrize("data_format", FORMATS)
def test_regression_labels_are_float32(tmp_path, data_format):
    write_records(tmp_path, data_format, 6, labels=np.float32)
    data = create_dataset(str(tmp_path), data_format, batch_size=6, seq_length=SEQ, with_labels=True, shuffle=False)
    labels = next(data.create_dict_iterator(num_epochs=1, output_numpy=True))["label_ids"]
    assert labels.dtype == np.float32 and labels.shape == (6,)
    np.testing.assert_array_equal(labels, [0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("data_format", FORMATS)
def test_evaluation_sees_every_example(tmp_path, data_format):
    write_records(tmp_path, data_format, 13)
    data = create_dataset(str(tmp_path), data_format, batch_size=4, seq_length=SEQ, with_labels=True,
                          shuffle=False, drop_remainder=False)
    batches = list(data.create_dict_iterator(num_epochs=1, output_numpy=True))
    assert [len(b["label_ids"]) for b in batches] == [4, 4, 4, 1]
    assert sorted(row_numbers(data)[0]) == list(range(13))
    training = create_dataset(str(tmp_path), data_format, batch_size=4, seq_length=SEQ, with_labels=True)
    assert training.get_dataset_size() == 3


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("files", [1, 3])
def test_label_values_reads_every_label(tmp_path, data_format, files):
    path = write_records(tmp_path, data_format, 10, num_shards=files)
    values = label_values(str(tmp_path) if files > 1 else path, data_format, ("label_ids",))
    assert sorted(values.tolist()) == sorted((np.arange(10) % 3).tolist())


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("files", [1, 3])
def test_two_shards_are_disjoint_and_complete(tmp_path, data_format, files):
    write_records(tmp_path, data_format, 14, num_shards=files)
    for shuffle in (False, True):
        shards = [row_numbers(create_dataset(str(tmp_path), data_format, batch_size=1, seq_length=SEQ,
                                             with_labels=False, shuffle=shuffle, num_shards=2, shard_id=rank),
                              epochs=2) for rank in range(2)]
        for epoch in range(2):
            first, second = shards[0][epoch], shards[1][epoch]
            assert len(first) == len(second) == 7
            assert sorted(first + second) == list(range(14))


@pytest.mark.parametrize("data_format", FORMATS)
def test_uneven_shards_stay_equal_in_size(tmp_path, data_format):
    write_records(tmp_path, data_format, 13)
    shards = [row_numbers(create_dataset(str(tmp_path), data_format, batch_size=1, seq_length=SEQ, with_labels=False,
                                         shuffle=False, num_shards=2, shard_id=rank))[0] for rank in range(2)]
    assert [len(s) for s in shards] == [7, 7]  # equal steps on every rank: one row is read twice
    assert set(shards[0]) | set(shards[1]) == set(range(13))


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("num_shards", [1, 2])
def test_shuffle_changes_order(tmp_path, data_format, num_shards):
    write_records(tmp_path, data_format, 40)

    def rows(shuffle):
        return row_numbers(create_dataset(str(tmp_path), data_format, batch_size=4, seq_length=SEQ, with_labels=False,
                                          shuffle=shuffle, num_shards=num_shards, shard_id=0), epochs=2)

    (plain, _), (first_epoch, second_epoch) = rows(False), rows(True)
    assert len(first_epoch) == len(plain) == 40 // num_shards
    assert first_epoch != plain and second_epoch != first_epoch
    if num_shards == 1:
        assert sorted(first_epoch) == plain
    assert rows(True)[0] == first_epoch  # the seed makes it repeatable


def test_tfrecord_with_and_without_schema_agree(tmp_path):
    write_records(tmp_path, "tfrecord", 9)

    def arrays(schema_file):
        data = create_dataset(str(tmp_path), "tfrecord", batch_size=9, seq_length=SEQ, with_labels=True,
                              shuffle=False, schema_file=schema_file)
        return next(data.create_tuple_iterator(num_epochs=1, output_numpy=True))

    for with_schema, without in zip(arrays(str(tmp_path / "data.schema.json")), arrays("")):
        assert with_schema.dtype == without.dtype
        np.testing.assert_array_equal(with_schema, without)


def test_mindrecord_shards_found_by_folder_or_first_file(tmp_path):
    path = write_records(tmp_path, "mindrecord", 10, num_shards=3)
    assert count_examples(str(tmp_path), "mindrecord") == 10  # .db index files are not records
    assert count_examples(str(path) + "0", "mindrecord") == 10  # the first shard brings its set
    data = create_dataset(str(path) + "0", "mindrecord", batch_size=1, seq_length=SEQ, with_labels=True, shuffle=False)
    assert sorted(row_numbers(data)[0]) == list(range(10))


def test_count_examples_tfrecord(tmp_path):
    write_records(tmp_path, "tfrecord", 11, num_shards=2)
    assert count_examples(str(tmp_path), "tfrecord") == 11
    assert count_examples(str(tmp_path / "data-00001-of-00002.tfrecord"), "tfrecord") == 5


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="data path .*nothing does not exist"):
        create_dataset(str(tmp_path / "nothing"), "mindrecord", 4, SEQ, with_labels=False)


def test_sharded_mindrecord_name_hint(tmp_path):
    path = write_records(tmp_path, "mindrecord", 4, num_shards=2)
    with pytest.raises(FileNotFoundError, match=r"named data.mindrecord0, data.mindrecord1, ...: pass their folder"):
        create_dataset(str(path), "mindrecord", 4, SEQ, with_labels=False)


def test_folder_without_records(tmp_path):
    write_records(tmp_path, "tfrecord", 4)
    with pytest.raises(FileNotFoundError, match="no mindrecord files in folder"):
        create_dataset(str(tmp_path), "mindrecord", 4, SEQ, with_labels=False)


@pytest.mark.parametrize("data_format", FORMATS)
def test_missing_label_column(tmp_path, data_format):
    path = write_records(tmp_path, data_format, 4, labels=None)
    with pytest.raises(ValueError, match=rf"record file .*{path.name} has no column 'label_ids' .*: "
                                         "convert labelled data with src.glue_to_records"):
        create_dataset(str(path), data_format, 4, SEQ, with_labels=True)


@pytest.mark.parametrize("data_format", FORMATS)
def test_sequence_length_mismatch(tmp_path, data_format):
    write_records(tmp_path, data_format, 4, seq_length=16)
    with pytest.raises(ValueError, match="stores sequences of length 16 but seq_length is 7: set seq_length to 16 "
                                         "or convert again with --seq_length 7"):
        create_dataset(str(tmp_path), data_format, 4, SEQ, with_labels=True)


def test_wrong_data_format(tmp_path):
    with pytest.raises(ValueError, match="data_format 'tf_record' is not one of mindrecord, tfrecord"):
        create_dataset(str(tmp_path), "tf_record", 4, SEQ, with_labels=False)


def test_schema_without_required_column(tmp_path):
    write_records(tmp_path, "tfrecord", 4)
    schema = tmp_path / "partial.json"
    schema.write_text(json.dumps({"columns": {"input_ids": {"type": "int64", "rank": 1, "shape": [SEQ]}}}))
    with pytest.raises(ValueError, match="schema file .*partial.json has no column 'input_mask'"):
        create_dataset(str(tmp_path), "tfrecord", 4, SEQ, with_labels=False, schema_file=str(schema))


def test_shard_id_out_of_range(tmp_path):
    write_records(tmp_path, "mindrecord", 4)
    with pytest.raises(ValueError, match=r"shard_id 2 is outside 0..1"):
        create_dataset(str(tmp_path), "mindrecord", 4, SEQ, with_labels=False, num_shards=2, shard_id=2)


@pytest.mark.parametrize("data_format", FORMATS)
def test_empty_shards_are_skipped(tmp_path, data_format):
    write_records(tmp_path, data_format, 3, num_shards=4)  # one shard holds no rows
    data = create_dataset(str(tmp_path), data_format, batch_size=2, seq_length=SEQ, with_labels=True, shuffle=False,
                          drop_remainder=False)
    assert sorted(row_numbers(data)[0]) == [0, 1, 2]


def test_unreadable_file(tmp_path):
    (tmp_path / "x.tfrecord").write_text("not a record")
    with pytest.raises(ValueError, match="x.tfrecord is not a readable tfrecord file .*: convert the data again"):
        create_dataset(str(tmp_path), "tfrecord", 4, SEQ, with_labels=False)


def test_only_empty_tfrecord_files(tmp_path):
    (tmp_path / "x.tfrecord").write_bytes(b"")
    with pytest.raises(ValueError, match="the tfrecord files of .* hold no records: convert the data again"):
        count_examples(str(tmp_path), "tfrecord")


# Dynamic padding. Rows of these lengths, batched by 4 in order, have longest examples 5, 11, 16 and 3:
# buckets [4, 8, 12] (16 added as seq_length) cut the batches to 8, 12, 16 and 4.
LONG_SEQ = 16
LENGTHS = [2, 5, 3, 4, 11, 7, 2, 9, 16, 1, 8, 12, 3, 2]
BUCKETS = [4, 8, 12]
WIDTHS = {"longest": [5, 11, 16, 3], "buckets": [8, 12, 16, 4]}
IGNORE = -100  # Hugging Face's label for positions a token-classification loss skips


def varied_columns(lengths=LENGTHS, seq_length=LONG_SEQ, labels="class", seed=0):
    """Rows of the given real lengths: input_ids[:, 0] is the row number, a second segment in the
    second half, every padding position 0 (per-token labels IGNORE); example_id is the row number."""
    rng = np.random.default_rng(seed)
    count = len(lengths)
    mask = (np.arange(seq_length) < np.array(lengths)[:, None]).astype(np.int32)
    ids = rng.integers(5, 99, (count, seq_length)).astype(np.int32) * mask
    ids[:, 0] = np.arange(count)
    types = ((np.arange(seq_length) >= np.array(lengths)[:, None] // 2) * mask).astype(np.int32)
    columns = {"input_ids": ids, "input_mask": mask, "segment_ids": types}
    if labels == "class":
        columns["label_ids"] = (np.arange(count) % 3).astype(np.int32)
    elif labels == "token":
        columns["label_ids"] = np.where(mask == 1, rng.integers(0, 5, (count, seq_length)), IGNORE).astype(np.int32)
    columns["example_id"] = np.arange(count, dtype=np.int64)
    return columns


def write_columns(folder, data_format, columns):
    """Records as the converters write them: class labels as glue_to_records, per-token labels as
    conll_to_records, example ids always."""
    path = folder / f"varied.{data_format}"
    labels = columns.get("label_ids")
    per_token = labels is not None and labels.ndim == 2
    with RecordsWriter(path, data_format, LONG_SEQ, None if labels is None or per_token else labels.dtype,
                       with_example_ids=True, extra_columns={"label_ids": (labels.dtype, True)} if per_token else None
                       ) as writer:
        writer.write(columns)
    return path


def batches(folder, data_format, padding, with_labels=True, buckets=BUCKETS, **kwargs):
    kwargs = {"shuffle": False, "drop_remainder": False, **kwargs}
    data = create_dataset(str(folder), data_format, batch_size=4, seq_length=LONG_SEQ, with_labels=with_labels,
                          padding=padding, buckets=buckets, with_example_ids=True, **kwargs)
    return list(data.create_dict_iterator(num_epochs=1, output_numpy=True))


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("labels", [None, "class", "token"])
def test_padding_cuts_only_padding(tmp_path, data_format, labels):
    write_columns(tmp_path, data_format, varied_columns(labels=labels))
    sequence_columns = ["input_ids", "attention_mask", "token_type_ids"] + (["label_ids"] if labels == "token" else [])
    schemas = [""] + ([str(tmp_path / "varied.schema.json")] if data_format == "tfrecord" else [])
    for schema_file in schemas:
        full = batches(tmp_path, data_format, "max_length", with_labels=labels is not None, schema_file=schema_file)
        assert [b["input_ids"].shape for b in full] == [(4, LONG_SEQ)] * 3 + [(2, LONG_SEQ)]
        assert full[0]["example_id"].dtype == np.int64
        for padding, widths in WIDTHS.items():
            cut = batches(tmp_path, data_format, padding, with_labels=labels is not None, schema_file=schema_file)
            assert [b["input_ids"].shape[1] for b in cut] == widths
            for whole, part, width in zip(full, cut, widths):
                assert list(part) == list(whole)  # same columns in the same order
                assert not whole["attention_mask"][:, width:].any()  # what is cut is padding only
                for name in whole:
                    assert part[name].dtype == whole[name].dtype
                    expected = whole[name][:, :width] if name in sequence_columns else whole[name]
                    np.testing.assert_array_equal(part[name], expected)
                np.testing.assert_array_equal(part["example_id"], part["input_ids"][:, 0])


@pytest.mark.parametrize("data_format", FORMATS)
def test_padding_keeps_the_shuffled_sharded_epochs(tmp_path, data_format):
    write_columns(tmp_path, data_format, varied_columns(LENGTHS * 2))
    for rank in range(2):
        def epochs(padding):
            data = create_dataset(str(tmp_path), data_format, batch_size=3, seq_length=LONG_SEQ, with_labels=True,
                                  num_shards=2, shard_id=rank, padding=padding, buckets=BUCKETS, seed=3)
            iterator = data.create_tuple_iterator(num_epochs=2, output_numpy=True)
            return [[batch for batch in iterator] for _ in range(2)]

        full = epochs("max_length")
        assert [b[0][:, 0].tolist() for b in full[0]] != [b[0][:, 0].tolist() for b in full[1]]  # reshuffled
        for padding in WIDTHS:
            for full_epoch, cut_epoch in zip(full, epochs(padding)):
                assert len(cut_epoch) == len(full_epoch) == 4
                for whole, part in zip(full_epoch, cut_epoch):
                    width, longest = part[0].shape[1], np.flatnonzero(whole[1].any(axis=0))[-1] + 1
                    assert width == longest if padding == "longest" else width == min(
                        b for b in BUCKETS + [LONG_SEQ] if b >= longest)
                    for got, expected in zip(part[:3], whole[:3]):
                        np.testing.assert_array_equal(got, expected[:, :width])
                    np.testing.assert_array_equal(part[3], whole[3])


def test_model_outputs_and_losses_equal_full_padding(tmp_path, student_config, teacher_config):
    """Masking makes a cut batch give the logits and distillation losses of the fully padded one."""
    ms.set_seed(0)
    write_columns(tmp_path, "mindrecord", varied_columns())
    student = BertForSequenceClassification(student_config.for_dynamic_shapes(), 3)
    teacher = BertModel(teacher_config.for_dynamic_shapes())
    fit_dense = ms.nn.Dense(student_config.hidden_size, teacher_config.hidden_size)
    any_shape = ms.Tensor(shape=[None, None], dtype=ms.int32)
    for cell in (student, teacher):
        cell.set_train(False)
        # One graph for every (B, T): GRAPH_MODE would compile one per shape, about 2 s each here.
        cell.set_inputs(any_shape, any_shape, any_shape)

    def outputs(batch):
        inputs = [ms.Tensor(batch[name]) for name in ("input_ids", "attention_mask", "token_type_ids")]
        logits, student_hidden, student_scores = student(*inputs)
        _, _, teacher_hidden, teacher_scores = teacher(*inputs)
        mask = inputs[1]
        return {"logits": logits.asnumpy(),
                "attention_mse": losses.attention_mse(student_scores[-1], teacher_scores[-1], mask).asnumpy(),
                "hidden_mse": losses.hidden_mse(fit_dense(student_hidden[-1]), teacher_hidden[-1], mask).asnumpy(),
                "sequence_output": student_hidden[-1].asnumpy()}

    full = [outputs(b) for b in batches(tmp_path, "mindrecord", "max_length")]
    assert len({float(f["attention_mse"]) for f in full}) == len(full)  # the batches differ
    for padding in WIDTHS:
        cut = batches(tmp_path, "mindrecord", padding)
        for whole, part, batch in zip(full, map(outputs, cut), cut):
            real = batch["attention_mask"].astype(bool)
            np.testing.assert_allclose(part["sequence_output"][real], whole["sequence_output"][:, :real.shape[1]][real],
                                       rtol=1e-5, atol=1e-5)
            for name in ("logits", "attention_mse", "hidden_mse"):
                np.testing.assert_allclose(part[name], whole[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("buckets, message", [
    ([8, 32], r"data.buckets: 32 exceeds seq_length 16: use buckets up to seq_length"),
    ([8, 4], r"data.buckets: \[8, 4\] must be in ascending order without repeats, like \[4, 8\]"),
    ([4, 4], r"data.buckets: \[4, 4\] must be in ascending order without repeats, like \[4\]"),
    ([0, 8], r"data.buckets: \[0, 8\] must be positive whole lengths"),
])
def test_bad_buckets(tmp_path, buckets, message):
    write_columns(tmp_path, "mindrecord", varied_columns())
    with pytest.raises(ValueError, match=message) as error:
        batches(tmp_path, "mindrecord", "buckets", buckets=buckets)
    assert "\n" not in str(error.value)


def test_unknown_padding(tmp_path):
    write_columns(tmp_path, "mindrecord", varied_columns())
    with pytest.raises(ValueError, match="data.padding: 'dynamic' is not one of max_length, longest, buckets"):
        batches(tmp_path, "mindrecord", "dynamic")


def expected_width(row_lengths, batch_size, buckets):
    """A shuffled batch's mean padded width under `fit_buckets`' model, summed over every length
    a batch's longest row can have: sum_x bucket(x) * (P(x) - P(x - 1)), P(x) = F(x) ** batch_size."""
    row_lengths = np.asarray(row_lengths)
    widths = np.arange(row_lengths.max() + 1)
    below = np.array([(row_lengths <= x).mean() for x in widths]) ** batch_size
    padded = np.array(buckets)[np.searchsorted(buckets, widths[1:])]
    return float((padded * np.diff(below)).sum())


def simulated_width(row_lengths, batch_size, buckets, epochs=200, seed=0):
    """The mean padded width of the batches of `epochs` shuffled epochs, each batch padded to its bucket."""
    rng = np.random.default_rng(seed)
    row_lengths = np.asarray(row_lengths)
    rows = len(row_lengths) // batch_size * batch_size
    longest = np.concatenate([row_lengths[rng.permutation(len(row_lengths))[:rows]].reshape(-1, batch_size).max(1)
                              for _ in range(epochs)])
    return float(np.array(buckets)[np.searchsorted(buckets, longest)].mean())


def test_fit_buckets_is_the_best_choice_and_predicts_shuffled_batches():
    # Sentence-like lengths: many short rows, a long tail (SST-2's shape).
    row_lengths = np.minimum(np.random.default_rng(1).gamma(3.0, 5.0, 2000).astype(int) + 2, 64)
    batch_size, count = 16, 4
    fitted = fit_buckets(row_lengths, batch_size, count)
    assert len(fitted) == count and fitted[-1] == row_lengths.max()
    candidates = np.unique(row_lengths)[:-1]
    best = min(expected_width(row_lengths, batch_size, [*map(int, lower), int(row_lengths.max())])
               for lower in itertools.combinations(candidates, count - 1))
    assert expected_width(row_lengths, batch_size, fitted) == pytest.approx(best, rel=1e-12)
    assert simulated_width(row_lengths, batch_size, fitted) == pytest.approx(best, rel=0.01)
    quarters = [16, 32, 48, 64]  # the fixed default before
    assert simulated_width(row_lengths, batch_size, fitted) < 0.97 * simulated_width(row_lengths, batch_size,
                                                                                     quarters)


def test_fit_buckets_with_few_lengths_and_bad_counts():
    assert fit_buckets([7, 7, 7], 4, 4) == [7]
    assert fit_buckets([3, 9, 3, 9], 2, 4) == [3, 9]
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match=r"data.buckets: .* must be a positive number of buckets to fit to "
                                             r"the data, like 4, or a list of lengths"):
            fit_buckets([3, 4], 2, bad)


def test_a_number_of_buckets_is_fitted_to_the_records(tmp_path, caplog):
    write_columns(tmp_path, "mindrecord", varied_columns())
    # In file order the batches' longest rows are known (5, 11, 16, 3): two buckets fit them, 5 and 16
    # (widths 5 + 16 + 16 + 5, against 11 + 11 + 16 + 11 for 11 and 16, 16 + 16 + 16 + 3 for 3 and 16).
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        widths = [b["input_ids"].shape[1] for b in batches(tmp_path, "mindrecord", "buckets", buckets=2)]
    assert "cut to 5, 16 (data.buckets fitted to their lengths)" in caplog.text
    assert widths == [5, 16, 16, 5]
    # Shuffled, the fit is to the rows' lengths.
    fitted = fit_buckets(LENGTHS, 4, 2)
    widths = [b["input_ids"].shape[1] for b in batches(tmp_path, "mindrecord", "buckets", buckets=2, shuffle=True)]
    assert set(widths) <= set(fitted) and fitted[-1] == 16
    with pytest.raises(ValueError, match=r"data.buckets: \[\] must be positive whole lengths, like \[32, 64, 96\], "
                                         r"or a number of buckets to fit to the data, like 4"):
        batches(tmp_path, "mindrecord", "buckets", buckets=[])


@pytest.mark.parametrize("data_format", FORMATS)
def test_by_length_reads_every_row_once_shortest_first(tmp_path, data_format):
    write_columns(tmp_path, data_format, varied_columns())
    read = batches(tmp_path, data_format, "buckets", buckets=2, by_length=True)
    order = [int(i) for batch in read for i in batch["example_id"]]
    if data_format == "mindrecord":
        assert order == list(np.argsort(LENGTHS, kind="stable"))
        # Sorted, the batches' longest rows are 2, 5, 11, 16: two buckets fit them best at 5 and 16
        # (5 + 5 + 16 + 16, against 11 + 11 + 11 + 16 for 11 and 16).
        assert [b["input_ids"].shape[1] for b in read] == [5, 5, 16, 16]
    else:  # TFRecord readers take no sampler: file order
        assert order == list(range(len(LENGTHS)))
    for batch in read:  # each row is the one with that id, whole
        full = varied_columns()
        for row, example_id in enumerate(batch["example_id"]):
            width = batch["input_ids"].shape[1]
            np.testing.assert_array_equal(batch["input_ids"][row], full["input_ids"][example_id, :width])
            assert full["input_mask"][example_id, width:].sum() == 0
    with pytest.raises(ValueError, match="by_length reads every row once in one order: give shuffle=False and "
                                         "num_shards=1"):
        batches(tmp_path, data_format, "buckets", by_length=True, shuffle=True)


@pytest.mark.parametrize("data_format", FORMATS)
def test_missing_example_id_column(tmp_path, data_format):
    path = write_records(tmp_path, data_format, 4)
    with pytest.raises(ValueError, match=rf"record file .*{path.name} has no column 'example_id' .*: convert the "
                                         "data again with src.glue_to_records, which writes example ids"):
        create_dataset(str(path), data_format, 4, SEQ, with_labels=True, with_example_ids=True)


@pytest.mark.parametrize("content", [b"columns: {input_ids: int64}\n", b"\xff\xfe\x00binary", b"[1, 2]"])
def test_schema_that_is_not_a_schema_json(tmp_path, content):
    write_records(tmp_path, "tfrecord", 4)
    schema = tmp_path / "schema.yaml"
    schema.write_bytes(content)
    message = (r"schema file .*schema.yaml is not a MindSpore schema json \(an object with a \"columns\" mapping\): "
               r"pass the .schema.json written beside the TFRecord files, or leave it empty")
    with pytest.raises(ValueError, match=message):
        create_dataset(str(tmp_path), "tfrecord", 4, SEQ, with_labels=False, schema_file=str(schema))
    with pytest.raises(ValueError, match=message):
        count_examples(str(tmp_path), "tfrecord", schema_file=str(schema))
