"""Cost next to accuracy: one row per context length with the score, the effective-length marker, and what the
length cost (median prefill and decode time, peak memory, K/V cache bytes).

Plain data from a :class:`~yoco_eval.report.load.NeedleRun`, for the run page and for a comparison of two runs.
A field no row recorded (rows written before these fields existed, or a model that cannot measure it) is None,
and the pages say "not recorded": never 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

from yoco_eval.niah.score import wilson
from yoco_eval.report import fmt
from yoco_eval.report.effective import EffectiveLength
from yoco_eval.report.heatmap import HeatmapTable, Tally
from yoco_eval.report.load import CellResult, NeedleRun

NOT_RECORDED = "not recorded"
#: The effective-length column's text for each :attr:`LengthCost.mark`.
MARKS = {
    "effective": "◀ effective length",
    "pass": "≥ threshold",
    "below": "below threshold",
    "unscored": "no score: the walk stops",
    "after": "",
    "": "",
}
#: How each memory source is named on the pages.
MEMORY_SOURCES = {
    "cuda": "GPU: torch.cuda.max_memory_allocated during the call",
    "rss": "RSS: the process's resident-set peak during the call, Linux VmHWM, weights, haystack and Python included",
}


@dataclass(frozen=True)
class LengthCost:
    """One context length of a run.

    Attributes:
        length: context length in tokens.
        tally: scores over every trial at this length (failed trials counted apart).
        interval: 95 % Wilson interval of the mean score (None with fewer than 2 scored trials).
        mark: ``"effective"`` (the effective length itself), ``"pass"`` (at or above the threshold, below the
            effective length), ``"below"`` (the first length under the threshold; ``"unscored"`` when it has no
            score, which also ends the walk), ``"after"`` (past it) or ``""`` (no effective length defined).
        prefill_s, decode_s: medians over the trials that recorded them; prefill only over prompts prefilled
            whole (a shared haystack's continued prompts are cheaper and would hide the cost of the length).
        peak_mem_bytes: the largest peak over the trials; ``mem_source`` says what was measured (``cuda`` or
            ``rss``, see :data:`MEMORY_SOURCES`), None when nothing was.
        kv_bytes_per_token: the model's K/V cache bytes per token; ``kv_bytes`` = that × ``length``.
    """

    length: int
    tally: Tally
    interval: tuple[float, float] | None
    mark: str
    prefill_s: float | None
    decode_s: float | None
    peak_mem_bytes: int | None
    mem_source: str | None
    kv_bytes_per_token: int | None
    kv_bytes: int | None

    def score_text(self) -> str:
        """``92.5 (85.1–96.4)``: the mean score % with its 95 % interval, ``—`` when nothing was scored."""
        if self.tally.mean is None:
            return fmt.DASH
        ci = f" ({fmt.pct(self.interval[0], 1)}–{fmt.pct(self.interval[1], 1)})" if self.interval else ""
        return fmt.pct(self.tally.mean, 1) + ci

    def cost_texts(self) -> dict[str, str]:
        """Formatted cost cells: ``prefill``, ``decode``, ``memory``, ``kv`` ("not recorded" where None)."""
        mem = fmt.bytes_(self.peak_mem_bytes) if self.peak_mem_bytes is not None else NOT_RECORDED
        if self.mem_source == "rss":
            mem += " (RSS)"
        return {
            "prefill": fmt.seconds(self.prefill_s) if self.prefill_s is not None else NOT_RECORDED,
            "decode": fmt.seconds(self.decode_s) if self.decode_s is not None else NOT_RECORDED,
            "memory": mem,
            "kv": fmt.bytes_(self.kv_bytes) if self.kv_bytes is not None else NOT_RECORDED,
        }


def _median(xs: list[float]) -> float | None:
    return median(xs) if xs else None


def _marks(lengths: tuple[int, ...], tallies: tuple[Tally, ...], eff: EffectiveLength | None) -> list[str]:
    """Each length's place in the effective-length walk (see :class:`LengthCost`)."""
    if eff is None or eff.threshold is None:
        return [""] * len(lengths)
    marks, stopped = [], False
    for n, t in zip(lengths, tallies):
        if eff.length is not None and n < eff.length:
            marks.append("pass")
        elif n == eff.length:
            marks.append("effective")
        elif not stopped:
            marks.append("below" if t.mean is not None else "unscored")
            stopped = True
        else:
            marks.append("after")
    return marks


def _memory(rows: list[CellResult]) -> tuple[int | None, str | None]:
    cuda = [r.peak_mem_bytes for r in rows if r.peak_mem_bytes is not None]
    if cuda:
        return max(cuda), "cuda"
    rss = [r.peak_rss_bytes for r in rows if r.peak_rss_bytes is not None]
    return (max(rss), "rss") if rss else (None, None)


def length_costs(run: NeedleRun, table: HeatmapTable, eff: EffectiveLength | None) -> list[LengthCost]:
    """One :class:`LengthCost` per length of ``table`` (ascending), from the run's rows."""
    by_len: dict[int, list[CellResult]] = {}
    for c in run.cells:
        by_len.setdefault(c.context_length, []).append(c)
    out = []
    for n, t, mark in zip(table.lengths, table.by_length, _marks(table.lengths, table.by_length, eff)):
        rows = by_len.get(n, [])
        whole = [r.prefill_s for r in rows if r.prefill_s is not None and not r.reused_prompt_tokens]
        decode = [r.decode_s for r in rows if r.decode_s is not None]
        mem, source = _memory(rows)
        kv = next((r.kv_bytes_per_token for r in rows if r.kv_bytes_per_token is not None), None)
        interval = wilson(t.mean, t.n_ok) if t.mean is not None and t.n_ok >= 2 else None
        out.append(
            LengthCost(
                n, t, interval, mark, _median(whole), _median(decode), mem, source, kv, None if kv is None else kv * n
            )  # fmt: skip
        )
    return out


def memory_note(costs: list[LengthCost]) -> str:
    """What the memory column measured, for the caption ("" when nothing was)."""
    sources = sorted({c.mem_source for c in costs if c.mem_source})
    return "; ".join(MEMORY_SOURCES[s] for s in sources)


@dataclass(frozen=True)
class CompareRow:
    """One length of a comparison: each side's :class:`LengthCost` (None where that run lacks the length)."""

    length: int
    a: LengthCost | None
    b: LengthCost | None

    @property
    def delta(self) -> float | None:
        """B − A mean score (0..1), None unless both sides were scored."""
        if self.a is None or self.b is None or self.a.tally.mean is None or self.b.tally.mean is None:
            return None
        return self.b.tally.mean - self.a.tally.mean


def compare_costs(a: list[LengthCost], b: list[LengthCost]) -> list[CompareRow]:
    """Both runs' lengths (the union, ascending), each side's accuracy and cost next to the other's."""
    da, db = {c.length: c for c in a}, {c.length: c for c in b}
    return [CompareRow(n, da.get(n), db.get(n)) for n in sorted(set(da) | set(db))]
