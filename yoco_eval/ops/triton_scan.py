"""Mamba-1's selective scan on the GPU in Triton: :func:`selective_scan_fwd`, same contract as
:func:`yoco_eval.ops.selective_scan.naive_selective_scan` (its twin in the tests).

The recurrence ``h_t = exp(dt_t A) h_{t-1} + (dt_t x_t) B_t`` is linear in ``h`` and its decay over a run of tokens
is ``exp(A * sum dt)`` (``A`` is constant per channel and state), so a long prompt is cut into chunks of ``L``
tokens and scanned in three passes, each parallel over (block of ``BLOCK_D`` channels, chunk or not, batch):

1. ``_scan_chunk_kernel``: every chunk scanned on its own from ``h = 0``; writes its end state ``[B, n_chunks, N,
   Di]`` and its ``sum dt`` per channel ``[B, n_chunks, Di]`` (both fp32).
2. ``_scan_carry_kernel``: one program per (channel block, row) walks the chunks in order,
   ``h_in[c + 1] = exp(A dtsum[c]) h_in[c] + h_end[c]`` from ``h_in[0] = state`` (or 0), overwriting each chunk's
   end state with its start state; the last one is the final state.
3. ``_scan_chunk_kernel`` again (``OUTPUT=True``): every chunk re-scanned from its start state, writing
   ``y_t = h_t . C_t + D x_t`` in x's dtype.

The state ``[BLOCK_D, N]`` lives in fp32 registers and all arithmetic is fp32 whatever the input dtype (bf16, fp16
or fp32; fp64 stays on the PyTorch path). Layout: ``A`` (transposed on the host, ``[N, Di]``) and the chunk states
are channel-contiguous, so Triton gives each thread one channel's whole state (``BLOCK_D = 32 x warps``): the
``sum_n h C`` of every token is a reduction inside the thread (channel-major tiles spread ``N`` over 16 lanes and
paid shuffles, or shared memory and barriers across warps, on every token; seen in the sm_90 PTX).
Inputs are read through their strides (x is a slice of the fused in-projection, B and C slices of x_proj's output:
no copies). Token offsets are 64-bit: 1M tokens x 5,120 channels passes 2**31. Channel and state-size tails are
masked (any ``Di``, any ``N``, padded to a power of two). A position with ``dt = 0`` neither decays nor feeds the
state (``exp(0) = 1``, ``0 * x = 0``).
"""

from __future__ import annotations

import torch

from yoco_eval.ops.triton_kernels import available, interpreting, triton  # noqa: F401 (re-exported)

if triton is not None:
    import triton.language as tl

    LOG2E = tl.constexpr(1.4426950408889634)  # exp(u) = exp2(u log2 e): A scaled once, each decay one ex2

    @triton.jit
    def _scan_chunk_kernel(X, DT, A, BM, CM, DV, HIN, HEND, DTSUM, Y, T, Di, n_chunks,
                           sxb, sxt, sxd, sdb, sdt, sdd, sbb, sbt, sbn, scb, sct, scn, syb, syt,
                           N: tl.constexpr, N_PAD: tl.constexpr, L: tl.constexpr, BLOCK_D: tl.constexpr,
                           OUTPUT: tl.constexpr, HAS_D: tl.constexpr):  # fmt: skip
        # program (chunk c, channel block j) of row b: the blocks of one chunk are neighbours in launch order, so
        # they read the chunk's B and C rows from L2; chunks on axis 0 (axis 1 and 2 stop at 65,535)
        n_blocks = tl.cdiv(Di, BLOCK_D)
        c = tl.program_id(0) // n_blocks
        d = (tl.program_id(0) % n_blocks) * BLOCK_D + tl.arange(0, BLOCK_D)
        b = tl.program_id(1).to(tl.int64)
        n = tl.arange(0, N_PAD)
        dmask = d < Di
        nmask = n < N
        hmask = dmask[:, None] & nmask[None, :]
        a = tl.load(A + n[None, :] * Di + d[:, None], mask=hmask, other=0.0) * LOG2E  # padding: exp 1, input 0
        # chunk buffers [B, n_chunks, N, Di] / [B, n_chunks, Di], 64-bit
        hoff = ((b * n_chunks + c) * N + n[None, :]) * Di + d[:, None]
        if OUTPUT:
            h = tl.load(HIN + hoff, mask=hmask, other=0.0)
            if HAS_D:
                dv = tl.load(DV + d, mask=dmask, other=0.0).to(tl.float32)
        else:
            h = tl.zeros([BLOCK_D, N_PAD], tl.float32)
            dtsum = tl.zeros([BLOCK_D], tl.float32)
        t0 = c * L
        n_t = tl.minimum(L, T - t0)
        tb = t0.to(tl.int64)  # pointers walk the chunk's tokens from 64-bit starts
        xp = X + b * sxb + tb * sxt + d * sxd
        dp = DT + b * sdb + tb * sdt + d * sdd
        bp = BM + b * sbb + tb * sbt + n * sbn
        cp = CM + b * scb + tb * sct + n * scn
        yp = Y + b * syb + tb * syt + d
        for _ in range(0, n_t):
            xv = tl.load(xp, mask=dmask, other=0.0).to(tl.float32)
            dtv = tl.load(dp, mask=dmask, other=0.0).to(tl.float32)
            bv = tl.load(bp, mask=nmask, other=0.0).to(tl.float32)
            h = tl.exp2(dtv[:, None] * a) * h + (dtv * xv)[:, None] * bv[None, :]
            if OUTPUT:
                cv = tl.load(cp, mask=nmask, other=0.0).to(tl.float32)
                yv = tl.sum(h * cv[None, :], 1)
                if HAS_D:
                    yv += dv * xv
                tl.store(yp, yv.to(Y.dtype.element_ty), mask=dmask)
                cp += sct
                yp += syt
            else:
                dtsum += dtv
            xp += sxt
            dp += sdt
            bp += sbt
        if not OUTPUT:
            tl.store(HEND + hoff, h, mask=hmask)
            tl.store(DTSUM + (b * n_chunks + c) * Di + d, dtsum, mask=dmask)

    @triton.jit
    def _scan_carry_kernel(A, H, DTSUM, S0, SOUT, Di, n_chunks, N: tl.constexpr, N_PAD: tl.constexpr,
                           BLOCK_D: tl.constexpr, HAS_STATE: tl.constexpr):  # fmt: skip
        d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
        b = tl.program_id(1).to(tl.int64)
        n = tl.arange(0, N_PAD)
        dmask = d < Di
        hmask = dmask[:, None] & (n[None, :] < N)
        a = tl.load(A + n[None, :] * Di + d[:, None], mask=hmask, other=0.0) * LOG2E
        soff = (b * Di + d[:, None]) * N + n[None, :]
        if HAS_STATE:
            h = tl.load(S0 + soff, mask=hmask, other=0.0)
        else:
            h = tl.zeros([BLOCK_D, N_PAD], tl.float32)
        # the next chunk's end state and dt sum are loaded one step ahead: nothing else overlaps this serial walk
        hp = H + (b * n_chunks * N + n[None, :]) * Di + d[:, None]
        sp = DTSUM + b * n_chunks * Di + d
        h_next = tl.load(hp, mask=hmask, other=0.0)
        s_next = tl.load(sp, mask=dmask, other=0.0)
        for c in range(n_chunks):
            h_end = h_next
            s = s_next
            more = dmask & (d * 0 + c + 1 < n_chunks)  # a tensor mask (the interpreter takes no scalar one)
            h_next = tl.load(hp + N * Di, mask=hmask & more[:, None], other=0.0)
            s_next = tl.load(sp + Di, mask=more, other=0.0)
            tl.store(hp, h, mask=hmask)  # the chunk's end state (read before) becomes its start state
            h = tl.exp2(s[:, None] * a) * h + h_end
            hp += N * Di
            sp += Di
        tl.store(SOUT + soff, h, mask=hmask)


def default_config(N: int) -> tuple[int, int, int]:
    """(chunk, warps, carry warps): 256-token chunks (the per-chunk states are 1/16 of x's bytes at N = 16; 256
    chunks x 40 channel blocks = 10,240 programs at 64K tokens x 5,120 channels), 4 warps of one channel per thread
    (``BLOCK_D = 128``, 56 registers at N = 16 on sm_90), one warp per carry program (160 of them per row at
    Di = 5,120: that pass is serial over chunks, so more programs beat wider ones). Untimed guesses until the GPU
    benchmark (``python -m yoco_eval.bench.selective_scan``) says otherwise."""
    return 256, 4, 1


def selective_scan_fwd(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                       D: torch.Tensor | None, state: torch.Tensor | None = None, chunk: int | None = None,
                       num_warps: int | None = None, carry_warps: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The selective scan in three Triton passes (module docstring); contract of ``naive_selective_scan``.

    Args:
        x, dt: ``[B, T, Di]``; A: ``[Di, N]``; B, C: ``[B, T, N]`` (any strides); D: ``[Di]`` or None;
        state: ``[B, Di, N]`` or None. chunk: tokens per chunk (each program's serial run). num_warps, carry_warps:
        warps per program of passes 1/3 and of pass 2 (``32 x warps`` channels each). None: :func:`default_config`.
    Returns:
        ``y [B, T, Di]`` in x's dtype, final state ``[B, Di, N]`` fp32.
    """
    Bn, T, Di = x.shape
    N = A.shape[1]
    if x.dtype == torch.float64:
        raise ValueError("selective_scan_fwd computes in fp32: fp64 inputs take the PyTorch path")
    d_chunk, d_warps, d_carry = default_config(N)
    L, warps, carry_warps = max(1, int(chunk or d_chunk)), num_warps or d_warps, carry_warps or d_carry
    dev = x.device
    At = A.to(torch.float32).t().contiguous()  # [N, Di]: the kernels' 2-D tiles are channel-contiguous
    Dv = D.contiguous() if D is not None else At  # unused pointer when there is no D
    s0 = state.to(torch.float32).contiguous() if state is not None else None
    y = torch.empty(Bn, T, Di, device=dev, dtype=x.dtype)
    final = torch.empty(Bn, Di, N, device=dev, dtype=torch.float32)
    if T == 0 or Bn == 0:
        final.copy_(s0) if s0 is not None else final.zero_()
        return y, final
    n_chunks = triton.cdiv(T, L)
    n_pad = triton.next_power_of_2(N)
    bd = 32 * warps
    hbuf = torch.empty(Bn, n_chunks, N, Di, device=dev, dtype=torch.float32)
    dtsum = torch.empty(Bn, n_chunks, Di, device=dev, dtype=torch.float32)
    strides = (*x.stride(), *dt.stride(), *B.stride(), *C.stride(), y.stride(0), y.stride(1))
    grid = (n_chunks * triton.cdiv(Di, bd), Bn)
    common = dict(N=N, N_PAD=n_pad, L=L, BLOCK_D=bd, HAS_D=D is not None, num_warps=warps)
    _scan_chunk_kernel[grid](x, dt, At, B, C, Dv, hbuf, hbuf, dtsum, y, T, Di, n_chunks, *strides, OUTPUT=False,
                             **common)  # fmt: skip
    _scan_carry_kernel[(triton.cdiv(Di, 32 * carry_warps), Bn)](
        At, hbuf, dtsum, s0 if s0 is not None else final, final, Di, n_chunks, N=N, N_PAD=n_pad,
        BLOCK_D=32 * carry_warps, HAS_STATE=s0 is not None, num_warps=carry_warps,
    )  # fmt: skip
    _scan_chunk_kernel[grid](x, dt, At, B, C, Dv, hbuf, hbuf, dtsum, y, T, Di, n_chunks, *strides, OUTPUT=True,
                             **common)  # fmt: skip
    return y, final
