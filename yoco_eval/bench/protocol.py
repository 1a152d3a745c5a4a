"""The one timing protocol for every profile row, ours and the peers' (issue 20).

A system timed on its first call at a new length pays one-time costs there (Triton autotuning and compilation,
allocator growth, CUDA-graph capture); that call says how long a cold start takes, not how fast the system runs.
So each row is measured as:

1. the **cold** call: the first call at the timed length, recorded apart and never part of the median;
2. **warm-up** at the timed length: more calls until two consecutive ones agree within ``agree`` (3%) on every
   timed metric, at least ``min_warmup`` and at most ``max_warmup`` of them (the cold call counts as the first
   warm-up call);
3. ``runs`` (>= 3) **timed** calls: each metric's **median** and its **spread** ``(max - min) / median``.

A row carries ``protocol`` (:data:`PROTOCOL`), ``runs``, ``warmup_runs``, ``warm_converged``, ``median``,
``spread``, ``cold`` and ``samples`` (each a ``{metric: value}`` dict). :func:`require_protocol` refuses, with one
error line, to write a comparison whose rows do not follow it.

Example::

    timing = measure_steady(lambda: {"prefill_s": run_prefill()}, Protocol())
    row.update(timing.fields())
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from yoco_eval.errors import YocoEvalError

PROTOCOL = "steady/1"
"""Name of the protocol above; a row with another ``protocol`` (or none) is not a steady-state measurement."""

MIN_RUNS = 3


@dataclass(frozen=True)
class Protocol:
    """How many calls to make at the timed length.

    Args:
        runs: timed calls whose median is reported (>= 3 to follow the protocol).
        min_warmup: warm-up calls at the timed length, the cold call included (>= 1 to follow the protocol).
        max_warmup: stop warming after this many calls even if two consecutive ones never agreed (the row then
            says ``warm_converged: False``).
        agree: relative difference under which two consecutive warm-up calls count as agreeing.
    """

    runs: int = MIN_RUNS
    min_warmup: int = 2
    max_warmup: int = 5
    agree: float = 0.03

    def __post_init__(self):
        if self.runs < 1 or self.min_warmup < 0 or self.max_warmup < self.min_warmup or not 0 < self.agree < 1:
            raise YocoEvalError(
                f"bad timing protocol {self}: need runs >= 1, 0 <= min_warmup <= max_warmup, 0 < agree < 1"
            )

    @property
    def follows(self) -> bool:
        """Whether rows measured this way follow the protocol (a warm-up at the timed length and >= 3 runs)."""
        return self.runs >= MIN_RUNS and self.min_warmup >= 1


@dataclass(frozen=True)
class Timing:
    """What :func:`measure_steady` saw. Each dict maps a metric name (e.g. ``prefill_s``) to a value."""

    protocol: str
    cold: dict[str, float] | None
    warmup: list[dict[str, float]]
    samples: list[dict[str, float]]
    converged: bool

    @property
    def median(self) -> dict[str, float]:
        return {k: statistics.median(s[k] for s in self.samples) for k in self.samples[0]} if self.samples else {}

    @property
    def spread(self) -> dict[str, float]:
        """``(max - min) / median`` of each metric over the timed runs (0.0 for a single run)."""
        out = {}
        for k, med in self.median.items():
            vals = [s[k] for s in self.samples]
            out[k] = (max(vals) - min(vals)) / med if med else 0.0
        return out

    def fields(self) -> dict:
        """The row fields: ``protocol, runs, warmup_runs, warm_converged, median, spread, cold, samples``."""
        keys = self.samples[0] if self.samples else {}
        return {"protocol": self.protocol, "runs": len(self.samples), "warmup_runs": len(self.warmup),
                "warm_converged": self.converged, "median": self.median, "spread": self.spread, "cold": self.cold,
                "samples": {k: [s[k] for s in self.samples] for k in keys}}  # fmt: skip


def _agree(a: dict[str, float], b: dict[str, float], tol: float) -> bool:
    return all(abs(a[k] - b[k]) <= tol * min(abs(a[k]), abs(b[k])) for k in a)


def measure_steady(call: Callable[[], dict[str, float]], protocol: Protocol, log: Callable[[str], None] | None = None
                   ) -> Timing:  # fmt: skip
    """Time ``call`` under ``protocol``.

    Args:
        call: one complete measurement at the timed length (it synchronizes the device itself) returning
            ``{metric: value}``, the same keys every time (e.g. ``{"prefill_s": 2.94, "decode_ms_per_token": 13.0}``).
            An exception (out of memory, ...) propagates: the caller records the row as failed.
        protocol: how many warm-up and timed calls.
        log: optional progress lines (one per call).

    Returns:
        A :class:`Timing`. Its ``cold`` is the first call, which is also the first warm-up call and so never in the
        median; with ``min_warmup=0`` it is the first timed call and the timing's protocol is ``"none"``.
    """
    say = log or (lambda _: None)
    warm: list[dict[str, float]] = []
    converged = False
    while protocol.min_warmup and len(warm) < protocol.max_warmup:
        warm.append(dict(call()))
        say(f"  {'cold' if len(warm) == 1 else 'warm-up'} call {len(warm)}: " + _show(warm[-1]))
        converged = len(warm) >= 2 and _agree(warm[-2], warm[-1], protocol.agree)
        if converged and len(warm) >= protocol.min_warmup:
            break
    samples = []
    for i in range(protocol.runs):
        samples.append(dict(call()))
        say(f"  timed run {i + 1}: " + _show(samples[-1]))
    cold = warm[0] if warm else samples[0]  # without a warm-up the cold call is also timed: not the protocol
    return Timing(PROTOCOL if protocol.follows else "none", cold, warm, samples, converged)


def _show(m: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in m.items())


def follows(row: dict) -> bool:
    """Whether a profile row was measured under the protocol (an ``ok`` row: name, >= 3 runs, warm-up, cold)."""
    return (
        row.get("protocol") == PROTOCOL
        and isinstance(row.get("runs"), int)
        and row["runs"] >= MIN_RUNS
        and isinstance(row.get("warmup_runs"), int)
        and row["warmup_runs"] >= 1
        and isinstance(row.get("median"), dict)
        and isinstance(row.get("spread"), dict)
        and row.get("cold") is not None
    )


def require_protocol(rows: list[dict]) -> None:
    """Refuse a comparison (rows of two or more models) in which a measured row does not follow the protocol.

    Rows that did not run (``status`` ``oom`` / ``error``) carry no timing and are not checked. A profile of one
    model alone is not a comparison and is written whatever its protocol (its rows say which).

    Raises:
        YocoEvalError: one line naming the first offending row and the fix.
    """
    if len({r.get("model") for r in rows}) < 2:
        return
    for r in rows:
        if r.get("status") == "ok" and not follows(r):
            raise YocoEvalError(
                f"refusing to write a comparison row that is not steady state: {r.get('model')} at "
                f"{r.get('context_length')} tokens has protocol={r.get('protocol')!r}, runs={r.get('runs')!r}, "
                f"warmup_runs={r.get('warmup_runs')!r}; every compared row needs a warm-up at the timed length and "
                f">= {MIN_RUNS} timed runs (drop --runs/--warmup below {MIN_RUNS}/1, or profile one model at a time)"
            )


def wallclock(fn, *a, **kw):
    """``fn(*a, **kw)`` and its wall time in seconds, the device synchronized before and after."""
    import time

    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    r = fn(*a, **kw)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return r, time.perf_counter() - t


def autotune_policy() -> str:
    """Which Triton autotuning this process gives fla-core's kernels (ours and FLA's YOCO run the same ones)."""
    try:
        from yoco_eval.ops.retention import fla_pins_active
    except ImportError:  # no fla-core: nothing of it is tuned
        return "no fla-core"
    return "fla-core: yoco-eval's Hopper pins (its H100 picks)" if fla_pins_active() else "fla-core: full autotuning"
