"""YOCO (You Only Cache Once, arXiv 2405.05254), exactly as the official code computes it.

Reads top to bottom in the paper's order:
    tokens -> embedding x sqrt(d) -> self-decoder (gated retention or sliding-window attention, constant-size
    state) -> ONE shared K/V (kv_layer_norm, GQA projections, RoPE on K once, when written) -> cross-decoder
    (each layer cross-attends to that shared K/V) -> final RMSNorm -> output projection.

Parameter names are the official state-dict keys (``self_decoder.layers.{i}.mixer.gt_proj.weight``, ...), so an
official ``checkpoint.pth`` loads with ``strict=True``. Numerics follow the official code: interleaved RoPE with
frequencies ``1/theta**linspace(0,1,D/2)``, gate ``logsigmoid(x W_gt)/16``, keys scaled by ``D**-0.5``, per-head
RMSNorm without weight, ``out_proj(silu(g_proj x) * o)``, SwiGLU ``fc2(silu(fc1 x) * gate x)``, RMSNorms computed
in fp32 and cast back before the weight multiply.

Inference (see :mod:`yoco_eval.model.cache`): ``forward(tokens, cache=cache, start_pos=s, logits_from=...)`` runs
one prefill chunk or decode step. The cross-decoder runs only for the positions whose logits are asked for
(``logits_from=0`` skips it entirely: the paper's early-exit prefill), so no ``[T, vocab]`` tensor is ever made
unless requested. The blocks shared with the Transformer baseline live in :mod:`yoco_eval.model.layers`; the
inference-time rewrites in :mod:`yoco_eval.model.inference`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from yoco_eval.config import YOCOConfig
from yoco_eval.model.cache import KV_DTYPES, Cache, Step, commit_step, make_step, new_kv, new_window
from yoco_eval.model.layers import DecoderLayer, LanguageModel, Mixer, RMSNorm, select_positions
from yoco_eval.ops import fp8, fused
from yoco_eval.ops.attention import attention, causal_attention
from yoco_eval.ops.retention import chunk_retention, recurrent_retention_step
from yoco_eval.ops.rope import apply_rope, apply_rope_qk, cached_inv_freq

# ---------------------------------------------------------------------------------------------------------------
# Self-decoder mixers


class GatedRetention(Mixer):
    """gRet: ``S_t = g_t S_{t-1} + k_t^T v_t``, ``o_t = q_t S_t``; per-head RMSNorm; SiLU output gate."""

    in_projections = ("q_proj", "k_proj", "v_proj", "g_proj", "gt_proj")

    def __init__(self, cfg: YOCOConfig, index: int):
        super().__init__()
        d, self.n_heads, self.head_dim = cfg.dim, cfg.n_self_heads, cfg.self_head_dim
        self.index, self.normalizer = index, cfg.gate_logit_normalizer
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.g_proj = nn.Linear(d, d, bias=False)
        self.gt_proj = nn.Linear(d, self.n_heads, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)
        self.subln = RMSNorm(self.head_dim, cfg.norm_eps, affine=False)

    def mix(self, x: torch.Tensor, step: Step, freqs: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H, D = self.n_heads, self.head_dim
        q, k, v, g, gt = self.project_in(x, step)
        q, k = apply_rope_qk(q.view(B, T, H, D), k.view(B, T, H, D), step.rope_tables(freqs, x.dtype), True, D**-0.5)
        v = v.reshape(B, T, H, D)
        state = step.cache.retention[self.index] if step.cache is not None else None
        if state is not None and T == 1 and step.valid is None:  # decode: the whole step in one kernel if it can
            out = fused.retention_decode_step(q, k, v, gt, g, state, self.normalizer, self.subln.eps)
            if out is not None:
                return out
        log_g = fused.gate_log(gt, self.normalizer)  # [B, T, H] fp32
        if step.valid is not None:  # padding: no decay and no contribution, so the state skips it
            log_g = log_g.masked_fill(~step.valid[..., None], 0.0)
            k = k.masked_fill(~step.valid[..., None, None], 0.0)
        if state is not None and T == 1:
            o, new_state = recurrent_retention_step(q, k, v, log_g, state)
        else:  # chunkwise: quadratic inside a chunk, recurrent across chunks
            o, new_state = chunk_retention(q, k, v, log_g, state, backend=step.backends.retention)
        if state is not None:
            state.copy_(new_state)
        # per-head RMSNorm (subln, no weight) and the SiLU output gate in one pass
        return fused.silu_gate_head_norm(g, o, self.subln.eps)


class SlidingWindowAttention(Mixer):
    """Causal attention over the last C keys, the query's own included (paper: ``i - C < j <= i``)."""

    in_projections = ("q_proj", "k_proj", "v_proj")

    def __init__(self, cfg: YOCOConfig, index: int):
        super().__init__()
        d, self.n_heads, self.head_dim = cfg.dim, cfg.n_self_heads, cfg.self_head_dim
        self.index, self.window = index, cfg.sliding_window
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)

    def mix(self, x: torch.Tensor, step: Step, freqs: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H, D, C = self.n_heads, self.head_dim, self.window
        q, k, v = self.project_in(x, step)
        q, k = apply_rope_qk(q.reshape(B, T, H, D), k.reshape(B, T, H, D), step.rope_tables(freqs, x.dtype), True)
        v = v.reshape(B, T, H, D)
        valid = step.valid if step.valid is not None else torch.ones_like(step.pos, dtype=torch.bool)
        if step.cache is None:
            o = attention(q, k, v, step.pos, step.pos, step.valid, window=C, backend=step.backends.attn)
        else:
            w = step.cache.windows[self.index]
            keys, vals = torch.cat([w.k[:, :C], k], 1), torch.cat([w.v[:, :C], v], 1)
            k_pos = torch.cat([w.pos[:, :C], step.pos], 1)
            k_valid = torch.cat([w.pos[:, :C] >= 0, valid], 1)
            o = attention(q, keys, vals, step.pos, k_pos, k_valid, window=C, backend=step.backends.attn)
            # keep the last C real tokens of each row in the ring; the rest go to the scratch slot C
            last = torch.where(valid, step.pos, -1).max(1, keepdim=True).values
            slot = torch.where(valid & (step.pos > last - C), step.pos % C, C)
            w.k.scatter_(1, slot[..., None, None].expand_as(k), k)
            w.v.scatter_(1, slot[..., None, None].expand_as(v), v)
            w.pos.scatter_(1, slot, step.pos)
            w.pos[:, C] = -1
        if step.valid is not None:
            o = o.masked_fill(~step.valid[..., None, None], 0.0)
        return o.reshape(B, T, H * D)


class SelfDecoder(nn.Module):
    def __init__(self, cfg: YOCOConfig):
        super().__init__()
        mixer = GatedRetention if cfg.sliding_window is None else SlidingWindowAttention
        self.layers = nn.ModuleList(
            DecoderLayer(mixer(cfg, i), cfg.dim, cfg.hidden_dim, cfg.norm_eps) for i in range(cfg.n_self_layers)
        )

    def forward(self, x: torch.Tensor, step: Step, freqs: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, step, freqs)
        return x


# ---------------------------------------------------------------------------------------------------------------
# Cross-decoder


class CrossAttention(Mixer):
    """Queries from this layer; keys/values from the ONE shared cache (no k/v projections of its own)."""

    in_projections = ("q_proj",)

    def __init__(self, cfg: YOCOConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_attn_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.out_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def mix(self, x, k, v, q_pos, step: Step, freqs: torch.Tensor, q_is_tail: bool) -> torch.Tensor:
        B, N, _ = x.shape
        tables = step.rope_tables(freqs, x.dtype) if q_is_tail and N == step.pos.shape[1] else None
        (q,) = self.project_in(x, step)
        q = apply_rope(q.view(B, N, self.n_heads, self.head_dim), q_pos, freqs, True, tables, inplace=True)
        return causal_attention(q, k, v, q_pos, step, q_is_tail).reshape(B, N, -1)


class CrossDecoder(nn.Module):
    def __init__(self, cfg: YOCOConfig):
        super().__init__()
        self.n_kv_heads, self.head_dim = cfg.n_attn_kv_heads, cfg.head_dim
        self.kv_layer_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_attn_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_attn_kv_heads * cfg.head_dim, bias=False)
        self.layers = nn.ModuleList(
            DecoderLayer(CrossAttention(cfg), cfg.dim, cfg.hidden_dim, cfg.norm_eps) for _ in range(cfg.n_cross_layers)
        )

    def forward(self, x: torch.Tensor, step: Step, freqs: torch.Tensor, select, kv_fp8: bool = False
                ) -> torch.Tensor | None:  # fmt: skip
        """Build/extend the shared K/V from the self-decoder output ``x`` ``[B, T, d]``, then run the cross layers
        for the selected positions only (``select``: None = all, int n = last n, ``[B, N]`` = gathered).
        ``kv_fp8``: the keys/values are rounded through the fp8 cache format (a cache does it when writing)."""
        B, T, _ = x.shape
        m = self.kv_layer_norm(x)
        # fused.linear: F.linear, or the GEMV for the one row of a batch-1 decode step
        k = fused.linear(m, self.k_proj.weight).view(B, T, self.n_kv_heads, self.head_dim)
        k = apply_rope(k, step.pos, freqs, True, step.rope_tables(freqs, x.dtype), inplace=True)
        v = fused.linear(m, self.v_proj.weight).view(B, T, self.n_kv_heads, self.head_dim)
        if step.cache is not None:
            k, v = step.cache.kv[0].write(k, v, step)
        elif kv_fp8:
            k, v = fp8.fake_quant(k), fp8.fake_quant(v)
        if isinstance(select, int) and select == 0:
            return None  # early exit: the cross-decoder is skipped during prefill
        x, q_pos, tail = select_positions(x, step.pos, select)
        for layer in self.layers:
            x = layer(x, k, v, q_pos, step, freqs, tail)
        return x


# ---------------------------------------------------------------------------------------------------------------
# The model


class YOCO(LanguageModel):
    """The YOCO decoder-decoder language model.

    Args:
        cfg: a :class:`~yoco_eval.config.YOCOConfig`.
        attn_backend / retention_backend / decode_backend / kv_dtype: see
            :class:`~yoco_eval.model.layers.LanguageModel` (kernel names of :mod:`yoco_eval.ops`; the shared
            K/V's storage, ``"auto"`` or ``"fp8"``).
    """

    kv_dtypes = KV_DTYPES  # the one shared K/V cache may be stored in fp8

    def __init__(self, cfg: YOCOConfig, attn_backend: str = "auto", retention_backend: str = "auto",
                 decode_backend: str = "auto", kv_dtype: str = "auto"):  # fmt: skip
        super().__init__(attn_backend, retention_backend, decode_backend, kv_dtype)
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.self_decoder = SelfDecoder(cfg)
        self.cross_decoder = CrossDecoder(cfg)
        self.layer_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output_projection = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output_projection.weight = self.embed_tokens.weight

    def setup_cache(self, batch_size: int, max_seq_len: int, device=None, dtype=None) -> Cache:
        """Preallocate the state of ``batch_size`` sequences of up to ``max_seq_len`` tokens."""
        cfg = self.config
        device = device or self.embed_tokens.weight.device
        dtype = dtype or self.embed_tokens.weight.dtype
        c = Cache(batch_size, max_seq_len, torch.zeros(batch_size, dtype=torch.long, device=device))
        H, D = cfg.n_self_heads, cfg.self_head_dim
        for _ in range(cfg.n_self_layers):
            if cfg.sliding_window is None:
                c.retention.append(torch.zeros(batch_size, H, D, D, device=device, dtype=torch.float32))
            else:
                c.windows.append(new_window(batch_size, cfg.sliding_window, H, D, device, dtype))
        c.kv.append(new_kv(batch_size, max_seq_len, cfg.n_attn_kv_heads, cfg.head_dim, device, dtype, self.kv_dtype))
        return c

    def forward(
        self,
        tokens: torch.Tensor,
        cache: Cache | None = None,
        start_pos: int | torch.Tensor = 0,
        valid: torch.Tensor | None = None,
        logits_from: int | torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """Run ``tokens`` ``[B, T]`` (int64).

        Args:
            cache: state from :meth:`setup_cache`, extended in place; None for a stateless full forward.
            start_pos: absolute position of ``tokens[:, 0]``: an int shared by all rows (prefill chunk), or an
                int64 ``[B]`` tensor of per-row positions (decode).
            valid: ``[B, T]`` bool, False on right-padding (kept out of every state and attention), or None.
            logits_from: which positions get logits (and, for YOCO, the cross-decoder): None = all, int n = the
                last n (0 = none: early-exit prefill), or an int64 ``[B, N]`` index into the T positions.
        Returns:
            logits ``[B, N, vocab]`` in the model dtype, or None when ``logits_from == 0``.
        """
        step = make_step(tokens, start_pos, cache, valid, self.backends)
        freqs_self = cached_inv_freq(self.config.self_head_dim, self.config.rope_theta, "yoco", tokens.device)
        freqs_cross = cached_inv_freq(self.config.head_dim, self.config.rope_theta, "yoco", tokens.device)
        x = math.sqrt(self.config.dim) * self.embed_tokens(tokens)
        x = self.self_decoder(x, step, freqs_self)
        x = self.cross_decoder(x, step, freqs_cross, logits_from, self.kv_dtype == "fp8")
        commit_step(step)
        if x is None:
            return None
        return self.head(x)
