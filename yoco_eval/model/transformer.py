"""The Transformer baseline: a Llama-style decoder with grouped-query attention and standard RoPE.

It shares YOCO's blocks (RMSNorm, SwiGLU, pre-norm layer, cache writes and attention kernels), so a comparison
measures the architecture, not the implementation. Each layer keeps its own key/value cache: that per-layer
cache is exactly what YOCO replaces with one shared cache. HF ``LlamaForCausalLM`` weights load through
:mod:`yoco_eval.model.checkpoint` (HF ``gate_proj`` -> ``ffn.fc1``, ``up_proj`` -> ``ffn.gate``,
``down_proj`` -> ``ffn.fc2``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from yoco_eval.config import TransformerConfig
from yoco_eval.model.cache import Cache, Step, commit_step, make_step, new_kv
from yoco_eval.model.layers import DecoderLayer, LanguageModel, Mixer, RMSNorm, select_positions
from yoco_eval.ops.attention import causal_attention
from yoco_eval.ops.rope import apply_rope_qk, cached_inv_freq


class SelfAttention(Mixer):
    """Causal multi-head attention with GQA; keys/values go to this layer's own cache."""

    in_projections = ("q_proj", "k_proj", "v_proj")

    def __init__(self, cfg: TransformerConfig, index: int):
        super().__init__()
        self.index, self.n_heads, self.n_kv_heads, self.head_dim = index, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.out_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def mix(self, x: torch.Tensor, step: Step, freqs: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H, Hk, D = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.project_in(x, step)
        q, k = apply_rope_qk(q.reshape(B, T, H, D), k.reshape(B, T, Hk, D), step.rope_tables(freqs, x.dtype), False)
        v = v.reshape(B, T, Hk, D)
        if step.cache is not None:
            k, v = step.cache.kv[self.index].write(k, v, step)
        o = causal_attention(q, k, v, step.pos, step, q_is_tail=True)
        if step.valid is not None:
            o = o.masked_fill(~step.valid[..., None, None], 0.0)
        return o.reshape(B, T, -1)


class Transformer(LanguageModel):
    """Llama-style Transformer with the same inference interface as :class:`~yoco_eval.model.yoco.YOCO`.

    ``retention_backend`` is checked but unused (no retention layers); ``kv_dtype`` can only be ``"auto"``: an fp8
    cache per layer would be dequantized at every prefill chunk."""

    def __init__(self, cfg: TransformerConfig, attn_backend: str = "auto", retention_backend: str = "auto",
                 decode_backend: str = "auto", kv_dtype: str = "auto"):  # fmt: skip
        super().__init__(attn_backend, retention_backend, decode_backend, kv_dtype)
        self.set_backends(attn_backend, "torch", decode_backend)  # no retention layers: nothing to resolve
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(
            DecoderLayer(SelfAttention(cfg, i), cfg.dim, cfg.hidden_dim, cfg.norm_eps) for i in range(cfg.n_layers)
        )
        self.layer_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output_projection = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output_projection.weight = self.embed_tokens.weight

    def setup_cache(self, batch_size: int, max_seq_len: int, device=None, dtype=None) -> Cache:
        cfg = self.config
        device = device or self.embed_tokens.weight.device
        dtype = dtype or self.embed_tokens.weight.dtype
        c = Cache(batch_size, max_seq_len, torch.zeros(batch_size, dtype=torch.long, device=device))
        c.kv = [new_kv(batch_size, max_seq_len, cfg.n_kv_heads, cfg.head_dim, device, dtype) for _ in self.layers]
        return c

    def forward(
        self,
        tokens: torch.Tensor,
        cache: Cache | None = None,
        start_pos: int | torch.Tensor = 0,
        valid: torch.Tensor | None = None,
        logits_from: int | torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """Same contract as :meth:`yoco_eval.model.yoco.YOCO.forward` (every layer runs on every position;
        ``logits_from`` only limits the final norm and output projection)."""
        step = make_step(tokens, start_pos, cache, valid, self.backends)
        freqs = cached_inv_freq(self.config.head_dim, self.config.rope_theta, "llama", tokens.device)
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, step, freqs)
        commit_step(step)
        if isinstance(logits_from, int) and logits_from == 0:
            return None
        x, _, _ = select_positions(x, step.pos, logits_from)
        return self.head(x)
