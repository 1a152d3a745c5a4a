"""Issue 20's results table in one command: every row's benchmark, spread over the visible GPUs, then one table.

    python -m yoco_eval.bench.table --out DIR [--gpus N] [--rows a,b,...] [--smol FOLDER] [--commit SHA]
                                    [--force] [--dry-run] [--timeout-scale F]

The device machine allows 600 s a command; the whole table takes ~1,000 s on one GPU. Here each GPU is a *lane*: a
thread that runs its rows one after the other, each row a subprocess pinned to that GPU (``CUDA_VISIBLE_DEVICES``),
its output in ``DIR/ROW.log``, killed (with its children) after the row's timeout. Rows go to lanes longest estimate
first, each to the lane with the least work so far (:func:`plan`), so 2-4 GPUs finish the table in one call.

A failed or timed-out row is recorded and the others go on. A row whose ``DIR/ROW.json`` exists and parses is not
run again (``--force`` reruns it, moving the old file to ``DIR/ROW.prev.json``), so a second call resumes the first.
After every row, ``DIR/table.json`` and ``DIR/table.md`` are rewritten from the rows' files (:func:`assemble`),
with which GPU ran which rows and when. ``--dry-run`` prints the plan and runs nothing. Everything is written
inside ``DIR``; the children get ``YOCO_EVAL_COMMIT`` so their files name the same commit as the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from yoco_eval.errors import YocoEvalError
from yoco_eval.runinfo import utc_now

GiB = 2**30
K512, M1, M8 = 2**19, 2**20, 2**23
PROG = "python -m yoco_eval.bench.table"


@dataclass(frozen=True)
class Row:
    """One benchmark run: ``command`` (``{out}`` stands for the out folder) writes ``{out}/{name}.json``."""

    name: str
    command: tuple[str, ...]
    est_s: float
    timeout_s: float

    def argv(self, out: Path) -> list[str]:
        """The command with ``{out}`` filled in."""
        return [a.replace("{out}", str(out)) for a in self.command]


def table_rows(smol: str | None = None) -> list[Row]:
    """Issue 20's rows; ``smol``: a SmolLM2 folder (config + tokenizer) lm-eval times with random weights. The
    estimates are H100 times with a margin (e706e57: throughput 427 s, decode_fp8 34 s, lm_eval 37 s)."""
    prof = (sys.executable, "-m", "yoco_eval", "profile", "--models")
    smol_args = ("--model-folder", smol, "--random-weights") if smol else ()
    prompt = ("yoco-3b-1m", "--lengths", "8m", "--gen", "8", "--chunk-size", "8192", "--runs", "1", "--warmup", "0")
    return [
        Row("prefill_fla", (*prof, "yoco-3b", "--lengths", "512k,1m", "--gen", "32", "--chunk-size", "65536",
                            "--peers", "fla", "--peer-lengths", "512k", "--fla-autotune", "pinned",
                            "--out", "{out}/prefill_fla.json"), 260, 560),
        Row("decode_fp8", (*prof, "yoco-3b", "--lengths", "512k", "--gen", "32", "--chunk-size", "65536",
                           "--kv-dtype", "fp8", "--out", "{out}/decode_fp8.json"), 40, 200),
        Row("throughput", (*prof, "yoco-3b", "--lengths", "512k", "--gen", "1024", "--batch", "8", "--warmup", "1",
                           "--max-warmup", "1", "--chunk-size", "32768", "--out", "{out}/throughput.json"), 430, 590),
        Row("prompt_8m_fp8", (*prof, *prompt, "--kv-dtype", "fp8", "--out", "{out}/prompt_8m_fp8.json"), 80, 240),
        Row("prompt_8m_bf16", (*prof, *prompt, "--kv-dtype", "auto", "--out", "{out}/prompt_8m_bf16.json"), 80, 240),
        Row("cold_start", (sys.executable, "-m", "yoco_eval.bench.cold_start", "--out", "{out}/cold_start.json"),
            60, 240),
        Row("lm_eval", (sys.executable, "-m", "yoco_eval.bench.lm_eval_throughput", "--out", "{out}/lm_eval.json",
                        "--batch-size", "16", *smol_args), 50, 400),
    ]  # fmt: skip


def plan(rows: list[Row], lanes: int) -> list[list[Row]]:
    """Rows over ``lanes`` lanes, longest estimate first, each to the lane with the least estimate so far (LPT;
    ties go to the lowest lane). Each lane keeps the order its rows were given in."""
    out: list[list[Row]] = [[] for _ in range(max(1, lanes))]
    for row in sorted(rows, key=lambda r: -r.est_s):
        min(out, key=lambda lane: sum(r.est_s for r in lane)).append(row)
    return out


# ---- assembly: the rows' files -> issue 20's table ----


class _NotMeasured(Exception):
    pass


def _load(out: Path, name: str) -> dict | None:
    try:
        return json.loads((out / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def _row(data: dict | None, length: int, peer: bool = False) -> dict:
    """The profile row at ``length`` (ours, or the peer's), which must have run."""
    if data is None:
        raise _NotMeasured("not measured")
    for r in data.get("rows", []):
        if r.get("context_length") == length and str(r.get("model", "")).startswith("peer:") == peer:
            if r.get("status") != "ok":
                raise _NotMeasured(f"{r.get('status')}: {r.get('error')}")
            return r
    raise _NotMeasured(f"not measured (no {'peer ' if peer else ''}row at {length} tokens in the file)")


def _m(r: dict, key: str):
    """The steady-state median when the row has one, else the single timing."""
    return (r.get("median") or {}).get(key, r.get(key))


def _steady(r: dict, key: str, fmt: str) -> str:
    cold, spread = (r.get("cold") or {}).get(key), (r.get("spread") or {}).get(key)
    if cold is None:
        return " (one timing)"
    return f" (cold {fmt.format(cold)}, spread {spread:.1%})" if spread is not None else f" (cold {fmt.format(cold)})"


def _timed(length: int, key: str, fmt: str, ok):
    """A timing at ``length`` (the median where steady, with its cold call and spread); ``ok``: is it met."""

    def fn(d):
        r = _row(d, length)
        v = _m(r, key)
        return fmt.format(v) + _steady(r, key, fmt), {key: v}, ok(v)

    return fn


def _lead(d):
    ours, peer = _m(_row(d, K512), "prefill_s"), _m(_row(d, K512, peer=True), "prefill_s")
    x = peer / ours
    nums = {"peer_prefill_s": peer, "prefill_s": ours, "x": x}
    return f"{x:.2f}x (FLA {peer:.3f} s against {ours:.3f} s)", nums, x >= 1.6


def _prompt(limit_gib):
    def fn(d):
        r = _row(d, M8)
        gib, s, ms = r["peak_mem_bytes"] / GiB, _m(r, "prefill_s"), _m(r, "decode_ms_per_token")
        nums = {"peak_gib": gib, "prefill_s": s, "decode_ms_per_token": ms}
        met = True if limit_gib is None else gib <= limit_gib  # bf16: fitting is the target
        return f"peak {gib:.2f} GiB (prefill {s:.2f} s, decode {ms:.1f} ms)", nums, met

    return fn


def _cold(d):
    runs = (d or {}).get("runs") or {}
    if "fresh" not in runs:
        raise _NotMeasured("not measured" if d is None else "not measured (no fresh run in the file)")
    first, again = runs["fresh"]["first_cell_s"], (runs.get("again") or {}).get("first_cell_s")
    tail = f" (again, on its caches: {again:.2f} s)" if again is not None else ""
    return f"{first:.2f} s{tail}", {"first_cell_s": first, "again_first_cell_s": again}, first <= 8


def _lm_eval(d):
    if d is None:
        raise _NotMeasured("not measured")
    hf, yoco = d["rows"]["hf"]["requests_per_s"], d["rows"]["yoco"]["requests_per_s"]
    x = d.get("speedup_requests_per_s") or yoco / hf
    nums = {"x": x, "yoco_requests_per_s": yoco, "hf_requests_per_s": hf, "agreement": d.get("agreement")}
    return f"{x:.2f}x ({yoco:.0f} against {hf:.0f} requests/s)", nums, x >= 2


TABLE = [  # (row, file, target, how)
    ("prefill 512K, 64K chunks", "prefill_fla", "≤ 2.6 s", _timed(K512, "prefill_s", "{:.3f} s", lambda v: v <= 2.6)),
    ("prefill 1M, 64K chunks", "prefill_fla", "≤ 5.2 s", _timed(M1, "prefill_s", "{:.3f} s", lambda v: v <= 5.2)),
    ("lead over FLA's YOCO at 512K (its prefill / ours)", "prefill_fla", "≥ 1.6x", _lead),
    ("decode 512K, bf16 cache", "prefill_fla", "≤ 12.0 ms",
     _timed(K512, "decode_ms_per_token", "{:.2f} ms", lambda v: v <= 12.0)),
    ("decode 512K, fp8 cache", "decode_fp8", "≤ 7.7 ms",
     _timed(K512, "decode_ms_per_token", "{:.2f} ms", lambda v: v <= 7.7)),
    ("throughput, 512K + 1,024 generated, batch 8, bf16", "throughput", "≥ 85 tok/s",
     _timed(K512, "throughput_tok_s", "{:.1f} tok/s", lambda v: v >= 85)),
    ("8M-token prompt, fp8 cache", "prompt_8m_fp8", "peak ≤ 30 GiB", _prompt(30)),
    ("8M-token prompt, bf16 cache", "prompt_8m_bf16", "fits (status ok)", _prompt(None)),
    ("cold start: first needle cell, empty caches", "cold_start", "≤ 8 s", _cold),
    ("lm-eval requests/s, yoco against hf", "lm_eval", "≥ 2x", _lm_eval),
]  # fmt: skip


def assemble(out_dir) -> dict:
    """Issue 20's table from the rows' files in ``out_dir``: ``{"rows": [...], "cards": [...]}``, each row with
    ``row``, ``value``, ``numbers``, ``target``, ``met`` (None when not measured), ``file``, ``card``, ``commit``,
    ``date``. Steady-state medians are used where a file has them. Reads only."""
    out, rows = Path(out_dir), []
    for label, name, target, fn in TABLE:
        d = _load(out, name)
        try:
            value, numbers, met = fn(d)
        except _NotMeasured as e:
            value, numbers, met = str(e), {}, None
        except (AttributeError, KeyError, TypeError, ValueError, ZeroDivisionError) as e:  # another shape
            value, numbers, met = f"unreadable ({type(e).__name__}: {e})", {}, None
        card = (d or {}).get("card")
        card = card.get("name") if isinstance(card, dict) else card
        rows.append({"row": label, "value": value, "numbers": numbers, "target": target, "met": met,
                     "file": f"{name}.json", "card": card, "commit": (d or {}).get("commit"),
                     "date": (d or {}).get("date")})  # fmt: skip
    return {"rows": rows, "cards": sorted({r["card"] for r in rows if r["card"]})}


def markdown(table: dict) -> str:
    """``table.json``'s content as ``table.md``: a header paragraph, then row | value | target | met | file."""
    lanes = []
    for ln in table["lanes"]:
        ran = {r["row"]: r for r in ln["rows"]}
        rows = [f"{n} ({ran[n]['status']}, {ran[n]['seconds']:.0f} s)" if n in ran else f"{n} (pending)"
                for n in ln["planned"]]  # fmt: skip
        lanes.append(f"GPU {ln['gpu']}: {', '.join(rows)}")
    lines = [f"Issue 20's table, {table['date']}, commit {table['commit']}, on {', '.join(table['cards']) or '?'}. "
             f"Command: `{table['command']}`. Rows ran concurrently, one lane per GPU: {'; '.join(lanes)}.", "",
             "| row | value | target | met | file |", "|---|---|---|---|---|"]  # fmt: skip
    for r in table["rows"]:
        met = {True: "yes", False: "no", None: "—"}[r["met"]]
        other = f" ({r['commit']}, {r['date']})" if r["commit"] and r["commit"] != table["commit"] else ""
        value = " ".join(r["value"].replace("|", "\\|").split())  # an error message stays in its cell
        lines.append(f"| {r['row']} | {value} | {r['target']} | {met} | [{r['file']}]({r['file']}){other} |")
    return "\n".join(lines) + "\n"


def write_table(out: Path, lanes: list[dict], commit: str | None, command: str) -> dict:
    """Assemble ``out``'s files with the lanes' records into ``out/table.json`` and ``out/table.md``."""
    table = {**assemble(out), "lanes": lanes, "commit": commit, "date": utc_now(), "command": command}
    (out / "table.json").write_text(json.dumps(table, indent=1) + "\n")
    (out / "table.md").write_text(markdown(table))
    return table


# ---- the runner ----


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the row's children go with it
    except ProcessLookupError:
        pass


def _run_row(row: Row, out: Path, gpu: int, env: dict, scale: float, force: bool, live: set) -> dict:
    result, t0 = Path(out / f"{row.name}.json"), time.monotonic()
    rec = {"row": row.name, "command": shlex.join(row.argv(out)), "log": f"{row.name}.log", "start": utc_now()}
    if _load(out, row.name) is not None and not force:
        _say(f"[lane {gpu}] {row.name} done earlier ({result.name} exists)")
        return {**rec, "status": "done earlier", "rc": None, "seconds": 0.0, "end": rec["start"], "log": None}
    if result.exists():
        result.replace(out / f"{row.name}.prev.json")
    _say(f"[lane {gpu}] {row.name} started")
    with open(out / rec["log"], "w") as log:
        proc = subprocess.Popen(row.argv(out), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        live.add(proc)
        timed_out = False
        try:
            rc = proc.wait(timeout=row.timeout_s * scale)
        except subprocess.TimeoutExpired:
            _kill(proc)
            rc, timed_out = proc.wait(), True
        finally:
            live.discard(proc)
    secs = time.monotonic() - t0
    status = "timeout" if timed_out else "done" if rc == 0 and _load(out, row.name) is not None else "failed"
    if status == "done":
        _say(f"[lane {gpu}] {row.name} done in {secs:.0f} s")
    else:
        last = [x for x in (out / rec["log"]).read_text(errors="replace").splitlines() if x.strip()] or ["(no output)"]
        why = "no output file" if rc == 0 else last[-1].strip()
        _say(f"[lane {gpu}] {row.name} " + (f"timeout after {secs:.0f} s" if timed_out else f"failed (rc {rc}): {why}"))
    return {**rec, "status": status, "rc": rc, "seconds": round(secs, 1), "end": utc_now()}


def run(rows: list[Row], out, lanes: int, *, force: bool = False, timeout_scale: float = 1.0,
        commit: str | None = None, command: str = PROG) -> dict:  # fmt: skip
    """Run ``rows`` over ``lanes`` GPUs (lane i: ``CUDA_VISIBLE_DEVICES=i``), at the same time across lanes, one
    row at a time within one; the table is rewritten in ``out`` after every row. Returns the table (its ``lanes``
    say which GPU ran which row, when, and how it ended)."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    lock, live, stop = threading.Lock(), set(), threading.Event()
    lanes_rows = plan(rows, lanes)
    records = [{"gpu": i, "planned": [r.name for r in lane], "est_s": sum(r.est_s for r in lane), "rows": [],
                "start": None, "end": None} for i, lane in enumerate(lanes_rows)]  # fmt: skip

    def lane(rec: dict, todo: list[Row]) -> None:
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(rec["gpu"]), PYTHONUNBUFFERED="1")
        if commit:
            env["YOCO_EVAL_COMMIT"] = commit
        rec["start"] = utc_now()
        for row in todo:
            if stop.is_set():
                break
            res = _run_row(row, out, rec["gpu"], env, timeout_scale, force, live)
            with lock:
                rec["rows"].append(res)
                rec["end"] = res["end"]
                write_table(out, records, commit, command)

    threads = [threading.Thread(target=lane, args=(rec, lane_rows), daemon=True)
               for rec, lane_rows in zip(records, lanes_rows)]  # fmt: skip
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except BaseException:  # Ctrl-C: the rows run in their own sessions, so stop them here (and any still starting)
        stop.set()
        while any(t.is_alive() for t in threads):
            for proc in list(live):
                _kill(proc)
            time.sleep(0.1)
        raise
    return write_table(out, records, commit, command)


def _commit(flag: str | None) -> str | None:
    from yoco_eval.runinfo import git_commit  # YOCO_EVAL_COMMIT when set, else git's HEAD

    return flag or (git_commit() or "")[:7] or None


def cli(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); 0 when every row ran or had run, 1 when one failed, 2 on a
    usage error (one line, no traceback)."""
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the rows' files, their logs and table.json/.md")
    ap.add_argument("--gpus", type=int, help="lanes, one GPU each (default: every visible GPU)")
    ap.add_argument("--rows", help="comma-separated subset of the rows (default: all)")
    ap.add_argument("--smol", metavar="FOLDER", help="lm-eval row: SmolLM2 folder timed with random weights")
    ap.add_argument("--commit", help="the commit the files record (default: YOCO_EVAL_COMMIT, else git HEAD)")
    ap.add_argument("--force", action="store_true", help="rerun rows whose JSON file exists")
    ap.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    ap.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every row's timeout")
    args = ap.parse_args(argv)
    try:
        return _main(args, PROG + " " + shlex.join(argv))
    except YocoEvalError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (finished rows are kept: rerun the same command to resume)", file=sys.stderr)
        return 130


def _main(args, command: str) -> int:
    rows = table_rows(args.smol)
    if args.rows:
        names = [x.strip() for x in args.rows.split(",") if x.strip()]
        unknown = sorted(set(names) - {r.name for r in rows})
        if unknown:
            raise YocoEvalError(f"unknown row(s) {', '.join(unknown)}: pick from {', '.join(r.name for r in rows)}")
        rows = [r for r in rows if r.name in names]
    if args.timeout_scale <= 0:
        raise YocoEvalError(f"--timeout-scale {args.timeout_scale}: give a positive factor")
    visible = None
    if args.gpus is None or not args.dry_run:
        import torch

        visible = torch.cuda.device_count()
    gpus = visible if args.gpus is None else args.gpus
    out = Path(args.out).resolve()
    if args.dry_run:
        note = "" if gpus >= 1 else " (no GPU visible: planned as one lane)"
        lanes = plan(rows, gpus)
        longest = max(sum(r.est_s for r in lane) for lane in lanes)
        print(f"plan: {len(rows)} rows on {len(lanes)} lane(s){note}; longest lane ~{longest:.0f} s estimated")
        for i, lane in enumerate(lanes):
            print(f"lane {i} (CUDA_VISIBLE_DEVICES={i}): ~{sum(r.est_s for r in lane):.0f} s")
            for r in lane:
                print(f"  {r.name} (est {r.est_s:.0f} s, timeout {r.timeout_s * args.timeout_scale:.0f} s): "
                      f"{shlex.join(r.argv(out))}")  # fmt: skip
        print(f"would write {out}/table.json and {out}/table.md")
        return 0
    if visible < 1:
        raise YocoEvalError("no CUDA GPU visible: the table's rows run on GPUs (--dry-run shows the plan anywhere)")
    if not 1 <= gpus <= visible:
        raise YocoEvalError(f"--gpus {gpus}, but {visible} CUDA GPU(s) are visible: pick 1 to {visible}")
    table = run(rows, out, gpus, force=args.force, timeout_scale=args.timeout_scale, commit=_commit(args.commit),
                command=command)  # fmt: skip
    for r in table["rows"]:
        print(f"{r['row']}: {r['value']} (target {r['target']}, met {r['met']})")
    print(f"wrote {out}/table.json and {out}/table.md")
    return 0 if all(r["status"] in ("done", "done earlier") for ln in table["lanes"] for r in ln["rows"]) else 1


if __name__ == "__main__":
    sys.exit(cli())
