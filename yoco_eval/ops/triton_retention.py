"""Gated retention for prefill with YOCO's RoPE and output gate inside the kernels (Triton, yoco-eval's own).

The unfused path makes four passes over a prefill chunk: a RoPE kernel rewrites q and k; fla-core's chunked
retention writes the state entering every block (``[T/BT, H, D, Dv]``) and reads it back with q, k and v; a
last kernel applies the per-head RMSNorm and the SiLU gate. Here there are two passes, and q and k are rotated
as they are loaded, so the rotated copies and the ungated output never reach memory:

1. **State pass** (sequential over the blocks, parallel over heads and state columns): rotates and scales k,
   stores the state entering each block in bf16 (as fla-core does), carries the fp32 state to the end::

       S <- 2^c_last S + k^T (v * 2^(c_last - c_j))

2. **Output pass** (every block in parallel): rotates q and k, then per block::

       o = ((q k^T) * 2^(c_i - c_j) [j <= i]) v + (q S_block) * 2^c_i
       out = silu(gate) * rms_norm_per_head(o)        (optional: the gated-retention output, ready for out_proj)

``c`` is the in-block cumulative log2 decay and ``c_last`` the block's total. Interleaved RoPE rotates pairs
``(2i, 2i+1)``: each tile of q or k is loaded whole and split into its even and odd halves, the rotation is then
elementwise, and ``q . k = q_e . k_e + q_o . k_o``, ``q S = q_e S_e + q_o S_o`` with the state's even and odd
rows. Rounding follows the unfused path: rotated values are rounded to bf16 as the RoPE kernel rounds them,
products take bf16 inputs with fp32 accumulation, the retention output is rounded to bf16 before the norm, the
SiLU to bf16 before the product. The twins are :func:`yoco_eval.ops.fused._rope`,
:func:`yoco_eval.ops.retention.torch_chunk_retention` and :func:`yoco_eval.ops.fused._silu_gate_head_norm`.

A one-pass kernel (state kept in registers, no state round trip) was measured first and ran 6x slower than
RoPE + fla-core on an H100: its programs are few (heads x column blocks) and sequential over 512 blocks, so it is
latency-bound (reports/gpu/README.md, 2026-11-27 e).
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
    def _rotate(x, cos, sin, scale, dtype: tl.constexpr):
        """Interleaved RoPE of a ``[BT, D]`` tile -> its rotated even and odd halves ``[BT, D/2]`` in ``dtype``."""
        xe, xo = tl.split(tl.reshape(x.to(tl.float32), [x.shape[0], x.shape[1] // 2, 2]))
        return ((xe * cos - xo * sin) * scale).to(dtype), ((xe * sin + xo * cos) * scale).to(dtype)

    @triton.jit
    def _state_pass_kernel(K, V, LOG_G, COS, SIN, S0, HB, S_OUT,
                           stride_kb, stride_kt, stride_vb, stride_vt, stride_gb, stride_gt, stride_cb, stride_ct,
                           T, NT, k_scale,
                           H: tl.constexpr, D: tl.constexpr, DV: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr,
                           HAS_S0: tl.constexpr, ROPE: tl.constexpr):  # fmt: skip
        i_p = tl.program_id(0)  # 0: the state's even rows (2i), 1: its odd rows (2i+1)
        i_v = tl.program_id(1)
        i_bh = tl.program_id(2)
        b = (i_bh // H).to(tl.int64)
        h = i_bh % H
        half = tl.arange(0, D // 2)
        rows = 2 * half + i_p
        cols = i_v * BV + tl.arange(0, BV)
        t_in = tl.arange(0, BT)
        d = tl.arange(0, D)
        s_off = rows[:, None] * DV + cols[None, :]
        if HAS_S0:
            S = tl.load(S0 + i_bh.to(tl.int64) * D * DV + s_off)
        else:
            S = tl.zeros([D // 2, BV], dtype=tl.float32)
        k_row = K + b * stride_kb + h * D
        v_row = V + b * stride_vb + h * DV
        hb = HB + i_bh.to(tl.int64) * NT * D * DV
        for i_t in range(0, NT):
            t = (i_t * BT + t_in).to(tl.int64)
            tm = (t < T)[:, None]
            tl.store(hb + i_t * D * DV + s_off, S.to(HB.dtype.element_ty))  # the state entering this block
            k = tl.load(k_row + t[:, None] * stride_kt + d[None, :], mask=tm, other=0.0)
            if ROPE:
                c_off = b * stride_cb + t[:, None] * stride_ct + half[None, :]
                cos = tl.load(COS + c_off, mask=tm, other=0.0).to(tl.float32)
                sin = tl.load(SIN + c_off, mask=tm, other=0.0).to(tl.float32)
                ke, ko = _rotate(k, cos, sin, k_scale, K.dtype.element_ty)
            else:
                ke, ko = tl.split(tl.reshape(k, [BT, D // 2, 2]))
            if i_p == 0:
                kp = ke
            else:
                kp = ko
            v = tl.load(v_row + t[:, None] * stride_vt + cols[None, :], mask=tm, other=0.0)
            g = tl.load(LOG_G + b * stride_gb + t * stride_gt + h, mask=t < T, other=0.0) * 1.4426950408889634
            c = tl.cumsum(g, 0)  # log2 decay from the block's start through each position
            c_last = tl.sum(g, 0)  # padded positions add 0
            vw = (v.to(tl.float32) * tl.exp2(c_last - c)[:, None]).to(v.dtype)
            S = S * tl.exp2(c_last) + tl.dot(tl.trans(kp), vw)
        tl.store(S_OUT + i_bh.to(tl.int64) * D * DV + s_off, S)

    @triton.jit
    def _output_pass_kernel(Q, K, V, LOG_G, COS, SIN, HB, GATE, OUT,
                            stride_qb, stride_qt, stride_kb, stride_kt, stride_vb, stride_vt, stride_gb, stride_gt,
                            stride_cb, stride_ct, stride_zb, stride_zt, stride_ob, stride_ot, T, NT, k_scale, eps,
                            H: tl.constexpr, D: tl.constexpr, DV: tl.constexpr, BT: tl.constexpr,
                            ROPE: tl.constexpr, GATED: tl.constexpr):  # fmt: skip
        i_t = tl.program_id(0)
        i_bh = tl.program_id(1)
        b = (i_bh // H).to(tl.int64)
        h = i_bh % H
        half = tl.arange(0, D // 2)
        d = tl.arange(0, D)
        dv = tl.arange(0, DV)
        t_in = tl.arange(0, BT)
        t = (i_t * BT + t_in).to(tl.int64)
        tm = (t < T)[:, None]
        q = tl.load(Q + b * stride_qb + h * D + t[:, None] * stride_qt + d[None, :], mask=tm, other=0.0)
        k = tl.load(K + b * stride_kb + h * D + t[:, None] * stride_kt + d[None, :], mask=tm, other=0.0)
        if ROPE:
            c_off = b * stride_cb + t[:, None] * stride_ct + half[None, :]
            cos = tl.load(COS + c_off, mask=tm, other=0.0).to(tl.float32)
            sin = tl.load(SIN + c_off, mask=tm, other=0.0).to(tl.float32)
            qe, qo = _rotate(q, cos, sin, 1.0, Q.dtype.element_ty)
            ke, ko = _rotate(k, cos, sin, k_scale, K.dtype.element_ty)
        else:
            qe, qo = tl.split(tl.reshape(q, [BT, D // 2, 2]))
            ke, ko = tl.split(tl.reshape(k, [BT, D // 2, 2]))
        g = tl.load(LOG_G + b * stride_gb + t * stride_gt + h, mask=t < T, other=0.0) * 1.4426950408889634
        c = tl.cumsum(g, 0)
        s = tl.dot(qe, tl.trans(ke)) + tl.dot(qo, tl.trans(ko))
        s = s * tl.exp2(tl.where(t_in[:, None] >= t_in[None, :], c[:, None] - c[None, :], float("-inf")))
        v = tl.load(V + b * stride_vb + h * DV + t[:, None] * stride_vt + dv[None, :], mask=tm, other=0.0)
        hb = HB + (i_bh.to(tl.int64) * NT + i_t) * D * DV
        s_e = tl.load(hb + (2 * half)[:, None] * DV + dv[None, :])
        s_o = tl.load(hb + (2 * half + 1)[:, None] * DV + dv[None, :])
        o = tl.dot(s.to(v.dtype), v) + (tl.dot(qe, s_e) + tl.dot(qo, s_o)) * tl.exp2(c)[:, None]
        o = o.to(OUT.dtype.element_ty)
        if GATED:  # per-head RMSNorm (fp32, cast back), times silu(gate) rounded to bf16, as the twin
            of = o.to(tl.float32)
            normed = (of * tl.rsqrt(tl.sum(of * of, 1) / DV + eps)[:, None]).to(o.dtype)
            z = tl.load(GATE + b * stride_zb + h * DV + t[:, None] * stride_zt + dv[None, :], mask=tm, other=0.0)
            zf = z.to(tl.float32)
            sz = (zf * tl.sigmoid(zf)).to(z.dtype)
            o = (sz.to(tl.float32) * normed.to(tl.float32)).to(OUT.dtype.element_ty)
        tl.store(OUT + b * stride_ob + h * DV + t[:, None] * stride_ot + dv[None, :], o, mask=tm)


def available() -> bool:
    """The kernels can run here: triton importable, a CUDA device, not switched off (``YOCO_EVAL_TRITON=0``)."""
    return triton is not None and torch.cuda.is_available() and os.environ.get("YOCO_EVAL_TRITON", "1") != "0"


def _tokens_stride(x: torch.Tensor, what: str) -> None:
    if x.stride(-1) != 1 or x.stride(-2) != x.shape[-1]:
        raise ValueError(f"rope_retention: the heads of {what} must be contiguous inside each token")


def _default_config() -> tuple[int, int, int, int, int]:
    """``(BT, state BV, state warps, output warps, output stages)``: measured best for D = Dv = 128 on an H100
    (reports/gpu/bench_retention.py); ``YOCO_EVAL_RETENTION_CONFIG="BT,BV,w1,w2,s2"`` overrides it."""
    env = os.environ.get("YOCO_EVAL_RETENTION_CONFIG")
    if env:
        bt, bv, w1, w2, s2 = (int(x) for x in env.split(","))
        return bt, bv, w1, w2, s2
    return 64, 64, 4, 8, 2


def rope_retention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_g: torch.Tensor,
                   tables: tuple[torch.Tensor, torch.Tensor] | None, k_scale: float,
                   state: torch.Tensor | None = None, gate: torch.Tensor | None = None, eps: float = 1e-5,
                   config: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Gated retention over one prefill chunk, RoPE (and optionally the output gate) included.

    Args:
        q, k: ``[B, T, H, D]`` BEFORE RoPE (heads contiguous, e.g. a projection's output; any token stride). Both
            are rotated by ``tables`` and the rotated keys multiplied by ``k_scale``. ``tables=None``: no rotation
            (k must then be scaled already; ``k_scale`` is ignored).
        v: ``[B, T, H, Dv]``; log_g: ``[B, T, H]`` fp32, natural log of the decay (<= 0).
        tables: cos/sin ``[B or 1, T, 1, D/2]`` (:func:`yoco_eval.ops.rope.rope_tables`), interleaved pairs.
        state: ``[B, H, D, Dv]`` fp32 or None (zeros).
        gate: ``[B, T, H*Dv]`` or None. Given, the output is ``silu(gate) * rms_norm_per_head(o)`` (eps ``eps``,
            no weight) ``[B, T, H*Dv]``, gated retention's input to its output projection.
        config: ``(BT, BV, state-pass warps, output-pass warps, output-pass stages)``.
    Returns:
        ``(o [B, T, H, Dv] or the gated [B, T, H*Dv], in q's dtype; new state [B, H, D, Dv] fp32)``.
    """
    B, T, H, D = q.shape
    Dv = v.shape[-1]
    BT, BV, w1, w2, s2 = config or _default_config()
    BV = min(BV, Dv)
    for x, what in ((q, "q"), (k, "k"), (v, "v")):
        _tokens_stride(x, what)
    if D < 32 or D & (D - 1) or Dv < 16 or Dv & (Dv - 1) or Dv % BV:
        raise ValueError(f"rope_retention: head dims {D}, {Dv} must be powers of two (>= 32, >= 16)")
    log_g = log_g.float()
    if log_g.stride(-1) != 1:
        log_g = log_g.contiguous()
    NT = triton.cdiv(T, BT)
    hb = torch.empty(B * H, NT, D, Dv, device=q.device, dtype=q.dtype)
    s_out = torch.empty(B, H, D, Dv, device=q.device, dtype=torch.float32)
    s0 = None if state is None else state.float().contiguous()
    if tables is not None:  # the tables hold bf16-rounded values: read them as bf16 (half the bytes, same values)
        cos, sin = (x.reshape(x.shape[0], T, D // 2).to(q.dtype) for x in tables)
        stride_cb, stride_ct = (cos.stride(0) if cos.shape[0] > 1 else 0), cos.stride(1)
    else:
        cos = sin = log_g  # unused pointers
        stride_cb = stride_ct = 0
    _state_pass_kernel[(2, Dv // BV, B * H)](
        k, v, log_g, cos, sin, s_out if s0 is None else s0, hb, s_out,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1), log_g.stride(0), log_g.stride(1), stride_cb, stride_ct,
        T, NT, float(k_scale),
        H=H, D=D, DV=Dv, BT=BT, BV=BV, HAS_S0=s0 is not None, ROPE=tables is not None, num_warps=w1, num_stages=2,
    )  # fmt: skip
    if gate is not None:
        if gate.shape != (B, T, H * Dv) or gate.stride(-1) != 1:
            raise ValueError("rope_retention: gate must be [B, T, H*Dv] with contiguous channels")
        out = torch.empty(B, T, H * Dv, device=q.device, dtype=q.dtype)
        zb, zt = gate.stride(0), gate.stride(1)
    else:
        out = torch.empty(B, T, H, Dv, device=q.device, dtype=q.dtype)
        gate, zb, zt = out, 0, 0  # unused pointer
    _output_pass_kernel[(NT, B * H)](
        q, k, v, log_g, cos, sin, hb, gate, out,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), log_g.stride(0),
        log_g.stride(1), stride_cb, stride_ct, zb, zt, out.stride(0), out.stride(1), T, NT, float(k_scale),
        float(eps), H=H, D=D, DV=Dv, BT=BT, ROPE=tables is not None, GATED=gate is not out,
        num_warps=w2, num_stages=s2,
    )  # fmt: skip
    return out, s_out
