"""The index: writes one file, links instead of rendering, labels speed runs, folds duplicates, newest first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.report.pagecheck import Page
from yoco_eval.report import render_all, render_index, render_run_and_index
from yoco_eval.report.cards import collapse, needle_card, newest_first, option_labels, random_weights
from yoco_eval.report.load import load_run
from yoco_eval.report.views import run_table

REPO = Path(__file__).resolve().parents[2]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy_run(src: Path, dst: Path, **meta) -> Path:
    shutil.copytree(src, dst)
    path = dst / "run.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for dotted, value in meta.items():
        cur = data
        *head, last = dotted.split("__")
        for k in head:
            cur = cur.setdefault(k, {})
        cur[last] = value
    path.write_text(json.dumps(data), encoding="utf-8")
    return dst


def _text(html: str) -> str:
    return " ".join(" ".join(Page(html).text).split())


def test_render_index_writes_only_the_index(root):
    before = _snapshot(root)
    index = render_index(root)
    after = _snapshot(root)
    assert index == root / "index.html"
    assert sorted(set(after) - set(before)) == ["index.html"]
    assert all(after[k] == v for k, v in before.items())
    # runs without a page are listed with the command that renders them, not linked to a missing page
    html = index.read_text(encoding="utf-8")
    assert "runs/alpha/report.html" not in html
    assert "No page yet: yoco-eval report runs/alpha" in _text(html)


def test_a_finished_run_writes_its_page_and_the_one_index_it_names(tmp_path, root):
    elsewhere = tmp_path / "elsewhere" / "x"
    run = _copy_run(root / "runs" / "alpha", elsewhere / "myrun")
    neighbour = _copy_run(root / "runs" / "beta", elsewhere / "neighbour")
    before = _snapshot(tmp_path / "elsewhere")
    page, index = render_run_and_index(run, tmp_path / "reports" / "index.html")
    assert page == run / "report.html" and index == tmp_path / "reports" / "index.html"
    after = _snapshot(tmp_path / "elsewhere")
    assert sorted(set(after) - set(before)) == ["x/myrun/report.html"]
    assert not (elsewhere / "index.html").exists() and not (neighbour / "report.html").exists()
    assert '<a href="../../../reports/index.html">' in page.read_text(encoding="utf-8")
    page, index = render_run_and_index(run)
    assert index is None and not (elsewhere / "index.html").exists()


def test_random_weight_runs_are_labelled_and_listed_apart(root):
    _copy_run(
        root / "runs" / "alpha",
        root / "speed" / "s1",
        model__checkpoint="yoco-3b",
        model__checkpoint_sha256=None,
        run_name="needle-yoco-3b",
    )
    _copy_run(root / "runs" / "alpha", root / "speed" / "s2", model__random_weights=True, run_name="flagged")
    render_all(root)
    html = (root / "index.html").read_text(encoding="utf-8")
    main, speed = html.split('<section id="speed">')
    assert 'id="card-r0"' in main  # alpha: a trained checkpoint stays with the evaluation runs
    for name in ("needle-yoco-3b", "flagged"):
        assert name not in main and name in speed
    assert "Random weights: a speed and memory run" in _text(speed)
    assert random_weights(load_run(root / "runs" / "alpha")) is False
    assert random_weights(load_run(root / "speed" / "s1")) is True


def test_identical_runs_fold_into_one_card_and_newest_comes_first(root):
    for i, day in enumerate(("2026-01-07", "2026-01-06", "2026-01-08")):
        _copy_run(root / "runs" / "alpha", root / "copies" / f"c{i}", created_utc=f"{day}T10:00:00Z")
    cards = []
    for i, d in enumerate([root / "runs" / "alpha", *sorted((root / "copies").iterdir()), root / "runs" / "beta"]):
        run = load_run(d, root)
        cards.append(needle_card(i, run, run_table(run), None, d.relative_to(root).as_posix()))
    ordered = newest_first(cards)
    assert [c.where for c in ordered] == ["copies/c2", "copies/c0", "copies/c1", "runs/alpha", "runs/beta"]
    folded = collapse(ordered)
    # alpha and its copies differ only in date and folder: one card (the newest), the others listed on it
    assert [c.where for c in folded] == ["copies/c2", "runs/beta"]
    assert [w for _, w in folded[0].copies] == ["copies/c0", "copies/c1", "runs/alpha"]
    labels = option_labels(ordered)
    assert labels[ordered[0].id] == "alpha — 2026-01-08 10:00, copies/c2"
    assert labels[ordered[-1].id] == "beta"  # a unique name needs nothing more
    assert len(set(labels.values())) == len(labels)


def test_grid_groups_replace_one_link_per_pair(root):
    for i in range(6):
        _copy_run(root / "runs" / "alpha", root / "more" / f"a{i}", run_name=f"alpha-{i}")
    render_index(root)
    html = (root / "index.html").read_text(encoding="utf-8")
    shared = html.split("Runs that share a grid")[1].split("</ul>")[0]
    assert shared.count("<li>") == 1  # alpha, beta and six copies on one grid: one line, not 28 pair links
    assert "8 runs" in shared


def test_no_problem_banner_without_a_problem(root):
    render_all(root)
    html = (root / "index.html").read_text(encoding="utf-8")
    assert 'id="problems"' not in html and "input problem" not in html


def test_examples_rebuild_byte_identical(tmp_path):
    """The committed examples are what the explicit command renders: rendering them changes no byte."""
    src = REPO / "reports" / "examples"
    work = tmp_path / "examples"
    shutil.copytree(src, work)
    render_all(work)  # as `yoco-eval report reports/examples`: its compare/ page is re-rendered too
    first = _snapshot(work)
    render_all(work)
    assert _snapshot(work) == first
    committed = _snapshot(src)
    stale = sorted(k for k in committed if first.get(k) != committed[k])
    assert stale == [], f"re-render reports/examples (see reports/README.md): {stale}"
