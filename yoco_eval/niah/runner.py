"""The sweep runner: lengths × depths × trials, resumable, crash-safe, shardable.

Run folder (read by the report renderer; keep the layout)::

    <out>/run.json                  what was run (schema yoco-eval/needle-run/1)
    <out>/results.jsonl             one line per cell
    <out>/results.rank{r}.jsonl     per-rank shards while a torchrun sweep is in flight

Guarantees:

* Each result line is written with one ``write`` to an ``O_APPEND`` file and ``fsync``-ed before the next cell
  starts, so a crash (even SIGKILL) loses at most the cell in flight. A torn last line is cut off on restart.
* Rerunning the same command resumes: cells already present (ok or error) are skipped; ``retry_errors`` redoes
  the error cells. When the run finishes, ``results.jsonl`` holds every cell of the grid exactly once.
* A failing cell (exception, out of memory) is recorded with ``status: "error"`` and its message; the sweep goes on.
* Under ``torchrun`` (``WORLD_SIZE`` > 1) rank ``r`` takes cells ``i % world == r`` and writes its own shard;
  rank 0 merges the shards into ``results.jsonl`` at the end. Without torchrun it is one process.
* Nothing is written when the inputs are bad: everything is validated first.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yoco_eval.errors import YocoEvalError
from yoco_eval.niah.builder import Prompt, PromptBuilder, PromptFormat
from yoco_eval.niah.corpus import load_corpus
from yoco_eval.niah.score import aggregate, score_output
from yoco_eval.niah.tokens import tokenize_corpus
from yoco_eval.niah.variants import VARIANTS, Variant
from yoco_eval.tokenizer import as_tokenizer, load_tokenizer_spec, tokenizer_fingerprint, tokenizer_name, tokenizer_spec

SCHEMA = "yoco-eval/needle-run/1"
RESULTS = "results.jsonl"


@dataclass
class SweepConfig:
    lengths: list[int]
    depths: list[float]
    trials: int = 1
    seed: int = 0
    variant: Variant = field(default_factory=lambda: VARIANTS["single"])
    haystack: str = "pg-essays"
    haystack_normalize: str | None = None
    haystack_field: str = "text"
    max_new_tokens: int = 32
    out: str | Path = "reports/runs/needle"
    run_name: str | None = None
    verify: bool = True
    retry_errors: bool = False
    # one haystack (and needle) per length and trial, the depths moving the needle through it, as in Kamradt's
    # test (YOCO's own eval draws a haystack per sample, our default); lets a model reuse the shared prefix
    shared_haystack: bool = False


@dataclass(frozen=True)
class Cell:
    index: int
    length: int
    depth: float
    trial: int
    seed: int

    @property
    def id(self) -> str:
        return cell_id(self.length, self.depth, self.trial)


def depth_str(depth: float) -> str:
    """Depth as written in cell ids and seeds: shortest form that round-trips (``50``, ``33.3``, ``9.090909``)."""
    return format(float(depth), ".12g")


def cell_id(length: int, depth: float, trial: int) -> str:
    return f"L{int(length)}_D{depth_str(depth)}_T{int(trial)}"


def parse_cell_id(cell: str) -> tuple[int, float, int]:
    try:
        lpart, dpart, tpart = cell.split("_")
        assert lpart[0] == "L" and dpart[0] == "D" and tpart[0] == "T"
        return int(lpart[1:]), float(dpart[1:]), int(tpart[1:])
    except (ValueError, AssertionError, IndexError) as e:
        raise YocoEvalError(f"bad cell id {cell!r}: expected L<length>_D<depth>_T<trial>, e.g. L4096_D50_T0") from e


def cell_seed(seed: int, length: int, depth: float, trial: int, shared_haystack: bool = False) -> int:
    """Per-cell seed: a hash of the sweep seed and the cell coordinates (stable across runs and machines). With
    ``shared_haystack`` the depth is left out, so every depth of a (length, trial) draws the same haystack."""
    d = "*" if shared_haystack else depth_str(depth)
    h = hashlib.sha256(f"{int(seed)}|{int(length)}|{d}|{int(trial)}".encode()).digest()
    return int.from_bytes(h[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def make_grid(lengths, depths, trials: int, seed: int, shared_haystack: bool = False) -> list[Cell]:
    cells = []
    for L in lengths:
        for d in depths:
            for t in range(trials):
                cells.append(Cell(len(cells), int(L), float(d), t, cell_seed(seed, L, d, t, shared_haystack)))
    return cells


def assign_cells(cells: list[Cell], rank: int, world: int, shared_haystack: bool) -> list[Cell]:
    """This rank's cells, in the order to run them. Plain grids deal cells round-robin. Shared-haystack grids keep
    each (length, trial) haystack on one rank, deepest needle first (so each prompt shares the longest possible
    prefix with the one before), and balance ranks by tokens (largest haystacks first, to the lightest rank)."""
    if not shared_haystack:
        return [c for c in cells if c.index % world == rank]
    groups: dict[tuple[int, int], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.length, c.trial), []).append(c)
    load = [0] * world
    mine: list[Cell] = []
    for key in sorted(groups, key=lambda k: (-k[0] * len(groups[k]), k)):
        r = min(range(world), key=lambda i: (load[i], i))
        load[r] += key[0] * len(groups[key])
        if r == rank:
            mine.extend(sorted(groups[key], key=lambda c: -c.depth))
    return mine


# --- environment -----------------------------------------------------------------------------------------


def _utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def git_commit() -> str | None:
    """The code's commit: ``YOCO_EVAL_COMMIT`` when set (a copied tree whose .git lags), else git's HEAD."""
    if os.environ.get("YOCO_EVAL_COMMIT"):
        return os.environ["YOCO_EVAL_COMMIT"]
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def hardware(model=None) -> dict:
    dev = str(getattr(model, "device", "") or "")
    if dev.startswith("cuda"):
        try:
            import torch

            idx = torch.device(dev).index or 0
            return {"device": dev, "name": torch.cuda.get_device_name(idx)}
        except Exception:  # noqa: BLE001
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


def _dist_context() -> tuple[int, int, Any]:
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1, None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=_dt.timedelta(hours=72))
    return dist.get_rank(), dist.get_world_size(), dist


# --- crash-safe JSONL ------------------------------------------------------------------------------------


def _repair_tail(path: Path) -> None:
    """Cut a torn last line (a crash in the middle of a write) so appends start on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return
        back = min(size, 1 << 20)
        f.seek(size - back)
        chunk = f.read(back)
        cut = chunk.rfind(b"\n")
        f.truncate(size - back + cut + 1 if cut >= 0 else (0 if back == size else size - back))
        f.flush()
        os.fsync(f.fileno())


class JsonlAppender:
    """Appends one JSON object per line; each line is a single write, flushed and fsync-ed."""

    def __init__(self, path: Path):
        self.path = Path(path)
        _repair_tail(self.path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, row: dict) -> None:
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    if not Path(path).exists():
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line from a crash; the cell is simply redone
            if isinstance(row, dict) and "cell" in row:
                rows.append(row)
    return rows


def _atomic_write(path: Path, data: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load_results(run_dir: str | Path) -> list[dict]:
    """All result rows of a run folder: results.jsonl plus any shards, one row per cell (ok beats error)."""
    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / RESULTS)
    for shard in sorted(run_dir.glob("results.rank*.jsonl")):
        rows.extend(read_jsonl(shard))
    best: dict[str, dict] = {}
    for r in rows:
        prev = best.get(r["cell"])
        if prev is None or (prev.get("status") != "ok" and r.get("status") == "ok"):
            best[r["cell"]] = r
    return list(best.values())


def _merge(run_dir: Path, order: dict[str, int], drop_errors: bool = False) -> int:
    """Rewrite results.jsonl with every cell once (grid order), fold in and delete shard files."""
    rows = load_results(run_dir)
    if drop_errors:
        rows = [r for r in rows if r.get("status") == "ok"]
    rows.sort(key=lambda r: (order.get(r["cell"], len(order)), r["cell"]))
    _atomic_write(run_dir / RESULTS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    for shard in run_dir.glob("results.rank*.jsonl"):
        shard.unlink()
    return len(rows)


# --- planning & validation -------------------------------------------------------------------------------


@dataclass
class Plan:
    config: SweepConfig
    builder: PromptBuilder
    cells: list[Cell]
    run_json: dict
    out: Path


def _validate_grid(cfg: SweepConfig) -> None:
    if not cfg.lengths:
        raise YocoEvalError("no context lengths given: pass --lengths, e.g. 1k,4k,16k")
    for L in cfg.lengths:
        if not isinstance(L, int) or L < 1:
            raise YocoEvalError(f"context length {L!r} is not a positive integer: use e.g. 4096 or 4k")
    if not cfg.depths:
        raise YocoEvalError("no depths given: pass --depths, e.g. 0:100:11 or 0,50,100")
    for d in cfg.depths:
        if not 0.0 <= float(d) <= 100.0:
            raise YocoEvalError(f"depth {float(d):g} is outside 0–100: give depths in percent, e.g. 0:100:11")
    if len(set(cfg.lengths)) != len(cfg.lengths) or len({float(d) for d in cfg.depths}) != len(cfg.depths):
        raise YocoEvalError("lengths and depths must not repeat: remove the duplicates")
    if cfg.trials < 1:
        raise YocoEvalError(f"--trials {cfg.trials} must be at least 1")
    if cfg.max_new_tokens < 1:
        raise YocoEvalError(f"--max-new-tokens {cfg.max_new_tokens} must be at least 1")


def plan_sweep(model, cfg: SweepConfig, *, tokenizer=None, command: str | None = None) -> Plan:
    """Validate everything and prepare the builder. Raises YocoEvalError on bad input; writes nothing."""
    _validate_grid(cfg)
    tok = as_tokenizer(model.tokenizer)
    fp = tokenizer_fingerprint(tok)
    if tokenizer is not None:
        want = as_tokenizer(tokenizer)
        if tokenizer_fingerprint(want).rsplit(":", 1)[1] != fp.rsplit(":", 1)[1]:
            raise YocoEvalError(
                f"tokenizer mismatch: --tokenizer {tokenizer_name(want)} does not tokenize like the model's "
                f"{tokenizer_name(tok)}: drop --tokenizer or pick the model's own"
            )
    max_ctx = getattr(model, "max_context", None)
    if max_ctx:
        too_long = [L for L in cfg.lengths if L + cfg.max_new_tokens > max_ctx]
        if too_long:
            raise YocoEvalError(
                f"length {max(too_long)} + {cfg.max_new_tokens} new tokens exceeds the model's context of {max_ctx} "
                f"tokens: use lengths ≤ {max_ctx - cfg.max_new_tokens}"
            )
    corpus = load_corpus(cfg.haystack, normalize=cfg.haystack_normalize, field=cfg.haystack_field)
    tc = tokenize_corpus(corpus, tok)
    fmt = getattr(model, "prompt_format", None) or PromptFormat()
    builder = PromptBuilder(
        tok, tc, cfg.variant, fmt, prefix_tokens=int(getattr(model, "prompt_prefix_tokens", 0)), verify=cfg.verify
    )
    cells = make_grid(cfg.lengths, cfg.depths, cfg.trials, cfg.seed, cfg.shared_haystack)
    Lmin = min(cfg.lengths)
    need = max(builder.frame_tokens(builder.sample(c.depth, c.seed)) + 1 for c in cells if c.length == Lmin)
    if Lmin < need:
        raise YocoEvalError(
            f"length {Lmin} is below the prompt template's own size ({need - 1} tokens for instruction, question "
            f"and needles under {tokenizer_name(tok)}): use lengths ≥ {need}"
        )
    max_hay = max(cfg.lengths)
    run_name = cfg.run_name or Path(cfg.out).name
    run_json = {
        "schema": SCHEMA,
        "run_name": run_name,
        "created_utc": _utc(),
        "model": {
            "name": getattr(model, "name", type(model).__name__),
            "kind": getattr(model, "kind", "custom"),
            "checkpoint": getattr(model, "checkpoint", None),
            "checkpoint_sha256": getattr(model, "checkpoint_sha256", None),
            "tokenizer": tokenizer_name(tok),
            "tokenizer_fingerprint": fp,
            "tokenizer_spec": tokenizer_spec(tok),
            "max_context": max_ctx,
            "prompt_prefix_tokens": builder.prefix_tokens,
        },
        "haystack": {
            "name": corpus.name,
            "source": corpus.source,
            "spec": cfg.haystack,
            "n_tokens": tc.n_tokens,
            "repeated": max_hay > tc.n_tokens,
            "passes": round(max_hay / tc.n_tokens, 4),
            "normalize": corpus.normalize,
            "field": cfg.haystack_field,
            "sha256": corpus.sha256,
            "n_docs": corpus.n_docs,
            "units": tc.n_units,
        },
        "variant": cfg.variant.to_dict(),
        "grid": {
            "lengths": list(cfg.lengths),
            "depths": [float(d) for d in cfg.depths],
            "trials": cfg.trials,
            "seed": cfg.seed,
            "shared_haystack": cfg.shared_haystack,
        },
        "max_new_tokens": cfg.max_new_tokens,
        "prompt_format": fmt.to_dict(),
        "metric": cfg.variant.metric,
        "verify": cfg.verify,
        "git_commit": git_commit(),
        "hardware": hardware(model),
        "command": command if command is not None else " ".join(sys.argv),
        "yoco_eval_version": _version(),
        "tolerance_tokens": 0,
    }
    return Plan(config=cfg, builder=builder, cells=cells, run_json=run_json, out=Path(cfg.out))


def _version() -> str:
    from yoco_eval import __version__

    return __version__


# What makes two run.json the same run (a resume), with the value a key takes in run folders made before it existed.
_IDENTITY: dict[tuple[str, ...], Any] = {
    ("model", "name"): None,
    ("model", "tokenizer_fingerprint"): None,
    ("model", "prompt_prefix_tokens"): None,
    ("haystack", "sha256"): None,
    ("variant",): None,
    ("grid", "seed"): None,
    ("grid", "shared_haystack"): False,
    ("max_new_tokens",): None,
    ("prompt_format",): None,
}


def _dig(d: dict, path: tuple):
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _check_resume(existing: dict, new: dict, out: Path) -> dict:
    """Same run? Then return the merged run.json (grid = union of both grids); otherwise a clear error."""
    if existing.get("schema") != SCHEMA:
        raise YocoEvalError(f"{out}/run.json is not a needle run ({existing.get('schema')}): choose another --out")
    for path, default in _IDENTITY.items():
        a, b = _dig(existing, path), _dig(new, path)
        a, b = default if a is None else a, default if b is None else b
        if a != b:
            raise YocoEvalError(
                f"{out} already holds a different needle run ({'.'.join(path)} differs): pass another --out, "
                "or the same settings to resume it"
            )
    merged = dict(existing)
    g_old, g_new = existing["grid"], new["grid"]
    merged["grid"] = {
        **g_new,  # every other grid setting is part of the identity checked above
        "lengths": sorted(set(g_old["lengths"]) | set(g_new["lengths"])),
        "depths": sorted(set(map(float, g_old["depths"])) | set(map(float, g_new["depths"]))),
        "trials": max(g_old["trials"], g_new["trials"]),
        "seed": g_new["seed"],
    }
    h_old, h_new = existing["haystack"], new["haystack"]
    merged["haystack"] = {
        **h_old,
        "passes": max(h_old["passes"], h_new["passes"]),
        "repeated": h_old["repeated"] or h_new["repeated"],
    }
    merged["updated_utc"] = _utc()
    merged.setdefault("commands", [existing.get("command")]).append(new["command"])
    return merged


# --- running ---------------------------------------------------------------------------------------------


def _error_text(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}".strip()


def run_cell(model, builder: PromptBuilder, cell: Cell, cfg: SweepConfig, rank: int = 0,
             built: Future | None = None) -> dict:  # fmt: skip
    """Build, generate and score one cell. Never raises for a model failure: returns an error row.

    ``built``: the cell's prompt already being built on a worker thread (its build error counts as the cell's)."""
    t0 = time.perf_counter()
    row: dict[str, Any] = {
        "cell": cell.id,
        "context_length": cell.length,
        "depth_percent": cell.depth,
        "trial": cell.trial,
        "seed": cell.seed,
        "status": "ok",
        "error": None,
        "prompt_tokens": None,
        "needles": [],
        "question": None,
        "expected": [],
        "output": None,
        "score": None,
        "metric": cfg.variant.metric,
        "duration_s": None,
        "prefill_s": None,
        "tokens_per_s": None,
        "peak_mem_bytes": None,
        "timestamp_utc": None,
        "rank": rank,
        "prompt_excerpts": [],
    }
    prompt: Prompt | None = None
    try:
        prompt = built.result() if built is not None else builder.build(cell.length, cell.depth, cell.seed)
        row.update(
            prompt_tokens=prompt.n_tokens,
            needles=[n.to_row() for n in prompt.needles],
            question=prompt.question,
            expected=list(prompt.expected),
            metric=prompt.metric,
            prompt_excerpts=prompt.excerpts(),
            haystack_passes=round(prompt.passes, 4),
        )
        gen = model.generate(
            prompt.ids_list(), prompt.text, max_new_tokens=cfg.max_new_tokens, stop=list(cfg.variant.stop)
        )
        row.update(
            output=gen.text,
            n_generated=gen.n_generated,
            prefill_s=gen.prefill_s,
            reused_prompt_tokens=getattr(gen, "reused_tokens", 0),
            peak_mem_bytes=gen.peak_mem_bytes,
            score=score_output(gen.text, prompt.expected, prompt.metric),
            generate_s=round(gen.total_s, 6),
            tokens_per_s=round((prompt.n_tokens + gen.n_generated) / gen.total_s, 3) if gen.total_s > 0 else None,
        )
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - a failing cell is recorded and the sweep goes on
        row.update(status="error", error=_error_text(e), score=None)
        _free_memory()
    row["duration_s"] = round(time.perf_counter() - t0, 6)
    row["timestamp_utc"] = _utc()
    return row


def _free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def estimate_seconds(plan: Plan, todo: list[Cell], tokens_per_s: float | None, model=None) -> tuple[float | None, str]:
    """Estimated run time and how it was obtained (measured rows, a given rate, or a one-cell probe)."""
    tokens = sum(c.length for c in todo)
    rows = [r for r in read_jsonl(plan.out / RESULTS) if r.get("status") == "ok" and r.get("duration_s")]
    if rows:
        rate = sum(r["prompt_tokens"] for r in rows) / sum(r["duration_s"] for r in rows)
        return tokens / rate, f"{rate:,.0f} tokens/s measured over {len(rows)} finished cells"
    if tokens_per_s:
        return tokens / tokens_per_s, f"{tokens_per_s:,.0f} tokens/s given"
    if model is not None and todo:
        probe = min(todo, key=lambda c: c.length)
        row = run_cell(model, plan.builder, probe, plan.config)
        if row["status"] == "ok" and row["duration_s"]:
            rate = probe.length / row["duration_s"]
            return tokens / rate, f"{rate:,.0f} tokens/s from one probe cell at {probe.length} tokens (linear)"
    return None, "unknown (pass --tokens-per-s)"


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "unknown"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run_sweep(
    model,
    cfg: SweepConfig,
    *,
    tokenizer=None,
    progress: bool = True,
    dry_run: bool = False,
    tokens_per_s: float | None = None,
    command: str | None = None,
    log=None,
) -> dict:
    """Run (or with ``dry_run`` only describe) a sweep. Returns a summary dict (and, after a run, aggregates).

    Bad input raises YocoEvalError before anything is written."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    plan = plan_sweep(model, cfg, tokenizer=tokenizer, command=command)
    out = plan.out
    order = {c.id: c.index for c in plan.cells}
    existing = None
    if (out / "run.json").exists():
        try:
            existing = json.loads((out / "run.json").read_text())
        except json.JSONDecodeError as e:
            raise YocoEvalError(f"{out}/run.json is corrupt: delete the folder or pass another --out") from e
        run_json = _check_resume(existing, plan.run_json, out)
    elif out.exists() and any(out.iterdir()):
        if not (out / RESULTS).exists() and not any(out.glob("results.rank*.jsonl")):
            raise YocoEvalError(f"--out {out} exists and is not a needle run folder: pass an empty or new folder")
        raise YocoEvalError(f"{out} has results but no run.json: delete the folder or pass another --out")
    else:
        run_json = plan.run_json

    done_rows = load_results(out) if existing else []
    done = {r["cell"] for r in done_rows if r.get("status") == "ok" or not cfg.retry_errors}
    todo_all = [c for c in plan.cells if c.id not in done]
    summary = {
        "out": str(out),
        "cells": len(plan.cells),
        "done": len(plan.cells) - len(todo_all),
        "todo": len(todo_all),
        "tokens_todo": sum(c.length for c in todo_all),
        "tokens_total": sum(c.length for c in plan.cells),
    }

    if dry_run:
        secs, how = estimate_seconds(plan, todo_all, tokens_per_s, model)
        g = plan.run_json["grid"]
        log(f"needle sweep (dry run) → {out}")
        mj = run_json["model"]
        log(f"  model      {mj['name']} ({mj['kind']}), tokenizer {mj['tokenizer']}")
        log(f"  variant    {cfg.variant.name} (needles={cfg.variant.num_needles}, metric={cfg.variant.metric})")
        hs = plan.run_json["haystack"]
        log(
            f"  haystack   {hs['name']}: {hs['n_tokens']:,} tokens a pass; longest prompt = {hs['passes']:.2f} passes"
            + (" (corpus repeated)" if hs["repeated"] else "")
        )
        log(f"  lengths    {', '.join(str(L) for L in g['lengths'])}")
        log(f"  depths     {', '.join(f'{d:g}' for d in g['depths'])}")
        log(f"  trials     {g['trials']} (seed {g['seed']})")
        log(f"  cells      {summary['cells']} ({summary['done']} done, {summary['todo']} to run)")
        log(f"  tokens     {summary['tokens_todo']:,} prompt tokens to run ({summary['tokens_total']:,} in the grid)")
        log(f"  estimate   {_fmt_time(secs)} ({how})")
        summary.update(estimated_s=secs, estimate_basis=how, dry_run=True)
        return summary

    rank, world, dist = _dist_context()
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        _atomic_write(out / "run.json", json.dumps(run_json, indent=2, ensure_ascii=False) + "\n")
        if existing is not None and (any(out.glob("results.rank*.jsonl")) or cfg.retry_errors):
            _merge(out, order, drop_errors=cfg.retry_errors)
    if dist is not None:
        dist.barrier()
        done = {r["cell"] for r in load_results(out) if r.get("status") == "ok" or not cfg.retry_errors}
    mine = [c for c in assign_cells(plan.cells, rank, world, cfg.shared_haystack) if c.id not in done]
    target = out / (RESULTS if world == 1 else f"results.rank{rank}.jsonl")
    writer = JsonlAppender(target)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=sum(c.length for c in mine),
            unit="tok",
            unit_scale=True,
            dynamic_ncols=True,
            desc=f"needle{'' if world == 1 else f' r{rank}'}",
            position=rank,
            leave=True,
        )
    scores: list[float] = []
    n_err = 0
    # The next cell's prompt is built on a worker thread while the model runs this one (about 0.4 s of CPU per
    # 1M-token prompt that would otherwise leave the GPU idle).
    pool = ThreadPoolExecutor(1, thread_name_prefix="needle-build")

    def build(c: Cell) -> Future:
        return pool.submit(plan.builder.build, c.length, c.depth, c.seed)

    ahead = build(mine[0]) if mine else None
    try:
        for i, cell in enumerate(mine, 1):
            this, ahead = ahead, (build(mine[i]) if i < len(mine) else None)
            row = run_cell(model, plan.builder, cell, cfg, rank, built=this)
            writer.write(row)
            if row["status"] == "ok":
                scores.append(row["score"])
            else:
                n_err += 1
                log(f"cell {cell.id} failed: {row['error']}")
            if bar is not None:
                bar.update(cell.length)
                mean = f" mean {sum(scores) / len(scores):.2f}" if scores else ""
                bar.set_postfix_str(f"cells {i}/{len(mine)}{mean}" + (f" err {n_err}" if n_err else ""))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        writer.close()
        if bar is not None:
            bar.close()
    if dist is not None:
        dist.barrier()
    if rank == 0:
        _merge(out, order)
        rows = read_jsonl(out / RESULTS)
        summary.update(aggregate=aggregate(rows), rows=len(rows))
    summary.update(ran=len(mine), errors=n_err, rank=rank, world=world)
    return summary


# --- drill-down ------------------------------------------------------------------------------------------


def reconstruct_prompt(run_dir: str | Path, cell: str, tokenizer=None) -> Prompt:
    """Rebuild the exact prompt of one cell from run.json (deterministic). ``tokenizer`` is needed only when
    run.json cannot say how to load it (an lm-eval model that is not a local HF folder)."""
    run_dir = Path(run_dir)
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except FileNotFoundError as e:
        raise YocoEvalError(f"{run_dir} has no run.json: give a needle run folder") from e
    L, d, t = parse_cell_id(cell)
    d = next((float(x) for x in meta["grid"]["depths"] if depth_str(x) == depth_str(d)), d)
    m = meta["model"]
    if tokenizer is None:
        if not m.get("tokenizer_spec"):
            raise YocoEvalError(f"run.json does not say how to load tokenizer {m.get('tokenizer')}: pass tokenizer=")
        tokenizer = load_tokenizer_spec(m["tokenizer_spec"])
    tok = as_tokenizer(tokenizer)
    if tokenizer_fingerprint(tok).rsplit(":", 1)[1] != m["tokenizer_fingerprint"].rsplit(":", 1)[1]:
        raise YocoEvalError(f"tokenizer mismatch: the run used {m['tokenizer']}, not {tokenizer_name(tok)}")
    hs = meta["haystack"]
    corpus = load_corpus(hs["spec"], normalize=hs.get("normalize"), field=hs.get("field", "text"))
    if corpus.sha256 != hs["sha256"]:
        raise YocoEvalError(f"haystack {hs['spec']} changed since the run (sha256 differs): reinstall the same version")
    builder = PromptBuilder(
        tok,
        tokenize_corpus(corpus, tok),
        Variant.from_dict(meta["variant"]),
        PromptFormat.from_dict(meta.get("prompt_format")),
        prefix_tokens=int(m.get("prompt_prefix_tokens", 0)),
        verify=bool(meta.get("verify", True)),
    )
    return builder.build(L, d, cell_seed(meta["grid"]["seed"], L, d, t, bool(meta["grid"].get("shared_haystack"))))
