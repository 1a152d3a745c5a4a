"""Effective context length: the longest length up to which a model keeps its short-context score.

The definition follows RULER (the longest length whose score stays above a threshold) with NoLiMa's default
threshold (85 % of the model's own score at its shortest length). Lengths are walked from the shortest up;
the first length that falls below the threshold, or that has no scored trial, ends the walk, so one lucky
long length after a collapse does not extend it.

``rule`` says what must clear the threshold at each length: ``"mean"`` (default) the mean score, ``"lower"``
the lower end of its 95 % Wilson interval (stricter: few trials cannot pass by luck; a length with a single
scored trial has no interval and is judged by its mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from yoco_eval.niah.score import wilson
from yoco_eval.report import fmt
from yoco_eval.report.heatmap import Tally

#: NoLiMa's default: a length counts while its score is at least this fraction of the shortest length's score.
DEFAULT_RATIO = 0.85
RULES = ("mean", "lower")


@dataclass(frozen=True)
class EffectiveLength:
    """Result of :func:`effective_length`.

    Attributes:
        length: the effective context length in tokens, or None when not even the shortest length clears.
        threshold: the score (0..1) each length had to reach.
        base: the mean score at the shortest length (the reference of a relative threshold), or None.
        relative: the threshold was a fraction of ``base`` (else an absolute score).
        all_pass: every tested length cleared, so the true effective length may be longer than tested.
        interval: 95 % Wilson interval of the mean at ``length`` (None when undefined or a single trial).
        reason: why ``length`` is None ("" otherwise).
    """

    length: int | None
    threshold: float | None
    base: float | None
    relative: bool
    all_pass: bool
    interval: tuple[float, float] | None
    reason: str

    def label(self) -> str:
        """Short text for a card or a tile: ``4K``, ``≥ 8K`` (every tested length passed) or ``—``."""
        if self.length is None:
            return fmt.DASH
        return ("≥ " if self.all_pass else "") + fmt.length(self.length)

    def explain(self) -> str:
        """One sentence: the threshold and how it was set, and the interval at the effective length."""
        if self.threshold is None:
            return f"effective length undefined: {self.reason}"
        how = (
            f"{fmt.pct(self.threshold, 1)}% = {round(self.threshold / self.base * 100) if self.base else 0}% of the "
            f"score at the shortest length ({fmt.pct(self.base, 1)}%)"
            if self.relative
            else f"{fmt.pct(self.threshold, 1)}% (absolute)"
        )
        if self.length is None:
            return f"threshold {how}; {self.reason}"
        ci = ""
        if self.interval:
            ci = f", 95% interval there {fmt.pct(self.interval[0], 1)}–{fmt.pct(self.interval[1], 1)}%"
        more = " (every tested length passed)" if self.all_pass else ""
        return f"longest length scoring ≥ {how}: {self.length:,} tokens{more}{ci}"


def effective_length(
    lengths: Sequence[int],
    tallies: Sequence[Tally],
    *,
    ratio: float = DEFAULT_RATIO,
    threshold: float | None = None,
    rule: str = "mean",
) -> EffectiveLength:
    """The longest context length whose score stays at or above a threshold, walking up from the shortest.

    Args:
        lengths: tested context lengths, ascending (a :class:`HeatmapTable`'s ``lengths``).
        tallies: one tally per length over all its trials (the table's ``by_length``); scores in 0..1.
        ratio: relative threshold, a fraction of the mean score at the shortest length (default 0.85).
        threshold: an absolute score in 0..1 instead; when given, ``ratio`` is ignored.
        rule: ``"mean"`` compares the mean score, ``"lower"`` the lower end of its 95 % Wilson interval.

    Returns:
        An :class:`EffectiveLength`; ``length`` is None (with ``reason``) when nothing qualifies, including a
        relative threshold when the shortest length scored 0 or was not scored (no reference to take 85 % of).
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if len(lengths) != len(tallies):
        raise ValueError(f"{len(lengths)} lengths but {len(tallies)} tallies")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"an absolute threshold is a score in 0..1, got {threshold}")
    base = tallies[0].mean if tallies else None
    relative = threshold is None
    if relative:
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        if base is None or base <= 0.0:
            why = "no length was scored" if base is None else "the model scores 0 at its shortest length"
            return EffectiveLength(None, None, base, True, False, None, why)
        threshold = ratio * base
    best, best_ci = None, None
    for n, t in zip(lengths, tallies):
        if t.mean is None:
            break
        ci = wilson(t.mean, t.n_ok) if t.n_ok >= 2 else None
        value = t.mean if rule == "mean" or ci is None else ci[0]
        if value < threshold - 1e-12:
            break
        best, best_ci = n, ci
    if best is None:
        return EffectiveLength(None, threshold, base, relative, False, None, "the shortest length is below it")
    return EffectiveLength(best, threshold, base, relative, best == lengths[-1], best_ci, "")
