"""Configuration of Phi-4-mini-flash (SambaY): a typed view of the checkpoint's HF ``config.json``.

Field names are the HF ones, so ``Phi4FlashConfig.from_hf(json.load(...))`` reads a real ``config.json`` and
:meth:`Phi4FlashConfig.to_hf` writes one the original code would load. Presets:

* ``phi4flash-tiny``: 8 layers, hidden 128, 8 heads / 4 KV heads, window 16, vocab 512 (tests; the shape of the
  ``tiny-h8kv4`` reference).
* ``phi4-mini-flash``: the real 3.8B shape (32 layers, hidden 2560, 40/20 heads, window 512, vocab 200064), for
  random-weight speed work.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from yoco_eval.errors import ConfigError

MODEL_TYPE = "phi4flash"
LAYER_KINDS = ("mamba", "swa", "memory", "full", "gmu", "cross")

# HF keys whose value we do not model: each must hold the value the architecture has (else: one clear error)
_FIXED = {"mamba_conv_bias": True, "mamba_proj_bias": False, "mlp_bias": False, "lm_head_bias": False,
          "hidden_act": "silu", "tie_word_embeddings": True, "mb_per_layer": 2}  # fmt: skip


_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "sliding_window")  # fmt: skip


@dataclass(frozen=True)
class Phi4FlashConfig:
    """Sizes of a Phi4Flash model (defaults: the released 3.8B checkpoint)."""

    vocab_size: int = 200064
    hidden_size: int = 2560
    intermediate_size: int = 10240
    num_hidden_layers: int = 32
    num_attention_heads: int = 40
    num_key_value_heads: int = 20
    sliding_window: int = 512
    layer_norm_eps: float = 1e-5
    mamba_d_state: int = 16
    mamba_d_conv: int = 4
    mamba_expand: int = 2
    mamba_dt_rank: int | None = None  # None: "auto" = ceil(hidden / 16)
    max_position_embeddings: int = 262144
    bos_token_id: int | None = 199999
    eos_token_id: int | None = 199999
    pad_token_id: int | None = 199999
    name: str = "phi4flash"

    def __post_init__(self):
        n, H, KV = self.num_hidden_layers, self.num_attention_heads, self.num_key_value_heads
        if n < 4 or n % 4:
            raise ConfigError(f"num_hidden_layers must be a positive multiple of 4 (the SambaY layer map), got {n}")
        if self.hidden_size % H:
            raise ConfigError(f"hidden_size {self.hidden_size} must be a multiple of num_attention_heads {H}")
        if H % 2 or KV % 2 or (H // 2) % (KV // 2):
            raise ConfigError(
                f"differential attention needs even head counts with KV/2 dividing H/2: got {H} heads, {KV} KV heads"
            )
        if self.sliding_window < 1:
            raise ConfigError(f"sliding_window must be >= 1, got {self.sliding_window}")

    # derived sizes -----------------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def d_inner(self) -> int:
        return self.mamba_expand * self.hidden_size

    @property
    def dt_rank(self) -> int:
        return self.mamba_dt_rank or math.ceil(self.hidden_size / 16)

    @property
    def memory_layer(self) -> int:
        """The Mamba layer whose SSM output feeds every gated layer (n/2)."""
        return self.num_hidden_layers // 2

    @property
    def kv_layer(self) -> int:
        """The one full-attention layer whose K/V every cross layer reads (n/2 + 1)."""
        return self.num_hidden_layers // 2 + 1

    @property
    def max_seq_len(self) -> int:
        """Longest sequence the model accepts (it has no positional encoding; the card states 64K trained)."""
        return self.max_position_embeddings

    @property
    def tie_embeddings(self) -> bool:
        return True

    arch = MODEL_TYPE

    def layer_kind(self, i: int) -> str:
        """One of :data:`LAYER_KINDS` for 0-based layer ``i`` (see :mod:`yoco_eval.model.phi4flash`)."""
        half = self.num_hidden_layers // 2
        if i < half:
            return "mamba" if i % 2 == 0 else "swa"
        if i == half:
            return "memory"
        if i == half + 1:
            return "full"
        return "gmu" if i % 2 == 0 else "cross"

    # HF config.json ------------------------------------------------------------------------------------------
    @classmethod
    def from_hf(cls, d: dict, source: str = "config.json", name: str | None = None) -> Phi4FlashConfig:
        """Read an HF ``config.json`` dict (``model_type: "phi4flash"``); every unsupported value is one error."""
        if d.get("model_type") != MODEL_TYPE:
            raise ConfigError(f"{source}: model_type is {d.get('model_type')!r}, expected {MODEL_TYPE!r}")
        for key, want in _FIXED.items():
            if key in d and d[key] != want:
                raise ConfigError(f"{source}: {key}={d[key]!r} is not supported (Phi4Flash has {key}={want!r})")
        kw = {f.name: d[f.name] for f in fields(cls) if f.name != "name" and f.name in d}
        if kw.get("mamba_dt_rank") == "auto":
            kw["mamba_dt_rank"] = None
        sw = kw.get("sliding_window")
        if isinstance(sw, list):  # the HF config class expands it per layer: windowed = odd layers < n/2
            kw["sliding_window"] = _window_from_list(sw, d.get("num_hidden_layers", 0), source)
        missing = [k for k in _REQUIRED if k not in kw]
        if missing:
            raise ConfigError(f"{source}: missing {missing[0]!r}; a Phi4Flash config.json needs it")
        try:
            return cls(**kw, name=name or d.get("_name_or_path") or MODEL_TYPE)
        except TypeError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_hf(self) -> dict:
        """The HF ``config.json`` dict of this config."""
        d = {k: v for k, v in asdict(self).items() if k != "name"}
        d["mamba_dt_rank"] = self.dt_rank
        return {"architectures": ["Phi4FlashForCausalLM"], "model_type": MODEL_TYPE, **_FIXED, **d}

    @classmethod
    def from_name(cls, name: str, **overrides) -> Phi4FlashConfig:
        if name not in PHI4FLASH_CONFIGS:
            raise ConfigError(f"unknown Phi4Flash preset {name!r}: choose one of {', '.join(PHI4FLASH_CONFIGS)}")
        return replace(PHI4FLASH_CONFIGS[name], **overrides)


def _window_from_list(sw: list, n: int, source: str) -> int:
    want = [i for i in range(n) if i % 2 == 1 and i < n // 2]
    sizes = {sw[i] for i in want if i < len(sw)}
    others = {sw[i] for i in range(len(sw)) if i not in want}
    if len(sw) != n or len(sizes) != 1 or None in sizes or others - {None}:
        raise ConfigError(
            f"{source}: per-layer sliding_window {sw} does not window exactly the odd layers below n/2 with one size"
        )
    return sizes.pop()


PHI4FLASH_CONFIGS = {
    "phi4flash-tiny": Phi4FlashConfig(
        vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=4, sliding_window=16, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
        pad_token_id=0, name="phi4flash-tiny",
    ),
    "phi4-mini-flash": Phi4FlashConfig(name="phi4-mini-flash"),
}  # fmt: skip

# The tokenizer a preset runs with (registry names of :mod:`yoco_eval.tokenizer`): bytes for the tiny test model
# (264 ids <= 512), o200k_base for the real shape (the release's tokenizer family; 200,019 ids <= 200,064).
PRESET_TOKENIZERS = {"phi4flash-tiny": "bytes", "phi4-mini-flash": "o200k_base"}
