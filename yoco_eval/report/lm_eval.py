"""lm-eval 0.4.13 results files (``results_<timestamp>.json``) → a task table with runs side by side.

Only the documented top-level keys are read: ``results`` (``{task: {"<metric>,<filter>": value,
"<metric>_stderr,<filter>": stderr | "N/A", "alias": ...}}``), ``groups``/``group_subtasks``,
``higher_is_better``, ``n-samples``, ``config``, ``date`` (Unix seconds), ``model_name``, ``git_hash``,
``lm_eval_version`` and ``total_evaluation_time_seconds``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from yoco_eval.report import fmt
from yoco_eval.report.heatmap import score_colour
from yoco_eval.report.load import _display, read_json_file
from yoco_eval.report.problems import Problem, ProblemLog

Key = tuple[str, str, str]  # task, metric, filter


@dataclass
class LmEvalRun:
    path: Path
    shown: str
    label: str
    facts: list[tuple[str, str]]
    values: dict[Key, tuple[Any, Any]]  # (value, stderr)
    order: list[Key]
    aliases: dict[str, str]
    groups: set[str]
    higher_is_better: dict[tuple[str, str], bool]
    problems: list[Problem] = field(default_factory=list)


def _date(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return datetime.fromtimestamp(v, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return fmt.text(v)


def load_lm_eval(path: Path | str, base: Path | None = None) -> LmEvalRun:
    """Read one lm-eval results JSON; problems are recorded, never raised."""
    path = Path(path)
    shown = _display(path, base)
    log = ProblemLog()
    data = read_json_file(
        path, log, shown, "the lm-eval results file", "rerun lm_eval with --output_path, or remove the file"
    )
    if data is not None and (not isinstance(data, dict) or not isinstance(data.get("results"), dict)):
        log.add(
            shown,
            None,
            "has no 'results' object, so it is not an lm-eval results file",
            "point the report at lm-eval's results_<timestamp>.json, or rename this file",
        )
        data = None
    data = data or {}
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    label = data.get("model_name") or config.get("model_args") or config.get("model") or path.parent.name
    values: dict[Key, tuple[Any, Any]] = {}
    order: list[Key] = []
    aliases: dict[str, str] = {}
    for task, metrics in (data.get("results") or {}).items():
        if not isinstance(metrics, dict):
            log.add(shown, None, f"results[{task!r}] is not an object; task skipped", "regenerate the file")
            continue
        if isinstance(metrics.get("alias"), str):
            aliases[task] = metrics["alias"]
        for k, v in metrics.items():
            if "," not in k or "_stderr," in k:
                continue
            metric, flt = k.split(",", 1)
            key = (str(task), metric, flt)
            values[key] = (v, metrics.get(f"{metric}_stderr,{flt}"))
            order.append(key)
    hib: dict[tuple[str, str], bool] = {}
    for task, m in (data.get("higher_is_better") or {}).items():
        if isinstance(m, dict):
            hib.update({(task, k): bool(v) for k, v in m.items() if isinstance(v, bool)})
    groups = set(data["groups"]) if isinstance(data.get("groups"), dict) else set()
    if isinstance(data.get("group_subtasks"), dict):  # leaves map to [], groups to their subtasks
        groups |= {k for k, v in data["group_subtasks"].items() if v}
    n_samples = data.get("n-samples") if isinstance(data.get("n-samples"), dict) else {}
    total = data.get("total_evaluation_time_seconds")
    try:
        total_s = fmt.seconds(float(total)) if total is not None else "—"
    except (TypeError, ValueError):
        total_s = fmt.text(total)
    facts = [
        ("model", fmt.text(config.get("model"))),
        ("model args", fmt.text(config.get("model_args"))),
        ("date", _date(data.get("date"))),
        ("lm-eval", fmt.text(data.get("lm_eval_version"))),
        ("git", fmt.text(data.get("git_hash"))),
        ("batch size", fmt.text(config.get("batch_size"))),
        ("limit", fmt.text(config.get("limit"))),
        ("device", fmt.text(config.get("device"))),
        ("evaluation time", total_s),
        (
            "samples",
            fmt.text(
                sum(v.get("effective", 0) for v in n_samples.values() if isinstance(v, dict)) if n_samples else None
            ),
        ),
        ("file", shown),
    ]
    return LmEvalRun(path, shown, str(label), facts, values, order, aliases, groups, hib, log.items)


@dataclass(frozen=True)
class LmCell:
    text: str
    stderr: str
    chip: str | None  # colour chip for 0..1 metrics where higher is better
    best: bool


@dataclass(frozen=True)
class LmRow:
    task: str
    alias: str
    metric: str
    filter: str
    group: bool
    cells: tuple[LmCell, ...]


def _num(v: Any) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def lm_eval_table(runs: list[LmEvalRun]) -> list[LmRow]:
    """Union of (task, metric, filter) rows in first-seen order, one column per run."""
    keys = list(dict.fromkeys(k for r in runs for k in r.order))
    rows = []
    for key in keys:
        task, metric, flt = key
        hib = next((r.higher_is_better[(task, metric)] for r in runs if (task, metric) in r.higher_is_better), None)
        nums = [_num(r.values[key][0]) if key in r.values else None for r in runs]
        known = [n for n in nums if n is not None]
        best = (max(known) if hib else min(known)) if known and hib is not None and len(runs) > 1 else None
        cells = []
        for r, n in zip(runs, nums):
            if key not in r.values:
                cells.append(LmCell("—", "", None, False))
                continue
            v, se = r.values[key]
            se_n = _num(se)
            text = f"{n:.4f}" if n is not None else fmt.text(v)
            chip = score_colour(n) if n is not None and hib and 0 <= n <= 1 else None
            cells.append(
                LmCell(
                    text,
                    f"± {se_n:.4f}" if se_n is not None else "",
                    chip,
                    best is not None and n == best and len(known) > 1,
                )
            )
        alias = next((r.aliases[task] for r in runs if task in r.aliases), task)
        rows.append(LmRow(task, alias, metric, flt, any(task in r.groups for r in runs), tuple(cells)))
    return rows
