"""Model configurations: a typed, frozen config per architecture and the named presets.

``YOCOConfig`` mirrors the official ``YOCOArgs`` fields (so an official ``params.json`` reads straight in) and
``TransformerConfig`` describes the Llama-style baseline with grouped-query attention. ``get_config(name)``
returns a preset; ``load_config(folder)`` reads ``config.json`` (ours), ``params.json`` (official YOCO) or an
HF Llama ``config.json``.

Presets (see ``CONFIGS``):
    yoco-3b, yoco-3b-1m        the paper's 3B model (gated retention; 1M variant with RoPE theta 80M)
    transformer-3b             a Llama-style Transformer of the same shape (26 layers, GQA 24/8)
    yoco-{160m..13b}[-swa]     the paper's scaling-curve sizes (gRet head dim 256, FFN 3d; SWA window 1024)
    transformer-{160m..13b}    their Transformer counterparts (FFN 8/3 d)
    yoco-debug[-swa], transformer-debug   tiny models for tests (run on CPU in well under a second)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yoco_eval.errors import ConfigError


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class YOCOConfig:
    """A YOCO decoder-decoder. Field names follow the official ``params.json`` (``YOCOArgs``).

    The first ``n_layers // 2`` layers form the self-decoder (gated retention, or sliding-window attention when
    ``sliding_window`` is set), the rest the cross-decoder, which reads ONE shared K/V cache.
    """

    dim: int
    n_layers: int
    hidden_dim: int
    n_self_heads: int
    n_attn_heads: int
    n_attn_kv_heads: int
    vocab_size: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    sliding_window: int | None = None
    gate_logit_normalizer: float = 16.0
    tie_embeddings: bool = False
    max_seq_len: int = 4096
    tokenizer: str = "yoco-cl100k"
    name: str = "yoco"

    arch = "yoco"

    def __post_init__(self):
        for f in ("dim", "n_layers", "hidden_dim", "n_self_heads", "n_attn_heads", "n_attn_kv_heads", "vocab_size"):
            _check(isinstance(getattr(self, f), int) and getattr(self, f) > 0, f"{f} must be a positive integer")
        _check(self.n_layers % 2 == 0, f"n_layers must be even (half self-, half cross-decoder), got {self.n_layers}")
        _check(self.dim % self.n_self_heads == 0, f"dim {self.dim} not divisible by n_self_heads {self.n_self_heads}")
        _check(self.dim % self.n_attn_heads == 0, f"dim {self.dim} not divisible by n_attn_heads {self.n_attn_heads}")
        _check(
            self.n_attn_heads % self.n_attn_kv_heads == 0,
            f"n_attn_heads {self.n_attn_heads} is not a multiple of n_attn_kv_heads {self.n_attn_kv_heads}",
        )
        _check(self.self_head_dim % 2 == 0 and self.head_dim % 2 == 0, "head dims must be even (RoPE pairs)")
        _check(self.sliding_window is None or self.sliding_window >= 1, "sliding_window must be None or >= 1")

    @property
    def kind(self) -> str:
        """``"gret"`` (gated retention) or ``"swa"`` (sliding-window attention) self-decoder."""
        return "gret" if self.sliding_window is None else "swa"

    @property
    def n_self_layers(self) -> int:
        return self.n_layers // 2

    @property
    def n_cross_layers(self) -> int:
        return self.n_layers // 2

    @property
    def self_head_dim(self) -> int:
        return self.dim // self.n_self_heads

    @property
    def head_dim(self) -> int:
        """Head dim of the cross-attention (and of the shared K/V)."""
        return self.dim // self.n_attn_heads

    def replace(self, **kw) -> YOCOConfig:
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, **dataclasses.asdict(self)}

    def to_params_json(self) -> dict[str, Any]:
        """The official ``params.json`` fields (what the official code reads with ``YOCOArgs(**params)``)."""
        return {
            "dim": self.dim, "n_layers": self.n_layers, "hidden_dim": self.hidden_dim,
            "n_self_heads": self.n_self_heads, "n_attn_heads": self.n_attn_heads,
            "n_attn_kv_heads": self.n_attn_kv_heads, "vocab_size": self.vocab_size,
            "max_batch_size": 1, "max_seq_len": self.max_seq_len, "model_parallel_size": 1,
            "load_checkpoint": False, "rope_theta": self.rope_theta, "norm_eps": self.norm_eps,
            "sliding_window": self.sliding_window,
        }  # fmt: skip


@dataclass(frozen=True)
class TransformerConfig:
    """A Llama-style decoder-only Transformer with grouped-query attention (the baseline)."""

    dim: int
    n_layers: int
    hidden_dim: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    max_seq_len: int = 4096
    head_dim_override: int | None = None
    tokenizer: str = "yoco-cl100k"
    name: str = "transformer"

    arch = "transformer"

    def __post_init__(self):
        for f in ("dim", "n_layers", "hidden_dim", "n_heads", "n_kv_heads", "vocab_size"):
            _check(isinstance(getattr(self, f), int) and getattr(self, f) > 0, f"{f} must be a positive integer")
        _check(self.n_heads % self.n_kv_heads == 0, f"n_heads {self.n_heads} not a multiple of n_kv_heads")
        _check(self.head_dim_override is not None or self.dim % self.n_heads == 0, "dim not divisible by n_heads")

    @property
    def head_dim(self) -> int:
        return self.head_dim_override or self.dim // self.n_heads

    def replace(self, **kw) -> TransformerConfig:
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, **dataclasses.asdict(self)}


ModelConfig = YOCOConfig | TransformerConfig

# --- presets ------------------------------------------------------------------------------------------------

_3B = dict(dim=3072, n_layers=26, hidden_dim=8192, vocab_size=100288)
# Paper Table 8 (NeurIPS appendix E): hidden, layers, heads. YOCO uses gRet head dim 256 and FFN 3d;
# the Transformer FFN 8/3 d (rounded up to a multiple of 256).
_SCALING = {"160m": (768, 12, 12), "400m": (1024, 24, 16), "830m": (1536, 24, 12), "1.4b": (2048, 24, 16),
            "2.7b": (2560, 32, 20), "6.8b": (4096, 32, 32), "13b": (5120, 40, 40)}  # fmt: skip


def _round_up(x: float, m: int = 256) -> int:
    return int((x + m - 1) // m * m)


def _build_presets() -> dict[str, ModelConfig]:
    p: dict[str, ModelConfig] = {
        "yoco-3b": YOCOConfig(**_3B, n_self_heads=24, n_attn_heads=24, n_attn_kv_heads=8, name="yoco-3b"),
        "yoco-3b-1m": YOCOConfig(
            **_3B,
            n_self_heads=24,
            n_attn_heads=24,
            n_attn_kv_heads=8,
            rope_theta=80e6,
            max_seq_len=1 << 20,
            name="yoco-3b-1m",
        ),
        "transformer-3b": TransformerConfig(**_3B, n_heads=24, n_kv_heads=8, name="transformer-3b"),
        "transformer-3b-1m": TransformerConfig(
            **_3B, n_heads=24, n_kv_heads=8, rope_theta=80e6, max_seq_len=1 << 20, name="transformer-3b-1m"
        ),
        "yoco-debug": YOCOConfig(
            dim=64,
            n_layers=4,
            hidden_dim=128,
            n_self_heads=4,
            n_attn_heads=4,
            n_attn_kv_heads=2,
            vocab_size=264,
            rope_theta=10000.0,
            tokenizer="bytes",
            name="yoco-debug",
        ),
        "transformer-debug": TransformerConfig(
            dim=64,
            n_layers=4,
            hidden_dim=128,
            n_heads=4,
            n_kv_heads=2,
            vocab_size=264,
            tokenizer="bytes",
            name="transformer-debug",
        ),
    }
    p["yoco-debug-swa"] = p["yoco-debug"].replace(sliding_window=16, name="yoco-debug-swa")
    for size, (d, layers, heads) in _SCALING.items():
        common = dict(dim=d, n_layers=layers, vocab_size=100288, max_seq_len=2048)
        p[f"yoco-{size}"] = YOCOConfig(
            **common,
            hidden_dim=3 * d,
            n_self_heads=d // 256,
            n_attn_heads=heads,
            n_attn_kv_heads=heads,
            name=f"yoco-{size}",
        )
        p[f"yoco-{size}-swa"] = YOCOConfig(
            **common,
            hidden_dim=3 * d,
            n_self_heads=heads,
            n_attn_heads=heads,
            n_attn_kv_heads=heads,
            sliding_window=1024,
            name=f"yoco-{size}-swa",
        )
        p[f"transformer-{size}"] = TransformerConfig(
            **common, hidden_dim=_round_up(8 * d / 3), n_heads=heads, n_kv_heads=heads, name=f"transformer-{size}"
        )
    return p


CONFIGS: dict[str, ModelConfig] = _build_presets()


def get_config(name: str, **overrides) -> ModelConfig:
    """A named preset, optionally with fields replaced (``get_config("yoco-3b", rope_theta=5e6)``)."""
    if name not in CONFIGS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of: {', '.join(sorted(CONFIGS))}")
    cfg = CONFIGS[name]
    try:
        return cfg.replace(**overrides) if overrides else cfg
    except TypeError as e:
        raise ConfigError(f"bad override for preset {name!r}: {e}") from None


def _from_fields(cls, d: dict[str, Any], source: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names - {"arch"})
    if unknown:
        raise ConfigError(f"{source}: unknown config field(s) {unknown}; allowed: {sorted(names)}")
    try:
        return cls(**{k: v for k, v in d.items() if k in names})
    except TypeError as e:
        raise ConfigError(f"{source}: {e}") from None


# Official YOCOArgs fields that only matter to the official training code.
_OFFICIAL_IGNORED = {"max_batch_size", "model_parallel_size", "load_checkpoint"}


def config_from_params_json(d: dict[str, Any], source: str = "params.json") -> YOCOConfig:
    """Read the official ``params.json`` (``YOCOArgs`` fields)."""
    d = {k: v for k, v in d.items() if k not in _OFFICIAL_IGNORED}
    if isinstance(d.get("sliding_window"), bool):  # the official dataclass types it Optional[bool]
        raise ConfigError(f"{source}: sliding_window must be a window size (int) or null, not a boolean")
    return _from_fields(YOCOConfig, d, source)


def config_from_hf_llama(d: dict[str, Any], source: str = "config.json") -> TransformerConfig:
    """Read an HF ``LlamaForCausalLM`` ``config.json``."""
    scaling = d.get("rope_scaling")
    if scaling not in (None, {}) and (scaling or {}).get("rope_type", "default") != "default":
        raise ConfigError(f"{source}: rope_scaling {scaling} is not supported; only plain RoPE Llama models load")
    rope = d.get("rope_parameters") or {}
    theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
    hd = d.get("head_dim")
    return TransformerConfig(
        dim=d["hidden_size"], n_layers=d["num_hidden_layers"], hidden_dim=d["intermediate_size"],
        n_heads=d["num_attention_heads"], n_kv_heads=d.get("num_key_value_heads") or d["num_attention_heads"],
        vocab_size=d["vocab_size"], rope_theta=float(theta), norm_eps=d.get("rms_norm_eps", 1e-6),
        tie_embeddings=bool(d.get("tie_word_embeddings", False)),
        max_seq_len=d.get("max_position_embeddings", 4096),
        head_dim_override=hd if hd and hd != d["hidden_size"] // d["num_attention_heads"] else None,
        tokenizer="hf", name=d.get("_name_or_path") or d.get("_model_name_or_path") or "llama",
    )  # fmt: skip


def config_from_dict(d: dict[str, Any], source: str = "config") -> ModelConfig:
    """Our own ``config.json`` (has an ``arch`` field), else an HF Llama config, else official params."""
    arch = d.get("arch")
    if arch == "yoco":
        return _from_fields(YOCOConfig, d, source)
    if arch == "transformer":
        return _from_fields(TransformerConfig, d, source)
    if d.get("model_type") == "llama" or "LlamaForCausalLM" in (d.get("architectures") or []):
        return config_from_hf_llama(d, source)
    if "n_self_heads" in d:
        return config_from_params_json(d, source)
    raise ConfigError(f"{source}: not a yoco-eval, official YOCO or HF Llama config (no 'arch'/'model_type' field)")


def load_config(path: str | Path) -> ModelConfig:
    """Read the config of a checkpoint folder (``config.json`` or ``params.json``) or of a JSON file."""
    path = Path(path)
    if path.is_dir():
        for name in ("config.json", "params.json"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise ConfigError(f"{path} has no config.json or params.json: is it a checkpoint folder?")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); fix or regenerate it") from None
    if path.name == "params.json":
        return config_from_params_json(d, str(path))
    return config_from_dict(d, str(path))
