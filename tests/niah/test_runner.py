"""The sweep runner: run folder layout, resume, failing cells, crash safety (real SIGKILL), torchrun shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from yoco_eval.errors import YocoEvalError
from yoco_eval.niah import FakeNeedleModel, SweepConfig, get_variant, load_results, reconstruct_prompt, run_sweep
from yoco_eval.niah.store import JsonlAppender, read_jsonl
from yoco_eval.tokenizer import TiktokenTokenizer, YOCOTokenizer, cl100k_encoding

ROOT = Path(__file__).resolve().parents[2]
FAKE_CLI = Path(__file__).with_name("fake_cli.py")  # `needle` with the fake model's test knobs
RUN_KEYS = {
    "schema",
    "run_name",
    "created_utc",
    "model",
    "haystack",
    "variant",
    "grid",
    "max_new_tokens",
    "git_commit",
    "hardware",
    "command",
    "yoco_eval_version",
    "tolerance_tokens",
}
ROW_KEYS = {
    "cell",
    "context_length",
    "depth_percent",
    "trial",
    "seed",
    "status",
    "error",
    "prompt_tokens",
    "needles",
    "question",
    "expected",
    "output",
    "score",
    "metric",
    "duration_s",
    "prefill_s",
    "tokens_per_s",
    "peak_mem_bytes",
    "decode_s",
    "peak_rss_bytes",
    "kv_bytes_per_token",
    "timestamp_utc",
    "rank",
    "prompt_excerpts",
}


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _cfg(out, **kw):
    base = dict(lengths=[1024, 2048], depths=[0.0, 50.0, 100.0], trials=2, seed=5, haystack="noise", out=out)
    base.update(kw)
    return SweepConfig(**base)


def _quiet(*a, **k):
    pass


def test_sweep_layout_scores_and_resume(tmp_path):
    out = tmp_path / "run"
    model = FakeNeedleModel(YOCOTokenizer())
    s = run_sweep(model, _cfg(out, variant=get_variant("multi")), progress=False, command="test", log=_quiet)
    assert s["ran"] == 12 and s["errors"] == 0
    meta = json.loads((out / "run.json").read_text())
    assert RUN_KEYS <= set(meta)
    assert meta["schema"] == "yoco-eval/needle-run/1" and meta["tolerance_tokens"] == 0
    assert {"name", "kind", "checkpoint", "checkpoint_sha256", "tokenizer"} <= set(meta["model"])
    assert {"name", "source", "n_tokens", "repeated", "passes"} <= set(meta["haystack"])
    assert meta["grid"] == {
        "lengths": [1024, 2048], "depths": [0.0, 50.0, 100.0], "trials": 2, "seed": 5, "shared_haystack": False
    }
    rows = read_jsonl(out / "results.jsonl")
    assert len(rows) == 12 and len({r["cell"] for r in rows}) == 12
    for r in rows:
        assert ROW_KEYS <= set(r)
        assert r["status"] == "ok" and r["score"] == 1.0 and r["prompt_tokens"] == r["context_length"]
        assert len(r["needles"]) == 4 and sum(n["is_target"] for n in r["needles"]) == 1
        for n, ex in zip(r["needles"], r["prompt_excerpts"]):
            assert ex["needle"] == n["text"] and ex["token_position"] == n["token_position"]
            assert len(ex["before"]) <= 200 and len(ex["after"]) <= 200
    assert s["aggregate"]["overall"]["mean"] == 1.0 and s["aggregate"]["by_length"][1024]["n"] == 6
    # rerun: nothing to do, nothing duplicated
    s2 = run_sweep(model, _cfg(out, variant=get_variant("multi")), progress=False, command="test", log=_quiet)
    assert s2["ran"] == 0 and len(read_jsonl(out / "results.jsonl")) == 12
    # another grid on the same folder is refused in one line naming the difference and the ways out
    with pytest.raises(YocoEvalError, match=r"another grid \(lengths 1k,2k -> 1k,2k,3000\).*--extend.*--overwrite"):
        run_sweep(model, _cfg(out, variant=get_variant("multi"), lengths=[1024, 2048, 3000]), log=_quiet)
    # extending the grid runs only the new cells
    s3 = run_sweep(
        model,
        _cfg(out, variant=get_variant("multi"), lengths=[1024, 2048, 3000], on_existing="extend"),
        progress=False,
        command="test",
        log=_quiet,
    )
    assert s3["ran"] == 6 and len(read_jsonl(out / "results.jsonl")) == 18
    assert json.loads((out / "run.json").read_text())["grid"]["lengths"] == [1024, 2048, 3000]


def test_shared_haystack_run_resumes_again_and_again(tmp_path):
    """The merged run.json of a resumed run keeps every grid setting (shared_haystack included), so it resumes
    again; an older run.json without the key means a per-cell haystack."""
    out = tmp_path / "run"
    model = FakeNeedleModel(YOCOTokenizer())
    for lengths, ran in (([1024], 3), ([1024, 2048], 3), ([1024, 2048, 3000], 3), ([1024, 2048, 3000], 0)):
        s = run_sweep(model, _cfg(out, trials=1, lengths=lengths, shared_haystack=True, on_existing="extend"),
                      progress=False, command="t", log=_quiet)  # fmt: skip
        assert s["ran"] == ran
    meta = json.loads((out / "run.json").read_text())
    assert meta["grid"]["shared_haystack"] is True and meta["grid"]["lengths"] == [1024, 2048, 3000]
    with pytest.raises(YocoEvalError, match="grid.shared_haystack differs"):
        run_sweep(model, _cfg(out, trials=1, lengths=[1024]), progress=False, command="t", log=_quiet)
    old = tmp_path / "old"
    run_sweep(model, _cfg(old, trials=1, lengths=[1024]), progress=False, command="t", log=_quiet)
    meta = json.loads((old / "run.json").read_text())
    del meta["grid"]["shared_haystack"]  # made before the option existed
    (old / "run.json").write_text(json.dumps(meta))
    s = run_sweep(model, _cfg(old, trials=1, lengths=[1024, 2048], on_existing="extend"), progress=False,
                  command="t", log=_quiet)  # fmt: skip
    assert s["ran"] == 3 and json.loads((old / "run.json").read_text())["grid"]["shared_haystack"] is False


@pytest.mark.parametrize("shared", [False, True], ids=["haystack-per-cell", "shared-haystack"])
def test_reconstruct_prompt_matches_rows(tmp_path, shared):
    out = tmp_path / "run"
    tok = TiktokenTokenizer(cl100k_encoding())
    run_sweep(
        FakeNeedleModel(tok),
        _cfg(out, trials=1, depths=[0.0, 9.090909, 100.0], shared_haystack=shared),
        progress=False,
        command="t",
        log=_quiet,
    )
    rows = read_jsonl(out / "results.jsonl")
    assert "L1024_D9.090909_T0" in {r["cell"] for r in rows}
    for r in rows:
        p = reconstruct_prompt(out, r["cell"])
        assert len(tok.encode(p.text)) == r["prompt_tokens"]
        assert [n.to_row()["token_position"] for n in p.needles] == [n["token_position"] for n in r["needles"]]
        assert p.excerpts() == r["prompt_excerpts"] and p.expected == r["expected"]
    if shared:  # one needle per haystack: the depths differ only in where it sits
        assert len({(r["context_length"], r["expected"][0]) for r in rows}) == 2
    with pytest.raises(YocoEvalError, match="tokenizer mismatch"):
        reconstruct_prompt(out, "L1024_D0_T0", tokenizer=YOCOTokenizer())
    with pytest.raises(YocoEvalError, match="bad cell id"):
        reconstruct_prompt(out, "1024-0-0")


def test_failing_cells_are_recorded_and_retried(tmp_path):
    out = tmp_path / "run"
    flaky = FakeNeedleModel(YOCOTokenizer(), fail_lengths={2048}, oom_lengths={3000})
    s = run_sweep(flaky, _cfg(out, lengths=[1024, 2048, 3000]), progress=False, command="t", log=_quiet)
    assert s["ran"] == 18 and s["errors"] == 12
    rows = {r["cell"]: r for r in read_jsonl(out / "results.jsonl")}
    assert rows["L2048_D50_T1"]["status"] == "error" and "RuntimeError: fake failure" in rows["L2048_D50_T1"]["error"]
    assert rows["L3000_D0_T0"]["error"].startswith("MemoryError")
    assert rows["L1024_D0_T0"]["status"] == "ok"
    assert s["aggregate"]["overall"]["n_error"] == 12 and s["aggregate"]["overall"]["mean"] == 1.0
    # a plain rerun keeps the error cells; --retry-errors redoes them
    healthy = FakeNeedleModel(YOCOTokenizer())
    assert (
        run_sweep(healthy, _cfg(out, lengths=[1024, 2048, 3000]), progress=False, command="t", log=_quiet)["ran"] == 0
    )
    s = run_sweep(
        healthy, _cfg(out, lengths=[1024, 2048, 3000], retry_errors=True), progress=False, command="t", log=_quiet
    )
    assert s["ran"] == 12
    rows = read_jsonl(out / "results.jsonl")
    assert len(rows) == 18 and all(r["status"] == "ok" for r in rows)


def test_next_prompt_is_built_while_the_model_runs(tmp_path, monkeypatch):
    """Prompts are built one cell ahead on a worker thread, so the model never waits for the builder; a build
    error still lands on its own cell's row."""
    import threading

    from yoco_eval.niah.builder import PromptBuilder

    events: list[tuple[str, str]] = []
    real_build = PromptBuilder.build

    def build(self, length, depth, seed):
        events.append(("build", threading.current_thread().name))
        if length == 2048 and depth == 50.0:
            raise ValueError("broken haystack slice")
        return real_build(self, length, depth, seed)

    class Recording(FakeNeedleModel):
        def generate(self, *a, **kw):
            events.append(("generate", threading.current_thread().name))
            return super().generate(*a, **kw)

    monkeypatch.setattr(PromptBuilder, "build", build)
    out = tmp_path / "run"
    s = run_sweep(Recording(YOCOTokenizer()), _cfg(out, trials=1), progress=False, command="t", log=_quiet)
    assert s["ran"] == 6 and s["errors"] == 1
    builds = [t for e, t in events if e == "build"]
    assert len(builds) == 6 and all(t.startswith("needle-build") for t in builds)
    rows = {r["cell"]: r for r in read_jsonl(out / "results.jsonl")}
    assert rows["L2048_D50_T0"]["status"] == "error" and "broken haystack slice" in rows["L2048_D50_T0"]["error"]
    assert rows["L2048_D100_T0"]["status"] == "ok"


def test_torn_last_line_is_repaired(tmp_path):
    out = tmp_path / "run"
    model = FakeNeedleModel(YOCOTokenizer())
    run_sweep(model, _cfg(out, lengths=[1024]), progress=False, command="t", log=_quiet)
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    # simulate a crash in the middle of writing the last line, two cells lost
    (out / "results.jsonl").write_text("".join(lines[:-2]) + lines[-2][:37])
    assert len(read_jsonl(out / "results.jsonl")) == 4
    s = run_sweep(model, _cfg(out, lengths=[1024]), progress=False, command="t", log=_quiet)
    assert s["ran"] == 2
    rows = read_jsonl(out / "results.jsonl")
    assert sorted(r["cell"] for r in rows) == sorted({r["cell"] for r in rows}) and len(rows) == 6


def test_appender_writes_whole_lines(tmp_path):
    w = JsonlAppender(tmp_path / "x.jsonl")
    w.write({"cell": "a", "output": 'raw "quotes" and \u00e9 and <b>html</b>'})
    w.close()
    text = (tmp_path / "x.jsonl").read_text(encoding="utf-8")
    assert text.endswith("\n") and "\u00e9" in text and "<b>html</b>" in text  # raw, unescaped model output


def test_dry_run_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    lines = []
    s = run_sweep(FakeNeedleModel(YOCOTokenizer()), _cfg(out), dry_run=True, tokens_per_s=1000.0, log=lines.append)
    assert not out.exists()
    assert s["cells"] == 12 and s["tokens_total"] == 6 * 1024 + 6 * 2048
    assert s["estimated_s"] == pytest.approx(s["tokens_todo"] / 1000.0)
    text = "\n".join(lines)
    assert "1024, 2048" in text and "18,432 prompt tokens" in text and "estimate" in text
    # without a rate, one probe cell calibrates the estimate
    s = run_sweep(FakeNeedleModel(YOCOTokenizer(), sleep_per_1k=0.01), _cfg(out), dry_run=True, log=lines.append)
    assert s["estimated_s"] is not None and "probe" in s["estimate_basis"] and not out.exists()


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(lengths=[30]), "below the prompt template's own size"),
        (dict(depths=[0.0, 150.0]), "outside 0–100"),
        (dict(depths=[-5.0]), "outside 0–100"),
        (dict(lengths=[]), "no context lengths"),
        (dict(trials=0), "at least 1"),
        (dict(lengths=[1024, 1024]), "must not repeat"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, kw, match):
    out = tmp_path / "run"
    with pytest.raises(YocoEvalError, match=match) as e:
        run_sweep(FakeNeedleModel(YOCOTokenizer()), _cfg(out, **kw), progress=False, log=_quiet)
    assert "\n" not in str(e.value)
    assert not out.exists()


def test_empty_haystack_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n")
    out = tmp_path / "run"
    with pytest.raises(YocoEvalError, match="holds no text"):
        run_sweep(FakeNeedleModel(YOCOTokenizer()), _cfg(out, haystack=str(empty)), progress=False, log=_quiet)
    assert not out.exists()


def test_tokenizer_mismatch_and_context_limit(tmp_path):
    out = tmp_path / "run"
    model = FakeNeedleModel(YOCOTokenizer())
    with pytest.raises(YocoEvalError, match="tokenizer mismatch"):
        run_sweep(model, _cfg(out), tokenizer=cl100k_encoding(), progress=False, log=_quiet)
    short = FakeNeedleModel(YOCOTokenizer(), max_context=2048)
    with pytest.raises(YocoEvalError, match="exceeds the model's context of 2048 tokens: use lengths ≤ 2016"):
        run_sweep(short, _cfg(out), progress=False, log=_quiet)
    assert not out.exists()
    # the same tokenizer passes the check
    run_sweep(model, _cfg(out, lengths=[1024]), tokenizer=YOCOTokenizer(), progress=False, log=_quiet)
    # resuming a folder with another model's tokenizer is refused, and the folder is left as it was
    before = (out / "results.jsonl").read_bytes()
    with pytest.raises(YocoEvalError, match="different needle run"):
        run_sweep(FakeNeedleModel(cl100k_encoding()), _cfg(out, lengths=[1024]), progress=False, log=_quiet)
    assert (out / "results.jsonl").read_bytes() == before


def _count_lines(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if line.endswith("}"))
    except FileNotFoundError:
        return 0


def test_sigkill_mid_sweep_then_resume(tmp_path):
    """A real subprocess killed with SIGKILL after some cells; the rerun completes every cell exactly once."""
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        str(FAKE_CLI),
        "--fake-sleep",
        "0.15",
        "--model",
        "fake",
        "--haystack",
        "noise",
        "--lengths",
        "1k,2k",
        "--depths",
        "0:100:5",
        "--trials",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 60
        while _count_lines(out / "results.jsonl") < 4 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    first = read_jsonl(out / "results.jsonl")
    assert 4 <= len(first) < 20  # killed part-way
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = read_jsonl(out / "results.jsonl")
    cells = [r["cell"] for r in rows]
    assert len(cells) == 20 and len(set(cells)) == 20
    assert all(r["status"] == "ok" and r["score"] == 1.0 for r in rows)
    # cells finished before the kill were not redone
    first_ts = {r["cell"]: r["timestamp_utc"] for r in first}
    assert all(r["timestamp_utc"] == first_ts[r["cell"]] for r in rows if r["cell"] in first_ts)


def test_torchrun_shards_and_merge(tmp_path):
    pytest.importorskip("torch.distributed")
    out = tmp_path / "sharded"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(FAKE_CLI),
        "--model",
        "fake",
        "--haystack",
        "noise",
        "--lengths",
        "1k,2k",
        "--depths",
        "0,50,100",
        "--trials",
        "3",
        "--out",
        str(out),
        "--no-progress",
    ]
    env = _env()
    env["MASTER_ADDR"] = "127.0.0.1"
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # never leave rank processes behind
        proc.communicate()
        pytest.fail("torchrun sweep did not finish in 120 s")
    assert proc.returncode == 0, stderr[-3000:]
    rows = read_jsonl(out / "results.jsonl")
    assert len(rows) == 18 and len({r["cell"] for r in rows}) == 18
    assert {r["rank"] for r in rows} == {0, 1}
    order = [r["cell"] for r in rows]
    for i, r in enumerate(rows):  # rank r ran cells i % 2 == r; merged back in grid order
        assert r["rank"] == i % 2, order
    assert not list(out.glob("results.rank*.jsonl"))  # shards folded in
    assert len(load_results(out)) == 18


def test_yoco_engine_through_the_same_runner(tmp_path):
    """The YOCO engine (tiny official-format checkpoint, random weights) goes through the same builder and scorer;
    the engine adds BOS itself and that token is counted."""
    pytest.importorskip("lm_eval")
    from yoco_eval.niah import load_needle_model

    ckpt = ROOT / "tests" / "fixtures" / "official" / "gret-d96"
    if not (ckpt / "params.json").exists():
        pytest.skip("official tiny checkpoint fixture missing")
    model = load_needle_model("yoco", f"pretrained={ckpt},tokenizer=bytes,device=cpu")
    assert model.prompt_prefix_tokens == 1 and model.max_context == 1024
    out = tmp_path / "yoco"
    s = run_sweep(
        model,
        _cfg(out, lengths=[512, 992], depths=[0.0, 100.0], trials=1, max_new_tokens=8),
        progress=False,
        command="t",
        log=_quiet,
    )
    assert s["errors"] == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["model"]["kind"] == "yoco" and meta["model"]["checkpoint_sha256"]
    for r in read_jsonl(out / "results.jsonl"):
        p = reconstruct_prompt(out, r["cell"])
        assert 1 + len(model.tokenizer.encode(p.text)) == r["prompt_tokens"] == r["context_length"]  # BOS included
        assert r["score"] in (0.0, 1.0) and isinstance(r["output"], str)


def test_cost_fields_of_a_fake_model_and_its_failures(tmp_path):
    """Every row records the cost fields: what the model cannot measure is None (not 0), the K/V bytes per token
    come from the model (on failed cells too), and the process's RSS peak is measured around each call."""

    class Sized(FakeNeedleModel):
        kv_bytes_per_token = 4096

    out = tmp_path / "run"
    model = Sized(YOCOTokenizer(), fail_lengths={2048}, sleep_per_1k=0.01)
    run_sweep(model, _cfg(out), progress=False, command="t", log=_quiet)
    rows = read_jsonl(out / "results.jsonl")
    assert {r["status"] for r in rows} == {"ok", "error"}
    for r in rows:
        assert r["kv_bytes_per_token"] == 4096
        assert r["prefill_s"] is None and r["decode_s"] is None and r["peak_mem_bytes"] is None  # not measurable
        if r["status"] == "ok":
            assert isinstance(r["peak_rss_bytes"], int) and r["peak_rss_bytes"] > 1 << 20  # Linux VmHWM
        else:
            assert r["peak_rss_bytes"] is None
    plain = tmp_path / "plain"
    run_sweep(FakeNeedleModel(YOCOTokenizer()), _cfg(plain, lengths=[1024]), progress=False, log=_quiet)
    assert all(r["kv_bytes_per_token"] is None for r in read_jsonl(plain / "results.jsonl"))


@pytest.mark.parametrize("preset", ["yoco-debug", "transformer-debug"])
def test_yoco_engine_records_prefill_decode_and_cache_bytes(tmp_path, preset):
    """The engine separates prefill from decode; K/V bytes per token is YOCO's one shared cache, or every layer's
    for the Transformer, derived here from the preset's config (fp32 on CPU: 4 bytes per element)."""
    from yoco_eval.config import get_config
    from yoco_eval.niah.models import YOCONeedleModel

    model = YOCONeedleModel.from_args(f"pretrained={preset},max_length=512,prefix_reuse=false", device="cpu")
    out = tmp_path / preset
    cfg = _cfg(out, lengths=[320, 448], depths=[0.0, 100.0], trials=1, max_new_tokens=4)
    assert run_sweep(model, cfg, progress=False, command="t", log=_quiet)["errors"] == 0
    c = get_config(preset)
    if c.arch == "yoco":
        per_layer, layers = 2 * c.n_attn_kv_heads * (c.dim // c.n_attn_heads) * 4, 1
    else:
        per_layer, layers = 2 * c.n_kv_heads * (c.dim // c.n_heads) * 4, c.n_layers
    for r in read_jsonl(out / "results.jsonl"):
        assert r["kv_bytes_per_token"] == per_layer * layers
        assert r["prefill_s"] > 0 and r["decode_s"] is not None and r["decode_s"] >= 0
        assert r["prefill_s"] + r["decode_s"] <= r["generate_s"] + 1e-3 <= r["duration_s"] + 1e-3
        assert r["peak_mem_bytes"] is None and r["peak_rss_bytes"] > 0  # CPU: no CUDA peak, the RSS peak instead


def test_hf_kv_bytes_per_token_from_a_config():
    from types import SimpleNamespace

    import torch

    from yoco_eval.niah.models import hf_kv_bytes_per_token

    llama = SimpleNamespace(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576)
    assert hf_kv_bytes_per_token(llama, torch.bfloat16) == 30 * 2 * 3 * (576 // 9) * 2
    assert hf_kv_bytes_per_token(llama) == 30 * 2 * 3 * 64 * 4  # no dtype known: float32
    mha = SimpleNamespace(num_hidden_layers=2, num_attention_heads=4, hidden_size=64, head_dim=32, torch_dtype="half")
    assert hf_kv_bytes_per_token(mha) == 2 * 2 * 4 * 32 * 2
    assert hf_kv_bytes_per_token(SimpleNamespace(num_hidden_layers=2)) is None  # not enough to know
    swa = SimpleNamespace(**vars(llama), sliding_window=4096)
    assert hf_kv_bytes_per_token(swa) is None  # the cache stops growing at the window: not one K/V per token


def test_lm_eval_models_get_kv_bytes_from_their_model():
    """An lm-eval LM's K/V bytes: by the cache of a yoco_eval model, by the config of a HF one, else None."""
    from types import SimpleNamespace

    import torch

    from yoco_eval.config import get_config
    from yoco_eval.model.checkpoint import build_preset
    from yoco_eval.niah.models import _lm_kv_bytes, cache_bytes_per_token, hf_kv_bytes_per_token

    cfg = SimpleNamespace(num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, hidden_size=256)
    hf = SimpleNamespace(model=SimpleNamespace(config=cfg, dtype=torch.bfloat16))
    assert _lm_kv_bytes(hf) == hf_kv_bytes_per_token(cfg, torch.bfloat16) == 4 * 2 * 2 * 32 * 2
    tf = build_preset(get_config("transformer-debug"), "cpu", torch.float32)
    assert _lm_kv_bytes(SimpleNamespace(model=tf)) == cache_bytes_per_token(tf) == 4 * 2 * 2 * 16 * 4
    assert _lm_kv_bytes(SimpleNamespace()) is None and cache_bytes_per_token(object()) is None


def test_shared_haystack_groups_cells_per_haystack_deepest_first():
    from yoco_eval.niah.grid import assign_cells, make_grid

    cells = make_grid([1000, 2000, 3000, 4000], [0.0, 50.0, 100.0], trials=2, seed=7, shared_haystack=True)
    seeds = {(c.length, c.trial): set() for c in cells}
    for c in cells:
        seeds[(c.length, c.trial)].add(c.seed)
    assert all(len(s) == 1 for s in seeds.values()) and len({next(iter(s)) for s in seeds.values()}) == 8
    plain = make_grid([1000], [0.0, 50.0, 100.0], trials=1, seed=7)
    assert len({c.seed for c in plain}) == 3  # the default still draws a haystack per cell
    ranks = [assign_cells(cells, r, 2, shared_haystack=True) for r in range(2)]
    assert sorted(c.id for r in ranks for c in r) == sorted(c.id for c in cells)  # every cell once
    for mine in ranks:
        groups = [(c.length, c.trial) for c in mine]
        for key in set(groups):  # a haystack stays on one rank, its cells consecutive and deepest first
            idx = [i for i, g in enumerate(groups) if g == key]
            assert idx == list(range(idx[0], idx[0] + 3))
            assert [mine[i].depth for i in idx] == [100.0, 50.0, 0.0]
    load = [sum(c.length for c in mine) for mine in ranks]
    assert load == [30000, 30000]
    assert [c.id for c in assign_cells(cells, 1, 2, shared_haystack=False)] == [c.id for c in cells[1::2]]


def test_dry_run_estimate_honours_the_shared_haystack(tmp_path):
    """With --shared-haystack a model that continues shared prefixes (the YOCO engine) prefills each haystack's
    deepest prompt whole and every shallower one from its needle on; the estimate counts only that work."""

    class Reusing(FakeNeedleModel):
        prefix = object()  # as YOCONeedleModel with its prefix cache on

    out = tmp_path / "run"
    lines: list[str] = []
    cfg = _cfg(out, shared_haystack=True)  # depths 0, 50, 100; lengths 1024, 2048; 2 trials
    s = run_sweep(Reusing(YOCOTokenizer()), cfg, dry_run=True, tokens_per_s=1000.0, log=lines.append)
    assert s["tokens_todo"] == 18432
    # a haystack of length L: L (needle at 100) + L/2 (needle at 50) + L (needle at 0); 2 trials per length
    assert s["prefill_todo"] == 2 * (1024 + 512 + 1024) + 2 * (2048 + 1024 + 2048) == 15360
    assert s["estimated_s"] == pytest.approx(s["prefill_todo"] / 1000.0)
    assert "15,360 to prefill" in "\n".join(lines) and not out.exists()
    plain = run_sweep(FakeNeedleModel(YOCOTokenizer()), cfg, dry_run=True, tokens_per_s=1000.0, log=_quiet)
    assert plain["prefill_todo"] == plain["tokens_todo"] == 18432  # a model that prefills every prompt whole


def test_overwrite_never_deletes_what_is_not_a_needle_run(tmp_path):
    model = FakeNeedleModel(YOCOTokenizer())
    other = tmp_path / "other"
    other.mkdir()
    (other / "run.json").write_text('{"schema": "someone-else/1"}')
    (other / "results.jsonl").write_text('{"cell": "theirs"}\n')
    with pytest.raises(YocoEvalError, match="is not a needle run"):
        run_sweep(model, _cfg(other, lengths=[1024], on_existing="overwrite"), progress=False, log=_quiet)
    assert (other / "results.jsonl").read_text() == '{"cell": "theirs"}\n'
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(YocoEvalError, match="not a needle run folder"):
        run_sweep(model, _cfg(notes, lengths=[1024], on_existing="overwrite"), progress=False, log=_quiet)
    assert sorted(p.name for p in notes.iterdir()) == ["todo.txt"]
    with pytest.raises(YocoEvalError, match="on_existing='replace'"):
        run_sweep(model, _cfg(tmp_path / "new", lengths=[1024], on_existing="replace"), progress=False, log=_quiet)


def test_ctrl_c_mid_sweep_is_one_line_130_then_resumes(tmp_path):
    """A real SIGINT part-way: exit 130 with one line and no traceback; the rerun finishes every cell once."""
    out = tmp_path / "interrupted"
    grid = ["--lengths", "1k,2k", "--depths", "0:100:5", "--trials", "2"]
    cmd = [sys.executable, str(FAKE_CLI), "--fake-sleep", "0.15", "--model", "fake", "--haystack", "noise", *grid,
           "--out", str(out), "--no-progress"]  # fmt: skip
    # Ctrl-C enabled in the child even when this pytest was started in the background (which ignores SIGINT, and a
    # child inherits that)
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        deadline = time.time() + 60
        while _count_lines(out / "results.jsonl") < 3 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("interrupted")
    first = len(read_jsonl(out / "results.jsonl"))
    assert 3 <= first < 20
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    cells = [r["cell"] for r in read_jsonl(out / "results.jsonl")]
    assert len(cells) == 20 and len(set(cells)) == 20
