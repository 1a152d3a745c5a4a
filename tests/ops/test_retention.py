"""Gated retention: the parallel, chunkwise and recurrent forms compute the same function.

Reference: the parallel form in float64. fp32 forms must be within 3x the fp32 parallel form's own error
against it (derived tolerance).
"""

from __future__ import annotations

import pytest
import torch

from yoco_eval.ops.naive import naive_parallel_retention, naive_recurrent_retention
from yoco_eval.ops.retention import recurrent_retention_step, torch_chunk_retention


def inputs(B, T, H, D, seed, state=True):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, T, H, D, generator=g, dtype=torch.float64) for _ in range(3))
    k = k * D**-0.5
    log_g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, generator=g, dtype=torch.float64) * 2) / 16
    s0 = torch.randn(B, H, D, D, generator=g, dtype=torch.float64) if state else None
    return q, k, v, log_g, s0


def budget(o32, s32, o64, s64):
    return 3 * (o32.double() - o64).abs().max().item() + 1e-6, 3 * (s32.double() - s64).abs().max().item() + 1e-6


@pytest.mark.parametrize(
    "B,T,H,D,chunk",
    [pytest.param(2, 64, 3, 16, 16, id="B2-T64-H3-D16-C16"), pytest.param(1, 77, 2, 8, 32, id="B1-T77-H2-D8-C32"),
     pytest.param(2, 5, 4, 32, 64, id="B2-T5-H4-D32-C64"), pytest.param(1, 300, 2, 16, 256, id="B1-T300-H2-D16-C256")],
)  # fmt: skip
@pytest.mark.parametrize("with_state", [False, True])
def test_parallel_chunkwise_recurrent_agree(B, T, H, D, chunk, with_state):
    q, k, v, g, s0 = inputs(B, T, H, D, seed=T + chunk, state=with_state)
    o64, s64 = naive_parallel_retention(q, k, v, g, s0)  # float64 inside (inputs are float64)
    f = [x.float() if x is not None else None for x in (q, k, v, g, s0)]
    o32, s32 = naive_parallel_retention(*f)
    bo, bs = budget(o32, s32, o64, s64)
    oc, sc = torch_chunk_retention(*f[:4], state=f[4], chunk_size=chunk)
    orc, src = naive_recurrent_retention(*f)
    for o, s in ((oc, sc), (orc, src)):
        assert (o.double() - o64).abs().max().item() <= bo
        assert (s.double() - s64).abs().max().item() <= bs
    # the decode step is the recurrence, one token at a time
    S = torch.zeros(B, H, D, D) if s0 is None else f[4]
    steps = []
    for t in range(T):
        o, S = recurrent_retention_step(
            f[0][:, t : t + 1], f[1][:, t : t + 1], f[2][:, t : t + 1], f[3][:, t : t + 1], S
        )
        steps.append(o)
    assert (torch.cat(steps, 1).double() - o64).abs().max().item() <= bo
    assert (S.double() - s64).abs().max().item() <= bs


def test_padding_positions_leave_the_state_untouched():
    q, k, v, g, _ = inputs(1, 40, 2, 8, seed=7, state=False)
    q, k, v, g = (x.float() for x in (q, k, v, g))
    _, s_real = torch_chunk_retention(q[:, :25], k[:, :25], v[:, :25], g[:, :25], chunk_size=16)
    k2, g2 = k.clone(), g.clone()
    k2[:, 25:] = 0
    g2[:, 25:] = 0
    _, s_pad = torch_chunk_retention(q, k2, v, g2, chunk_size=16)
    assert torch.allclose(s_real, s_pad, atol=1e-5)


def test_hopper_shortlist_keeps_the_measured_tile_only_on_hopper(monkeypatch):
    """fla-core's 48-config state-kernel search shrinks to 4 configs on compute capability 9.x, nowhere else."""
    from types import SimpleNamespace as NS

    from yoco_eval.ops.retention import hopper_shortlist

    configs = [NS(kwargs={"BK": bk, "BV": bv}, num_warps=w, num_stages=s)
               for bk in (32, 64) for bv in (32, 64) for w in (1, 2, 4, 8) for s in (2, 3, 4)]  # fmt: skip
    on_gpu = {"k": NS(device=torch.device("cuda", 0)), "T": 4096}
    capability = {"cc": (9, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None: capability["cc"])
    kept = hopper_shortlist(configs, on_gpu)
    assert len(kept) == 4
    assert {(c.num_warps, c.num_stages) for c in kept} == {(4, 3), (4, 4), (8, 3), (8, 4)}
    assert all(c.kwargs == {"BK": 64, "BV": 64} for c in kept)
    capability["cc"] = (8, 0)  # an A100: the full search
    assert hopper_shortlist(configs, on_gpu) == configs
    assert hopper_shortlist(configs, {"k": torch.zeros(1)}) == configs  # CPU tensors: untouched
    no_tile = [c for c in configs if c.kwargs["BK"] == 32]
    capability["cc"] = (9, 0)
    assert hopper_shortlist(no_tile, on_gpu) == no_tile  # nothing matches: never an empty search
    # fla-core launches with keyword arguments: Triton then passes the tensors in kwargs, and nargs is empty
    assert len(hopper_shortlist(configs, {}, **on_gpu)) == 4


def test_install_shortlist_reaches_the_autotuner_under_heuristics():
    """fla-core stacks ``@triton.heuristics`` over ``@triton.autotune``: the hook must land on the inner autotuner,
    and must not replace a pruning hook the library set itself."""
    from types import SimpleNamespace as NS

    from yoco_eval.ops.retention import hopper_shortlist, install_shortlist

    tuner = NS(configs=[1, 2], early_config_prune=None, fn=NS())
    kernel = NS(fn=tuner)  # heuristics wrapper -> autotuner -> jit function
    assert install_shortlist(kernel) and tuner.early_config_prune is hopper_shortlist
    own = NS(configs=[1], early_config_prune=len, fn=NS())
    assert not install_shortlist(NS(fn=own)) and own.early_config_prune is len
    assert not install_shortlist(NS(fn=NS(fn=None)))  # a plain jit function: nothing to prune
    assert not install_shortlist(None)


def test_full_fla_autotune_removes_the_shortlist_and_its_choices(monkeypatch):
    """Before FLA's own YOCO is measured, the search goes back to fla-core's and the cached choices are forgotten."""
    from types import SimpleNamespace as NS

    from yoco_eval.ops import retention

    tuner = _fake_fla(monkeypatch)
    assert retention.install_shortlist(NS(fn=tuner))
    tuner.cache[("key",)] = "a config the shortlist chose"
    assert retention.fla_shortlist_active()
    monkeypatch.setattr(retention, "_full_search", False)
    retention.full_fla_autotune()
    assert tuner.early_config_prune is None and tuner.cache == {} and not retention.fla_shortlist_active()
    # an Engine built afterwards (its prepare_fla() call) must not bring the shortlist back: the peer keeps the full
    # search (a profile with --peers fla once recorded 'shortlist' rows this way)
    assert retention.prepare_fla() is False and tuner.early_config_prune is None


def _fake_fla(monkeypatch):
    """A stand-in fla-core whose state kernel is an autotuner without pruning (what the real one is)."""
    import sys
    from types import ModuleType
    from types import SimpleNamespace as NS

    from yoco_eval.ops import retention

    tuner = NS(configs=[1, 2], early_config_prune=None, fn=NS(), cache={})
    for name in ("fla", "fla.ops"):
        monkeypatch.setitem(sys.modules, name, ModuleType(name))
    common = ModuleType("fla.ops.common")
    common.chunk_h = NS(chunk_fwd_kernel_h=NS(fn=tuner))
    monkeypatch.setitem(sys.modules, "fla.ops.common", common)
    monkeypatch.setattr(retention, "_fla_chunk_simple_gla", object())
    return tuner


@pytest.mark.parametrize("full", [False, True])
def test_prepare_fla_is_the_explicit_switch_for_the_shortlist(monkeypatch, full):
    """Importing yoco-eval patches nothing in fla-core; prepare_fla() installs the shortlist unless the settings ask
    for fla-core's full autotuning (YOCO_EVAL_FLA_FULL_AUTOTUNE=1)."""
    from yoco_eval import settings
    from yoco_eval.ops import retention

    tuner = _fake_fla(monkeypatch)
    monkeypatch.setattr(retention, "_full_search", False)
    monkeypatch.setenv("YOCO_EVAL_FLA_FULL_AUTOTUNE", "1" if full else "0")
    settings.reload()
    try:
        assert tuner.early_config_prune is None and not retention.fla_shortlist_active()
        assert retention.prepare_fla() is (not full)
        assert (tuner.early_config_prune is retention.hopper_shortlist) is (not full)
        assert retention.prepare_fla() is (not full)  # idempotent
    finally:
        monkeypatch.undo()
        settings.reload()
