"""The fp8 (e4m3) storage format of an opt-in K/V cache: one fp32 scale per (token, head).

``x ~= q * scale`` with ``scale = max|x| / 448`` over the head dim, so every row uses e4m3's full range. Each
entry keeps 3 mantissa bits: relative error at most 2**-4, or an absolute 2**-10 * scale for the tiny entries in
e4m3's subnormal range. Readers either fold the scales into the attention kernel
(:func:`yoco_eval.ops.triton_kernels.decode_attention_splitk`) or dequantize.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite e4m3 value


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
    """A read of an fp8 cache: e4m3 ``data`` ``[B, T, Hk, D]`` and fp32 ``scale`` ``[B, T, Hk]``."""

    data: torch.Tensor
    scale: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        return dequantize(self.data, self.scale, dtype)
