"""`yoco-eval needle` (python -m yoco_eval.niah.cli): argument parsing, one-line errors, dry run, --show."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.niah.fake_cli import fake_loader
from yoco_eval.niah import cli, models
from yoco_eval.niah.store import read_jsonl

ROOT = Path(__file__).resolve().parents[2]


def _run(*argv, out=None):
    args = ["--model", "fake", "--haystack", "noise", "--no-progress", *argv]
    if out is not None:
        args += ["--out", str(out)]
    return cli.main(args)


def test_subcommand_wiring():
    parser = argparse.ArgumentParser(prog="yoco-eval")
    sub = parser.add_subparsers(dest="cmd")
    cli.add_parser(sub)
    args = parser.parse_args(
        ["needle", "--lengths", "1k", "--depths", "50", "--dry-run", "--haystack", "noise", "--tokens-per-s", "100"]
    )
    assert args.func is cli.main and args.func(args) == 0


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--lengths", "20", "--depths", "50"], "below the prompt template's own size"),
        (["--lengths", "1k", "--depths", "0,101"], "outside 0–100"),
        (["--lengths", "1k", "--variant", "haystack-soup"], "unknown needle variant"),
        (["--lengths", "1k", "--haystack", "EMPTY"], "holds no text"),
        (["--lengths", "4kb"], "bad length"),
        (["--lengths", "", "--depths", "50"], "no context lengths"),
        (["--lengths", "1k", "--model", "no-such-model"], "unknown model"),
        (["--lengths", "1k", "--max-new-tokens", "200"], "exceeds the model's context"),
    ],
)
def test_bad_input_one_line_error_nothing_written(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(models, "load_needle_model", fake_loader({"max_context": 1200}))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    argv = [str(empty) if a == "EMPTY" else a for a in argv]
    out = tmp_path / "run"
    assert _run(*argv, out=out) == 2
    err = [x for x in capsys.readouterr().err.strip().splitlines() if not x.startswith("loading model")]
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert "Traceback" not in err[0]
    assert not out.exists()


def test_run_show_and_config(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(
        "description: test\nmodel: fake\nhaystack: noise\nlengths: 1k,2k\ndepths: 0:100:3\ntrials: 2\n"
        "variant: multiquery\nnum_needles: 3\nvalue_type: uuid\nprogress: false\nmax_new_tokens: 128\n"
    )
    assert cli.main(["--config", str(cfg), "--out", str(out), "--trials", "1"]) == 0  # flag beats the file
    rows = read_jsonl(out / "results.jsonl")
    assert len(rows) == 6 and all(len(r["needles"]) == 3 and r["score"] == 1.0 for r in rows)
    meta = json.loads((out / "run.json").read_text())
    assert meta["variant"]["value_type"] == "uuid" and meta["grid"]["trials"] == 1
    capsys.readouterr()
    assert cli.main(["--show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "overall" in shown and "multiquery" in shown
    assert "full-prefill tok/s" in shown and "\n   0      6 " in shown  # the timing table: rank 0, 6 cells
    bad = tmp_path / "bad.yaml"
    bad.write_text("lenghts: 1k\n")
    assert cli.main(["--config", str(bad)]) == 2
    assert "unknown keys lenghts" in capsys.readouterr().err


def test_module_entry_point_prints_no_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(
        [sys.executable, "-m", "yoco_eval.niah.cli", "--lengths", "1k", "--depths", "200"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 2
    assert res.stderr.strip() == "error: depth 200 is outside 0–100: give depths in percent, e.g. 0:100:11"


def test_no_grid_runs_the_default_sweep_file(capsys, monkeypatch):
    assert cli.default_sweep_file() is not None
    monkeypatch.setattr(models, "load_needle_model", fake_loader({"max_context": 2048}))
    argv = [
        "--model",
        "fake",
        "--haystack",
        "noise",
        "--dry-run",
        "--tokens-per-s",
        "1e3",
    ]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "384, 512, 768, 1024, 1536, 2032" in err and "trials     4" in err


def test_another_grid_on_a_run_folder_is_refused_then_extended_or_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run("--lengths", "1k", "--depths", "0,100", "--trials", "1", out=out) == 0
    first = (out / "results.jsonl").read_bytes()
    capsys.readouterr()
    assert _run("--lengths", "512,1k", "--depths", "0,100", "--trials", "2", out=out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # refused before a model loads
    assert "lengths 1k -> 512,1k" in err[0] and "trials 1 -> 2" in err[0]
    assert "--out NEW" in err[0] and "--extend" in err[0] and "--overwrite" in err[0]
    assert (out / "results.jsonl").read_bytes() == first  # untouched
    # the same grid resumes (nothing to run) and prints the table
    assert _run("--lengths", "1k", "--depths", "0,100", "--trials", "1", out=out) == 0
    assert "(0 run now" in capsys.readouterr().out
    assert _run("--lengths", "1k,2k", "--depths", "0,100", "--trials", "1", "--extend", out=out) == 0
    assert "(2 run now" in capsys.readouterr().out and len(read_jsonl(out / "results.jsonl")) == 4
    assert _run("--lengths", "1200", "--depths", "50", "--trials", "1", "--overwrite", out=out) == 0
    rows = read_jsonl(out / "results.jsonl")
    assert [r["cell"] for r in rows] == ["L1200_D50_T0"]
    assert json.loads((out / "run.json").read_text())["grid"]["lengths"] == [1200]


def test_console_header_and_percent_table(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run("--lengths", "1k,2k", "--depths", "0,50,100", "--trials", "2", out=out) == 0
    captured = capsys.readouterr()
    header = [x for x in captured.err.splitlines() if x.startswith("needle sweep:")]
    assert len(header) == 1 and "12 cells" in header[0] and "2 lengths × 3 depths × 2 trials" in header[0]
    assert str(out) in header[0] and "fake" in header[0]
    assert captured.err.index("loading model") < captured.err.index("needle sweep:")
    assert "score (%)" in captured.out and "95% Wilson interval" in captured.out
    assert "overall" in captured.out and "100.0%" in captured.out and "1.00" not in captured.out


@pytest.mark.parametrize(
    "text,message",
    [
        ("model: fake\nlengths: 1k\ntrials: \"two\"\n", "line 3: trials: 'two' is not an integer"),
        ("model: fake\nlengths: 1k\nshared_haystack: maybe\n", "line 3: shared_haystack: 'maybe' is not true or false"),
        ("model: fake\nlengths: [1k, 2k\ntrials: 2\n", "is not valid YAML at line 3"),
        ("model: fake\n  lengths: 1k\n", "is not valid YAML at line 2"),
        ("model: fake\nlenghts: 1k\n", "unknown keys lenghts (line 2)"),
    ],
)
def test_sweep_file_errors_name_the_line(tmp_path, capsys, text, message):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(text)
    out = tmp_path / "run"
    assert cli.main(["--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
