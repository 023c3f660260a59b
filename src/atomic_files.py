"""Files and folders written whole or not at all, the project's one way of doing it.

The output is written under a hidden temporary name beside its target (same folder, so the same file
system) and renamed onto the target once complete: a rename within one file system is atomic on POSIX,
so a reader sees the old file or the new one, never half of one. On any failure (a full disk, bad
input found half-way, Ctrl-C) the temporary output is removed and the target is left as it was.

Checkpoints (src.checkpoint: MindSpore chooses part of the name), record shards and their side files
(src.records_writer, src.windows: several files that complete together) and exports (src.export_model:
MindSpore writes a folder) have writers of their own for those reasons.
"""
import os
import shutil
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yield a temporary path to write; it replaces `path` when the block ends, or is removed if it raises.

    The temporary name is hidden (leading dot), carries the process id (two processes writing one target
    do not share it) and keeps the extension, for writers that pick a format by it or append one
    (matplotlib's savefig, numpy.save). Missing parent folders are created.

    Args:
        path (str or Path): the file to write.
    Yields:
        Path: where to write it.
    Raises:
        OSError: the folder cannot be created or the rename fails; anything the block raises passes through.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path, text):
    """Write `text` (UTF-8) to `path` through `atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def atomic_directory(path, owned, kind):
    """Yield a new empty temporary folder; it replaces the folder `path` when the block ends, or is removed
    if the block raises. A `path` that already exists is replaced only if it holds nothing but the names in
    `owned` (an earlier output of the same writer): files of the user's are never deleted.

    Args:
        path (str or Path): the folder to write.
        owned (set of str): the file names the writer itself puts in the folder.
        kind (str): what the folder is, for the error message ("a deploy folder").
    Yields:
        Path: the folder to fill.
    Raises:
        ValueError: `path` is a file, or a folder holding other names than `owned` (the message lists up to
            eight and says to choose another output folder); raised before anything is written.
        OSError: a folder cannot be created or renamed; anything the block raises passes through.
    """
    path = Path(path)
    if path.exists():
        foreign = sorted(p.name for p in path.iterdir() if p.name not in owned) if path.is_dir() else [path.name]
        if foreign:
            shown = ", ".join(foreign[:8]) + (f" ... ({len(foreign)} in all)" if len(foreign) > 8 else "")
            raise ValueError(f"{path} exists and holds more than {kind} ({shown}): choose another output folder")
    tmp, old = (path.with_name(f".{path.name}.{what}-{os.getpid()}") for what in ("partial", "old"))
    for stale in (tmp, old):  # left by a killed run of this process id
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)  # a folder cannot be renamed onto a non-empty one: the old one moves aside
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
