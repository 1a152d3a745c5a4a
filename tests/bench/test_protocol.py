"""The timing protocol (issue 20): cold call apart, warm-up at the timed length, median of >= 3, refusal.

No real timing anywhere: a stand-in "model" advances a fake clock by a scripted cost per call, slow on its first call
as a system that autotunes at a new length is, so every assertion is exact and cannot flake.
"""

from __future__ import annotations

import argparse
import json

import pytest

from yoco_eval.bench.protocol import PROTOCOL, Protocol, follows, measure_steady, require_protocol
from yoco_eval.errors import YocoEvalError
from yoco_eval.profile import main as profile_main
from yoco_eval.profile import write_profile


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SlowFirstCall:
    """A stand-in model whose n-th call costs ``costs[n]`` seconds of the fake clock (the last cost repeats)."""

    def __init__(self, clock: FakeClock, costs: list[float]):
        self.clock, self.costs, self.calls = clock, costs, 0

    def __call__(self) -> None:
        self.clock.now += self.costs[min(self.calls, len(self.costs) - 1)]
        self.calls += 1


def timed(model: SlowFirstCall, clock: FakeClock):
    """One measurement the way the profiler makes it: clock before, run, clock after."""

    def call() -> dict[str, float]:
        t0 = clock()
        model()
        return {"prefill_s": clock() - t0}

    return call


def stand_in(costs):
    clock = FakeClock()
    model = SlowFirstCall(clock, costs)
    return model, timed(model, clock)


def test_cold_call_is_recorded_apart_and_not_in_the_median():
    model, call = stand_in([30.0, 4.0, 3.0, 3.02, 2.99, 3.01, 2.98])  # autotunes on call 1, settles by call 3
    t = measure_steady(call, Protocol(runs=3, min_warmup=2, max_warmup=5))
    assert t.cold == {"prefill_s": 30.0}
    # warm-up at the timed length until two consecutive calls agree within 3% (3.0 and 3.02)
    assert [w["prefill_s"] for w in t.warmup] == pytest.approx([30.0, 4.0, 3.0, 3.02])
    assert t.converged
    assert [s["prefill_s"] for s in t.samples] == pytest.approx([2.99, 3.01, 2.98])
    assert max(s["prefill_s"] for s in t.samples) < 4  # the 30 s cold call is in none of them
    assert t.median == pytest.approx({"prefill_s": 2.99})
    assert t.spread["prefill_s"] == pytest.approx((3.01 - 2.98) / 2.99)
    assert model.calls == 7
    row = {"model": "stand-in", "status": "ok", **t.fields()}
    assert row["protocol"] == PROTOCOL and row["runs"] == 3 and row["warmup_runs"] == 4
    assert row["cold"]["prefill_s"] == 30
    assert row["samples"]["prefill_s"] == pytest.approx([2.99, 3.01, 2.98])
    assert follows(row)


def test_warm_up_stops_at_max_warmup_and_says_it_did_not_converge():
    _, call = stand_in([10.0, 5.0, 2.5, 1.25, 1.0])
    t = measure_steady(call, Protocol(runs=3, min_warmup=1, max_warmup=3))
    assert len(t.warmup) == 3 and not t.converged
    assert [x["prefill_s"] for x in t.samples] == pytest.approx([1.25, 1.0, 1.0])
    assert t.protocol == PROTOCOL  # warmed at the timed length and 3 runs: follows the protocol, flagged unconverged


def test_without_warm_up_the_cold_call_lands_in_the_timed_runs_and_the_row_is_not_steady_state():
    _, call = stand_in([30.0, 3.0])
    t = measure_steady(call, Protocol(runs=3, min_warmup=0))
    assert t.cold == {"prefill_s": 30.0} and t.samples[0] == t.cold and t.protocol == "none"
    assert not follows({"status": "ok", **t.fields()})


def rows_of(model_name, costs, protocol):
    _, call = stand_in(costs)
    return [{"model": model_name, "context_length": 524288, "status": "ok", **measure_steady(call, protocol).fields()}]


def test_a_comparison_with_a_row_measured_without_warm_up_or_repeats_is_refused(tmp_path):
    ours = rows_of("yoco-3b", [6.2, 5.82, 5.82], Protocol())
    peer_cold = rows_of("peer:fla-yoco", [8.2, 3.95], Protocol(runs=1, min_warmup=0))  # the old peer protocol
    out = tmp_path / "profile.json"
    with pytest.raises(YocoEvalError, match="refusing to write a comparison row") as err:
        write_profile(out, ours + peer_cold, card="stand-in", command="test")
    assert "peer:fla-yoco" in str(err.value) and "\n" not in str(err.value)
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing written, not even a temporary file
    peer_few = rows_of("peer:fla-yoco", [8.2, 3.95], Protocol(runs=2, min_warmup=1))  # warmed, but 2 runs
    with pytest.raises(YocoEvalError, match="runs=2"):
        write_profile(out, ours + peer_few, card="stand-in", command="test")


def test_a_steady_state_comparison_is_written_with_the_protocol_fields(tmp_path):
    ours = rows_of("yoco-3b", [6.2, 5.82, 5.82], Protocol())
    peer = rows_of("peer:fla-yoco", [8.2, 3.97, 3.94, 3.97, 3.96], Protocol())
    failed = [{"model": "peer:fla-yoco", "context_length": 1 << 20, "status": "oom"}]  # no timing, not checked
    doc = write_profile(tmp_path / "profile.json", ours + peer + failed, card="stand-in", command="test")
    saved = json.loads((tmp_path / "profile.json").read_text())
    assert saved == json.loads(json.dumps(doc))
    assert PROTOCOL in saved["protocol"]
    fla = saved["rows"][1]
    assert fla["cold"] == pytest.approx({"prefill_s": 8.2}) and fla["runs"] == 3
    assert fla["median"] == pytest.approx({"prefill_s": 3.96})


def test_one_model_alone_is_not_a_comparison_and_is_written_whatever_its_protocol(tmp_path):
    rows = rows_of("yoco-3b", [6.2, 5.8], Protocol(runs=1, min_warmup=0))
    write_profile(tmp_path / "p.json", rows, card="stand-in", command="test")
    assert json.loads((tmp_path / "p.json").read_text())["rows"][0]["protocol"] == "none"
    require_protocol([])  # nothing to compare


def profile_args(**kw):
    base = dict(models="yoco-3b,transformer-3b", lengths="512k", gen=32, batch=1, chunk_size=65536,
                retention_backend="auto", kv_dtype="auto", peers="", peer_lengths="512k", runs=3, warmup=2,
                max_warmup=5, out="unused.json")  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("kw", [{"runs": 1}, {"warmup": 0}, {"models": "yoco-3b", "peers": "fla", "runs": 2}],
                         ids=["one-run", "no-warmup", "peer-two-runs"])  # fmt: skip
def test_the_profile_command_refuses_a_comparison_without_the_protocol_before_any_gpu_work(kw):
    with pytest.raises(YocoEvalError, match="refusing to compare") as err:
        profile_main(profile_args(**kw))
    assert "\n" not in str(err.value)


def test_bad_protocol_settings_are_one_error_line():
    with pytest.raises(YocoEvalError, match="bad timing protocol"):
        Protocol(runs=0)
    with pytest.raises(YocoEvalError, match="bad timing protocol"):
        Protocol(min_warmup=3, max_warmup=2)
