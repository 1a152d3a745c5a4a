"""Backends are resolved once, by name; explicit unavailable choices raise with a hint; retired names say what
replaced them; the resolved kernel is the one actually called."""

from __future__ import annotations

import pytest
import torch

from yoco_eval.config import get_config
from yoco_eval.errors import BackendUnavailable
from yoco_eval.model.checkpoint import build_model, init_weights
from yoco_eval.ops import resolve_backends


def test_auto_on_cpu_resolves_to_portable_kernels():
    b = resolve_backends("auto", "auto", "cpu")
    assert (b.attn, b.retention, b.decode) == ("sdpa", "torch", "sdpa")
    assert resolve_backends("torch", "auto", "cpu").decode == "torch"  # decode follows attention off the GPU


def test_explicit_unavailable_backends_raise_with_install_hint():
    with pytest.raises(BackendUnavailable, match=r"'fla' needs a CUDA device.*pip install 'yoco-eval\[gpu\]'"):
        resolve_backends("auto", "fla", "cpu")
    with pytest.raises(BackendUnavailable, match="unknown attention backend 'xformers'"):
        resolve_backends("xformers", "auto", "cpu")
    with pytest.raises(BackendUnavailable, match="unknown decode backend 'flash'"):
        resolve_backends("auto", "auto", "cpu", decode="flash")


@pytest.mark.parametrize("attn,retention,says", [
    ("flash_attn", "auto", "use attn_backend=sdpa"),
    ("auto", "triton", "now called 'fla'"),
])  # fmt: skip
def test_retired_backend_names_raise_naming_the_new_one(attn, retention, says):
    with pytest.raises(BackendUnavailable, match=says):
        resolve_backends(attn, retention, "cpu")
    with pytest.raises(BackendUnavailable, match=says):  # the constructor checks before any weight is made
        build_model(get_config("yoco-debug"), attn_backend=attn, retention_backend=retention)


@pytest.mark.parametrize("attn", ["torch", "sdpa"])
def test_the_resolved_backend_is_the_one_called(monkeypatch, attn):
    import yoco_eval.ops.attention as attn_mod
    import yoco_eval.ops.retention as ret_mod

    calls = {"retention": 0, "attn": [], "decode": []}
    real_ret, real_attn, real_dec = ret_mod.torch_chunk_retention, attn_mod.attention, attn_mod.decode_attention

    def spy_ret(*a, **k):
        calls["retention"] += 1
        return real_ret(*a, **k)

    def spy_attn(*a, **k):
        calls["attn"].append(k.get("backend"))
        return real_attn(*a, **k)

    def spy_dec(*a, **k):
        calls["decode"].append(k.get("backend"))
        return real_dec(*a, **k)

    monkeypatch.setattr(ret_mod, "torch_chunk_retention", spy_ret)
    monkeypatch.setattr(attn_mod, "attention", spy_attn)
    monkeypatch.setattr(attn_mod, "decode_attention", spy_dec)
    monkeypatch.setattr(attn_mod, "SPLIT_DECODE_MIN", 1)  # the decode step below goes to split-key decode
    model = init_weights(build_model(get_config("yoco-debug"), attn_backend=attn, retention_backend="torch"))
    with torch.inference_mode():
        cache = model.setup_cache(1, 16)
        model(torch.randint(4, 260, (1, 12)), cache=cache, start_pos=0, logits_from=0)
        model(torch.randint(4, 260, (1, 1)), cache=cache, start_pos=torch.tensor([12]))
    assert calls["retention"] == model.config.n_self_layers
    assert model.backends == resolve_backends(attn, "torch", "cpu")
    assert calls["decode"] and set(calls["decode"]) == {model.backends.decode}
    calls["attn"].clear()
    with torch.inference_mode():
        model(torch.randint(4, 260, (1, 12)))
    assert calls["attn"] and set(calls["attn"]) == {model.backends.attn}
