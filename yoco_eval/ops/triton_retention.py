"""Gated retention for prefill with YOCO's RoPE and output gate inside the kernels (Triton, yoco-eval's own).

The unfused path makes four passes over a prefill chunk: a RoPE kernel rewrites q and k; fla-core's chunked
retention writes the state entering every block (``[T/BT, H, D, Dv]``) and reads it back with q, k and v; a
last kernel applies the per-head RMSNorm and the SiLU gate. Here there are two passes, and q and k are rotated
as they are loaded, so the rotated copies and the ungated output never reach memory:

1. **State pass** (parallel over heads, state columns and segments of blocks; sequential inside a segment):
   rotates and scales k, stores each block's entering state as the segment's own part, from zero, in bf16::

       S <- 2^c_last S + k^T (v * 2^(c_last - c_j))

   A small combine kernel chains the segments' final states into each segment's prefix state (and the chunk's
   final state); the output pass adds the prefix, decayed to the block, to the block's stored part.

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
    def _state_pass_kernel(K, V, LOG_G, COS, SIN, HB, SEG_S,
                           stride_kb, stride_kt, stride_vb, stride_vt, stride_gb, stride_gt, stride_cb, stride_ct,
                           T, NT, NB, P, k_scale,
                           H: tl.constexpr, D: tl.constexpr, DV: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr,
                           ROPE: tl.constexpr):  # fmt: skip
        i_p = tl.program_id(0)  # 0: the state's even rows (2i), 1: its odd rows (2i+1)
        i_v = tl.program_id(1)
        i_bhs = tl.program_id(2)
        i_bh = i_bhs // P
        i_seg = i_bhs % P
        b = (i_bh // H).to(tl.int64)
        h = i_bh % H
        half = tl.arange(0, D // 2)
        rows = 2 * half + i_p
        cols = i_v * BV + tl.arange(0, BV)
        t_in = tl.arange(0, BT)
        d = tl.arange(0, D)
        s_off = rows[:, None] * DV + cols[None, :]
        S = tl.zeros([D // 2, BV], dtype=tl.float32)  # this segment's own contribution, from zero
        k_row = K + b * stride_kb + h * D
        v_row = V + b * stride_vb + h * DV
        hb = HB + i_bh.to(tl.int64) * NT * D * DV
        for i_t in range(i_seg * NB, tl.minimum(NT, i_seg * NB + NB)):
            t = (i_t * BT + t_in).to(tl.int64)
            tm = (t < T)[:, None]
            tl.store(hb + i_t * D * DV + s_off, S.to(HB.dtype.element_ty))  # entering this block, local
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
        tl.store(SEG_S + i_bhs.to(tl.int64) * D * DV + s_off, S)

    @triton.jit
    def _combine_kernel(SEG_S, SEG_LOG2, S0, PREFIX, S_OUT, P, HAS_S0: tl.constexpr, N: tl.constexpr,
                        BLOCK: tl.constexpr):  # fmt: skip
        """Prefix states over the segments of one head: ``prefix_0 = S0``, ``prefix_{p+1} = 2^total_p prefix_p +
        local_p``; the last is the chunk's final state. N = D * Dv elements per state."""
        i_bh = tl.program_id(0).to(tl.int64)
        e = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        if HAS_S0:
            cur = tl.load(S0 + i_bh * N + e)
        else:
            cur = tl.zeros([BLOCK], dtype=tl.float32)
        for p in range(0, P):
            row = (i_bh * P + p) * N
            tl.store(PREFIX + row + e, cur)
            cur = cur * tl.exp2(tl.load(SEG_LOG2 + i_bh * P + p)) + tl.load(SEG_S + row + e)
        tl.store(S_OUT + i_bh * N + e, cur)

    @triton.jit
    def _output_pass_kernel(Q, K, V, LOG_G, COS, SIN, HB, PREFIX, OFF, GATE, OUT,
                            stride_qb, stride_qt, stride_kb, stride_kt, stride_vb, stride_vt, stride_gb, stride_gt,
                            stride_cb, stride_ct, stride_zb, stride_zt, stride_ob, stride_ot, T, NT, NB, P,
                            k_scale, eps,
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
        pre = PREFIX + (i_bh.to(tl.int64) * P + i_t // NB) * D * DV
        w = tl.exp2(tl.load(OFF + i_bh.to(tl.int64) * NT + i_t))  # decay from the segment's start to this block
        e_off = (2 * half)[:, None] * DV + dv[None, :]
        s_e = (tl.load(hb + e_off).to(tl.float32) + w * tl.load(pre + e_off)).to(Q.dtype.element_ty)
        s_o = (tl.load(hb + e_off + DV).to(tl.float32) + w * tl.load(pre + e_off + DV)).to(Q.dtype.element_ty)
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


def _sm_count(device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if torch.cuda.is_available() else 8


def _default_config() -> tuple[int, ...]:
    """``(BT, state BV, state warps, output warps, output stages, state programs per SM)``: measured best for
    D = Dv = 128 on an H100 (reports/gpu/bench_retention.py); ``YOCO_EVAL_RETENTION_CONFIG`` ("64,64,4,8,2,4")
    overrides it."""
    env = os.environ.get("YOCO_EVAL_RETENTION_CONFIG")
    if env:
        return tuple(int(x) for x in env.split(","))
    return 64, 64, 4, 8, 2, 4


def rope_retention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_g: torch.Tensor,
                   tables: tuple[torch.Tensor, torch.Tensor] | None, k_scale: float,
                   state: torch.Tensor | None = None, gate: torch.Tensor | None = None, eps: float = 1e-5,
                   config: tuple[int, ...] | None = None, _timer=None) -> tuple[torch.Tensor, ...]:  # fmt: skip
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
        config: see :func:`_default_config`.
    Returns:
        ``(o [B, T, H, Dv] or the gated [B, T, H*Dv], in q's dtype; new state [B, H, D, Dv] fp32)``.
    """
    B, T, H, D = q.shape
    Dv = v.shape[-1]
    BT, BV, w1, w2, s2, per_sm = config or _default_config()
    BV = min(BV, Dv)
    for x, what in ((q, "q"), (k, "k"), (v, "v")):
        _tokens_stride(x, what)
    if D < 32 or D & (D - 1) or Dv < 16 or Dv & (Dv - 1) or Dv % BV:
        raise ValueError(f"rope_retention: head dims {D}, {Dv} must be powers of two (>= 32, >= 16)")
    log_g = log_g.float()
    if log_g.stride(-1) != 1:
        log_g = log_g.contiguous()
    BH, NT = B * H, triton.cdiv(T, BT)
    # segments of NB blocks walked in parallel, each from a zero state; about per_sm state programs per SM
    P = max(1, min(NT, round(per_sm * _sm_count(q.device) / (2 * (Dv // BV) * BH))))
    NB = triton.cdiv(NT, P)
    P = triton.cdiv(NT, NB)
    # log2 decay of each block, from each segment's start to each block, and of each whole segment
    g2 = torch.nn.functional.pad(log_g * 1.4426950408889634, (0, 0, 0, P * NB * BT - T))
    blk = g2.view(B, P, NB, BT, H).sum(3)  # [B, P, NB, H]
    off = (blk.cumsum(2) - blk).permute(0, 3, 1, 2).reshape(BH, P * NB)[:, :NT].contiguous()  # [BH, NT]
    seg_log2 = blk.sum(2).permute(0, 2, 1).contiguous()  # [B, H, P]
    hb = torch.empty(BH, NT, D, Dv, device=q.device, dtype=q.dtype)
    seg_s = torch.empty(BH * P, D, Dv, device=q.device, dtype=torch.float32)
    prefix = torch.empty(BH * P, D, Dv, device=q.device, dtype=torch.float32)
    s_out = torch.empty(B, H, D, Dv, device=q.device, dtype=torch.float32)
    s0 = None if state is None else state.float().contiguous()
    if tables is not None:  # the tables hold bf16-rounded values: read them as bf16 (half the bytes, same values)
        cos, sin = (x.reshape(x.shape[0], T, D // 2).to(q.dtype) for x in tables)
        stride_cb, stride_ct = (cos.stride(0) if cos.shape[0] > 1 else 0), cos.stride(1)
    else:
        cos = sin = log_g  # unused pointers
        stride_cb = stride_ct = 0
    if _timer:
        _timer("prep")
    _state_pass_kernel[(2, Dv // BV, BH * P)](
        k, v, log_g, cos, sin, hb, seg_s,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1), log_g.stride(0), log_g.stride(1), stride_cb, stride_ct,
        T, NT, NB, P, float(k_scale),
        H=H, D=D, DV=Dv, BT=BT, BV=BV, ROPE=tables is not None, num_warps=w1, num_stages=2,
    )  # fmt: skip
    if _timer:
        _timer("state")
    block = min(1024, D * Dv)
    _combine_kernel[(BH, D * Dv // block)](seg_s, seg_log2, s_out if s0 is None else s0, prefix, s_out, P,
                                           HAS_S0=s0 is not None, N=D * Dv, BLOCK=block)  # fmt: skip
    if _timer:
        _timer("combine")
    if gate is not None:
        if gate.shape != (B, T, H * Dv) or gate.stride(-1) != 1:
            raise ValueError("rope_retention: gate must be [B, T, H*Dv] with contiguous channels")
        out = torch.empty(B, T, H * Dv, device=q.device, dtype=q.dtype)
        zb, zt = gate.stride(0), gate.stride(1)
    else:
        out = torch.empty(B, T, H, Dv, device=q.device, dtype=q.dtype)
        gate, zb, zt = out, 0, 0  # unused pointer
    _output_pass_kernel[(NT, BH)](
        q, k, v, log_g, cos, sin, hb, prefix, off, gate, out,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), log_g.stride(0),
        log_g.stride(1), stride_cb, stride_ct, zb, zt, out.stride(0), out.stride(1), T, NT, NB, P, float(k_scale),
        float(eps), H=H, D=D, DV=Dv, BT=BT, ROPE=tables is not None, GATED=gate is not out,
        num_warps=w2, num_stages=s2,
    )  # fmt: skip
    if _timer:
        _timer("output")
    return out, s_out
