"""The NLL runner: resume after a kill (a finished pair is not redone, a torn line is tolerated), failures recorded
and not fatal, and the HTML page escapes model and corpus names."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from yoco_eval.model.checkpoint import load_model
from yoco_eval.nll.run import NllConfig, read_results, run_nll
from yoco_eval.report.nll import render_nll

ROOT = Path(__file__).resolve().parents[2]

# A child that finishes model "a" and then hangs inside model "b"'s load, so the test can SIGKILL it mid-run.
CHILD = """
import sys, time
from yoco_eval.model.checkpoint import load_model
from yoco_eval.nll.run import NllConfig, run_nll

def loader(spec, cfg):
    if spec == "hang":
        print("hanging", flush=True)
        time.sleep(600)
    return load_model(spec)

cfg = NllConfig(models=["yoco-debug", "hang"], labels=["a", "b"], corpora=["book"], tokens=200, chunk=64)
run_nll(cfg, sys.argv[1], loader=loader)
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_resume_after_kill(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "hanging"  # pair (a, book) is on disk by now
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    results = tmp_path / "nll.jsonl"
    first = json.loads(_lines(results)[0])
    assert first["model"] == "a" and first["status"] == "ok"
    with open(results, "a") as f:
        f.write('{"schema": "yoco-eval/nll/1", "model": "b", "corp')  # a torn line, as a crash mid-write leaves

    calls = []

    def loader(spec, cfg):
        calls.append(spec)
        return load_model("transformer-debug" if spec == "hang" else spec)

    cfg = NllConfig(models=["yoco-debug", "hang"], labels=["a", "b"], corpora=["book"], tokens=200, chunk=64)
    run_nll(cfg, tmp_path, loader=loader)
    assert calls == ["hang"]  # the finished pair was not redone
    lines = _lines(results)
    assert len(lines) == 2 and all(json.loads(x)["status"] == "ok" for x in lines)  # the torn tail was cut
    assert json.loads(lines[0]) == first
    rows = read_results(tmp_path)
    assert {(r["model"], r["n_tokens"]) for r in rows} == {("a", 200), ("b", 200)}
    assert rows[1]["n_scored"] == 200 and len(rows[1]["cumulative"]) > 5


def test_failures_are_recorded_and_retried(tmp_path):
    def broken(spec, cfg):
        raise RuntimeError("CUDA out of memory (simulated)")

    cfg = NllConfig(models=["yoco-debug", "boom"], corpora=["book", str(tmp_path / "missing.txt")], tokens=100,
                    chunk=32)  # fmt: skip
    run_nll(cfg, tmp_path / "run", loader=lambda s, c: broken(s, c) if s == "boom" else load_model(s))
    rows = {(r["model"], Path(r["corpus"]).name): r for r in read_results(tmp_path / "run")}
    assert rows[("yoco-debug", "book")]["status"] == "ok"
    assert "neither a built-in" in rows[("yoco-debug", "missing.txt")]["error"]
    assert rows[("boom", "book")]["error"] == "RuntimeError: CUDA out of memory (simulated)"
    for r in rows.values():  # every row, failed or not, says where and when it ran
        assert r["hardware"]["device"] == "cpu" and r["timestamp_utc"].endswith("Z") and "commit" in r
    calls = []
    run_nll(cfg, tmp_path / "run", loader=lambda s, c: calls.append(s) or load_model("yoco-debug"))
    assert calls == ["yoco-debug", "boom"]  # only the error pairs are redone
    rows = {(r["model"], Path(r["corpus"]).name): r["status"] for r in read_results(tmp_path / "run")}
    assert rows[("boom", "book")] == "ok" and rows[("boom", "missing.txt")] == "error"


def test_html_escapes_model_and_corpus_names(tmp_path):
    evil = "<script>alert('m')</script>"
    folder = tmp_path / "<img src=x onerror=alert(1)>"
    folder.mkdir()
    (folder / "t.txt").write_text("some text for the document " * 20)
    cfg = NllConfig(models=["yoco-debug", "transformer-debug"], labels=[evil, "t&amp"], corpora=[str(folder)],
                    tokens=150, chunk=64)  # fmt: skip
    path = run_nll(cfg, tmp_path / "run")
    html = render_nll([path], tmp_path / "run" / "report.html").read_text()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "t&amp;amp" in html
    assert "<svg" in html and html.count("<path d=") >= 4  # two charts, two models each


@pytest.mark.parametrize("argv, message", [(["--tokens", "1"], "at least 2"), (["--chunk", "0"], "positive")])
def test_cli_bad_input_is_one_line(tmp_path, argv, message):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "yoco_eval.nll.cli", "--model", "yoco-debug", "--out", str(tmp_path),
                        *argv], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
