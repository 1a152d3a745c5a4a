"""Issue 20's table runner on the CPU: the lane plan, the table assembled from the recorded H100 files, the runner
with stand-in rows (tiny Python commands), and the command line's dry run and its no-GPU error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from yoco_eval.bench.table import Row, assemble, plan, run, table_rows

# recorded H100 files as they stood at 068af32 (reports/gpu/: steady_table_512k_1m_fla_h100.json, ...), frozen under
# the names the table's rows write, so a later re-measurement in reports/ does not move this test
RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "bench_table"


def _row(name: str, est: float) -> Row:
    return Row(name, ("true",), est, 10)


def test_plan_is_longest_first_onto_the_least_loaded_lane():
    rows = [_row(n, e) for n, e in [("prefill_fla", 260), ("decode_fp8", 45), ("throughput", 430),
                                    ("prompt_8m_fp8", 80), ("prompt_8m_bf16", 80), ("cold_start", 60),
                                    ("lm_eval", 90)]]  # fmt: skip
    lanes = plan(rows, 2)
    # 430 | 260 -> +90 (350) -> +80 (430) -> tie: +80 on lane 0 (510) -> +60 on lane 1 (490) -> +45 on lane 1 (535)
    assert [[r.name for r in lane] for lane in lanes] == [
        ["throughput", "prompt_8m_bf16"],
        ["prefill_fla", "lm_eval", "prompt_8m_fp8", "cold_start", "decode_fp8"],
    ]
    assert [sum(r.est_s for r in lane) for lane in lanes] == [510, 535]
    one = plan(rows, 1)
    assert len(one) == 1 and [r.est_s for r in one[0]] == [430, 260, 90, 80, 80, 60, 45]
    for n in (1, 2, 3, 4, 9):
        names = sorted(r.name for lane in plan(rows, n) for r in lane)
        assert names == sorted(r.name for r in rows) and len(plan(rows, n)) == n


def test_the_real_rows_plan_onto_four_gpus_within_one_call():
    lanes = plan(table_rows(), 4)
    assert max(sum(r.est_s for r in lane) for lane in lanes) == 430  # the throughput row alone
    assert max(r.timeout_s for r in table_rows()) <= 590
    assert "--random-weights" in table_rows("/x/smol")[-1].command and "/x/smol" in table_rows("/x/smol")[-1].command
    assert "--random-weights" not in table_rows()[-1].command


@pytest.fixture
def recorded(tmp_path):
    for src in RECORDED.glob("*.json"):
        shutil.copy(src, tmp_path / src.name)
    return tmp_path


def test_assemble_reads_the_recorded_h100_files(recorded):
    table = assemble(recorded)
    rows = {r["row"]: r for r in table["rows"]}
    p512 = rows["prefill 512K, 64K chunks"]
    assert p512["value"] == "2.920 s (cold 2.912 s, spread 0.3%)" and p512["met"] is False
    assert p512["target"] == "≤ 2.6 s" and p512["numbers"]["prefill_s"] == pytest.approx(2.91972, abs=1e-5)
    assert (p512["card"], p512["commit"], p512["file"]) == ("NVIDIA H100 80GB HBM3", "fe33a5e", "prefill_fla.json")
    assert rows["prefill 1M, 64K chunks"]["value"].startswith("5.856 s") and not rows["prefill 1M, 64K chunks"]["met"]
    lead = rows["lead over FLA's YOCO at 512K (its prefill / ours)"]
    assert lead["value"] == "1.37x (FLA 3.990 s against 2.920 s)" and lead["met"] is False
    assert lead["numbers"]["x"] == pytest.approx(3.98995 / 2.91972, rel=1e-4)
    bf16, fp8 = rows["decode 512K, bf16 cache"], rows["decode 512K, fp8 cache"]
    assert bf16["value"].startswith("12.16 ms") and bf16["met"] is False
    assert fp8["value"].startswith("9.31 ms") and fp8["met"] is False and fp8["file"] == "decode_fp8.json"
    thr = rows["throughput, 512K + 1,024 generated, batch 8, bf16"]
    assert thr["value"] == "80.0 tok/s (one timing)" and thr["met"] is False and thr["commit"] == "ed13f1b"
    fp8_8m, bf16_8m = rows["8M-token prompt, fp8 cache"], rows["8M-token prompt, bf16 cache"]
    assert fp8_8m["value"].startswith("peak 23.57 GiB") and fp8_8m["met"] is True
    assert fp8_8m["numbers"]["peak_gib"] == pytest.approx(25309634560 / 2**30)
    assert bf16_8m["value"].startswith("peak 39.08 GiB") and bf16_8m["met"] is True
    cold = rows["cold start: first needle cell, empty caches"]
    assert cold["value"] == "4.88 s (again, on its caches: 1.48 s)" and cold["met"] is True
    assert cold["card"] == "NVIDIA H100 80GB HBM3"  # the {"device", "name"} form of the bench files
    lm = rows["lm-eval requests/s, yoco against hf"]
    assert lm["value"] == "3.39x (727 against 214 requests/s)" and lm["met"] is True and lm["commit"] == "2624b2d"
    assert table["cards"] == ["NVIDIA H100 80GB HBM3"] and len(table["rows"]) == 10


def test_missing_or_failed_rows_are_not_measured(recorded):
    (recorded / "cold_start.json").unlink()
    doc = json.loads((recorded / "prompt_8m_bf16.json").read_text())
    doc["rows"][0].update(status="oom", error="CUDA out of memory")
    (recorded / "prompt_8m_bf16.json").write_text(json.dumps(doc))
    rows = {r["row"]: r for r in assemble(recorded)["rows"]}
    cold = rows["cold start: first needle cell, empty caches"]
    assert cold["value"] == "not measured" and cold["met"] is None and cold["numbers"] == {}
    assert rows["8M-token prompt, bf16 cache"]["value"] == "oom: CUDA out of memory"
    assert rows["8M-token prompt, bf16 cache"]["met"] is None
    assert rows["8M-token prompt, fp8 cache"]["met"] is True  # the others are unaffected
    empty = assemble(recorded / "nothing")
    assert {r["value"] for r in empty["rows"]} == {"not measured"} and empty["cards"] == []


WRITE = ("import json, os, sys, time; t0 = time.time(); time.sleep(float(sys.argv[2])); "
         "json.dump({'gpu': os.environ['CUDA_VISIBLE_DEVICES'], 'commit': os.environ.get('YOCO_EVAL_COMMIT'), "
         "'t0': t0, 't1': time.time()}, open(sys.argv[1], 'w'))")  # fmt: skip


def _stand_ins() -> list[Row]:
    py = (sys.executable, "-c")
    return [Row("slow_a", (*py, WRITE, "{out}/slow_a.json", "1.0"), 10, 30),
            Row("slow_b", (*py, WRITE, "{out}/slow_b.json", "1.0"), 10, 30),
            Row("bad", (*py, "print('loading'); print('boom: no such model'); raise SystemExit(1)"), 5, 30),
            Row("quick", (*py, WRITE, "{out}/quick.json", "0"), 1, 30)]  # fmt: skip


def _statuses(table: dict) -> dict:
    return {r["row"]: r for lane in table["lanes"] for r in lane["rows"]}


def test_runner_lanes_overlap_record_failures_and_resume(tmp_path, capsys):
    out = tmp_path / "out"
    table = run(_stand_ins(), out, 2, commit="abc1234", command="python -m yoco_eval.bench.table --out out")
    st = _statuses(table)
    assert {k: v["status"] for k, v in st.items()} == {"slow_a": "done", "slow_b": "done", "bad": "failed",
                                                        "quick": "done"}  # fmt: skip
    assert st["bad"]["rc"] == 1 and (out / "bad.log").read_text().strip().endswith("boom: no such model")
    a, b = (json.loads((out / f"slow_{x}.json").read_text()) for x in "ab")
    assert a["t0"] < b["t1"] and b["t0"] < a["t1"]  # the two 1 s rows ran at the same time
    assert {a["gpu"], b["gpu"]} == {"0", "1"} and a["commit"] == "abc1234"  # each pinned to its lane's GPU
    assert [lane["planned"] for lane in table["lanes"]] == [["slow_a", "bad"], ["slow_b", "quick"]]
    err = capsys.readouterr().err
    assert "[lane 0] slow_a started" in err and "[lane 0] bad failed (rc 1): boom: no such model" in err
    saved = json.loads((out / "table.json").read_text())
    assert saved["commit"] == "abc1234" and saved["command"].endswith("--out out") and len(saved["rows"]) == 10
    assert "GPU 0: slow_a (done" in (out / "table.md").read_text()

    again = _statuses(run(_stand_ins(), out, 2))
    assert {k: v["status"] for k, v in again.items()} == {"slow_a": "done earlier", "slow_b": "done earlier",
                                                           "bad": "failed", "quick": "done earlier"}  # fmt: skip
    assert json.loads((out / "slow_a.json").read_text()) == a  # not rerun

    forced = _statuses(run(_stand_ins(), out, 2, force=True))
    assert forced["slow_a"]["status"] == "done" and json.loads((out / "slow_a.json").read_text()) != a
    assert json.loads((out / "slow_a.prev.json").read_text()) == a  # the old result moved aside, not lost
    assert list(tmp_path.iterdir()) == [out]  # everything inside --out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["bad.log", "quick.json", "quick.log", "quick.prev.json", "slow_a.json", "slow_a.log", "slow_a.prev.json",
         "slow_b.json", "slow_b.log", "slow_b.prev.json", "table.json", "table.md"])  # fmt: skip


def _alive(pid: int) -> bool:
    try:  # a killed child nobody reaped yet is a zombie: dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_row_past_its_timeout_is_killed_with_its_children(tmp_path):
    hang = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])"
            "; open(sys.argv[1], 'w').write(str(p.pid)); print('waiting', flush=True); time.sleep(60)")  # fmt: skip
    rows = [Row("hang", (sys.executable, "-c", hang, "{out}/grandchild.pid"), 1, 4),
            Row("after", (sys.executable, "-c", WRITE, "{out}/after.json", "0"), 0.5, 30)]  # fmt: skip
    t0 = time.monotonic()
    st = _statuses(run(rows, tmp_path, 1, timeout_scale=0.5))
    assert time.monotonic() - t0 < 20
    assert st["hang"]["status"] == "timeout" and 2 <= st["hang"]["seconds"] < 5 and st["after"]["status"] == "done"
    assert not _alive(int((tmp_path / "grandchild.pid").read_text()))  # the row's own child went with it


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "yoco_eval.bench.table", *args], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_cli_dry_run_prints_both_lanes_and_runs_nothing(tmp_path):
    p = _cli("--out", str(tmp_path / "t"), "--dry-run", "--gpus", "2", "--smol", "/x/smol")
    assert p.returncode == 0, p.stderr
    for i, lane in enumerate(plan(table_rows(), 2)):
        assert f"lane {i} (CUDA_VISIBLE_DEVICES={i}): ~{sum(r.est_s for r in lane):.0f} s" in p.stdout
        assert all(f"  {r.name} (est " in p.stdout for r in lane)
    assert "--fla-autotune pinned" in p.stdout and "--model-folder /x/smol --random-weights" in p.stdout
    assert not (tmp_path / "t").exists()


def test_cli_without_a_gpu_is_one_error_line(tmp_path):
    p = _cli("--out", str(tmp_path / "t"))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "no CUDA GPU visible" in p.stderr
    bad = _cli("--out", str(tmp_path / "t"), "--dry-run", "--gpus", "2", "--rows", "prefill_fla,nope")
    assert bad.returncode == 2 and "unknown row(s) nope" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "t").exists()
