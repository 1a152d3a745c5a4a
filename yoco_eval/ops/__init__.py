"""Kernels behind one backend choice, each with a plain-PyTorch twin in :mod:`yoco_eval.ops.naive`.

Shape legend used across ``ops``: B batch, T sequence, H query heads, Hk key/value heads, D head dim;
activations are ``[B, T, H, D]``, per-head gates ``[B, T, H]``, retention states ``[B, H, D, Dv]``.

``resolve_backends(attn, retention, device)`` turns the user's choice into concrete backends once:
``auto`` picks the fastest one available on the device and logs the choice once; an explicit choice that is not
available raises :class:`~yoco_eval.errors.BackendUnavailable` with an install hint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from yoco_eval.errors import BackendUnavailable
from yoco_eval.ops import retention as _retention

log = logging.getLogger("yoco_eval")

ATTN_BACKENDS = ("auto", "sdpa", "torch", "flash_attn")
RETENTION_BACKENDS = ("auto", "triton", "torch")
_logged: set = set()


@dataclass(frozen=True)
class Backends:
    attn: str
    retention: str


def resolve_backends(attn: str = "auto", retention: str = "auto", device: str | torch.device = "cpu") -> Backends:
    dev = torch.device(device)
    if attn not in ATTN_BACKENDS:
        raise BackendUnavailable(f"unknown attention backend {attn!r}; choose one of {ATTN_BACKENDS}")
    if retention not in RETENTION_BACKENDS:
        raise BackendUnavailable(f"unknown retention backend {retention!r}; choose one of {RETENTION_BACKENDS}")
    if attn == "flash_attn":
        # PyTorch's SDPA already runs FlashAttention-2 kernels on CUDA; the separate flash-attn package has no
        # prebuilt wheel for the GPU image we measure on, so this version does not call it directly.
        raise BackendUnavailable(
            "attention backend 'flash_attn' is not wired in this version: use attn_backend=sdpa (PyTorch's built-in "
            "FlashAttention kernels) or auto"
        )
    if attn == "auto":
        attn = "sdpa"
    if retention == "auto":
        retention = "triton" if dev.type == "cuda" and _retention.fla_available() else "torch"
    elif retention == "triton" and not (dev.type == "cuda" and _retention.fla_available()):
        raise BackendUnavailable(
            "retention backend 'triton' needs a CUDA device and fla-core: `pip install 'yoco-eval[gpu]'` "
            "(or choose retention_backend=torch)"
        )
    b = Backends(attn, retention)
    if (b, dev.type) not in _logged:
        _logged.add((b, dev.type))
        log.info("yoco-eval kernels on %s: attention=%s, retention=%s", dev.type, b.attn, b.retention)
    return b
