"""Where a sweep's time went, from its result rows: per rank, wall time against the time its prompts would take at
the model's full-prefill rate.

Each row carries ``duration_s`` (the whole cell), ``prefill_s``, ``prompt_tokens``, ``reused_prompt_tokens`` (prompt
tokens continued from the previous prompt's prefix instead of prefilled) and ``timestamp_utc`` (when the cell
ended). A rank's wall time runs from the start of its first cell to the end of its last. Its *full-prefill rate*
is measured on its own cells that reused nothing, the first cell left out (it pays the one-time kernel compilation
and autotuning, reported apart as ``first_cell_s``); ``bound_s`` is 1.2 x prompt tokens / that rate, the budget
that the issue-6 sweep target sets.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime


def _end(row: dict) -> float:
    return datetime.fromisoformat(row["timestamp_utc"].replace("Z", "+00:00")).timestamp()


def _stats(rows: list[dict], rank) -> dict:
    rows = sorted(rows, key=_end)
    start = min(_end(r) - r["duration_s"] for r in rows)
    tokens = sum(r.get("prompt_tokens") or 0 for r in rows)
    reused = sum(r.get("reused_prompt_tokens") or 0 for r in rows)
    rest = rows[1:]
    full = [r for r in rest if not r.get("reused_prompt_tokens") and r.get("prefill_s")]
    rate = sum(r["prompt_tokens"] for r in full) / sum(r["prefill_s"] for r in full) if full else None
    return {
        "rank": rank,
        "cells": len(rows),
        "prompt_tokens": tokens,
        "reused_tokens": reused,
        "wall_s": round(_end(rows[-1]) - start, 3),
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
    return "\n".join(lines)
