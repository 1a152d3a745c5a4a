"""Backends are resolved once, by name; explicit unavailable choices raise with a hint; the resolved kernel is the
one actually called."""

from __future__ import annotations

import pytest
import torch

from yoco_eval.config import get_config
from yoco_eval.errors import BackendUnavailable
from yoco_eval.model.checkpoint import build_model, init_weights
from yoco_eval.ops import resolve_backends


def test_auto_on_cpu_resolves_to_portable_kernels():
    b = resolve_backends("auto", "auto", "cpu")
    assert (b.attn, b.retention) == ("sdpa", "torch")


def test_explicit_unavailable_backends_raise_with_install_hint():
    with pytest.raises(BackendUnavailable, match=r"pip install 'yoco-eval\[gpu\]'"):
        resolve_backends("auto", "triton", "cpu")
    with pytest.raises(BackendUnavailable, match="use attn_backend=sdpa"):
        resolve_backends("flash_attn", "auto", "cpu")
    with pytest.raises(BackendUnavailable, match="unknown attention backend 'xformers'"):
        resolve_backends("xformers", "auto", "cpu")


@pytest.mark.parametrize("attn", ["torch", "sdpa"])
def test_the_resolved_backend_is_the_one_called(monkeypatch, attn):
    import yoco_eval.model.yoco as yoco_mod
    import yoco_eval.ops.attention as attn_mod

    calls = {"retention": 0, "attn": []}
    real_ret, real_attn = yoco_mod.torch_chunk_retention, attn_mod.attention

    def spy_ret(*a, **k):
        calls["retention"] += 1
        return real_ret(*a, **k)

    def spy_attn(*a, **k):
        calls["attn"].append(k.get("backend"))
        return real_attn(*a, **k)

    monkeypatch.setattr(yoco_mod, "torch_chunk_retention", spy_ret)
    monkeypatch.setattr(yoco_mod, "attention", spy_attn)
    model = init_weights(build_model(get_config("yoco-debug"), attn_backend=attn, retention_backend="torch"))
    with torch.inference_mode():
        model(torch.randint(4, 260, (1, 12)))
    assert calls["retention"] == model.config.n_self_layers
    assert calls["attn"] and set(calls["attn"]) == {attn}
