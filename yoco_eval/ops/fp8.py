"""The fp8 (e4m3) storage format of an opt-in K/V cache: one fp32 scale per (token, head).

``x ~= q * scale`` with ``scale = max|x| / 448`` over the head dim, so every row uses e4m3's full range. Each
entry keeps 3 mantissa bits: relative error at most 2**-4, or an absolute 2**-10 * scale for the tiny entries in
e4m3's subnormal range. Readers either fold the scales into the attention kernel
(:func:`yoco_eval.ops.triton_kernels.decode_attention_splitk`) or dequantize.

Values are stored token-contiguous (:func:`value_zeros`): attention sums values over the tokens, and the tensor
cores take 16-bit operands paired along the summed dim. From token-major fp8 values the decode kernel gathered those
pairs a byte at a time; from token-contiguous runs it loads 16 tokens of a dim at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite e4m3 value


ALIGN = 128  # tokens: each (row, head, dim) run of an fp8 value cache starts on a 128-byte line


def value_zeros(batch: int, tokens: int, heads: int, dim: int, device) -> torch.Tensor:
    """Zeroed e4m3 values for ``tokens`` positions, stored ``[B, H, D, T']`` (``T'``: ``tokens`` rounded up to 128,
    so each (row, head, dim) is a contiguous run of tokens starting on a 128-byte line), returned as the
    ``[B, tokens, H, D]`` view (stride 1 along the tokens)."""
    padded = -(-tokens // ALIGN) * ALIGN
    return torch.zeros(batch, heads, dim, padded, device=device, dtype=FP8)[..., :tokens].permute(0, 3, 1, 2)


def token_contiguous(x: torch.Tensor) -> torch.Tensor:
    """e4m3 values ``[B, T, H, D]`` copied into the layout of :func:`value_zeros`."""
    out = value_zeros(*x.shape, x.device)
    as_bytes(out).copy_(as_bytes(x))
    return out


def value_rows(v: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows ``rows`` (int64 ``[n]``) of e4m3 values ``[B, T, H, D]``, in :func:`value_zeros`'s layout whatever
    ``v``'s: one gather of the ``[B, H, D, T']`` storage when ``v`` is in that layout already (a cache's values),
    else a gather and a copy."""
    B, T, H, D = v.shape
    if v.stride(1) != 1 or v.stride(3) < T or v.stride(2) != D * v.stride(3) or v.stride(0) != H * v.stride(2):
        return token_contiguous(as_bytes(v)[rows].view(FP8))
    padded = v.stride(3)  # T': the token run of each (row, head, dim), padding included
    base = as_bytes(v).as_strided((B, H, D, padded), (v.stride(0), v.stride(2), padded, 1))
    return base.index_select(0, rows.to(v.device)).view(FP8)[..., :T].permute(0, 3, 1, 2)


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
    """A read of an fp8 cache: e4m3 ``data`` ``[B, T, Hk, D]`` (keys token-major, values token-contiguous: see
    :func:`value_zeros`) and fp32 ``scale`` ``[B, T, Hk]``."""

    data: torch.Tensor
    scale: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """``[B, T, Hk, D]`` in ``dtype``, contiguous (attention kernels want the head dim contiguous)."""
        return dequantize(self.data, self.scale, dtype).contiguous()
