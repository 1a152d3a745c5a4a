"""The lm-eval adapter on the random-weight ``yoco-debug`` model: request semantics, windows, errors, registration."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window  # noqa: E402

from yoco_eval.errors import YocoEvalError  # noqa: E402
from yoco_eval.lm_eval_adapter import YOCOLM  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def ll(ctx, cont, i=0):
    return Instance("loglikelihood", {}, (ctx, cont), i)


def rolling(text, i=0):
    return Instance("loglikelihood_rolling", {}, (text,), i)


def gen(ctx, i=0, **kw):
    return Instance("generate_until", {}, (ctx, {"until": ["\n"], "max_gen_toks": 6, **kw}), i)


@pytest.fixture(scope="module")
def lm():
    return YOCOLM(pretrained="yoco-debug", max_length=64, device="cpu", batch_size=4)


def test_registered_next_to_the_builtins():
    from lm_eval.api.registry import get_model

    assert get_model("yoco") is YOCOLM and get_model("yoco-eval") is YOCOLM
    assert get_model("hf").__name__ == "HFLM"  # the registry gotcha did not hide lm-eval's own models


def test_hook_registers_lazily_without_importing_anything():
    code = (
        "import sys, yoco_eval._lm_eval_hook\n"
        "assert 'lm_eval' not in sys.modules and 'torch' not in sys.modules\n"
        "from lm_eval.api.registry import get_model, model_registry\n"
        "assert model_registry._objs.get('yoco') is None\n"  # lm_eval.models not imported yet
        "get_model('dummy')\n"  # imports lm_eval.models -> the hook registers the placeholder
        "assert model_registry._objs['yoco'] == 'yoco_eval.lm_eval_adapter:YOCOLM'\n"
        "assert 'yoco_eval.lm_eval_adapter' not in sys.modules\n"
        "assert get_model('yoco').__name__ == 'YOCOLM' and get_model('hf').__name__ == 'HFLM'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_properties(lm):
    assert lm.max_length == 64 and lm.max_gen_toks == 256 and lm.batch_size == 4
    assert lm.eot_token_id == lm.tok.eos_id and lm.prefix_token_id == lm.tok.bos_id  # BOS when there is one
    assert lm.device == torch.device("cpu")
    assert lm.tok_encode("ab") == [lm.tok.bos_id, *lm.tok.encode("ab")]  # our tokenizers get BOS by default
    assert lm.tok_encode("ab", add_special_tokens=False) == lm.tok.encode("ab")
    assert lm.tok_decode(lm.tok.encode("héllo")) == "héllo"


def test_loglikelihood_matches_the_engine_and_is_batch_independent(lm):
    reqs = [ll("The cat", " sat", 0), ll("The cat", " ran", 1), ll("", "hello", 2), ll("A dog ", "barks", 3)]
    out = lm.loglikelihood(reqs, disable_tqdm=True)
    bos = lm.tok.bos_id
    expect = lm.engine.loglikelihood(
        [([bos, *lm.tok.encode("The cat")], lm.tok.encode(" sat")), ([bos, *lm.tok.encode("The cat")],
         lm.tok.encode(" ran")), ([bos], lm.tok.encode("hello")), ([bos, *lm.tok.encode("A dog")],
         lm.tok.encode(" barks"))], batch_size=1)  # fmt: skip
    for (a, ga), (b, gb) in zip(out, expect):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb
    lm.batch_size = 1
    try:
        again = lm.loglikelihood(reqs, disable_tqdm=True)
    finally:
        lm.batch_size = 4
    assert [x[0] for x in again] == pytest.approx([x[0] for x in out], abs=1e-4)
    assert all(x < 0 for x, _ in out)


def test_is_greedy_is_true_for_the_models_own_argmax(lm):
    ctx = [lm.tok.bos_id, *lm.tok.encode("xy")]
    with torch.no_grad():
        logits = lm.engine.model(torch.tensor([ctx]))[0, -1]
    best = int(logits.argmax())
    (lp, greedy), (_, other) = lm._loglikelihood_tokens(
        [(None, ctx, [best]), (None, ctx, [(best + 1) % logits.numel()])], disable_tqdm=True
    )
    assert greedy and not other
    assert lp == pytest.approx(float(torch.log_softmax(logits.float(), -1)[best]), abs=1e-4)


def test_cache_hook_receives_every_answer(lm):
    seen = []

    class Hook:
        def add_partial(self, attr, req, res):
            seen.append((attr, req, res))

    lm.set_cache_hook(Hook())
    try:
        lm.loglikelihood([ll("ab", "c")], disable_tqdm=True)
        lm.loglikelihood_rolling([rolling("hello")], disable_tqdm=True)
        lm.generate_until([gen("ab")], disable_tqdm=True)
    finally:
        from lm_eval.api.model import CacheHook

        lm.set_cache_hook(CacheHook(None))
    assert [s[0] for s in seen] == ["loglikelihood", "loglikelihood_rolling", "generate_until"]
    assert seen[0][1] == ("ab", "c") and seen[1][1] == ("hello",)


def test_rolling_windows(lm, monkeypatch):
    """A document that fits max_length is scored in one pass (one window: the prefix token, then the document); a
    longer one in lm-eval's disjoint windows; all of them go to the engine as one batch of requests."""
    calls = {"score_tokens": [], "loglikelihood": []}
    real_score, real_ll = lm.engine.score_tokens, lm.engine.loglikelihood

    def score_tokens(tokens, prefix, *a, **k):
        calls["score_tokens"].append((list(tokens), list(prefix)))
        return real_score(tokens, prefix, *a, **k)

    def loglikelihood(reqs, *a, **k):
        calls["loglikelihood"].extend((list(c), list(t)) for c, t in reqs)
        return real_ll(reqs, *a, **k)

    monkeypatch.setattr(lm.engine, "score_tokens", score_tokens)
    monkeypatch.setattr(lm.engine, "loglikelihood", loglikelihood)
    short, long = "To be, or not to be", "Now is the winter of our discontent " * 5  # 19 and 180 tokens
    toks = lm.tok.encode(long)
    out = lm.loglikelihood_rolling([rolling(short, 0), rolling(long, 1), rolling("", 2)], disable_tqdm=True)
    P = lm.prefix_token_id
    assert calls["score_tokens"] == []
    expect = [make_disjoint_window(w) for w in get_rolling_token_windows(toks, P, 64, 1)]
    assert calls["loglikelihood"] == [([P], lm.tok.encode(short))] + [(list(c), list(t)) for c, t in expect]
    assert len(expect) == 3 and sum(len(t) for _, t in expect) == len(toks)  # every token scored exactly once
    assert expect[0][0] == [P] and all(len(c) + len(t) - 1 == 64 for c, t in expect)
    assert out[2] == 0.0
    # the same numbers as scoring each window separately, and the one-pass score equals the one-window score
    windows = real_ll(expect, batch_size=1)
    assert out[1] == pytest.approx(sum(x for x, _ in windows), abs=1e-3)
    one = real_score(lm.tok.encode(short), [P])
    assert out[0] == pytest.approx(one, abs=1e-3)


def test_generate_until_stops_and_batches(lm):
    reqs = [gen("Once upon a time", 0), gen("ab", 1), gen("xyz", 2, until=["q", "z"]), gen("hi", 3, max_gen_toks=2)]
    out = lm.generate_until(reqs, disable_tqdm=True)
    lm.batch_size = 1
    try:
        one = lm.generate_until(reqs, disable_tqdm=True)
    finally:
        lm.batch_size = 4
    assert out == one
    assert "\n" not in out[0] and "q" not in out[2] and "z" not in out[2]
    # max_gen_toks=2: the text of at most 2 greedy tokens (re-encoding it can give more: bytes that are not UTF-8)
    g2 = lm.engine.generate([lm.tok_encode("hi")], max_new_tokens=2)[0]
    assert len(g2.tokens) <= 2 and out[3] == g2.text.split("\n")[0]
    # greedy text is exactly the engine's greedy tokens, cut at the first stop string
    g = lm.engine.generate([lm.tok_encode("Once upon a time")], max_new_tokens=6)[0]
    assert out[0] == lm.tok.decode(g.tokens).split("\n")[0]


def test_generation_context_is_left_truncated_only_with_truncate():
    lm = YOCOLM(pretrained="yoco-debug", max_length=32, device="cpu", truncate=True)
    long = "x" * 100 + "END"
    out = lm.generate_until([gen(long, max_gen_toks=4)], disable_tqdm=True)
    tail = lm.tok_encode(long)[-(32 - 4) :]
    expect = lm.engine.generate([tail], max_new_tokens=4, stop=["\n"])[0].text.split("\n")[0]
    assert out == [expect]
    ((lp, _),) = lm.loglikelihood([ll("y" * 80, "z")], disable_tqdm=True)
    assert math.isfinite(lp)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda lm: lm.loglikelihood([ll("x" * 200, "y")]), "more than max_length=64"),
        (lambda lm: lm.loglikelihood([ll("x", "y" * 100)]), "scores 100 tokens"),
        (lambda lm: lm.generate_until([gen("x" * 100)]), "more than max_length=64"),
        (lambda lm: lm.generate_until([gen("x", max_gen_toks=64)]), "leaves no room"),
    ],
    ids=["ll-too-long", "cont-too-long", "gen-too-long", "gen-no-room"],
)
def test_requests_longer_than_max_length_are_one_clear_error(lm, make, message):
    with pytest.raises(YocoEvalError, match=message) as e:
        make(lm)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pretrained": "yoco-debug", "max_lenght": 64}, "unknown --model_args key.*max_lenght"),
        ({"pretrained": "/nonexistent/ckpt"}, "not found"),
        ({}, "needs a checkpoint"),
        ({"pretrained": "yoco-debug", "batch_size": "lots"}, "bad --batch_size"),
        ({"pretrained": "yoco-debug", "dtype": "float7"}, "unknown dtype"),
    ],
    ids=["unknown-key", "missing-checkpoint", "no-pretrained", "bad-batch-size", "bad-dtype"],
)
def test_bad_model_args_are_one_clear_error(kwargs, message):
    with pytest.raises(YocoEvalError, match=message) as e:
        YOCOLM.create_from_arg_obj(kwargs, {"batch_size": kwargs.pop("batch_size", 1), "device": "cpu"})
    assert "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_device_default_falls_back_to_cpu_but_explicit_cuda_is_an_error():
    # lm-eval's CLI passes cuda:0 when --device is not given: read as auto, with no look at sys.argv
    lm = YOCOLM.create_from_arg_obj({"pretrained": "yoco-debug"}, {"device": "cuda:0", "batch_size": "auto"})
    assert lm.device == torch.device("cpu") and lm.batch_size == 8 and lm.spec.chunk_size == 2048
    for model_args, extra in (({"device": "cuda"}, {}), ({}, {"device": "cuda:1"}), ({}, {"device": "cuda"})):
        with pytest.raises(YocoEvalError, match="no CUDA GPU is visible") as e:
            YOCOLM.create_from_arg_obj({"pretrained": "yoco-debug", **model_args}, {"batch_size": 1, **extra})
        assert "\n" not in str(e.value)


def test_uncaught_error_of_the_plain_lm_eval_command_is_one_line(tmp_path):
    """``lm_eval`` itself (not our wrapper) with a wrong checkpoint path: one line on stderr, no traceback."""
    code = (
        "from yoco_eval.lm_eval_adapter import YOCOLM\n"
        "YOCOLM.create_from_arg_string('pretrained=/nonexistent/ckpt', {'device': 'cpu', 'batch_size': 1})\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint '/nonexistent/ckpt' not found"), out.stderr


def test_shipped_model_name_and_chunk_size_from_model_args():
    lm = YOCOLM.create_from_arg_obj({"pretrained": "yoco-needle-7m", "chunk_size": 96}, {"device": "cpu"})
    assert lm.engine.chunk_size == 96 and lm.spec.chunk_size == 96
    assert lm.pretrained == "yoco-needle-7m" and lm.engine.path.endswith("yoco-needle-7m")


def test_batch_size_auto_is_capped():
    lm = YOCOLM.create_from_arg_obj({"pretrained": "yoco-debug"}, {"batch_size": "auto:4", "max_batch_size": 3})
    assert lm.batch_size == 3


def test_chat_template_without_one_is_a_clear_error(lm):
    assert lm.chat_template(False) is None
    with pytest.raises(YocoEvalError, match="has no chat template: drop --apply_chat_template"):
        lm.chat_template(True)
    with pytest.raises(YocoEvalError, match="has no chat template"):
        lm.apply_chat_template([{"role": "user", "content": "hi"}])


def test_model_info_has_no_network_and_names_the_model(lm):
    info = lm.get_model_info()
    assert info["yoco_arch"] == "YOCO" and info["yoco_tokenizer"] == "bytes" and info["yoco_num_params"] > 0


def test_long_windows_and_continuations_respect_the_logits_budget(lm, monkeypatch):
    """Windows too long for the logits budget are scored chunk by chunk (same numbers); batches shrink."""
    import yoco_eval.lm_eval_adapter as adapter

    doc = [rolling("Now is the winter of our discontent " * 5)]
    batched = lm.loglikelihood_rolling(doc, disable_tqdm=True)
    sizes = []
    real_ll = lm.engine.loglikelihood
    monkeypatch.setattr(
        lm.engine, "loglikelihood", lambda r, batch_size, **k: sizes.append(batch_size) or real_ll(r, batch_size, **k)
    )
    monkeypatch.setattr(adapter, "LOGITS_BUDGET", 40 * lm.engine.model.config.vocab_size)
    chunked = lm.loglikelihood_rolling(doc, disable_tqdm=True)  # 64-token windows > budget: score_tokens
    assert sizes == [] and chunked[0] == pytest.approx(batched[0], abs=1e-3)
    lm.loglikelihood([ll("ab", "c" * 20), ll("ab", "d")], disable_tqdm=True)
    assert sizes == [2]  # 40 // 20 rows fit the budget (batch_size is 4)
