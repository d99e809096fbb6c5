"""Where the encoder comes from (``model.source``): scratch, a built-in, a local directory or a Hub id.

Light on purpose (no torch): prepare resolves the source before any work, to fail early.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from stages.common.config import ModelConfig
from stages.common.errors import ModelError
from stages.common.hashing import content_sha256
from stages.common.sources import BUILTINS


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``model.source``: what to pass to ``from_pretrained`` (None for scratch)."""

    name_or_path: str | None
    provenance: dict[str, str]


def resolve_model_source(model: ModelConfig) -> ModelSource:
    """Resolve and check ``model.source``; raise ModelError for anything not BERT-compatible."""
    source = model.source
    if source == "scratch":
        return ModelSource(None, {"source": "scratch"})
    if source.startswith("builtin:"):
        builtin = BUILTINS[source.removeprefix("builtin:")]
        path = builtin.locate()
        check_bert_config(path, source)
        return ModelSource(str(path), builtin.provenance())
    path = Path(source)
    if path.is_dir():
        check_bert_config(path, source)
        return ModelSource(str(path), {"source": source, "sha256": content_sha256(path)})
    try:  # a Hub id, for users who are online
        from huggingface_hub import snapshot_download

        local = snapshot_download(source, allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"])
    except Exception as err:  # noqa: BLE001 - any hub failure means the same thing to the user
        raise ModelError(
            f"model.source = '{source}': not a local directory and could not be fetched from the Hugging "
            f"Face Hub ({type(err).__name__}). Offline? Use a local directory or builtin:all-minilm-l6-v2"
        ) from None
    check_bert_config(Path(local), source)
    return ModelSource(local, {"source": source, "sha256": content_sha256(Path(local))})


def check_bert_config(path: Path, source: str) -> None:
    """The directory holds a BERT config and safetensors weights (never a pickle)."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelError(f"model.source = '{source}': {path} has no config.json; point it at a directory "
                        "written by save_pretrained")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"model.source = '{source}': {config_file} is not valid JSON ({err})") from None
    if config.get("model_type") != "bert":
        raise ModelError(f"model.source = '{source}': model_type is {config.get('model_type')!r}; this pipeline "
                        "trains BERT-compatible encoders (model_type 'bert'): point model.source at a BERT "
                        "checkpoint, or use 'scratch' or builtin:all-minilm-l6-v2")
    if not list(path.glob("*.safetensors")):
        raise ModelError(f"model.source = '{source}': {path} has no .safetensors weights; pickled weights "
                        "(pytorch_model.bin) are refused. Convert them with save_pretrained")
