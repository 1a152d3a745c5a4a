"""The lm-eval throughput benchmark's code path on the CPU (SmolLM2-135M, fp32, two documents per task): both
models answer lm-eval's own requests, and the row reports equal answers next to the timing (timings meaningless)."""

from __future__ import annotations

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("transformers")


def test_both_models_answer_the_same_requests_alike(smollm2_folder):
    from yoco_eval.bench.lm_eval_throughput import run
    from yoco_eval.bench.protocol import Protocol

    res = run(str(smollm2_folder), "cpu", "float32", batch_size=4, max_length=64, limit=2,
              protocol=Protocol(runs=1, min_warmup=0), log=lambda _: None)  # fmt: skip
    assert set(res["rows"]) == {"hf", "yoco"}
    n = res["rows"]["hf"]["requests"]
    assert n == res["rows"]["yoco"]["requests"] and n >= 6
    for row in res["rows"].values():
        assert row["requests_per_s"] > 0 and row["runs"] == 1 and row["protocol"] == "none"
    agree = res["agreement"]
    # fp32 log-softmax over SmolLM2's 49K vocabulary is off by ~1e-6 of a token's log-probability (measured: 5e-4
    # nats on a 64-token window of -242 nats, against fp64), so two fp32 implementations agree to ~1e-5 relative
    assert agree["loglikelihood_max_abs_diff"] <= 1e-3 and agree["loglikelihood_rolling_max_rel_diff"] <= 1e-5
    done, total = agree["generations_identical"].split("/")
    assert done == total
    assert res["speedup_requests_per_s"] > 0
