"""Writing outputs atomically and durably: a reader (or DVC) never sees a half-written file or directory,
not even after a power cut.

Renaming a staged output into place is atomic, but not durable by itself: after a power cut a
renamed file can be empty or short on some filesystems (ext4 with delalloc, XFS), because its
blocks had not reached the disk when the rename did. So every output is published as databases
do: write, fsync each file (and directory) staged, rename, fsync the directory that holds it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spt.errors import DiskFullError

# torch's zip writer hides the errno of a failed write; with this little space left, its failure is a full disk.
NEARLY_FULL = 64 * 2**20
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")


@contextlib.contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """Yield a staging path beside ``target``; on success it replaces ``target``, on error it vanishes.

    A kill leaves at most a hidden ``.NAME.partial-PID`` beside the target, which the next
    atomic_output for the same target removes; the target itself is never half-written. The staged
    content is fsynced before the rename and the parent directory after it (:func:`publish`). A full
    disk (:func:`is_disk_full`) becomes a :class:`DiskFullError` naming the target, once the staged
    part is removed: the previous ``target`` stays as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.partial-*"):
        _remove(stale)
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    try:
        yield staging
        publish(staging, target)
    except BaseException as err:
        _remove(staging)
        if isinstance(err, Exception) and not isinstance(err, DiskFullError) and is_disk_full(err, target.parent):
            raise disk_full_error(target, err) from None
        raise


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


def is_disk_full(error: BaseException, where: Path | None = None) -> bool:
    """True when ``error``, or an error it was raised from, says the disk or the quota is full: an OSError
    ENOSPC or EDQUOT, a library's message for it ("No space left on device", SQLite's "disk is full"), or
    torch's zip writer failing (it drops the errno) while ``where``'s filesystem has under NEARLY_FULL free."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error)
        if "No space left on device" in text or "StorageFull" in text or "disk is full" in text:
            return True
        if where is not None and any(part in text for part in _TORCH_WRITE_FAILED) and free_bytes(where) < NEARLY_FULL:
            return True
        error = error.__cause__ or error.__context__
    return False


def free_bytes(path: Path) -> int:
    """Free space, in bytes, on the filesystem that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def disk_full_error(path: Path, error: BaseException | None = None, needed: str = "") -> DiskFullError:
    """The one message for a full disk: what could not be written (and the file that failed, when the error
    names another), how much is free there, ``needed`` (what the write takes, in words) and what to do."""
    failed = getattr(error, "filename", None)
    detail = f" ({failed})" if failed and Path(failed) != Path(path) else ""
    return DiskFullError(
        f"the disk is full: writing {path}{detail} failed, {format_bytes(free_bytes(path))} free on that filesystem"
        f"{'; ' + needed if needed else ''}. What was half-written is removed and earlier outputs are as they were; "
        "free space there (old checkpoints/ of other runs, `dvc gc -w` for cached outputs no longer used, old runs' "
        "mlartifacts/) and run again")


def format_bytes(size: float) -> str:
    """A size for people: 512 KB, 87 MB, 1.3 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}" if unit == "GB" else f"{size / scale:.0f} {unit}"
    return f"{size:.0f} bytes"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as sorted, indented JSON, atomically."""
    with atomic_output(Path(path)) as staging:
        staging.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
