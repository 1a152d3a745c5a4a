"""Rotary position embeddings in the two conventions the project needs.

YOCO (official code): interleaved pairs (2i, 2i+1) and frequencies ``1 / theta ** linspace(0, 1, D/2)``.
Llama / HF: half-split pairs (i, i + D/2) and frequencies ``1 / theta ** (2i / D)``.
Angles are computed in fp32 from absolute positions; cos/sin are rounded to the activation dtype (as the official
code does before its rotary kernel) and the rotation itself is done in fp32.
"""

from __future__ import annotations

import functools

import torch


def inv_freq(head_dim: int, theta: float, style: str, device=None) -> torch.Tensor:
    """``[D/2]`` fp32 inverse frequencies; style ``"yoco"`` or ``"llama"``."""
    if style == "yoco":
        return 1.0 / (theta ** torch.linspace(0, 1, head_dim // 2, dtype=torch.float32, device=device))
    if style == "llama":
        return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    raise ValueError(f"unknown rope style {style!r}; use 'yoco' or 'llama'")


@functools.lru_cache(maxsize=64)
def cached_inv_freq(head_dim: int, theta: float, style: str, device: torch.device) -> torch.Tensor:
    """:func:`inv_freq`, made once per device and shared (read-only): a decode step would otherwise spend ~6 small
    kernel launches a step rebuilding the same ``[D/2]`` vector."""
    return inv_freq(head_dim, theta, style, device)


def rope_tables(pos: torch.Tensor, freqs: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin ``[B, T, 1, D/2]`` (fp32 values rounded to ``dtype``, as the official code feeds its kernel)."""
    ang = pos.float()[..., None] * freqs  # [B, T, D/2]
    return ang.cos().to(dtype).float()[:, :, None, :], ang.sin().to(dtype).float()[:, :, None, :]


def apply_rope(
    x: torch.Tensor,
    pos: torch.Tensor,
    freqs: torch.Tensor,
    interleaved: bool,
    tables: tuple[torch.Tensor, torch.Tensor] | None = None,
    scale: float = 1.0,
    inplace: bool = False,
) -> torch.Tensor:
    """Rotate ``x`` ``[B, T, H, D]`` by the angles of positions ``pos`` ``[B, T]`` (int64), then multiply by
    ``scale``; returns x's dtype. ``tables`` (from :func:`rope_tables`) can be shared between calls.
    ``inplace=True`` lets a CUDA kernel overwrite ``x`` (a fresh projection output) instead of allocating."""
    from yoco_eval.ops import triton_kernels
    from yoco_eval.ops.fused import rope

    cos, sin = tables if tables is not None else rope_tables(pos, freqs, x.dtype)
    if inplace and triton_kernels.available(x) and x.stride(-1) == 1 and x.stride(-2) == x.shape[-1]:
        return triton_kernels.rope_(x, cos, sin, interleaved, scale)
    return rope(x, cos, sin, interleaved, scale)


def apply_rope_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    tables: tuple[torch.Tensor, torch.Tensor],
    interleaved: bool,
    k_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries ``[B, T, H, D]`` and keys ``[B, T, Hk, D]`` (keys also times ``k_scale``).

    On CUDA (no autograd) both are overwritten in place, in ONE kernel launch when the keys directly follow the
    queries in memory (the output of a fused q/k/v projection); elsewhere the compiled PyTorch twin runs."""
    from yoco_eval.ops import triton_kernels
    from yoco_eval.ops.fused import rope

    cos, sin = tables
    B, T, H, D = q.shape
    if triton_kernels.available(q) and q.stride()[2:] == (D, 1) and k.stride()[2:] == (D, 1):
        # one launch only when k is q's neighbour INSIDE one tensor (a fused projection's output): two separate small
        # tensors can also sit back to back in the caching allocator, and a view over both would leave q's storage
        adjacent = (
            k.stride()[:2] == q.stride()[:2]
            and k.untyped_storage().data_ptr() == q.untyped_storage().data_ptr()
            and k.data_ptr() == q.data_ptr() + H * D * q.element_size()
        )
        if adjacent:
            both = q.as_strided((B, T, H + k.shape[2], D), q.stride())
            triton_kernels.rope_(both, cos, sin, interleaved, k_scale, n_plain=H)
        else:
            triton_kernels.rope_(q, cos, sin, interleaved)
            triton_kernels.rope_(k, cos, sin, interleaved, k_scale)
        return q, k
    return rope(q, cos, sin, interleaved, 1.0), rope(k, cos, sin, interleaved, k_scale)
