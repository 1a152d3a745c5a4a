"""Engine.generate's look-ahead decode loop (step k+1 is queued before the host reads step k's tokens) returns what
the plain loop returns: the same tokens, stops, finish reasons, progress calls and seeded samples, and runs
exactly one forward more than the plain loop only when every row stopped before ``max_new_tokens``."""

from __future__ import annotations

import pytest
import torch

from yoco_eval.config import get_config
from yoco_eval.generate import Engine, SamplingParams, cut_at_stop
from yoco_eval.model.checkpoint import build_model, init_weights
from yoco_eval.tokenizer import ByteTokenizer


class StopTokenizer(ByteTokenizer):
    def __init__(self, stop_ids=()):
        self.stop_ids = [self.eos_id, *stop_ids]


@pytest.fixture(scope="module")
def model():
    m = build_model(get_config("yoco-debug"), attn_backend="sdpa", retention_backend="torch")
    return init_weights(m, 5, std=0.15).eval()


def prompts():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(4, 260, (n,), generator=g).tolist() for n in (21, 9, 30)]  # no chunk of one token


@torch.inference_mode()
def plain_generate(engine: Engine, prompts, on_token=None, **kw):
    """The synchronous loop, spelled out: sample, read the tokens, check stops, then run the next step."""
    p = SamplingParams(**kw)
    gen = torch.Generator().manual_seed(p.seed) if p.seed is not None else None
    B = len(prompts)
    cache = engine.model.setup_cache(B, max(map(len, prompts)) + p.max_new_tokens)
    logits = engine.prefill(prompts, cache)
    pos = torch.tensor([len(x) for x in prompts])
    stop_ids, out, reason, done, forwards = engine._stop_ids(), [[] for _ in prompts], ["length"] * B, [False] * B, 0
    for step in range(p.max_new_tokens):
        logits[:, engine._banned()] = float("-inf")
        host = Engine._sample(logits, p, gen).tolist()
        for i in range(B):
            if done[i]:
                continue
            if host[i] in stop_ids and not p.ignore_eos:
                done[i], reason[i] = True, "eos"
                continue
            out[i].append(host[i])
            if p.stop and engine._hit_stop(out[i], p.stop):
                done[i], reason[i] = True, "stop"
        if on_token is not None:
            on_token(step, B - sum(done))
        if all(done) or step == p.max_new_tokens - 1:
            break
        logits = engine.model(torch.tensor(host)[:, None], cache=cache, start_pos=pos)[:, -1].float()
        forwards += 1
        pos = pos + 1
    texts = [cut_at_stop(engine.tokenizer.decode(t), p.stop) if r == "stop" else engine.tokenizer.decode(t)
             for t, r in zip(out, reason)]  # fmt: skip
    return out, reason, texts, forwards


def count_decode_forwards(model):
    calls = []
    hook = model.register_forward_hook(lambda m, args, kw, out: calls.append(1) if args[0].shape[1] == 1 else None,
                                       with_kwargs=True)  # fmt: skip
    return calls, hook


def run_both(model, tok, **kw):
    engine = Engine(model, tok, chunk_size=8, max_length=256)
    seen_plain, seen_ahead = [], []
    ref_tokens, ref_reason, ref_text, ref_forwards = plain_generate(
        engine, prompts(), on_token=lambda s, n: seen_plain.append((s, n)), **kw
    )
    calls, hook = count_decode_forwards(model)
    try:
        got = engine.generate(prompts(), on_token=lambda s, n: seen_ahead.append((s, n)), **kw)
    finally:
        hook.remove()
    assert [g.tokens for g in got] == ref_tokens
    assert [g.finish_reason for g in got] == ref_reason
    assert [g.text for g in got] == ref_text
    assert seen_ahead == seen_plain
    return got, len(calls), ref_forwards


def test_runs_to_the_length_limit_with_no_extra_step(model):
    got, forwards, plain = run_both(model, ByteTokenizer(), max_new_tokens=7)
    assert all(g.finish_reason == "length" and len(g.tokens) == 7 for g in got)
    assert forwards == plain == 6  # the last step's forward is never queued


def test_rows_stopping_at_different_steps(model):
    free, _, _ = run_both(model, ByteTokenizer(), max_new_tokens=10)
    # stop ids taken from the free run: row 0 stops at its 3rd token, row 2 at its 6th, row 1 runs on (unless
    # one of those ids turns up in it sooner; the plain loop is the judge either way)
    stop = [free[0].tokens[2], free[2].tokens[5]]
    got, forwards, plain = run_both(model, StopTokenizer(stop), max_new_tokens=10)
    assert got[0].finish_reason == "eos" and got[0].tokens == free[0].tokens[: free[0].tokens.index(stop[0])]
    if any(g.finish_reason == "length" for g in got):
        assert forwards == plain == 9
    else:  # every row stopped early: exactly one look-ahead step was wasted
        assert forwards == plain + 1


def test_all_rows_stop_early_costs_one_queued_step(model):
    free, _, _ = run_both(model, ByteTokenizer(), max_new_tokens=6)
    stop = [free[i].tokens[1] for i in range(3)]  # every row's 2nd token (or sooner) ends it
    got, forwards, plain = run_both(model, StopTokenizer(stop), max_new_tokens=6)
    assert all(g.finish_reason == "eos" and len(g.tokens) <= 1 for g in got)
    assert forwards == plain + 1


def test_stop_strings_and_ignore_eos(model):
    free, _, _ = run_both(model, ByteTokenizer(), max_new_tokens=12)
    text = free[1].text
    stop = text[4:6] if len(text) >= 6 else text[-1:]
    got, _, _ = run_both(model, ByteTokenizer(), max_new_tokens=12, stop=[stop])
    assert got[1].finish_reason == "stop" and stop not in got[1].text
    tok = StopTokenizer([free[0].tokens[0]])
    got, forwards, _ = run_both(model, tok, max_new_tokens=5, ignore_eos=True)
    assert all(len(g.tokens) == 5 for g in got) and forwards == 4


def test_seeded_sampling_draws_in_the_same_order(model):
    kw = dict(max_new_tokens=9, temperature=0.9, top_k=50, top_p=0.95, seed=11)
    got, _, _ = run_both(model, ByteTokenizer(), **kw)
    again = Engine(model, ByteTokenizer(), chunk_size=8, max_length=256).generate(prompts(), **kw)
    assert [g.tokens for g in again] == [g.tokens for g in got]


def test_zero_new_tokens(model):
    (g,) = Engine(model, ByteTokenizer(), chunk_size=8, max_length=256).generate([prompts()[0]], max_new_tokens=0)
    assert g.tokens == [] and g.finish_reason == "length"


def test_bos_and_pad_are_never_sampled_at_any_step(model):
    def favour_bos_pad(m, args, out):  # every step's logits prefer BOS (0) and PAD (1) by far
        if out is not None:
            out[..., :2] += 100.0
        return out

    hook = model.register_forward_hook(favour_bos_pad)
    try:
        got, _, _ = run_both(model, ByteTokenizer(), max_new_tokens=6)
    finally:
        hook.remove()
    assert all(len(g.tokens) == 6 and not {0, 1} & set(g.tokens) for g in got)
