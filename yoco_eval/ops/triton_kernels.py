"""Hand-written Triton kernels for the places where PyTorch's own kernels leave time on the table.

* :func:`rope_` — rotary embedding applied IN PLACE to a fused projection's q/k heads, one launch for both,
  cos/sin loaded once per token block and reused across heads (the compiled interleaved-pair version ran ~6x
  under bandwidth: strided pairs, one launch per tensor, a fresh output).
* :func:`decode_attention_splitk` — flash-decoding for one query per row over a long shared K/V cache, GQA
  groups folded so each key/value head is read once per step, the key range split across the GPU and merged by
  log-sum-exp. Each row's key count is read ON THE DEVICE, so one captured CUDA graph serves every step and
  reads only the keys written so far. Over an fp8 cache its products are fp16 (e4m3 converts to fp16 in one
  instruction per two values), with the operands scaled into [-1, 1].
* :func:`swiglu_up` — the FFN's up-projection GEMM with SwiGLU in its epilogue (Hopper, TMA, one persistent
  program per multiprocessor): both branches' fp32 accumulators of an output tile stay on chip and only
  ``silu(a) * b`` is written, so the ``[rows, 2 * hidden]`` intermediate is never written or read back. At 8,192
  rows of YOCO-3B it took 0.93x the time of cuBLAS's GEMM plus the SwiGLU pass on an H100
  (the ``bench_swiglu_gemm.py`` benchmark), though the GEMM alone runs at 659 against cuBLAS's 754 TFLOP/s.
* :func:`gemv` — one row times a weight (decode at batch 1), with the residual add or the SwiGLU product in its
  epilogue (no split-K reduce, no SwiGLU pass); it beats cuBLAS's one-row GEMMs in a YOCO-3B decode step at 512K
  on an H100 (reports/gpu/README.md). ``YOCO_EVAL_GEMV=0`` sends those projections back to cuBLAS.
* :func:`rms_norm` and :func:`gate_log` — RMSNorm and retention's log-decay, so the YOCO GPU path needs no
  Inductor compile: Inductor compiled the RMSNorm once per row count, storage offset and stride (three times in
  a needle sweep's first cell, and past its recompile limit of 8 in the GPU tests, after which it ran eager).
* :func:`silu_mul` and :func:`silu_gate_head_norm` — the SwiGLU product and gated retention's per-head
  RMSNorm + SiLU gate, each one pass over the activations. The shape-dynamic Inductor kernels they replace ran at
  1.8 TB/s (SwiGLU, strided halves of the fused up-projection) and 1.2 TB/s plus a separate reduction (gate) in
  an H100 prefill trace. Both round SiLU to the activation dtype before the product, as eager
  PyTorch (and the official code) does.

Twins (the oracles the GPU tests compare with): :func:`yoco_eval.ops.fused._rope`, ``_rms_norm``, ``_gate_log``,
:func:`yoco_eval.ops.attention.decode_attention` with ``backend="torch"``, :func:`yoco_eval.ops.fused._silu_mul`
and :func:`yoco_eval.ops.fused._silu_gate_head_norm`, :func:`yoco_eval.ops.fused._swiglu_up`. Nothing here runs
on the CPU path; ``YOCO_EVAL_TRITON=0`` (:mod:`yoco_eval.settings`) turns them all off.
"""

from __future__ import annotations

import contextlib
import functools
import threading

import torch

from yoco_eval import settings

try:
    import triton
    import triton.language as tl
except Exception:  # ImportError, or a triton without a usable backend
    triton = None
try:
    from triton.tools.tensor_descriptor import TensorDescriptor  # host-side TMA descriptors (triton >= 3.4)
except Exception:
    TensorDescriptor = None


_local = threading.local()  # compile_only() is per thread: the caller's own launches keep running


@contextlib.contextmanager
def compile_only():
    """Inside (this thread only), our kernels' launches compile their variant (Triton's ``warmup``) and launch
    nothing: outputs stay unwritten. For :mod:`yoco_eval.model.precompile`, which runs a model's code once this way
    so that every variant its real calls need is compiled ahead, in parallel."""
    before = getattr(_local, "compile_only", False)
    _local.compile_only = True
    try:
        yield
    finally:
        _local.compile_only = before


def _launch(kernel, grid, *args, **kwargs) -> None:
    if getattr(_local, "compile_only", False):
        kernel.warmup(*args, grid=grid, **kwargs)
    else:
        kernel[grid](*args, **kwargs)


def interpreting() -> bool:
    """Triton runs on the CPU under its interpreter (``TRITON_INTERPRET=1``, tests)."""
    return settings.get().triton_interpret


def available(x: torch.Tensor) -> bool:
    """These kernels can run on ``x`` (CUDA tensor, triton importable, not switched off, no autograd)."""
    return (
        triton is not None
        and (x.is_cuda or interpreting())
        and settings.get().triton
        and not (torch.is_grad_enabled() and x.requires_grad)
    )


if triton is not None:
    # do_not_specialize on row, head and split counts (used only in masks and loop bounds): Triton would otherwise
    # compile each kernel once for 1 row (decode), once for a multiple of 16 and once for any other count, each on
    # the cold start's critical path, and a variant yoco_eval.model.precompile did not foresee

    @triton.jit(do_not_specialize=["T", "n_heads", "n_plain", "heads_per_prog"])
    def _rope_kernel(X, COS, SIN, stride_xb, stride_xt, stride_cb, stride_ct, T, n_heads, n_plain, scale,
                     heads_per_prog, D: tl.constexpr, BLOCK_T: tl.constexpr, INTERLEAVED: tl.constexpr):  # fmt: skip
        # program (t block, row, head group): a long call keeps all heads in one program (cos/sin loaded once per
        # token block); a decode step spreads its heads over programs (one program looping over 48 heads of ONE
        # token took 10.9 us on an H100)
        pid_t = tl.program_id(0)
        b = tl.program_id(1)
        h0 = tl.program_id(2) * heads_per_prog
        t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        tmask = t[:, None] < T
        half = tl.arange(0, D // 2)
        c_off = b * stride_cb + t[:, None] * stride_ct + half[None, :]
        cos = tl.load(COS + c_off, mask=tmask, other=0.0)
        sin = tl.load(SIN + c_off, mask=tmask, other=0.0)
        row = X + b * stride_xb + t[:, None] * stride_xt
        for h in range(h0, tl.minimum(h0 + heads_per_prog, n_heads)):
            base = row + h * D
            if INTERLEAVED:
                full = tl.arange(0, D)
                x = tl.load(base + full[None, :], mask=tmask, other=0.0).to(tl.float32)
                x1, x2 = tl.split(tl.reshape(x, [BLOCK_T, D // 2, 2]))
            else:
                x1 = tl.load(base + half[None, :], mask=tmask, other=0.0).to(tl.float32)
                x2 = tl.load(base + D // 2 + half[None, :], mask=tmask, other=0.0).to(tl.float32)
            o1 = x1 * cos - x2 * sin
            o2 = x1 * sin + x2 * cos
            if h >= n_plain:
                o1 = o1 * scale
                o2 = o2 * scale
            if INTERLEAVED:
                out = tl.reshape(tl.interleave(o1, o2), [BLOCK_T, D])
                tl.store(base + full[None, :], out.to(X.dtype.element_ty), mask=tmask)
            else:
                tl.store(base + half[None, :], o1.to(X.dtype.element_ty), mask=tmask)
                tl.store(base + D // 2 + half[None, :], o2.to(X.dtype.element_ty), mask=tmask)

    @triton.jit(do_not_specialize=["n_splits"])
    def _decode_split_kernel(Q, K, V, KS, VS, LEN, OP, LP, stride_qb, stride_qh, stride_kb, stride_kt, stride_kh,
                             stride_vb, stride_vt, stride_vh, stride_vd, stride_sb, stride_st, stride_sh, n_kv_heads,
                             n_splits,
                             scale, q2_off, k2_off,
                             G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, DV: tl.constexpr,
                             BLOCK_N: tl.constexpr, QUANT: tl.constexpr, DIFF: tl.constexpr,
                             F16: tl.constexpr = False, V_T: tl.constexpr = False):  # fmt: skip
        # V_T: values token-contiguous (stride 1 along the tokens, stride_vd along the dim), read 16 tokens at once
        # DIFF (differential attention): program (s, b, h) serves key/value PAIR h: rows 0..G-1 are half 1's query
        # heads (at Q, keys at K), rows G..2G-1 half 2's (at Q + q2_off, keys at K + k2_off); one value block each
        s = tl.program_id(0)
        bh = tl.program_id(1)
        b = (bh // n_kv_heads).to(tl.int64)  # 64-bit offsets: B x 512K tokens x 1024 elements passes 2**31
        h = bh % n_kv_heads
        L = tl.load(LEN + b).to(tl.int32)
        per = tl.cdiv(tl.cdiv(L, n_splits), BLOCK_N) * BLOCK_N  # keys per split, from this row's length
        start = s * per
        end = tl.minimum(start + per, L)
        g = tl.arange(0, G_PAD)
        d = tl.arange(0, D)
        e = tl.arange(0, DV)
        n = tl.arange(0, BLOCK_N)
        if DIFF:
            second = g >= G
            within = tl.where(second, g - G, g)
            gmask = g < 2 * G
            head = tl.where(second, n_kv_heads * G, 0) + h * G + within  # partial rows: half 1's heads, then half 2's
            q_off = tl.where(second, q2_off, 0) + (h * G + within) * stride_qh
            n_heads = 2 * n_kv_heads * G
        else:
            gmask = g < G
            head = h * G + g
            q_off = head * stride_qh
            n_heads = n_kv_heads * G
        q = tl.load(Q + b * stride_qb + q_off[:, None] + d[None, :], mask=gmask[:, None], other=0.0)
        if QUANT and F16:  # fp16 operands: e4m3 -> fp16 is one exact cvt per 2 values (-> bf16 takes 4 instructions)
            qf = q.to(tl.float32)
            qn = tl.max(tl.abs(qf), 1)  # each row scaled into [-1, 1]: no fp16 overflow; qn goes back on the scores
            qn = tl.where(qn > 0, qn, 1.0)
            q = (qf / qn[:, None]).to(tl.float16)
        m = tl.full([G_PAD], float("-inf"), tl.float32)
        lsum = tl.zeros([G_PAD], tl.float32)
        acc = tl.zeros([G_PAD, DV], tl.float32)
        kbase = K + b * stride_kb + h * stride_kh
        vbase = V + b * stride_vb + h * stride_vh
        sbase = b * stride_sb + h * stride_sh
        for n0 in range(start, end, BLOCK_N):
            tok = (n0 + n).to(tl.int64)
            kmask = tok < end
            k = tl.load(kbase + tok[:, None] * stride_kt + d[None, :], mask=kmask[:, None], other=0.0)
            if V_T:  # to the next multiple of 16 keys (aligned vectors): those past `end` are finite and get p = 0
                vmask = (tok < (end + 15) // 16 * 16)[None, :]
                v = tl.trans(tl.load(vbase + tok[None, :] + e[:, None] * stride_vd, mask=vmask, other=0.0))
            else:
                v = tl.load(vbase + tok[:, None] * stride_vt + e[None, :], mask=kmask[:, None], other=0.0)
            if DIFF:  # both halves' keys, the pair's values once
                k2 = tl.load(kbase + k2_off + tok[:, None] * stride_kt + d[None, :], mask=kmask[:, None], other=0.0)
                sc = tl.where(second[:, None], tl.dot(q, tl.trans(k2)), tl.dot(q, tl.trans(k))) * scale
            elif QUANT:  # fp8 values are exact in bf16 and fp16; each key's scale multiplies its score, each value's p
                k = k.to(q.dtype)
                v = v.to(q.dtype)
                ks = tl.load(KS + sbase + tok * stride_st, mask=kmask, other=0.0)
                vs = tl.load(VS + sbase + tok * stride_st, mask=kmask, other=0.0)
                if F16:
                    sc = tl.dot(q, tl.trans(k)) * (qn[:, None] * (ks * scale)[None, :])
                else:
                    sc = tl.dot(q, tl.trans(k)) * (ks * scale)[None, :]
            else:
                sc = tl.dot(q, tl.trans(k)) * scale
            sc = tl.where(kmask[None, :], sc, float("-inf"))
            m_new = tl.maximum(m, tl.max(sc, 1))
            alpha = tl.exp(m - m_new)
            p = tl.exp(sc - m_new[:, None])
            lsum = lsum * alpha + tl.sum(p, 1)
            if QUANT and F16:  # p * vs over the block's largest vs lies in [0, 1]: fp16 keeps 10 bits of it
                vmax = tl.max(vs, 0)
                vmax = tl.where(vmax > 0, vmax, 1.0)
                acc = acc * alpha[:, None] + tl.dot((p * (vs * (1.0 / vmax))[None, :]).to(tl.float16), v) * vmax
            elif QUANT:
                acc = acc * alpha[:, None] + tl.dot((p * vs[None, :]).to(v.dtype), v)
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m = m_new
        seen = lsum > 0
        out = acc / tl.where(seen, lsum, 1.0)[:, None]
        lse = tl.where(seen, m + tl.log(tl.where(seen, lsum, 1.0)), float("-inf"))
        row = (b * n_heads + head) * n_splits + s  # partials [B, H, S, DV] / [B, H, S]
        tl.store(OP + row[:, None] * DV + e[None, :], out, mask=gmask[:, None])
        tl.store(LP + row, lse, mask=gmask)

    @triton.jit(do_not_specialize=["n_splits"])
    def _decode_merge_kernel(OP, LP, OUT, stride_ob, stride_oh, n_heads, n_splits, DV: tl.constexpr,
                             S_BLOCK: tl.constexpr):  # fmt: skip
        # the splits in blocks of S_BLOCK, merged by a running log-sum-exp: one compiled variant for any split count
        bh = tl.program_id(0)
        b = bh // n_heads
        h = bh % n_heads
        d = tl.arange(0, DV)
        m = tl.max(tl.full([S_BLOCK], float("-inf"), tl.float32), 0)
        tot = tl.sum(tl.zeros([S_BLOCK], tl.float32), 0)
        acc = tl.zeros([DV], tl.float32)
        for s0 in range(0, n_splits, S_BLOCK):
            s = s0 + tl.arange(0, S_BLOCK)
            lse = tl.load(LP + bh * n_splits + s, mask=s < n_splits, other=float("-inf"))
            m_new = tl.maximum(m, tl.max(lse, 0))
            base = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m - base)  # 0 while nothing was seen
            w = tl.exp(lse - base)  # 0 for empty splits
            part = tl.load(OP + (bh * n_splits + s)[:, None] * DV + d[None, :], mask=(s < n_splits)[:, None],
                           other=0.0)  # fmt: skip
            acc = acc * alpha + tl.sum(w[:, None] * part, 0)
            tot = tot * alpha + tl.sum(w, 0)
            m = m_new
        out = acc / tl.where(tot > 0, tot, 1.0)
        tl.store(OUT + b * stride_ob + h * stride_oh + d, out.to(OUT.dtype.element_ty))

    @triton.jit(do_not_specialize=["R"])
    def _silu_mul_kernel(A, B, OUT, stride_a, stride_b, stride_o, R, N,
                         BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
        r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = (r[:, None] < R) & (n[None, :] < N)
        a = tl.load(A + r[:, None] * stride_a + n[None, :], mask=mask, other=0.0)
        b = tl.load(B + r[:, None] * stride_b + n[None, :], mask=mask, other=0.0)
        af = a.to(tl.float32)
        s = (af * tl.sigmoid(af)).to(a.dtype)  # silu rounded to the input dtype, as F.silu returns it
        tl.store(OUT + r[:, None] * stride_o + n[None, :], (s.to(tl.float32) * b.to(tl.float32)).to(a.dtype),
                 mask=mask)  # fmt: skip

    @triton.jit(do_not_specialize=["R"])
    def _gate_head_norm_kernel(G, X, OUT, stride_g, stride_o, stride_oh, stride_out, R, eps,
                               D: tl.constexpr, BLOCK_R: tl.constexpr):  # fmt: skip
        r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        h = tl.program_id(1)
        d = tl.arange(0, D)
        mask = r[:, None] < R
        o = tl.load(X + r[:, None] * stride_o + h * stride_oh + d[None, :], mask=mask, other=0.0)
        g = tl.load(G + r[:, None] * stride_g + h * D + d[None, :], mask=mask, other=0.0)
        of = o.to(tl.float32)
        normed = (of * tl.rsqrt(tl.sum(of * of, 1) / D + eps)[:, None]).to(o.dtype)  # fp32 norm, cast back
        gf = g.to(tl.float32)
        s = (gf * tl.sigmoid(gf)).to(g.dtype)
        out = s.to(tl.float32) * normed.to(tl.float32)
        tl.store(OUT + r[:, None] * stride_out + h * D + d[None, :], out.to(g.dtype), mask=mask)

    @triton.jit
    def _retention_step_kernel(Q, K, V, GT, G, S, OUT, stride_qb, stride_kb, stride_vb, stride_gtb, stride_gb,
                               n_heads, inv_normalizer, eps, D: tl.constexpr, DV: tl.constexpr):  # fmt: skip
        # program (row b, head h): the whole D x DV fp32 state of one head in registers, read and written once
        b = tl.program_id(0).to(tl.int64)
        h = tl.program_id(1)
        d = tl.arange(0, D)
        e = tl.arange(0, DV)
        q = tl.load(Q + b * stride_qb + h * D + d).to(tl.float32)
        k = tl.load(K + b * stride_kb + h * D + d).to(tl.float32)
        v = tl.load(V + b * stride_vb + h * DV + e).to(tl.float32)
        x = tl.load(GT + b * stride_gtb + h).to(tl.float32)
        t = tl.exp(-tl.abs(x))  # log-decay logsigmoid(x) / normalizer, as _gate_log_kernel computes it
        u = 1.0 + t
        log_g = (tl.minimum(x, 0.0) - tl.where(u == 1.0, t, tl.log(u) * (t / (u - 1.0)))) * inv_normalizer
        s_ptr = S + (b * n_heads + h) * (D * DV) + d[:, None] * DV + e[None, :]
        s = tl.exp(log_g) * tl.load(s_ptr) + k[:, None] * v[None, :]
        tl.store(s_ptr, s)
        o = tl.sum(q[:, None] * s, 0).to(OUT.dtype.element_ty)  # q S, rounded as the twin's output is
        # then _gate_head_norm_kernel's arithmetic on that head: per-head RMSNorm, SiLU gate, each step rounded
        of = o.to(tl.float32)
        normed = (of * tl.rsqrt(tl.sum(of * of, 0) / DV + eps)).to(o.dtype)
        g = tl.load(G + b * stride_gb + h * DV + e)
        gf = g.to(tl.float32)
        sg = (gf * tl.sigmoid(gf)).to(g.dtype)
        out = sg.to(tl.float32) * normed.to(tl.float32)
        tl.store(OUT + b * (n_heads * DV) + h * DV + e, out.to(OUT.dtype.element_ty))

    @triton.jit(do_not_specialize=["R"])
    def _rms_norm_kernel(X, W, OUT, stride_x, R, D, eps, AFFINE: tl.constexpr, BLOCK_R: tl.constexpr,
                         BLOCK_D: tl.constexpr):  # fmt: skip
        r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        d = tl.arange(0, BLOCK_D)
        mask = (r[:, None] < R) & (d[None, :] < D)
        x = tl.load(X + r[:, None] * stride_x + d[None, :], mask=mask, other=0.0)
        xf = x.to(tl.float32)
        normed = (xf * tl.rsqrt(tl.sum(xf * xf, 1) / D + eps)[:, None]).to(x.dtype)  # fp32 norm, cast back
        if AFFINE:  # then the weight, in the activation dtype (the official order)
            w = tl.load(W + d, mask=d < D, other=0.0)
            normed = (normed.to(tl.float32) * w.to(tl.float32)).to(x.dtype)
        tl.store(OUT + r[:, None] * D + d[None, :], normed, mask=mask)

    @triton.jit(do_not_specialize=["R"])
    def _gate_log_kernel(X, OUT, stride_x, R, N, inv_normalizer, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
        r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        n = tl.arange(0, BLOCK_N)
        mask = (r[:, None] < R) & (n[None, :] < N)
        x = tl.load(X + r[:, None] * stride_x + n[None, :], mask=mask, other=0.0).to(tl.float32)
        # logsigmoid(x) = min(x, 0) - log1p(t), t = exp(-|x|) in (0, 1]; log1p(t) = log(u) * t / (u - 1) with
        # u = 1 + t rounded (Goldberg's trick: the rounding error of u cancels), and t itself where u rounds to 1
        t = tl.exp(-tl.abs(x))
        u = 1.0 + t
        out = tl.minimum(x, 0.0) - tl.where(u == 1.0, t, tl.log(u) * (t / (u - 1.0)))
        tl.store(OUT + r[:, None] * N + n[None, :], out * inv_normalizer, mask=mask)

    @triton.jit
    def _grouped_tile(tile, num_m, num_n, BM: tl.constexpr, BN: tl.constexpr, GROUP_M: tl.constexpr):
        # output tile ``tile`` of a persistent GEMM -> its first (row, column): GROUP_M row blocks walk each column
        # block of W in turn, so the weight tile is reused from L2 (grouped order)
        per_group = GROUP_M * num_n
        first_m = (tile // per_group) * GROUP_M
        size_m = min(num_m - first_m, GROUP_M)
        return (first_m + (tile % per_group) % size_m) * BM, ((tile % per_group) // size_m) * BN

    @triton.jit(do_not_specialize=["M"])
    def _swiglu_up_kernel(x_desc, w_desc, o_desc, M, N, K, NUM_PROGRAMS, BM: tl.constexpr, BN: tl.constexpr,
                          BK: tl.constexpr, GROUP_M: tl.constexpr):  # fmt: skip
        # persistent: program p takes output tiles p, p + NUM_PROGRAMS, ... in grouped order (_grouped_tile)
        num_m, num_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
        for tile in tl.range(tl.program_id(0), num_m * num_n, NUM_PROGRAMS, flatten=False):
            om, on = _grouped_tile(tile, num_m, num_n, BM, BN, GROUP_M)
            acc_a = tl.zeros((BM, BN), dtype=tl.float32)
            acc_b = tl.zeros((BM, BN), dtype=tl.float32)
            for k in range(0, K, BK):  # TMA fills rows and columns past the edges with zeros
                x = x_desc.load([om, k])
                acc_a = tl.dot(x, w_desc.load([on, k]).T, acc_a)
                acc_b = tl.dot(x, w_desc.load([N + on, k]).T, acc_b)
            o_desc.store([om, on], (acc_a * tl.sigmoid(acc_a) * acc_b).to(o_desc.dtype))

    @triton.jit(do_not_specialize=["M"])
    def _swiglu_up_paired_kernel(x_desc, w_desc, o_desc, M, N, K, NUM_PROGRAMS, BM: tl.constexpr,
                                 BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr):  # fmt: skip
        # the same tile walk over a paired weight (row 2j: the SiLU branch's row j, row 2j + 1: the other's): ONE
        # [BM, 2 BN] product per k step, so each x tile feeds one wide MMA instead of two narrow ones; the pairs
        # sit in adjacent accumulator columns and split apart in the epilogue
        num_m, num_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
        for tile in tl.range(tl.program_id(0), num_m * num_n, NUM_PROGRAMS, flatten=False):
            om, on = _grouped_tile(tile, num_m, num_n, BM, BN, GROUP_M)
            acc = tl.zeros((BM, 2 * BN), dtype=tl.float32)
            for k in range(0, K, BK):
                acc = tl.dot(x_desc.load([om, k]), w_desc.load([2 * on, k]).T, acc)
            a, b = tl.split(tl.reshape(acc, (BM, BN, 2)))
            o_desc.store([om, on], (a * tl.sigmoid(a) * b).to(o_desc.dtype))


if triton is not None:

    @triton.jit
    def _gemv_kernel(X, W, R, OUT, N, K, EPI: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # one row: program p computes outputs [p * BLOCK_N, +BLOCK_N) of x W^T, streaming those rows of W once
        # (each a contiguous K run); products accumulate elementwise in fp32 and are summed once at the end.
        # EPI 0: x W^T; 1: R + x W^T (R may be OUT); 2: SwiGLU over W = [W_a; W_b] (2N rows): silu(a) * b, each of
        # a, b, silu(a) rounded to the output dtype first, as the twin (two projections, then silu_mul) rounds them
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = n < N
        kk = tl.arange(0, BLOCK_K)
        rows = W + n.to(tl.int64)[:, None] * K
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        acc_b = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kmask = k0 + kk < K
            x = tl.load(X + k0 + kk, mask=kmask, other=0.0).to(tl.float32)[None, :]
            wmask = nmask[:, None] & kmask[None, :]
            acc += tl.load(rows + k0 + kk[None, :], mask=wmask, other=0.0).to(tl.float32) * x
            if EPI == 2:
                acc_b += tl.load(rows + N * K + k0 + kk[None, :], mask=wmask, other=0.0).to(tl.float32) * x
        y = tl.sum(acc, 1)
        if EPI == 1:
            y += tl.load(R + n, mask=nmask, other=0.0).to(tl.float32)
        if EPI == 2:
            a = y.to(OUT.dtype.element_ty).to(tl.float32)
            b = tl.sum(acc_b, 1).to(OUT.dtype.element_ty).to(tl.float32)
            y = (a * tl.sigmoid(a)).to(OUT.dtype.element_ty).to(tl.float32) * b
        tl.store(OUT + n, y.to(OUT.dtype.element_ty), mask=nmask)


GEMV_CONFIG = (8, 1024, 4)  # (BLOCK_N, BLOCK_K, num_warps): the best single config of bench/gemv.py on an H100


def gemv_on(x: torch.Tensor) -> bool:
    """The model sends ``x``'s one-row projections through :func:`gemv` (on by default; ``YOCO_EVAL_GEMV=0``
    turns it off; see reports/gpu/README.md for the measurement)."""
    return settings.get().gemv and available(x)


def gemv(x: torch.Tensor, w: torch.Tensor, residual: torch.Tensor | None = None, swiglu: bool = False,
         out: torch.Tensor | None = None, config: tuple[int, int, int] | None = None
         ) -> torch.Tensor | None:  # fmt: skip
    """One row times a weight, streaming the weight once (decode at batch 1): ``x`` ``[..., K]`` with one row,
    ``w`` ``[N, K]`` (an ``nn.Linear`` weight) -> ``x w^T`` ``[..., N]``; with ``residual`` (``[..., N]``, may be
    ``out``), ``residual + x w^T``; with ``swiglu``, ``w`` is ``[2N, K]`` and the result ``silu(x w_a^T) * (x w_b^T)``
    ``[..., N]``. fp32 accumulation. None when the shapes or layouts do not fit (more than one row, non-contiguous
    operands): the caller runs cuBLAS. The model takes this path while :func:`gemv_on` says so."""
    if x.numel() != x.shape[-1] or not (x.is_contiguous() and w.is_contiguous()) or w.dim() != 2 or x.dtype != w.dtype:
        return None
    K = x.shape[-1]
    N = w.shape[0] // 2 if swiglu else w.shape[0]
    if w.shape[1] != K or (swiglu and w.shape[0] % 2):
        return None
    if residual is not None and (residual.numel() != N or not residual.is_contiguous()):
        return None
    if out is None:
        out = torch.empty(*x.shape[:-1], N, device=x.device, dtype=x.dtype)
    bn, bk, nw = config or GEMV_CONFIG
    epi = 2 if swiglu else 1 if residual is not None else 0
    _launch(_gemv_kernel, (triton.cdiv(N, bn),), x, w, residual if residual is not None else out, out, N, K,
            EPI=epi, BLOCK_N=bn, BLOCK_K=bk, num_warps=nw)  # fmt: skip
    return out


def row_stride(x: torch.Tensor, inner: int = 1) -> int | None:
    """The stride between consecutive rows when ``x`` is read as ``[rows, *x.shape[-inner:]]`` without a copy
    (last dim contiguous, the leading dims collapsible into one), else None."""
    if x.dim() <= inner or x.stride(-1) != 1:
        return None
    lead = x.dim() - inner
    for i in range(lead - 1):
        if x.shape[i] > 1 and x.stride(i) != x.stride(i + 1) * x.shape[i + 1]:
            return None
    return x.stride(lead - 1)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor | None:
    """RMSNorm over the last dim of ``x`` ``[..., D]`` (fp32 statistics, cast back, then times ``weight`` ``[D]``
    in x's dtype) into a new contiguous tensor; any row stride, storage offset or row count, so one compiled kernel
    serves prefill chunks, decode steps and last-token views. None when the layout does not fit."""
    D = x.shape[-1]
    sx = row_stride(x)
    if sx is None or (weight is not None and (weight.dtype != x.dtype or weight.shape != (D,)
                                              or not weight.is_contiguous())) or D > 16384:
        return None
    R = x.numel() // max(D, 1)
    out = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    if out.numel():
        block_d = triton.next_power_of_2(D)
        block_r = max(1, 8192 // block_d)
        _launch(
            _rms_norm_kernel, (triton.cdiv(R, block_r),),
            x, weight if weight is not None else x, out, sx, R, D, float(eps), AFFINE=weight is not None,
            BLOCK_R=block_r, BLOCK_D=block_d, num_warps=8 if block_d >= 2048 else 4,
        )  # fmt: skip
    return out


def gate_log(x: torch.Tensor, normalizer: float) -> torch.Tensor | None:
    """``logsigmoid(x) / normalizer`` in fp32 for retention's gate logits ``x`` ``[..., H]`` (typically a strided
    slice of the fused projection) into a new contiguous fp32 tensor; None when the layout does not fit."""
    N = x.shape[-1]
    sx = row_stride(x)
    if sx is None or N > 1024:
        return None
    R = x.numel() // max(N, 1)
    out = torch.empty(x.shape, device=x.device, dtype=torch.float32)
    if out.numel():
        block_n = triton.next_power_of_2(N)
        block_r = max(1, 2048 // block_n)
        _launch(_gate_log_kernel, (triton.cdiv(R, block_r),), x, out, sx, R, N, 1.0 / normalizer, BLOCK_R=block_r,
                BLOCK_N=block_n, num_warps=4)  # fmt: skip
    return out


def silu_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """``silu(a) * b`` for ``a``, ``b`` ``[..., N]`` (e.g. the two halves of a fused up-projection, any row stride)
    into a new contiguous tensor; None when the layout does not fit (the caller then runs its twin)."""
    sa, sb = row_stride(a), row_stride(b)
    if sa is None or sb is None or a.shape != b.shape or a.dtype != b.dtype:
        return None
    N = a.shape[-1]
    R = a.numel() // max(N, 1)
    out = torch.empty(a.shape, device=a.device, dtype=a.dtype)
    if out.numel():
        block_r, block_n = 4, 1024
        _launch(
            _silu_mul_kernel, (triton.cdiv(R, block_r), triton.cdiv(N, block_n)),
            a, b, out, sa, sb, N, R, N, BLOCK_R=block_r, BLOCK_N=block_n, num_warps=4
        )  # fmt: skip
    return out


def silu_gate_head_norm(g: torch.Tensor, o: torch.Tensor, eps: float) -> torch.Tensor | None:
    """``silu(g) * rms_norm_per_head(o)`` (no weight): g ``[..., H*D]``, o ``[..., H, D]`` -> a new contiguous
    ``[..., H*D]``; None when the layout does not fit (see :func:`silu_mul`)."""
    H, D = o.shape[-2], o.shape[-1]
    sg, so = row_stride(g), row_stride(o, inner=2)
    if sg is None or so is None or g.shape[-1] != H * D or g.shape[:-1] != o.shape[:-2] or g.dtype != o.dtype:
        return None
    if D & (D - 1):  # the head dim is one power-of-two block
        return None
    R = g.numel() // (H * D)
    out = torch.empty(g.shape, device=g.device, dtype=g.dtype)
    if out.numel():
        block_r = max(1, 4096 // D)
        _launch(
            _gate_head_norm_kernel, (triton.cdiv(R, block_r), H),
            g, o, out, sg, so, o.stride(-2), H * D, R, float(eps), D=D, BLOCK_R=block_r, num_warps=4
        )  # fmt: skip
    return out


def retention_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gt: torch.Tensor, g: torch.Tensor,
                   state: torch.Tensor, normalizer: float, eps: float) -> torch.Tensor | None:  # fmt: skip
    """One gated-retention decode step and its output gate, in one launch: the log-decay
    ``logsigmoid(gt) / normalizer``, ``S = exp(log_g) S + k^T v`` (``state`` updated IN PLACE), ``o = q S``, then
    ``silu(g) * rms_norm_per_head(o)``.

    q, k ``[B, 1, H, D]`` (after RoPE; k already scaled), v ``[B, 1, H, DV]``, gt ``[B, 1, H]`` gate logits, g
    ``[B, 1, H * DV]`` (views into a projection's output are fine: heads contiguous inside each row), state
    ``[B, H, D, DV]`` fp32 contiguous. Returns a new ``[B, 1, H * DV]`` in q's dtype, or None when the layout does
    not fit (the caller runs the twin: ``gate_log``, ``recurrent_retention_step``, ``silu_gate_head_norm``, which
    round at the same points)."""
    B, T, H, D = q.shape
    DV = v.shape[-1]
    if (T != 1 or D & (D - 1) or DV & (DV - 1) or D * DV > 128 * 128 or state.dtype != torch.float32
            or not state.is_contiguous() or state.shape != (B, H, D, DV) or gt.shape != (B, 1, H)
            or g.shape != (B, 1, H * DV)):  # fmt: skip
        return None
    heads_ok = all(t.stride(-1) == 1 and t.stride(-2) == t.shape[-1] for t in (q, k, v))
    if not heads_ok or gt.stride(-1) != 1 or g.stride(-1) != 1:
        return None
    out = torch.empty(B, 1, H * DV, device=q.device, dtype=q.dtype)
    _launch(_retention_step_kernel, (B, H), q, k, v, gt, g, state, out, q.stride(0), k.stride(0), v.stride(0),
            gt.stride(0), g.stride(0), H, 1.0 / normalizer, float(eps), D=D, DV=DV,
            num_warps=8 if D * DV >= 8192 else 4)  # fmt: skip
    return out


def rope_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool, scale: float = 1.0,
          n_plain: int | None = None, block_t: int = 16) -> torch.Tensor:  # fmt: skip
    """Rotate ``x`` ``[B, T, NH, D]`` IN PLACE by ``cos``/``sin`` ``[B or 1, T, 1, D/2]`` (fp32), multiplying heads
    ``>= n_plain`` by ``scale`` afterwards (None: every head). ``x``'s heads must be contiguous (stride ``D``, the
    layout of a projection's output, fused or not). Returns ``x``."""
    B, T, NH, D = x.shape
    if x.stride(-1) != 1 or x.stride(-2) != D:
        raise ValueError("rope_: heads must be contiguous inside each token")
    cos, sin = cos.reshape(cos.shape[0], T, D // 2), sin.reshape(sin.shape[0], T, D // 2)
    if cos.stride(-1) != 1:
        cos, sin = cos.contiguous(), sin.contiguous()
    stride_cb = cos.stride(0) if cos.shape[0] > 1 else 0
    token_blocks = triton.cdiv(T, block_t) * B
    # at least ~2 programs per multiprocessor: a few tokens split their heads over programs
    per = NH if token_blocks >= ROPE_MIN_PROGRAMS else max(1, NH * token_blocks // ROPE_MIN_PROGRAMS)
    grid = (triton.cdiv(T, block_t), B, triton.cdiv(NH, per))
    _launch(_rope_kernel, grid, x, cos, sin, x.stride(0), x.stride(1), stride_cb, cos.stride(1), T, NH,
            0 if n_plain is None else n_plain, float(scale), per, D=D, BLOCK_T=block_t,
            INTERLEAVED=bool(interleaved), num_warps=4)  # fmt: skip
    return x


ROPE_MIN_PROGRAMS = 256


@functools.cache
def _hopper(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] == 9


# fewer rows (decode, short chunks) keep cuBLAS's GEMM + the SwiGLU pass: the fused kernel took 0.93-0.96x the
# twin's time from 1,024 to 8,192 rows on an H100; shorter slices were not measured
SWIGLU_UP_MIN_ROWS = 1024
_SWIGLU_UP_CONFIG = (128, 128, 64, 3, 8)  # BM, BN, BK, stages, warps: the H100 sweep's best (bench_swiglu_gemm)


def swiglu_up(x: torch.Tensor, w: torch.Tensor, config: tuple[int, int, int, int, int] | None = None,
              min_rows: int | None = None) -> torch.Tensor | None:
    """``silu(x @ w[:N].T) * (x @ w[N:].T)`` for ``x`` ``[M, K]`` and the fused weight ``w`` ``[2N, K]`` (SiLU
    branch first) -> a new ``[M, N]`` in x's dtype. Unlike the twin, ``a`` and ``b`` stay in fp32 until the product
    is rounded. None when it does not apply (not a Hopper GPU, fewer than ``SWIGLU_UP_MIN_ROWS`` rows, a layout
    TMA cannot read, N not a multiple of the tile, ``YOCO_EVAL_SWIGLU_GEMM=0``): the caller then runs its twin.
    ``config`` (BM, BN, BK, stages, warps) and ``min_rows`` override the defaults (for the benchmark)."""
    BM, BN, BK, stages, warps = config or _SWIGLU_UP_CONFIG
    min_rows = SWIGLU_UP_MIN_ROWS if min_rows is None else min_rows
    if (TensorDescriptor is None or not x.is_cuda or x.dim() != 2 or w.dim() != 2 or x.dtype != w.dtype
            or x.dtype not in (torch.bfloat16, torch.float16) or x.shape[0] < min_rows
            or x.shape[1] != w.shape[1] or w.shape[0] % (2 * BN) or not _hopper(x.device.index or 0)
            or not settings.get().swiglu_gemm):
        return None
    for t in (x, w):  # TMA: contiguous rows, 16-byte aligned base and row stride
        if t.stride(1) != 1 or (t.stride(0) * t.element_size()) % 16 or t.data_ptr() % 16:
            return None
    return _swiglu_up_launch(x, w, (BM, BN, BK, stages, warps), _sm_count())


def _swiglu_up_launch(x: torch.Tensor, w: torch.Tensor, config: tuple[int, int, int, int, int],
                      max_programs: int, paired: bool = False) -> torch.Tensor:
    """The launch behind :func:`swiglu_up` (and, ``paired``, :func:`swiglu_up_paired`), without its checks (the
    interpreter tests call it on the CPU)."""
    BM, BN, BK, stages, warps = config
    M, K = x.shape
    N = w.shape[0] // 2
    out = torch.empty(M, N, device=x.device, dtype=x.dtype)
    programs = min(triton.cdiv(M, BM) * (N // BN), max_programs)
    _launch(
        _swiglu_up_paired_kernel if paired else _swiglu_up_kernel, (programs,),
        TensorDescriptor.from_tensor(x, [BM, BK]), TensorDescriptor.from_tensor(w, [2 * BN if paired else BN, BK]),
        TensorDescriptor.from_tensor(out, [BM, BN]), M, N, K, programs, BM=BM, BN=BN, BK=BK, GROUP_M=8,
        num_stages=stages, num_warps=warps,
    )  # fmt: skip
    return out


def pair_swiglu_weight(w: torch.Tensor) -> torch.Tensor:
    """The fused ``[W1; W2]`` ``[2N, K]`` as the paired layout of :func:`swiglu_up_paired` (rows W1[0], W2[0],
    W1[1], ...): a copy."""
    return w.view(2, w.shape[0] // 2, w.shape[1]).transpose(0, 1).reshape(w.shape)


def swiglu_up_paired(x: torch.Tensor, w_paired: torch.Tensor, config: tuple[int, int, int, int, int],
                     max_programs: int | None = None) -> torch.Tensor:
    """:func:`swiglu_up` over a paired weight (:func:`pair_swiglu_weight`), one ``[BM, 2 BN]`` MMA per step
    instead of two ``[BM, BN]`` ones. An experiment for ``python -m yoco_eval.bench.swiglu_gemm``: the model does
    not use it (its fused weight is ``[W1; W2]``, whose halves are the checkpoint's parameters as views)."""
    return _swiglu_up_launch(x, w_paired, config, max_programs or _sm_count(), paired=True)


@functools.cache
def _sm_count() -> int:
    if not torch.cuda.is_available():
        return 8
    return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count


def _n_splits(batch_heads: int, max_keys: int, block_n: int, per_sm: int = 4) -> int:
    sms = _sm_count()
    want = -(-per_sm * sms // batch_heads)  # about ``per_sm`` programs per multiprocessor
    return max(1, min(want, -(-max_keys // (4 * block_n)), 256))


def _default_splits(rows: int, keys: int, block_n: int, quant: bool) -> int:
    """Key-range splits of a decode launch whose programs serve ``rows`` (batch x key/value heads) query groups:
    about 4 programs per multiprocessor; 8 for an fp8 batch (3.56 against 4.00 ms at 8 x 512K on an H100). Fewer
    fp8 rows over 256-key tiles get one wave: those tiles' 3 stages take 192 KB of shared memory, one program per
    multiprocessor, and fewer, longer programs read faster (one row at 512K keys on an H100: 16 splits 0.377 ms,
    33 0.379, 66 0.385; 17, one program past a wave, 0.632; two rows: 8 splits 0.732, 33 0.731, 66 0.740; a
    decode step 7.51 against 7.64 ms, bench.knob_ab)."""
    if quant and rows < 32 and block_n >= 256:
        return max(1, min(_sm_count() // rows, -(-keys // (4 * block_n)), 256))
    return _n_splits(rows, keys, block_n, 8 if quant and rows >= 32 else 4)


# splits the merge kernel reads at a time (a running log-sum-exp across blocks): one compiled variant for any split
# count (at most 256), and one block for the 66 splits of a one-row decode on an H100
MERGE_SPLIT_BLOCK = 128

# fp8 decode: fp16 products (one cvt per two e4m3 values) rather than bf16 ones (see decode_attention_splitk):
# 0.403 against 0.467 ms at 512K keys on an H100 (bench_decode --fp8), error 0.29-0.35x the bf16 path's against fp64
FP8_FP16_OPERANDS = True


def _decode_config(rows: int, keys: int, quant: bool = False, token_contiguous: bool = False) -> tuple[int, int]:
    """(block_n, num_stages) from the H100 sweeps of ``python -m yoco_eval.bench.decode`` (4 warps won or tied
    everywhere). bf16: short blocks with 3 stages for one sequence at 128K-512K, 64x4 at 1M, 128x4 once a batch fills
    the card. fp8 (``--fp8``): 128x3 at every shape over token-major values; 256x3 over token-contiguous values (the
    cache's): 0.402 against 0.413 ms for 128x4 at 512K keys, 0.775 against 0.791 at 1M, 3.00 against 3.09 at 8 x
    512K."""
    if quant:
        return (256, 3) if token_contiguous else (128, 3)
    if rows >= 32:
        return 128, 4
    if keys > 768 * 1024:
        return 64, 4
    return 32, 3


def decode_attention_splitk(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_len: torch.Tensor,
                            scale: float | None = None, splits: int | None = None, block_n: int | None = None,
                            num_warps: int = 4, num_stages: int | None = None, k_scale: torch.Tensor | None = None,
                            v_scale: torch.Tensor | None = None,
                            fp16_operands: bool | None = None) -> torch.Tensor:  # fmt: skip
    """One query per row over the first ``kv_len[b]`` keys of each row (flash-decoding).

    Args:
        q: ``[B, 1, H, D]``; k: ``[B, Tk, Hk, D]``, v: ``[B, Tk, Hk, DV]`` (any row/token strides, heads contiguous:
        a cache buffer; D and DV powers of two, DV = D for YOCO); kv_len: ``[B]`` int tensor on the device,
        ``1 <= kv_len[b] <= Tk`` (read by the kernel, so a CUDA graph can replay it at every step). splits: key-range
        splits (default: about 4 programs per multiprocessor).
        k_scale, v_scale: ``[B, Tk, Hk]`` fp32 scales of an fp8 cache (:mod:`yoco_eval.ops.fp8`; k, v e4m3), read
        next to the keys: the key scale multiplies the scores, the value scale the probabilities. Any strides;
        token-contiguous (the cache's head-major layout) keeps those reads coalesced.
        fp16_operands: fp8 only: the products in fp16 rather than bf16 (default :data:`FP8_FP16_OPERANDS`); each
        query row is scaled by its largest entry and each block's ``p * v_scale`` by the block's largest scale, so
        both operands lie in [-1, 1] (fp16 keeps 3 more bits there than bf16 and cannot overflow).
    Returns:
        ``[B, 1, H, DV]`` in q's dtype.
    """
    B, Tq, H, D = q.shape
    assert Tq == 1, "decode_attention_splitk takes one query per row"
    Hk = k.shape[2]
    quant = k_scale is not None
    if quant and k_scale.stride() != v_scale.stride():
        raise ValueError("decode_attention_splitk: k_scale and v_scale need one layout")
    out = torch.empty(B, 1, H, v.shape[-1], device=q.device, dtype=q.dtype)
    f16 = FP8_FP16_OPERANDS if fp16_operands is None else fp16_operands
    _decode_launch(q, k, v, kv_len, out, H // Hk, Hk, q.stride(2), 0, 0, scale, splits, block_n, num_warps,
                   num_stages, k_scale, v_scale, f16=quant and f16)  # fmt: skip
    return out


def diff_decode_attention_splitk(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_len: torch.Tensor,
                                 scale: float | None = None, splits: int | None = None, block_n: int | None = None,
                                 num_warps: int = 4,
                                 num_stages: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Both halves of differential attention (Phi-4-mini-flash) for one query per row over the first ``kv_len[b]``
    keys, in ONE flash-decoding launch that reads each pair's value block once for both halves.

    Half a's query heads ``q[:, :, a-1::2]`` read keys ``k[:, :, (a-1)*KV/2 : a*KV/2]`` (grouped: query head i of a
    half reads key head ``i // G``, ``G = H / KV``) and the SAME paired values v: the layout of
    :func:`yoco_eval.model.phi4flash.to_pair_layout`. One program per (split, row, pair j) computes the 2G query
    rows of pair j (half 1's G heads, then half 2's) from k1_j, k2_j and v_j.

    Args:
        q: ``[B, 1, H, D]`` (checkpoint head order, heads contiguous); k: ``[B, Tk, KV, D]`` (even heads first);
            v: ``[B, Tk, KV/2, DV]`` (pair j = ``[v_2j | v_2j+1]``, DV = 2D); k, v with any row/token strides and
            contiguous heads (cache buffers); D and DV powers of two.
        kv_len: ``[B]`` int tensor on the device, ``1 <= kv_len[b] <= Tk``. scale: default ``D**-0.5``.
        splits, block_n, num_warps, num_stages: as :func:`decode_attention_splitk`.
    Returns:
        ``(attn_1, attn_2)``, each ``[B, 1, H/2, DV]`` in q's dtype (views of one buffer).
    """
    B, Tq, H, D = q.shape
    assert Tq == 1, "diff_decode_attention_splitk takes one query per row"
    KV = k.shape[2]
    pairs = v.shape[2]
    assert KV == 2 * pairs and H % KV == 0, "differential layout: k [B, Tk, KV, D], v [B, Tk, KV/2, DV], KV | H"
    out = torch.empty(B, 1, 2, H // 2, v.shape[-1], device=q.device, dtype=q.dtype)
    _decode_launch(q, k, v, kv_len, out.view(B, 1, H, v.shape[-1]), H // KV, pairs, 2 * q.stride(2), q.stride(2),
                   pairs * k.stride(2), scale, splits, block_n, num_warps, num_stages, diff=True)  # fmt: skip
    return out[:, :, 0], out[:, :, 1]


def values_token_contiguous(v: torch.Tensor) -> bool:
    """Whether the split-key decode kernel reads ``v`` ``[B, Tk, Hk, DV]`` as token-contiguous runs (stride 1 along
    the tokens: the fp8 cache's values, :func:`yoco_eval.ops.fp8.value_zeros`) rather than with a contiguous head
    dim. It reads such runs to the next multiple of 16 tokens, so their storage must reach that far, and the slots
    there past a row's length (they get zero weight) must hold finite values. Raises ``ValueError`` otherwise."""
    if v.stride(-1) == 1:
        return False
    B, Tk, Hk, DV = v.shape
    last = v.storage_offset() + (B - 1) * v.stride(0) + (Hk - 1) * v.stride(2) + (DV - 1) * v.stride(3)
    if v.stride(1) != 1 or last + -(-Tk // 16) * 16 > v.untyped_storage().nbytes() // v.element_size():
        raise ValueError("decode_attention_splitk: values need a contiguous head dim, or token-contiguous runs "
                         "readable to a multiple of 16 tokens (see yoco_eval.ops.fp8.value_zeros)")  # fmt: skip
    return True


def _decode_launch(q, k, v, kv_len, out, G, programs_per_row, stride_qh, q2_off, k2_off, scale, splits, block_n,
                   num_warps, num_stages, k_scale=None, v_scale=None, diff=False, f16=False):  # fmt: skip
    """Split kernel + merge kernel into ``out`` ``[B, 1, H, DV]`` (H = every query row the programs serve)."""
    B, H, D, DV = q.shape[0], out.shape[2], q.shape[-1], v.shape[-1]
    Tk = k.shape[1]
    scale = D**-0.5 if scale is None else scale
    quant = k_scale is not None
    rows = 2 * G if diff else G
    v_t = values_token_contiguous(v)
    auto_block, auto_stages = _decode_config(B * programs_per_row, Tk, quant, v_t)
    block_n, num_stages = block_n or auto_block, num_stages or auto_stages
    S = splits or _default_splits(B * programs_per_row, Tk, block_n, quant)
    part = torch.empty(B, H, S, DV, device=q.device, dtype=torch.float32)
    lse = torch.empty(B, H, S, device=q.device, dtype=torch.float32)
    ks, vs = (k_scale, v_scale) if quant else (kv_len, kv_len)  # unused pointers when not quantized
    _launch(
        _decode_split_kernel, (S, B * programs_per_row),
        q, k, v, ks, vs, kv_len, part, lse, q.stride(0), stride_qh, k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), v.stride(3), *(ks.stride() if quant else (0, 0, 0)), programs_per_row,
        S, float(scale), q2_off, k2_off, G=G, G_PAD=max(16, triton.next_power_of_2(rows)), D=D, DV=DV,
        BLOCK_N=block_n, QUANT=quant, DIFF=diff, F16=f16, V_T=v_t, num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    _launch(_decode_merge_kernel, (B * H,), part, lse, out, out.stride(0), out.stride(2), H, S, DV=DV,
            S_BLOCK=MERGE_SPLIT_BLOCK)  # fmt: skip
