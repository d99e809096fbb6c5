"""Writing outputs atomically and durably: a reader (or DVC) never sees a half-written file or directory,
not even after a power cut.

Renaming a staged output into place is atomic, but not durable by itself: after a power cut a
renamed file can be empty or short on some filesystems (ext4 with delalloc, XFS), because its
blocks had not reached the disk when the rename did. So every output is published as databases
do: write, fsync each file (and directory) staged, rename, fsync the directory that holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """Yield a staging path beside ``target``; on success it replaces ``target``, on error it vanishes.

    A kill leaves at most a hidden ``.NAME.partial-PID`` beside the target, which the next
    atomic_output for the same target removes; the target itself is never half-written. The staged
    content is fsynced before the rename and the parent directory after it (:func:`publish`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.partial-*"):
        _remove(stale)
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    try:
        yield staging
    except BaseException:
        _remove(staging)
        raise
    publish(staging, target)


def publish(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` (a file or a directory tree) durably: fsync what was staged, rename,
    fsync the directory the rename changed."""
    fsync_tree(staging)
    _remove(target)
    os.replace(staging, target)
    fsync_directory(Path(target).parent)


def fsync_tree(path: Path) -> None:
    """fsync a file, or every file and directory of a tree (the directories hold the files' names)."""
    path = Path(path)
    if not path.is_dir():
        fsync_file(path)
        return
    entries = sorted(path.rglob("*"))
    for entry in entries:
        if entry.is_file() and not entry.is_symlink():
            fsync_file(entry)
    for directory in [*(entry for entry in entries if entry.is_dir() and not entry.is_symlink()), path]:
        fsync_directory(directory)


def fsync_file(path: Path) -> None:
    """Flush a file's data and size to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_directory(path: Path) -> None:
    """Flush a directory's entries (a rename, a new file's name) to the disk."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as sorted, indented JSON, atomically."""
    with atomic_output(Path(path)) as staging:
        staging.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
