"""The compile-ahead plumbing on the CPU (the GPU test, tests/gpu/test_gpu_precompile.py, checks that it covers a
real first prefill and decode): compile-only launches, per thread; nothing starts where it cannot run."""

from __future__ import annotations

import threading

import pytest

from yoco_eval.model import precompile
from yoco_eval.ops import triton_kernels


class _Kernel:
    """Records how it was called: launched (``kernel[grid](...)``) or only compiled (``kernel.warmup(...)``)."""

    def __init__(self):
        self.calls = []

    def __getitem__(self, grid):
        return lambda *a, **kw: self.calls.append(("launch", grid, a, kw))

    def warmup(self, *a, grid, **kw):
        self.calls.append(("compile", grid, a, kw))


def test_compile_only_turns_launches_into_compilations_in_its_own_thread_only():
    k = _Kernel()
    triton_kernels._launch(k, (2,), 1, X=3)
    other: list = []
    with triton_kernels.compile_only():
        triton_kernels._launch(k, (4,), 5, X=6)
        t = threading.Thread(target=lambda: other.append(triton_kernels._launch(k, (7,), 8)))
        t.start()
        t.join()
        with triton_kernels.compile_only():  # nested: still compile-only after the inner block
            pass
        triton_kernels._launch(k, (9,), 0)
    triton_kernels._launch(k, (1,), 1)
    assert [(c[0], c[1]) for c in k.calls] == [("launch", (2,)), ("compile", (4,)), ("launch", (7,)),
                                               ("compile", (9,)), ("launch", (1,))]  # fmt: skip
    assert k.calls[1][2:] == ((5,), {"X": 6})


def test_nothing_starts_on_the_cpu_and_ready_returns_at_once():
    from yoco_eval.generate import Engine
    from yoco_eval.profile import build_random, preset_tokenizer

    model = build_random("yoco-debug", device="cpu")
    assert not precompile.supported(model, "cpu")
    assert precompile.start(model, "cpu") is None
    engine = Engine(model, preset_tokenizer("yoco-debug"))
    assert engine._precompiling is None
    engine.ready()


@pytest.mark.parametrize("value,expected", [("0", False), ("1", True), (None, True)])
def test_the_switch(monkeypatch, value, expected):
    from yoco_eval import settings

    if value is None:
        monkeypatch.delenv("YOCO_EVAL_PRECOMPILE", raising=False)
    else:
        monkeypatch.setenv("YOCO_EVAL_PRECOMPILE", value)
    try:
        assert settings.reload().precompile is expected
    finally:
        monkeypatch.undo()
        settings.reload()


@pytest.mark.parametrize("name", ["yoco-debug", "yoco-debug-swa", "transformer-debug"])
def test_the_warm_up_calls_fit_every_model_it_accepts(name):
    """The warm-up's prefill + decode step (run for real here, on the CPU) against each model family it accepts:
    the same calls must go through on the GPU, where they only compile."""
    import torch

    from yoco_eval.model.layers import LanguageModel
    from yoco_eval.profile import build_random

    model = build_random(name, device="cpu")
    assert isinstance(model, LanguageModel)  # what supported() asks for
    with torch.inference_mode():
        precompile.exercise(model, "cpu", 40)
