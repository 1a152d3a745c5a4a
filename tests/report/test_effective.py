"""Effective context length (RULER's longest-passing length, NoLiMa's 85 % default) and one-style axis labels."""

from __future__ import annotations

import pytest

from yoco_eval.niah.score import wilson
from yoco_eval.report import fmt
from yoco_eval.report.effective import effective_length
from yoco_eval.report.heatmap import Tally

L = (1024, 2048, 4096, 8192)


def tallies(*means, n=10, errors=0):
    return [Tally(m, 0 if m is None else n, errors if m is not None else n) for m in means]


def test_relative_threshold_is_85_percent_of_the_shortest_length():
    e = effective_length(L, tallies(0.80, 0.70, 0.67, 0.90))
    assert e.threshold == pytest.approx(0.68) and e.base == 0.80 and e.relative
    # 0.67 < 0.68 ends the walk at 4K, so the lucky 0.90 at 8K does not count
    assert e.length == 2048 and not e.all_pass
    assert e.label() == "2K"
    assert e.interval == pytest.approx(wilson(0.70, 10))


def test_exactly_at_the_threshold_passes_and_all_pass_is_flagged():
    e = effective_length(L, tallies(1.0, 0.85, 0.9, 0.85))
    assert e.length == 8192 and e.all_pass and e.label() == "≥ 8K"
    assert "every tested length passed" in e.explain()


def test_absolute_threshold_option():
    e = effective_length(L, tallies(0.9, 0.6, 0.4, 0.3), threshold=0.5)
    assert e.length == 2048 and not e.relative and e.threshold == 0.5
    assert "50.0% (absolute)" in e.explain()
    none = effective_length(L, tallies(0.4, 0.3, 0.2, 0.1), threshold=0.5)
    assert none.length is None and none.label() == "—" and "shortest length is below" in none.explain()


def test_lower_rule_uses_the_interval():
    means = tallies(1.0, 0.9, 0.9, 0.9, n=40)
    assert effective_length(L, means).length == 8192
    # Wilson lower bounds: 40/40 -> 0.91 clears 0.85, 36/40 -> 0.77 does not
    assert wilson(1.0, 40)[0] > 0.85 > wilson(0.9, 40)[0]
    assert effective_length(L, means, rule="lower").length == 1024
    # ten perfect trials are not enough evidence for 0.85 (lower bound 0.72); a thousand at 0.9 are
    assert effective_length(L, tallies(1.0, 1.0, 1.0, 1.0, n=10), rule="lower").length is None
    assert effective_length(L, tallies(1.0, 0.9, 0.9, 0.9, n=1000), rule="lower").length == 8192


def test_unscored_length_ends_the_walk_and_zero_base_has_no_relative_threshold():
    assert effective_length(L, tallies(0.9, None, 0.9, 0.9)).length == 1024
    zero = effective_length(L, tallies(0.0, 0.0, 0.0, 0.0))
    assert zero.length is None and zero.threshold is None and "scores 0" in zero.explain()
    unscored = effective_length(L, tallies(None, 0.9, 0.9, 0.9))
    assert unscored.length is None and "no length was scored" in unscored.reason


def test_failed_trials_do_not_count_as_zeros():
    e = effective_length(L, tallies(0.9, 0.9, 0.9, 0.9, errors=5))
    assert e.length == 8192


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rule": "median"}, "rule must be one of"),
        ({"threshold": 1.5}, "absolute threshold is a score in 0..1"),
        ({"ratio": 0.0}, "ratio must be in"),
    ],
)
def test_bad_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        effective_length(L, tallies(0.9, 0.9, 0.9, 0.9), **kwargs)
    with pytest.raises(ValueError, match="4 lengths but 3 tallies"):
        effective_length(L, tallies(0.9, 0.9, 0.9))


def test_axis_labels_are_in_one_style():
    assert fmt.length_labels([512, 1024, 4096, 1 << 20]) == ["512", "1K", "4K", "1M"]
    assert fmt.length_labels([384, 1024, 1536, 2032]) == ["384", "1,024", "1,536", "2,032"]
    assert fmt.length_labels([]) == []
