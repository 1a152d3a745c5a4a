"""Reading run folders: shard merge and de-duplication, and one clear problem per bad input."""

from __future__ import annotations

import json
from pathlib import Path

from yoco_eval.report.load import load_run
from yoco_eval.report.problems import MAX_PER_FILE


def _row(length=1024, depth=50.0, trial=0, **kw) -> dict:
    r = {
        "cell": f"L{length}_D{depth:g}_T{trial}",
        "context_length": length,
        "depth_percent": depth,
        "trial": trial,
        "status": "ok",
        "error": None,
        "score": 1.0,
    }
    r.update(kw)
    return r


def _write(d: Path, lines: list[str], name: str = "results.jsonl") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text("".join(lines), encoding="utf-8")
    return d


def test_alpha_reads_every_row_without_problems(root):
    run = load_run(root / "runs" / "alpha")
    assert run.problems == []
    assert len(run.cells) == 18
    assert run.name == "alpha" and run.get("model.name") == "yoco-debug" and run.get("model.nope") is None
    assert run.grid_lengths == [1024, 4096, 16384] and run.grid_depths == [0.0, 50.0, 100.0]
    failed = [c.cell for c in run.cells if not c.ok]
    assert failed == ["L4096_D100_T1", "L16384_D100_T0", "L16384_D100_T1"]
    assert all(c.score is None for c in run.cells if not c.ok)  # errors are never zeros


def test_rank_shards_merge_and_the_newest_row_of_a_cell_wins(root):
    run = load_run(root / "runs" / "beta")
    assert run.problems == []
    assert run.files == ["beta/results.rank0.jsonl", "beta/results.rank1.jsonl"]
    assert len(run.cells) == 18
    retried = [c for c in run.cells if c.cell == "L1024_D0_T0"]
    assert len(retried) == 1 and retried[0].ok  # the older error row (read last) lost to the newer ok row


def test_without_timestamps_the_row_read_last_wins(tmp_path):
    d = _write(tmp_path / "run", [json.dumps(_row(score=0.0)) + "\n"])
    _write(d, [json.dumps(_row(score=1.0)) + "\n"], "results.rank0.jsonl")
    _write(d, [json.dumps(_row(score=0.5)) + "\n"], "results.rank10.jsonl")
    _write(d, [json.dumps(_row(score=0.25)) + "\n"], "results.rank2.jsonl")
    (d / "run.json").write_text('{"schema": "yoco-eval/needle-run/1"}')
    run = load_run(d)
    assert [c.score for c in run.cells] == [0.5]  # results.jsonl, rank0, rank2, rank10: numeric rank order


def test_missing_run_json_is_one_problem_and_rows_still_load(root):
    d = root / "runs" / "alpha"
    (d / "run.json").unlink()
    run = load_run(d)
    assert [str(p) for p in run.problems] == [
        "alpha/run.json: run.json is missing — rerun the sweep (it writes run.json first), or restore the file; "
        "metadata is shown as —"
    ]
    assert len(run.cells) == 18 and run.name == "alpha"


def test_corrupt_run_json_names_file_and_line(root):
    d = root / "runs" / "alpha"
    (d / "run.json").write_text('{\n  "run_name": "alpha",\n  oops\n}\n')
    run = load_run(d)
    assert len(run.problems) == 1
    p = run.problems[0]
    assert (p.path, p.line) == ("alpha/run.json", 3) and "not valid JSON" in p.message
    assert len(run.cells) == 18


def test_missing_results_file(root):
    d = root / "runs" / "alpha"
    (d / "results.jsonl").unlink()
    run = load_run(d)
    assert len(run.problems) == 1
    assert str(run.problems[0]).startswith("alpha/results.jsonl: results.jsonl is missing")
    assert run.cells == []


def test_truncated_last_line(root):
    path = root / "runs" / "alpha" / "results.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # cut inside the last row: no trailing newline
    run = load_run(path.parent)
    assert len(run.problems) == 1
    p = run.problems[0]
    assert (p.path, p.line) == ("alpha/results.jsonl", 18)
    assert "truncated last line" in p.message and "resume the run" in p.fix
    assert len(run.cells) == 17


def test_corrupt_line_in_the_middle(root):
    path = root / "runs" / "alpha" / "results.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[4] = lines[4][:30] + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    run = load_run(path.parent)
    assert len(run.problems) == 1
    p = run.problems[0]
    assert (p.path, p.line) == ("alpha/results.jsonl", 5)
    assert p.message.startswith("not valid JSON") and p.message.endswith("line skipped")
    assert len(run.cells) == 17


def test_malformed_rows_each_get_a_line(tmp_path):
    bad = [
        "[1, 2]\n",  # not an object
        json.dumps({"depth_percent": 5}) + "\n",  # no context_length
        json.dumps(_row(length="4k")) + "\n",  # wrong type, required
        json.dumps(_row(trial=1, score="high")) + "\n",  # wrong type, optional: kept, as an error row
        json.dumps(_row(trial=2, status="ok", score=None)) + "\n",  # ok without a score
        json.dumps(_row(trial=3, status="weird")) + "\n",
        "\n",  # blank lines are fine
        json.dumps(_row(trial=4, seed="x")) + "\n",
    ]
    d = _write(tmp_path / "run", bad)
    (d / "run.json").write_text('{"schema": "yoco-eval/needle-run/1"}')
    (d / "results.jsonl").write_bytes((d / "results.jsonl").read_bytes() + b'{"x": "\xff"}\n')
    run = load_run(d)
    lines = {(p.line, p.message.split(";")[0].split(" (")[0]) for p in run.problems}
    assert lines == {
        (1, "expected a JSON object, found list"),
        (2, "missing required field(s) context_length"),
        (3, "context_length must be a positive integer, got '4k'"),
        (4, "field(s) score have the wrong type and are shown as —"),
        (8, "field(s) seed have the wrong type and are shown as —"),
        (9, "not valid UTF-8"),
    }
    by_trial = {c.trial: c for c in run.cells}
    assert by_trial[1].status == "error" and by_trial[1].score is None
    assert by_trial[2].error == "status is 'ok' but no score was recorded"
    assert by_trial[3].error.startswith("unknown status 'weird'")
    assert by_trial[4].ok and by_trial[4].seed is None


def test_problem_flood_is_capped_per_file(tmp_path):
    d = _write(tmp_path / "run", ["nope\n"] * (MAX_PER_FILE + 7))
    run = load_run(d)
    per_line = [p for p in run.problems if p.line is not None and p.path.endswith("results.jsonl")]
    assert len(per_line) == MAX_PER_FILE
    assert any("7 more problems" in p.message for p in run.problems)


def test_missing_folder_does_not_raise(tmp_path):
    run = load_run(tmp_path / "nowhere")
    assert run.cells == [] and len(run.problems) == 2
