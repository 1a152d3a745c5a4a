"""Where a sweep's time went, from its result rows: per rank, wall time against the time its prompts would take at
the model's full-prefill rate.

Each row carries ``duration_s`` (the whole cell), ``prefill_s``, ``prompt_tokens``, ``reused_prompt_tokens`` (prompt
tokens continued from the previous prompt's prefix instead of prefilled) and ``timestamp_utc`` (when the cell
ended). A rank's wall time runs from the start of its first cell to the end of its last, leaving out pauses of
over a minute between cells (a run stopped and resumed later; ``sittings`` counts the parts). Its full-prefill
rate is measured on its own cells that reused nothing, each sitting's first cell left out (it pays the one-time
kernel compilation and autotuning; the run's first is reported apart as ``first_cell_s``). ``bound_s`` is
1.2 x prompt tokens / that rate, the budget that the issue-6 sweep target sets.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime


def _end(row: dict) -> float:
    return datetime.fromisoformat(row["timestamp_utc"].replace("Z", "+00:00")).timestamp()


_PAUSE_S = 60.0  # idle longer than this between two cells of a rank: the run was stopped and resumed later


def _sittings(rows: list[dict]) -> list[int]:
    """Indices (into rows sorted by end time) where a sitting starts: the first row, and every row that starts
    more than a minute after the previous one ended."""
    starts = [0]
    for i in range(1, len(rows)):
        if _end(rows[i]) - rows[i]["duration_s"] - _end(rows[i - 1]) > _PAUSE_S:
            starts.append(i)
    return starts


def _stats(rows: list[dict], rank) -> dict:
    rows = sorted(rows, key=_end)
    starts = _sittings(rows)
    bounds = list(zip(starts, [*starts[1:], len(rows)]))
    wall = sum(_end(rows[b - 1]) - (_end(rows[a]) - rows[a]["duration_s"]) for a, b in bounds)
    tokens = sum(r.get("prompt_tokens") or 0 for r in rows)
    reused = sum(r.get("reused_prompt_tokens") or 0 for r in rows)
    rest = [r for i, r in enumerate(rows) if i not in starts]  # each sitting's first cell pays the warm-up
    full = [r for r in rest if not r.get("reused_prompt_tokens") and r.get("prefill_s")]
    rate = sum(r["prompt_tokens"] for r in full) / sum(r["prefill_s"] for r in full) if full else None
    return {
        "rank": rank,
        "cells": len(rows),
        "prompt_tokens": tokens,
        "reused_tokens": reused,
        "wall_s": round(wall, 3),
        "sittings": len(starts),
        "first_cell_s": round(rows[0]["duration_s"], 3),
        "rest_wall_s": round(sum(r["duration_s"] for r in rest), 3),
        "rest_prefill_s": round(sum(r.get("prefill_s") or 0 for r in rest), 3),
        "full_prefill_rate": round(rate, 1) if rate else None,
        "bound_s": round(1.2 * tokens / rate, 3) if rate else None,
    }


def sweep_timing(rows: list[dict]) -> list[dict]:
    """Timing per rank (``rank`` 0, 1, ...) and, for a sharded run, over all ranks (``rank`` ``"all"``: wall time
    from the earliest start to the latest end; bound at the mean full-prefill rate). Only finished ("ok") rows with
    a duration count; an empty list when there are none."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("duration_s") and r.get("timestamp_utc")]
    by_rank: dict[int, list[dict]] = defaultdict(list)
    for r in ok:
        by_rank[int(r.get("rank") or 0)].append(r)
    out = [_stats(by_rank[k], k) for k in sorted(by_rank)]
    if len(out) > 1:
        total = _stats(ok, "all")
        rates = [s["full_prefill_rate"] for s in out if s["full_prefill_rate"]]
        rate = sum(rates) / len(rates) if rates else None
        total.update(
            first_cell_s=max(s["first_cell_s"] for s in out),
            full_prefill_rate=round(rate, 1) if rate else None,
            bound_s=round(1.2 * total["prompt_tokens"] / rate, 3) if rate else None,
        )
        out.append(total)
    return out


def format_timing(stats: list[dict]) -> str:
    """A plain-text table of :func:`sweep_timing`."""
    head = "rank  cells  prompt tok  reused  wall s  first cell s  full-prefill tok/s  bound s (1.2x)  wall/bound"
    lines = [head]
    for s in stats:
        rate = f"{s['full_prefill_rate']:,.0f}" if s["full_prefill_rate"] else "-"
        bound = f"{s['bound_s']:.1f}" if s["bound_s"] else "-"
        ratio = f"{s['wall_s'] / s['bound_s']:.2f}" if s["bound_s"] else "-"
        reused = f"{s['reused_tokens'] / s['prompt_tokens']:.0%}" if s["prompt_tokens"] else "-"
        lines.append(
            f"{s['rank']!s:>4}  {s['cells']:>5}  {s['prompt_tokens'] / 1e6:>9.2f}M  {reused:>6}  {s['wall_s']:>6.1f}"
            f"  {s['first_cell_s']:>12.1f}  {rate:>18}  {bound:>14}  {ratio:>10}"
        )
    parts = max(s["sittings"] for s in stats)
    if parts > 1:
        lines.append(f"(the run was stopped and resumed: wall times leave out the pauses between its {parts} sittings)")
    return "\n".join(lines)
