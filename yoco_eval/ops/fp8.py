"""The fp8 (e4m3) storage format of an opt-in K/V cache: one fp32 scale per (token, head).

``x ~= q * scale`` with ``scale = max|x| / 448`` over the head dim, so every row uses e4m3's full range. Each
entry keeps 3 mantissa bits: relative error at most 2**-4, or an absolute 2**-10 * scale for the tiny entries in
e4m3's subnormal range. Readers either fold the scales into the attention kernel
(:func:`yoco_eval.ops.triton_kernels.decode_attention_splitk`) or dequantize.

Values are stored in tiles of 16 tokens (:func:`tiled_zeros`): attention sums values over the tokens, and the
tensor cores want those 16-bit operands paired along the tokens. From a token-major fp8 cache the decode kernel
gathered them a byte at a time; from tiles it loads 16 tokens of one dim at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite e4m3 value


TILE = 16  # tokens per tile of an fp8 value cache


def tiled_zeros(batch: int, tokens: int, heads: int, dim: int, device) -> torch.Tensor:
    """Zeroed e4m3 values for ``tokens`` positions in tiles of :data:`TILE` tokens: stored ``[B, H, n, D, 16]``
    (``n = ceil(tokens / 16)``; one head's tiles one after another, a tile's tokens contiguous), returned as the
    ``[B, n, 16, H, D]`` view that indexes them by (tile, slot). Token ``t`` is ``[:, t // 16, t % 16]``."""
    n = -(-tokens // TILE)
    return torch.zeros(batch, heads, n, dim, TILE, device=device, dtype=FP8).permute(0, 2, 4, 1, 3)


def untile(x: torch.Tensor, tokens: int) -> torch.Tensor:
    """The first ``tokens`` positions of tiled values ``[B, n, 16, H, D]`` as ``[B, tokens, H, D]`` (a copy)."""
    return x.flatten(1, 2)[:, :tokens]


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` ``[..., D]`` -> (e4m3 ``[..., D]``, fp32 scale ``[...]``) with ``x ~= q * scale`` per last-dim row."""
    amax = x.float().abs().amax(-1)
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    return (x.float() / scale[..., None]).to(FP8), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (q.float() * scale[..., None]).to(dtype)


def as_bytes(x: torch.Tensor) -> torch.Tensor:
    """An fp8 tensor viewed as uint8 (others unchanged): float8 indexing and index_put are not implemented on every
    device, byte copies are exact."""
    return x.view(torch.uint8) if x.dtype == FP8 else x


def dense(x, dtype: torch.dtype) -> torch.Tensor:
    """A cache read as a plain tensor: a :class:`QuantKV` dequantized to ``dtype``, anything else as it is."""
    return x.dequantize(dtype) if isinstance(x, QuantKV) else x


def fake_quant(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded through the fp8 cache format (what a cached read of it returns)."""
    return dequantize(*quantize(x), x.dtype)


@dataclass
class QuantKV:
    """A read of the first T positions of an fp8 cache: e4m3 ``data``, ``[B, T, Hk, D]`` (keys) or the tiles holding
    them (values, ``[B, ceil(T/16), 16, Hk, D]``: see :func:`tiled_zeros`), and fp32 ``scale`` ``[B, T, Hk]``."""

    data: torch.Tensor
    scale: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        """``[B, T, Hk, D]``, the tensor this read stands for."""
        return torch.Size((*self.scale.shape, self.data.shape[-1]))

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        data = untile(self.data, self.scale.shape[1]) if self.data.dim() == 5 else self.data
        return dequantize(data, self.scale, dtype)
