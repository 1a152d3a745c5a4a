"""Phi4Flash through the Engine, on the golden ``tiny-h8kv4`` weights: every cached path (chunked prefill with early
exit, batched decode of unequal lengths, loglikelihood with forked prefixes, rolling scoring, prefix reuse, static
shapes) against the plain full forward.

Rules (as tests/model/test_cache.py): greedy tokens exactly; logits within TOL = 1e-4 (the golden tolerance: fp32
implementations of this model differ by <= 3.4e-5); a log-probability is a log-softmax of logits each within TOL,
so it moves by at most 2 * TOL per token, and a sum over n tokens by 2 * n * TOL."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from yoco_eval.generate import Engine, PrefixCache
from yoco_eval.model.inference import prepare_for_inference
from yoco_eval.model.phi4flash_load import load_phi4flash_model
from yoco_eval.tokenizer import ByteTokenizer

from ..conftest import FIXTURES

GOLDEN = FIXTURES / "phi4flash" / "tiny-h8kv4"  # window 16, 8 layers, GQA 8/4
TOL = 1e-4


class StopTokenizer(ByteTokenizer):
    """The byte tokenizer with extra stop ids (as Phi4FlashTokenizer's ``<|end|>``)."""

    def __init__(self, stop_ids=()):
        self.stop_ids = [self.eos_id, *stop_ids]


@pytest.fixture(scope="module")
def model():
    return load_phi4flash_model(GOLDEN)


@pytest.fixture(scope="module")
def ids():
    return torch.load(GOLDEN / "inputs.pt", weights_only=True)


def engine(model, chunk=23, tok=None) -> Engine:
    return Engine(model, tok or ByteTokenizer(), chunk_size=chunk, max_length=256)


def full_logits(model, seq) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([list(seq)]))[0]


def greedy_reference(model, prompt, n, banned, stop) -> list[int]:
    """Greedy decoding by re-running the full forward on the whole sequence at every step."""
    seq, out = list(prompt), []
    for _ in range(n):
        logits = full_logits(model, seq)[-1].clone()
        logits[banned] = float("-inf")
        t = int(logits.argmax())
        if t in stop:
            break
        out.append(t)
        seq.append(t)
    return out


def test_prepare_for_inference_leaves_phi4flash_unchanged(model, ids):
    before = {k: (v.data_ptr(), v.clone()) for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    with torch.no_grad():
        ref = model(ids[:, :40])
    prepare_for_inference(model)
    assert [type(m) for m in model.modules()] == types
    assert all(v.data_ptr() == before[k][0] and torch.equal(v, before[k][1]) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(ids[:, :40]), ref)


def test_prefill_logits_equal_full_forward_and_exit_early(model, ids):
    eng = engine(model, chunk=23)  # 23 divides neither length and crosses the window of 16
    prompts = [ids[0, :150].tolist(), ids[1, :97].tolist()]
    cache = model.setup_cache(2, 160)
    calls = []
    hook = model.model.layers[-1].register_forward_hook(lambda m, a, out: calls.append(out.shape[1]))
    try:
        got = eng.prefill(prompts, cache)
    finally:
        hook.remove()
    for b, p in enumerate(prompts):
        assert (got[b] - full_logits(model, p)[-1]).abs().max() <= TOL
    # the last layer ran only for the chunks holding a row's last token, and only at one position per row
    assert calls == [1, 1] and cache.lengths.tolist() == [150, 97]


def test_batched_generation_of_unequal_lengths_equals_full_forward_greedy(model, ids):
    eng = engine(model, chunk=23)
    prompts = [ids[0, :120].tolist(), ids[1, :61].tolist(), ids[1, :5].tolist()]
    gens = eng.generate(prompts, max_new_tokens=10)
    stop = eng._stop_ids()
    for p, g in zip(prompts, gens, strict=True):
        assert g.tokens == greedy_reference(model, p, 10, eng._banned(), stop)
        assert g.prompt_tokens == len(p)


def test_generation_stops_at_a_tokenizer_stop_id(model, ids):
    prompt = ids[0, :50].tolist()
    free = engine(model).generate([prompt], max_new_tokens=8)[0]
    assert free.finish_reason == "length" and len(free.tokens) == 8
    end = free.tokens[3]  # pretend this id is <|end|>: generation must stop where it first appears
    first = free.tokens.index(end)
    stopped = engine(model, tok=StopTokenizer([end])).generate([prompt], max_new_tokens=8)[0]
    assert stopped.finish_reason == "eos" and stopped.tokens == free.tokens[:first]


@pytest.mark.parametrize("path", ["fork", "flat"])
def test_loglikelihood_equals_full_forward(model, ids, path, monkeypatch):
    """Shared prefixes are prefilled once and forked (put_rows / select_rows), continuations of unequal lengths
    scored in one padded call at per-row positions; or each batch runs as one stateless padded forward."""
    a, b = ids[0].tolist(), ids[1].tolist()
    requests = [(a[:100], a[100:104]), (a[:100], a[100:109]), (b[:37], b[37:38]), (b[:1], b[1:30]), (a[:60], b[:3])]
    eng = engine(model, chunk=23)
    monkeypatch.setattr(eng, "_flat_wins", lambda batch: path == "flat")
    got = eng.loglikelihood(requests, batch_size=3)
    for (ctx, cont), (lp, greedy) in zip(requests, got, strict=True):
        seq = ctx + cont
        logp = F.log_softmax(full_logits(model, seq[:-1]).double(), -1)[len(ctx) - 1 :]
        ref = logp.gather(-1, torch.tensor(cont)[:, None]).sum().item()
        assert abs(lp - ref) <= 2 * len(cont) * TOL
        assert greedy == bool((logp.argmax(-1) == torch.tensor(cont)).all())


def test_rolling_score_equals_full_forward(model, ids):
    toks = ids[0, 1:190].tolist()
    prefix = [int(ids[0, 0])]
    got = engine(model).score_tokens(toks, prefix, chunk=29)
    logp = F.log_softmax(full_logits(model, prefix + toks[:-1]).double(), -1)
    ref = logp.gather(-1, torch.tensor(toks)[:, None]).sum().item()
    assert abs(got - ref) <= 2 * len(toks) * TOL


def test_prefix_reuse_across_a_sweep_gives_the_same_generations(model, ids):
    """A needle sweep's depths over one haystack: the prompts share a prefix, which is restored instead of
    prefilled again; the generations are those of a fresh prefill."""
    hay = ids[0].tolist()
    prompts = [hay[:180], hay[:140] + [7, 8, 9] + hay[140:170], hay[:90] + [5, 6] + hay[90:160]]
    eng = engine(model, chunk=16)
    prefix = PrefixCache(max_states=8)
    reused = [eng.generate([p], max_new_tokens=6, prefix=prefix)[0].tokens for p in prompts]
    fresh = [eng.generate([p], max_new_tokens=6)[0].tokens for p in prompts]
    assert reused == fresh
    # states every 32 tokens (chunk 16, at most 8 per prompt): the 2nd prompt restarts at 128, the 3rd at 64
    assert prefix.tokens_reused == 128 + 64


def test_static_shape_decode_equals_dynamic_decode(model, ids):
    """The CUDA-graph decoder's contract on the CPU: decode under ``static_shapes()`` (whole buffer, masked) then
    ``advance(1)`` gives the logits and bookkeeping of a plain decode step."""
    caches = [model.setup_cache(2, 120) for _ in range(2)]
    eng = engine(model)
    lens = [70, 45]
    for c in caches:
        eng.prefill([ids[0, :70].tolist(), ids[1, :45].tolist()], c)
    pos = torch.tensor(lens)
    with torch.no_grad():
        for step in range(5):
            tok = ids[:, 100 + step : 101 + step]
            plain = model(tok, cache=caches[0], start_pos=pos + step)
            with caches[1].static_shapes():
                static = model(tok, cache=caches[1], start_pos=pos + step)
            caches[1].advance(1)
            assert (plain - static).abs().max() <= TOL
    assert caches[0].lengths.tolist() == caches[1].lengths.tolist() == [75, 50]
    assert caches[0].seen == caches[1].seen == 75 and not caches[1].static
