"""A needle run writes only inside its --out folder plus the one index it is asked to update; shipped sweeps by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from yoco_eval.niah import cli


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _run(out: Path, *extra: str) -> int:
    argv = ["--model", "fake", "--haystack", "noise", "--lengths", "1k", "--depths", "50", "--no-progress"]
    return cli.main([*argv, "--out", str(out), *extra])


def test_a_run_outside_reports_writes_only_its_folder(tmp_path):
    sibling = tmp_path / "x" / "other"
    sibling.mkdir(parents=True)
    (sibling / "run.json").write_text("{}")  # an unrelated run beside it must not get a page
    assert _run(tmp_path / "x" / "myrun") == 0
    outside = {f for f in _files(tmp_path) if not f.startswith("x/myrun/")}
    assert outside == {"x/other/run.json"}
    assert (tmp_path / "x" / "myrun" / "report.html").is_file()


def test_a_run_under_reports_updates_that_index_only(tmp_path):
    assert _run(tmp_path / "reports" / "runs" / "a") == 0
    outside = {f for f in _files(tmp_path) if not f.startswith("reports/runs/a/")}
    assert outside == {"reports/index.html"}
    assert "runs/a/report.html" in (tmp_path / "reports" / "index.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("given, expected", [("mine/index.html", {"mine/index.html"}), ("none", set())])
def test_index_flag_names_the_one_index(tmp_path, given, expected):
    index = str(tmp_path / given) if given != "none" else given
    assert _run(tmp_path / "reports" / "runs" / "b", "--index", index) == 0
    assert {f for f in _files(tmp_path) if not f.startswith("reports/runs/b/")} == expected


def test_index_path_default():
    assert cli.index_path(Path("/a/reports/runs/x"), None) == Path("/a/reports/index.html")
    assert cli.index_path(Path("/r/reports/q/reports/runs/x"), None) == Path("/r/reports/q/reports/index.html")
    assert cli.index_path(Path("/a/b/x"), None) is None
    assert cli.index_path(Path("/a/reports"), None) is None  # --out is the reports folder itself: no index in it
    assert cli.index_path(Path("/a/b/x"), "elsewhere/i.html") == Path("elsewhere/i.html")


def test_shipped_sweeps_resolve_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = cli.default_sweep_file().parent
    assert cli._shipped_sweep("yoco-single-1m") == shipped / "yoco-single-1m.yaml"
    assert cli._shipped_sweep("tasks/sweeps/smollm2-8k.yaml") == shipped / "smollm2-8k.yaml"
    assert cli.load_sweep_file("yoco-single-1m")["lengths"] == "128k:1M:128k"
    (tmp_path / "yoco-single-1m.yaml").write_text("lengths: 1k\n")  # a file the user names wins
    assert cli.load_sweep_file("yoco-single-1m.yaml") == {"lengths": "1k"}
    assert cli._shipped_sweep("no-such-sweep") == Path("no-such-sweep")
