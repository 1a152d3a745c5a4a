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
unless requested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from yoco_eval.config import YOCOConfig
from yoco_eval.model.cache import KV_DTYPES, Cache, KVCache, new_kv, new_window
from yoco_eval.ops import Backends, fp8, fused, resolve_backends
from yoco_eval.ops.attention import attention, decode_attention
from yoco_eval.ops.retention import recurrent_retention_step, torch_chunk_retention, triton_chunk_retention
from yoco_eval.ops.rope import apply_rope, apply_rope_qk, inv_freq, rope_tables

_SPLIT_DECODE_MIN = 8192  # keys from which decode attention is split along the keys
_FFN_ROWS = 8192  # inference: the feed-forward runs over at most this many tokens at a time (bounds its activation)

# ---------------------------------------------------------------------------------------------------------------
# The step: where the tokens of one call sit


@dataclass
class Step:
    """Positions of the tokens of one forward call.

    pos ``[B, T]`` absolute positions; valid ``[B, T]`` bool or None (None = every token is real);
    start: the common first position when all rows are aligned (prefill), else None (decode at per-row positions);
    uniform: every row holds the same number of real tokens, before and after this call (enables mask-free
    attention kernels); end: keys ``[:end]`` cover every visible position (host int, no device sync).
    """

    pos: torch.Tensor
    valid: torch.Tensor | None
    start: int | None
    uniform: bool
    end: int
    cache: Cache | None
    backends: Backends
    rope: dict = field(default_factory=dict)  # cos/sin tables of ``pos``, computed once per call

    def rope_tables(self, freqs: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (freqs.numel(), dtype)  # one model uses one theta and one style, so the head dim decides
        if key not in self.rope:
            self.rope[key] = rope_tables(self.pos, freqs, dtype)
        return self.rope[key]


def make_step(tokens: torch.Tensor, start_pos, cache: Cache | None, valid: torch.Tensor | None, backends) -> Step:
    B, T = tokens.shape
    if isinstance(start_pos, torch.Tensor):  # per-row positions (decode)
        pos = start_pos.view(B, 1) + torch.arange(T, device=tokens.device)
        start = None
    else:
        pos = (start_pos + torch.arange(T, device=tokens.device)).expand(B, T)
        start = start_pos
    if cache is None:
        return Step(pos, valid, start, valid is None, (start or 0) + T, None, backends)
    if valid is not None:
        cache.ragged = True
    if cache.static:  # CUDA-graph decode: static shapes, attend over the whole buffer under a mask
        return Step(pos, valid, start, False, cache.max_seq_len, cache, backends)
    if start is not None:
        end = max(cache.seen, start + T)
    else:
        end = cache.seen + T  # decode: every row advances by T; the longest row bounds the keys
    uniform = valid is None and not cache.ragged and (start is not None or B == 1)
    return Step(pos, valid, start, uniform, end, cache, backends)


def commit_step(step: Step) -> None:
    """Advance the cache's lengths after all layers have written this call's tokens."""
    c = step.cache
    if c is None:
        return
    last = step.pos if step.valid is None else torch.where(step.valid, step.pos, -1)
    c.lengths.copy_(torch.maximum(c.lengths, last.max(1).values + 1))  # in place: CUDA graphs replay this
    if not c.static:
        c.seen = step.end


# ---------------------------------------------------------------------------------------------------------------
# Inference-time weight fusion: several projections of the same input become ONE GEMM. The official parameters
# become views into the fused tensor (no extra memory; state_dict keys unchanged); if anything replaces them
# (``.to()``, ``load_state_dict`` with new tensors), the views no longer match and the plain path is used.


def fuse_projections(model: nn.Module) -> nn.Module:
    """Fuse q/k/v(/g/gt) and fc1/gate weights of every layer for inference (see above). Returns the model."""
    groups = {"GatedRetention": ("q_proj", "k_proj", "v_proj", "g_proj", "gt_proj"),
              "SlidingWindowAttention": ("q_proj", "k_proj", "v_proj"),
              "SelfAttention": ("q_proj", "k_proj", "v_proj"), "FeedForward": ("fc1", "gate")}  # fmt: skip
    with torch.no_grad():
        for mod in model.modules():
            names = groups.get(type(mod).__name__)
            if names is None:
                continue
            params = [getattr(mod, n).weight for n in names]
            w = torch.cat([p.detach() for p in params], 0)
            off = 0
            for n, p in zip(names, params):
                getattr(mod, n).weight.data = w[off : off + p.shape[0]]
                off += p.shape[0]
            mod._fused = (names, w)
    return model


def project(linear: nn.Linear, y: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``linear(y)``; with ``residual`` (inference), ``residual + linear(y)`` written INTO ``residual`` by the GEMM
    itself (cuBLAS ``beta = 1``: the sum is rounded once, and the separate add's pass over the activations is
    gone). ``residual`` ``[..., out]`` must be contiguous and free to overwrite."""
    if residual is None:
        return linear(y)
    residual.view(-1, residual.shape[-1]).addmm_(y.reshape(-1, y.shape[-1]), linear.weight.t())
    return residual


def fused_weight(mod: nn.Module, names: tuple[str, ...]) -> torch.Tensor | None:
    f = getattr(mod, "_fused", None)
    if f is None or mod.training:
        return None
    w = f[1]
    first = getattr(mod, names[0]).weight
    if first.data_ptr() != w.data_ptr() or first.dtype != w.dtype or first.device != w.device:
        mod._fused = None  # parameters were replaced: fall back to the separate projections
        return None
    return w


# ---------------------------------------------------------------------------------------------------------------
# Blocks shared with the Transformer baseline


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32, cast back, then (if affine) multiplied by the weight (the official order)."""

    def __init__(self, dim: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused.rms_norm(x, self.weight, self.eps)


class FeedForward(nn.Module):
    """SwiGLU with the official roles: ``fc1`` is the SiLU branch, ``gate`` the linear one, ``fc2`` down."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=False)
        self.gate = nn.Linear(dim, hidden_dim, bias=False)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``ffn(x)``, or ``residual + ffn(x)`` accumulated into ``residual`` (see :func:`project`)."""
        w = fused_weight(self, ("fc1", "gate"))
        if w is None:
            return project(self.fc2, fused.silu_mul(self.fc1(x), self.gate(x)), residual)
        # inference: one GEMM for both branches, over at most _FFN_ROWS tokens at a time, so the
        # [rows, 2 * hidden] activation stays bounded however long the prefill chunk
        x2 = x.reshape(-1, x.shape[-1])
        if x2.shape[0] <= _FFN_ROWS:
            return project(self.fc2, fused.swiglu_up(x2, w), residual).view(x.shape)
        out = x2.new_zeros(x2.shape) if residual is None else residual.view(x2.shape)
        for r in range(0, x2.shape[0], _FFN_ROWS):
            project(self.fc2, fused.swiglu_up(x2[r : r + _FFN_ROWS], w), out[r : r + _FFN_ROWS])
        return out.view(x.shape)


class DecoderLayer(nn.Module):
    """Pre-norm block: ``h = x + mixer(norm(x))``; ``out = h + ffn(norm(h))``.

    At inference (no autograd, contiguous ``x``) the block's two output GEMMs add into ``x`` in place, so the
    returned tensor IS ``x``: a forward hook that keeps a layer's output must clone it."""

    def __init__(self, mixer: nn.Module, dim: int, hidden_dim: int, eps: float):
        super().__init__()
        self.mixer_layer_norm = RMSNorm(dim, eps)
        self.mixer = mixer
        self.final_layer_norm = RMSNorm(dim, eps)
        self.ffn = FeedForward(dim, hidden_dim)

    def forward(self, x: torch.Tensor, *args, **kw) -> torch.Tensor:
        if torch.is_grad_enabled() or not x.is_contiguous():
            h = x + self.mixer(self.mixer_layer_norm(x), *args, **kw)
            return h + self.ffn(self.final_layer_norm(h))
        # inference: x is this forward's own activation (embedding or previous layer output), so each block's
        # output GEMM adds straight into it: no separate residual-add pass over [T, d]
        h = self.mixer(self.mixer_layer_norm(x), *args, residual=x, **kw)
        return self.ffn(self.final_layer_norm(h), residual=h)


def write_kv(c: KVCache, k: torch.Tensor, v: torch.Tensor, step: Step):
    """Write this call's keys/values at their positions; return the cache's keys/values ``[:end]`` (for an fp8
    cache, as :class:`~yoco_eval.ops.fp8.QuantKV` reads)."""
    if c.quantized:
        (kq, ks), (vq, vs) = fp8.quantize(k), fp8.quantize(v)
        srcs = (kq, vq, ks, vs)
    else:
        srcs = (k, v)
    parts = [(fp8.as_bytes(dst), fp8.as_bytes(src)) for dst, src in zip(c.tensors(), srcs, strict=True)]
    if step.start is not None:
        for dst, src in parts:
            dst[:, step.start : step.start + k.shape[1]] = src
    else:
        rows = torch.arange(k.shape[0], device=k.device)[:, None]
        for dst, src in parts:
            dst[rows, step.pos] = src
    e = step.end
    if c.quantized:
        return fp8.QuantKV(c.k[:, :e], c.k_scale[:, :e]), fp8.QuantKV(c.v[:, :e], c.v_scale[:, :e])
    return c.k[:, :e], c.v[:, :e]


def attend_kv(q, k, v, q_pos, step: Step, q_is_tail: bool) -> torch.Tensor:
    """Causal attention of queries at ``q_pos`` over keys at positions ``[0, k.shape[1])``.

    ``q_is_tail``: the queries are the last positions of every row, in order (lets kernels skip the mask).
    k, v may be fp8 cache reads (:class:`~yoco_eval.ops.fp8.QuantKV`): decode reads them as they are stored,
    other queries attend over a dequantized copy."""
    Tk = k.shape[1]
    if step.uniform and q_is_tail:
        if q.shape[1] == 1 and Tk >= _SPLIT_DECODE_MIN:  # e.g. the last prompt token after prefill
            return decode_attention(q, k, v, None, backend=step.backends.attn)
        k, v = fp8.dense(k, q.dtype), fp8.dense(v, q.dtype)
        return attention(q, k, v, kind="lower_right", backend=step.backends.attn)
    if step.cache is not None and q.shape[1] == 1 and step.valid is None and Tk >= _SPLIT_DECODE_MIN:
        # decode: every query sees every key written so far (its own included): split the keys across the GPU
        return decode_attention(q, k, v, None, backend=step.backends.attn, kv_len=step.pos[:, -1] + 1)
    k, v = fp8.dense(k, q.dtype), fp8.dense(v, q.dtype)
    k_pos = torch.arange(Tk, device=k.device).expand(k.shape[0], Tk)
    if step.cache is not None:
        k_valid = k_pos < step.cache.lengths[:, None]
        if step.valid is not None:  # this call's own tokens: only the real ones
            own = torch.zeros_like(k_valid)
            if step.start is not None:
                own[:, step.start : step.start + step.valid.shape[1]] = step.valid
            else:
                own.scatter_(1, step.pos, step.valid)
            k_valid = k_valid | own
        else:
            k_valid = k_valid | (k_pos <= step.pos[:, -1:])
    else:
        k_valid = step.valid
    return attention(q, k, v, q_pos, k_pos, k_valid, kind="general", backend=step.backends.attn)


# ---------------------------------------------------------------------------------------------------------------
# Self-decoder mixers


class GatedRetention(nn.Module):
    """gRet: ``S_t = g_t S_{t-1} + k_t^T v_t``, ``o_t = q_t S_t``; per-head RMSNorm; SiLU output gate."""

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

    def forward(self, x: torch.Tensor, step: Step, freqs: torch.Tensor, residual=None) -> torch.Tensor:
        B, T, d = x.shape
        H, D = self.n_heads, self.head_dim
        w = fused_weight(self, ("q_proj", "k_proj", "v_proj", "g_proj", "gt_proj"))
        if w is not None and not (step.backends.retention == "triton" and T > 1):
            # one GEMM for q, k, v, g and the gate logits (inference; decode, or the PyTorch retention)
            q, k, v, g, gt = F.linear(x, w).split([d, d, d, d, H], dim=-1)
        else:  # separate GEMMs: contiguous q, k, v, which fla-core's kernels would otherwise copy
            q, k, v, g, gt = self.q_proj(x), self.k_proj(x), self.v_proj(x), self.g_proj(x), self.gt_proj(x)
        q, k = apply_rope_qk(q.view(B, T, H, D), k.view(B, T, H, D), step.rope_tables(freqs, x.dtype), True, D**-0.5)
        v = v.reshape(B, T, H, D)
        log_g = fused.gate_log(gt, self.normalizer)  # [B, T, H] fp32
        if step.valid is not None:  # padding: no decay and no contribution, so the state skips it
            log_g = log_g.masked_fill(~step.valid[..., None], 0.0)
            k = k.masked_fill(~step.valid[..., None, None], 0.0)
        state = step.cache.retention[self.index] if step.cache is not None else None
        if state is not None and T == 1:
            o, new_state = recurrent_retention_step(q, k, v, log_g, state)
        elif step.backends.retention == "triton":
            o, new_state = triton_chunk_retention(q, k, v, log_g, state)
        else:
            o, new_state = torch_chunk_retention(q, k, v, log_g, state)
        if state is not None:
            state.copy_(new_state)
        # per-head RMSNorm (subln, no weight) and the SiLU output gate in one pass
        return project(self.out_proj, fused.silu_gate_head_norm(g, o, self.subln.eps), residual)


class SlidingWindowAttention(nn.Module):
    """Causal attention over the last C keys, the query's own included (paper: ``i - C < j <= i``)."""

    def __init__(self, cfg: YOCOConfig, index: int):
        super().__init__()
        d, self.n_heads, self.head_dim = cfg.dim, cfg.n_self_heads, cfg.self_head_dim
        self.index, self.window = index, cfg.sliding_window
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, step: Step, freqs: torch.Tensor, residual=None) -> torch.Tensor:
        B, T, _ = x.shape
        H, D, C = self.n_heads, self.head_dim, self.window
        w = fused_weight(self, ("q_proj", "k_proj", "v_proj"))
        q, k, v = F.linear(x, w).chunk(3, dim=-1) if w is not None else (self.q_proj(x), self.k_proj(x), self.v_proj(x))
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
        return project(self.out_proj, o.reshape(B, T, H * D), residual)


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


class CrossAttention(nn.Module):
    """Queries from this layer; keys/values from the ONE shared cache (no k/v projections of its own)."""

    def __init__(self, cfg: YOCOConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_attn_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.out_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x, k, v, q_pos, step: Step, freqs: torch.Tensor, q_is_tail: bool, residual=None) -> torch.Tensor:
        B, N, _ = x.shape
        tables = step.rope_tables(freqs, x.dtype) if q_is_tail and N == step.pos.shape[1] else None
        q = apply_rope(self.q_proj(x).view(B, N, self.n_heads, self.head_dim), q_pos, freqs, True, tables, inplace=True)
        o = attend_kv(q, k, v, q_pos, step, q_is_tail)
        return project(self.out_proj, o.reshape(B, N, -1), residual)


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
        k = self.k_proj(m).view(B, T, self.n_kv_heads, self.head_dim)
        k = apply_rope(k, step.pos, freqs, True, step.rope_tables(freqs, x.dtype), inplace=True)
        v = self.v_proj(m).view(B, T, self.n_kv_heads, self.head_dim)
        if step.cache is not None:
            k, v = write_kv(step.cache.kv[0], k, v, step)
        elif kv_fp8:
            k, v = fp8.fake_quant(k), fp8.fake_quant(v)
        if isinstance(select, int) and select == 0:
            return None  # early exit: the cross-decoder is skipped during prefill
        x, q_pos, tail = select_positions(x, step.pos, select)
        for layer in self.layers:
            x = layer(x, k, v, q_pos, step, freqs, tail)
        return x


def select_positions(x: torch.Tensor, pos: torch.Tensor, select) -> tuple[torch.Tensor, torch.Tensor, bool]:
    if select is None:
        return x, pos, True
    if isinstance(select, int):
        return x[:, -select:], pos[:, -select:], True
    idx = select.to(x.device)
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1])), pos.gather(1, idx), False


# ---------------------------------------------------------------------------------------------------------------
# The model


class LanguageModel(nn.Module):
    """What YOCO and the Transformer baseline share: kernel backends resolved once per device, parameter counts."""

    attn_backend = retention_backend = "auto"
    kv_dtype = "auto"  # K/V cache storage: "auto" (the model's dtype) or "fp8" (see model.cache)
    kv_dtypes: tuple[str, ...] = ("auto",)  # the storages this model implements
    _backends: Backends | None = None

    @property
    def backends(self) -> Backends:
        dev = self.embed_tokens.weight.device
        if self._backends is None or self._backends_device != dev:
            self._backends = resolve_backends(self.attn_backend, self.retention_backend, dev)
            self._backends_device = dev
        return self._backends

    def num_params(self, embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not embeddings:
            n -= self.embed_tokens.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.output_projection.weight.numel()
        return n


class YOCO(LanguageModel):
    """The YOCO decoder-decoder language model.

    Args:
        cfg: a :class:`~yoco_eval.config.YOCOConfig`.
        attn_backend / retention_backend: kernel choice (``"auto"``, ``"sdpa"``/``"torch"``;
            ``"auto"``/``"triton"``/``"torch"``), resolved once by :func:`yoco_eval.ops.resolve_backends`.
    """

    kv_dtypes = KV_DTYPES  # the one shared K/V cache may be stored in fp8

    def __init__(self, cfg: YOCOConfig, attn_backend: str = "auto", retention_backend: str = "auto"):
        super().__init__()
        self.config = cfg
        self.attn_backend, self.retention_backend = attn_backend, retention_backend
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
        freqs_self = inv_freq(self.config.self_head_dim, self.config.rope_theta, "yoco", tokens.device)
        freqs_cross = inv_freq(self.config.head_dim, self.config.rope_theta, "yoco", tokens.device)
        x = math.sqrt(self.config.dim) * self.embed_tokens(tokens)
        x = self.self_decoder(x, step, freqs_self)
        x = self.cross_decoder(x, step, freqs_cross, logits_from, self.kv_dtype == "fp8")
        commit_step(step)
        if x is None:
            return None
        return self.output_projection(self.layer_norm(x))
