"""The resumable NLL run: models x corpora, one JSONL line per (model, document), progress on stderr.

Layout of a run folder::

    <out>/nll.jsonl     one line per (model, corpus, tokens) pair, written when the pair finishes

Rules (as for the needle runs):

* Each line is appended and flushed when its pair finishes, so a crash (even SIGKILL) loses only the pair in flight.
  A torn last line (a crash in the middle of a write) is cut off on restart, and ignored when reading.
* Rerunning the same command resumes: a pair already recorded with ``status: ok`` is skipped; a pair recorded as
  ``status: error`` is retried (its new line supersedes the old one when reading).
* A failure (out of memory, a corpus too short, a model that will not load) is recorded as an error line with its
  message, and the run goes on with the next pair.

Line schema ``yoco-eval/nll/1``: ``model`` (label), ``model_path``, ``corpus``, ``n_tokens``, ``status``, ``error``,
``document`` (:meth:`Document.describe`), ``chunk``, ``device``, ``dtype``, ``seconds``, ``tokens_per_s``,
``peak_mem_bytes`` and ``base_mem_bytes`` (CUDA: peak, and allocated before the cache),
``max_rss_bytes`` (process, CPU), ``cache_bytes``, plus :func:`stream.summarize`'s
``n_scored``, ``nll_mean``, ``nll_sum``, ``bits_per_byte``, ``log_buckets``, ``linear_buckets``, ``cumulative``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from yoco_eval.errors import YocoEvalError
from yoco_eval.nll.corpora import build_document
from yoco_eval.nll.stream import stream_nll, summarize

SCHEMA = "yoco-eval/nll/1"
RESULTS = "nll.jsonl"


@dataclass
class NllConfig:
    """What to run. ``models``: checkpoint folders or preset names; ``labels``: their display names (default: the
    folder or preset name); ``corpora``: ``book``, ``code`` or paths; ``tokens``: document length in each model's
    own tokens."""

    models: list[str]
    corpora: list[str]
    tokens: int
    chunk: int = 2048
    device: str = "cpu"
    dtype: str = "float32"
    linear_width: int | None = None
    labels: list[str] = field(default_factory=list)

    def label(self, i: int) -> str:
        if i < len(self.labels) and self.labels[i]:
            return self.labels[i]
        return Path(self.models[i]).name or self.models[i]


def pair_key(row: dict) -> tuple:
    return (row.get("model"), row.get("corpus"), row.get("n_tokens"))


def repair_tail(path: Path) -> None:
    """Cut a torn last line (no final newline) so that appends start on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        f.seek(cut)
        f.truncate()


def read_results(path: str | Path) -> list[dict]:
    """The lines of an ``nll.jsonl``, the last line of each pair winning; unreadable (torn) lines are skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    if not path.is_file():
        raise YocoEvalError(f"{path} does not exist: run `yoco-eval nll` first or point at its nll.jsonl")
    rows: dict[tuple, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("schema") == SCHEMA:
            rows[pair_key(row)] = row
    return list(rows.values())


def _progress(label: str, corpus: str):
    state = {"t0": time.perf_counter(), "last": 0.0}

    def show(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - state["last"] < 1.0 and done < total:
            return
        state["last"] = now
        rate = done / max(now - state["t0"], 1e-9)
        sys.stderr.write(f"\r  {label} on {corpus}: {done:,}/{total:,} tokens ({rate:,.0f} tok/s)   ")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def score_pair(loaded, label: str, spec: str, corpus: str, cfg: NllConfig) -> dict:
    """Build the document for ``corpus`` with the model's tokenizer, stream it, summarize: one result line."""
    tok = loaded.tokenizer
    doc = build_document(corpus, tok, cfg.tokens)
    res = stream_nll(loaded.model, doc.tokens, chunk=cfg.chunk, bos_id=tok.bos_id, on_chunk=_progress(label, corpus))
    # without BOS the first token is context only: its bytes are not scored
    n_bytes = doc.n_bytes if tok.bos_id is not None else doc.n_bytes - len(tok.decode(doc.tokens[:1]).encode())
    return {
        **_head(label, spec, corpus, cfg),
        "status": "ok",
        "error": None,
        "document": doc.describe(),
        "seconds": res.seconds,
        "tokens_per_s": res.tokens_per_s,
        "peak_mem_bytes": res.peak_mem_bytes,
        "base_mem_bytes": res.base_mem_bytes,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "cache_bytes": res.cache_bytes,
        **summarize(res.nll, n_bytes, cfg.linear_width),
    }


def _head(label: str, spec: str, corpus: str, cfg: NllConfig) -> dict:
    """What every row records: the pair, its settings, and where and when it ran (card, commit, UTC time)."""
    from types import SimpleNamespace

    from yoco_eval.runinfo import git_commit, hardware, utc_now

    return {"schema": SCHEMA, "model": label, "model_path": spec, "corpus": corpus, "n_tokens": cfg.tokens,
            "chunk": cfg.chunk, "device": cfg.device, "dtype": cfg.dtype,
            "hardware": hardware(SimpleNamespace(device=cfg.device)), "commit": git_commit(),
            "timestamp_utc": utc_now()}  # fmt: skip


def _error_row(label: str, spec: str, corpus: str, cfg: NllConfig, e: BaseException) -> dict:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return {**_head(label, spec, corpus, cfg), "status": "error", "error": f"{type(e).__name__}: {msg}"}


def _append(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _load(spec: str, cfg: NllConfig):
    """The model as every other command runs it: loaded, then prepared by the Engine (fused projections, the
    shared Triton cache and fla-core's tuned configs on a GPU). Returns the Engine (``.model``, ``.tokenizer``)."""
    from yoco_eval.generate import Engine
    from yoco_eval.loading import resolve_model

    return Engine.load(resolve_model(spec), device=cfg.device, dtype=cfg.dtype)


def run_nll(cfg: NllConfig, out: str | Path, loader=None) -> Path:
    """Run every (model, corpus) pair not yet recorded in ``<out>/nll.jsonl``; returns that file's path.

    ``loader(spec, cfg)`` loads a model (default: :func:`yoco_eval.model.checkpoint.load_model`); a pair whose model
    fails to load or whose scoring raises is recorded as an error line."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS
    repair_tail(path)
    done = {pair_key(r) for r in read_results(path) if r.get("status") == "ok"} if path.is_file() else set()
    loader = loader or _load
    for i, spec in enumerate(cfg.models):
        label = cfg.label(i)
        todo = [c for c in cfg.corpora if (label, c, cfg.tokens) not in done]
        if not todo:
            print(f"{label}: all {len(cfg.corpora)} corpora done, skipped", file=sys.stderr)
            continue
        try:
            loaded = loader(spec, cfg)
        except Exception as e:  # a model that will not load fails its pairs, not the run
            for c in todo:
                _append(path, _error_row(label, spec, c, cfg, e))
            print(f"{label}: failed to load ({e})", file=sys.stderr)
            continue
        for c in todo:
            try:
                row = score_pair(loaded, label, spec, c, cfg)
            except Exception as e:  # recorded, not fatal (OOM included)
                row = _error_row(label, spec, c, cfg, e)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            _append(path, row)
            if row["status"] == "ok":
                print(f"{label} on {c}: nll {row['nll_mean']:.4f}, {row['bits_per_byte']:.4f} bits/byte, "
                      f"{row['tokens_per_s']:,.0f} tok/s", file=sys.stderr)  # fmt: skip
            else:
                print(f"{label} on {c}: {row['error']}", file=sys.stderr)
        del loaded
    return path
