"""Phi-4-mini-flash (SambaY, arXiv 2507.06607): the YOCO-family decoder-hybrid-decoder, run cache-once.

Layer map (0-based, n = ``num_hidden_layers``, n % 4 == 0; facts in ``phi4flash.md``):
    even i < n/2: Mamba-1 | odd i < n/2: differential attention over a sliding window of w keys (p-w+1..p)
    i = n/2: Mamba whose SSM output y (with D*x, before the silu(z) gate) is the gated layers' MEMORY
    i = n/2+1: full causal differential attention; its raw K/V is the ONE cache that grows
    even i > n/2+1: gated memory unit ``out_proj(memory * silu(in_proj(h)))``
    odd i > n/2+1: cross-attention: queries only, over layer n/2+1's K/V, causal
Every layer is pre-norm LayerNorm (weight + bias): ``h = x + mixer(LN(x)); out = h + fc2(u * silu(g))`` with
``[g, u] = fc1(LN(h))``; then a final LayerNorm and the tied head ``logits = x @ embed_tokens.weight^T``.
No positional encoding at all.

Differential attention (HF original, vLLM, TensorRT-LLM agree): heads split into even/odd stripes
(q1 = heads 0, 2, ..; q2 = heads 1, 3, ..; same for k, v); inside a half, query head i reads KV head
i // group; ``attn_a = softmax(q_a k_a^T / sqrt(D)) [v1 | v2]`` (2D wide); ``lambda = exp(lq1.lk1) -
exp(lq2.lk2) + lambda_init`` with ``lambda_init = 0.8 - 0.6 exp(-0.3 * layer_idx)``; ``o = RMSNorm_2D(attn_1 -
lambda attn_2) * (1 - lambda_init)``, pair j's 2D vector becoming heads 2j, 2j+1; then ``out_proj`` (bias).

Inference: ``forward(tokens, cache, start_pos, valid, logits_from)`` like :class:`yoco_eval.model.yoco.YOCO`.
Layers 0..n/2 and the K/V of layer n/2+1 run over every token; the rest of layer n/2+1 and all later layers run
only on the positions whose logits are asked for (``logits_from=0``: none, early-exit prefill).
Parameter names are the checkpoint's (``model.layers.{i}.attn.Wqkv.weight``, ...), no ``lm_head``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from yoco_eval.errors import ConfigError
from yoco_eval.model.cache import KVCache
from yoco_eval.model.phi4flash_cache import Phi4FlashCache, Step, commit_step, make_step, new_cache
from yoco_eval.model.phi4flash_config import Phi4FlashConfig
from yoco_eval.ops import attention as attention_ops
from yoco_eval.ops import check_backend_names, resolve_backends, triton_kernels
from yoco_eval.ops.attention import attention
from yoco_eval.ops.selective_scan import SCAN_IMPLS, causal_conv1d, selective_scan

_SUBLN_EPS = 1e-5  # hard-coded in the original, not layer_norm_eps
_SWA_BLOCK = 256  # sliding-window prefill: queries per block (each block reads block + window keys)

# ---------------------------------------------------------------------------------------------------------------
# Blocks


class MLP(nn.Module):
    """``fc2(u * silu(g))`` with ``[g, u] = fc1(x)`` (gate = first half); no biases."""

    def __init__(self, cfg: Phi4FlashConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, u = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(u * F.silu(g))


class Mamba(nn.Module):
    """Mamba-1: ``in_proj -> [x, z]; x = silu(causal_conv(x)); y = scan(x) + D x; out_proj(y * silu(z))``.

    ``forward`` returns ``(out, y)``: y is the memory of the gated layers when this is layer n/2."""

    def __init__(self, cfg: Phi4FlashConfig, slot: int):
        super().__init__()
        h, Di, N, R, K = cfg.hidden_size, cfg.d_inner, cfg.mamba_d_state, cfg.dt_rank, cfg.mamba_d_conv
        self.slot, self.sizes = slot, (R, N, N)
        self.in_proj = nn.Linear(h, 2 * Di, bias=False)
        self.conv1d = nn.Conv1d(Di, Di, K, groups=Di, padding=K - 1, bias=True)  # weight [Di, 1, K]
        self.x_proj = nn.Linear(Di, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, Di, bias=True)
        self.A_log = nn.Parameter(torch.zeros(Di, N))
        self.D = nn.Parameter(torch.ones(Di))
        self.out_proj = nn.Linear(Di, h, bias=False)

    def forward(self, x: torch.Tensor, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # [B, T, Di] each
        st = step.cache.mamba[self.slot] if step.cache is not None else None
        c, tail = causal_conv1d(xs, self.conv1d.weight[:, 0], self.conv1d.bias, st.conv if st else None, step.n_valid)
        xs = F.silu(c)
        dt_in, b, cc = self.x_proj(xs).split(self.sizes, dim=-1)
        dt = F.softplus(self.dt_proj(dt_in))  # the bias is added once, inside the softplus
        if step.valid is not None:  # padding neither decays nor feeds the state
            dt = dt.masked_fill(~step.valid[..., None], 0.0)
        A = -torch.exp(self.A_log.to(torch.promote_types(self.A_log.dtype, torch.float32)))
        y, s = selective_scan(xs, dt, A, b, cc, self.D, st.ssm if st else None, impl=step.scan_impl)
        if st is not None:
            st.conv.copy_(tail)
            st.ssm.copy_(s)
        return self.out_proj(y * F.silu(z)), y


class GMU(nn.Module):
    """Gated memory unit: ``out_proj(memory * silu(in_proj(h)))``; no conv, no state, no biases."""

    def __init__(self, cfg: Phi4FlashConfig):
        super().__init__()
        self.in_proj = nn.Linear(cfg.hidden_size, cfg.d_inner, bias=False)
        self.out_proj = nn.Linear(cfg.d_inner, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return self.out_proj(memory * F.silu(self.in_proj(x)))


class DiffCore(nn.Module):
    """The differential pair's parameters (checkpoint name ``inner_cross_attn``): lambdas and the 2D RMSNorm."""

    def __init__(self, head_dim: int, layer_idx: int):
        super().__init__()
        self.lambda_init = 0.8 - 0.6 * math.exp(-0.3 * layer_idx)  # the GLOBAL layer index
        for n in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            setattr(self, n, nn.Parameter(torch.zeros(head_dim)))
        self.subln = nn.Module()
        self.subln.weight = nn.Parameter(torch.ones(2 * head_dim))

    def combine(self, a1: torch.Tensor, a2: torch.Tensor) -> torch.Tensor:
        """``[B, N, H/2, 2D]`` twice -> ``[B, N, H*D]`` (pair j's vector = heads 2j, 2j+1)."""
        cd = torch.promote_types(a1.dtype, torch.float32)  # fp32 math for bf16, fp64 stays fp64
        lam = (torch.exp((self.lambda_q1 * self.lambda_k1).sum().to(cd))
               - torch.exp((self.lambda_q2 * self.lambda_k2).sum().to(cd)) + self.lambda_init)  # fmt: skip
        o = a1.to(cd) - lam * a2.to(cd)
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + _SUBLN_EPS)
        o = (o.to(a1.dtype) * self.subln.weight) * (1 - self.lambda_init)
        return o.flatten(2)


def to_pair_layout(k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw ``[B, T, KV, D]`` keys/values -> keys with even heads first ``[B, T, KV, D]`` and paired values
    ``[B, T, KV/2, 2D]`` (``[v_{2j} | v_{2j+1}]``): the layout both differential halves read."""
    return torch.cat([k[:, :, 0::2], k[:, :, 1::2]], 2), torch.cat([v[:, :, 0::2], v[:, :, 1::2]], -1)


def diff_attend(q, k, v, q_pos, k_pos, k_valid, window, kind, backend) -> tuple[torch.Tensor, torch.Tensor]:
    """The two halves of differential attention. q ``[B, N, H, D]`` (checkpoint head order); k, v in
    :func:`to_pair_layout` layout. Returns ``attn_1, attn_2`` ``[B, N, H/2, 2D]``."""
    KV2, scale = k.shape[2] // 2, q.shape[-1] ** -0.5
    halves = ((q[:, :, 0::2], k[:, :, :KV2]), (q[:, :, 1::2], k[:, :, KV2:]))
    return tuple(
        attention(qa, ka, v, q_pos, k_pos, k_valid, window=window, scale=scale, kind=kind, backend=backend)
        for qa, ka in halves
    )


class DiffAttention(nn.Module):
    """Differential attention; ``kind`` is "swa" (own Q/K/V, sliding window), "full" (own Q/K/V, causal: the
    shared K/V's producer) or "cross" (Q only, over the shared K/V)."""

    def __init__(self, cfg: Phi4FlashConfig, layer_idx: int, kind: str, slot: int = -1):
        super().__init__()
        self.kind, self.slot, self.window = kind, slot, cfg.sliding_window
        self.H, self.KV, self.D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        n_out = self.H * self.D if kind == "cross" else (self.H + 2 * self.KV) * self.D
        self.Wqkv = nn.Linear(cfg.hidden_size, n_out, bias=True)
        self.out_proj = nn.Linear(self.H * self.D, cfg.hidden_size, bias=True)
        self.inner_cross_attn = DiffCore(self.D, layer_idx)

    def project_q(self, x: torch.Tensor) -> torch.Tensor:
        n = self.H * self.D
        return F.linear(x, self.Wqkv.weight[:n], self.Wqkv.bias[:n]).unflatten(-1, (self.H, self.D))

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values of ``x`` ``[B, T, h]`` in :func:`to_pair_layout` layout."""
        n = self.H * self.D
        kv = F.linear(x, self.Wqkv.weight[n:], self.Wqkv.bias[n:]).unflatten(-1, (2 * self.KV, self.D))
        return to_pair_layout(kv[:, :, : self.KV], kv[:, :, self.KV :])

    def forward(self, x: torch.Tensor, step: Step, ctx: dict) -> torch.Tensor:
        q = self.project_q(x)
        if self.kind == "swa":
            a1, a2 = self._window(q, *self.project_kv(x), step)
        else:
            a1, a2 = shared_attend(q, ctx["kv"], ctx["q_pos"], ctx["tail"], step)
        return self.out_proj(self.inner_cross_attn.combine(a1, a2))

    def _window(self, q, k, v, step: Step):
        C = self.window
        if step.cache is None:
            return banded_attend(q, k, v, step.pos, step.pos, step.valid, C, 0, step.attn_backend)
        w = step.cache.windows[self.slot]
        valid = step.valid if step.valid is not None else torch.ones_like(step.pos, dtype=torch.bool)
        keys, vals = torch.cat([w.k[:, :C], k], 1), torch.cat([w.v[:, :C], v], 1)
        k_pos, k_valid = torch.cat([w.pos[:, :C], step.pos], 1), torch.cat([w.pos[:, :C] >= 0, valid], 1)
        out = banded_attend(q, keys, vals, step.pos, k_pos, k_valid, C, C, step.attn_backend)
        # keep the last C real tokens of each row in the ring; the rest go to the scratch slot C
        last = torch.where(valid, step.pos, -1).max(1, keepdim=True).values
        slot = torch.where(valid & (step.pos > last - C), step.pos % C, C)
        w.k.scatter_(1, slot[..., None, None].expand_as(k), k)
        w.v.scatter_(1, slot[..., None, None].expand_as(v), v)
        w.pos.scatter_(1, slot, step.pos)
        w.pos[:, C] = -1
        return out


def banded_attend(q, k, v, q_pos, k_pos, k_valid, window: int, ring: int, backend: str):
    """Sliding-window differential attention a block of queries at a time, each block over only the keys it can
    see: O(T * window) instead of O(T^2). Keys ``[:ring]`` are a ring (any order, all older than this call's
    tokens, seen by the first blocks); key ``ring + j`` is this call's token j, query j's own key."""
    T, Bq = q.shape[1], max(window, _SWA_BLOCK)
    if T <= Bq:
        return diff_attend(q, k, v, q_pos, k_pos, k_valid, window, "general", backend)
    outs = ([], [])
    for j0 in range(0, T, Bq):
        j1 = min(j0 + Bq, T)
        lo = 0 if j0 < window else ring + j0 - window + 1  # query j0 sees back to token j0 - window + 1
        sl = slice(lo, ring + j1)
        kv = None if k_valid is None else k_valid[:, sl]
        parts = diff_attend(
            q[:, j0:j1], k[:, sl], v[:, sl], q_pos[:, j0:j1], k_pos[:, sl], kv, window, "general", backend
        )
        for acc, part in zip(outs, parts, strict=True):
            acc.append(part)
    return torch.cat(outs[0], 1), torch.cat(outs[1], 1)


def write_shared(c: KVCache, k: torch.Tensor, v: torch.Tensor, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
    """Write this call's shared keys/values at their positions; return the cache's ``[:end]``."""
    if step.start is not None:
        c.k[:, step.start : step.start + k.shape[1]] = k
        c.v[:, step.start : step.start + k.shape[1]] = v
    else:
        rows = torch.arange(k.shape[0], device=k.device)[:, None]
        c.k[rows, step.pos] = k
        c.v[rows, step.pos] = v
    return c.k[:, : step.end], c.v[:, : step.end]


def shared_attend(q, kv, q_pos, q_is_tail: bool, step: Step):
    """Causal differential attention of queries at ``q_pos`` over the shared keys at positions ``[0, Tk)``."""
    k, v = kv
    fused = split_decode_attend(q, k, v, q_pos, q_is_tail, step)
    if fused is not None:
        return fused
    Tk = k.shape[1]
    if step.uniform and q_is_tail:
        return diff_attend(q, k, v, None, None, None, None, "lower_right", step.attn_backend)
    k_pos = torch.arange(Tk, device=k.device).expand(k.shape[0], Tk)
    if step.cache is None:
        k_valid = step.valid
    else:
        k_valid = k_pos < step.cache.lengths[:, None]  # written by earlier calls
        own = torch.zeros_like(k_valid)
        valid = step.valid if step.valid is not None else torch.ones_like(step.pos, dtype=torch.bool)
        own.scatter_(1, step.pos, valid)  # this call's real tokens
        k_valid = k_valid | own
    return diff_attend(q, k, v, q_pos, k_pos, k_valid, None, "general", step.attn_backend)


def split_decode_attend(q, k, v, q_pos, q_is_tail: bool, step: Step):
    """Both differential halves of ONE query per row over a long shared cache (at least
    :data:`yoco_eval.ops.attention.SPLIT_DECODE_MIN` keys) in one split-key Triton launch
    (:func:`~yoco_eval.ops.triton_kernels.diff_decode_attention_splitk`: each pair's values read once for both
    halves), when every key up to the query is valid and the decode backend is ``"triton"``; None otherwise (the
    caller's general path, whose ``"torch"`` backend is this kernel's twin).

    Valid keys: the last prompt token of a uniform call sees all Tk keys; a decode step with a cache and no padding
    sees keys ``[0, q_pos]`` (read on the device: a CUDA graph replays it at every step)."""
    Tk = k.shape[1]
    if q.shape[1] != 1 or Tk < attention_ops.SPLIT_DECODE_MIN or step.decode_backend != "triton":
        return None
    half = q.dtype in (torch.float16, torch.bfloat16)  # fp32 only under the interpreter: tl.dot would run TF32
    if not (triton_kernels.available(q) and (half or (q.dtype == torch.float32 and triton_kernels.interpreting()))
            and k.dtype == v.dtype == q.dtype and q.stride(-1) == k.stride(-1) == v.stride(-1) == 1
            and _pow2(q.shape[-1]) and _pow2(v.shape[-1]) and q.shape[2] % k.shape[2] == 0):  # fmt: skip
        return None
    if step.uniform and q_is_tail:
        kv_len = torch.full((q.shape[0],), Tk, dtype=torch.long, device=q.device)  # the decode steps' dtype
    elif step.cache is not None and step.valid is None:
        kv_len = q_pos[:, -1] + 1
    else:
        return None
    return triton_kernels.diff_decode_attention_splitk(q, k, v, kv_len, q.shape[-1] ** -0.5)


def _pow2(n: int) -> bool:
    return n >= 16 and n & (n - 1) == 0


class DecoderLayer(nn.Module):
    """Pre-norm block with LayerNorms: ``h = x + mixer(LN(x))``; ``out = h + mlp(LN(h))``."""

    def __init__(self, cfg: Phi4FlashConfig, i: int, slot: int):
        super().__init__()
        self.kind = cfg.layer_kind(i)
        self.input_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        if self.kind in ("mamba", "memory"):
            self.attn = Mamba(cfg, slot)
        elif self.kind == "gmu":
            self.attn = GMU(cfg)
        else:
            self.attn = DiffAttention(cfg, i, self.kind, slot)
        self.post_attention_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, step: Step, ctx: dict) -> torch.Tensor:
        y = self.input_layernorm(x)
        if self.kind in ("mamba", "memory"):
            y, mem = self.attn(y, step)
            if self.kind == "memory":
                ctx["memory"] = mem
        elif self.kind == "gmu":
            y = self.attn(y, ctx["memory"])
        else:
            y = self.attn(y, step, ctx)
        h = x + y
        return h + self.mlp(self.post_attention_layernorm(h))


# ---------------------------------------------------------------------------------------------------------------
# The model


def select_positions(t: torch.Tensor, select) -> torch.Tensor:
    """Rows ``[B, T, ...]`` at the selected positions (None = all, int n = last n, ``[B, N]`` = gathered)."""
    if select is None:
        return t
    if isinstance(select, int):
        return t[:, t.shape[1] - select :]
    idx = select.to(t.device)
    return t.gather(1, idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:]))


class Phi4Flash(nn.Module):
    """Phi-4-mini-flash (SambaY) language model (see module docstring).

    Args:
        cfg: a :class:`~yoco_eval.model.phi4flash_config.Phi4FlashConfig`.
        attn_backend: ``"auto"``, ``"sdpa"`` or ``"torch"`` (resolved once per device).
        decode_backend: ``"auto"`` (``"triton"`` on CUDA with triton), ``"triton"``, ``"sdpa"`` or ``"torch"``: only
            ``"triton"`` changes anything, one query per row over a long shared cache (:func:`split_decode_attend`).
        scan_impl: selective scan ``"auto"``, ``"sequential"``, ``"chunk"`` or ``"triton"`` (see
            :mod:`yoco_eval.ops.selective_scan`).
    """

    kv_dtype = "auto"  # the shared K/V is stored in the model dtype (no fp8 storage yet)
    kv_dtypes: tuple[str, ...] = ("auto",)

    def __init__(self, cfg: Phi4FlashConfig, attn_backend: str = "auto", scan_impl: str = "auto",
                 decode_backend: str = "auto"):  # fmt: skip
        super().__init__()
        if scan_impl not in SCAN_IMPLS:
            raise ConfigError(f"unknown scan_impl {scan_impl!r}: choose one of {', '.join(SCAN_IMPLS)}")
        check_backend_names(attn_backend, "auto", decode_backend)
        self.config, self.attn_backend, self.scan_impl = cfg, attn_backend, scan_impl
        self.decode_backend = decode_backend
        self.model = nn.Module()  # checkpoint names: model.embed_tokens, model.layers.{i}, model.final_layernorm
        self.model.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        slots = {"mamba": 0, "swa": 0}
        layers = []
        for i in range(cfg.num_hidden_layers):
            kind = {"memory": "mamba"}.get(cfg.layer_kind(i), cfg.layer_kind(i))
            layers.append(DecoderLayer(cfg, i, slots.get(kind, -1)))
            if kind in slots:
                slots[kind] += 1
        self.model.layers = nn.ModuleList(layers)
        self.model.final_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.embed_tokens

    @property
    def backends(self):
        return resolve_backends(self.attn_backend, "torch", self.embed_tokens.weight.device, self.decode_backend)

    def num_params(self, embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n if embeddings else n - self.embed_tokens.weight.numel()

    def set_kv_dtype(self, kv_dtype: str) -> None:
        """The shared K/V's storage: only ``"auto"`` (the model dtype) for Phi4Flash; anything else is one error."""
        if kv_dtype not in self.kv_dtypes:
            raise ConfigError(f"kv_dtype={kv_dtype!r} is not supported for Phi4Flash: use kv_dtype=auto")

    def setup_cache(self, batch_size: int, max_seq_len: int, device=None, dtype=None) -> Phi4FlashCache:
        """Preallocate the state of ``batch_size`` sequences of up to ``max_seq_len`` tokens."""
        device = device or self.embed_tokens.weight.device
        dtype = dtype or self.embed_tokens.weight.dtype
        return new_cache(self.config, batch_size, max_seq_len, device, dtype)

    def forward(
        self,
        tokens: torch.Tensor,
        cache: Phi4FlashCache | None = None,
        start_pos: int | torch.Tensor = 0,
        valid: torch.Tensor | None = None,
        logits_from: int | torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """Run ``tokens`` ``[B, T]`` (int64).

        Args:
            cache: state from :meth:`setup_cache`, extended in place; None for a stateless full forward.
            start_pos: absolute position of ``tokens[:, 0]``: an int shared by all rows (prefill chunk), or an
                int64 ``[B]`` tensor of per-row positions (decode).
            valid: ``[B, T]`` bool, False on right padding (each row's real tokens come first), or None.
            logits_from: which positions get logits (and the layers after the shared K/V): None = all, int n =
                the last n (0 = none: early-exit prefill), or an int64 ``[B, N]`` index into the T positions.
        Returns:
            logits ``[B, N, vocab]`` in the model dtype, or None when ``logits_from == 0``.
        """
        cfg = self.config
        backends = self.backends
        step = make_step(tokens, start_pos, cache, valid, backends.attn)
        step.scan_impl, step.decode_backend = self.scan_impl, backends.decode
        layers, kv_i = self.model.layers, cfg.kv_layer
        ctx: dict = {}
        x = self.embed_tokens(tokens)
        for layer in layers[:kv_i]:
            x = layer(x, step, ctx)
        # the ONE shared K/V: layer n/2+1's keys/values of every token
        kv_layer = layers[kv_i]
        k, v = kv_layer.attn.project_kv(kv_layer.input_layernorm(x))
        ctx["kv"] = write_shared(cache.kv[0], k, v, step) if cache is not None else (k, v)
        if isinstance(logits_from, int) and logits_from == 0:
            commit_step(step)
            return None  # early exit: nothing after the shared K/V is needed
        x, ctx["memory"] = select_positions(x, logits_from), select_positions(ctx["memory"], logits_from)
        ctx["q_pos"], ctx["tail"] = select_positions(step.pos, logits_from), not isinstance(logits_from, torch.Tensor)
        for layer in layers[kv_i:]:
            x = layer(x, step, ctx)
        commit_step(step)
        return F.linear(self.model.final_layernorm(x), self.embed_tokens.weight)  # tied head
