"""What a sweep runs: its settings, its cells (ids and seeds), which rank runs which, and the checked plan.

A cell is one (context length, depth, trial). Its id ``L<length>_D<depth>_T<trial>`` names it in results files
and reports; its seed is a hash of the sweep seed and those coordinates, so a cell builds the same prompt on any
machine, in any order, on any rank. :func:`plan_sweep` validates everything a run needs before anything is
written; :func:`reconcile` decides what happens when the run folder already holds a run.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yoco_eval.axes import format_depths, format_lengths
from yoco_eval.errors import YocoEvalError
from yoco_eval.niah.builder import PromptBuilder, PromptFormat
from yoco_eval.niah.corpus import load_corpus
from yoco_eval.niah.tokens import tokenize_corpus
from yoco_eval.niah.variants import VARIANTS, Variant
from yoco_eval.runinfo import git_commit, hardware, utc_now
from yoco_eval.tokenizer import as_tokenizer, tokenizer_fingerprint, tokenizer_name, tokenizer_spec

SCHEMA = "yoco-eval/needle-run/1"
ON_EXISTING = ("resume", "extend", "overwrite")


@dataclass
class SweepConfig:
    """One sweep. ``on_existing`` says what to do when ``out`` already holds a run: ``resume`` (only the same
    grid; anything else is refused), ``extend`` (add this grid's cells to it) or ``overwrite`` (start over)."""

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
    on_existing: str = "resume"


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
        if not (lpart[0] == "L" and dpart[0] == "D" and tpart[0] == "T"):
            raise ValueError(cell)
        return int(lpart[1:]), float(dpart[1:]), int(tpart[1:])
    except (ValueError, IndexError) as e:
        raise YocoEvalError(f"bad cell id {cell!r}: expected L<length>_D<depth>_T<trial>, e.g. L4096_D50_T0") from e


def cell_seed(seed: int, length: int, depth: float, trial: int, shared_haystack: bool = False) -> int:
    """Per-cell seed: a hash of the sweep seed and the cell coordinates (stable across runs and machines). With
    ``shared_haystack`` the depth is left out, so every depth of a (length, trial) draws the same haystack."""
    d = "*" if shared_haystack else depth_str(depth)
    h = hashlib.sha256(f"{int(seed)}|{int(length)}|{d}|{int(trial)}".encode()).digest()
    return int.from_bytes(h[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def make_grid(lengths, depths, trials: int, seed: int, shared_haystack: bool = False) -> list[Cell]:
    """Every cell, lengths outermost, then depths, then trials (the order of ``results.jsonl``)."""
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


def prefill_tokens(cells: list[Cell], shared_haystack: bool) -> int:
    """Prompt tokens a model that reuses shared prefixes must prefill: with ``shared_haystack`` each haystack's
    deepest prompt in full, every shallower one from its needle on (its prefix is the previous prompt's)."""
    if not shared_haystack:
        return sum(c.length for c in cells)
    groups: dict[tuple[int, int], list[float]] = {}
    for c in cells:
        groups.setdefault((c.length, c.trial), []).append(c.depth)
    total = 0.0
    for (length, _), depths in groups.items():
        depths = sorted(depths, reverse=True)
        total += length + sum(length * (1 - d / 100.0) for d in depths[1:])
    return int(round(total))


# --- validation ------------------------------------------------------------------------------------------


def validate_grid(cfg: SweepConfig) -> None:
    if not cfg.lengths:
        raise YocoEvalError("no context lengths given: pass --lengths, e.g. 1k,4k,16k")
    for L in cfg.lengths:
        if not isinstance(L, int) or isinstance(L, bool) or L < 1:
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
    if cfg.on_existing not in ON_EXISTING:
        raise YocoEvalError(f"on_existing={cfg.on_existing!r}: use one of {', '.join(ON_EXISTING)}")
    check_out_folder(cfg.out)


def check_out_folder(out) -> None:
    """``--out`` must be a folder or a path that can become one (no file in the way, at any level)."""
    p = Path(out)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                where = "" if q == p else f" (its parent {q} is a file)"
                raise YocoEvalError(f"--out {out} is not a folder{where}: pass a new or existing folder")
            return


# --- the plan --------------------------------------------------------------------------------------------


@dataclass
class Plan:
    config: SweepConfig
    builder: PromptBuilder
    cells: list[Cell]
    run_json: dict
    out: Path


def _check_model(model, cfg: SweepConfig, tok, tokenizer) -> None:
    if tokenizer is not None:
        want = as_tokenizer(tokenizer)
        if tokenizer_fingerprint(want).rsplit(":", 1)[1] != tokenizer_fingerprint(tok).rsplit(":", 1)[1]:
            raise YocoEvalError(
                f"tokenizer mismatch: --tokenizer {tokenizer_name(want)} does not tokenize like the model's "
                f"{tokenizer_name(tok)}: drop --tokenizer or pick the model's own"
            )
    max_ctx = getattr(model, "max_context", None)
    too_long = [L for L in cfg.lengths if max_ctx and L + cfg.max_new_tokens > max_ctx]
    if too_long:
        raise YocoEvalError(
            f"length {max(too_long)} + {cfg.max_new_tokens} new tokens exceeds the model's context of {max_ctx} "
            f"tokens: use lengths ≤ {max_ctx - cfg.max_new_tokens}"
        )


def plan_sweep(model, cfg: SweepConfig, *, tokenizer=None, command: str | None = None) -> Plan:
    """Validate everything and prepare the builder. Raises YocoEvalError on bad input; writes nothing."""
    validate_grid(cfg)
    tok = as_tokenizer(model.tokenizer)
    _check_model(model, cfg, tok, tokenizer)
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
    run_json = _run_json(model, cfg, tok, corpus, tc, builder, fmt, command)
    return Plan(config=cfg, builder=builder, cells=cells, run_json=run_json, out=Path(cfg.out))


def _run_json(model, cfg: SweepConfig, tok, corpus, tc, builder, fmt, command) -> dict:
    """run.json (schema ``yoco-eval/needle-run/1``): what was run, on what, from which code."""
    from yoco_eval import __version__

    max_hay = max(cfg.lengths)
    return {
        "schema": SCHEMA,
        "run_name": cfg.run_name or Path(cfg.out).name,
        "created_utc": utc_now(),
        "model": {
            "name": getattr(model, "name", type(model).__name__),
            "kind": getattr(model, "kind", "custom"),
            "checkpoint": getattr(model, "checkpoint", None),
            "checkpoint_sha256": getattr(model, "checkpoint_sha256", None),
            "tokenizer": tokenizer_name(tok),
            "tokenizer_fingerprint": tokenizer_fingerprint(tok),
            "tokenizer_spec": tokenizer_spec(tok),
            "max_context": getattr(model, "max_context", None),
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
        "yoco_eval_version": __version__,
        "tolerance_tokens": 0,
    }


# --- an existing run folder ------------------------------------------------------------------------------

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


def grid_difference(old: dict, new: dict) -> str | None:
    """How two run.json grids differ, in words (``lengths 1k,2k -> 512,1k; trials 4 -> 2``); None if the same."""
    parts = []
    lo, ln = [int(x) for x in old["lengths"]], [int(x) for x in new["lengths"]]
    if sorted(lo) != sorted(ln):
        parts.append(f"lengths {format_lengths(sorted(lo))} -> {format_lengths(sorted(ln))}")
    do, dn = sorted(map(float, old["depths"])), sorted(map(float, new["depths"]))
    if do != dn:
        parts.append(f"depths {format_depths(do)} -> {format_depths(dn)}")
    if int(old["trials"]) != int(new["trials"]):
        parts.append(f"trials {old['trials']} -> {new['trials']}")
    return "; ".join(parts) or None


def another_grid(out, diff: str) -> YocoEvalError:
    """The one-line refusal for another grid on a run folder, with the ways out."""
    return YocoEvalError(
        f"{out} already holds a run of another grid ({diff}): pass --out NEW for a separate run, "
        "--extend to add these cells to it, or --overwrite to replace it"
    )


def reconcile(existing: dict, new: dict, out: Path, on_existing: str) -> dict:
    """The run.json to write over an existing run: the same run resumes (``extend``: grid = union of both);
    another run, or another grid without ``extend``/``overwrite``, is refused in one line."""
    if existing.get("schema") != SCHEMA:  # not ours: never resumed, extended or deleted
        raise YocoEvalError(f"{out}/run.json is not a needle run ({existing.get('schema')}): choose another --out")
    if on_existing == "overwrite":
        return new
    for path, default in _IDENTITY.items():
        a, b = _dig(existing, path), _dig(new, path)
        a, b = default if a is None else a, default if b is None else b
        if a != b:
            raise YocoEvalError(
                f"{out} already holds a different needle run ({'.'.join(path)} differs): pass another --out, "
                "the same settings to resume it, or --overwrite to replace it"
            )
    diff = grid_difference(existing["grid"], new["grid"])
    if diff and on_existing != "extend":
        raise another_grid(out, diff)
    merged = dict(existing)
    g_old, g_new = existing["grid"], new["grid"]
    merged["grid"] = {
        **g_new,  # every other grid setting is part of the identity checked above
        "lengths": sorted(set(g_old["lengths"]) | set(g_new["lengths"])),
        "depths": sorted(set(map(float, g_old["depths"])) | set(map(float, g_new["depths"]))),
        "trials": max(g_old["trials"], g_new["trials"]),
    }
    h_old, h_new = existing["haystack"], new["haystack"]
    merged["haystack"] = {
        **h_old,
        "passes": max(h_old["passes"], h_new["passes"]),
        "repeated": h_old["repeated"] or h_new["repeated"],
    }
    merged["updated_utc"] = utc_now()
    merged["commands"] = [*existing.get("commands", [existing.get("command")]), new["command"]]
    return merged
