"""The one length/depth syntax (yoco_eval.axes), shared by needle, profile, the lm-eval needle tasks and YAML."""

from __future__ import annotations

import pytest

from yoco_eval.axes import format_lengths, parse_depths, parse_lengths
from yoco_eval.errors import YocoEvalError


def test_parse_lengths():
    assert parse_lengths("1k,4k,128k,1M") == [1024, 4096, 131072, 1048576]
    assert parse_lengths("1000, 1.5k") == [1000, 1536]
    assert parse_lengths("128k:1M:128k") == [131072 * i for i in range(1, 9)]
    assert parse_lengths("1k,max", max_length=8176) == [1024, 8176]
    assert parse_lengths([2048, "1k"]) == [1024, 2048]
    for bad in ("4kb", "-1", "0.3k", "x", "", "1k:max:0x"):
        with pytest.raises(YocoEvalError):
            parse_lengths(bad)
    with pytest.raises(YocoEvalError, match="known context"):
        parse_lengths("max")


def test_profile_spellings_are_accepted_in_their_order():
    """What profile's own parser took (lower-case ``m``, any order) means the same here."""
    assert parse_lengths("32k,512k,1m,4096", sort=False) == [32768, 524288, 1048576, 4096]
    assert parse_lengths("1m,32k") == [32768, 1048576]


def test_parse_depths():
    assert parse_depths("0:100:11") == [float(x) for x in range(0, 101, 10)]
    assert parse_depths("0:100:5") == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert parse_depths("0,33.3,100") == [0.0, 33.3, 100.0]
    assert parse_depths("50:50:1") == [50.0]
    assert parse_depths([0, 50]) == [0.0, 50.0] and parse_depths(50) == [50.0]
    with pytest.raises(YocoEvalError, match="outside 0–100"):
        parse_depths("0:120:3")
    with pytest.raises(YocoEvalError, match="bad depths"):
        parse_depths("a,b")


def test_format_lengths_round_trips():
    lengths = [384, 1024, 1536, 131072, 1048576]
    assert format_lengths(lengths) == "384,1k,1536,128k,1M"
    assert parse_lengths(format_lengths(lengths)) == lengths
