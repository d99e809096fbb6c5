"""Content hashes of files and directories: what provenance, fingerprints and tags record."""

from __future__ import annotations

import hashlib
from pathlib import Path

from spt import paths


def content_sha256(path: Path) -> str:
    """sha256 of a file, or of a directory as its sorted (relative path, file sha256) listing."""
    path = Path(path)
    if path.is_file():
        return _file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{_file_sha256(file)}\n".encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_sha256(labeled: Path | None = None) -> str:
    """The data a run reads: data/processed's hash, combined for a point of the labels-per-class curve
    (``labeled`` is data/budgets/n<N>-<seed>/labeled) with its directory's, so its fingerprint differs from the
    full set's."""
    processed = content_sha256(paths.PROCESSED)
    if labeled is None or Path(labeled) == paths.LABELED:
        return processed
    return hashlib.sha256(f"{processed}\0{content_sha256(Path(labeled).parent)}".encode()).hexdigest()
