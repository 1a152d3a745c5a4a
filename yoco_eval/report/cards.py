"""Index cards: one per run or results file, named so that look-alike runs can be told apart.

Pure data (no file writes). A needle card says what model, grid and date it has; runs made with a preset's
seeded random weights (speed and memory runs, whose scores mean nothing) are flagged so the index can show
them apart; identical runs (same name, model, grid, hardware and score) collapse into one card that links
to each copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from yoco_eval.config import CONFIGS
from yoco_eval.report import fmt
from yoco_eval.report.effective import effective_length
from yoco_eval.report.heatmap import HeatmapTable
from yoco_eval.report.load import NeedleRun
from yoco_eval.report.problems import Problem
from yoco_eval.report.views import MiniHeatmap, mini_view

KIND_LABEL = {"needle": "needle run", "lm-eval": "lm-eval", "profile": "profile", "nll": "NLL run"}


@dataclass
class Card:
    kind: str  # needle | lm-eval | profile | nll
    id: str
    title: str
    href: str | None  # None: the page was never rendered (the index does not render other runs' pages)
    where: str  # the folder or file, relative to the index
    subtitle: str
    facts: list[tuple[str, str]]
    sort: dict[str, str]  # keys used by the client-side sort (strings; numbers zero-padded)
    search: str
    score: str
    mini: MiniHeatmap | None
    problems: list[Problem]
    speed: bool = False  # random weights: a speed/memory run whose scores are not meaningful
    effective: str = ""  # effective context length, e.g. "4K" (needle runs only)
    effective_tip: str = ""
    dedup: tuple = ()  # cards with equal non-empty keys are copies of one run
    copies: list[tuple[str | None, str]] = field(default_factory=list)  # (href, where) of collapsed copies


def random_weights(run: NeedleRun) -> bool:
    """True when the run used a preset's seeded random weights rather than a trained checkpoint.

    An explicit ``model.random_weights`` in run.json wins; otherwise a checkpoint that is a preset name
    (``yoco-3b``) with no checkpoint hash means the weights were generated, not loaded.
    """
    flag = run.get("model.random_weights")
    if isinstance(flag, bool):
        return flag
    ckpt = run.get("model.checkpoint")
    return isinstance(ckpt, str) and ckpt in CONFIGS and not run.get("model.checkpoint_sha256")


def grid_text(table: HeatmapTable, trials: object = None) -> str:
    """``8 lengths (128K–1M) × 11 depths × 2 trials``, or ``—`` for an empty grid."""
    lengths = table.lengths
    if not lengths:
        return fmt.DASH
    first, last = fmt.length_labels([lengths[0], lengths[-1]])
    tail = f" × {fmt.text(trials)} trial{'' if trials == 1 else 's'}" if trials is not None else ""
    return f"{len(lengths)} lengths ({first}–{last}) × {len(table.depths)} depths{tail}"


def short_date(ts: object) -> str:
    """``2026-11-27 09:32`` from an ISO timestamp ('' when unknown)."""
    s = str(ts or "")
    return s[:16].replace("T", " ") if len(s) >= 16 else s


def needle_card(i: int, run: NeedleRun, table: HeatmapTable, href: str | None, where: str) -> Card:
    o = table.overall
    lengths = table.lengths
    speed = random_weights(run)
    grid = grid_text(table, run.get("grid.trials"))
    eff = effective_length(lengths, table.by_length) if lengths else None
    facts = [
        ("model", fmt.text(run.get("model.name")) + (" (random weights)" if speed else "")),
        ("haystack", fmt.text(run.get("haystack.name"))),
        ("variant", fmt.text(run.get("variant.name"))),
        ("grid", grid),
        ("trials", f"{o.n_ok:,} ok, {o.n_error:,} failed"),
        ("hardware", fmt.text(run.get("hardware.name"))),
        ("created", short_date(run.get("created_utc")) or fmt.DASH),
        ("folder", where),
    ]
    subtitle = " · ".join(
        x for x in (str(run.get("model.name") or ""), grid if lengths else "", short_date(run.get("created_utc"))) if x
    )
    search = " ".join([run.name, *(v for _, v in facts), "speed random" if speed else ""]).lower()
    score = fmt.pct(o.mean, 1)
    return Card(
        kind="needle",
        id=f"r{i}",
        title=run.name,
        href=href,
        where=where,
        subtitle=subtitle or "needle run",
        facts=facts,
        sort={
            "name": run.name.lower(),
            "date": str(run.get("created_utc") or ""),
            "model": str(run.get("model.name") or "").lower(),
            "score": f"{o.mean:.6f}" if o.mean is not None and not speed else "",
            "length": f"{lengths[-1]:012d}" if lengths else "",
        },
        search=search,
        score=score,
        mini=mini_view(table),
        problems=run.problems,
        speed=speed,
        effective="" if speed or eff is None else eff.label(),
        effective_tip="" if speed or eff is None else eff.explain(),
        dedup=(
            (run.name, run.get("model.name"), grid, run.get("hardware.name"), run.get("variant.name"), score)
            if lengths and not run.problems
            else ()
        ),
    )


def collapse(cards: list[Card]) -> list[Card]:
    """Fold cards with equal ``dedup`` keys into the first (newest, given sorted input); the rest become copies."""
    out: list[Card] = []
    first: dict[tuple, Card] = {}
    for c in cards:
        keep = first.get(c.dedup) if c.dedup else None
        if keep is None:
            out.append(c)
            if c.dedup:
                first[c.dedup] = c
        else:
            keep.copies.append((c.href, c.where))
    return out


def newest_first(cards: list[Card]) -> list[Card]:
    """By date, newest first (undated last), then by title and folder: the order the page opens with."""
    dated = sorted((c for c in cards if c.sort.get("date")), key=lambda c: (c.title.lower(), c.where))
    dated.sort(key=lambda c: c.sort["date"], reverse=True)
    undated = sorted((c for c in cards if not c.sort.get("date")), key=lambda c: (c.title.lower(), c.where))
    return dated + undated


def option_labels(cards: list[Card]) -> dict[str, str]:
    """Compare-menu text per card id: the title, plus date and folder when titles repeat."""
    count: dict[str, int] = {}
    for c in cards:
        count[c.title] = count.get(c.title, 0) + 1
    labels = {}
    for c in cards:
        extra = [x for x in (short_date(c.sort.get("date")), c.where) if x] if count[c.title] > 1 else []
        labels[c.id] = " — ".join([c.title, ", ".join(extra)]) if extra else c.title
    return labels
