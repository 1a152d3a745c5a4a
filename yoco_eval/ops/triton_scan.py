"""Mamba-1's selective scan on the GPU in Triton: :func:`selective_scan_fwd`, same contract as
:func:`yoco_eval.ops.selective_scan.naive_selective_scan` (its twin in the tests).

The recurrence ``h_t = exp(dt_t A) h_{t-1} + (dt_t x_t) B_t`` is linear in ``h`` and its decay over a run of tokens
is ``exp(A * sum dt)`` (``A`` is constant per channel and state), so a long prompt is cut into chunks of ``L``
tokens and scanned in three passes, each parallel over (batch, chunk or not, block of ``BLOCK_D`` channels):

1. ``_scan_chunk_kernel``: every chunk scanned on its own from ``h = 0``; writes its end state ``[B, n_chunks, Di,
   N]`` and its ``sum dt`` per channel ``[B, n_chunks, Di]`` (both fp32).
2. ``_scan_carry_kernel``: one program per (batch, channel block) walks the chunks in order,
   ``h_in[c + 1] = exp(A dtsum[c]) h_in[c] + h_end[c]`` from ``h_in[0] = state`` (or 0), overwriting each chunk's
   end state with its start state; the last one is the final state.
3. ``_scan_chunk_kernel`` again (``OUTPUT=True``): every chunk re-scanned from its start state, writing
   ``y_t = h_t . C_t + D x_t`` in x's dtype.

The state ``[BLOCK_D, N]`` lives in fp32 registers and all arithmetic is fp32 whatever the input dtype (bf16, fp16
or fp32; fp64 stays on the PyTorch path). Inputs are read through their strides (x is a slice of the fused
in-projection, B and C slices of x_proj's output: no copies). Token offsets are 64-bit: 1M tokens x 5,120
channels passes 2**31. Channel and state-size tails are masked (any ``Di``, any ``N``, padded to a power of two).
A position with ``dt = 0`` neither decays nor feeds the state (``exp(0) = 1``, ``0 * x = 0``).
"""

from __future__ import annotations

import torch

from yoco_eval.ops.triton_kernels import available, interpreting, triton  # noqa: F401 (re-exported)

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _scan_chunk_kernel(X, DT, A, BM, CM, DV, HIN, HEND, DTSUM, Y, T, Di, n_chunks,
                           sxb, sxt, sxd, sdb, sdt, sdd, sbb, sbt, sbn, scb, sct, scn, syb, syt,
                           N: tl.constexpr, N_PAD: tl.constexpr, L: tl.constexpr, BLOCK_D: tl.constexpr,
                           OUTPUT: tl.constexpr, HAS_D: tl.constexpr):  # fmt: skip
        b = tl.program_id(0).to(tl.int64)
        c = tl.program_id(1)
        d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
        n = tl.arange(0, N_PAD)
        dmask = d < Di
        nmask = n < N
        hmask = dmask[:, None] & nmask[None, :]
        a = tl.load(A + d[:, None] * N + n[None, :], mask=hmask, other=0.0)  # padded lanes: exp(0) = 1, input 0
        # chunk buffers [B, n_chunks, Di, N] / [B, n_chunks, Di], 64-bit
        hoff = ((b * n_chunks + c) * Di + d[:, None]) * N + n[None, :]
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
            h = tl.exp(dtv[:, None] * a) * h + (dtv * xv)[:, None] * bv[None, :]
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
        b = tl.program_id(0).to(tl.int64)
        d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        n = tl.arange(0, N_PAD)
        dmask = d < Di
        hmask = dmask[:, None] & (n[None, :] < N)
        a = tl.load(A + d[:, None] * N + n[None, :], mask=hmask, other=0.0)
        soff = (b * Di + d[:, None]) * N + n[None, :]
        if HAS_STATE:
            h = tl.load(S0 + soff, mask=hmask, other=0.0)
        else:
            h = tl.zeros([BLOCK_D, N_PAD], tl.float32)
        for c in range(n_chunks):
            row = b * n_chunks + c
            off = (row * Di + d[:, None]) * N + n[None, :]
            h_end = tl.load(H + off, mask=hmask, other=0.0)
            s = tl.load(DTSUM + row * Di + d, mask=dmask, other=0.0)
            tl.store(H + off, h, mask=hmask)  # the chunk's end state (read above) becomes its start state
            h = tl.exp(s[:, None] * a) * h + h_end
        tl.store(SOUT + soff, h, mask=hmask)


def default_block_d(N: int) -> int:
    """Channels per program: a ``[BLOCK_D, N]`` fp32 state of 1,024 elements (64 channels at Mamba's N = 16),
    8 registers a thread at 4 warps; at Di = 5,120 that is 80 channel blocks per chunk."""
    return max(16, 1024 // triton.next_power_of_2(N))


def selective_scan_fwd(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                       D: torch.Tensor | None, state: torch.Tensor | None = None, chunk: int = 256,
                       block_d: int | None = None, carry_block_d: int = 16, num_warps: int = 4
                       ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The selective scan in three Triton passes (module docstring); contract of ``naive_selective_scan``.

    Args:
        x, dt: ``[B, T, Di]``; A: ``[Di, N]``; B, C: ``[B, T, N]`` (any strides); D: ``[Di]`` or None;
        state: ``[B, Di, N]`` or None. chunk: tokens per chunk (the sequential run of each program).
        block_d, carry_block_d, num_warps: channels per program in passes 1/3 (default :func:`default_block_d`)
        and pass 2 (fewer channels, more programs: that pass has no chunk parallelism), warps per program.
    Returns:
        ``y [B, T, Di]`` in x's dtype, final state ``[B, Di, N]`` fp32.
    """
    Bn, T, Di = x.shape
    N = A.shape[1]
    if x.dtype == torch.float64:
        raise ValueError("selective_scan_fwd computes in fp32: fp64 inputs take the PyTorch path")
    dev = x.device
    Af = A.to(torch.float32).contiguous()
    Dv = D.contiguous() if D is not None else Af  # unused pointer when there is no D
    s0 = state.to(torch.float32).contiguous() if state is not None else None
    y = torch.empty(Bn, T, Di, device=dev, dtype=x.dtype)
    final = torch.empty(Bn, Di, N, device=dev, dtype=torch.float32)
    if T == 0 or Bn == 0:
        final.copy_(s0) if s0 is not None else final.zero_()
        return y, final
    L = max(1, int(chunk))
    n_chunks = triton.cdiv(T, L)
    n_pad = triton.next_power_of_2(N)
    bd = block_d or default_block_d(N)
    hbuf = torch.empty(Bn, n_chunks, Di, N, device=dev, dtype=torch.float32)
    dtsum = torch.empty(Bn, n_chunks, Di, device=dev, dtype=torch.float32)
    strides = (*x.stride(), *dt.stride(), *B.stride(), *C.stride(), y.stride(0), y.stride(1))
    grid = (Bn, n_chunks, triton.cdiv(Di, bd))
    common = dict(N=N, N_PAD=n_pad, L=L, BLOCK_D=bd, HAS_D=D is not None, num_warps=num_warps)
    _scan_chunk_kernel[grid](x, dt, Af, B, C, Dv, hbuf, hbuf, dtsum, y, T, Di, n_chunks, *strides, OUTPUT=False,
                             **common)  # fmt: skip
    _scan_carry_kernel[(Bn, triton.cdiv(Di, carry_block_d))](
        Af, hbuf, dtsum, s0 if s0 is not None else final, final, Di, n_chunks, N=N, N_PAD=n_pad,
        BLOCK_D=carry_block_d, HAS_STATE=s0 is not None, num_warps=min(num_warps, 4),
    )  # fmt: skip
    _scan_chunk_kernel[grid](x, dt, Af, B, C, Dv, hbuf, hbuf, dtsum, y, T, Di, n_chunks, *strides, OUTPUT=True,
                             **common)  # fmt: skip
    return y, final
