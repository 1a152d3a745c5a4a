"""Cost next to accuracy: the per-length table of a run page and a comparison, older rows without cost fields,
escaping, and NLL runs in the index, the report command and comparisons."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from statistics import median

from tests.report.conftest import XSS
from tests.report.pagecheck import Page
from yoco_eval.report import fmt, render_all, render_compare, render_run
from yoco_eval.report.cost import NOT_RECORDED, length_costs
from yoco_eval.report.effective import effective_length
from yoco_eval.report.load import load_run
from yoco_eval.report.views import run_table

REPO = Path(__file__).resolve().parents[2]
LENGTHS = (1024, 2048, 4096)
SCORES = {1024: [1, 1, 1, 1], 2048: [1, 1, 1, 0], 4096: [0, 0, 1, 0]}  # 75% at 2K is below 85% of 100%: effective 1K


def _row(length: int, t: int, score: int, cost: bool, **kw) -> dict:
    row = {
        "cell": f"L{length}_D50_T{t}", "context_length": length, "depth_percent": 50.0, "trial": t, "seed": t,
        "status": "ok", "error": None, "score": float(score), "metric": "substring", "output": " 1.",
        "timestamp_utc": f"2026-01-01T00:00:{t:02d}Z", "rank": 0, "prompt_tokens": length,
    }  # fmt: skip
    if cost:
        row.update(prefill_s=length / 1000 + t / 100, decode_s=0.5 + t / 10, peak_rss_bytes=1000 * length + t,
                   kv_bytes_per_token=8192)  # fmt: skip
    row.update(kw)
    return row


def _write_run(folder: Path, name: str, cost: bool = True, lengths=LENGTHS, **meta) -> Path:
    folder.mkdir(parents=True)
    rows = [_row(n, t, s, cost) for n in lengths for t, s in enumerate(SCORES[n])]
    run = {"schema": "yoco-eval/needle-run/1", "run_name": name, "created_utc": "2026-01-01T00:00:00Z",
           "model": {"name": name, "checkpoint": "x", "checkpoint_sha256": "ab"},
           "grid": {"lengths": list(lengths), "depths": [50.0], "trials": 4, "seed": 0},
           "hardware": {"name": "test cpu"}, **meta}  # fmt: skip
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _cost_rows(html: str) -> list[list[str]]:
    """The text of each body row of the page's cost table."""
    table = html[html.index('<table class="data cost">') :]
    table = table[: table.index("</table>")]
    rows = re.findall(r"<tr( class=\"[^\"]*\")?>(.*?)</tr>", table, re.S)
    out = []
    for _, body in rows[1:]:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)
        if cells:
            out.append([re.sub(r"<[^>]+>", "", c).strip() for c in cells])
    return out


def test_length_costs_are_medians_maxima_and_marks(tmp_path):
    run = load_run(_write_run(tmp_path / "a", "a"))
    table = run_table(run)
    eff = effective_length(table.lengths, table.by_length)
    costs = length_costs(run, table, eff)
    assert [c.length for c in costs] == list(LENGTHS)
    assert eff.length == 1024 and [c.mark for c in costs] == ["effective", "below", "after"]  # 75% < 85% of 100%
    for c in costs:
        assert c.prefill_s == median(c.length / 1000 + t / 100 for t in range(4))
        assert c.decode_s == median(0.5 + t / 10 for t in range(4))
        assert c.peak_mem_bytes == 1000 * c.length + 3 and c.mem_source == "rss"  # the largest, and what it is
        assert c.kv_bytes == 8192 * c.length
    assert costs[0].interval is not None and costs[0].interval[1] == 1.0
    assert costs[1].score_text().startswith("75.0 (") and costs[1].cost_texts()["memory"].endswith("(RSS)")


def test_cuda_peak_wins_and_continued_prompts_are_not_prefill_cost(tmp_path):
    d = _write_run(tmp_path / "g", "g", lengths=(1024,))
    rows = [json.loads(x) for x in (d / "results.jsonl").read_text().splitlines()]
    rows[0].update(peak_mem_bytes=5 << 30, reused_prompt_tokens=900, prefill_s=0.001)  # a continued prompt
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = load_run(d)
    (c,) = length_costs(run, run_table(run), None)
    assert c.mem_source == "cuda" and c.peak_mem_bytes == 5 << 30
    assert c.prefill_s == median(1.024 + t / 100 for t in (1, 2, 3)) and c.mark == ""


def test_a_length_whose_trials_all_failed_ends_the_walk_as_unscored(tmp_path):
    d = _write_run(tmp_path / "u", "u")
    rows = [json.loads(x) for x in (d / "results.jsonl").read_text().splitlines()]
    for r in rows:
        if r["context_length"] == 2048:
            r.update(status="error", error="OutOfMemoryError: CUDA out of memory", score=None)
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = load_run(d)
    table = run_table(run)
    costs = length_costs(run, table, effective_length(table.lengths, table.by_length))
    assert [c.mark for c in costs] == ["effective", "unscored", "after"]
    assert costs[1].score_text() == "—" and costs[1].interval is None
    assert costs[1].kv_bytes == 8192 * 2048  # the cost of a length that failed is still known


def test_run_page_shows_the_cost_row_per_length_and_not_recorded_for_old_rows(tmp_path):
    new = render_run(_write_run(tmp_path / "new", "new")).read_text()
    rows = _cost_rows(new)
    assert [r[0] for r in rows] == ["1,024", "2,048", "4,096"]
    assert rows[0][3] == "◀ effective length" and rows[1][3] == "below threshold"
    prefill_1k = fmt.seconds(median(1.024 + t / 100 for t in range(4)))
    assert rows[0][4] == prefill_1k == "1.04 s" and rows[0][5] == fmt.seconds(median(0.5 + t / 10 for t in range(4)))
    assert rows[0][6] == fmt.bytes_(1024 * 1000 + 3) + " (RSS)" and rows[2][7] == "32.00 MiB"  # 8 KiB x 4,096
    assert 'class="mark-effective"' in new and NOT_RECORDED not in "".join(sum(rows, []))
    old = render_run(_write_run(tmp_path / "old", "old", cost=False)).read_text()
    for r in _cost_rows(old):
        assert r[4:] == [NOT_RECORDED] * 4 and r[1] != "—"  # scores still shown, cost said to be missing


def test_comparison_puts_accuracy_and_cost_side_by_side(tmp_path):
    a = _write_run(tmp_path / "a", "yoco " + XSS[0])
    b = _write_run(tmp_path / "b", "transformer " + XSS[1], cost=False, lengths=(1024, 2048))
    html = render_compare(a, b, tmp_path / "c.html").read_text()
    rows = _cost_rows(html)
    a_rows, b_rows = rows[0::2], rows[1::2]  # per length: A's row (with the length and B − A), then B's
    assert [r[0] for r in a_rows] == ["1,024", "2,048", "4,096"] and {r[1] for r in a_rows} == {"A"}
    assert {r[0] for r in b_rows} == {"B"}
    # A: length | run | score | B − A | effective | prefill | decode | memory | K/V;  B: run | score | effective | ...
    assert [len(r) for r in rows[:2]] == [9, 7] and a_rows[0][3] == a_rows[1][3] == "±0"
    assert a_rows[0][5] == "1.04 s" and b_rows[0][3] == NOT_RECORDED and a_rows[0][8] == "8.00 MiB"
    assert b_rows[0][6] == NOT_RECORDED and a_rows[0][4] == b_rows[0][2] == "◀ effective length"
    assert b_rows[2][1] == "not run" and b_rows[2][3:] == ["not run"] * 4 and a_rows[2][3] == "—"
    for payload in XSS:
        assert payload not in html
    assert not [t for t, _ in Page(html).tags if t in ("img", "iframe")]


def _nll_line(model: str, corpus: str, path: str, nll: float) -> dict:
    return {"schema": "yoco-eval/nll/1", "model": model, "model_path": path, "corpus": corpus, "n_tokens": 64,
            "chunk": 32, "device": "cpu", "dtype": "float32", "status": "ok", "error": None, "seconds": 1.0,
            "tokens_per_s": 64.0, "peak_mem_bytes": None, "cache_bytes": 4096, "nll_mean": nll,
            "bits_per_byte": nll / 0.69, "cumulative": [[1, nll + 1], [16, nll + 0.5], [64, nll]],
            "log_buckets": [{"lo": 0, "hi": 64, "n": 64, "nll": nll}], "document": {"tokenizer": "bytes"}}  # fmt: skip


def _nll_run(folder: Path, lines: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "nll.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def test_nll_runs_are_index_cards_and_pages_and_comparisons(tmp_path):
    root = tmp_path / "reports"
    one = _nll_run(root / "nll-one", [_nll_line("yoco " + XSS[0], "book", "models/x", 1.25),
                                      _nll_line("tf", "book", "models/y", 2.5)])  # fmt: skip
    rnd = _nll_run(root / "nll-random", [_nll_line("yoco-3b", "code", "yoco-3b", 11.0)])
    s = render_all(root, [(one, rnd)])
    index = (root / "index.html").read_text()
    cards = {m.group(1): m.group(0) for m in re.finditer(r'<article class="card[^"]*" id="card-(\w+)".*?</article>',
                                                           index, re.S)}  # fmt: skip
    nll = [c for c in cards.values() if 'data-kind="nll"' in c]
    assert len(nll) == 2
    (random_card,) = [c for c in nll if "nll-random" in c]
    assert 'class="card speed"' in random_card and "yoco-3b (random weights)" in random_card
    (trained,) = [c for c in nll if "nll-one" in c]
    assert 'href="nll-one/report.html"' in trained and "2 models overlaid" in trained and "1.250 nats" in trained
    assert "speed" not in trained.split(">", 1)[0]
    assert 'href="nll.html"' in index and 'href="compare/nll-one__vs__nll-random.html"' in index
    for page in ("nll-one/report.html", "nll-random/report.html", "nll.html", "compare/nll-one__vs__nll-random.html"):
        assert root / page in s.pages
        html = (root / page).read_text()
        assert XSS[0] not in html and re.search(r'href="(\.\./)?index\.html"', html), page
    both = (root / "compare/nll-one__vs__nll-random.html").read_text()
    assert "A: tf" in both and "B: yoco-3b" in both  # each run's models keep their side
    assert XSS[0] not in index


def test_report_command_on_an_nll_folder_and_bad_compares(tmp_path):
    run = _nll_run(tmp_path / "n", [_nll_line("m", "book", "models/m", 1.0)])
    needle = _write_run(tmp_path / "needle", "needle")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "yoco_eval.report.cli", *args], capture_output=True, text=True,
                              cwd=REPO, timeout=120)  # fmt: skip

    p = cli(str(run))
    assert p.returncode == 0 and p.stdout.strip() == f"rendered 1 page: {run / 'report.html'}"
    assert sorted(x.name for x in run.iterdir()) == ["nll.jsonl", "report.html"]  # no index inside a run folder
    with (run / "nll.jsonl").open("a") as f:
        f.write('{"schema": "yoco-eval/nll/1", "mod')  # a torn last line
    p = cli(str(run))
    assert p.returncode == 0 and p.stderr.startswith(f"warning: {run / 'nll.jsonl'}:2: not valid JSON")
    assert "nll.jsonl:2: not valid JSON" in (run / "report.html").read_text()  # named from the page's own folder
    p = cli(str(tmp_path), "--no-index")
    assert p.returncode == 0 and f"warning: {run / 'nll.jsonl'}:2: not valid JSON" in p.stderr
    p = cli(str(tmp_path), "--compare", str(run), str(needle))
    assert p.returncode == 2
    assert p.stderr == f"error: {run} is an NLL run and {needle} a needle run: compare two runs of one kind\n"
