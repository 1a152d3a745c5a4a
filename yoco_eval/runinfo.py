"""What a run records about where and when it ran: commit, hardware, UTC time, torchrun context, CPU threads.

Shared by the needle runner, its benchmark and ``profile``; the environment is read through
:func:`yoco_eval.settings.get` only.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from yoco_eval import settings


def utc_now() -> str:
    """Now, as ISO-8601 UTC with microseconds and a ``Z`` (the format of ``created_utc``/``timestamp_utc``)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def git_commit() -> str | None:
    """The code's commit: ``YOCO_EVAL_COMMIT`` when set (a copied tree whose .git lags), else git's HEAD, else
    None (an installed wheel)."""
    if settings.get().commit:
        return settings.get().commit
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def hardware(model=None) -> dict:
    """``{"device", "name"}`` of what ``model`` runs on (its ``device`` attribute; CPU when it has none)."""
    dev = str(getattr(model, "device", "") or "")
    if dev.startswith("cuda"):
        try:
            import torch

            idx = torch.device(dev).index or 0
            return {"device": dev, "name": torch.cuda.get_device_name(idx)}
        except Exception:  # noqa: BLE001 - a probe: the record says "cuda" rather than failing the run
            return {"device": dev, "name": "cuda"}
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"device": "cpu", "name": f"{name} ({os.cpu_count()} logical cores)"}


def write_record(out: str | Path, card, command: str, fields: dict) -> dict:
    """Write a benchmark's ``fields`` to ``out`` (JSON; folders made) after the provenance every recorded result
    carries: ``card``, ``date``, ``commit`` and the ``command`` that reproduces it. Returns the record."""
    record = {"card": card, "date": _dt.date.today().isoformat(), "commit": git_commit(), "command": command, **fields}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(record, indent=1))
    return record


def use_cpu_threads(n: int | None = None) -> int:
    """Set torch's intra-op CPU threads: ``n``, else ``YOCO_EVAL_THREADS``, else ONE. On small CPU machines
    OpenMP's second thread made our models several times slower (tests/conftest.py has the measurement)."""
    import torch

    n = int(n or settings.get().threads)
    torch.set_num_threads(n)
    return n


def dist_context() -> tuple[int, int, Any]:
    """``(rank, world, torch.distributed or None)``. Under torchrun (``WORLD_SIZE`` > 1) the gloo process group is
    started here (a sweep may run for days, hence the long timeout); otherwise ``(0, 1, None)``."""
    if settings.get().world_size <= 1:
        return 0, 1, None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=_dt.timedelta(hours=72))
    return dist.get_rank(), dist.get_world_size(), dist
