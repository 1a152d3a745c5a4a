"""RULER's tasks as RULER defines them: haystacks, wording, key/value kinds, enforced haystack, position sampling."""

from __future__ import annotations

import random
import re

import pytest

from yoco_eval.errors import YocoEvalError
from yoco_eval.niah import PromptBuilder, get_variant
from yoco_eval.niah.corpus import load_corpus
from yoco_eval.niah.ruler import RULER_NOISE
from yoco_eval.niah.variants import RESERVED_NOUNS, RULER_DEPTHS, RULER_VARIANTS, sample_needles
from yoco_eval.tokenizer import YOCOTokenizer

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def test_haystacks():
    noise = load_corpus("ruler-noise").text.splitlines()
    assert set(noise) == {RULER_NOISE}
    essays = load_corpus("ruler-essays").text
    assert "\n" not in essays.rstrip("\n") and "  " not in essays
    lines = load_corpus("ruler-needles").text.splitlines()
    pat = re.compile(r"One of the special magic numbers for ([a-z]+)-([a-z]+) is: (\d{7})\.")
    nouns = {pat.fullmatch(x).group(2) for x in lines}
    assert nouns and not nouns & set(RESERVED_NOUNS)  # an asked key can never be a haystack line
    uuids = load_corpus("ruler-needles-uuids").text.splitlines()
    assert all(re.fullmatch(rf"One of the special magic uuids for {UUID} is: {UUID}\.", x) for x in uuids)


def test_wording_singular_and_plural():
    s1 = RULER_VARIANTS["ruler_niah_single_3"]
    assert s1.instruction.startswith("A special magic uuid is hidden") and s1.needle.startswith(
        "One of the special magic uuids for"
    )
    assert s1.question == "What is the special magic uuid for {key} mentioned in the provided text?"
    mv = RULER_VARIANTS["ruler_niah_multivalue"]
    assert mv.instruction.startswith("Some special magic numbers are hidden") and mv.answer_prefix.endswith(" are")
    mq = sample_needles(RULER_VARIANTS["ruler_niah_multiquery"], random.Random(0), 50.0)
    assert len(mq.expected) == 4 and ", and " in mq.question


def test_positions_are_drawn_not_the_depth_grid():
    v = RULER_VARIANTS["ruler_niah_multikey_1"]
    s = sample_needles(v, random.Random(3), 0.0)
    assert all(round(nd.site * 100) in RULER_DEPTHS for nd in s.needles)
    assert len({nd.site for nd in s.needles}) == 4 and sum(nd.is_target for nd in s.needles) == 1
    tok = YOCOTokenizer()
    b = PromptBuilder(tok, "ruler-noise", get_variant("ruler_niah_single_1"))
    depths = [b.build(2048, 0.0, seed).needles[0].depth_actual for seed in range(40)]
    assert min(depths) < 25 and max(depths) > 75  # the cell's depth (0) is ignored


def test_a_ruler_variant_refuses_another_haystack():
    with pytest.raises(YocoEvalError, match="pass --haystack ruler-needles"):
        PromptBuilder(YOCOTokenizer(), "noise", get_variant("ruler_niah_multikey_2"))
