"""Rotary position embeddings in the two conventions the project needs.

YOCO (official code): interleaved pairs (2i, 2i+1) and frequencies ``1 / theta ** linspace(0, 1, D/2)``.
Llama / HF: half-split pairs (i, i + D/2) and frequencies ``1 / theta ** (2i / D)``.
Angles are computed in fp32 from absolute positions; cos/sin are rounded to the activation dtype (as the official
code does before its rotary kernel) and the rotation itself is done in fp32.
"""

from __future__ import annotations

import torch


def inv_freq(head_dim: int, theta: float, style: str, device=None) -> torch.Tensor:
    """``[D/2]`` fp32 inverse frequencies; style ``"yoco"`` or ``"llama"``."""
    if style == "yoco":
        return 1.0 / (theta ** torch.linspace(0, 1, head_dim // 2, dtype=torch.float32, device=device))
    if style == "llama":
        return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    raise ValueError(f"unknown rope style {style!r}; use 'yoco' or 'llama'")


def apply_rope(x: torch.Tensor, pos: torch.Tensor, freqs: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Rotate ``x`` ``[B, T, H, D]`` by the angles of positions ``pos`` ``[B, T]`` (int64); returns x's dtype."""
    ang = pos.float()[..., None] * freqs  # [B, T, D/2]
    cos = ang.cos().to(x.dtype).float()[:, :, None, :]
    sin = ang.sin().to(x.dtype).float()[:, :, None, :]
    xf = x.float()
    if interleaved:
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    else:
        x1, x2 = xf.chunk(2, dim=-1)
        out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.to(x.dtype)
