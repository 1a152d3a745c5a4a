"""Reading a checkpoint folder's safetensors: one file, the shards an index lists, or every ``*.safetensors``
file. Shared by every loader (:mod:`yoco_eval.model.checkpoint`, :mod:`yoco_eval.model.phi4flash_load`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from yoco_eval.errors import CheckpointError


def read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder's weights: ``model.safetensors``, the shards its index lists, or every
    ``*.safetensors`` file; a missing or unreadable file is one :class:`CheckpointError` line."""
    from safetensors.torch import load_file

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(
            f"{folder}: no model.safetensors (or shards) found; point at the checkpoint folder that holds them"
        )
    sd = {}
    for f in files:
        if not (folder / f).is_file():
            raise CheckpointError(f"{folder}: shard {f} listed in model.safetensors.index.json is missing")
        try:
            sd.update(load_file(str(folder / f)))
        except Exception as e:  # truncated/corrupt file
            raise CheckpointError(f"{folder / f}: cannot read safetensors ({e}); re-download or re-save it") from None
    return sd
