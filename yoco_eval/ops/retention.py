"""Gated retention (YOCO's gRet self-decoder mixer): chunkwise prefill and the recurrent decode step.

Contract (all entry points): q, k ``[B, T, H, D]`` with k already multiplied by ``D**-0.5``; v ``[B, T, H, Dv]``;
``log_g`` ``[B, T, H]`` fp32, the log of the per-token decay (``logsigmoid(x W_gt) / 16`` in YOCO);
``state`` ``[B, H, D, Dv]`` fp32 (the recurrent state S, kept in fp32 on purpose: it accumulates over up to 1M
tokens). Outputs are in q's dtype; the new state is fp32.

Padding: a position with ``log_g = 0`` and ``k = 0`` leaves the state untouched, which is how the model keeps
right-padding of batched prompts out of the state.

Backends: ``torch`` (chunkwise, plain PyTorch, runs anywhere) and ``fla`` (fla-core's ``chunk_simple_gla`` Triton
kernels, CUDA only). The oracle for both is :mod:`yoco_eval.ops.naive`.

Importing this module changes nothing in fla-core: :func:`prepare_fla` (called by the Engine on CUDA) installs the
autotune shortlist below.
"""

from __future__ import annotations

import torch

from yoco_eval import settings

try:  # optional GPU kernels
    from fla.ops.simple_gla import chunk_simple_gla as _fla_chunk_simple_gla
except Exception:  # ImportError, or triton missing / no driver
    _fla_chunk_simple_gla = None

# fla-core autotunes its state kernel (``chunk_fwd_kernel_h``) over 48 configs the first time it runs in a process:
# 39 s on a fresh H100, most of a needle sweep's first cell, and paid again by every rank of a sharded sweep. On
# Hopper it picked BK = BV = 64 with 4 warps and 4 stages (YOCO-3B's 128-dim heads); the shortlist below keeps
# that tile and lets the autotuner choose among 4 warp/stage settings (about 3 s). Other GPUs keep the full search;
# YOCO_EVAL_FLA_FULL_AUTOTUNE=1 (:mod:`yoco_eval.settings`) makes prepare_fla() leave it everywhere.
_HOPPER_STATE_TILES = {"BK": 64, "BV": 64}


def hopper_shortlist(configs: list, nargs: dict, **kwargs) -> list:
    """Triton ``early_config_prune`` hook: on a Hopper GPU (compute capability 9.x), the configs with the 64 x 64
    state tile and 4 or 8 warps, 3 or 4 stages; elsewhere (or if none matches) all of them. The kernel's tensors
    arrive in ``nargs`` (positional launch arguments) or ``kwargs`` (keyword ones, as fla-core passes them)."""
    args = [*nargs.values(), *kwargs.values()]
    dev = next((v.device for v in args if isinstance(getattr(v, "device", None), torch.device)), None)
    if dev is None or dev.type != "cuda" or torch.cuda.get_device_capability(dev)[0] != 9:
        return configs
    keep = [c for c in configs if all(c.kwargs.get(n) == v for n, v in _HOPPER_STATE_TILES.items())
            and c.num_warps in (4, 8) and c.num_stages in (3, 4)]  # fmt: skip
    return keep or configs


def _autotuner(kernel):
    while kernel is not None and not hasattr(kernel, "configs"):
        kernel = getattr(kernel, "fn", None)
    return kernel


def install_shortlist(kernel) -> bool:
    """Give the Triton autotuner under ``kernel`` (reached through ``@triton.heuristics`` wrappers, whose ``.fn``
    is the next layer down) :func:`hopper_shortlist` as its ``early_config_prune``. Returns False, changing nothing,
    if there is no autotuner or it already prunes its own configs."""
    tuner = _autotuner(kernel)
    if tuner is None or getattr(tuner, "early_config_prune", 1) is not None:
        return False
    tuner.early_config_prune = hopper_shortlist
    return True


def _fla_state_tuner():
    """fla-core's state-kernel autotuner, or None (no fla-core, or its layout changed)."""
    if _fla_chunk_simple_gla is None:
        return None
    try:
        from fla.ops.common import chunk_h
    except Exception:
        return None
    return _autotuner(getattr(chunk_h, "chunk_fwd_kernel_h", None))


def fla_shortlist_active() -> bool:
    """Whether fla-core's state kernel currently searches :func:`hopper_shortlist`."""
    tuner = _fla_state_tuner()
    return tuner is not None and tuner.early_config_prune is hopper_shortlist


_full_search = False  # set by full_fla_autotune(): later prepare_fla() calls keep the full search


def full_fla_autotune() -> None:
    """Undo the shortlist for the rest of the process (and forget what it chose): for measuring FLA's own YOCO,
    which runs the same fla-core kernels and is owed their full search. Engines built afterwards keep it."""
    global _full_search
    _full_search = True
    if fla_shortlist_active():
        tuner = _fla_state_tuner()
        tuner.early_config_prune = None
        tuner.cache.clear()


def prepare_fla() -> bool:
    """Give fla-core's state kernel the Hopper shortlist (:func:`hopper_shortlist`), unless the settings ask for
    its full autotuning or :func:`full_fla_autotune` was called in this process. Explicit (importing yoco-eval
    patches nothing); idempotent. Returns whether the shortlist is active."""
    if not (settings.get().fla_full_autotune or _full_search):
        install_shortlist(_fla_state_tuner())
    return fla_shortlist_active()


def fla_available() -> bool:
    return _fla_chunk_simple_gla is not None and torch.cuda.is_available()


def torch_chunk_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_g: torch.Tensor,
    state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise gated retention in plain PyTorch (fp32 math): quadratic inside a chunk, recurrent across chunks.

    Returns ``(o [B, T, H, Dv] in q.dtype, final state [B, H, D, Dv] fp32)``.
    """
    B, T, H, D = q.shape
    Dv = v.shape[-1]
    dtype = q.dtype
    C = chunk_size
    pad = (-T) % C
    qf, kf, vf, g = q.float(), k.float(), v.float(), log_g.float()
    if pad:  # padded positions: zero key, zero decay, so the state is untouched
        qf, kf, vf = (torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad)) for x in (qf, kf, vf))
        g = torch.nn.functional.pad(g, (0, 0, 0, pad))
    N = (T + pad) // C
    # [B, H, N, C, D]
    qc, kc, vc = (x.view(B, N, C, H, -1).permute(0, 3, 1, 2, 4) for x in (qf, kf, vf))
    b = g.view(B, N, C, H).permute(0, 3, 1, 2).cumsum(-1)  # [B, H, N, C] cumulative log decay inside each chunk
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    decay = (b[..., :, None] - b[..., None, :]).masked_fill(~causal, float("-inf")).exp()  # [B, H, N, C, C]
    o = (qc @ kc.transpose(-1, -2) * decay) @ vc  # intra-chunk part
    q_dec = qc * b[..., None].exp()  # q_i scaled by the decay from chunk start to i
    k_dec = kc * (b[..., -1:] - b)[..., None].exp()  # k_j scaled by the decay from j to chunk end
    chunk_decay = b[..., -1].exp()  # [B, H, N]
    S = torch.zeros(B, H, D, Dv, device=q.device) if state is None else state.float()
    inter = []
    for n in range(N):
        inter.append(q_dec[:, :, n] @ S)
        S = chunk_decay[:, :, n, None, None] * S + k_dec[:, :, n].transpose(-1, -2) @ vc[:, :, n]
    o = o + torch.stack(inter, 2)
    o = o.permute(0, 2, 3, 1, 4).reshape(B, N * C, H, Dv)[:, :T]
    return o.to(dtype), S


def fla_chunk_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_g: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """fla-core's chunked simple-GLA Triton kernels (scalar per-head gate == gated retention; fla-core picks its own
    chunk length). CUDA only. Same contract and returns as :func:`torch_chunk_retention`."""
    if _fla_chunk_simple_gla is None:
        raise RuntimeError("fla-core is not installed")
    o, S = _fla_chunk_simple_gla(
        q, k, v, g=log_g.float(), scale=1.0, initial_state=None if state is None else state.float(),
        output_final_state=True,
    )  # fmt: skip
    return o.to(q.dtype), S.float()


def chunk_retention(q, k, v, log_g, state=None, backend: str = "torch") -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise gated retention through the resolved ``backend`` (``"fla"`` or ``"torch"``)."""
    if backend == "fla":
        return fla_chunk_retention(q, k, v, log_g, state)
    return torch_chunk_retention(q, k, v, log_g, state)


def recurrent_retention_step(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_g: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decode step: ``S = g S + k^T v``; ``o = q S``. q, k ``[B, 1, H, D]``, v ``[B, 1, H, Dv]``,
    log_g ``[B, 1, H]``, state ``[B, H, D, Dv]`` fp32 → ``(o [B, 1, H, Dv], new state)``."""
    S = log_g[:, 0, :, None, None].float().exp() * state + k[:, 0, :, :, None].float() * v[:, 0, :, None, :].float()
    o = torch.einsum("bhd,bhde->bhe", q[:, 0].float(), S)
    return o[:, None].to(q.dtype), S
