"""Checkpoint formats: load and save, with one clear error per problem.

Formats read by :func:`load_model`:
    * official YOCO: ``checkpoint.pth`` (the bare model's state dict, official keys; read with
      ``torch.load(weights_only=True)``, never unpickling code) + ``params.json`` (``YOCOArgs`` fields);
    * ours: ``config.json`` (with an ``arch`` field) + ``model.safetensors`` or sharded
      ``model-0000x-of-0000y.safetensors`` with ``model.safetensors.index.json``;
    * HF Llama (``config.json`` with ``model_type: llama`` + safetensors), loaded into the Transformer baseline;
    * HF Phi-4-mini-flash (``config.json`` with ``model_type: phi4flash`` + safetensors + ``tokenizer.json``), read
      by the strict loader of :mod:`yoco_eval.model.phi4flash_load` into :class:`~yoco_eval.model.phi4flash.Phi4Flash`;
    * a preset name (``yoco-3b``, ``yoco-debug``, ``phi4-mini-flash``, ``phi4flash-tiny``, ...): random weights,
      seeded (profiling and tests).
Written by :func:`save_model` (ours) and :func:`save_official` (official format).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from yoco_eval import settings
from yoco_eval.config import CONFIGS, ModelConfig, TransformerConfig, YOCOConfig, get_config, load_config
from yoco_eval.errors import CheckpointError, ConfigError
from yoco_eval.model.phi4flash_config import PHI4FLASH_CONFIGS, PRESET_TOKENIZERS, Phi4FlashConfig
from yoco_eval.model.shards import read_safetensors
from yoco_eval.tokenizer import Tokenizer, load_tokenizer


def preset_names() -> list[str]:
    """Every preset name :func:`load_model` accepts."""
    return sorted([*CONFIGS, *PHI4FLASH_CONFIGS])


def preset_config(name: str) -> ModelConfig | Phi4FlashConfig:
    """The config of preset ``name`` (YOCO, Transformer or Phi4Flash); one error line for an unknown name."""
    if name in PHI4FLASH_CONFIGS:
        return Phi4FlashConfig.from_name(name)
    if name not in CONFIGS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of: {', '.join(preset_names())}")
    return get_config(name)


def _phi4flash_options(retention_backend: str, decode_backend: str, kv_dtype: str) -> None:
    """Phi4Flash has no gated retention and no fp8 cache: those choices are errors (its constructor checks the
    attention and decode backend names, as YOCO's does)."""
    if retention_backend not in ("auto", "torch"):
        raise ConfigError(f"retention_backend={retention_backend!r} does not apply to Phi4Flash (no gated retention):"
                          " drop it or use auto")  # fmt: skip
    if kv_dtype != "auto":
        raise ConfigError(f"kv_dtype={kv_dtype!r} is not supported for Phi4Flash: use kv_dtype=auto")


def build_model(cfg: ModelConfig | Phi4FlashConfig, attn_backend: str = "auto", retention_backend: str = "auto",
                decode_backend: str = "auto", kv_dtype: str = "auto") -> nn.Module:  # fmt: skip
    """The architecture ``cfg`` describes (weights uninitialised), with its kernel names and K/V storage checked
    by the model's constructor (see :class:`~yoco_eval.model.layers.LanguageModel`)."""
    from yoco_eval.model.transformer import Transformer
    from yoco_eval.model.yoco import YOCO

    if isinstance(cfg, Phi4FlashConfig):
        from yoco_eval.model.phi4flash import Phi4Flash

        _phi4flash_options(retention_backend, decode_backend, kv_dtype)
        return Phi4Flash(cfg, attn_backend=attn_backend, decode_backend=decode_backend)
    cls = YOCO if isinstance(cfg, YOCOConfig) else Transformer
    return cls(cfg, attn_backend=attn_backend, retention_backend=retention_backend, decode_backend=decode_backend,
               kv_dtype=kv_dtype)  # fmt: skip


def init_weights(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Deterministic random init: normal(0, std) for matrices and embeddings, ones for norm weights.

    The values come from a seeded CPU generator in fp32 whatever the parameters' device and dtype, so a model built
    on the GPU in bf16 holds exactly the bf16 rounding of the CPU fp32 model's weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g).mul_(std))
    return model


def build_preset(cfg: ModelConfig, device, dtype, attn_backend="auto", retention_backend="auto", seed=0,
                 workers: int | None = None, decode_backend="auto", kv_dtype="auto") -> nn.Module:  # fmt: skip
    """A preset's seeded random model built straight on ``device`` in ``dtype``.

    No fp32 copy of the whole model in host memory and no default init to overwrite: each weight matrix is filled a
    row block at a time, every block from its own CPU generator seeded by ``(seed, parameter index, block index)``,
    on ``workers`` threads. The weights therefore depend on the seed only, not on the device, the dtype (bf16 holds
    the rounding of the fp32 values) or the number of threads; YOCO-3B loads in seconds instead of ~30 s.
    Normal(0, 0.02) for matrices and embeddings, ones for norm weights, as :func:`init_weights`.

    A :class:`Phi4FlashConfig` gets the release-like init of
    :func:`~yoco_eval.model.phi4flash_load.init_phi4flash` (Mamba's ``A_log``/``dt`` and the differential lambdas
    need their own values); on the meta device nothing is materialized (sizes only)."""
    from concurrent.futures import ThreadPoolExecutor

    if isinstance(cfg, Phi4FlashConfig):
        from yoco_eval.model.phi4flash_load import build_phi4flash_preset

        _phi4flash_options(retention_backend, decode_backend, kv_dtype)
        return build_phi4flash_preset(cfg, device, dtype, seed, attn_backend, decode_backend)

    with torch.device("meta"):
        model = build_model(cfg, attn_backend, retention_backend, decode_backend, kv_dtype).to(dtype)
    model = model.to_empty(device=device).eval()
    jobs = []
    for i, p in enumerate(model.parameters()):
        if p.dim() == 1:
            jobs.append((p, None, 0, 0))
            continue
        rows = max(1, (1 << 22) // max(1, p[0].numel()))  # ~4M values (16 MB fp32) per block
        jobs += [(p, (seed * 1_000_003 + i) * 65_537 + b, r, rows) for b, r in enumerate(range(0, p.shape[0], rows))]

    inference = torch.is_inference_mode_enabled()  # grad and inference modes are per thread: pass them on

    def fill(job):
        p, block_seed, r, rows = job
        with torch.inference_mode(inference), torch.no_grad():
            if block_seed is None:
                p.fill_(1.0)
                return
            g = torch.Generator().manual_seed(block_seed)
            block = p[r : r + rows]
            block.copy_(torch.randn(block.shape, generator=g).mul_(0.02))

    if workers is None:  # torchrun starts one process a GPU on the same host: share the cores out
        local = settings.get().local_world_size
        workers = max(1, min(32, (os.cpu_count() or 1) // local))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(fill, jobs))
    return model


# --- key maps -------------------------------------------------------------------------------------------------

_HF_LLAMA = [
    (r"model\.embed_tokens\.weight", "embed_tokens.weight"),
    (r"model\.norm\.weight", "layer_norm.weight"),
    (r"lm_head\.weight", "output_projection.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.([qkv])_proj\.weight", r"layers.\1.mixer.\2_proj.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight", r"layers.\1.mixer.out_proj.weight"),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", r"layers.\1.ffn.fc1.weight"),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", r"layers.\1.ffn.gate.weight"),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", r"layers.\1.ffn.fc2.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"layers.\1.mixer_layer_norm.weight"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"layers.\1.final_layer_norm.weight"),
]


def from_hf_llama(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ``LlamaForCausalLM`` state dict -> Transformer baseline keys (unknown keys are kept, to be reported)."""
    sd = {k: t for k, t in sd.items() if not k.endswith("rotary_emb.inv_freq")}
    return _rename(sd, _HF_LLAMA, keep_unknown=True)


def _rename(sd: dict[str, torch.Tensor], table, keep_unknown: bool) -> dict[str, torch.Tensor]:
    """Rename keys by the first matching (regex, replacement) of ``table``; unmatched keys kept or dropped."""
    out = {}
    for key, t in sd.items():
        for pat, rep in table:
            if re.fullmatch(pat, key):
                out[re.sub(pat, rep, key)] = t
                break
        else:
            if keep_unknown:
                out[key] = t
    return out


def to_hf_llama(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`from_hf_llama`."""
    inverse = [
        (r"embed_tokens\.weight", "model.embed_tokens.weight"),
        (r"layer_norm\.weight", "model.norm.weight"),
        (r"output_projection\.weight", "lm_head.weight"),
        (r"layers\.(\d+)\.mixer\.([qkv])_proj\.weight", r"model.layers.\1.self_attn.\2_proj.weight"),
        (r"layers\.(\d+)\.mixer\.out_proj\.weight", r"model.layers.\1.self_attn.o_proj.weight"),
        (r"layers\.(\d+)\.ffn\.fc1\.weight", r"model.layers.\1.mlp.gate_proj.weight"),
        (r"layers\.(\d+)\.ffn\.gate\.weight", r"model.layers.\1.mlp.up_proj.weight"),
        (r"layers\.(\d+)\.ffn\.fc2\.weight", r"model.layers.\1.mlp.down_proj.weight"),
        (r"layers\.(\d+)\.mixer_layer_norm\.weight", r"model.layers.\1.input_layernorm.weight"),
        (r"layers\.(\d+)\.final_layer_norm\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
    ]
    return _rename(sd, inverse, keep_unknown=False)


# --- strict loading with clear errors ---------------------------------------------------------------------------


def load_state_strict(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)``, but every mismatch becomes one line naming the key and the fix."""
    own = model.state_dict()
    tied = getattr(model.config, "tie_embeddings", False)
    if tied and "output_projection.weight" not in sd and "embed_tokens.weight" in sd:
        sd = {**sd, "output_projection.weight": sd["embed_tokens.weight"]}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing:
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(
            f"{source}: missing key {missing[0]!r}{more}; the checkpoint does not match its config "
            f"({model.config.name}, {model.config.arch}): check n_layers / sliding_window / tie_embeddings"
        )
    if unexpected:
        more = f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(
            f"{source}: unexpected key {unexpected[0]!r}{more}; the checkpoint has weights its config does not "
            f"describe: check n_layers / sliding_window in the config"
        )
    for k, t in sd.items():
        if tuple(t.shape) != tuple(own[k].shape):
            raise CheckpointError(
                f"{source}: shape mismatch for {k!r}: checkpoint {tuple(t.shape)} vs model {tuple(own[k].shape)}; "
                f"fix dim / heads / vocab_size in the config"
            )
        if not t.is_floating_point():
            raise CheckpointError(f"{source}: {k!r} has dtype {t.dtype}, expected a floating-point tensor")
    model.load_state_dict(sd, strict=True)


def checkpoint_sha256(path: str | Path) -> str | None:
    """sha256 of the weight files of a checkpoint folder (None for presets)."""
    p = Path(path)
    if not p.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted([*p.glob("*.safetensors"), *p.glob("*.pth")]):
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


@dataclass
class Loaded:
    model: nn.Module
    tokenizer: Tokenizer
    source: str  # "official" | "yoco-eval" | "hf-llama" | "phi4flash" | "preset"
    path: str


def load_model(
    spec: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    attn_backend: str = "auto",
    retention_backend: str = "auto",
    tokenizer: str | None = None,
    seed: int = 0,
    decode_backend: str = "auto",
    kv_dtype: str = "auto",
) -> Loaded:
    """Load a model and its tokenizer from a checkpoint folder or a preset name (see module docstring). The model's
    constructor checks the backend names and ``kv_dtype`` before any weight is read."""
    path = Path(spec)
    if not path.exists():
        if isinstance(spec, str) and (spec in CONFIGS or spec in PHI4FLASH_CONFIGS):
            cfg = preset_config(spec)
            model = build_preset(cfg, device, dtype, attn_backend, retention_backend, seed,
                                 decode_backend=decode_backend, kv_dtype=kv_dtype)  # fmt: skip
            tok = load_tokenizer(tokenizer or PRESET_TOKENIZERS.get(spec) or cfg.tokenizer)
            return Loaded(model, tok, "preset", spec)
        raise CheckpointError(
            f"checkpoint {str(spec)!r} not found: give a checkpoint folder or a preset ({', '.join(preset_names())})"
        )
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file: point at the checkpoint folder that holds it")
    from yoco_eval.model.phi4flash_load import is_phi4flash_folder

    if is_phi4flash_folder(path):
        return _load_phi4flash(path, device, dtype, attn_backend, retention_backend, tokenizer, decode_backend,
                               kv_dtype)  # fmt: skip
    cfg = load_config(path)
    if (path / "params.json").is_file() and not (path / "config.json").is_file():
        ckpt = path / "checkpoint.pth"
        if not ckpt.is_file():
            raise CheckpointError(f"{path}: params.json found but no checkpoint.pth next to it")
        try:
            sd = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise CheckpointError(f"{ckpt}: cannot read it as a weights-only state dict ({e})") from None
        source = "official"
    else:
        sd = read_safetensors(path)
        source = "yoco-eval"
        if isinstance(cfg, TransformerConfig) and cfg.tokenizer == "hf":
            sd = from_hf_llama(sd)
            source = "hf-llama"
    model = build_model(cfg, attn_backend, retention_backend, decode_backend, kv_dtype)
    load_state_strict(model, sd, str(path))
    tok = load_tokenizer(tokenizer or (path if cfg.tokenizer == "hf" else cfg.tokenizer))
    if tok.vocab_size > cfg.vocab_size:
        raise CheckpointError(
            f"{path}: tokenizer {tok.name} has {tok.vocab_size} ids but the model only {cfg.vocab_size} embeddings; "
            f"use the checkpoint's own tokenizer"
        )
    return Loaded(model.to(device=device, dtype=dtype).eval(), tok, source, str(path))


def _load_phi4flash(path: Path, device, dtype, attn_backend, retention_backend, tokenizer, decode_backend,
                    kv_dtype) -> Loaded:  # fmt: skip
    """A Phi4Flash folder through its strict loader; its own ``tokenizer.json`` unless ``tokenizer`` names one."""
    from yoco_eval.model.phi4flash_load import load_phi4flash, load_phi4flash_model

    _phi4flash_options(retention_backend, decode_backend, kv_dtype)
    if tokenizer is None:
        loaded = load_phi4flash(path, device, dtype, attn_backend, decode_backend)
        return Loaded(loaded.model, loaded.tokenizer, "phi4flash", str(path))
    model = load_phi4flash_model(path, device, dtype, attn_backend, decode_backend)
    tok = load_tokenizer(tokenizer)
    if tok.vocab_size > model.config.vocab_size:
        raise CheckpointError(
            f"{path}: tokenizer {tok.name} has {tok.vocab_size} ids but the model only {model.config.vocab_size} "
            "embeddings; use the checkpoint's own tokenizer.json"
        )
    return Loaded(model, tok, "phi4flash", str(path))


def save_model(model: nn.Module, folder: str | Path, **extra_config) -> Path:
    """Save in our format: ``config.json`` + ``model.safetensors`` (a tied output projection is stored once)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}  # clone: fused views share storage
    if model.config.tie_embeddings:
        sd.pop("output_projection.weight", None)
    tmp = folder / "model.safetensors.tmp"
    save_file(sd, str(tmp), metadata={"format": "pt", "producer": "yoco-eval"})
    tmp.replace(folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({**model.config.to_dict(), **extra_config}, indent=2) + "\n")
    return folder


def save_official(model: nn.Module, folder: str | Path) -> Path:
    """Save a YOCO model in the official format: ``checkpoint.pth`` + ``params.json``."""
    if not isinstance(model.config, YOCOConfig):
        raise CheckpointError("only YOCO models can be saved in the official YOCO format")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, folder / "checkpoint.pth")
    (folder / "params.json").write_text(json.dumps(model.config.to_params_json(), indent=2) + "\n")
    return folder
