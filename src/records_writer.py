"""All-or-nothing writing of BERT input records as MindRecord or TFRecord shards.

Rows are written into a hidden temporary folder beside the output and moved into place only when
every shard is complete, so an error or an interrupt never leaves a half-written file that a later
training run would read. TFRecord files are encoded here (tf.train.Example protobufs and the
TFRecord framing with masked CRC-32C), so tensorflow is not needed.
"""
import errno
import json
import os
import re
import shutil
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path

import google_crc32c
import numpy as np
from mindspore.mindrecord import FileWriter

FORMATS = ("mindrecord", "tfrecord")
ID_COLUMNS = ("input_ids", "input_mask", "segment_ids")
# The same three columns tokenized with the teacher's vocabulary (glue_to_records --teacher_vocab_file),
# for a teacher whose tokenizer differs from the student's.
TEACHER_ID_COLUMNS = tuple(f"teacher_{name}" for name in ID_COLUMNS)
LABEL_COLUMN = "label_ids"
EXAMPLE_ID_COLUMN = "example_id"  # int64: the example's 0-based row in its source file, to match predictions to rows


def add_output_args(parser):
    """The format and sharding options shared by the record converters."""
    parser.add_argument("--format", default="mindrecord", choices=FORMATS, help="record format (default mindrecord)")
    parser.add_argument("--num_shards", type=int, default=1, help="number of output files (default 1)")


def shard_paths(output_path, data_format, num_shards):
    """The files a writer creates for `output_path`: MindSpore's `name0..nameN-1` for sharded MindRecord,
    `stem-0000i-of-0000N.tfrecord` for sharded TFRecord (so a folder glob `*.tfrecord` finds them)."""
    output_path = Path(output_path)
    if num_shards == 1:
        return [output_path]
    if data_format == "mindrecord":
        return [output_path.with_name(f"{output_path.name}{i}") for i in range(num_shards)]
    return [output_path.with_name(f"{output_path.stem}-{i:05d}-of-{num_shards:05d}{output_path.suffix}")
            for i in range(num_shards)]


def schema_path(output_path):
    """Where the MindSpore schema json of a TFRecord output goes: `stem.schema.json` beside it."""
    output_path = Path(output_path)
    return output_path.with_name(f"{output_path.stem}.schema.json")


def _varints(values):
    """Protobuf varint encoding of an integer array (N, L), vectorised over all N*L values.

    Returns the concatenated bytes (row after row) and the byte length of each row.
    """
    unsigned = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)  # negatives: two's complement
    width = np.ones(unsigned.shape, dtype=np.int64)  # bytes per value: one per started 7 bits
    rest = unsigned >> np.uint64(7)
    while rest.any():
        width += rest != 0
        rest >>= np.uint64(7)
    position = np.arange(width.max())
    groups = (unsigned[..., None] >> (position.astype(np.uint64) * np.uint64(7))) & np.uint64(0x7F)
    groups |= (position < width[..., None] - 1).astype(np.uint64) << np.uint64(7)  # continuation bits
    encoded = groups[position < width[..., None]].astype(np.uint8).tobytes()
    return encoded, width.sum(-1)


def _length_delimited(field, payload):
    """A protobuf length-delimited field (wire type 2): tag, varint length, payload."""
    length = len(payload)
    header = bytearray([field << 3 | 2])
    while length > 0x7F:
        header.append(length & 0x7F | 0x80)
        length >>= 7
    header.append(length)
    return bytes(header) + payload


def _feature_payloads(name, values):
    """Serialised `tf.train.Feature` map entries of one column, one bytes object per row."""
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    key = _length_delimited(1, name.encode())
    if np.issubdtype(values.dtype, np.floating):
        rows = [row.tobytes() for row in values.astype("<f4")]
        kind = 2  # FloatList
    else:
        encoded, lengths = _varints(values)
        ends = np.cumsum(lengths).tolist()
        rows = [encoded[start:end] for start, end in zip([0] + ends[:-1], ends)]
        kind = 3  # Int64List
    return [_length_delimited(1, key + _length_delimited(2, _length_delimited(kind, _length_delimited(1, row))))
            for row in rows]


def _masked_crc(data):
    """TFRecord's masked CRC-32C: the raw CRC rotated right by 15 bits plus a constant."""
    crc = google_crc32c.value(data)
    return ((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(example):
    """One TFRecord: length, masked CRC of the length, the serialised Example, masked CRC of it."""
    length = struct.pack("<Q", len(example))
    return length + struct.pack("<I", _masked_crc(length)) + example + struct.pack("<I", _masked_crc(example))


def serialize_examples(columns):
    """`tf.train.Example` bytes of each row of `columns` (name -> array (N, L) or (N,))."""
    per_column = [_feature_payloads(name, values) for name, values in columns.items()]
    return [_length_delimited(1, b"".join(entries)) for entries in zip(*per_column)]


class RecordsWriter:
    """Writes rows to `num_shards` files of one format; nothing appears until `close()` succeeds.

    Use it as a context manager: leaving the block by an exception removes everything written.

    Args:
        output_path (str): the output name; see `shard_paths` for the names of sharded files.
        data_format (str): 'mindrecord' or 'tfrecord'.
        seq_length (int): length of each id column.
        label_dtype (numpy dtype | None): None for general-distillation records, an integer
            dtype for classification labels, a float dtype for regression labels. Default: None.
        num_shards (int): number of output files; rows are spread evenly over them. Default: 1.
        with_example_ids (bool): rows also carry `example_id` (int64). Default: False.
        extra_columns (dict[str, tuple[numpy dtype, bool]] | None): further integer or float
            columns, name -> (dtype, per_token): per_token True for one value per position
            (N, seq_length), as NER's per-token `label_ids`; False for one per row (N,), as QA's
            answer positions. Default: None.
    """

    def __init__(self, output_path, data_format, seq_length, label_dtype=None, num_shards=1, with_example_ids=False,
                 extra_columns=None):
        if data_format not in FORMATS:
            raise ValueError(f"format {data_format!r} is not one of {', '.join(FORMATS)}")
        if num_shards < 1:
            raise ValueError(f"num_shards is {num_shards}: use 1 or more")
        output_path = Path(output_path)
        self.final_paths = shard_paths(output_path, data_format, num_shards)
        self.data_format = data_format
        self.seq_length = seq_length
        # The columns after the ids: name -> (dtype, one value per position rather than per row).
        self.value_columns = {}
        if label_dtype is not None:
            self.value_columns[LABEL_COLUMN] = (np.float32 if np.issubdtype(label_dtype, np.floating) else np.int32,
                                                False)
        if with_example_ids:
            self.value_columns[EXAMPLE_ID_COLUMN] = (np.int64, False)
        for name, (dtype, per_token) in (extra_columns or {}).items():
            if name in ID_COLUMNS or name in self.value_columns:
                raise ValueError(f"extra column {name!r} repeats a column the records already have")
            self.value_columns[name] = (np.float32 if np.issubdtype(dtype, np.floating) else np.int32, per_token)
        self.columns = ID_COLUMNS + tuple(self.value_columns)
        self.rows = 0
        output_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_dir = Path(tempfile.mkdtemp(prefix=".records-", dir=output_path.parent))
        self._moves = {self._tmp_dir / path.name: path for path in self.final_paths}
        self._files = []
        if data_format == "mindrecord":
            self._family = re.compile(rf"{re.escape(output_path.name)}\d*(\.db)?")
            self._writer = FileWriter(str(self._tmp_dir / output_path.name), shard_num=num_shards)
            self._writer.add_schema(self._mindrecord_schema(), "bert inputs")
            self._moves.update({tmp.with_name(tmp.name + ".db"): final.with_name(final.name + ".db")
                                for tmp, final in list(self._moves.items())})
        else:
            self._family = re.compile(
                rf"{re.escape(output_path.stem)}(-\d{{5}}-of-\d{{5}})?{re.escape(output_path.suffix)}")
            self._files = [open(tmp, "wb") for tmp in self._moves]
            schema_tmp = self._tmp_dir / schema_path(output_path).name
            schema_tmp.write_text(self._tfrecord_schema())
            self._moves[schema_tmp] = schema_path(output_path)

    def _mindrecord_schema(self):
        schema = {name: {"type": "int32", "shape": [-1]} for name in ID_COLUMNS}
        for name, (dtype, per_token) in self.value_columns.items():
            schema[name] = {"type": np.dtype(dtype).name, **({"shape": [-1]} if per_token else {})}
        return schema

    def _tfrecord_schema(self):
        columns = {name: {"type": "int64", "rank": 1, "shape": [self.seq_length]} for name in ID_COLUMNS}
        for name, (dtype, per_token) in self.value_columns.items():
            columns[name] = {"type": "float32" if dtype == np.float32 else "int64", "rank": int(per_token),
                             **({"shape": [self.seq_length]} if per_token else {})}
        return json.dumps({"datasetType": "TF", "columns": columns}, indent=2) + "\n"

    def write(self, columns):
        """Appends rows: `columns` maps each column name to an array (N, seq_length), or (N,) for a column with
        one value per row (labels, example ids)."""
        if set(columns) != set(self.columns):
            raise ValueError(f"records need columns {', '.join(self.columns)}, got {', '.join(columns)}")
        arrays = {name: np.asarray(columns[name], dtype=np.int32) for name in ID_COLUMNS}
        for name, array in arrays.items():
            if array.ndim != 2 or array.shape[1] != self.seq_length:
                raise ValueError(f"column {name} has shape {array.shape}, expected (N, {self.seq_length})")
        count = len(arrays[ID_COLUMNS[0]])
        if count == 0:
            return
        for name, (dtype, per_token) in self.value_columns.items():
            arrays[name] = np.asarray(columns[name], dtype=dtype)
            expected = (count, self.seq_length) if per_token else (count,)
            if arrays[name].shape != expected:
                raise ValueError(f"column {name} has shape {arrays[name].shape}, expected {expected}")
        if self.data_format == "mindrecord":
            rows = [{name: arrays[name][i] for name in ID_COLUMNS} for i in range(count)]
            for name, (_, per_token) in self.value_columns.items():
                # MindRecord wants Python scalars, and numpy arrays for per-position columns.
                for row, value in zip(rows, arrays[name] if per_token else arrays[name].tolist()):
                    row[name] = value
            with self._full_disk_as_os_error():
                self._writer.write_raw_data(rows)
        else:
            for i, example in enumerate(serialize_examples(arrays)):
                self._files[(self.rows + i) % len(self._files)].write(tfrecord_frame(example))
        self.rows += count

    def close(self):
        """Completes every shard, moves them into place and returns their final paths."""
        if self.data_format == "mindrecord":
            with self._full_disk_as_os_error():
                self._writer.commit()
        for f in self._files:
            f.close()
        keep = {final.name for final in self._moves.values()}
        for path in self.final_paths[0].parent.iterdir():
            if self._family.fullmatch(path.name) and path.name not in keep:
                path.unlink()  # a shard of an earlier run with another shard count
        for tmp, final in self._moves.items():
            os.replace(tmp, final)
        self._tmp_dir.rmdir()
        return self.final_paths

    def abort(self):
        """Removes everything written so far."""
        for f in self._files:
            try:
                f.close()
            except OSError:  # flushing the rest into a full disk fails again; the file goes anyway
                pass
        shutil.rmtree(self._tmp_dir, ignore_errors=True)

    @contextmanager
    def _full_disk_as_os_error(self):
        """MindRecord's writer reports a full disk as a RuntimeError; make it the OSError it is."""
        try:
            yield
        except RuntimeError as err:
            if "free disk" not in str(err):
                raise
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.final_paths[0])) from None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is not None:
            self.abort()
            return
        try:
            self.close()
        except BaseException:
            self.abort()
            raise
