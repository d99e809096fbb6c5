"""Where the encoder comes from (``model.source``, ``model.revision``): scratch, a built-in, a local
directory or a Hub id, and whether it is an encoder this pipeline trains.

Light on purpose: prepare resolves the source before any work, to fail early, and ``--help`` must
stay fast, so transformers is imported only inside :func:`check_encoder_config`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from spt.config import ModelConfig
from spt.data.grammar import BUILTINS
from spt.errors import ModelError
from spt.hashing import content_sha256

# Tested end to end (tests/test_architectures.py); any other model_type with a masked-LM and a
# sequence-classification class in transformers is accepted too.
TESTED_ARCHITECTURES = ("bert", "roberta", "xlm-roberta", "deberta-v2", "electra", "distilbert", "modernbert")
HUB_FILES = ["*.json", "*.txt", "*.safetensors", "*.model"]  # never pickled weights or code


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``model.source``: what to pass to ``from_pretrained`` (None for scratch)."""

    name_or_path: str | None
    provenance: dict[str, str]


def resolve_model_source(model: ModelConfig) -> ModelSource:
    """Resolve and check ``model.source``; raise ModelError for anything that is not a usable encoder.

    A Hub id is downloaded at ``model.revision`` (default: the main branch); the commit it resolved
    to is recorded in the provenance (``commit``), beside the content hash of the files.
    """
    source = model.source
    if source == "scratch":
        return ModelSource(None, {"source": "scratch"})
    if source.startswith("builtin:"):
        builtin = BUILTINS[source.removeprefix("builtin:")]
        path = builtin.locate()
        check_encoder_config(path, source)
        return ModelSource(str(path), builtin.provenance())
    path = Path(source)
    if path.is_dir():
        check_encoder_config(path, source)
        return ModelSource(str(path), {"source": source, "sha256": content_sha256(path)})
    try:  # a Hub id, for users who are online
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(source, revision=model.revision, allow_patterns=HUB_FILES))
    except Exception as err:  # noqa: BLE001 - any hub failure means the same thing to the user
        at = f" at revision '{model.revision}'" if model.revision else ""
        raise ModelError(
            f"model.source = '{source}'{at}: not a local directory and could not be fetched from the Hugging "
            f"Face Hub ({type(err).__name__}). Offline? Use a local directory or builtin:all-minilm-l6-v2"
        ) from None
    check_encoder_config(local, source)
    # snapshot_download answers with .../snapshots/<commit>: the commit the revision resolved to
    return ModelSource(str(local), {"source": source, "revision": model.revision or "main", "commit": local.name,
                                    "sha256": content_sha256(local)})


def check_encoder_config(path: Path, source: str) -> None:
    """The directory holds the config of an encoder with both a masked-LM and a sequence-classification
    class in transformers (no remote code), and safetensors weights (never a pickle)."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelError(f"model.source = '{source}': {path} has no config.json; point it at a directory "
                        "written by save_pretrained")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"model.source = '{source}': {config_file} is not valid JSON ({err})") from None
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    model_type = config.get("model_type")
    missing = [name for name, mapping in (("AutoModelForMaskedLM", MODEL_FOR_MASKED_LM_MAPPING_NAMES),
                                          ("AutoModelForSequenceClassification",
                                           MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES))
               if model_type not in mapping]
    if missing or config.get("is_encoder_decoder"):
        why = (f"transformers has no {' or '.join(missing)} class for it" if missing
               else "it is an encoder-decoder, not an encoder")
        raise ModelError(f"model.source = '{source}': model_type is {model_type!r}, and {why}. This pipeline "
                        "trains encoders with both a masked-LM and a sequence-classification head, e.g. "
                        f"{', '.join(TESTED_ARCHITECTURES)} (tested); decoder-only models (GPT-2, Llama, ...) "
                        "have no masked-LM head. Point model.source at such an encoder, or use 'scratch' or "
                        "builtin:all-minilm-l6-v2")
    if not list(path.glob("*.safetensors")):
        raise ModelError(f"model.source = '{source}': {path} has no .safetensors weights; pickled weights "
                        "(pytorch_model.bin) are refused. Convert them with save_pretrained")
