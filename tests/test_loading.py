"""yoco_eval.loading: one LoadSpec, one key syntax, one device/dtype/chunk resolution, names from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from yoco_eval import settings
from yoco_eval.errors import ConfigError, YocoEvalError
from yoco_eval.generate import DEFAULT_CHUNK_SIZE, default_chunk_size
from yoco_eval.loading import (
    LoadSpec,
    models_dir,
    resolve_device,
    resolve_dtype,
    resolve_model,
)

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = "pretrained, device, dtype, chunk_size, max_length, kv_dtype, attn_backend, retention_backend, tokenizer"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")


def test_string_and_dict_give_the_same_spec():
    text = "pretrained=yoco-debug, device=cpu,dtype=float32,chunk_size=64,max_length=128,kv_dtype=fp8,tokenizer=bytes"
    a, extra = LoadSpec.from_model_args(text)
    as_dict = {"pretrained": "yoco-debug", "device": "cpu", "dtype": "float32", "chunk_size": 64, "max_length": "128",
               "kv_dtype": "fp8", "tokenizer": "bytes"}  # fmt: skip
    b, _ = LoadSpec.from_model_args(as_dict)
    assert a == b and extra == {}
    assert (a.model, a.chunk_size, a.max_length, a.kv_dtype, a.attn_backend) == ("yoco-debug", 64, 128, "fp8", "auto")


def test_caller_keys_come_back_untouched():
    spec, extra = LoadSpec.from_model_args("pretrained=yoco-debug,prefix_reuse=false", extra=("prefix_reuse",))
    assert spec == LoadSpec("yoco-debug") and extra == {"prefix_reuse": "false"}


@pytest.mark.parametrize(
    "args, message",
    [
        ("pretrained=yoco-debug,max_lenght=64", f"unknown --model-args key.s. max_lenght .*allowed keys are {ALLOWED}"),
        ("device=cpu", "needs a checkpoint: pass --model-args pretrained="),
        ("pretrained=yoco-debug,chunk_size=big", "chunk_size='big' is not a positive integer"),
        ("pretrained=yoco-debug,max_length=-3", "max_length='-3' is not a positive integer"),
        ("pretrained=yoco-debug,cpu", "bad --model-args item 'cpu': use key=value"),
    ],
    ids=["unknown-key", "no-pretrained", "bad-chunk", "bad-max-length", "not-key-value"],
)
def test_bad_model_args_are_one_line(args, message):
    with pytest.raises(ConfigError, match=message) as e:
        LoadSpec.from_model_args(args)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "device, dtype, message",
    [("gpu", "auto", "unknown device 'gpu'"), ("mps", "auto", "not supported"), ("cpu", "float7", "unknown dtype")],
)
def test_bad_device_or_dtype_is_one_line_before_any_load(device, dtype, message):
    with pytest.raises(YocoEvalError, match=message) as e:
        LoadSpec("no-such-model", device=device, dtype=dtype).resolved()
    assert "\n" not in str(e.value)


@no_cuda
def test_cuda_on_a_cpu_machine_is_one_line():
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=f"device '{device}' was asked for but no CUDA GPU is visible") as e:
            resolve_device(device)
        assert "\n" not in str(e.value)


def test_device_auto(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    settings.reload()
    try:
        assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 1)  # torchrun: own GPU
        assert resolve_device("cuda:0") == torch.device("cuda", 0)  # an explicit index is kept
    finally:
        monkeypatch.undo()
        settings.reload()


def test_dtype_and_chunk_defaults_per_device():
    assert resolve_dtype("auto", torch.device("cpu")) == "float32"
    assert resolve_dtype("auto", torch.device("cuda", 0)) == "bfloat16"
    assert resolve_dtype("bf16", torch.device("cpu")) == "bf16"
    assert resolve_dtype(torch.float16, torch.device("cpu")) == "float16"
    assert default_chunk_size(torch.device("cuda", 1)) == DEFAULT_CHUNK_SIZE["cuda"] == 65536
    assert default_chunk_size(torch.device("cpu")) == DEFAULT_CHUNK_SIZE["cpu"]
    spec = LoadSpec("yoco-debug", device="cpu").resolved()
    assert (spec.device, spec.dtype, spec.chunk_size) == ("cpu", "float32", DEFAULT_CHUNK_SIZE["cpu"])
    assert LoadSpec("yoco-debug", device="cpu", chunk_size=48).resolved().chunk_size == 48


def test_chunk_size_reaches_the_engine_of_every_entry_point(tmp_path):
    from yoco_eval.niah.models import YOCONeedleModel

    engine = LoadSpec.from_model_args("pretrained=yoco-debug,device=cpu,chunk_size=40")[0].load_engine()
    needle = YOCONeedleModel.from_args("pretrained=yoco-debug,chunk_size=40,max_length=96,prefix_reuse=false")
    default = YOCONeedleModel.from_args({"pretrained": "yoco-debug"}, device="cpu")
    assert engine.chunk_size == needle.engine.chunk_size == 40 and needle.prefix is None
    assert needle.engine.max_length == needle.max_context == 96
    assert default.engine.chunk_size == DEFAULT_CHUNK_SIZE["cpu"] and str(default.engine.device) == "cpu"


def test_needle_and_lm_eval_dialects_share_keys_and_messages():
    pytest.importorskip("lm_eval")
    from yoco_eval.lm_eval_adapter import YOCOLM
    from yoco_eval.niah.models import load_needle_model

    with pytest.raises(ConfigError) as needle:
        load_needle_model("yoco", "pretrained=yoco-debug,chunk=4")
    with pytest.raises(ConfigError) as lm:
        YOCOLM.create_from_arg_obj({"pretrained": "yoco-debug", "chunk": 4}, {"device": "cpu"})
    for e in (needle, lm):
        assert f"allowed keys are {ALLOWED}" in str(e.value) and "chunk " in str(e.value)
    with pytest.raises(ConfigError, match="disagree: give the device once"):
        load_needle_model("yoco", "pretrained=yoco-debug,device=cpu", device="cuda")


def test_names_resolve_from_any_directory(tmp_path, monkeypatch):
    shipped = models_dir()
    assert shipped is not None and (shipped / "yoco-needle-7m" / "model.safetensors").is_file()
    monkeypatch.chdir(tmp_path)
    for name in ("yoco-needle-7m", "models/yoco-needle-7m", "./models/yoco-needle-7m"):
        assert resolve_model(name) == str(shipped / "yoco-needle-7m")
    assert resolve_model("transformer-needle-7m") == str(shipped / "transformer-needle-7m")
    assert resolve_model("yoco-debug") == "yoco-debug"  # presets go to the loader as they are
    assert resolve_model("no/such/dir") == "no/such/dir"  # and so does a missing path (the loader says so)
    assert resolve_model("pkg:json") == str(Path(__import__("json").__file__).parent)
    (tmp_path / "models" / "yoco-needle-7m").mkdir(parents=True)  # a folder of the user's own wins
    assert resolve_model("models/yoco-needle-7m") == "models/yoco-needle-7m"


def test_smollm2_by_name_uses_the_converted_folder(tmp_path, monkeypatch):
    folder = tmp_path / "smollm2-135m-instruct"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "tokenizer.json").write_text("{}")
    monkeypatch.setenv("YOCO_EVAL_CACHE", str(tmp_path))
    settings.reload()
    try:
        assert resolve_model("smollm2-135m-instruct") == resolve_model("SmolLM2") == str(folder)
    finally:
        monkeypatch.undo()
        settings.reload()


def test_hf_models_get_the_auto_device_and_the_resolved_name(monkeypatch):
    """``--model hf`` without ``--device``: the same auto device as our models (not HFLM's default cuda)."""
    pytest.importorskip("lm_eval")
    import lm_eval.api.registry as registry
    from lm_eval.models.huggingface import HFLM

    seen = {}

    class Probe(HFLM):
        @classmethod
        def create_from_arg_string(cls, arg_string, additional_config=None):
            seen.update(args=arg_string, extra=additional_config)
            raise YocoEvalError("probe")

    monkeypatch.setattr(registry, "get_model", lambda name: Probe)
    from yoco_eval.niah.models import load_lm_eval_model

    with pytest.raises(YocoEvalError, match="probe"):
        load_lm_eval_model("hf", "pretrained=transformer-needle-7m,dtype=float32")
    assert seen["extra"]["device"] == str(resolve_device("auto"))
    assert seen["args"] == f"pretrained={models_dir() / 'transformer-needle-7m'},dtype=float32"


def test_a_gguf_folder_without_gguf_file_is_one_line(tmp_path):
    pytest.importorskip("lm_eval")
    from yoco_eval.niah.models import load_lm_eval_model

    (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"")
    with pytest.raises(ConfigError, match="add gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf .*smollm2-135m-instruct"):
        load_lm_eval_model("hf", f"pretrained={tmp_path}")


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "yoco_eval", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_generate_runs_the_shipped_model_from_a_temp_directory(tmp_path):
    done = _cli(["generate", "--model", "yoco-needle-7m", "--prompt", "To be", "--max-new-tokens", "4"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4 generated" in done.stderr and list(tmp_path.iterdir()) == []


@no_cuda
def test_generate_with_cuda_on_a_cpu_machine_is_one_line(tmp_path):
    done = _cli(["generate", "--model", "yoco-debug", "--prompt", "x", "--device", "cuda"], tmp_path)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "no CUDA GPU is visible: use device=cpu" in done.stderr
