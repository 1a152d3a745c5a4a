"""Profiling results (``yoco-eval/profile/1``) → charts of memory, prefill latency and throughput vs length."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yoco_eval.report import fmt
from yoco_eval.report.charts import LineChart, line_chart
from yoco_eval.report.load import _display, read_json_file
from yoco_eval.report.problems import Problem, ProblemLog

PROFILE_SCHEMA = "yoco-eval/profile/1"


@dataclass(frozen=True)
class ProfileRow:
    model: str
    context_length: int
    batch: int
    prefill_s: float | None
    decode_ms_per_token: float | None
    peak_mem_bytes: float | None
    throughput_tok_s: float | None
    status: str  # ok | oom | error
    error: str | None

    @property
    def series(self) -> tuple[str, int]:
        return self.model, self.batch


@dataclass
class Profile:
    path: Path
    shown: str
    meta: dict[str, Any]
    rows: list[ProfileRow]
    problems: list[Problem] = field(default_factory=list)

    @property
    def title(self) -> str:
        return str(self.meta.get("card") or self.path.stem)


def _f(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def is_profile(data: Any) -> bool:
    return isinstance(data, dict) and data.get("schema") == PROFILE_SCHEMA


def load_profile(path: Path | str, base: Path | None = None) -> Profile:
    """Read a profile JSON; bad rows are skipped with a problem naming the row index."""
    path = Path(path)
    shown = _display(path, base)
    log = ProblemLog()
    data = read_json_file(path, log, shown, "the profile file", "rerun the profiler, or remove the file")
    if data is not None and not is_profile(data):
        schema = data.get("schema") if isinstance(data, dict) else None
        log.add(
            shown,
            None,
            f"schema is {schema!r}, expected {PROFILE_SCHEMA!r}",
            "regenerate it with `yoco-eval profile`, or rename the file so it does not start with 'profile'",
        )
        data = None
    data = data or {}
    rows = []
    raw = data.get("rows", [])
    if not isinstance(raw, list):
        log.add(shown, None, "'rows' is not a list", "regenerate the file")
        raw = []
    for i, r in enumerate(raw):
        if (
            not isinstance(r, dict)
            or not isinstance(r.get("context_length"), int)
            or isinstance(r.get("context_length"), bool)
        ):
            log.add(shown, None, f"rows[{i}] has no integer context_length; row skipped", "fix or regenerate the file")
            continue
        status = r.get("status") if r.get("status") in ("ok", "oom", "error") else "error"
        err = r.get("error")
        if r.get("status") not in ("ok", "oom", "error"):
            err = f"unknown status {r.get('status')!r:.40}"
        batch = r.get("batch")
        rows.append(
            ProfileRow(
                # an fp8-cache run is its own series (the same model, a different cache; see yoco_eval.model.cache)
                model=fmt.text(r.get("model")) + (" (fp8 K/V)" if r.get("kv_dtype") == "fp8" else ""),
                context_length=r["context_length"],
                batch=batch if isinstance(batch, int) and not isinstance(batch, bool) else 1,
                prefill_s=_f(r.get("prefill_s")),
                decode_ms_per_token=_f(r.get("decode_ms_per_token")),
                peak_mem_bytes=_f(r.get("peak_mem_bytes")),
                throughput_tok_s=_f(r.get("throughput_tok_s")),
                status=status,
                error=None if err is None else fmt.text(err),
            )
        )
    meta = {k: data.get(k) for k in ("card", "date", "commit", "command")}
    return Profile(path, shown, meta, rows, log.items)


def profile_charts(profile: Profile) -> list[LineChart]:
    """Four charts against context length (log axis), one line per (model, batch); OOM/error points as ✕."""
    keys = list(dict.fromkeys(r.series for r in profile.rows))
    several_batches = len({b for _, b in keys}) > 1

    def name(k: tuple[str, int]) -> str:
        return f"{k[0]} (batch {k[1]})" if several_batches else k[0]

    def series(attr: str, scale: float, unit: str) -> list:
        out = []
        for k in keys:
            pts = []
            for r in profile.rows:
                if r.series != k:
                    continue
                v = getattr(r, attr)
                if r.status == "ok" and v is None:
                    continue  # not measured (e.g. a peer without a throughput run): no point, and no failure mark
                if r.status != "ok":
                    pts.append((r.context_length, None, f"{name(k)} @ {r.context_length:,}: {r.status.upper()}"))
                else:
                    pts.append(
                        (r.context_length, v * scale, f"{name(k)} @ {r.context_length:,}: {v * scale:,.3g} {unit}")
                    )
            out.append((name(k), pts))
        return out

    lengths = sorted({r.context_length for r in profile.rows})
    shown = dict(zip(lengths, fmt.length_labels(lengths)))
    common = dict(
        x_label="context length (tokens)", x_format=lambda v: shown.get(int(v), fmt.length(int(v))), x_log=True
    )
    return [
        line_chart(
            "Peak GPU memory",
            series("peak_mem_bytes", 1 / (1 << 30), "GiB"),
            y_label="GiB",
            y_format=lambda v: f"{v:g}",
            **common,
        ),
        line_chart(
            "Prefill latency", series("prefill_s", 1.0, "s"), y_label="seconds", y_format=lambda v: f"{v:g}", **common
        ),
        line_chart(
            "Throughput",
            series("throughput_tok_s", 1.0, "tok/s"),
            y_label="tokens / s",
            y_format=lambda v: f"{v:,.0f}",
            **common,
        ),
        line_chart(
            "Decode latency",
            series("decode_ms_per_token", 1.0, "ms/token"),
            y_label="ms / token",
            y_format=lambda v: f"{v:g}",
            **common,
        ),
    ]
