"""Writing outputs atomically: a reader (or DVC) never sees a half-written file or directory."""

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
    atomic_output for the same target removes; the target itself is never half-written.
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
    _remove(target)
    os.replace(staging, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as sorted, indented JSON, atomically."""
    with atomic_output(Path(path)) as staging:
        staging.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
