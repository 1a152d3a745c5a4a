"""Phi4Flash (SambaY) on CPU: the golden reference outputs, cache-once inference against the full forward, the
selective-scan twins, and the strict loader's errors.

Tolerance: max |dlogit| <= 1e-4 everywhere (tests/fixtures/phi4flash/README.md: correct fp32 implementations
differ by <= 3.4e-5, the smallest single-detail mistake moves logits by ~1e-3)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from yoco_eval import settings
from yoco_eval.errors import CheckpointError, ConfigError
from yoco_eval.model.phi4flash import Phi4Flash
from yoco_eval.model.phi4flash_config import PHI4FLASH_CONFIGS, Phi4FlashConfig
from yoco_eval.model.phi4flash_load import (
    Phi4FlashTokenizer,
    build_phi4flash_preset,
    is_phi4flash_folder,
    load_phi4flash,
    load_phi4flash_model,
)
from yoco_eval.ops.selective_scan import causal_conv1d, chunk_selective_scan, naive_selective_scan, selective_scan

from ..conftest import FIXTURES

GOLDEN = FIXTURES / "phi4flash"
CONFIGS = ["tiny-h8kv4", "tiny-w32"]
TOL = 1e-4


@pytest.fixture(scope="module", params=CONFIGS)
def golden(request):
    d = GOLDEN / request.param
    model = load_phi4flash_model(d)  # the strict loader, on the folder as shipped
    ids = torch.load(d / "inputs.pt", weights_only=True)
    with torch.no_grad():
        full = model(ids)  # our own full forward: the rule cached inference must reproduce
    return {
        "name": request.param, "model": model, "ids": ids, "full": full,
        "logits": torch.load(d / "full_logits.pt", weights_only=True),
        "hidden": torch.load(d / "hidden_states.pt", weights_only=True),
    }  # fmt: skip


def maxdiff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


# --- the reference outputs --------------------------------------------------------------------------------------


def test_full_forward_matches_golden(golden):
    model = golden["model"]
    hidden = []
    hooks = [
        layer.register_forward_hook(lambda m, a, out: hidden.append(out[0].clone())) for layer in model.model.layers
    ]
    try:
        with torch.no_grad():
            logits = model(golden["ids"])
    finally:
        for h in hooks:
            h.remove()
    assert maxdiff(logits, golden["logits"]) <= TOL
    assert len(hidden) == len(golden["hidden"]) == model.config.num_hidden_layers
    for i, (ours, ref) in enumerate(zip(hidden, golden["hidden"], strict=True)):
        assert maxdiff(ours, ref) <= TOL, f"layer {i}"


def test_chunked_scan_forward_matches_golden(golden):
    """The chunked selective scan inside the model reproduces the reference too (the GPU path's twin)."""
    model = golden["model"]
    model.scan_impl = "chunk"
    try:
        with torch.no_grad():
            logits = model(golden["ids"][:1, :80])
    finally:
        model.scan_impl = "auto"
    assert maxdiff(logits, golden["logits"][:1, :80]) <= TOL


# --- cache-once inference == full forward -----------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [7, 20, 50])  # 7 divides nothing; 20 and 50 divide 200; all cross the window
def test_chunked_prefill_then_decode(golden, chunk):
    model, ids, full = golden["model"], golden["ids"], golden["full"]
    T, n_prefill = ids.shape[1], 170
    cache = model.setup_cache(2, T)
    outs = []
    with torch.no_grad():
        for s in range(0, n_prefill, chunk):
            e = min(s + chunk, n_prefill)
            outs.append(model(ids[:, s:e], cache=cache, start_pos=s))
        for p in range(n_prefill, T):  # token by token, per-row positions like the engine's decode
            outs.append(model(ids[:, p : p + 1], cache=cache, start_pos=torch.full((2,), p)))
    got = torch.cat(outs, 1)
    assert maxdiff(got, full) <= TOL
    assert maxdiff(got, golden["logits"]) <= TOL
    assert cache.seen == T and cache.lengths.tolist() == [T, T]


def test_cache_exact_in_fp64():
    """In fp64 the cache-once path equals the full forward to rounding (1e-9): a sharper check of the cache
    bookkeeping than the fp32 tolerance; the fp64 model is also within the reference tolerance."""
    d = GOLDEN / "tiny-h8kv4"
    model = load_phi4flash_model(d, dtype=torch.float64)
    ids = torch.load(d / "inputs.pt", weights_only=True)
    cache = model.setup_cache(2, 200)
    with torch.no_grad():
        full = model(ids)
        outs = [model(ids[:, s : min(s + 23, 170)], cache=cache, start_pos=s) for s in range(0, 170, 23)]
        outs += [model(ids[:, p : p + 1], cache=cache, start_pos=torch.full((2,), p)) for p in range(170, 200)]
    assert full.dtype == torch.float64 and cache.mamba[0].ssm.dtype == torch.float64
    assert maxdiff(torch.cat(outs, 1), full) <= 1e-9
    assert maxdiff(full, torch.load(d / "full_logits.pt", weights_only=True)) <= TOL


def test_banded_window_prefill(golden, monkeypatch):
    """Sliding-window layers over long inputs attend block by block (block = window here): same logits, with
    and without a cache, padded rows included."""
    import yoco_eval.model.phi4flash as phi4flash

    monkeypatch.setattr(phi4flash, "_SWA_BLOCK", 1)
    model, ids, full = golden["model"], golden["ids"], golden["full"]
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[1, 150:] = False
    cache = model.setup_cache(2, 200)
    with torch.no_grad():
        stateless = model(ids, valid=valid)
        chunks = [model(ids[:, s : s + 90], cache=cache, start_pos=s, valid=valid[:, s : s + 90]) for s in (0, 90)]
    assert maxdiff(stateless[0], full[0]) <= TOL and maxdiff(stateless[1, :150], full[1, :150]) <= TOL
    got = torch.cat(chunks, 1)
    assert maxdiff(got[0], full[0, :180]) <= TOL and maxdiff(got[1, :150], full[1, :150]) <= TOL


def test_early_exit_prefill(golden):
    """logits_from=0 skips everything after the shared K/V; the last token's logits still equal the full forward's."""
    model, ids, full = golden["model"], golden["ids"], golden["full"]
    cache = model.setup_cache(2, 200)
    with torch.no_grad():
        assert model(ids[:, :64], cache=cache, start_pos=0, logits_from=0) is None
        assert model(ids[:, 64:150], cache=cache, start_pos=64, logits_from=0) is None
        last = model(ids[:, 150:], cache=cache, start_pos=150, logits_from=1)
    assert last.shape == (2, 1, model.config.vocab_size)
    assert maxdiff(last[:, 0], full[:, -1]) <= TOL
    # stateless, and with an index of positions per row
    idx = torch.tensor([[3, 40, 199], [0, 120, 150]])
    with torch.no_grad():
        picked = model(ids, logits_from=idx)
        last1 = model(ids, logits_from=1)
    assert maxdiff(picked, full.gather(1, idx[..., None].expand(-1, -1, full.shape[-1]))) <= TOL
    assert maxdiff(last1[:, 0], full[:, -1]) <= TOL


def test_early_exit_runs_late_layers_only_where_asked(golden):
    model, ids = golden["model"], golden["ids"]
    kv_i, seen = model.config.kv_layer, {}
    record = lambda i: lambda m, a, out: seen.setdefault(i, []).append(out.shape[1])  # noqa: E731
    hooks = [layer.register_forward_hook(record(i)) for i, layer in enumerate(model.model.layers)]
    try:
        with torch.no_grad():
            model(ids[:, :50], logits_from=0)
            model(ids[:, :50], logits_from=3)
    finally:
        for h in hooks:
            h.remove()
    assert all(seen[i] == [50, 50] for i in range(kv_i))  # layers up to n/2 run over every token, every time
    assert all(seen[i] == [3] for i in range(kv_i, model.config.num_hidden_layers))  # the rest: only where asked


def test_unequal_lengths_right_padding(golden):
    """Row 1 holds 137 real tokens, right-padded: prefill in chunks with ``valid``, then per-row decode."""
    model, ids, full = golden["model"], golden["ids"], golden["full"]
    n = torch.tensor([160, 137])
    cache = model.setup_cache(2, 200)
    prompt = 150
    lens = n.clamp(max=prompt)
    pos = torch.arange(prompt)
    valid = pos[None] < lens[:, None]
    tokens = torch.where(valid, ids[:, :prompt], 0)
    with torch.no_grad():
        for s in range(0, prompt, 64):
            model(tokens[:, s : s + 64], cache=cache, start_pos=s, valid=valid[:, s : s + 64], logits_from=0)
        assert cache.lengths.tolist() == lens.tolist()
        last = model(tokens, logits_from=(lens - 1)[:, None], valid=valid)  # stateless, padded, gathered
        p = cache.lengths.clone()
        cache.static = True  # decode as under CUDA-graph replay: whole buffer, masked, no host bookkeeping
        steps = []
        for _ in range(12):  # decode: each row continues its own sequence from its own length
            steps.append(model(ids.gather(1, p[:, None]), cache=cache, start_pos=p.clone()))
            p += 1
    got = torch.cat(steps, 1)
    for b in range(2):
        L = int(lens[b])
        assert maxdiff(last[b, 0], full[b, L - 1]) <= TOL
        assert maxdiff(got[b], full[b, L : L + 12]) <= TOL


def test_cache_state_rewind_and_fork(golden):
    model, ids, full = golden["model"], golden["ids"], golden["full"]
    cache = model.setup_cache(2, 200)
    with torch.no_grad():
        model(ids[:, :100], cache=cache, start_pos=0, logits_from=0)
        state = cache.save_state()
        model(ids[:, 100:140], cache=cache, start_pos=100, logits_from=0)
        cache.load_state(state)
        again = model(ids[:, 100:120], cache=cache, start_pos=100)
        fork = cache.select_rows(torch.tensor([1]))
        row1 = model(ids[1:, 120:125], cache=fork, start_pos=120)
    assert maxdiff(again, full[:, 100:120]) <= TOL
    assert maxdiff(row1, full[1:, 120:125]) <= TOL
    assert state.nbytes() > 0 and cache.nbytes() > state.nbytes()
    cache.reset()
    assert cache.seen == 0 and int(cache.lengths.sum()) == 0


def test_only_one_growing_cache():
    cfg = PHI4FLASH_CONFIGS["phi4-mini-flash"]
    with torch.device("meta"):
        model = Phi4Flash(cfg)
        small, big = model.setup_cache(1, 1024, dtype=torch.bfloat16), model.setup_cache(1, 2048, dtype=torch.bfloat16)
    assert len(big.kv) == 1 and len(big.mamba) == 9 and len(big.windows) == 8
    assert big.nbytes() - small.nbytes() == 1024 * 5120  # 2 x 20 heads x 64 x 2 bytes per token: layer 17's K/V


# --- the ops' twins ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T,chunk", [(1, 16), (37, 16), (64, 8), (50, 64)])
def test_selective_scan_twins(T, chunk):
    g = torch.Generator().manual_seed(T)
    B, Di, N = 2, 6, 5
    x, C, Bm = torch.randn(B, T, Di, generator=g), torch.randn(B, T, N, generator=g), torch.randn(B, T, N, generator=g)
    dt = F.softplus(torch.randn(B, T, Di, generator=g))
    A, D = -torch.rand(Di, N, generator=g) * 2, torch.randn(Di, generator=g)
    s0 = torch.randn(B, Di, N, generator=g)
    args = [t.double() for t in (x, dt, A, Bm, C, D)]
    y1, s1 = naive_selective_scan(*args, state=s0.double())
    y2, s2 = chunk_selective_scan(*args, state=s0.double(), chunk=chunk)
    # closed form for the last token: s_T = prod(decay) s_0 + sum_s exp(A (S_T - S_s)) dt_s x_s B_s
    S = torch.cumsum(args[1], 1)  # [B, T, Di]
    w = torch.exp(args[2] * (S[:, -1:, :, None] - S[..., None]))  # [B, T, Di, N]
    sT = torch.exp(args[2] * S[:, -1, :, None]) * s0.double() + (
        w * (args[1] * args[0])[..., None] * args[3][:, :, None]
    ).sum(1)
    assert maxdiff(y1, y2) < 1e-10 and maxdiff(s1, s2) < 1e-10
    assert maxdiff(s1, sT) < 1e-10
    # split in two calls through the state == one call
    ya, sa = naive_selective_scan(*[a[:, : T // 2] if a.dim() == 3 else a for a in args], state=s0.double())
    yb, sb = naive_selective_scan(*[a[:, T // 2 :] if a.dim() == 3 else a for a in args], state=sa)
    assert maxdiff(torch.cat([ya, yb], 1), y1) < 1e-10 and maxdiff(sb, s1) < 1e-10


def test_selective_scan_dispatch_on_cpu():
    """Unknown implementations are refused; on the CPU (no Triton interpreter) "auto" is the sequential scan,
    bit for bit, and "triton" says it cannot run (the interpreter cases cover the kernel itself)."""
    if settings.get().triton_interpret:
        pytest.skip("TRITON_INTERPRET=1: 'auto' runs the kernel (tests/ops/interpret_cases.py checks that)")
    g = torch.Generator().manual_seed(5)
    B, T, Di, N = 2, 9, 6, 4
    args = (torch.randn(B, T, Di, generator=g), F.softplus(torch.randn(B, T, Di, generator=g)),
            -torch.rand(Di, N, generator=g) - 0.1, torch.randn(B, T, N, generator=g), torch.randn(B, T, N, generator=g),
            torch.randn(Di, generator=g))  # fmt: skip
    s0 = torch.randn(B, Di, N, generator=g)
    with pytest.raises(ValueError, match="unknown selective-scan implementation 'fast'"):
        selective_scan(*args, s0, impl="fast")
    y, s = selective_scan(*args, s0)
    y_ref, s_ref = naive_selective_scan(*args, s0)
    assert torch.equal(y, y_ref) and torch.equal(s, s_ref)
    y, s = selective_scan(*args, s0, impl="chunk", chunk=4)
    y_ref, s_ref = chunk_selective_scan(*args, s0, chunk=4)
    assert torch.equal(y, y_ref) and torch.equal(s, s_ref)
    with pytest.raises(ValueError, match="impl='triton' cannot run here"):
        selective_scan(*args, s0, impl="triton")
    y64, _ = selective_scan(*(a.double() for a in args), s0.double(), impl="triton")  # fp64: the PyTorch path
    assert torch.equal(y64, naive_selective_scan(*(a.double() for a in args), s0.double())[0])


def test_causal_conv_matches_torch_conv_and_carries_its_tail():
    g = torch.Generator().manual_seed(1)
    B, T, C, K = 2, 11, 5, 4
    x, w, b = torch.randn(B, T, C, generator=g), torch.randn(C, 1, K, generator=g), torch.randn(C, generator=g)
    ref = F.conv1d(x.transpose(1, 2), w, b, padding=K - 1, groups=C)[..., :T].transpose(1, 2)
    out, _ = causal_conv1d(x, w[:, 0], b)
    assert maxdiff(out, ref) < 1e-5
    o1, tail = causal_conv1d(x[:, :6], w[:, 0], b)
    o2, _ = causal_conv1d(x[:, 6:], w[:, 0], b, tail)
    assert maxdiff(torch.cat([o1, o2], 1), ref) < 1e-5
    _, t_pad = causal_conv1d(x[:, 6:], w[:, 0], b, tail, n_valid=torch.tensor([2, 0]))  # row 1: nothing real
    assert torch.equal(t_pad[0], torch.cat([x[0, 5:6], x[0, 6:8]])) and torch.equal(t_pad[1], tail[1])


# --- config and loader ------------------------------------------------------------------------------------------


def test_presets_and_layer_map():
    cfg = PHI4FLASH_CONFIGS["phi4-mini-flash"]
    kinds = [cfg.layer_kind(i) for i in range(32)]
    assert kinds[:4] == ["mamba", "swa", "mamba", "swa"] and kinds[15] == "swa"
    assert kinds[16:20] == ["memory", "full", "gmu", "cross"] and kinds[31] == "cross"
    assert (cfg.head_dim, cfg.dt_rank, cfg.d_inner) == (64, 160, 5120)
    with torch.device("meta"):
        n = Phi4Flash(cfg).num_params()
    assert 3.7e9 < n < 3.95e9  # the card's 3.8B
    tiny = Phi4FlashConfig.from_name("phi4flash-tiny")
    assert Phi4FlashConfig.from_hf(tiny.to_hf()).to_hf() == tiny.to_hf()
    assert is_phi4flash_folder(GOLDEN / "tiny-w32") and not is_phi4flash_folder(GOLDEN)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"model_type": "phi3"}, "model_type"),
        ({"num_hidden_layers": 6}, "multiple of 4"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"num_key_value_heads": 3}, "differential"),
    ],
)
def test_config_errors(change, match):
    d = json.loads((GOLDEN / "tiny-w32" / "config.json").read_text())
    with pytest.raises(ConfigError, match=match):
        Phi4FlashConfig.from_hf({**d, **change})


def _folder_with(tmp_path, edit_sd=None, edit_cfg=None):
    from safetensors.torch import load_file, save_file

    dst = tmp_path / "ckpt"
    shutil.copytree(GOLDEN / "tiny-h8kv4", dst)
    if edit_sd is not None:
        sd = load_file(str(dst / "model.safetensors"))
        edit_sd(sd)
        save_file(sd, str(dst / "model.safetensors"))
    if edit_cfg is not None:
        d = json.loads((dst / "config.json").read_text())
        edit_cfg(d)
        (dst / "config.json").write_text(json.dumps(d))
    return dst


def _wrong_shape(sd):
    sd["model.layers.3.attn.out_proj.bias"] = torch.zeros(7)


@pytest.mark.parametrize(
    "edit_sd,edit_cfg,match",
    [
        (lambda sd: sd.pop("model.layers.2.attn.A_log"), None, r"missing key 'model\.layers\.2\.attn\.A_log'"),
        (
            lambda sd: sd.update({"lm_head.weight": sd["model.embed_tokens.weight"].clone()}),
            None,
            "unexpected key 'lm_head",
        ),
        (_wrong_shape, None, r"shape mismatch for 'model\.layers\.3\.attn\.out_proj\.bias'"),
        (None, lambda d: d.update(vocab_size=1024), "vocab mismatch"),
    ],
    ids=["missing", "unexpected", "shape", "vocab"],
)
def test_strict_load_errors(tmp_path, edit_sd, edit_cfg, match):
    folder = _folder_with(tmp_path, edit_sd, edit_cfg)
    with pytest.raises(CheckpointError, match=match) as e:
        load_phi4flash_model(folder)
    assert "\n" not in str(e.value)


def _write_tokenizer(folder, n_words: int):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, **{f"w{i}": i + 1 for i in range(n_words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|user|>", "<|assistant|>", "<|end|>"])
    tok.save(str(folder / "tokenizer.json"))


def test_tokenizer_chat_template_and_stop_ids(tmp_path):
    folder = _folder_with(tmp_path)
    _write_tokenizer(folder, 100)
    loaded = load_phi4flash(folder)
    tok = loaded.tokenizer
    prompt = tok.chat_prompt([{"role": "user", "content": "w3 w4"}])
    assert prompt == "<|user|>w3 w4<|end|><|assistant|>"
    ids = tok.encode(prompt)
    end = ids[3]
    assert len(ids) == 5 and end in tok.stop_ids and tok.eos_id in tok.stop_ids
    assert tok.decode(ids) == "w3 w4"
    with pytest.raises(ConfigError, match="role"):
        tok.chat_prompt([{"role": "tool", "content": "x"}])
    _write_tokenizer(folder, 600)  # more ids than the model's 512 embeddings
    with pytest.raises(CheckpointError, match="vocab mismatch"):
        load_phi4flash(folder)
    assert isinstance(Phi4FlashTokenizer.chat_prompt([]), str)


def test_sharded_folder_loads_and_missing_shard_is_one_error(tmp_path):
    from safetensors.torch import load_file, save_file

    dst = _folder_with(tmp_path)
    sd = load_file(str(dst / "model.safetensors"))
    (dst / "model.safetensors").unlink()
    keys = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}  # fmt: skip
    for f, ks in shards.items():
        save_file({k: sd[k] for k in ks}, str(dst / f))
    index = {"weight_map": {k: f for f, ks in shards.items() for k in ks}}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index))
    model = load_phi4flash_model(dst)
    ids = torch.load(dst / "inputs.pt", weights_only=True)[:, :40]
    with torch.no_grad():
        assert maxdiff(model(ids), torch.load(dst / "full_logits.pt", weights_only=True)[:, :40]) <= TOL
    (dst / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="shard model-00002-of-00002.safetensors"):
        load_phi4flash_model(dst)
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        Phi4FlashTokenizer(dst, model.config)


def test_random_weight_preset():
    a, b = build_phi4flash_preset("phi4flash-tiny", seed=1), build_phi4flash_preset("phi4flash-tiny", seed=1)
    c = build_phi4flash_preset("phi4flash-tiny", seed=2, dtype=torch.bfloat16)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.embed_tokens.weight, c.embed_tokens.weight.float())
    assert c.embed_tokens.weight.dtype == torch.bfloat16
    mamba = a.model.layers[0].attn
    assert torch.equal(mamba.A_log[3], torch.log(torch.arange(1.0, 17.0)))
    dt = F.softplus(mamba.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    ids = torch.randint(0, 512, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.isfinite(a(ids)).all() and torch.isfinite(c(ids)).all()
