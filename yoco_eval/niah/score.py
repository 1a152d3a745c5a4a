"""Scoring needle answers and aggregating a sweep.

Metrics (per cell, in [0, 1]):

* ``substring``: 1 if the expected value occurs in the output (case-insensitive, whitespace collapsed). A value
  made only of digits must not be part of a longer number ("12345" does not match "123456").
* ``exact``: 1 if the output's first non-empty line, stripped of surrounding quotes, spaces and final
  punctuation, equals the expected value (case-insensitive).
* ``all_values``: the fraction of the expected values that occur in the output (substring rule each), like
  RULER's string_match_all but with the digit rule above.
* ``string_match_all`` / ``string_match_part``: RULER's own metrics: the fraction of the expected values that are
  case-insensitive substrings of the output / 1 if any of them is (no digit rule: RULER's scores, unchanged).

Aggregates give the mean, the count, the number of error cells (left out of the mean) and, when a group holds
two or more scored cells, a 95% Wilson score interval (for fractional scores the interval treats the mean as a
proportion of ``n`` trials: an approximation).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable

from yoco_eval.errors import YocoEvalError

Z95 = 1.959963984540054


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().casefold()


def contains(output: str, value: str) -> bool:
    out, val = _norm(output), _norm(value)
    if not val:
        return False
    if val.isdigit():
        return re.search(rf"(?<!\d){re.escape(val)}(?!\d)", out) is not None
    return val in out


def _exact(output: str, value: str) -> bool:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    first = first.strip().strip("\"'`\u201c\u201d\u2018\u2019*").strip()
    first = re.sub(r"[.!?,;:]+$", "", first).strip()
    return _norm(first) == _norm(value)


def score_output(output: str | None, expected: list[str], metric: str) -> float:
    if output is None:
        return 0.0
    if not expected:
        raise YocoEvalError("a cell has no expected answer: check the needle variant")
    if metric == "substring":
        return 1.0 if contains(output, expected[0]) else 0.0
    if metric == "exact":
        return 1.0 if _exact(output, expected[0]) else 0.0
    if metric == "all_values":
        return sum(contains(output, v) for v in expected) / len(expected)
    if metric in ("string_match_all", "string_match_part"):
        hits = [v.lower() in output.lower() for v in expected]
        return sum(hits) / len(hits) if metric == "string_match_all" else float(any(hits))
    raise YocoEvalError(
        f"unknown metric {metric!r}: use substring, exact, all_values, string_match_all or string_match_part"
    )


def wilson(mean: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``mean`` observed over ``n`` trials."""
    if n <= 0:
        return (0.0, 1.0)
    p = min(max(mean, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if p == 0.0 else lo, 1.0 if p == 1.0 else hi)


def _stat(scores: list[float], n_error: int) -> dict:
    n = len(scores)
    mean = sum(scores) / n if n else None
    out = {"mean": mean, "n": n, "n_error": n_error, "ci95": None}
    if n >= 2 and mean is not None:
        out["ci95"] = list(wilson(mean, n))
    return out


def aggregate(rows: Iterable[dict]) -> dict:
    """Per-length, per-depth, per-(length, depth) and overall statistics of result rows."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    errors: dict[tuple, int] = defaultdict(int)
    for r in rows:
        L, d = int(r["context_length"]), float(r["depth_percent"])
        keys = [("all",), ("length", L), ("depth", d), ("cell", L, d)]
        for k in keys:
            groups.setdefault(k, [])
            if r.get("status") == "ok" and r.get("score") is not None:
                groups[k].append(float(r["score"]))
            else:
                errors[k] += 1
    out = {
        "overall": _stat(groups.get(("all",), []), errors.get(("all",), 0)),
        "by_length": {},
        "by_depth": {},
        "by_cell": {},
    }
    for k in sorted(groups, key=lambda k: (k[0], *k[1:])):
        if k[0] == "length":
            out["by_length"][k[1]] = _stat(groups[k], errors[k])
        elif k[0] == "depth":
            out["by_depth"][k[1]] = _stat(groups[k], errors[k])
        elif k[0] == "cell":
            out["by_cell"][f"{k[1]}|{format(k[2], '.12g')}"] = _stat(groups[k], errors[k])
    return out


def format_table(agg: dict) -> str:
    """A plain-text depth × length table of mean scores, plus per-length means with 95% intervals."""
    lengths = sorted(agg["by_length"])
    depths = sorted(agg["by_depth"])
    lines = ["depth\\len " + " ".join(f"{L:>8}" for L in lengths)]
    for d in depths:
        cells = []
        for L in lengths:
            st = agg["by_cell"].get(f"{L}|{format(d, '.12g')}")
            cells.append(f"{st['mean']:>8.2f}" if st and st["mean"] is not None else f"{'-':>8}")
        lines.append(f"{d:>9g} " + " ".join(cells))
    lines.append("")
    for L in lengths:
        st = agg["by_length"][L]
        ci = f" [{st['ci95'][0]:.2f}, {st['ci95'][1]:.2f}]" if st["ci95"] else ""
        mean = f"{st['mean']:.3f}" if st["mean"] is not None else "-"
        lines.append(f"length {L:>8}: mean {mean}{ci}  n={st['n']} errors={st['n_error']}")
    o = agg["overall"]
    mean = f"{o['mean']:.3f}" if o["mean"] is not None else "-"
    ci = f" [{o['ci95'][0]:.2f}, {o['ci95'][1]:.2f}]" if o["ci95"] else ""
    lines.append(f"overall        : mean {mean}{ci}  n={o['n']} errors={o['n_error']}")
    return "\n".join(lines)
