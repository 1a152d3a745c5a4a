"""Elementwise pieces compiled into single kernels on the GPU (plain PyTorch elsewhere).

Each function here is the plain-PyTorch definition (the CPU path and the test oracle); on CUDA tensors it runs
through ``torch.compile`` (Inductor generates one Triton kernel per function instead of ~5-10 separate passes
over the activations). Compilation is lazy, shape-dynamic, and falls back to the eager function (logged once)
if it fails. ``YOCO_EVAL_COMPILE=0`` turns it off. The SwiGLU product (with the up-projection GEMM where it
pays) and the retention output gate go one step further, to hand-written Triton kernels
(:mod:`yoco_eval.ops.triton_kernels`) where the layout allows.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from yoco_eval import settings
from yoco_eval.ops import triton_kernels

log = logging.getLogger("yoco_eval")


def _on(x: torch.Tensor) -> bool:
    return x.is_cuda and settings.get().compile


class _Lazy:
    def __init__(self, fn):
        self.fn, self.compiled, self.failed = fn, None, False

    def __call__(self, x, *args):
        if self.failed or not _on(x) or torch.compiler.is_compiling():
            return self.fn(x, *args)
        if self.compiled is None:
            self.compiled = torch.compile(self.fn, dynamic=True, fullgraph=True)
        try:
            return self.compiled(x, *args)
        except Exception as e:  # a compiler problem must never stop an evaluation
            self.failed = True
            log.warning("yoco-eval: torch.compile of %s failed (%s); using eager PyTorch", self.fn.__name__, e)
            return self.fn(x, *args)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool, scale: float) -> torch.Tensor:
    xf = x.float()
    if interleaved:
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    else:
        x1, x2 = xf.chunk(2, dim=-1)
        out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return (out * scale).to(x.dtype) if scale != 1.0 else out.to(x.dtype)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    xf = x.float()
    out = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x)
    return out * weight if weight is not None else out


def _silu_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.silu(a) * b


def _silu_gate_head_norm(g: torch.Tensor, o: torch.Tensor, eps: float) -> torch.Tensor:
    """``silu(g) * rms_norm(o)`` with the norm over each head (no weight): g ``[B, T, H*D]``, o ``[B, T, H, D]``."""
    return _silu_mul(g, _rms_norm(o, None, eps).flatten(-2))


def _gate_log(x: torch.Tensor, normalizer: float) -> torch.Tensor:
    return F.logsigmoid(x.float()) / normalizer


rope = _Lazy(_rope)
_rms_norm_compiled = _Lazy(_rms_norm)
_gate_log_compiled = _Lazy(_gate_log)
_silu_mul_compiled = _Lazy(_silu_mul)
_silu_gate_head_norm_compiled = _Lazy(_silu_gate_head_norm)


def _kernel_or_twin(kernel, twin, x: torch.Tensor, *args):
    """``kernel(x, *args)`` when the Triton kernels can run on ``x`` and the kernel takes its layout (it returns
    None when not), else the twin."""
    out = kernel(x, *args) if triton_kernels.available(x) else None
    return out if out is not None else twin(x, *args)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim (fp32 statistics, cast back, then times ``weight``): ``[..., D]`` -> ``[..., D]``."""
    return _kernel_or_twin(triton_kernels.rms_norm, _rms_norm_compiled, x, weight, eps)


def gate_log(x: torch.Tensor, normalizer: float) -> torch.Tensor:
    """Retention's per-head log-decay ``logsigmoid(x) / normalizer`` in fp32: ``[..., H]`` -> ``[..., H]``."""
    return _kernel_or_twin(triton_kernels.gate_log, _gate_log_compiled, x, normalizer)


def silu_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``silu(a) * b`` (SwiGLU), a and b of one shape ``[..., N]``."""
    return _kernel_or_twin(triton_kernels.silu_mul, _silu_mul_compiled, a, b)


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x w^T`` for ``x`` ``[..., K]``, ``w`` ``[N, K]``: one row (decode at batch 1) through the Triton GEMV
    (:func:`triton_kernels.gemv`; ``YOCO_EVAL_GEMV=0`` turns it off), everything else through cuBLAS."""
    out = triton_kernels.gemv(x, w) if triton_kernels.gemv_on(x) else None
    return out if out is not None else F.linear(x, w)


def _swiglu_up(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    a, b = F.linear(x, w).chunk(2, dim=-1)
    return silu_mul(a, b)


def swiglu_up(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The FFN's up-projection and SwiGLU: ``silu(x @ w[:N].T) * (x @ w[N:].T)`` for ``x`` ``[M, K]`` and the
    fused weight ``w`` ``[2N, K]`` -> ``[M, N]``. One Triton GEMM with the product in its epilogue on Hopper for
    long row counts (:func:`triton_kernels.swiglu_up`), the one-row GEMV with the product in its epilogue for one
    row (:func:`triton_kernels.gemv`), else cuBLAS's GEMM and :func:`silu_mul`."""
    if triton_kernels.available(x):
        out = triton_kernels.swiglu_up(x, w)
        if out is None and triton_kernels.gemv_on(x):
            out = triton_kernels.gemv(x, w, swiglu=True)
        if out is not None:
            return out
    return _swiglu_up(x, w)


def retention_decode_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gt: torch.Tensor, g: torch.Tensor,
                          state: torch.Tensor, normalizer: float, eps: float) -> torch.Tensor | None:  # fmt: skip
    """Gated retention's whole decode step in one Triton kernel (:func:`triton_kernels.retention_step`: log-decay,
    state update IN PLACE, ``q S``, per-head RMSNorm, SiLU gate) -> ``[B, 1, H * DV]``; None where the kernels
    cannot run or the layout does not fit, and the caller runs the separate steps (the twin)."""
    if not triton_kernels.available(q):
        return None
    return triton_kernels.retention_step(q, k, v, gt, g, state, normalizer, eps)


def silu_gate_head_norm(g: torch.Tensor, o: torch.Tensor, eps: float) -> torch.Tensor:
    """``silu(g) * rms_norm(o)`` per head: g ``[B, T, H*D]``, o ``[B, T, H, D]`` -> ``[B, T, H*D]``."""
    return _kernel_or_twin(triton_kernels.silu_gate_head_norm, _silu_gate_head_norm_compiled, g, o, eps)
