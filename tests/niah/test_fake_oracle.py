"""The fake model's oracle answers whatever needle template the builder used, so `--model fake` measures the
builder: a perfect retriever scores 1 on every cell, custom templates and RULER's needle-filled haystacks included."""

from __future__ import annotations

import pytest

from yoco_eval.niah import FakeNeedleModel, PromptBuilder, get_variant
from yoco_eval.niah.score import score_output
from yoco_eval.tokenizer import YOCOTokenizer

CUSTOM = [
    "The secret code of {key} is {value}",  # no final period
    "{value} is the magic {type} of {key}.",  # value first, key last
    "Remember: the password for {key} is {value}! Do not forget {value}.",  # a placeholder twice
]


@pytest.fixture(scope="module")
def tok():
    return YOCOTokenizer()


@pytest.mark.parametrize("template", CUSTOM)
@pytest.mark.parametrize("name", ["single", "multikey", "multivalue", "multiquery"])
def test_oracle_answers_custom_templates(tok, template, name):
    variant = get_variant(name, needle=template)
    b = PromptBuilder(tok, "pg-essays", variant)
    fake = FakeNeedleModel(tok)
    for seed in range(4):
        p = b.build(1500, 25.0 * seed, seed)
        answer = fake.answer(p.text)
        assert score_output(answer, p.expected, p.metric) == 1.0, (answer, p.expected)
        # only the asked values: no distractor's value in the answer
        for nd in p.needles:
            if nd.value not in p.expected:
                assert nd.value not in answer


@pytest.mark.parametrize("name", ["ruler_niah_multikey_2", "ruler_niah_multikey_3", "ruler_niah_multiquery"])
def test_oracle_on_ruler_haystacks(tok, name):
    """Every line of the needle haystacks matches the template; only the asked key's value is answered."""
    variant = get_variant(name)
    b = PromptBuilder(tok, variant.haystack, variant)
    fake = FakeNeedleModel(tok)
    for seed in range(3):
        p = b.build(4096, 50.0, seed)
        answer = fake.answer(p.text)
        assert score_output(answer, p.expected, p.metric) == 1.0
        assert answer.count(",") == len(p.expected) - 1  # nothing but the asked values


def test_wrong_mode_scores_zero(tok):
    b = PromptBuilder(tok, "pg-essays", get_variant("single", needle="The secret code of {key} is {value}"))
    p = b.build(1500, 50.0, 0)
    assert score_output(FakeNeedleModel(tok, mode="wrong").answer(p.text), p.expected, p.metric) == 0.0
