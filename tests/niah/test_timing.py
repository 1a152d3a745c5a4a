"""Sweep timing per rank: wall span, first-cell warm-up apart, full-prefill rate from cells that reused nothing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from yoco_eval.niah.timing import format_timing, sweep_timing

T0 = datetime(2026, 11, 27, tzinfo=timezone.utc)


def _row(rank, end_s, duration, tokens, prefill, reused=0, status="ok"):
    return {
        "rank": rank, "status": status, "duration_s": duration, "prompt_tokens": tokens, "prefill_s": prefill,
        "reused_prompt_tokens": reused,
        "timestamp_utc": (T0 + timedelta(seconds=end_s)).isoformat().replace("+00:00", "Z"),
    }  # fmt: skip


def test_one_rank():
    rows = [
        _row(0, 50.0, 50.0, 1000, 48.0),  # warm-up cell, left out of the rate
        _row(0, 60.0, 10.0, 2000, 9.0),  # full prefill: 2000 tok / 9 s
        _row(0, 62.0, 2.0, 2000, 1.0, reused=1800),  # continued from a prefix: not a rate sample
        _row(0, 70.0, 1.0, 999, None, status="error"),  # failed cells do not count
    ]
    (s,) = sweep_timing(rows)
    assert s["rank"] == 0 and s["cells"] == 3 and s["prompt_tokens"] == 5000 and s["reused_tokens"] == 1800
    assert s["wall_s"] == pytest.approx(62.0) and s["first_cell_s"] == 50.0
    assert s["full_prefill_rate"] == pytest.approx(2000 / 9, abs=0.1)
    assert s["bound_s"] == pytest.approx(1.2 * 5000 / (2000 / 9), abs=0.01)
    assert s["rest_wall_s"] == 12.0 and s["rest_prefill_s"] == 10.0
    text = format_timing([s])
    assert "36%" in text and "62.0" in text


def test_two_ranks_and_the_whole():
    rows = [_row(0, 10.0, 10.0, 100, 9.0), _row(0, 30.0, 20.0, 400, 20.0),
            _row(1, 12.0, 12.0, 100, 11.0), _row(1, 22.0, 10.0, 200, 8.0), _row(1, 40.0, 18.0, 200, 10.0)]  # fmt: skip
    r0, r1, total = sweep_timing(rows)
    assert (r0["rank"], r1["rank"], total["rank"]) == (0, 1, "all")
    assert r0["full_prefill_rate"] == 20.0 and r1["full_prefill_rate"] == 22.2
    assert total["wall_s"] == 40.0 and total["cells"] == 5 and total["first_cell_s"] == 12.0
    assert total["full_prefill_rate"] == pytest.approx(21.1)
    assert sweep_timing([]) == [] and sweep_timing([_row(0, 1.0, 1.0, 5, 1.0, status="error")]) == []


def test_no_rate_without_a_full_prefill_after_the_first_cell():
    (s,) = sweep_timing([_row(0, 5.0, 5.0, 10, 4.0)])
    assert s["full_prefill_rate"] is None and s["bound_s"] is None
    assert "-" in format_timing([s]).splitlines()[1]


def test_a_resumed_run_leaves_out_the_pause():
    rows = [
        _row(0, 10.0, 10.0, 100, 9.0),  # first sitting: warm-up cell
        _row(0, 20.0, 10.0, 100, 5.0),  # 20 tok/s
        _row(0, 3590.0, 30.0, 100, 29.0),  # resumed an hour later: this sitting's warm-up, not a rate sample
        _row(0, 3600.0, 10.0, 100, 5.0),
    ]
    (s,) = sweep_timing(rows)
    assert s["sittings"] == 2 and s["wall_s"] == pytest.approx(20.0 + 40.0)
    assert s["full_prefill_rate"] == 20.0 and s["first_cell_s"] == 10.0
    assert "2 sittings" in format_timing([s])
    (one,) = sweep_timing(rows[:2])
    assert one["sittings"] == 1 and "sittings" not in format_timing([one])
