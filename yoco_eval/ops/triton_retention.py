"""One-pass gated retention for prefill, with YOCO's interleaved RoPE applied as q and k are loaded (Triton).

fla-core's chunked kernel (:func:`yoco_eval.ops.retention.triton_chunk_retention`) makes three passes over a
prefill chunk: the RoPE kernel rewrites q and k, one kernel writes the recurrent state of every 64-token block
to memory (``[T/64, H, D, Dv]``, as large as q itself), and a second kernel reads it back with q, k and v. Here
each program keeps its slice of the state ``S[:, cols]`` in registers and walks the blocks in order, so q, k and
v are read once and o written once, and nothing else goes to memory.

Per 64-token block (positions ``t``, in-block cumulative log2 decay ``c``, ``c_last`` the block's total)::

    s   = (q k^T) * 2^(c_i - c_j)  for j <= i, else 0        (intra-block, [BT, BT])
    o   = s v + (q S) * 2^c_i                               (S: the state before the block)
    S   = 2^c_last S + k^T (v * 2^(c_last - c_j))

Interleaved RoPE rotates pairs ``(2i, 2i+1)``. Loading the even and odd elements of q and k as two halves makes
the rotation elementwise, and then ``q . k = q_e . k_e + q_o . k_o`` and ``q S = q_e S_e + q_o S_o`` with the
state's even and odd rows kept as two blocks: no shuffles. The rotated values are rounded to bf16 exactly as
the separate RoPE kernel rounds them, the matrix products take bf16 inputs with fp32 accumulation and the state
stays fp32 (fla-core rounds its stored states to bf16), so the twin
(:func:`yoco_eval.ops.fused._rope` + :func:`yoco_eval.ops.retention.torch_chunk_retention`) sees the same inputs.

Parallelism is ``B * H * Dv / BV`` programs, each sequential over the blocks; the block configs were measured
on an H100 with ``reports/gpu/bench_retention.py``.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except Exception:  # ImportError, or a triton without a usable backend
    triton = None


if triton is not None:

    @triton.jit
    def _rope_retention_kernel(Q, K, V, LOG_G, COS, SIN, S0, OUT, S_OUT,
                               stride_qb, stride_qt, stride_kb, stride_kt, stride_vb, stride_vt,
                               stride_ob, stride_ot, stride_gb, stride_gt, stride_cb, stride_ct, T, k_scale,
                               H: tl.constexpr, D: tl.constexpr, DV: tl.constexpr, BT: tl.constexpr,
                               BV: tl.constexpr, HAS_S0: tl.constexpr, ROPE: tl.constexpr):  # fmt: skip
        i_v = tl.program_id(0)
        i_bh = tl.program_id(1)
        b = (i_bh // H).to(tl.int64)
        h = i_bh % H
        half = tl.arange(0, D // 2)
        cols = i_v * BV + tl.arange(0, BV)
        t_in = tl.arange(0, BT)
        causal = t_in[:, None] >= t_in[None, :]
        s_base = i_bh.to(tl.int64) * D * DV
        if HAS_S0:  # the state's even rows (2i) and odd rows (2i+1), columns of this program
            s_e = tl.load(S0 + s_base + (2 * half)[:, None] * DV + cols[None, :])
            s_o = tl.load(S0 + s_base + (2 * half + 1)[:, None] * DV + cols[None, :])
        else:
            s_e = tl.zeros([D // 2, BV], dtype=tl.float32)
            s_o = tl.zeros([D // 2, BV], dtype=tl.float32)
        q_row = Q + b * stride_qb + h * D
        k_row = K + b * stride_kb + h * D
        v_row = V + b * stride_vb + h * DV
        o_row = OUT + b * stride_ob + h * DV
        for t0 in range(0, T, BT):
            t = (t0 + t_in).to(tl.int64)
            tm = (t < T)[:, None]
            qe = tl.load(q_row + t[:, None] * stride_qt + 2 * half[None, :], mask=tm, other=0.0)
            qo = tl.load(q_row + t[:, None] * stride_qt + 2 * half[None, :] + 1, mask=tm, other=0.0)
            ke = tl.load(k_row + t[:, None] * stride_kt + 2 * half[None, :], mask=tm, other=0.0)
            ko = tl.load(k_row + t[:, None] * stride_kt + 2 * half[None, :] + 1, mask=tm, other=0.0)
            if ROPE:  # same arithmetic and rounding as the stand-alone RoPE kernel
                c_off = b * stride_cb + t[:, None] * stride_ct + half[None, :]
                cos = tl.load(COS + c_off, mask=tm, other=0.0)
                sin = tl.load(SIN + c_off, mask=tm, other=0.0)
                qef, qof = qe.to(tl.float32), qo.to(tl.float32)
                kef, kof = ke.to(tl.float32), ko.to(tl.float32)
                qe = (qef * cos - qof * sin).to(Q.dtype.element_ty)
                qo = (qef * sin + qof * cos).to(Q.dtype.element_ty)
                ke = ((kef * cos - kof * sin) * k_scale).to(K.dtype.element_ty)
                ko = ((kef * sin + kof * cos) * k_scale).to(K.dtype.element_ty)
            v = tl.load(v_row + t[:, None] * stride_vt + cols[None, :], mask=tm, other=0.0)
            g = tl.load(LOG_G + b * stride_gb + t * stride_gt + h, mask=t < T, other=0.0) * 1.4426950408889634  # log2(e)
            c = tl.cumsum(g, 0)  # log2 decay from the block's start through each position
            c_last = tl.sum(g, 0)  # padded positions add 0, so this is the last real position's c
            s = tl.dot(qe, tl.trans(ke)) + tl.dot(qo, tl.trans(ko))
            s = s * tl.exp2(tl.where(causal, c[:, None] - c[None, :], float("-inf")))
            inter = tl.dot(qe, s_e.to(qe.dtype)) + tl.dot(qo, s_o.to(qo.dtype))
            o = tl.dot(s.to(v.dtype), v) + inter * tl.exp2(c)[:, None]
            tl.store(o_row + t[:, None] * stride_ot + cols[None, :], o.to(OUT.dtype.element_ty), mask=tm)
            vw = (v.to(tl.float32) * tl.exp2(c_last - c)[:, None]).to(v.dtype)
            decay = tl.exp2(c_last)
            s_e = s_e * decay + tl.dot(tl.trans(ke), vw)
            s_o = s_o * decay + tl.dot(tl.trans(ko), vw)
        tl.store(S_OUT + s_base + (2 * half)[:, None] * DV + cols[None, :], s_e)
        tl.store(S_OUT + s_base + (2 * half + 1)[:, None] * DV + cols[None, :], s_o)


def available() -> bool:
    """The kernel can run here: triton importable, a CUDA device, not switched off (``YOCO_EVAL_TRITON=0``)."""
    return triton is not None and torch.cuda.is_available() and os.environ.get("YOCO_EVAL_TRITON", "1") != "0"


def _heads_contiguous(x: torch.Tensor) -> bool:
    return x.stride(-1) == 1 and x.stride(-2) == x.shape[-1]


def _default_config() -> tuple[int, int, int]:
    """(BV, num_warps, num_stages): measured best for D = Dv = 128 on an H100 (reports/gpu/bench_retention.py);
    ``YOCO_EVAL_RETENTION_CONFIG="BV,warps,stages"`` overrides it (tuning on another card)."""
    env = os.environ.get("YOCO_EVAL_RETENTION_CONFIG")
    if env:
        bv, warps, stages = (int(x) for x in env.split(","))
        return bv, warps, stages
    return 32, 4, 2


def rope_retention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_g: torch.Tensor,
                   tables: tuple[torch.Tensor, torch.Tensor] | None, k_scale: float,
                   state: torch.Tensor | None = None, config: tuple[int, int, int] | None = None,
                   block_t: int = 64) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Gated retention over one prefill chunk, RoPE included.

    Args:
        q, k: ``[B, T, H, D]`` BEFORE RoPE (heads contiguous: a projection's output, any token stride); the
            kernel rotates both by ``tables`` and multiplies the rotated keys by ``k_scale``. ``tables=None``: no
            rotation (then k must already be scaled, and ``k_scale`` is ignored).
        v: ``[B, T, H, Dv]``; log_g: ``[B, T, H]`` fp32 (natural log of the decay, <= 0).
        tables: cos/sin ``[B or 1, T, 1, D/2]`` fp32 (:func:`yoco_eval.ops.rope.rope_tables`), interleaved pairs.
        state: ``[B, H, D, Dv]`` fp32 or None (zeros). config: ``(BV, num_warps, num_stages)``.
    Returns:
        ``(o [B, T, H, Dv] in q's dtype, new state [B, H, D, Dv] fp32)``.
    """
    B, T, H, D = q.shape
    Dv = v.shape[-1]
    BV, warps, stages = config or _default_config()
    BV = min(BV, Dv)
    if not (_heads_contiguous(q) and _heads_contiguous(k) and _heads_contiguous(v)):
        raise ValueError("rope_retention: heads must be contiguous inside each token")
    if D < 32 or D & (D - 1) or BV < 16 or BV & (BV - 1) or Dv % BV:
        raise ValueError(f"rope_retention: head dim {D} must be a power of two >= 32, and Dv={Dv} a multiple of "
                         f"BV={BV} (a power of two >= 16)")
    log_g = log_g.float()
    if log_g.stride(-1) != 1:
        log_g = log_g.contiguous()
    o = torch.empty(B, T, H, Dv, device=q.device, dtype=q.dtype)
    s_out = torch.empty(B, H, D, Dv, device=q.device, dtype=torch.float32)
    s0 = None if state is None else state.float().contiguous()
    if tables is not None:
        cos, sin = (x.reshape(x.shape[0], T, D // 2) for x in tables)
        if cos.stride(-1) != 1:
            cos, sin = cos.contiguous(), sin.contiguous()
        stride_cb, stride_ct = (cos.stride(0) if cos.shape[0] > 1 else 0), cos.stride(1)
    else:
        cos = sin = log_g  # unused pointers
        stride_cb = stride_ct = 0
    _rope_retention_kernel[(Dv // BV, B * H)](
        q, k, v, log_g, cos, sin, s_out if s0 is None else s0, o, s_out,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), o.stride(0), o.stride(1),
        log_g.stride(0), log_g.stride(1), stride_cb, stride_ct, T, float(k_scale),
        H=H, D=D, DV=Dv, BT=block_t, BV=BV, HAS_S0=s0 is not None, ROPE=tables is not None,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return o, s_out
