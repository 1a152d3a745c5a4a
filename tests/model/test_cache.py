"""Cached inference reproduces the full forward pass (tiny presets of both self-decoder kinds + the baseline).

Tolerance, derived rather than guessed: every fp32 path is compared against the same model run in float64, and
must be within 3x the error of the plain fp32 full forward against that float64 reference (plus 1e-6 for
fp32 rounding of exact zeros). Greedy tokens must be identical.
"""

from __future__ import annotations

import pytest
import torch

from yoco_eval.config import get_config
from yoco_eval.generate import Engine
from yoco_eval.model.checkpoint import build_model, init_weights
from yoco_eval.tokenizer import ByteTokenizer

PRESETS = ["yoco-debug", "yoco-debug-swa", "transformer-debug"]
K = 3.0


def make(name: str, backend: str = "sdpa", seed: int = 0):
    model = init_weights(build_model(get_config(name), attn_backend=backend, retention_backend="torch"), seed, std=0.15)
    return model.eval()


def ref64(model, ids):
    m64 = make(model.config.name, "torch")
    m64.load_state_dict(model.state_dict())
    with torch.inference_mode():
        return m64.double()(ids)


def assert_close_to_ref(got, full32, ref):
    budget = K * (full32.double() - ref).abs().max().item() + 1e-6
    err = (got.double() - ref).abs().max().item()
    assert err <= budget, f"error {err:.3g} > {budget:.3g} (3x the fp32 full-forward error)"


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("backend", ["torch", "sdpa"])
@pytest.mark.parametrize("chunk", [10, 7], ids=["chunk-divides", "chunk-not-divides"])
@torch.inference_mode()
def test_chunked_prefill_and_decode_equal_full_forward(name, backend, chunk):
    torch.manual_seed(1)
    model = make(name, backend)
    ids = torch.randint(4, 260, (2, 60))
    full = model(ids)
    ref = ref64(model, ids)
    cache = model.setup_cache(2, 64)
    got = [model(ids[:, s : min(50, s + chunk)], cache=cache, start_pos=s) for s in range(0, 50, chunk)]
    pos = torch.full((2,), 50)
    for t in range(50, 60):  # token-by-token decode at per-row positions
        got.append(model(ids[:, t : t + 1], cache=cache, start_pos=pos))
        pos = pos + 1
    got = torch.cat(got, 1)
    assert_close_to_ref(got, full, ref)
    assert torch.equal(got.argmax(-1), full.argmax(-1))


@pytest.mark.parametrize("name", ["yoco-debug", "yoco-debug-swa"])
@pytest.mark.parametrize("split_from", [8192, 1], ids=["masked-attention", "split-key-decode"])
@torch.inference_mode()
def test_fp8_cache_reproduces_the_fp8_full_forward(name, split_from, monkeypatch):
    """kv_dtype="fp8" stores the shared K/V as e4m3 with a scale per (token, head). The model it defines is the one
    whose shared keys/values are rounded that way, which its full forward computes too: cached inference must
    reproduce that full forward (the same derived tolerance as above), and must differ from the unrounded model."""
    import yoco_eval.ops.attention as attention_mod

    monkeypatch.setattr(attention_mod, "SPLIT_DECODE_MIN", split_from)  # 1: decode through decode_attention
    torch.manual_seed(9)
    model = make(name)
    ids = torch.randint(4, 260, (2, 60))
    unrounded = model(ids)
    kv_bytes = lambda c: c.kv[0].nbytes()  # noqa: E731
    plain_bytes = kv_bytes(model.setup_cache(2, 64))
    model.set_kv_dtype("fp8")
    full = model(ids)
    m64 = make(name, "torch")
    m64.load_state_dict(model.state_dict())
    m64.set_kv_dtype("fp8")
    ref = m64.double()(ids)
    cache = model.setup_cache(2, 64)
    assert cache.kv[0].k.dtype == torch.float8_e4m3fn and kv_bytes(cache) < 0.6 * plain_bytes
    got = [model(ids[:, s : min(50, s + 7)], cache=cache, start_pos=s) for s in range(0, 50, 7)]
    pos = torch.full((2,), 50)
    for t in range(50, 60):
        got.append(model(ids[:, t : t + 1], cache=cache, start_pos=pos))
        pos = pos + 1
    got = torch.cat(got, 1)
    assert_close_to_ref(got, full, ref)
    assert torch.equal(got.argmax(-1), full.argmax(-1))
    # the rounding is really there: the unrounded model would fail this tolerance (which itself is loose: fp32 and
    # fp64 keys can round to neighbouring fp8 values)
    assert (unrounded.double() - ref).abs().max().item() > K * (full.double() - ref).abs().max().item() + 1e-6


def test_kv_dtype_is_validated_by_the_model():
    from yoco_eval.errors import ConfigError

    model = make("transformer-debug")
    with pytest.raises(ConfigError, match="YOCO's shared cache only"):
        model.set_kv_dtype("fp8")
    with pytest.raises(ConfigError, match="YOCO's shared cache only"):
        build_model(get_config("transformer-debug"), kv_dtype="fp8")
    with pytest.raises(ConfigError, match="unknown kv_dtype 'int4'"):
        make("yoco-debug").set_kv_dtype("int4")
    with pytest.raises(AttributeError):  # read-only: set_kv_dtype is the one way in
        model.kv_dtype = "auto"
    assert model.kv_dtype == "auto" and model.setup_cache(1, 8).kv[0].k.dtype == torch.float32


@pytest.mark.parametrize("name", PRESETS)
@torch.inference_mode()
def test_early_exit_prefill_last_logits_equal_full_forward(name):
    """Prefill with the cross-decoder skipped on every chunk but the last position's."""
    torch.manual_seed(2)
    model = make(name)
    ids = torch.randint(4, 260, (1, 45))
    cache = model.setup_cache(1, 45)
    for s in range(0, 40, 8):
        assert model(ids[:, s : s + 8], cache=cache, start_pos=s, logits_from=0) is None
    last = model(ids[:, 40:], cache=cache, start_pos=40, logits_from=1)
    assert last.shape == (1, 1, model.config.vocab_size)
    full = model(ids)
    assert_close_to_ref(last[:, 0], full[:, -1], ref64(model, ids)[:, -1])


@pytest.mark.parametrize("name", PRESETS)
@torch.inference_mode()
def test_batch_of_unequal_prompts_matches_each_alone(name):
    """Right-padded batch: padding must not leak into retention state, windows or attention."""
    torch.manual_seed(3)
    model = make(name)
    engine = Engine(model, ByteTokenizer(), chunk_size=16, max_length=128)
    lens = [37, 50, 12, 29]
    prompts = [torch.randint(4, 260, (n,)).tolist() for n in lens]
    batched = engine.prefill(prompts, model.setup_cache(len(prompts), 64))
    for i, p in enumerate(prompts):
        ids = torch.tensor([p])
        assert_close_to_ref(batched[i], model(ids)[0, -1], ref64(model, ids)[0, -1])
    gen_b = engine.generate(prompts, max_new_tokens=12)
    for i, p in enumerate(prompts):
        alone = engine.generate([p], max_new_tokens=12)[0]
        assert gen_b[i].tokens == alone.tokens
        # greedy generation == argmax of the full forward over prompt + generated so far
        seq = p + alone.tokens
        full = model(torch.tensor([seq]))[0, len(p) - 1 : -1]
        full[:, [0, 1]] = float("-inf")  # BOS/PAD are never sampled
        assert full.argmax(-1).tolist() == alone.tokens


@pytest.mark.parametrize("path", ["fork", "flat", "auto"])
@pytest.mark.parametrize("name", PRESETS)
@torch.inference_mode()
def test_loglikelihood_with_shared_prefixes_equals_full_forward(name, path, monkeypatch):
    """Both ways of scoring a batch (prefill shared prefixes and fork; one stateless forward) and the engine's own
    choice give the full forward's log-probabilities and greedy flags."""
    torch.manual_seed(4)
    model = make(name)
    engine = Engine(model, ByteTokenizer(), chunk_size=8, max_length=64)
    if path != "auto":
        monkeypatch.setattr(engine, "_flat_wins", lambda batch: path == "flat")
    ctx_a, ctx_b = torch.randint(4, 260, (30,)).tolist(), torch.randint(4, 260, (11,)).tolist()
    reqs = [(ctx_a, [65, 66]), (ctx_a, [67]), (ctx_a, [68, 69, 70]), (ctx_b, [71, 72]), ([5], [80, 81, 82])]
    for bs in (1, 3, 8):
        out = engine.loglikelihood(reqs, batch_size=bs)
        for (ctx, cont), (lp, greedy) in zip(reqs, out):
            seq = torch.tensor([ctx + cont])
            logp = torch.log_softmax(model(seq)[0, len(ctx) - 1 : -1].double(), -1)
            want = logp.gather(-1, torch.tensor(cont)[:, None]).sum().item()
            assert abs(lp - want) < 1e-4
            assert greedy == bool((logp.argmax(-1) == torch.tensor(cont)).all())


@pytest.mark.parametrize("name", PRESETS)
@torch.inference_mode()
def test_score_tokens_one_pass_equals_full_forward(name):
    torch.manual_seed(5)
    model = make(name)
    engine = Engine(model, ByteTokenizer(), chunk_size=16, max_length=128)
    doc = torch.randint(4, 260, (70,)).tolist()
    got = engine.score_tokens(doc, prefix=[0], chunk=16)
    seq = torch.tensor([[0] + doc])
    logp = torch.log_softmax(model(seq)[0, :-1].double(), -1)
    assert abs(got - logp.gather(-1, seq[0, 1:, None]).sum().item()) < 1e-3


@pytest.mark.parametrize("name", PRESETS)
@torch.inference_mode()
def test_fused_projections_compute_the_same_function(name, tmp_path):
    """Inference fusion (one GEMM for q/k/v/g/gt and fc1/gate) changes no key, value or output."""
    from yoco_eval.model.checkpoint import save_model
    from yoco_eval.model.inference import prepare_for_inference

    torch.manual_seed(6)
    model = make(name)
    ids = torch.randint(4, 260, (2, 40))
    before = model(ids)
    sd_before = {k: v.clone() for k, v in model.state_dict().items()}
    assert prepare_for_inference(model) is model
    assert model.state_dict().keys() == sd_before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd_before.items())
    assert any(getattr(m, "_fused", None) is not None for m in model.modules())
    after = model(ids)
    assert_close_to_ref(after, before, ref64(model, ids))
    save_model(model, tmp_path / "m")  # fused views share storage: saving must still work
    model.load_state_dict(sd_before)  # copies into the views: fused weights follow
    assert torch.allclose(model(ids), before, atol=1e-5)


@pytest.mark.parametrize("name", PRESETS)
def test_residual_added_by_the_output_gemm_computes_the_same_function(name, monkeypatch):
    """After prepare_for_inference, at inference each block's output GEMM accumulates into the residual stream in
    place (``add_linear_``: one rounding, no separate add); with autograd on, and in the plain model, the plain
    ``x + f(x)`` path runs. Same function."""
    from yoco_eval.model.inference import prepare_for_inference
    from yoco_eval.model.layers import DecoderLayer

    torch.manual_seed(8)
    model = make(name)
    ids = torch.randint(4, 260, (2, 40))
    calls = []
    addmm_ = torch.Tensor.addmm_
    monkeypatch.setattr(torch.Tensor, "addmm_", lambda self, *a, **k: calls.append(1) or addmm_(self, *a, **k))
    with torch.inference_mode():
        model(ids)
    assert not calls  # the plain model stays plain
    prepare_for_inference(model)
    with torch.enable_grad():
        plain = model(ids)
    assert plain.requires_grad and not calls  # the plain path ran
    with torch.inference_mode():
        fused_out = model(ids)
    n_layers = sum(1 for m in model.modules() if isinstance(m, DecoderLayer))
    assert len(calls) == 2 * n_layers  # the in-place path ran: mixer and feed-forward of every layer
    assert_close_to_ref(fused_out, plain.detach(), ref64(model, ids))


@pytest.mark.parametrize("name", ["yoco-debug", "transformer-debug"])
@torch.inference_mode()
def test_feed_forward_in_row_slices_computes_the_same_function(name, monkeypatch):
    """Inference runs the feed-forward over bounded row slices (a long prefill chunk's activation stays small);
    slices that do and don't divide the rows give the unsliced outputs."""
    import yoco_eval.model.inference as inference_mod

    torch.manual_seed(7)
    model = make(name)
    ids = torch.randint(4, 260, (2, 40))
    before = model(ids)
    inference_mod.prepare_for_inference(model)
    ref = ref64(model, ids)
    for rows in (7, 16):
        monkeypatch.setattr(inference_mod, "FFN_ROWS", rows)
        assert_close_to_ref(model(ids), before, ref)


@pytest.mark.parametrize("name", PRESETS)
@torch.inference_mode()
def test_prefix_reuse_gives_the_same_logits_and_tokens(name):
    """A needle sweep's depths over one haystack, deepest needle first: each prompt continues from a saved state
    inside the prefix it shares with the one before. Saved points are chunk-aligned, so the chunks that run are the
    ones a full prefill runs: logits must be bitwise equal, and the shared tokens are not prefilled again."""
    from yoco_eval.generate import PrefixCache

    torch.manual_seed(4)
    model = make(name)
    engine = Engine(model, ByteTokenizer(), chunk_size=8, max_length=256)
    hay = torch.randint(4, 260, (180,)).tolist()
    needle = [3, 3, 3, 3, 3]
    prompts = [hay[:at] + needle + hay[at : 180 - len(needle)] for at in (170, 120, 77, 31, 0)]
    prefix = PrefixCache(max_states=4)
    for i, p in enumerate(prompts):
        plain_logits = engine.prefill([p], model.setup_cache(1, 200))
        reuse_cache = prefix.cache_for(model, 200)
        assert torch.equal(prefix.prefill(engine, p, reuse_cache), plain_logits), f"prompt {i}"
        assert (
            engine.generate([p], max_new_tokens=6, prefix=prefix)[0].tokens
            == engine.generate([p], max_new_tokens=6)[0].tokens
        )
    # states every 48 tokens (180 tokens, at most 4 states, chunk 8). Each prompt is seen twice, by prefill() and
    # then by generate(): the repeat resumes at 144; the first sight resumes at the last state before the needle
    # of the prompt before (120 -> 96, 77 -> 48, 31 and 0 -> nothing)
    assert prefix.tokens_reused == 5 * 144 + 96 + 48
    assert prefix.tokens_prefilled + prefix.tokens_reused == 2 * 5 * 180
    # someone else writing into the cache invalidates the saved states: the next prompt starts from scratch
    engine.prefill([hay], prefix._cache)
    before = prefix.tokens_reused
    again = prefix.prefill(engine, prompts[0], prefix._cache)
    assert torch.equal(again, engine.prefill([prompts[0]], model.setup_cache(1, 200)))
    assert prefix.tokens_reused == before


@torch.inference_mode()
def test_prefix_reuse_never_pins_a_second_cache(monkeypatch):
    """The prefix keeps the cache it prefilled into only by weak reference (a CUDA-graph decoder's cache belongs to
    the engine, which drops it when the next haystack needs another size), and cache_for() lets its own cache go
    before it makes a bigger one: two full K/V caches never coexist (at 1M tokens that is +3.9 GiB)."""
    import gc
    import weakref

    from yoco_eval.generate import PrefixCache

    torch.manual_seed(5)
    model = make("yoco-debug")
    engine = Engine(model, ByteTokenizer(), chunk_size=8, max_length=256)
    hay = torch.randint(4, 260, (120,)).tolist()
    prefix = PrefixCache(max_states=4)
    outside = model.setup_cache(1, 130)  # made and owned by someone else
    first = prefix.prefill(engine, hay, outside)
    dead = weakref.ref(outside)
    del outside
    gc.collect()
    assert dead() is None and prefix._cache is None
    again = prefix.prefill(engine, hay, prefix.cache_for(model, 130))  # starts from scratch, same logits
    assert torch.equal(again, first) and prefix.tokens_reused == 0
    old = weakref.ref(prefix._cache)
    seen = []
    make_cache = model.setup_cache

    def watched(*a, **k):
        gc.collect()
        seen.append(old())
        return make_cache(*a, **k)

    monkeypatch.setattr(model, "setup_cache", watched)
    assert prefix.cache_for(model, 100) is old()  # big enough: kept
    bigger = prefix.cache_for(model, 200)
    assert seen == [None] and bigger.max_seq_len >= 200  # the old one was gone before the new one was made


def test_engine_kv_dtype_option_reaches_the_cache():
    from yoco_eval.errors import YocoEvalError
    from yoco_eval.generate import Engine

    eng = Engine.load("yoco-debug", kv_dtype="fp8")
    assert eng.model.setup_cache(1, 8).kv[0].k.dtype == torch.float8_e4m3fn
    (out,) = eng.generate([[5, 6, 7, 8]], max_new_tokens=3, ignore_eos=True)
    assert len(out.tokens) == 3
    with pytest.raises(YocoEvalError, match="is for YOCO checkpoints"):
        Engine.load("transformer-debug", kv_dtype="fp8")
    with pytest.raises(YocoEvalError, match="unknown kv_dtype 'int4'"):
        Engine.load("yoco-debug", kv_dtype="int4")


@torch.inference_mode()
def test_fp8_cache_loglikelihood_equals_the_fp8_full_forward():
    """lm-eval scoring prefills shared prefixes once and forks cache rows (a gather and a scatter of the fp8 bytes
    and scales). Each score must equal the fp8 model's full-forward log-probability, and a fork must keep the
    scales' head-major layout."""
    from yoco_eval.generate import Engine
    from yoco_eval.model.cache import new_kv

    reqs = [([5, 6, 7, 8, 9], [10, 11]), ([5, 6, 7, 8, 9], [12]), ([7], [13, 14]), ([3, 4], [15])]
    eng = Engine.load("yoco-debug", kv_dtype="fp8")
    got = eng.loglikelihood(reqs, batch_size=4)
    for (ctx, cont), (score, _) in zip(reqs, got, strict=True):
        ids = torch.tensor([ctx + cont[:-1]])
        logp = eng.model(ids)[0, -len(cont) :].float().log_softmax(-1)
        want = logp[torch.arange(len(cont)), torch.tensor(cont)].sum().item()
        assert abs(score - want) < 1e-4, (ctx, cont, score, want)
    c = new_kv(3, 16, 2, 8, "cpu", torch.float32, "fp8")
    c.k.view(torch.uint8).random_(0, 120)
    c.v.view(torch.uint8).random_(0, 120)
    c.k_scale.uniform_()
    sub = c.select_rows(torch.tensor([2, 0]))
    assert sub.k_scale.stride() == sub.v_scale.stride() and sub.k_scale.stride(1) == 1  # head-major kept
    assert sub.v.stride() == c.v.stride()  # fp8.value_zeros's layout, padding included
    assert torch.equal(sub.k.view(torch.uint8), c.k.view(torch.uint8)[[2, 0]])
    assert torch.equal(sub.v.view(torch.uint8), c.v.view(torch.uint8)[[2, 0]])
    assert torch.equal(sub.k_scale, c.k_scale[[2, 0]])
    c.put_rows(torch.tensor([1]), c.select_rows(torch.tensor([0])))
    assert torch.equal(c.k.view(torch.uint8)[1], c.k.view(torch.uint8)[0]) and torch.equal(c.v_scale[1], c.v_scale[0])


@torch.inference_mode()
def test_the_engine_prepares_the_model_it_is_given():
    """The Engine rewrites an eval-mode model for inference, in place and visibly (the documented contract); a
    training model is left plain. Outputs are the plain model's within the derived tolerance."""
    from yoco_eval.model.inference import InferenceDecoderLayer
    from yoco_eval.model.layers import DecoderLayer

    torch.manual_seed(10)
    model = make("yoco-debug")
    ids = torch.randint(4, 260, (1, 30))
    plain = model(ids)
    assert not any(isinstance(m, InferenceDecoderLayer) for m in model.modules())
    engine = Engine(model, ByteTokenizer(), chunk_size=8, max_length=64)
    assert engine.model is model
    layers = [m for m in model.modules() if isinstance(m, DecoderLayer)]
    assert layers and all(isinstance(m, InferenceDecoderLayer) for m in layers)
    assert_close_to_ref(model(ids), plain, ref64(model, ids))
    trained = make("yoco-debug").train()
    Engine(trained, ByteTokenizer(), chunk_size=8, max_length=64)
    assert not any(isinstance(m, InferenceDecoderLayer) for m in trained.modules())


def test_decode_graphs_of_other_sizes_stay_within_the_byte_budget(monkeypatch):
    """The Engine keeps captured decode graphs of several sizes (lm-eval alternates a full and a last, smaller
    batch) while their caches hold at most GRAPH_KEEP_BYTES together, dropping the oldest first; lengths share
    buckets (powers of two from 256 to 4096, then multiples of 4096)."""
    import yoco_eval.generate as gen

    alive = []  # the graphs still held while each new one is built

    class FakeGraph:  # a GraphDecoder's interface, with a cache of batch x max_len bytes
        made = 0

        def __init__(self, model, batch, max_len, device, banned=None):
            FakeGraph.made += 1
            alive.append(set(engine._graphs))
            self.cache = type("C", (), {"nbytes": lambda s, n=batch * max_len: n, "reset": lambda s: None})()

    monkeypatch.setattr(gen, "GraphDecoder", FakeGraph)
    monkeypatch.setattr(gen, "GRAPH_KEEP_BYTES", 3 * 1024)
    engine = Engine(make("yoco-debug"), ByteTokenizer(), max_length=64)
    monkeypatch.setattr(engine, "_cache_nbytes", lambda b, n: b * n)
    a, b = engine.graph_decoder(2, 1000), engine.graph_decoder(1, 600)  # 2 x 1024 + 1 x 1024 bytes: both kept
    assert engine.graph_decoder(2, 900) is a and engine.graph_decoder(1, 1000) is b and FakeGraph.made == 2
    assert list(engine._graphs) == [(2, 1024), (1, 1024)]
    c = engine.graph_decoder(2, 5000)  # 2 x 8192 bytes alone are over the budget: every other graph goes first
    assert list(engine._graphs.items()) == [((2, 8192), c)] and alive[-1] == set()  # room made before building
    assert engine.graph_decoder(1, 10) is not b and FakeGraph.made == 4 and list(engine._graphs) == [(1, 256)]
    # the real size estimate: the model's own cache on the meta device, as large as the one GraphDecoder builds
    monkeypatch.undo()
    model = make("yoco-debug")
    assert Engine(model, ByteTokenizer())._cache_nbytes(2, 300) == model.setup_cache(2, 300).nbytes()
