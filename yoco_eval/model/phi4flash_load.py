"""Strict, offline loading of Hugging Face Phi-4-mini-flash folders (``model_type: "phi4flash"``).

A folder holds ``config.json``, ``model.safetensors`` or shards listed in ``model.safetensors.index.json``, and
(for text use) ``tokenizer.json``. Nothing is downloaded and no remote code runs: the config is read into
:class:`~yoco_eval.model.phi4flash_config.Phi4FlashConfig`, the weights into
:class:`~yoco_eval.model.phi4flash.Phi4Flash` under the checkpoint's own names (tied embeddings: the folder has
no ``lm_head.weight``). Every mismatch is ONE :class:`~yoco_eval.errors.CheckpointError` line: a missing key, an
unexpected key, a wrong shape, a vocabulary that does not match.

The tokenizer is read with the ``tokenizers`` library (no transformers needed). Chat format:
``<|system|>...<|end|><|user|>...<|end|><|assistant|>``; generation stops at EOS or ``<|end|>``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from yoco_eval.errors import CheckpointError, ConfigError
from yoco_eval.model.phi4flash import Phi4Flash
from yoco_eval.model.phi4flash_config import MODEL_TYPE, PHI4FLASH_CONFIGS, Phi4FlashConfig
from yoco_eval.model.shards import read_safetensors

END_OF_TURN = "<|end|>"


def is_phi4flash_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder whose ``config.json`` says ``model_type: "phi4flash"``."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == MODEL_TYPE
    except (json.JSONDecodeError, AttributeError):
        return False


def read_config(folder: str | Path) -> Phi4FlashConfig:
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no config.json; a Phi4Flash folder needs the checkpoint's config.json")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    return Phi4FlashConfig.from_hf(d, str(path), name=folder.name)


def read_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of the folder's safetensors (one file, or the shards its index lists)."""
    return read_safetensors(Path(folder))


def check_state(cfg: Phi4FlashConfig, expected: dict[str, torch.Size], sd: dict[str, torch.Tensor], source: str):
    """Raise one :class:`CheckpointError` line for the first problem: vocab, missing key, unexpected key, shape."""
    emb = sd.get("model.embed_tokens.weight")
    if emb is not None and emb.shape[0] != cfg.vocab_size:
        raise CheckpointError(
            f"{source}: vocab mismatch: model.embed_tokens.weight has {emb.shape[0]} rows but config.json says "
            f"vocab_size={cfg.vocab_size}; use the config.json that came with these weights"
        )
    missing = [k for k in expected if k not in sd]
    if missing:
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(
            f"{source}: missing key {missing[0]!r}{more}; the weights do not match config.json "
            f"(num_hidden_layers={cfg.num_hidden_layers}) or the download is incomplete"
        )
    unexpected = [k for k in sd if k not in expected]
    if unexpected:
        more = f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        hint = " (embeddings are tied: the checkpoint has no lm_head)" if "lm_head.weight" in unexpected else ""
        raise CheckpointError(
            f"{source}: unexpected key {unexpected[0]!r}{more}{hint}; the weights hold tensors config.json does "
            "not describe: check num_hidden_layers and that this is a Phi4Flash checkpoint"
        )
    for k, shape in expected.items():
        t = sd[k]
        if tuple(t.shape) != tuple(shape):
            raise CheckpointError(
                f"{source}: shape mismatch for {k!r}: checkpoint {tuple(t.shape)} vs config {tuple(shape)}; "
                "the weights do not match config.json's sizes"
            )
        if not t.is_floating_point():
            raise CheckpointError(f"{source}: {k!r} has dtype {t.dtype}, expected a floating-point tensor")


def load_phi4flash_model(
    folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, attn_backend="auto",
    decode_backend="auto",
) -> Phi4Flash:  # fmt: skip
    """Build the model of ``folder`` and load its weights strictly (see module docstring); returns it in eval mode."""
    folder = Path(folder)
    cfg = read_config(folder)
    with torch.device("meta"):  # no random init of 3.8B parameters: the checkpoint's tensors are assigned
        model = Phi4Flash(cfg, attn_backend=attn_backend, decode_backend=decode_backend)
    expected = {k: p.shape for k, p in model.state_dict().items()}
    sd = read_weights(folder)
    check_state(cfg, expected, sd, str(folder))
    sd = {k: t.to(device=device, dtype=dtype) for k, t in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def _init_block(leaf: list[str], shape, cfg: Phi4FlashConfig, g: torch.Generator, std: float) -> torch.Tensor:
    """fp32 CPU values of a block of rows of the parameter named ``...{leaf[0]}.{leaf[1]}`` (see
    :func:`init_phi4flash`); every rule is elementwise or per column, so any row block can be made on its own."""

    def rand(kind, a=1.0):
        t = torch.rand(shape, generator=g) if kind == "u" else torch.randn(shape, generator=g)
        return (2 * t - 1) * a if kind == "u" else t * a

    if leaf[-1] == "A_log":
        return torch.log(torch.arange(1, cfg.mamba_d_state + 1, dtype=torch.float32)).expand(shape)
    if leaf[-1] == "D" or leaf[0] in ("input_layernorm", "post_attention_layernorm", "final_layernorm",
                                      "subln") and leaf[1] == "weight":  # fmt: skip
        return torch.ones(shape)
    if leaf[-1].startswith("lambda_"):
        return rand("n", 0.1)
    if leaf == ["dt_proj", "weight"]:
        return rand("u", cfg.dt_rank**-0.5)
    if leaf == ["dt_proj", "bias"]:
        dt = torch.exp(torch.rand(shape, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        return dt + torch.log(-torch.expm1(-dt))  # softplus^-1
    if leaf[0] == "conv1d":
        return rand("u", cfg.mamba_d_conv**-0.5)
    if leaf[-1] == "bias":
        return torch.zeros(shape)
    return rand("n", std)


def init_phi4flash(model: Phi4Flash, seed: int = 0, std: float = 0.02, workers: int | None = None) -> Phi4Flash:
    """Random weights in place, in the spirit of the release's init: every linear/embedding weight N(0, std),
    biases 0, LayerNorms 1/0, ``A_log = log(1..N)``, ``D = 1``, ``dt_proj`` as mamba_ssm (weight U(+-R^-1/2),
    bias = softplus^-1(dt), dt log-uniform in [1e-3, 1e-1]), conv U(+-K^-1/2), lambdas N(0, 0.1), subln 1.

    Each block of about 4M values gets its own CPU generator, seeded by ``(seed, parameter index in name order,
    block index)``, and the blocks are filled on ``workers`` threads (the 3.8B shape in seconds rather than a
    minute): a seed gives the same model on any device, in any dtype (bf16 holds the rounding of the fp32
    values) and with any number of threads."""
    from concurrent.futures import ThreadPoolExecutor

    from yoco_eval import settings

    cfg, jobs = model.config, []
    for i, (name, p) in enumerate(sorted(model.named_parameters())):
        leaf = name.rsplit(".", 2)[-2:]
        rows = max(1, (1 << 22) // max(1, p[0].numel())) if p.dim() > 1 else p.shape[0]
        jobs += [(p, leaf, (seed * 1_000_003 + i) * 65_537 + b, r, rows) for b, r in enumerate(range(0, len(p), rows))]
    inference = torch.is_inference_mode_enabled()  # grad and inference modes are per thread: pass them on

    def fill(job):
        p, leaf, block_seed, r, rows = job
        with torch.inference_mode(inference), torch.no_grad():
            block = p[r : r + rows]
            block.copy_(_init_block(leaf, block.shape, cfg, torch.Generator().manual_seed(block_seed), std))

    if workers is None:  # torchrun starts one process a GPU on the same host: share the cores out
        workers = max(1, min(32, (os.cpu_count() or 1) // settings.get().local_world_size))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(fill, jobs))
    return model


def build_phi4flash_preset(
    name: str | Phi4FlashConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    seed: int = 0, attn_backend: str = "auto", decode_backend: str = "auto",
) -> Phi4Flash:  # fmt: skip
    """A preset (``phi4flash-tiny``, ``phi4-mini-flash``, or a config) with random weights (:func:`init_phi4flash`),
    built without a CPU copy: the module is created on the meta device and materialized on ``device``. On the meta
    device itself nothing is materialized (sizes only: weights and cache bytes)."""
    cfg = name if isinstance(name, Phi4FlashConfig) else Phi4FlashConfig.from_name(name)
    with torch.device("meta"):
        # dtype first: no fp32 copy of a bf16 model
        model = Phi4Flash(cfg, attn_backend=attn_backend, decode_backend=decode_backend).to(dtype)
    if torch.device(device).type == "meta":
        return model.eval()
    return init_phi4flash(model.to_empty(device=device), seed).eval()


def is_phi4flash_preset(name) -> bool:
    return isinstance(name, str) and name in PHI4FLASH_CONFIGS


def save_phi4flash(model: Phi4Flash, folder: str | Path) -> Path:
    """Write ``model`` as a Hugging Face folder in the release's format (``config.json`` with ``model_type:
    "phi4flash"`` + ``model.safetensors`` under the checkpoint's names, no ``lm_head``), which
    :func:`load_phi4flash_model` reads back strictly. The tokenizer is not written."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    tmp = folder / "model.safetensors.tmp"
    save_file(sd, str(tmp), metadata={"format": "pt", "producer": "yoco-eval"})
    tmp.replace(folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(model.config.to_hf(), indent=2) + "\n")
    return folder


class Phi4FlashTokenizer:
    """``tokenizer.json`` through the ``tokenizers`` library, with the yoco-eval tokenizer interface
    (``encode``/``decode``/``bos_id``/``eos_id``/``pad_id``/``vocab_size``/``name``) plus ``stop_ids`` (EOS and
    ``<|end|>``) and :meth:`chat_prompt`."""

    def __init__(self, folder: str | Path, cfg: Phi4FlashConfig):
        from tokenizers import Tokenizer

        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"{folder}: no tokenizer.json; copy the checkpoint's tokenizer.json into the folder")
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:
            raise CheckpointError(f"{path}: cannot read it with the tokenizers library ({e})") from None
        self.name = f"hf:{Path(folder).name}"
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.bos_id, self.eos_id, self.pad_id = cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id
        end = self._tok.token_to_id(END_OF_TURN)
        self.stop_ids = [i for i in dict.fromkeys([self.eos_id, end]) if i is not None]

    def encode(self, text: str, bos: bool = False) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids  # special-token strings become their ids
        return [self.bos_id, *ids] if bos and self.bos_id is not None else ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    @staticmethod
    def chat_prompt(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Phi-4 chat format: ``<|role|>content<|end|>`` per message, then ``<|assistant|>`` to generate."""
        for m in messages:
            if m.get("role") not in ("system", "user", "assistant"):
                raise ConfigError(f"chat message role {m.get('role')!r} is not one of system, user, assistant")
        text = "".join(f"<|{m['role']}|>{m['content']}{END_OF_TURN}" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")


@dataclass
class LoadedPhi4Flash:
    model: Phi4Flash
    tokenizer: Phi4FlashTokenizer
    path: str


def load_phi4flash(
    folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, attn_backend="auto",
    decode_backend="auto",
) -> LoadedPhi4Flash:  # fmt: skip
    """Model and tokenizer of a Phi4Flash folder; the tokenizer's ids must fit the model's vocabulary."""
    model = load_phi4flash_model(folder, device, dtype, attn_backend, decode_backend)
    tok = Phi4FlashTokenizer(folder, model.config)
    if tok.vocab_size > model.config.vocab_size:
        raise CheckpointError(
            f"{folder}: vocab mismatch: tokenizer.json has {tok.vocab_size} ids but the model only "
            f"{model.config.vocab_size} embeddings; use the checkpoint's own tokenizer.json"
        )
    return LoadedPhi4Flash(model, tok, str(folder))
