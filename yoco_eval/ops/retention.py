"""Gated retention (YOCO's gRet self-decoder mixer): chunkwise prefill and the recurrent decode step.

Contract (all entry points): q, k ``[B, T, H, D]`` with k already multiplied by ``D**-0.5``; v ``[B, T, H, Dv]``;
``log_g`` ``[B, T, H]`` fp32, the log of the per-token decay (``logsigmoid(x W_gt) / 16`` in YOCO);
``state`` ``[B, H, D, Dv]`` fp32 (the recurrent state S, kept in fp32 on purpose: it accumulates over up to 1M
tokens). Outputs are in q's dtype; the new state is fp32.

Padding: a position with ``log_g = 0`` and ``k = 0`` leaves the state untouched, which is how the model keeps
right-padding of batched prompts out of the state.

Backends: ``torch`` (chunkwise, plain PyTorch, runs anywhere) and ``fla`` (fla-core's ``chunk_simple_gla`` Triton
kernels, CUDA only). The oracle for both is :mod:`yoco_eval.ops.naive`.

Importing this module changes nothing in fla-core: :func:`prepare_fla` (called by the Engine on CUDA) pins its
autotuned kernels on Hopper (:data:`HOPPER_PINS`).
"""

from __future__ import annotations

import torch

from yoco_eval import settings

try:  # optional GPU kernels
    from fla.ops.simple_gla import chunk_simple_gla as _fla_chunk_simple_gla
except Exception:  # ImportError, or triton missing / no driver
    _fla_chunk_simple_gla = None

# fla-core autotunes three of chunk_simple_gla's kernels the first time each runs in a process (and again for each
# new autotuning key): the state kernel over 48 configs (39 s on a fresh H100), the output kernel over 3 and the
# chunk cumsum over 4 (its key holds the batch size). Each config is compiled, then benchmarked; Triton 3.6
# benchmarks even a search pruned to one config. On Hopper (compute capability 9.x) prepare_fla() pins each kernel
# to the config fla-core's OWN full search picked on an H100 for YOCO-3B's 128-dim heads (2026-12-06, fla-core 0.6.0,
# Triton 3.6: ``python -m yoco_eval.bench.fla_autotune``, reports/gpu/fla_autotune_h100.json): one compilation per
# kernel and no benchmarking. Other GPUs keep fla-core's search; YOCO_EVAL_FLA_FULL_AUTOTUNE=1 keeps it everywhere.
HOPPER_PINS = {  # kernel: (kwargs, num_warps, num_stages); its time at 64K tokens against the runner-up's
    "chunk_fwd_kernel_h": ({"BK": 64, "BV": 64}, 4, 4),  # 0.685 against 0.703 ms (BK = BV = 64, 8 warps)
    "chunk_fwd_kernel_o": ({"BK": 64, "BV": 64}, 4, 3),  # 0.0559 against 0.0583 ms (BK = BV = 128, 8 warps)
    "chunk_local_cumsum_scalar_kernel": ({}, 1, 3),  # 5.95 us; the four within 8% of each other
}
_FLA_MODULES = {"chunk_fwd_kernel_h": "fla.ops.common.chunk_h", "chunk_fwd_kernel_o": "fla.ops.common.chunk_o",
                "chunk_local_cumsum_scalar_kernel": "fla.ops.utils.cumsum"}  # fmt: skip
_searches: dict[str, list] = {}  # kernel -> fla-core's own configs, while pinned


def _autotuner(kernel):
    """The Triton autotuner under ``kernel`` (through ``@triton.heuristics`` wrappers, whose ``.fn`` is the next
    layer down), or None."""
    while kernel is not None and not hasattr(kernel, "configs"):
        kernel = getattr(kernel, "fn", None)
    return kernel


def _fla_tuners() -> dict:
    """fla-core's autotuners of :data:`HOPPER_PINS`'s kernels that this install has (none without fla-core)."""
    if _fla_chunk_simple_gla is None:
        return {}
    import importlib

    found = {}
    for name, module in _FLA_MODULES.items():
        try:
            tuner = _autotuner(getattr(importlib.import_module(module), name, None))
        except Exception:  # a layout change in fla-core: that kernel keeps its own search
            tuner = None
        if tuner is not None:
            found[name] = tuner
    return found


def pin(tuner, name: str) -> bool:
    """Leave ``tuner`` (the autotuner of fla-core kernel ``name``) only its :data:`HOPPER_PINS` config, so it
    compiles that one and benchmarks nothing. False, changing nothing, when no config of its own matches the pin
    (fla-core changed its search) or it is pinned already."""
    if name in _searches:
        return False
    kwargs, warps, stages = HOPPER_PINS[name]
    match = [c for c in tuner.configs if c.kwargs == kwargs and c.num_warps == warps and c.num_stages == stages]
    if not match:
        return False
    _searches[name] = tuner.configs
    tuner.configs = match[:1]
    tuner.cache.clear()
    return True


def fla_pins_active() -> bool:
    """Whether every fla-core kernel of :data:`HOPPER_PINS` found in this install runs its pinned config."""
    tuners = _fla_tuners()
    return bool(tuners) and all(name in _searches and len(t.configs) == 1 for name, t in tuners.items())


_full_search = False  # set by full_fla_autotune(): later prepare_fla() calls keep the full search


def full_fla_autotune() -> None:
    """Give fla-core back its own search for the rest of the process (and forget what it chose): for measuring
    FLA's own YOCO, which runs the same fla-core kernels and is owed their full search. Engines built afterwards
    keep it."""
    global _full_search
    _full_search = True
    for name, tuner in _fla_tuners().items():
        if name in _searches:
            tuner.configs = _searches.pop(name)
            tuner.cache.clear()


def prepare_fla(device: torch.device | str | None = None) -> bool:
    """Pin fla-core's autotuned kernels (:data:`HOPPER_PINS`) when ``device`` (default: the current CUDA device) is
    a Hopper GPU, unless the settings ask for fla-core's full autotuning or :func:`full_fla_autotune` was called in
    this process. Explicit (importing yoco-eval patches nothing); idempotent. Returns whether the pins are active."""
    if settings.get().fla_full_autotune or _full_search or not torch.cuda.is_available():
        return fla_pins_active()
    dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.type != "cuda" or torch.cuda.get_device_capability(dev)[0] != 9:
        return fla_pins_active()
    for name, tuner in _fla_tuners().items():
        pin(tuner, name)
    return fla_pins_active()


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
