"""Kernels behind one backend choice, each with a plain-PyTorch twin in :mod:`yoco_eval.ops.naive`.

Shape legend used across ``ops``: B batch, T sequence, H query heads, Hk key/value heads, D head dim;
activations are ``[B, T, H, D]``, per-head gates ``[B, T, H]``, retention states ``[B, H, D, Dv]``.

Backends are named by what runs, and validated in ONE place, :func:`resolve_backends`:

* ``attn`` (``auto``, ``sdpa``, ``torch``): softmax attention, by PyTorch's ``scaled_dot_product_attention`` or
  in plain PyTorch;
* ``retention`` (``auto``, ``fla``, ``torch``): gated-retention prefill, by fla-core's Triton kernels (CUDA) or in
  plain PyTorch;
* ``decode`` (``auto``, ``triton``, ``sdpa``, ``torch``): split-key decode attention over a long cache, by our
  Triton kernel, SDPA on each split, or plain PyTorch.

``auto`` picks the fastest one available on the device and logs the choice once; an explicit choice that is not
available raises :class:`~yoco_eval.errors.BackendUnavailable` with an install hint; a retired name raises with
the name that replaced it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from yoco_eval.errors import BackendUnavailable
from yoco_eval.ops import retention as _retention
from yoco_eval.ops import triton_kernels as _triton_kernels

log = logging.getLogger("yoco_eval")

ATTN_BACKENDS = ("auto", "sdpa", "torch")
RETENTION_BACKENDS = ("auto", "fla", "torch")
DECODE_BACKENDS = ("auto", "triton", "sdpa", "torch")
_RETIRED = {  # (choice, old name) -> what to say instead
    ("attention", "flash_attn"): "attn_backend='flash_attn' was removed: use attn_backend=sdpa (PyTorch's SDPA runs "
                                 "FlashAttention kernels on CUDA) or auto",
    ("retention", "triton"): "retention_backend='triton' is now called 'fla' (fla-core's Triton kernels): use "
                             "retention_backend=fla or auto",
}  # fmt: skip
_logged: set = set()


@dataclass(frozen=True)
class Backends:
    """Concrete kernels (no ``auto``): ``attn`` in {sdpa, torch}, ``retention`` in {fla, torch}, ``decode`` in
    {triton, sdpa, torch}."""

    attn: str
    retention: str
    decode: str


def check_backend_names(attn: str = "auto", retention: str = "auto", decode: str = "auto") -> None:
    """Raise :class:`BackendUnavailable` (one line) for an unknown or retired backend name; device-free, so a model
    constructor can check its arguments before it knows its device."""
    for kind, name, allowed in (("attention", attn, ATTN_BACKENDS), ("retention", retention, RETENTION_BACKENDS),
                                ("decode", decode, DECODE_BACKENDS)):  # fmt: skip
        if (kind, name) in _RETIRED:
            raise BackendUnavailable(_RETIRED[kind, name])
        if name not in allowed:
            raise BackendUnavailable(f"unknown {kind} backend {name!r}; choose one of {', '.join(allowed)}")


def resolve_backends(attn: str = "auto", retention: str = "auto", device: str | torch.device = "cpu",
                     decode: str = "auto") -> Backends:  # fmt: skip
    """Turn the user's backend names into the concrete :class:`Backends` for ``device`` (see module docstring)."""
    check_backend_names(attn, retention, decode)
    dev = torch.device(device)
    attn = "sdpa" if attn == "auto" else attn
    fla_ok = dev.type == "cuda" and _retention.fla_available()
    if retention == "auto":
        retention = "fla" if fla_ok else "torch"
    elif retention == "fla" and not fla_ok:
        raise BackendUnavailable(
            "retention backend 'fla' needs a CUDA device and fla-core: `pip install 'yoco-eval[gpu]'` "
            "(or choose retention_backend=torch)"
        )
    triton_ok = _triton_kernels.triton is not None and (dev.type == "cuda" or _triton_kernels.interpreting())
    if decode == "auto":
        decode = "triton" if dev.type == "cuda" and triton_ok else attn
    elif decode == "triton" and not triton_ok:
        raise BackendUnavailable(
            "decode backend 'triton' needs a CUDA device and triton: `pip install 'yoco-eval[gpu]'` "
            "(or choose decode_backend=sdpa or torch)"
        )
    b = Backends(attn, retention, decode)
    if (b, dev.type) not in _logged:
        _logged.add((b, dev.type))
        log.info("yoco-eval kernels on %s: attention=%s, retention=%s, decode=%s", dev.type, *vars(b).values())
    return b
