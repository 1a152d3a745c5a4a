"""Phi4Flash everywhere a model goes, on a tiny random folder in the release's format (tests/phi4flash_tiny.py):
model names and presets, the real ``lm_eval`` console script (loglikelihood, rolling, generation), a needle sweep
with the chat template, ``yoco-eval generate``, and the profiler's building blocks on the meta device.

The weights are random, so scores are meaningless: what is checked is that every path runs offline end to end and
reports the model it ran."""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.phi4flash_tiny import write_tiny_folder
from yoco_eval.errors import ConfigError
from yoco_eval.loading import LoadSpec, resolve_model
from yoco_eval.model.checkpoint import load_model
from yoco_eval.model.phi4flash import Phi4Flash
from yoco_eval.model.phi4flash_load import Phi4FlashTokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_tiny_folder(tmp_path_factory.mktemp("phi4flash") / "tiny-phi4flash")


# --- names, presets, one-line errors ----------------------------------------------------------------------------


def test_folder_and_presets_load_through_the_one_spec(folder):
    loaded = load_model(folder)
    assert loaded.source == "phi4flash" and isinstance(loaded.model, Phi4Flash)
    assert isinstance(loaded.tokenizer, Phi4FlashTokenizer) and len(loaded.tokenizer.stop_ids) == 2
    spec, _ = LoadSpec.from_model_args("pretrained=phi4flash-tiny,device=cpu,chunk_size=16")
    assert resolve_model("phi4flash-tiny") == "phi4flash-tiny"
    eng = spec.load_engine()
    assert isinstance(eng.model, Phi4Flash) and eng.tokenizer.name == "bytes" and eng.chunk_size == 16
    assert eng.max_length == eng.model.config.max_seq_len == 4096
    big = load_model("phi4-mini-flash", device="meta", dtype=torch.bfloat16)
    assert big.tokenizer.name == "o200k_base" and big.model.config.num_hidden_layers == 32


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kv_dtype": "fp8"}, "kv_dtype='fp8' is not supported for Phi4Flash"),
        ({"retention_backend": "fla"}, "does not apply to Phi4Flash"),
    ],
)
def test_options_phi4flash_does_not_have_are_one_clear_error(folder, kwargs, match):
    for spec in (folder, "phi4flash-tiny"):
        with pytest.raises(ConfigError, match=match) as e:
            load_model(spec, **kwargs)
        assert "\n" not in str(e.value)


def test_decode_backend_reaches_the_model_and_a_wrong_name_is_one_error(folder):
    from yoco_eval.errors import BackendUnavailable

    for spec in (folder, "phi4flash-tiny"):
        assert load_model(spec, decode_backend="torch").model.decode_backend == "torch"
        with pytest.raises(BackendUnavailable, match="unknown decode backend 'flash'") as e:
            load_model(spec, decode_backend="flash")
        assert "\n" not in str(e.value)


def test_unknown_preset_lists_the_phi4flash_presets():
    with pytest.raises(Exception, match="phi4-mini-flash.*phi4flash-tiny"):
        load_model("phi4-mini-flsh")


# --- lm_eval --model yoco ---------------------------------------------------------------------------------------


def test_lm_eval_console_script_runs_a_phi4flash_folder(folder, tmp_path):
    """The real ``lm_eval`` command: a multiple-choice task (loglikelihood), a perplexity task (rolling) and a
    generation task, on the CPU, offline."""
    script = shutil.which("lm_eval", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("lm-eval's console script is not installed next to this interpreter")
    out_dir = tmp_path / "out"
    tasks = ["yoco_mc_facts", "yoco_ppl_shakespeare", "yoco_gen_arith"]
    cmd = [script, "--model", "yoco", "--model_args", f"pretrained={folder},max_length=256,max_gen_toks=8",
           "--tasks", ",".join(tasks), "--limit", "2", "--batch_size", "2", "--include_path", str(ROOT / "tasks"),
           "--output_path", str(out_dir)]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    (found,) = glob.glob(str(out_dir / "**" / "results_*.json"), recursive=True)
    res = json.loads(Path(found).read_text())
    assert res["config"]["yoco_arch"] == "Phi4Flash" and res["config"]["yoco_source"] == "phi4flash"
    assert all(res["n-samples"][t]["effective"] == 2 for t in tasks)
    assert math.isfinite(res["results"]["yoco_ppl_shakespeare"]["word_perplexity,none"])
    assert 0.0 <= res["results"]["yoco_mc_facts"]["acc,none"] <= 1.0
    assert "exact_match,none" in res["results"]["yoco_gen_arith"]


# --- yoco-eval needle, generate, profile ---------------------------------------------------------------------------


def test_needle_sweep_with_the_chat_template(folder, tmp_path):
    from yoco_eval.niah import cli
    from yoco_eval.niah.store import read_jsonl

    out = tmp_path / "run"
    argv = ["--model", "yoco", "--model-args", f"pretrained={folder},device=cpu,chunk_size=128", "--chat-template",
            "--system-prompt", "Be brief.", "--lengths", "300,600", "--depths", "0,100", "--trials", "1",
            "--haystack", "noise", "--max-new-tokens", "6", "--no-progress", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    rows = list(read_jsonl(out / "results.jsonl"))
    assert len(rows) == 4 and all(r.get("error") is None for r in rows)
    assert sorted(r["context_length"] for r in rows) == [300, 300, 600, 600]
    assert all(r["prompt_tokens"] == r["context_length"] for r in rows)  # BOS and the chat frame counted
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["kind"] == "phi4flash"
    fmt = json.dumps(run)
    assert "<|system|>Be brief.<|end|><|user|>" in fmt and "<|end|><|assistant|>" in fmt


def test_needle_chat_frame_is_the_phi4_format(folder):
    from yoco_eval.niah.models import YOCONeedleModel, load_needle_model

    m = load_needle_model("yoco", f"pretrained={folder},device=cpu", chat_template=True, system_prompt="Be brief.")
    assert isinstance(m, YOCONeedleModel)
    frame = (m.prompt_format.head, m.prompt_format.tail)
    assert frame == ("<|system|>Be brief.<|end|><|user|>", "<|end|><|assistant|>")
    assert m.prompt_format.chat_template and m.engine.tokenizer.stop_ids[-1] == m.tokenizer.encode("<|end|>")[0]


def test_generate_command(folder, capsys):
    from yoco_eval.cli import main

    assert main(["generate", "--model", str(folder), "--device", "cpu", "--prompt", "<|user|>2+2?<|end|><|assistant|>",
                 "--max-new-tokens", "5"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "prompt tokens" in err and ("5 generated, stopped at --max-new-tokens" in err or "end-of-text token" in err)


def test_profile_building_blocks_on_the_meta_device():
    """Phi-4-mini-flash's real shape, sizes only: one shared K/V of 2 x 20 heads x 64 x 2 bytes per token, read
    8 times per decode step (7 cross-attention layers + the full-attention layer), 3.85B bf16 parameters."""
    from yoco_eval.profile import build_random, kv_bytes_per_token, kv_reads_per_token

    model = build_random("phi4-mini-flash", device="meta")
    assert all(p.device.type == "meta" and p.dtype == torch.bfloat16 for p in model.parameters())
    assert kv_bytes_per_token(model) == 5120 and kv_reads_per_token(model) == 8
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert 7.4e9 < weights < 7.9e9
    yoco = build_random("yoco-3b", device="meta")
    assert kv_reads_per_token(yoco) == len(yoco.cross_decoder.layers)


def test_profile_rows_for_the_tiny_preset_on_cpu():
    from yoco_eval.bench.protocol import Protocol
    from yoco_eval.profile import profile_model

    rows = profile_model("phi4flash-tiny", [48], gen=3, chunk=32, warm=16, device="cpu", log=lambda _: None,
                         protocol=Protocol(runs=1, min_warmup=0))  # fmt: skip
    (row,) = rows
    assert row["status"] == "ok" and row["kv_cache_bytes"] == kv_per_token_tiny() * (48 + 3)
    assert row["prefill_s"] > 0 and row["decode_ms_per_token"] > 0


def kv_per_token_tiny() -> int:
    # phi4flash-tiny: 4 KV heads x head dim 16, keys and values, bf16
    return 2 * 4 * 16 * 2


def test_random_preset_weights_depend_on_the_seed_only():
    """The preset's init fills blocks on threads: the same seed gives the same weights with 1 or 4 threads, and a
    bf16 model holds the rounding of the fp32 one (what GPU speed work builds)."""
    from yoco_eval.model.phi4flash_load import build_phi4flash_preset, init_phi4flash

    a = build_phi4flash_preset("phi4flash-tiny", seed=3)
    b = init_phi4flash(build_phi4flash_preset("phi4flash-tiny", seed=0), seed=3, workers=4)
    c = build_phi4flash_preset("phi4flash-tiny", seed=3, dtype=torch.bfloat16)
    one = init_phi4flash(build_phi4flash_preset("phi4flash-tiny", seed=0), seed=3, workers=1)
    for (k, x), y, z, w in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values(),
                               one.state_dict().values(), strict=True):  # fmt: skip
        assert torch.equal(x, y) and torch.equal(x, w) and torch.equal(x.to(torch.bfloat16), z), k
    assert not torch.equal(a.embed_tokens.weight, build_phi4flash_preset("phi4flash-tiny", seed=4).embed_tokens.weight)
