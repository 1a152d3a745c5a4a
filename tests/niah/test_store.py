"""The run folder's files: results read as bytes, a torn write cut at any byte (also inside a multi-byte UTF-8
character) is set aside and its cells run again, reading never writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from yoco_eval import settings
from yoco_eval.niah import FakeNeedleModel, SweepConfig, run_sweep
from yoco_eval.niah.builder import PromptBuilder
from yoco_eval.niah.store import JsonlAppender, load_results, read_results, repair
from yoco_eval.tokenizer import load_tokenizer

# what a cell's result is, leaving out when and how fast it ran
SAME = ("cell", "status", "prompt_tokens", "needles", "question", "expected", "output", "score", "prompt_excerpts")


def _quiet(*a, **k):
    pass


def _essence(rows: list[dict]) -> list[dict]:
    return sorted(({k: r.get(k) for k in SAME} for r in rows), key=lambda r: r["cell"])


@pytest.fixture(scope="module")
def multibyte_run(tmp_path_factory):
    """A finished 3-cell run whose rows hold multi-byte UTF-8 (2-, 3- and 4-byte characters) in their excerpts."""
    root = tmp_path_factory.mktemp("store")
    hay = root / "hay.txt"
    hay.write_text(" ".join(f"Le café nº {i} sert du thé à Zürich, 東京の茶屋 {i} は静か 🍵." for i in range(300)))
    model = FakeNeedleModel(load_tokenizer("bytes"))
    cfg = dict(lengths=[330], depths=[0.0, 50.0, 100.0], trials=1, haystack=str(hay))
    clean = root / "clean"
    run_sweep(model, SweepConfig(out=clean, **cfg), progress=False, command="t", log=_quiet)
    return model, cfg, clean


@pytest.fixture
def fast_resume(monkeypatch):
    """Thousands of resumes: skip what costs time but is not under test here (fsync, git, rebuilding the same
    deterministic prompt)."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setenv("YOCO_EVAL_COMMIT", "test")
    settings.reload()
    real, built = PromptBuilder.build, {}

    def build(self, length, depth, seed):
        if (length, depth, seed) not in built:
            built[length, depth, seed] = real(self, length, depth, seed)
        return built[length, depth, seed]

    monkeypatch.setattr(PromptBuilder, "build", build)
    yield
    monkeypatch.undo()
    settings.reload()


@pytest.mark.slow
def test_torn_at_every_byte_of_the_last_three_lines_resumes_to_the_clean_results(multibyte_run, tmp_path, fast_resume):
    model, cfg, clean = multibyte_run
    data = (clean / "results.jsonl").read_bytes()
    want = _essence(load_results(clean))
    order = [r["cell"] for r in read_results(clean / "results.jsonl").rows]
    lines = data.split(b"\n")[:-1]
    assert len(lines) == 3 and all(len(line.decode("utf-8")) < len(line) for line in lines)  # multi-byte content
    assert any(len(ch.encode()) == 4 for ch in data.decode()) and any(len(ch.encode()) == 3 for ch in data.decode())
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_bytes((clean / "run.json").read_bytes())
    start = len(data) - sum(len(line) + 1 for line in lines[-3:])
    mid_char = 0
    for cut in range(start, len(data)):
        torn = data[:cut]
        try:
            torn.decode("utf-8")
        except UnicodeDecodeError:
            mid_char += 1
        for f in out.glob("results.jsonl*"):
            f.unlink()
        (out / "results.jsonl").write_bytes(torn)
        # reading (what --show and --dry-run do) never raises and never writes
        seen = read_results(out / "results.jsonl")
        whole_tail = data[cut : cut + 1] == b"\n" and not torn.endswith(b"\n")  # a row cut just before its newline
        assert len(seen.rows) == torn.count(b"\n") + whole_tail, cut
        assert (out / "results.jsonl").read_bytes() == torn
        s = run_sweep(model, SweepConfig(out=out, **cfg), progress=False, command="t", log=_quiet)
        assert s["ran"] == 3 - len(seen.rows), cut
        assert bool(s["dropped"]) == bool(seen.dropped), cut
        assert _essence(load_results(out)) == want, cut
        asides = list(out.glob("results.jsonl.torn-*"))
        final = (out / "results.jsonl").read_bytes()  # every cell once, in grid order, every line whole
        assert final.endswith(b"\n") and [r["cell"] for r in read_results(out / "results.jsonl").rows] == order
        if seen.dropped:  # the torn bytes are kept aside, byte for byte, not lost
            assert len(asides) == 1 and asides[0].read_bytes() == torn[torn.rfind(b"\n") + 1 :] + b"\n"
        else:
            assert not asides
    assert mid_char > 0  # some cuts fell inside a multi-byte character


def test_dry_run_and_show_survive_a_torn_multibyte_line(multibyte_run, tmp_path, capsys):
    from yoco_eval.niah import cli

    model, cfg, clean = multibyte_run
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_bytes((clean / "run.json").read_bytes())
    data = (clean / "results.jsonl").read_bytes()
    cut = data.rindex("🍵".encode()) + 2  # inside the 4-byte character
    (out / "results.jsonl").write_bytes(data[:cut])
    lines: list[str] = []
    s = run_sweep(model, SweepConfig(out=out, **cfg), dry_run=True, tokens_per_s=1e3, log=lines.append)
    assert s["todo"] == 1 and "torn last line, invalid UTF-8" in "\n".join(lines)
    assert (out / "results.jsonl").read_bytes() == data[:cut]  # a dry run writes nothing
    assert cli.main(["--show", str(out)]) == 0
    captured = capsys.readouterr()
    assert "2 cells" in captured.out and "dropped 1 unreadable line" in captured.err


def test_corrupt_middle_line_is_set_aside_and_a_whole_last_row_keeps_its_newline(tmp_path):
    path = tmp_path / "results.jsonl"
    good = [json.dumps({"cell": f"L1_D0_T{i}", "output": "é"}, ensure_ascii=False).encode() for i in range(3)]
    path.write_bytes(good[0] + b"\n" + b'{"cell": "L1_D\xff' + b"\n" + good[1] + b"\n" + good[2])
    got = repair(path)
    assert [n for n, _, _ in got.dropped] == [2] and got.aside is not None
    assert path.read_bytes() == b"\n".join(good) + b"\n"
    assert got.aside.read_bytes() == b'{"cell": "L1_D\xff\n'
    w = JsonlAppender(path)
    w.write({"cell": "L1_D0_T3"})
    w.close()
    assert [r["cell"] for r in read_results(path).rows] == [f"L1_D0_T{i}" for i in range(4)]


def test_reading_a_missing_file_is_empty(tmp_path):
    got = read_results(Path(tmp_path) / "nope.jsonl")
    assert got.rows == [] and got.dropped == []
