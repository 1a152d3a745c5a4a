"""`yoco-eval profile` rows on the CPU (yoco-debug): every row carries the steady-state protocol's fields.

Timing values are never asserted (CPU timing is noise); only how the rows are built from the calls.
"""

from __future__ import annotations

import pytest

from yoco_eval.bench.protocol import PROTOCOL, Protocol, follows
from yoco_eval.profile import profile_model


def test_profile_rows_carry_the_protocol_fields_and_report_the_median():
    protocol = Protocol(runs=3, min_warmup=2, max_warmup=2)
    rows = profile_model("yoco-debug", [48, 96], gen=3, chunk=32, warm=16, device="cpu", log=lambda _: None,
                         protocol=protocol)  # fmt: skip
    assert [r["context_length"] for r in rows] == [48, 96]
    for r in rows:
        assert r["status"] == "ok" and follows(r) and r["protocol"] == PROTOCOL
        assert r["runs"] == 3 and r["warmup_runs"] == 2 and r["autotune"]
        for metric in ("prefill_s", "decode_ms_per_token", "throughput_tok_s"):
            assert len(r["samples"][metric]) == 3
            assert r[metric] == r["median"][metric] == sorted(r["samples"][metric])[1]
            assert r["spread"][metric] == pytest.approx(
                (max(r["samples"][metric]) - min(r["samples"][metric])) / r["median"][metric]
            )
            assert r["cold"][metric] > 0


def test_profile_without_warm_up_marks_its_rows_as_not_steady_state():
    rows = profile_model("yoco-debug", [48], gen=2, chunk=32, warm=16, device="cpu", log=lambda _: None,
                         protocol=Protocol(runs=1, min_warmup=0))  # fmt: skip
    assert rows[0]["protocol"] == "none" and not follows(rows[0])
    assert rows[0]["cold"] == {k: v[0] for k, v in rows[0]["samples"].items()}


def test_dry_run_plans_without_a_gpu(capsys):
    """`profile --dry-run` prints the plan from meta-device builds: no GPU, no weights, nothing written."""
    from yoco_eval.cli import main

    assert main(["profile", "--models", "yoco-3b,transformer-3b", "--lengths", "32k,1m", "--dry-run",
                 "--out", "/nonexistent/never/profile.json"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "yoco-3b: 6.42 GiB of bf16 weights, 4,096 K/V bytes per token" in out  # 26 x d=3072 shape, 8 KV heads x 128
    assert "transformer-3b:" in out and "1M:" in out and "chunk 65536 tokens" in out


def test_recorded_command_names_peer_options_only_when_a_peer_ran():
    """A profile file's command line reproduces its rows: without peers it carries no peer options."""
    import argparse

    from yoco_eval.profile import add_parser, recorded_command

    sub = argparse.ArgumentParser().add_subparsers()
    add_parser(sub)
    parse = lambda *a: sub.choices["profile"].parse_args(list(a))  # noqa: E731
    alone = recorded_command(parse("--lengths", "512k", "--kv-dtype", "fp8"), [])
    assert "--lengths 512k" in alone and "--kv-dtype fp8" in alone
    assert not any(x in alone for x in ("--peers", "--peer-lengths", "--fla-autotune", "--dry-run"))
    peered = recorded_command(parse("--peers", "fla", "--fla-autotune", "pinned"), ["fla"])
    assert "--peers fla" in peered and "--fla-autotune pinned" in peered and "--peer-lengths" in peered
