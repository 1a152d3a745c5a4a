"""The sweep runner: lengths × depths × trials, resumable, crash-safe, shardable.

Guarantees (the files are described in :mod:`yoco_eval.niah.store`, the grid in :mod:`yoco_eval.niah.grid`):

* Each finished cell is on disk before the next starts, so a crash (even SIGKILL) loses at most the cell in
  flight; a torn or unreadable line is set aside on restart, reported, and its cell run again.
* Rerunning the same command resumes: cells already present (ok or error) are skipped; ``retry_errors`` redoes
  the error cells. When the run finishes, ``results.jsonl`` holds every cell of the grid exactly once.
* The same folder with another grid is refused unless ``on_existing`` is ``extend`` or ``overwrite``.
* A failing cell (exception, out of memory) is recorded with ``status: "error"`` and its message; the sweep goes on.
* Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank takes its share of the cells and writes its own shard;
  rank 0 merges the shards into ``results.jsonl`` at the end. Without torchrun it is one process.
* Nothing is written when the inputs are bad: everything is validated first.

What each row records about cost (every field may be None: older rows lack them, and not every model can measure
each; readers treat a missing field as "not recorded"):

* ``prefill_s`` / ``decode_s``: seconds processing the prompt / generating the answer (the YOCO engine separates
  them; lm-eval models record only ``generate_s``, the whole call);
* ``peak_mem_bytes``: CUDA peak (``torch.cuda.max_memory_allocated``) during the call, on a GPU only;
* ``peak_rss_bytes``: the process's resident-set peak during the call (Linux ``VmHWM``, reset just before it;
  counts everything resident, weights and the haystack included, and the next prompt being built meanwhile);
* ``kv_bytes_per_token``: the model's K/V cache bytes per token of context (YOCO: its one shared cache;
  Transformer: every layer's; HF models: from their config), so the cache at a length is this × the length.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from yoco_eval.errors import YocoEvalError
from yoco_eval.niah.builder import Prompt, PromptBuilder, PromptFormat
from yoco_eval.niah.corpus import load_corpus
from yoco_eval.niah.grid import (  # noqa: F401 - SweepConfig, make_grid, plan_sweep: the runner's public API
    Cell,
    Plan,
    SweepConfig,
    assign_cells,
    cell_seed,
    depth_str,
    make_grid,
    parse_cell_id,
    plan_sweep,
    prefill_tokens,
    reconcile,
)
from yoco_eval.niah.memory import rss_peak, rss_peak_reset
from yoco_eval.niah.score import aggregate, score_output
from yoco_eval.niah.store import (  # noqa: F401 - JsonlAppender, read_jsonl: re-exported for callers and tests
    RESULTS,
    JsonlAppender,
    clear_run,
    load_results,
    merge,
    read_jsonl,
    read_run_json,
    write_run_json,
)
from yoco_eval.niah.tokens import tokenize_corpus
from yoco_eval.niah.variants import Variant
from yoco_eval.runinfo import dist_context, git_commit, hardware, utc_now  # noqa: F401 - git_commit, hardware: profile
from yoco_eval.tokenizer import as_tokenizer, load_tokenizer_spec, tokenizer_fingerprint, tokenizer_name

# --- one cell --------------------------------------------------------------------------------------------


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def _error_text(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}".strip()


def _empty_row(cell: Cell, cfg: SweepConfig, rank: int) -> dict[str, Any]:
    return {
        "cell": cell.id, "context_length": cell.length, "depth_percent": cell.depth, "trial": cell.trial,
        "seed": cell.seed, "status": "ok", "error": None, "prompt_tokens": None, "needles": [], "question": None,
        "expected": [], "output": None, "score": None, "metric": cfg.variant.metric, "duration_s": None,
        "prefill_s": None, "decode_s": None, "tokens_per_s": None, "peak_mem_bytes": None, "peak_rss_bytes": None,
        "kv_bytes_per_token": None, "timestamp_utc": None, "rank": rank, "prompt_excerpts": [],
    }  # fmt: skip


def run_cell(model, builder: PromptBuilder, cell: Cell, cfg: SweepConfig, rank: int = 0,
             built: Future | None = None) -> dict:  # fmt: skip
    """Build, generate and score one cell. Never raises for a model failure: returns an error row.

    ``built``: the cell's prompt already being built on a worker thread (its build error counts as the cell's)."""
    t0 = time.perf_counter()
    row = _empty_row(cell, cfg, rank)
    row["kv_bytes_per_token"] = getattr(model, "kv_bytes_per_token", None)
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
        rss_reset = rss_peak_reset()
        gen = model.generate(
            prompt.ids_list(), prompt.text, max_new_tokens=cfg.max_new_tokens, stop=list(cfg.variant.stop)
        )
        row.update(
            output=gen.text,
            n_generated=gen.n_generated,
            prefill_s=gen.prefill_s,
            decode_s=_round(getattr(gen, "decode_s", None)),
            reused_prompt_tokens=getattr(gen, "reused_tokens", 0),
            peak_mem_bytes=gen.peak_mem_bytes,
            peak_rss_bytes=rss_peak() if rss_reset else None,
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
    row["timestamp_utc"] = utc_now()
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


# --- estimates -------------------------------------------------------------------------------------------


def reuses_prefixes(model, cfg: SweepConfig) -> bool:
    """Whether this model will continue shared-haystack prompts from their shared prefix (the YOCO engine with
    its prefix cache on) rather than prefill each prompt whole."""
    return cfg.shared_haystack and getattr(model, "prefix", None) is not None


def estimate_seconds(plan: Plan, todo: list[Cell], tokens_per_s: float | None, model=None) -> tuple[float | None, str]:
    """Estimated run time and how it was obtained (measured rows, a given rate, or a one-cell probe). The rate is
    of tokens actually prefilled, so a shared haystack's reused prefixes are not counted as work."""
    tokens = prefill_tokens(todo, reuses_prefixes(model, plan.config))
    rows = [r for r in read_jsonl(plan.out / RESULTS) if r.get("status") == "ok" and r.get("duration_s")]
    if rows:
        work = sum(r["prompt_tokens"] - (r.get("reused_prompt_tokens") or 0) for r in rows)
        rate = work / sum(r["duration_s"] for r in rows)
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


def _describe(plan: Plan, run_json: dict, summary: dict, log) -> None:
    """The dry run's report: what would run, how many tokens, how long."""
    cfg, g, hs, mj = plan.config, plan.run_json["grid"], plan.run_json["haystack"], run_json["model"]
    log(f"needle sweep (dry run) → {plan.out}")
    log(f"  model      {mj['name']} ({mj['kind']}), tokenizer {mj['tokenizer']}")
    log(f"  variant    {cfg.variant.name} (needles={cfg.variant.num_needles}, metric={cfg.variant.metric})")
    log(
        f"  haystack   {hs['name']}: {hs['n_tokens']:,} tokens a pass; longest prompt = {hs['passes']:.2f} passes"
        + (" (corpus repeated)" if hs["repeated"] else "")
        + (", shared by every depth of a length and trial" if cfg.shared_haystack else "")
    )
    log(f"  lengths    {', '.join(str(L) for L in g['lengths'])}")
    log(f"  depths     {', '.join(f'{d:g}' for d in g['depths'])}")
    log(f"  trials     {g['trials']} (seed {g['seed']})")
    log(f"  cells      {summary['cells']} ({summary['done']} done, {summary['todo']} to run)")
    tokens = f"  tokens     {summary['tokens_todo']:,} prompt tokens to run ({summary['tokens_total']:,} in the grid)"
    if summary["prefill_todo"] != summary["tokens_todo"]:
        tokens += f"; {summary['prefill_todo']:,} to prefill, the rest continued from shared prefixes"
    log(tokens)
    log(f"  estimate   {_fmt_time(summary['estimated_s'])} ({summary['estimate_basis']})")


def _header(plan: Plan, run_json: dict, summary: dict, world: int, log) -> None:
    """One line before any work: model, grid size and where the results go."""
    g, mj = plan.run_json["grid"], run_json["model"]
    shape = f"{len(g['lengths'])} lengths × {len(g['depths'])} depths × {g['trials']} trials"
    todo = f"{summary['todo']} to run" + (f", {summary['done']} already done" if summary["done"] else "")
    ranks = f" on {world} ranks" if world > 1 else ""
    log(f"needle sweep: {mj['name']} ({mj['kind']}), {summary['cells']} cells ({shape}; {todo}){ranks} → {plan.out}")


# --- the sweep -------------------------------------------------------------------------------------------


def _existing_run(plan: Plan) -> tuple[dict | None, dict]:
    """The run already in ``plan.out`` (None) and the run.json to write: refuses folders that are not ours and
    other runs or grids (unless extend/overwrite)."""
    out, cfg = plan.out, plan.config
    existing = read_run_json(out) if out.is_dir() else None
    if existing is not None:
        return existing, reconcile(existing, plan.run_json, out, cfg.on_existing)
    if out.is_dir() and any(out.iterdir()):
        has_results = (out / RESULTS).exists() or any(out.glob("results.rank*.jsonl"))
        if not has_results:
            raise YocoEvalError(f"--out {out} exists and is not a needle run folder: pass an empty or new folder")
        if cfg.on_existing != "overwrite":
            raise YocoEvalError(f"{out} has results but no run.json: pass another --out, or --overwrite")
    return None, plan.run_json


def _summary(plan: Plan, todo: list[Cell], model) -> dict:
    return {
        "out": str(plan.out),
        "cells": len(plan.cells),
        "done": len(plan.cells) - len(todo),
        "todo": len(todo),
        "tokens_todo": sum(c.length for c in todo),
        "prefill_todo": prefill_tokens(todo, reuses_prefixes(model, plan.config)),
        "tokens_total": sum(c.length for c in plan.cells),
    }


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
    """Run (or with ``dry_run`` only describe) a sweep. Returns a summary dict: cell counts, ``dropped`` (lines of
    the results files that could not be read), and after a run ``ran``/``errors``/``aggregate``.

    Bad input raises YocoEvalError before anything is written."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    plan = plan_sweep(model, cfg, tokenizer=tokenizer, command=command)
    existing, run_json = _existing_run(plan)
    notes: list[str] = []
    keep = existing is not None and cfg.on_existing != "overwrite"
    done_rows = load_results(plan.out, notes) if keep else []
    for note in notes:
        log(note)
    done = {r["cell"] for r in done_rows if r.get("status") == "ok" or not cfg.retry_errors}
    todo = [c for c in plan.cells if c.id not in done]
    summary = _summary(plan, todo, model)
    summary["dropped"] = notes
    if dry_run:
        secs, how = estimate_seconds(plan, todo, tokens_per_s, model)
        summary.update(estimated_s=secs, estimate_basis=how, dry_run=True)
        _describe(plan, run_json, summary, log)
        return summary
    rank, world, dist = dist_context()
    if rank == 0:
        _header(plan, run_json, summary, world, log)
        plan.out.mkdir(parents=True, exist_ok=True)
        if cfg.on_existing == "overwrite":
            clear_run(plan.out)
        write_run_json(plan.out, run_json)
        if keep and (any(plan.out.glob("results.rank*.jsonl")) or cfg.retry_errors):
            merge(plan.out, _order(plan), drop_errors=cfg.retry_errors)
    if dist is not None:
        dist.barrier()
        done = {r["cell"] for r in load_results(plan.out) if r.get("status") == "ok" or not cfg.retry_errors}
    mine = [c for c in assign_cells(plan.cells, rank, world, cfg.shared_haystack) if c.id not in done]
    scores, n_err = _run_cells(model, plan, mine, rank, world, progress, log)
    if dist is not None:
        dist.barrier()
    if rank == 0:
        merge(plan.out, _order(plan))
        rows = read_jsonl(plan.out / RESULTS)
        summary.update(aggregate=aggregate(rows), rows=len(rows))
    summary.update(ran=len(mine), errors=n_err, rank=rank, world=world)
    return summary


def _order(plan: Plan) -> dict[str, int]:
    return {c.id: c.index for c in plan.cells}


def _progress_bar(mine: list[Cell], rank: int, world: int):
    from tqdm.auto import tqdm

    return tqdm(
        total=sum(c.length for c in mine),
        unit="tok",
        unit_scale=True,
        dynamic_ncols=True,
        desc=f"needle{'' if world == 1 else f' r{rank}'}",
        position=rank,
        leave=True,
    )


def _run_cells(model, plan: Plan, mine: list[Cell], rank: int, world: int, progress: bool, log):
    """Run this rank's cells, appending each row as it finishes. Returns (scores of ok cells, error count)."""
    target = plan.out / (RESULTS if world == 1 else f"results.rank{rank}.jsonl")
    writer = JsonlAppender(target)
    if writer.repaired.dropped:
        log(writer.repaired.describe(target))
    bar = _progress_bar(mine, rank, world) if progress else None
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
            row = run_cell(model, plan.builder, cell, plan.config, rank, built=this)
            writer.write(row)
            if row["status"] == "ok":
                scores.append(row["score"])
            else:
                n_err += 1
                log(f"cell {cell.id} failed: {row['error']}")
            if bar is not None:
                bar.update(cell.length)
                mean = f" mean {100 * sum(scores) / len(scores):.1f}%" if scores else ""
                bar.set_postfix_str(f"cells {i}/{len(mine)}{mean}" + (f" err {n_err}" if n_err else ""))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        writer.close()
        if bar is not None:
            bar.close()
    return scores, n_err


# --- drill-down ------------------------------------------------------------------------------------------


def reconstruct_prompt(run_dir: str | Path, cell: str, tokenizer=None) -> Prompt:
    """Rebuild the exact prompt of one cell from run.json (deterministic). ``tokenizer`` is needed only when
    run.json cannot say how to load it (an lm-eval model that is not a local HF folder)."""
    run_dir = Path(run_dir)
    meta = read_run_json(run_dir)
    if meta is None:
        raise YocoEvalError(f"{run_dir} has no run.json: give a needle run folder")
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
