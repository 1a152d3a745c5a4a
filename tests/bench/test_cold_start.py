"""The cold-start benchmark's plumbing on the CPU (the shipped 7M YOCO, 512 tokens): two needle processes, the
second on the first's caches, each cell timed; and the compile log's arithmetic on made-up Triton events."""

from __future__ import annotations

import json
from types import SimpleNamespace

from yoco_eval.bench.cold_start import CompileLog, cli


def test_two_starts_are_timed_from_the_needle_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "cold.json"
    assert cli(["--out", str(out), "--length", "512", "--model-args", "pretrained=yoco-needle-7m,device=cpu"]) == 0
    res = json.loads(out.read_text())
    assert set(res["runs"]) == {"fresh", "again"} and res["card"]["device"] == "cpu"
    for r in res["runs"].values():
        assert 0 < r["first_cell_s"] < r["to_first_result_s"] <= r["process_wall_s"]
        assert r["warm_cell_s"] > 0 and r["compiles"] == 0  # no Triton on the CPU path
    assert list(tmp_path.iterdir()) == [out]  # the runs and caches lived in a temporary folder


def test_a_failed_needle_run_is_one_error_line(tmp_path, capsys):
    args = ["--length", "4k", "--model-args", "pretrained=yoco-needle-7m,device=cpu"]
    rc = cli(["--out", str(tmp_path / "x.json"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "exceeds the model's context" in err[0]
    assert not (tmp_path / "x.json").exists()


def test_compile_log_sums_fresh_compilations_per_kernel():
    log = CompileLog()

    def compiled(name, us, hit=False):
        log._on_compile(src=SimpleNamespace(fn=SimpleNamespace(__name__=name)), metadata={}, cache_hit=hit,
                        times=SimpleNamespace(total=us))  # fmt: skip

    compiled("rms", 400_000)
    compiled("scan", 1_500_000)
    compiled("rms", 600_000)
    compiled("scan", 9_000_000, hit=True)  # a cache hit costs no compilation
    log._on_autotune(fn=SimpleNamespace(__name__="scan"), key=(1,), best_config="BK: 64", configs_timings={1: 0, 2: 0},
                     duration=2.5, cache_hit=False)  # fmt: skip
    s = log.summary()
    assert s["compiles"] == 3 and s["compile_s"] == 2.5
    assert s["by_kernel"] == [{"kernel": "scan", "n": 1, "s": 1.5}, {"kernel": "rms", "n": 2, "s": 1.0}]
    assert s["autotune"][0]["configs"] == 2 and s["autotune"][0]["best"] == "BK: 64"
