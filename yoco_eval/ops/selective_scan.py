"""Mamba-1's two sequence ops in plain PyTorch: the depthwise causal convolution and the selective scan.

Shapes (channel-last, like every other op here): B batch, T sequence, C = Di channels (Mamba's ``d_inner``),
N the SSM state size (``d_state``), K the convolution width.

Selective scan (Mamba-1, real diagonal ``A``)::

    s_t = exp(dt_t * A) * s_{t-1} + (dt_t * x_t) B_t          s: [B, Di, N], starts at ``state`` (or 0)
    y_t = s_t . C_t + D * x_t

:func:`naive_selective_scan` runs the recurrence step by step (the oracle, and the decode step);
:func:`chunk_selective_scan` computes the same thing a chunk of L tokens at a time (one cumulative log-decay per
chunk, the intra-chunk part as one masked product), which is what a GPU kernel would do. Both compute in fp32
(fp64 inputs stay fp64) and return ``y`` in ``x``'s dtype and the final state in the compute dtype.

On the GPU, :func:`selective_scan` ("auto") runs the Triton kernel
:func:`yoco_eval.ops.triton_scan.selective_scan_fwd` (chunks of 256 tokens scanned in parallel, then their states
carried across chunks, then re-scanned for ``y``): the chunk twin's Python loop over 16-token chunks is far too slow
for 64K-1M-token prompts. The two functions here are its twins in the tests.

A position with ``dt = 0`` neither decays nor feeds the state: callers zero ``dt`` on padding.
"""

from __future__ import annotations

import torch

_SEQ_BLOCK = 64  # tokens whose decays/inputs the sequential scan precomputes together (bounds [B, L, Di, N])


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    tail: torch.Tensor | None = None,
    n_valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal convolution ``c[t] = bias + sum_k weight[:, k] * x[t - K + 1 + k]`` (no activation).

    Args:
        x: ``[B, T, C]``. weight: ``[C, K]`` (``conv1d.weight[:, 0]``: ``weight[:, K-1]`` hits the current token).
        bias: ``[C]`` or None.
        tail: ``[B, K-1, C]``, the K-1 inputs before ``x[:, 0]`` (a previous chunk's), or None for zeros.
        n_valid: ``[B]`` int64, how many leading tokens of each row are real (right padding), or None (all).
    Returns:
        ``out [B, T, C]`` in x's dtype, and the new tail ``[B, K-1, C]``: the last K-1 real inputs of each row
        (a row with no real token keeps its old tail).
    """
    B, T, C = x.shape
    K = weight.shape[1]
    if tail is None:
        tail = x.new_zeros(B, K - 1, C)
    xp = torch.cat([tail.to(x.dtype), x], 1)  # [B, T + K - 1, C]
    out = xp[:, K - 1 :] * weight[:, K - 1]
    for k in range(K - 1):
        out = out + xp[:, k : k + T] * weight[:, k]
    if bias is not None:
        out = out + bias
    if n_valid is None:
        new_tail = xp[:, T:]
    else:  # the K-1 inputs just before position n_valid (in xp's indexing: n_valid .. n_valid + K - 2)
        idx = n_valid.view(B, 1) + torch.arange(K - 1, device=x.device)
        new_tail = xp.gather(1, idx[..., None].expand(B, K - 1, C))
    return out, new_tail.contiguous()


def naive_selective_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The selective scan, one step at a time (see module docstring).

    Args:
        x, dt: ``[B, T, Di]`` (dt already through softplus, >= 0). A: ``[Di, N]`` (negative).
        B, C: ``[B, T, N]``. D: ``[Di]`` or None. state: ``[B, Di, N]`` or None (zeros).
    Returns:
        ``y [B, T, Di]`` (x's dtype), final state ``[B, Di, N]`` (fp32, or fp64 for fp64 inputs).
    """
    cd = _compute_dtype(x)
    xf, dtf, Af, Bf, Cf = (t.to(cd) for t in (x, dt, A, B, C))
    s = xf.new_zeros(x.shape[0], x.shape[2], A.shape[1]) if state is None else state.to(cd).clone()
    ys = []
    for t0 in range(0, x.shape[1], _SEQ_BLOCK):  # decay and input of a block at once; the loop only accumulates
        dA = torch.exp(dtf[:, t0 : t0 + _SEQ_BLOCK, :, None] * Af)  # [B, L, Di, N]
        dBx = (dtf * xf)[:, t0 : t0 + _SEQ_BLOCK, :, None] * Bf[:, t0 : t0 + _SEQ_BLOCK, None, :]
        states = []
        for t in range(dA.shape[1]):
            s = s.mul_(dA[:, t]).add_(dBx[:, t])
            states.append(s.clone())
        ys.append(torch.einsum("btdn,btn->btd", torch.stack(states, 1), Cf[:, t0 : t0 + _SEQ_BLOCK]))
    y = torch.cat(ys, 1) if ys else xf.new_zeros(x.shape)
    if D is not None:
        y = y + xf * D.to(cd)
    return y.to(x.dtype), s


def chunk_selective_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    state: torch.Tensor | None = None,
    chunk: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The selective scan a chunk of ``chunk`` tokens at a time; same contract as :func:`naive_selective_scan`.

    Inside a chunk, with ``L_t = sum_{s<=t} dt_s A`` (cumulative log-decay, ``[Di, N]`` per token)::

        y_t = C_t . (exp(L_t) s_0 + sum_{s<=t} exp(L_t - L_s) dt_s x_s B_s)

    Every exponent is <= 0 (A < 0, dt >= 0), so nothing overflows. The intra-chunk term holds a
    ``[B, L, L, Di, N]`` tensor: keep ``chunk`` small (16) for wide models.
    """
    cd = _compute_dtype(x)
    xf, dtf, Af, Bf, Cf = (t.to(cd) for t in (x, dt, A, B, C))
    Bn, T, Di = x.shape
    s = xf.new_zeros(Bn, Di, A.shape[1]) if state is None else state.to(cd)
    ys = []
    for c0 in range(0, T, chunk):
        dtc, uc = dtf[:, c0 : c0 + chunk], (dtf * xf)[:, c0 : c0 + chunk]  # [B, L, Di]
        Bc, Cc = Bf[:, c0 : c0 + chunk], Cf[:, c0 : c0 + chunk]  # [B, L, N]
        L = dtc.shape[1]
        cum = torch.cumsum(dtc[..., None] * Af, dim=1)  # [B, L, Di, N]
        diff = cum[:, :, None] - cum[:, None, :]  # [B, t, s, Di, N]
        causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        decay = torch.exp(diff.masked_fill(~causal[None, :, :, None, None], float("-inf")))
        y = torch.einsum("btn,bsn,btsdn,bsd->btd", Cc, Bc, decay, uc)
        y = y + torch.einsum("btn,btdn,bdn->btd", Cc, torch.exp(cum), s)
        last = torch.exp(cum[:, -1:] - cum)  # [B, L, Di, N]: decay from each token to the chunk's end
        s = torch.exp(cum[:, -1]) * s + torch.einsum("bsdn,bsn,bsd->bdn", last, Bc, uc)
        ys.append(y)
    y = torch.cat(ys, 1) if ys else xf.new_zeros(x.shape)
    if D is not None:
        y = y + xf * D.to(cd)
    return y.to(x.dtype), s


SCAN_IMPLS = ("auto", "sequential", "chunk", "triton")


def _triton_scan(x: torch.Tensor):
    """The Triton scan module when its kernels can run on ``x`` (CUDA or the interpreter, triton importable, not
    switched off, no autograd), else None. Imported lazily: a CPU install without triton never loads it."""
    from yoco_eval.ops import triton_kernels

    if not triton_kernels.available(x):
        return None
    from yoco_eval.ops import triton_scan

    return triton_scan


def selective_scan(x, dt, A, B, C, D, state=None, impl: str = "auto", chunk: int = 16
                   ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Dispatch on ``impl``: "sequential" (:func:`naive_selective_scan`), "chunk" (:func:`chunk_selective_scan`),
    "triton" (:func:`yoco_eval.ops.triton_scan.selective_scan_fwd`, its own chunk size; fp64 inputs take the
    "auto" PyTorch rule; a ValueError where the kernel cannot run: no CUDA, no triton, ``YOCO_EVAL_TRITON=0``,
    autograd) or "auto": the Triton kernel where it can run for more than one token and not in fp64, else the
    sequential steps on CPU and for one token (fewer flops, no launch cost there), chunks elsewhere."""
    if impl not in SCAN_IMPLS:
        raise ValueError(f"unknown selective-scan implementation {impl!r}: choose one of {SCAN_IMPLS}")
    if impl in ("auto", "triton") and x.dtype != torch.float64 and (impl == "triton" or x.shape[1] > 1):
        kernels = _triton_scan(x)
        if kernels is not None:
            return kernels.selective_scan_fwd(x, dt, A, B, C, D, state)
        if impl == "triton":
            raise ValueError("selective scan impl='triton' cannot run here: it needs a CUDA tensor (or "
                             "TRITON_INTERPRET=1), triton installed, YOCO_EVAL_TRITON on and no autograd")  # fmt: skip
    if impl == "sequential" or (impl != "chunk" and (x.shape[1] <= 1 or x.device.type == "cpu")):
        return naive_selective_scan(x, dt, A, B, C, D, state)
    return chunk_selective_scan(x, dt, A, B, C, D, state, chunk)
