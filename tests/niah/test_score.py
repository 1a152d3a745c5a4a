"""Scorer and aggregation unit tests."""

from __future__ import annotations

import pytest

from yoco_eval.errors import YocoEvalError
from yoco_eval.niah.score import aggregate, contains, format_table, score_output, wilson


def test_substring():
    assert score_output(" 84606. It is a constant", ["84606"], "substring") == 1.0
    assert score_output("The number is 8460", ["84606"], "substring") == 0.0
    # digits must not be part of a longer number
    assert score_output("184606", ["84606"], "substring") == 0.0
    assert score_output("846061", ["84606"], "substring") == 0.0
    assert score_output("(84606)", ["84606"], "substring") == 1.0
    # case and whitespace are normalized for text values
    assert (
        score_output(
            "Eat a  sandwich and\nsit in Dolores park!", ["eat a sandwich and sit in Dolores Park"], "substring"
        )
        == 1.0
    )
    assert score_output("", ["x"], "substring") == 0.0
    assert score_output(None, ["x"], "substring") == 0.0


def test_ruler_string_match_all_and_part():
    """RULER's metrics: plain case-insensitive substrings (no digit rule), the share of values / any value."""
    exp = ["1111111", "ABC-def", "3333333", "4444444"]
    assert score_output("1111111, abc-DEF, 3333333 and 4444444", exp, "string_match_all") == 1.0
    assert score_output("abc-def and 44444449", exp, "string_match_all") == 0.5  # RULER: 4444444 in 44444449
    assert score_output("none", exp, "string_match_all") == 0.0
    assert score_output("only 3333333", exp, "string_match_part") == 1.0
    assert score_output("none", exp, "string_match_part") == 0.0
    assert score_output(None, exp, "string_match_all") == 0.0


def test_exact():
    assert score_output(" 84606.", ["84606"], "exact") == 1.0
    assert score_output('\n\n"Bright-River"\nmore text', ["bright-river"], "exact") == 1.0
    assert score_output(" 84606 is the number", ["84606"], "exact") == 0.0
    assert score_output(" 84607.", ["84606"], "exact") == 0.0


def test_all_values():
    exp = ["1111111", "2222222", "3333333", "4444444"]
    assert score_output("1111111, 2222222, 3333333 and 4444444", exp, "all_values") == 1.0
    assert score_output("2222222 and 4444444", exp, "all_values") == 0.5
    assert score_output("none", exp, "all_values") == 0.0
    assert score_output("11111112", exp, "all_values") == 0.0


def test_unknown_metric_and_empty_expected():
    with pytest.raises(YocoEvalError, match="unknown metric"):
        score_output("x", ["x"], "fuzzy")
    with pytest.raises(YocoEvalError):
        score_output("x", [], "substring")


def test_contains_uuid_case_insensitive():
    u = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert contains(f"The code is {u.upper()}.", u)


def test_wilson_known_values():
    # p = 0.5, n = 10 → [0.2366, 0.7634] (standard table value)
    lo, hi = wilson(0.5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson(1.0, 10)
    assert lo == pytest.approx(0.7225, abs=1e-4) and hi == 1.0
    lo, hi = wilson(0.0, 2)
    assert lo == 0.0 and hi == pytest.approx(0.6576, abs=1e-4)


def _row(L, d, t, score, status="ok"):
    return {
        "cell": f"L{L}_D{d:g}_T{t}",
        "context_length": L,
        "depth_percent": d,
        "trial": t,
        "status": status,
        "score": score if status == "ok" else None,
    }


def test_aggregate_by_length_depth_cell():
    rows = [
        _row(1024, 0, 0, 1.0),
        _row(1024, 0, 1, 0.0),
        _row(1024, 50, 0, 1.0),
        _row(1024, 50, 1, 1.0),
        _row(2048, 0, 0, 0.0),
        _row(2048, 0, 1, None, "error"),
    ]
    agg = aggregate(rows)
    assert agg["overall"]["n"] == 5 and agg["overall"]["n_error"] == 1
    assert agg["overall"]["mean"] == pytest.approx(3 / 5)
    assert agg["by_length"][1024]["mean"] == 0.75 and agg["by_length"][1024]["n"] == 4
    assert agg["by_length"][2048]["n"] == 1 and agg["by_length"][2048]["ci95"] is None  # one trial: no interval
    assert agg["by_depth"][0.0]["mean"] == pytest.approx(1 / 3)
    assert agg["by_cell"]["1024|0"]["mean"] == 0.5 and agg["by_cell"]["1024|0"]["ci95"] is not None
    assert agg["by_cell"]["1024|50"]["ci95"][1] == 1.0
    table = format_table(agg)
    assert "1024" in table and "errors=1" in table
