"""create_dataset: column order and types, sharding, shuffling, evaluation coverage, clear errors."""
import json

import numpy as np
import pytest

from src.dataset import count_examples, create_dataset
from src.records_writer import RecordsWriter

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
    assert data.get_col_names() == ["input_ids", "input_mask", "segment_ids", "label_ids"]
    batch = next(data.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert [(a.dtype, a.shape) for a in batch] == [(np.int32, (4, SEQ))] * 3 + [(np.int32, (4,))]
    no_labels = create_dataset(str(tmp_path), data_format, batch_size=4, seq_length=SEQ, with_labels=False)
    assert no_labels.get_col_names() == ["input_ids", "input_mask", "segment_ids"]


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
