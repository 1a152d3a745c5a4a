"""Checkpoint formats round-trip, and every bad checkpoint gets one clear error naming the key and shapes."""

from __future__ import annotations

import json

import pytest
import torch

from yoco_eval.cli import main as cli_main
from yoco_eval.config import get_config
from yoco_eval.errors import CheckpointError
from yoco_eval.model.checkpoint import (
    build_model,
    from_hf_llama,
    init_weights,
    load_model,
    save_model,
    save_official,
    to_hf_llama,
)


def tiny(name="yoco-debug", seed=0):
    return init_weights(build_model(get_config(name)), seed, std=0.1).eval()


@pytest.mark.parametrize("name", ["yoco-debug", "yoco-debug-swa"])
def test_official_format_save_then_strict_load(tmp_path, name):
    model = tiny(name)
    save_official(model, tmp_path / "official")
    assert sorted(p.name for p in (tmp_path / "official").iterdir()) == ["checkpoint.pth", "params.json"]
    # what the official code would load: a plain state dict with the official keys
    sd = torch.load(tmp_path / "official" / "checkpoint.pth", weights_only=True)
    assert "cross_decoder.kv_layer_norm.weight" in sd
    keys = [k for k in sd if k.startswith("self_decoder.layers.0.mixer.")]
    projs = ["q", "k", "v", "g", "gt", "out"] if name == "yoco-debug" else ["q", "k", "v", "out"]
    assert sorted(keys) == sorted(f"self_decoder.layers.0.mixer.{p}_proj.weight" for p in projs)
    loaded = load_model(tmp_path / "official", tokenizer="bytes")
    assert loaded.source == "official"
    ids = torch.randint(4, 260, (1, 20))
    with torch.inference_mode():
        assert torch.equal(loaded.model(ids), model(ids))


@pytest.mark.parametrize("name", ["yoco-debug", "transformer-debug"])
def test_own_format_round_trip(tmp_path, name):
    model = tiny(name)
    save_model(model, tmp_path / "ours")
    loaded = load_model(tmp_path / "ours")
    assert loaded.source == "yoco-eval" and loaded.tokenizer.name == "bytes"
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k


def test_sharded_safetensors(tmp_path):
    from safetensors.torch import save_file

    model = tiny()
    sd = model.state_dict()
    keys = sorted(sd)
    half = len(keys) // 2
    d = tmp_path / "sharded"
    d.mkdir()
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for f, ks in shards.items():
        save_file({k: sd[k].contiguous() for k in ks}, str(d / f))
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: f for f, ks in shards.items() for k in ks}})
    )
    (d / "config.json").write_text(json.dumps(model.config.to_dict()))
    loaded = load_model(d)
    assert torch.equal(loaded.model.embed_tokens.weight, model.embed_tokens.weight)


def test_hf_llama_key_map_round_trip():
    sd = tiny("transformer-debug").state_dict()
    assert from_hf_llama(to_hf_llama(sd)).keys() == sd.keys()
    assert "model.layers.0.mlp.gate_proj.weight" in to_hf_llama(sd)


def _saved(tmp_path, name="yoco-debug"):
    model = tiny(name)
    save_model(model, tmp_path / "ck")
    return tmp_path / "ck", model


def _resave(folder, sd):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))


def test_error_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found: give a checkpoint folder or a preset"):
        load_model(tmp_path / "nope")


def test_error_missing_key(tmp_path):
    folder, model = _saved(tmp_path)
    sd = model.state_dict()
    del sd["cross_decoder.k_proj.weight"]
    _resave(folder, sd)
    with pytest.raises(CheckpointError, match="missing key 'cross_decoder.k_proj.weight'"):
        load_model(folder)


def test_error_unexpected_key(tmp_path):
    folder, model = _saved(tmp_path)
    _resave(folder, {**model.state_dict(), "self_decoder.layers.9.mixer.q_proj.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match="unexpected key 'self_decoder.layers.9.mixer.q_proj.weight'"):
        load_model(folder)


def test_error_shape_mismatch_names_key_and_shapes(tmp_path):
    folder, model = _saved(tmp_path)
    sd = model.state_dict()
    sd["cross_decoder.v_proj.weight"] = torch.zeros(16, 64)
    _resave(folder, sd)
    msg = r"'cross_decoder.v_proj.weight': checkpoint \(16, 64\) vs model \(32, 64\)"
    with pytest.raises(CheckpointError, match=msg):
        load_model(folder)


def test_error_tokenizer_vocab_mismatch(tmp_path):
    folder, _ = _saved(tmp_path)
    with pytest.raises(CheckpointError, match="tokenizer yoco-cl100k has 100288 ids but the model only 264"):
        load_model(folder, tokenizer="yoco-cl100k")


def test_error_truncated_safetensors(tmp_path):
    folder, _ = _saved(tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read safetensors"):
        load_model(folder)


def test_cli_prints_one_line_without_traceback(tmp_path, capsys):
    rc = cli_main(["generate", "--model", str(tmp_path / "missing"), "--prompt", "hi"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err and "not found" in err


@pytest.mark.parametrize("name", ["yoco-debug", "transformer-debug"])
def test_preset_weights_depend_on_the_seed_only(name):
    """A preset is built on the meta device and filled in place a row block at a time on threads: the same weights
    whatever the thread count, bf16 the rounding of fp32, norms at one, matrices normal(0, 0.02); another seed
    gives other weights."""
    from yoco_eval.model.checkpoint import build_preset

    cfg = get_config(name)
    ref = build_preset(cfg, "cpu", torch.float32, seed=3, workers=1).state_dict()
    for dtype, workers in ((torch.float32, 8), (torch.bfloat16, 3)):
        sd = build_preset(cfg, "cpu", dtype, seed=3, workers=workers).state_dict()
        assert sd.keys() == ref.keys()
        for k in ref:
            assert sd[k].dtype == dtype and torch.equal(sd[k], ref[k].to(dtype)), k
    loaded = load_model(name, seed=3, tokenizer="bytes")
    assert loaded.source == "preset"
    assert all(torch.equal(v, ref[k]) for k, v in loaded.model.state_dict().items())
    mats = torch.cat([v.flatten() for v in ref.values() if v.dim() > 1])
    assert abs(mats.mean().item()) < 1e-3 and abs(mats.std().item() - 0.02) < 2e-4
    assert all(torch.equal(v, torch.ones_like(v)) for v in ref.values() if v.dim() == 1)
    with torch.inference_mode():  # as the profiler builds it
        inf = build_preset(cfg, "cpu", torch.float32, seed=3).state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in inf.items())
    other = build_preset(cfg, "cpu", torch.float32, seed=4).state_dict()
    assert not any(torch.equal(other[k], ref[k]) for k in ref if ref[k].dim() > 1)
