"""Cold start: how long the first cell of a fresh needle sweep takes, and where that time goes (issue 20's row
"cold start"). Run from the repo root on the GPU machine:

    python -m yoco_eval.bench.cold_start --out reports/gpu/cold_start_h100.json

It starts ``yoco-eval needle`` twice, each in a new process, on the YOCO-3B shape with random weights, 128K tokens,
two depths: first with EMPTY Triton and Inductor caches (a fresh machine), then ``again`` with the caches the
first run left (a new sweep on a machine that ran one before: compiled kernels and autotuning results are on disk).
``--keep-caches`` makes one run on the machine's own caches instead. In each run the first cell pays every
one-time cost and the second shows the warm time. The child process records every Triton compilation (kernel
name, seconds, when) and every autotuning (kernel, configs tried, seconds with their compilations, the winner)
through Triton's listeners (``triton.knobs``; the autotuning one only where the installed Triton has it: 3.6, on
the GPU machine, does not). Each run reports:

* ``first_cell_s`` / ``warm_cell_s``: ``duration_s`` of the first and the second cell (the needle runner's own
  clock: build the prompt, prefill, generate); the first cell also split into prefill, decode and the rest;
* ``to_first_result_s``: from starting the process to the first cell written (imports and model set-up included);
* ``compile``: Triton compilations, total and per kernel; ``autotune``: each autotuning, with its winner.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from yoco_eval.errors import YocoEvalError

DEFAULT_MODEL_ARGS = "pretrained=yoco-3b,device=cuda,dtype=bfloat16,max_length=1048600"


class CompileLog:
    """Triton's compilation and autotuning listeners, collecting what a process compiled and tuned (no-ops on a
    Triton without ``knobs`` listeners, or without Triton)."""

    def __init__(self):
        self.compiles: list[dict] = []
        self.autotunes: list[dict] = []
        self.t0 = time.perf_counter()

    def install(self) -> bool:
        try:
            from triton import knobs
        except Exception:
            return False
        ok = False
        if hasattr(getattr(knobs, "compilation", None), "listener"):
            knobs.compilation.listener = self._on_compile
            ok = True
        if hasattr(getattr(knobs, "autotuning", None), "listener"):
            knobs.autotuning.listener = self._on_autotune
        return ok

    def _on_compile(self, *, src, metadata, times, cache_hit, **_):
        name = getattr(getattr(src, "fn", None), "__name__", None) or str(metadata.get("name", "?"))
        total = getattr(times, "total", 0)  # microseconds
        self.compiles.append({"kernel": name, "s": total / 1e6, "cache_hit": bool(cache_hit),
                              "at_s": time.perf_counter() - self.t0})  # fmt: skip

    def _on_autotune(self, *, fn, key, best_config, configs_timings, duration, cache_hit, **_):
        self.autotunes.append({"kernel": getattr(fn, "__name__", str(fn)), "configs": len(configs_timings or {}),
                               "s": duration, "cache_hit": bool(cache_hit), "best": str(best_config),
                               "at_s": time.perf_counter() - self.t0})  # fmt: skip

    def summary(self) -> dict:
        by: dict[str, list] = defaultdict(lambda: [0, 0.0])
        for c in self.compiles:
            if not c["cache_hit"]:
                by[c["kernel"]][0] += 1
                by[c["kernel"]][1] += c["s"]
        rows = sorted(({"kernel": k, "n": n, "s": round(s, 3)} for k, (n, s) in by.items()), key=lambda r: -r["s"])
        return {"compiles": sum(r["n"] for r in rows), "compile_s": round(sum(r["s"] for r in rows), 3),
                "by_kernel": rows, "autotune": self.autotunes}  # fmt: skip


def child(work: Path, argv: list[str]) -> int:
    """In the fresh process: listeners on, then the needle CLI; writes ``work/compile.json``."""
    log = CompileLog()
    installed = log.install()
    from yoco_eval.niah.cli import main

    rc = main(argv)
    (work / "compile.json").write_text(json.dumps({"listeners": installed, **log.summary()}, indent=1))
    return rc


def _cells(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines() if x.strip()]
    return sorted(rows, key=lambda r: r["timestamp_utc"])


def measure(work: Path, length: str, model_args: str, caches: Path | None, haystack: str | None = None) -> dict:
    """One start in a child process (see the module docstring); ``work`` holds its run folder and compile log;
    ``caches`` the Triton and Inductor caches to use (None: the machine's own)."""
    from datetime import datetime

    run = work / "run"
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if caches is not None:
        env.update(TRITON_CACHE_DIR=str(caches / "triton"), TORCHINDUCTOR_CACHE_DIR=str(caches / "inductor"))
    argv = ["--model", "yoco", "--model-args", model_args, "--lengths", length, "--depths", "100,50", "--trials", "1",
            "--max-new-tokens", "16", "--no-progress", "--index", "none", "--out", str(run),
            *(["--haystack", haystack] if haystack else [])]  # fmt: skip
    t_start = time.time()
    proc = subprocess.run([sys.executable, "-m", "yoco_eval.bench.cold_start", "--child", str(work), "--", *argv],
                          env=env, capture_output=True, text=True)  # fmt: skip
    wall = time.time() - t_start
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1].removeprefix("error: ")
        raise YocoEvalError(f"the needle run of the cold start failed (exit {proc.returncode}): {last}")
    cells = _cells(run)
    first, warm = cells[0], cells[1] if len(cells) > 1 else None
    first_end = datetime.fromisoformat(first["timestamp_utc"].replace("Z", "+00:00")).timestamp()
    comp = json.loads((work / "compile.json").read_text())
    return {
        "first_cell_s": first["duration_s"], "first_cell_prefill_s": first.get("prefill_s"),
        "first_cell_decode_s": first.get("decode_s"),
        "first_cell_other_s": _other(first),  # building the prompt, and whatever generate() does outside both
        "warm_cell_s": warm["duration_s"] if warm else None,
        "warm_cell_prefill_s": warm.get("prefill_s") if warm else None,
        "to_first_result_s": round(first_end - t_start, 3), "process_wall_s": round(wall, 3), **comp,
    }  # fmt: skip


def _other(row: dict) -> float | None:
    parts = [row.get(k) for k in ("prefill_s", "decode_s")]
    return round(row["duration_s"] - sum(parts), 3) if None not in parts else None


def cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(Path(argv[1]), argv[3:])
    ap = argparse.ArgumentParser(prog="python -m yoco_eval.bench.cold_start", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="results file (JSON)")
    ap.add_argument("--length", default="128k", help="prompt length of the two cells (default 128k)")
    ap.add_argument("--model-args", default=DEFAULT_MODEL_ARGS, help=f"needle's --model-args ({DEFAULT_MODEL_ARGS})")
    ap.add_argument("--keep-caches", action="store_true", help="one run on the machine's Triton/Inductor caches")
    ap.add_argument("--haystack", help="needle's --haystack (default: needle's own)")
    args = ap.parse_args(argv)
    from yoco_eval.runinfo import hardware, write_record

    runs = {}
    try:
        with tempfile.TemporaryDirectory(prefix="yoco-cold-") as tmp:
            caches = None if args.keep_caches else Path(tmp) / "caches"
            for name in ("machine_caches",) if args.keep_caches else ("fresh", "again"):
                runs[name] = measure(Path(tmp) / name, args.length, args.model_args, caches, args.haystack)
                _show(name, runs[name])
    except YocoEvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = "cuda" if "device=cuda" in args.model_args else "cpu"
    write_record(args.out, hardware(argparse.Namespace(device=device)),
                 "python -m yoco_eval.bench.cold_start " + " ".join(argv),
                 {"length": args.length, "model_args": args.model_args, "runs": runs})  # fmt: skip
    print(f"wrote {args.out}")
    return 0


def _show(name: str, r: dict) -> None:
    print(f"{name}: first cell {r['first_cell_s']:.2f} s (prefill {r['first_cell_prefill_s']:.2f} s, decode "
          f"{r['first_cell_decode_s'] or 0:.2f} s, other {r['first_cell_other_s'] or 0:.2f} s), warm cell "
          f"{r['warm_cell_s']:.2f} s; first result {r['to_first_result_s']:.2f} s after start; "
          f"{r['compiles']} Triton compilations, {r['compile_s']:.1f} s")  # fmt: skip
    for c in r["by_kernel"][:12]:
        print(f"  compile {c['kernel']:<40} x{c['n']:<3} {c['s']:7.2f} s")
    for a in r["autotune"]:
        print(f"  autotune {a['kernel']:<40} {a['configs']:>3} configs {a['s'] or 0:7.2f} s -> {a['best']}")


if __name__ == "__main__":
    sys.exit(cli())
