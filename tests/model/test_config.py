from __future__ import annotations

import json

import pytest
import torch

from yoco_eval.config import CONFIGS, YOCOConfig, get_config, load_config
from yoco_eval.errors import ConfigError
from yoco_eval.model.checkpoint import build_model


def meta_model(name):
    with torch.device("meta"):
        return build_model(get_config(name))


def test_yoco_3b_has_exactly_the_papers_non_embedding_parameters():
    model = meta_model("yoco-3b")
    assert model.num_params(embeddings=False) == 2_829_133_824
    assert model.num_params() == 2_829_133_824 + 2 * 100_288 * 3072  # untied embedding + output projection
    layer = model.self_decoder.layers[0]
    assert sum(p.numel() for p in layer.parameters()) == 122_763_264
    assert sum(p.numel() for p in model.cross_decoder.layers[0].parameters()) == 94_377_984


def test_presets_cover_the_paper():
    for name in ["yoco-3b", "yoco-3b-1m", "transformer-3b", "yoco-debug", "yoco-debug-swa", "transformer-debug"]:
        assert name in CONFIGS
    for size in ["160m", "400m", "830m", "1.4b", "2.7b", "6.8b", "13b"]:
        g, s, t = CONFIGS[f"yoco-{size}"], CONFIGS[f"yoco-{size}-swa"], CONFIGS[f"transformer-{size}"]
        assert g.kind == "gret" and g.self_head_dim == 256 and g.hidden_dim == 3 * g.dim
        assert s.kind == "swa" and s.sliding_window == 1024
        assert t.dim == g.dim and t.n_layers == g.n_layers
    assert CONFIGS["yoco-3b-1m"].rope_theta == 80e6
    t3 = CONFIGS["transformer-3b"]
    assert (t3.n_layers, t3.dim, t3.n_heads, t3.n_kv_heads, t3.hidden_dim) == (26, 3072, 24, 8, 8192)


def test_transformer_3b_kv_cache_is_26x_yoco():
    y, t = meta_model("yoco-3b"), meta_model("transformer-3b")
    with torch.device("meta"):
        cy, ct = y.setup_cache(1, 1024, dtype=torch.bfloat16), t.setup_cache(1, 1024, dtype=torch.bfloat16)
    kv = lambda c: sum(x.k.numel() + x.v.numel() for x in c.kv)  # noqa: E731
    assert kv(ct) == 26 * kv(cy)
    assert kv(cy) * 2 == 4096 * 1024  # 4 KiB per token in bf16


def test_config_validation_names_the_problem():
    with pytest.raises(ConfigError, match="n_layers must be even"):
        YOCOConfig(dim=64, n_layers=3, hidden_dim=64, n_self_heads=4, n_attn_heads=4, n_attn_kv_heads=2, vocab_size=8)
    with pytest.raises(ConfigError, match="not a multiple of n_attn_kv_heads"):
        YOCOConfig(dim=64, n_layers=2, hidden_dim=64, n_self_heads=4, n_attn_heads=4, n_attn_kv_heads=3, vocab_size=8)
    with pytest.raises(ConfigError, match="unknown model preset 'yoco-7b'"):
        get_config("yoco-7b")


def test_reads_official_params_json_and_rejects_unknown_fields(tmp_path):
    d = tmp_path / "ck"
    d.mkdir()
    params = get_config("yoco-debug-swa").to_params_json()
    (d / "params.json").write_text(json.dumps(params))
    cfg = load_config(d)
    assert cfg.sliding_window == 16 and cfg.dim == 64
    (d / "params.json").write_text(json.dumps({**params, "n_heads_typo": 3}))
    with pytest.raises(ConfigError, match="unknown config field.*n_heads_typo"):
        load_config(d)
    (d / "params.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(d)
