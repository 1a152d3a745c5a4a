"""``yoco-eval report DIR`` (run here as ``python -m yoco_eval.report.cli``): exit codes and one-line messages."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from yoco_eval.report import cli

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "yoco_eval.report.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_renders_a_reports_folder_and_a_comparison(root):
    p = _run(str(root), "--compare", str(root / "runs" / "alpha"), str(root / "runs" / "gamma"))
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert p.stdout.strip() == f"rendered 8 pages; index: {root / 'index.html'}"
    assert (root / "compare" / "alpha__vs__gamma.html").is_file()
    index = (root / "index.html").read_text(encoding="utf-8")
    assert 'href="compare/alpha__vs__gamma.html"' in index and 'href="runs/gamma/report.html"' in index


def test_renders_a_single_run_folder(root):
    p = _run(str(root / "runs" / "beta"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith("runs/beta/report.html")
    assert not (root / "index.html").exists()


def test_bad_input_is_one_warning_line_per_problem_and_still_renders(root):
    path = root / "runs" / "alpha" / "results.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = "{corrupt\n"
    path.write_text("".join(lines), encoding="utf-8")
    p = _run(str(root), "-q")
    assert p.returncode == 0  # the rest rendered: a bad line is a warning (and on the page), not a failure
    assert p.stdout == ""
    err = p.stderr.strip().splitlines()
    assert err == [
        f"warning: {root}/runs/alpha/results.jsonl:3: not valid JSON (Expecting property name enclosed in "
        "double quotes at column 2); line skipped — fix or delete the line, then resume the run to redo "
        "the cell"
    ]
    assert "Traceback" not in p.stderr
    assert (root / "runs" / "alpha" / "report.html").is_file() and (root / "index.html").is_file()


def test_missing_folder_and_bad_compare_are_one_error_line(root, tmp_path):
    p = _run(str(tmp_path / "nope"))
    assert p.returncode == 2 and p.stdout == ""
    assert (
        p.stderr
        == f"error: {tmp_path / 'nope'}: no such folder — pass the reports folder (e.g. reports) or a run folder\n"
    )
    p = _run(str(root), "--compare", str(root / "runs" / "alpha"), str(root / "lm_eval"))
    assert p.returncode == 2
    assert p.stderr == (
        f"error: {root / 'lm_eval'}: no run.json or nll.jsonl there — --compare takes two needle run folders or two "
        "NLL run folders\n"
    )
    p = _run(str(root / "runs" / "alpha" / "run.json"))
    assert p.returncode == 2 and "not a folder" in p.stderr and "Traceback" not in p.stderr


def test_add_parser_plugs_into_a_top_level_parser(root, capsys):
    top = argparse.ArgumentParser(prog="yoco-eval")
    sub = top.add_subparsers(dest="command")
    cli.add_parser(sub)
    args = top.parse_args(["report", str(root), "--no-index", "--generated-at", "2030-01-01"])
    assert args.func is cli.main
    assert args.func(args) == 0
    assert not (root / "index.html").exists()
    assert "at 2030-01-01" in (root / "runs" / "alpha" / "report.html").read_text(encoding="utf-8")
    assert capsys.readouterr().out.startswith("rendered 7 pages")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_half_copied_run_folder_is_a_warning_and_exit_0(root):
    half = root / "gpu" / "half-run"
    half.mkdir(parents=True)
    (half / "results.jsonl").write_bytes((root / "runs" / "gamma" / "results.jsonl").read_bytes())
    p = _run(str(root), "-q")
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip() == (
        f"warning: {half}/run.json: run.json is missing — rerun the sweep (it writes run.json first), or restore the "
        "file; metadata is shown as —"
    )
    assert "run.json is missing" in (half / "report.html").read_text(encoding="utf-8")


def test_report_dir_writes_only_inside_dir_and_not_into_a_nested_report_tree(root, tmp_path):
    nested = root / "examples"
    (nested / "run").mkdir(parents=True)
    for f in ("run.json", "results.jsonl"):
        (nested / "run" / f).write_bytes((root / "runs" / "alpha" / f).read_bytes())
    (nested / "index.html").write_text("<!DOCTYPE html><title>their own index</title>\n", encoding="utf-8")
    sibling = tmp_path / "sibling-run"
    sibling.mkdir()
    (sibling / "run.json").write_bytes((root / "runs" / "beta" / "run.json").read_bytes())
    before_nested, before_sibling = _snapshot(nested), _snapshot(sibling)
    p = _run(str(root / "runs"))
    assert p.returncode == 0, p.stderr
    assert not (root / "index.html").exists() and not (tmp_path / "index.html").exists()
    p = _run(str(root))
    assert p.returncode == 0, p.stderr
    assert _snapshot(nested) == before_nested and _snapshot(sibling) == before_sibling
    index = (root / "index.html").read_text(encoding="utf-8")
    assert 'href="examples/index.html"' in index  # linked as its own tree, its runs not listed here
    assert "examples/run" not in index
