"""Saving and verifying standard ``save_pretrained`` checkpoints (weights, config, tokenizer, provenance)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open

from spt.data.tokenization import save_tokenizer
from spt.errors import ModelError
from spt.hashing import content_sha256
from spt.outputs import atomic_output

PROVENANCE_FILE = "provenance.json"


def save_checkpoint(model: Any, tokenizer: Any, target: Path, provenance: dict[str, Any],
                    state_dict: dict[str, Any] | None = None) -> None:
    """Save model (safetensors), config, tokenizer and provenance as one atomic directory.

    The config names the plain transformers class the weights load into (``saved_architecture``),
    so nothing downstream needs this project's code. ``state_dict``: the full weights when the
    model's own are sharded (FSDP; see training.gathered_weights), else the model's.
    """
    with atomic_output(Path(target)) as staging:
        model.save_pretrained(staging, state_dict=state_dict)
        save_tokenizer(tokenizer, staging)
        architecture = getattr(model, "saved_architecture", None)
        if architecture:
            config_file = staging / "config.json"
            config = json.loads(config_file.read_text())
            config["architectures"] = [architecture]
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")


def verify_checkpoint(path: Path, stage: str | None) -> str:
    """Check that ``path`` is a complete, readable checkpoint; return its content sha256.

    Catches a missing directory, a missing file and a truncated or corrupted safetensors file
    before any training starts. ``stage``: the dvc.yaml stage that writes it, for the message.
    """
    path = Path(path)
    # None: a matrix stage's output, which plain `dvc repro` rebuilds once it is missing or changed
    fix = f"rebuild it with `dvc repro --force {stage}`" if stage else "rebuild it with `dvc repro`"
    if not path.is_dir():
        raise ModelError(f"{path}: checkpoint missing; {fix}")
    for name in ("config.json", "model.safetensors"):
        if not (path / name).is_file():
            raise ModelError(f"{path}: checkpoint has no {name}; {fix}")
    try:
        _check_safetensors(path / "model.safetensors")
    except Exception as err:  # noqa: BLE001 - any failure to read means the same to the user
        raise ModelError(f"{path}/model.safetensors is truncated or corrupt ({err}); {fix}") from None
    return content_sha256(path)


def _check_safetensors(path: Path) -> None:
    """The header parses and the file is exactly as long as the tensors it declares."""
    with open(path, "rb") as handle:
        header_length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_length).decode("utf-8"))
    data_end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"),
                   default=0)
    expected = 8 + header_length + data_end
    actual = path.stat().st_size
    if actual != expected:
        raise ValueError(f"{actual} bytes on disk, header declares {expected}")
    with safe_open(str(path), framework="pt"):
        pass
