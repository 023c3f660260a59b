"""Whole or nothing: a failed write leaves the earlier file or folder as it was and no temporary files."""
import numpy as np
import pytest

from src.atomic_files import atomic_directory, atomic_path, write_text_atomically


def test_a_file_is_replaced_only_when_its_write_completes(tmp_path):
    target = tmp_path / "sub" / "report.json"
    write_text_atomically(target, "first\n")
    assert target.read_text() == "first\n"
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the sec")
            raise RuntimeError("disk full")
    assert target.read_text() == "first\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_the_temporary_name_keeps_the_extension_for_writers_that_choose_by_it(tmp_path):
    target = tmp_path / "logits.npy"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".npy" and tmp.name.startswith(".") and tmp.parent == tmp_path
        np.save(tmp, np.arange(3))  # numpy.save appends .npy to a name without it
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["logits.npy"]


OWNED = {"model.onnx", "vocab.txt"}


def test_a_folder_is_replaced_whole_or_left_as_it_was(tmp_path):
    target = tmp_path / "deploy"
    with atomic_directory(target, OWNED, "a deploy folder") as tmp:
        (tmp / "model.onnx").write_text("v1")
        (tmp / "vocab.txt").write_text("v1")
    with pytest.raises(ValueError, match="int8 lost too much"):
        with atomic_directory(target, OWNED, "a deploy folder") as tmp:
            (tmp / "model.onnx").write_text("v2")
            raise ValueError("int8 lost too much")
    assert {p.name: p.read_text() for p in target.iterdir()} == {"model.onnx": "v1", "vocab.txt": "v1"}
    with atomic_directory(target, OWNED, "a deploy folder") as tmp:
        (tmp / "model.onnx").write_text("v3")
    assert {p.name: p.read_text() for p in target.iterdir()} == {"model.onnx": "v3"}  # nothing of v1 stays
    assert [p.name for p in tmp_path.iterdir()] == ["deploy"]


@pytest.mark.parametrize("foreign", ["notes.txt", None])
def test_a_folder_or_file_of_the_users_is_never_replaced(tmp_path, foreign):
    target = tmp_path / "deploy"
    if foreign:
        target.mkdir()
        (target / "model.onnx").write_text("v1")
        (target / foreign).write_text("mine")
    else:
        target.write_text("a file, not a folder")
    with pytest.raises(ValueError, match=r"deploy exists and holds more than a deploy folder \((notes.txt|deploy)\): "
                                         "choose another output folder"):
        with atomic_directory(target, OWNED, "a deploy folder"):
            pytest.fail("the block must not run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy"]
    if foreign:
        assert (target / foreign).read_text() == "mine" and (target / "model.onnx").read_text() == "v1"
    else:
        assert target.read_text() == "a file, not a folder"
