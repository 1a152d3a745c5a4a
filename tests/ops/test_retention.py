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


def _search(name: str) -> list:
    """A stand-in for fla-core's own config list of kernel ``name`` (the pin among many)."""
    from types import SimpleNamespace as NS

    if name == "chunk_local_cumsum_scalar_kernel":
        return [NS(kwargs={}, num_warps=w, num_stages=3) for w in (1, 2, 4, 8)]
    return [NS(kwargs={"BK": bk, "BV": bv}, num_warps=w, num_stages=st)
            for bk in (32, 64) for bv in (32, 64) for w in (1, 2, 4, 8) for st in (2, 3, 4)]  # fmt: skip


def _fake_fla(monkeypatch) -> dict:
    """A stand-in fla-core: its three autotuned kernels, each under a heuristics wrapper (as fla-core stacks them),
    with fla-core's searches; returns the autotuners by kernel name."""
    import sys
    from types import ModuleType
    from types import SimpleNamespace as NS

    from yoco_eval.ops import retention

    tuners = {}
    for name, module in retention._FLA_MODULES.items():
        tuners[name] = NS(configs=_search(name), cache={("a key",): "fla-core's earlier choice"}, fn=NS())
        mod = ModuleType(module)
        setattr(mod, name, NS(fn=tuners[name]))
        monkeypatch.setitem(sys.modules, module, mod)
    for name in ("fla", "fla.ops", "fla.ops.common", "fla.ops.utils"):
        monkeypatch.setitem(sys.modules, name, ModuleType(name))
    monkeypatch.setattr(retention, "_fla_chunk_simple_gla", object())
    monkeypatch.setattr(retention, "_searches", {})
    monkeypatch.setattr(retention, "_full_search", False)
    return tuners


def _on_gpu(monkeypatch, capability: tuple[int, int]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None: capability)


def test_pins_leave_each_fla_kernel_its_measured_config_only_on_hopper(monkeypatch):
    """On compute capability 9.x each of fla-core's autotuned kernels keeps ONE config, the H100 pick (so it compiles
    one variant and benchmarks none); on an A100 fla-core keeps its own search."""
    from yoco_eval.ops import retention

    tuners = _fake_fla(monkeypatch)
    _on_gpu(monkeypatch, (8, 0))
    assert retention.prepare_fla("cuda:0") is False
    assert all(t.configs == _search(n) for n, t in tuners.items())
    _on_gpu(monkeypatch, (9, 0))
    assert retention.prepare_fla("cuda:0") is True and retention.fla_pins_active()
    for name, tuner in tuners.items():
        kwargs, warps, stages = retention.HOPPER_PINS[name]
        [c] = tuner.configs
        assert (c.kwargs, c.num_warps, c.num_stages) == (kwargs, warps, stages)
        assert tuner.cache == {}  # a choice made under the full search is forgotten
    assert retention.prepare_fla("cuda:0") is True and all(len(t.configs) == 1 for t in tuners.values())  # idempotent


def test_a_pin_fla_core_no_longer_offers_changes_nothing(monkeypatch):
    from types import SimpleNamespace as NS

    from yoco_eval.ops import retention

    _fake_fla(monkeypatch)
    moved = NS(configs=[c for c in _search("chunk_fwd_kernel_h") if c.num_stages != 4], cache={})
    before = list(moved.configs)
    assert retention.pin(moved, "chunk_fwd_kernel_h") is False and moved.configs == before


def test_full_fla_autotune_gives_fla_core_its_search_back(monkeypatch):
    """Before FLA's own YOCO is measured with --fla-autotune full, both sides go back to fla-core's search, its
    cached choices forgotten; an Engine built afterwards (its prepare_fla() call) must not pin again."""
    from yoco_eval.ops import retention

    tuners = _fake_fla(monkeypatch)
    _on_gpu(monkeypatch, (9, 0))
    assert retention.prepare_fla() is True
    tuners["chunk_fwd_kernel_o"].cache[("key",)] = "a config the pin chose"
    retention.full_fla_autotune()
    assert all(t.configs == _search(n) and t.cache == {} for n, t in tuners.items())
    assert not retention.fla_pins_active()
    assert retention.prepare_fla() is False and all(len(t.configs) > 1 for t in tuners.values())


@pytest.mark.parametrize("full", [False, True])
def test_prepare_fla_is_the_explicit_switch_for_the_pins(monkeypatch, full):
    """Importing yoco-eval patches nothing in fla-core; prepare_fla() pins unless the settings ask for fla-core's
    full autotuning (YOCO_EVAL_FLA_FULL_AUTOTUNE=1)."""
    from yoco_eval import settings
    from yoco_eval.ops import retention

    tuners = _fake_fla(monkeypatch)
    _on_gpu(monkeypatch, (9, 0))
    monkeypatch.setenv("YOCO_EVAL_FLA_FULL_AUTOTUNE", "1" if full else "0")
    settings.reload()
    try:
        assert not retention.fla_pins_active()
        assert retention.prepare_fla() is (not full)
        assert all((len(t.configs) == 1) is (not full) for t in tuners.values())
    finally:
        monkeypatch.undo()
        settings.reload()
