"""Softmax attention for YOCO's sliding-window self-decoder, its cross-decoder, and the Transformer baseline.

One entry point, :func:`attention`, with the position-mask contract of :func:`yoco_eval.ops.naive.naive_attention`:
query ``i`` sees key ``j`` iff ``k_valid[j]``, ``k_pos[j] <= q_pos[i]`` and (window C) ``q_pos[i] - k_pos[j] < C``.
Grouped-query heads: query head ``h`` reads key/value head ``h // (H / Hk)``.

The caller states the mask's shape with ``kind`` so that fast paths need no mask tensor:
    ``"full"``         every query sees every key (e.g. one decode query over exactly the keys written so far)
    ``"lower_right"``  queries are the last Tq of Tk contiguous positions, all keys valid, no window
                       (bottom-right-aligned causal: chunked prefill and continuation scoring)
    ``"general"``      anything else: the mask is built from positions (in query blocks, to bound memory)

Backends: ``torch`` (plain PyTorch, fp32 math, the fallback) and ``sdpa`` (``F.scaled_dot_product_attention``;
flash / memory-efficient kernels on GPU). One query per row over a long cache goes to :func:`decode_attention`
(split along the keys) with its own backend choice (``triton``, ``sdpa`` or ``torch``).

:func:`causal_attention` is the router the models call: it picks split-key decode, the mask-free lower-right
causal kernel or the general masked path from what the step says about the tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from yoco_eval.ops import triton_kernels
from yoco_eval.ops.fp8 import QuantKV, dense

try:
    from torch.nn.attention.bias import causal_lower_right
except ImportError:  # pragma: no cover
    causal_lower_right = None

_Q_BLOCK = 2048  # queries per block on the general path: bounds the [Tq, Tk] mask
SPLIT_DECODE_MIN = 8192  # keys from which one query per row is attended with the keys split across the GPU


def _mask(q_pos, k_pos, k_valid, window):
    m = k_pos[:, None, :] <= q_pos[:, :, None]
    if window is not None:
        m = m & (q_pos[:, :, None] - k_pos[:, None, :] < window)
    if k_valid is not None:
        m = m & k_valid[:, None, :]
    return m  # [B, Tq, Tk]


def _torch_attn(q, k, v, mask, scale):
    H, Hk = q.shape[2], k.shape[2]
    kk = k.float().repeat_interleave(H // Hk, dim=2)
    vv = v.float().repeat_interleave(H // Hk, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q.float(), kk) * scale
    if mask is not None:
        s = s.masked_fill(~mask[:, None], float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return torch.einsum("bhqk,bkhe->bqhe", p, vv).to(q.dtype)


def _sdpa(q, k, v, mask, scale, lower_right=False):
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
    gqa = q.shape[2] != k.shape[2]
    if lower_right:
        bias = causal_lower_right(q.shape[1], k.shape[1])
        if gqa:  # the CausalBias path has no GQA switch: one key/value head at a time, expanded to its group
            G, Hk = q.shape[2] // k.shape[2], k.shape[2]
            outs = [
                F.scaled_dot_product_attention(qt[:, j * G : (j + 1) * G], kt[:, j : j + 1].expand(-1, G, -1, -1),
                                               vt[:, j : j + 1].expand(-1, G, -1, -1), attn_mask=bias, scale=scale)
                for j in range(Hk)
            ]  # fmt: skip
            o = torch.cat(outs, 1)
        else:
            o = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=bias, scale=scale)
    else:
        m = None if mask is None else mask[:, None]
        o = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=m, scale=scale, enable_gqa=gqa)
    return o.transpose(1, 2)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor | None = None,
    k_pos: torch.Tensor | None = None,
    k_valid: torch.Tensor | None = None,
    window: int | None = None,
    scale: float | None = None,
    kind: str = "general",
    backend: str = "sdpa",
) -> torch.Tensor:
    """Masked softmax attention.

    Args:
        q: ``[B, Tq, H, D]``; k: ``[B, Tk, Hk, D]``; v: ``[B, Tk, Hk, Dv]`` (same dtype).
        q_pos, k_pos: ``[B, Tq]`` / ``[B, Tk]`` int64 absolute positions (needed for ``kind="general"``).
        k_valid: ``[B, Tk]`` bool or None. window: key count C of a sliding window, or None.
        scale: softmax scale, default ``D**-0.5``.
        kind: ``"full"``, ``"lower_right"`` or ``"general"`` (see module docstring).
        backend: ``"sdpa"`` or ``"torch"``.
    Returns:
        ``[B, Tq, H, Dv]`` in q's dtype. Queries that see no key return zeros.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    Tq = q.shape[1]
    if kind == "lower_right" and Tq == 1:  # one bottom-right query sees every key
        kind = "full"
    if backend == "torch":
        if kind == "full":
            return _torch_attn(q, k, v, None, scale)
        if kind == "lower_right":
            Tk = k.shape[1]
            q_pos = torch.arange(Tk - Tq, Tk, device=q.device).expand(q.shape[0], Tq)
            k_pos = torch.arange(Tk, device=q.device).expand(q.shape[0], Tk)
        outs = []
        for s in range(0, Tq, _Q_BLOCK):
            m = _mask(q_pos[:, s : s + _Q_BLOCK], k_pos, k_valid, window)
            outs.append(_torch_attn(q[:, s : s + _Q_BLOCK], k, v, m, scale))
        return torch.cat(outs, 1)
    if kind == "full":
        return _sdpa(q, k, v, None, scale)
    if kind == "lower_right":
        if Tq == k.shape[1]:  # square: plain causal
            qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            o = F.scaled_dot_product_attention(
                qt, kt, vt, is_causal=True, scale=scale, enable_gqa=kt.shape[1] != qt.shape[1]
            )
            return o.transpose(1, 2)
        return _sdpa(q, k, v, None, scale, lower_right=True)
    outs = []
    for s in range(0, Tq, _Q_BLOCK):
        qp = q_pos[:, s : s + _Q_BLOCK]
        m = _mask(qp, k_pos, k_valid, window)
        o = _sdpa(q[:, s : s + _Q_BLOCK], k, v, m, scale)
        # rows with no visible key: SDPA gives NaN or garbage; define them as zero like the reference
        o = o.masked_fill(~m.any(-1)[..., None, None], 0.0)
        outs.append(o)
    return torch.cat(outs, 1)


# --- decode: one query per row over a long cache, split along the keys (flash-decoding) -------------------------


def _split_attn_torch(q, k, v, bias, scale):
    """Reference per-split attention with log-sum-exp (fp32). q ``[N, Hk, L, D]``, k/v ``[N, Hk, S, D]``,
    bias ``[N, 1, 1, S]`` (0 / -inf) → out ``[N, Hk, L, D]``, lse ``[N, Hk, L]``."""
    s = torch.einsum("nhld,nhsd->nhls", q.float(), k.float()) * scale + bias.float()
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None]).nan_to_num(0.0)
    return torch.einsum("nhls,nhsd->nhld", p, v.float()), lse


def _split_attn_cuda(q, k, v, bias, scale):
    """The memory-efficient SDPA kernel on each split; it returns the log-sum-exp we need to merge splits."""
    L = q.shape[2]
    out, lse, _, _ = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, bias.expand(-1, q.shape[1], L, -1), True, 0.0, False, scale=scale
    )
    return out.float(), lse[..., :L]


def _even_splits(Tk: int) -> int | None:
    """The largest split count <= 64 that cuts Tk into equal parts of a multiple of 64 keys (no padding)."""
    for s in range(64, 7, -1):
        if Tk % (64 * s) == 0:
            return s
    return None


def _triton_decode_ok(q, k, v) -> bool:
    D = q.shape[-1]
    return (triton_kernels.available(q) and D in (64, 128, 256) and q.shape[2] % k.shape[2] == 0
            and k.stride(-1) == 1 and k.stride(-2) == D
            and ((v.stride(-1) == 1 and v.stride(-2) == D) or v.stride(1) == 1))  # fmt: skip


def decode_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_valid: torch.Tensor | None,
    scale: float | None = None,
    splits: int | None = None,
    backend: str = "triton",
    kv_len: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of a few queries that each see EVERY valid key (decode), split along the keys.

    The keys are cut into ``splits`` parts attended in parallel (each with its log-sum-exp), then merged exactly:
    ``o = sum_s exp(lse_s - lse) o_s``. Grouped-query heads are folded into the query length, so each key/value
    head is read once for its whole group.

    Args:
        q: ``[B, Tq, H, D]`` (small Tq); k, v: ``[B, Tk, Hk, D]``, or fp8 cache reads (:class:`QuantKV`: the Triton
            kernel reads them as stored and folds the scales in; every other path dequantizes);
            k_valid: ``[B, Tk]`` bool or None.
        kv_len: ``[B]`` device ints, instead of ``k_valid``: the valid keys are the first ``kv_len[b]``.
        backend: ``"triton"``: with one query per row, no ``k_valid`` and a head dim of 64/128/256, our
            flash-decoding kernel (:func:`yoco_eval.ops.triton_kernels.decode_attention_splitk`), which reads only
            the first ``kv_len`` keys; other layouts take the ``"sdpa"`` path. ``"sdpa"``: SDPA's memory-efficient
            kernel on each split (CUDA; plain PyTorch on the CPU). ``"torch"``: plain PyTorch.
    Returns:
        ``[B, Tq, H, D]`` in q's dtype (zeros for a row with no valid key).
    """
    B, Tq, H, D = q.shape
    Tk, Hk = k.shape[1], k.shape[2]
    G = H // Hk
    scale = D**-0.5 if scale is None else scale
    quant = isinstance(k, QuantKV)
    kd, vd = (k.data, v.data) if quant else (k, v)
    if backend == "triton" and Tq == 1 and k_valid is None and _triton_decode_ok(q, kd, vd):
        if kv_len is None:
            # int64 like the decode steps' positions: a second dtype would compile the kernel a second time
            kv_len = torch.full((B,), Tk, dtype=torch.long, device=q.device)
        scales = {"k_scale": k.scale, "v_scale": v.scale} if quant else {}
        return triton_kernels.decode_attention_splitk(q, kd, vd, kv_len, scale, **scales)
    k, v = dense(k, q.dtype), dense(v, q.dtype)
    if k_valid is None and kv_len is not None:
        k_valid = torch.arange(Tk, device=q.device)[None] < kv_len[:, None]
    if splits is None:
        splits = _even_splits(Tk) or max(1, min(64, Tk // 1024))
    Ts = -(-Tk // splits)
    Ts = -(-Ts // 64) * 64  # split length, a multiple of 64 (kernel alignment)
    pad = splits * Ts - Tk
    valid = torch.ones(B, Tk, dtype=torch.bool, device=q.device) if k_valid is None else k_valid
    if pad:  # only when Tk has no even split: costs a copy of the keys/values
        k = F.pad(k, (0, 0, 0, 0, 0, pad))
        v = F.pad(v, (0, 0, 0, 0, 0, pad))
        valid = F.pad(valid, (0, pad), value=False)
    qg = q.view(B, Tq, Hk, G, D).permute(0, 2, 1, 3, 4).reshape(B, Hk, Tq * G, D)
    qs = qg[:, None].expand(B, splits, Hk, Tq * G, D).reshape(B * splits, Hk, Tq * G, D)
    # [B, Tk, Hk, D] -> [B*S, Hk, Ts, D] as a strided VIEW (no copy of the cache)
    ks = k.reshape(B * splits, Ts, Hk, D).transpose(1, 2)
    vs = v.reshape(B * splits, Ts, Hk, D).transpose(1, 2)
    bias = torch.zeros(B * splits, 1, 1, Ts, dtype=q.dtype, device=q.device)
    bias = bias.masked_fill(~valid.view(B * splits, 1, 1, Ts), float("-inf"))
    fn = _split_attn_cuda if (backend != "torch" and q.is_cuda) else _split_attn_torch
    out, lse = fn(qs, ks, vs, bias, scale)  # [B*S, Hk, L, D], [B*S, Hk, L]
    out, lse = out.view(B, splits, Hk, Tq * G, D), lse.view(B, splits, Hk, Tq * G)
    m = lse.max(1, keepdim=True).values
    w = torch.exp(lse - m).nan_to_num(0.0)  # [B, S, Hk, L]
    o = (w[..., None] * out.nan_to_num(0.0)).sum(1) / w.sum(1)[..., None].clamp_min(1e-30)
    return o.view(B, Hk, Tq, G, D).permute(0, 2, 1, 3, 4).reshape(B, Tq, H, D).to(q.dtype)


# --- routing: which of the above a model's attention over its cache runs -----------------------------------------


def causal_attention(q: torch.Tensor, k, v, q_pos: torch.Tensor, step, q_is_tail: bool) -> torch.Tensor:
    """Causal attention of queries at ``q_pos`` over keys at positions ``[0, k.shape[1])``, routed to the cheapest
    kernel that computes it.

    Args:
        q: ``[B, Tq, H, D]``; k, v: ``[B, Tk, Hk, D]`` or fp8 cache reads (:class:`QuantKV`: split-key decode reads
            them as stored, other paths attend over a dequantized copy).
        q_pos: ``[B, Tq]`` int64 positions of the queries.
        step: the call's :class:`yoco_eval.model.cache.Step` (``uniform``, ``cache``, ``valid``, ``pos``,
            ``backends`` and ``key_valid(Tk)``, the ``[B, Tk]`` mask of the keys these queries may see).
        q_is_tail: the queries are the last positions of every row, in order (lets kernels skip the mask).
    Returns:
        ``[B, Tq, H, D]`` in q's dtype.
    """
    Tk, b = k.shape[1], step.backends
    if step.uniform and q_is_tail:
        if q.shape[1] == 1 and Tk >= SPLIT_DECODE_MIN:  # e.g. the last prompt token after prefill
            return decode_attention(q, k, v, None, backend=b.decode)
        return attention(q, dense(k, q.dtype), dense(v, q.dtype), kind="lower_right", backend=b.attn)
    if step.cache is not None and q.shape[1] == 1 and step.valid is None and Tk >= SPLIT_DECODE_MIN:
        # decode: every query sees every key written so far (its own included): split the keys across the GPU
        return decode_attention(q, k, v, None, backend=b.decode, kv_len=step.kv_len(q_pos))
    k, v = dense(k, q.dtype), dense(v, q.dtype)
    k_pos = torch.arange(Tk, device=k.device).expand(k.shape[0], Tk)
    return attention(q, k, v, q_pos, k_pos, step.key_valid(Tk), kind="general", backend=b.attn)
