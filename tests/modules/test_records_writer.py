"""Record writing: byte-level TFRecord checks against independent decoders, round trips, atomicity."""
import json
import struct

import mindspore as ms
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from src.dataset import create_dataset
from src.records_writer import RecordsWriter, schema_path, serialize_examples, tfrecord_frame

SEQ = 7


def make_columns(count, labels=None, seed=0):
    rng = np.random.default_rng(seed)
    columns = {"input_ids": rng.integers(0, 30522, (count, SEQ)).astype(np.int32),
               "input_mask": (rng.random((count, SEQ)) < 0.8).astype(np.int32),
               "segment_ids": rng.integers(0, 2, (count, SEQ)).astype(np.int32)}
    if labels == "int":
        columns["label_ids"] = rng.integers(0, 3, count).astype(np.int32)
    elif labels == "float":
        columns["label_ids"] = rng.uniform(0, 5, count).astype(np.float32)
    return columns


def write(path, data_format, columns, num_shards=1):
    label = columns.get("label_ids")
    with RecordsWriter(path, data_format, SEQ, None if label is None else label.dtype, num_shards) as writer:
        writer.write(columns)
    return writer.final_paths


def crc32c_reference(data):
    """Bit-by-bit CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): slow and obviously right."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked_reference(data):
    crc = crc32c_reference(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def read_frames(path):
    """Splits a TFRecord file by its framing, checking both masked CRCs of every record."""
    data, records, offset = path.read_bytes(), [], 0
    while offset < len(data):
        header = data[offset:offset + 8]
        (length,), (header_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[offset + 8:offset + 12])
        payload = data[offset + 12:offset + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])
        assert header_crc == masked_reference(header) and payload_crc == masked_reference(payload)
        records.append(payload)
        offset += 16 + length
    return records


@pytest.fixture
def example_class():
    """tf.train.Example declared from its .proto definition, decoded by the real protobuf library."""
    proto = descriptor_pb2.FileDescriptorProto(name="tinybert_test_example.proto", package="tinybert_test",
                                               syntax="proto3")
    field = descriptor_pb2.FieldDescriptorProto
    repeated = field.LABEL_REPEATED

    def message(name, fields, parent=None):
        msg = (parent.nested_type if parent else proto.message_type).add(name=name)
        for number, (field_name, kind, type_name, label) in enumerate(fields, 1):
            msg.field.add(name=field_name, number=number, type=kind, type_name=type_name, label=label)
        return msg

    message("BytesList", [("value", field.TYPE_BYTES, None, repeated)])
    message("FloatList", [("value", field.TYPE_FLOAT, None, repeated)])
    message("Int64List", [("value", field.TYPE_INT64, None, repeated)])
    message("Feature", [("bytes_list", field.TYPE_MESSAGE, ".tinybert_test.BytesList", field.LABEL_OPTIONAL),
                        ("float_list", field.TYPE_MESSAGE, ".tinybert_test.FloatList", field.LABEL_OPTIONAL),
                        ("int64_list", field.TYPE_MESSAGE, ".tinybert_test.Int64List", field.LABEL_OPTIONAL)])
    features = message("Features", [("feature", field.TYPE_MESSAGE, ".tinybert_test.Features.FeatureEntry",
                                     repeated)])
    entry = message("FeatureEntry", [("key", field.TYPE_STRING, None, field.LABEL_OPTIONAL),
                                     ("value", field.TYPE_MESSAGE, ".tinybert_test.Feature", field.LABEL_OPTIONAL)],
                    parent=features)
    entry.options.map_entry = True
    message("Example", [("features", field.TYPE_MESSAGE, ".tinybert_test.Features", field.LABEL_OPTIONAL)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tinybert_test.Example"))


def test_crc_reference_check_value():
    assert crc32c_reference(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_examples_decode_with_protobuf(example_class):
    ids = np.array([[0, 1, 127, 128, 300, 30521, 2**31 - 1], [-1, -(2**40), 2**62, 5, 0, 0, 0]])
    scores = np.array([0.5, -3.25], dtype=np.float32)
    for row, payload in enumerate(serialize_examples({"input_ids": ids, "label_ids": scores})):
        example = example_class.FromString(payload)
        feature = example.features.feature
        assert set(feature) == {"input_ids", "label_ids"}
        assert list(feature["input_ids"].int64_list.value) == ids[row].tolist()
        assert list(feature["label_ids"].float_list.value) == [scores[row]]


def test_framing_crcs_match_reference(tmp_path):
    path = tmp_path / "x.tfrecord"
    path.write_bytes(b"".join(tfrecord_frame(payload) for payload in (b"", b"a", bytes(range(256)) * 3)))
    assert read_frames(path) == [b"", b"a", bytes(range(256)) * 3]


@pytest.mark.parametrize("labels", [None, "int", "float"])
def test_tfrecord_files_hold_every_row_in_order(tmp_path, example_class, labels):
    columns = make_columns(13, labels)
    paths = write(tmp_path / "part.tfrecord", "tfrecord", columns, num_shards=2)
    assert [p.name for p in paths] == ["part-00000-of-00002.tfrecord", "part-00001-of-00002.tfrecord"]
    rows = [example_class.FromString(p) for path in paths for p in read_frames(path)]
    assert len(rows) == 13
    order = list(range(0, 13, 2)) + list(range(1, 13, 2))  # rows alternate between the two shards
    for row, index in zip(rows, order):
        feature = row.features.feature
        for name in ("input_ids", "input_mask", "segment_ids"):
            assert list(feature[name].int64_list.value) == columns[name][index].tolist()
        if labels == "int":
            assert list(feature["label_ids"].int64_list.value) == [columns["label_ids"][index]]
        elif labels == "float":
            assert list(feature["label_ids"].float_list.value) == [columns["label_ids"][index]]
    schema = json.loads(schema_path(tmp_path / "part.tfrecord").read_text())
    assert schema["columns"]["input_ids"] == {"type": "int64", "rank": 1, "shape": [SEQ]}
    if labels:
        assert schema["columns"]["label_ids"]["type"] == {"int": "int64", "float": "float32"}[labels]


@pytest.mark.parametrize("data_format", ["mindrecord", "tfrecord"])
@pytest.mark.parametrize("labels", [None, "int", "float"])
def test_round_trip_through_create_dataset(tmp_path, data_format, labels):
    columns = make_columns(13, labels)
    write(tmp_path / f"data.{data_format}", data_format, columns, num_shards=2)
    data = create_dataset(str(tmp_path), data_format, batch_size=5, seq_length=SEQ, with_labels=labels is not None,
                          shuffle=False, drop_remainder=False)
    batches = list(data.create_tuple_iterator(num_epochs=1, output_numpy=True))  # the reader renames, keeps order
    got = {name: np.concatenate([batch[i] for batch in batches]) for i, name in enumerate(columns)}
    order = np.argsort(got["input_ids"][:, 0] * 100000 + got["input_ids"][:, 1])  # shards interleave rows
    expected_order = np.argsort(columns["input_ids"][:, 0] * 100000 + columns["input_ids"][:, 1])
    for name, values in columns.items():
        assert got[name].dtype == (np.float32 if labels == "float" and name == "label_ids" else np.int32)
        np.testing.assert_array_equal(got[name][order], values[expected_order])


@pytest.mark.parametrize("data_format", ["mindrecord", "tfrecord"])
def test_example_ids_are_stored_as_int64(tmp_path, data_format):
    columns = make_columns(5, "int")
    columns["example_id"] = np.array([0, 3, 4, 2**40, 7], dtype=np.int64)  # beyond int32
    path = tmp_path / f"data.{data_format}"
    with RecordsWriter(path, data_format, SEQ, np.int32, with_example_ids=True) as writer:
        writer.write(columns)
    if data_format == "mindrecord":
        data = ms.dataset.MindDataset(str(path), shuffle=False)
    else:
        assert json.loads(schema_path(path).read_text())["columns"]["example_id"] == {"type": "int64", "rank": 0}
        data = ms.dataset.TFRecordDataset(str(path), schema=str(schema_path(path)), shuffle=False)
    rows = list(data.create_dict_iterator(num_epochs=1, output_numpy=True))
    ids = np.array([row["example_id"] for row in rows])
    assert ids.dtype == np.int64 and ids.tolist() == columns["example_id"].tolist()
    assert [int(row["label_ids"]) for row in rows] == columns["label_ids"].tolist()


def test_example_ids_must_be_given_when_declared(tmp_path):
    with pytest.raises(ValueError, match="records need columns input_ids, input_mask, segment_ids, example_id, got "
                                         "input_ids, input_mask, segment_ids"):
        with RecordsWriter(tmp_path / "x.mindrecord", "mindrecord", SEQ, with_example_ids=True) as writer:
            writer.write(make_columns(2))
    assert list(tmp_path.iterdir()) == []


def test_error_inside_the_block_leaves_nothing(tmp_path):
    for data_format in ("mindrecord", "tfrecord"):
        with pytest.raises(RuntimeError, match="interrupted"):
            with RecordsWriter(tmp_path / f"x.{data_format}", data_format, SEQ, num_shards=2) as writer:
                writer.write(make_columns(4))
                raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_bad_shape_is_refused_and_leaves_nothing(tmp_path):
    columns = make_columns(3)
    columns["input_mask"] = columns["input_mask"][:, :5]
    with pytest.raises(ValueError, match=r"column input_mask has shape \(3, 5\), expected \(N, 7\)"):
        write(tmp_path / "x.mindrecord", "mindrecord", columns)
    assert list(tmp_path.iterdir()) == []


def test_rewrite_with_fewer_shards_removes_the_old_ones(tmp_path):
    write(tmp_path / "gd.mindrecord", "mindrecord", make_columns(6), num_shards=3)
    write(tmp_path / "gd.mindrecord", "mindrecord", make_columns(6), num_shards=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gd.mindrecord0", "gd.mindrecord0.db", "gd.mindrecord1", "gd.mindrecord1.db"]
    write(tmp_path / "gd.tfrecord", "tfrecord", make_columns(6), num_shards=2)
    write(tmp_path / "gd.tfrecord", "tfrecord", make_columns(6))
    assert sorted(p.name for p in tmp_path.iterdir() if "tfrecord" in p.name) == ["gd.tfrecord"]


def test_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="format 'parquet' is not one of mindrecord, tfrecord"):
        RecordsWriter(tmp_path / "x.parquet", "parquet", SEQ)


def test_tensorflow_parses_our_files(tmp_path):
    tf = pytest.importorskip("tensorflow", reason="tensorflow is optional: install it to cross-check TFRecords")
    columns = make_columns(5, "float")
    write(tmp_path / "x.tfrecord", "tfrecord", columns)
    spec = {name: tf.io.FixedLenFeature([SEQ], tf.int64) for name in ("input_ids", "input_mask", "segment_ids")}
    spec["label_ids"] = tf.io.FixedLenFeature([], tf.float32)
    rows = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(str(tmp_path / "x.tfrecord"))]
    assert len(rows) == 5
    for index, row in enumerate(rows):
        for name, values in columns.items():
            np.testing.assert_array_equal(row[name].numpy(), values[index])
