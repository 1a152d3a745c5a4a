"""Streaming per-token NLL over one long document, in chunks, with flat memory in the document length.

The document runs through the model one chunk at a time against a preallocated cache (``model.setup_cache``):
each chunk's logits ``[1, C, vocab]`` are turned into per-token NLL straight away (log-softmax in fp32, a block of
rows at a time) and dropped, so no ``[T, vocab]`` tensor ever exists. What is kept per token is one fp32 NLL
(4 bytes a token); everything else is bounded by the chunk size, apart from the cache itself and whatever the
attention kernel needs to read it.

Positions: the scored tokens are the document's tokens ``d[0..T)``. When the tokenizer has a BOS id the sequence fed
to the model is ``[BOS] + d`` and every document token is predicted (``nll[i] = -log p(d[i] | BOS, d[:i])``);
without one, ``d[0]`` is context only and ``nll`` has ``T - 1`` entries, starting at ``d[1]``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from yoco_eval.errors import ConfigError

_LSE_ROWS = 1024  # rows of logits turned into log-probabilities at a time (bounds the fp32 copy to rows x vocab)


@dataclass
class StreamResult:
    """The outcome of :func:`stream_nll`.

    nll: ``[N]`` fp32 on the CPU, ``nll[i]`` the negative log-likelihood (nats) of the ``i``-th scored token.
    seconds: wall-clock of the forward passes (device-synchronized). peak_mem_bytes: CUDA peak allocated memory
    during the document (None on the CPU); base_mem_bytes: CUDA memory allocated before the cache was made (the
    model's weights and whatever else was alive), so ``peak - base - cache`` is the working memory of the chunks.
    cache_bytes: the cache's preallocated size.
    """

    nll: torch.Tensor
    seconds: float
    peak_mem_bytes: int | None
    cache_bytes: int | None
    base_mem_bytes: int | None = None

    @property
    def tokens_per_s(self) -> float | None:
        return self.nll.numel() / self.seconds if self.seconds > 0 else None


def chunk_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token NLL of ``targets`` ``[N]`` (int64) under ``logits`` ``[N, vocab]`` (any float dtype).

    Computed in fp32, ``_LSE_ROWS`` rows at a time: ``logsumexp(row) - row[target]``. Returns ``[N]`` fp32."""
    out = torch.empty(targets.shape[0], dtype=torch.float32, device=logits.device)
    for s in range(0, targets.shape[0], _LSE_ROWS):
        rows = logits[s : s + _LSE_ROWS].float()
        tgt = targets[s : s + _LSE_ROWS]
        out[s : s + _LSE_ROWS] = torch.logsumexp(rows, dim=-1) - rows.gather(1, tgt[:, None])[:, 0]
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def stream_nll(
    model: torch.nn.Module,
    tokens: Sequence[int] | torch.Tensor,
    *,
    chunk: int = 2048,
    bos_id: int | None = None,
    on_chunk=None,
) -> StreamResult:
    """Per-token NLL of a document, streamed through ``model`` in chunks of ``chunk`` tokens.

    Args:
        model: anything with the engine's contract: ``setup_cache(batch, max_seq_len)`` and
            ``forward(tokens [1, C], cache=, start_pos=) -> logits [1, C, vocab]`` (YOCO, the Transformer).
        tokens: the document's token ids, ``T`` of them (a list or an int64 ``[T]`` tensor).
        chunk: tokens per forward call (the last chunk may be shorter); bounds the logits to ``chunk x vocab``.
        bos_id: prepended when not None, so that every document token is scored (see module docstring).
        on_chunk: optional ``callback(done_tokens, total_tokens)`` after every chunk (progress).
    Returns:
        :class:`StreamResult` with ``nll`` of length ``T`` (with BOS) or ``T - 1`` (without).
    """
    if chunk < 1:
        raise ConfigError(f"chunk={chunk}: the chunk size must be a positive number of tokens")
    device = model.embed_tokens.weight.device if hasattr(model, "embed_tokens") else next(model.parameters()).device
    ids = torch.as_tensor(tokens, dtype=torch.long).flatten()
    if bos_id is not None:
        ids = torch.cat([torch.tensor([bos_id], dtype=torch.long), ids])
    total = ids.numel()
    if total < 2:
        raise ConfigError("the document is too short to score: it needs at least two tokens (with BOS, one)")
    ids = ids.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
    cache = model.setup_cache(1, total)
    cache_bytes = cache.nbytes() if hasattr(cache, "nbytes") else None
    nll = torch.empty(total - 1, dtype=torch.float32)  # host copy: 4 bytes a scored token
    _sync(device)
    t0 = time.perf_counter()
    for s in range(0, total, chunk):
        e = min(s + chunk, total)
        logits = model(ids[None, s:e], cache=cache, start_pos=s)[0]  # [C, vocab]
        n = min(e, total - 1) - s  # the chunk's last position predicts the next chunk's first token
        if n > 0:
            nll[s : s + n] = chunk_nll(logits[:n], ids[s + 1 : s + 1 + n]).cpu()
        del logits
        if on_chunk is not None:
            on_chunk(e, total)
    _sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return StreamResult(nll, seconds, peak, cache_bytes, base)


@torch.inference_mode()
def full_nll(model: torch.nn.Module, tokens: Sequence[int] | torch.Tensor, bos_id: int | None = None,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:  # fmt: skip
    """Reference: one stateless full forward, log-softmax over all ``[T, vocab]`` logits in ``dtype``. Returns the
    same ``[N]`` positions as :func:`stream_nll` (as ``dtype``). For tests and short documents only."""
    ids = torch.as_tensor(tokens, dtype=torch.long).flatten()
    if bos_id is not None:
        ids = torch.cat([torch.tensor([bos_id], dtype=torch.long), ids])
    device = next(model.parameters()).device
    ids = ids.to(device)
    logits = model(ids[None, :-1])[0].to(dtype)
    return -torch.log_softmax(logits, dim=-1).gather(1, ids[1:, None])[:, 0]


# --- summaries of one document's per-token NLL --------------------------------------------------------------------


def log_edges(n: int) -> list[int]:
    """Bucket edges ``0, 1, 2, 4, ..., 2^k, n``: one bucket per octave of position (the last one cut at ``n``)."""
    edges = [0]
    p = 1
    while p < n:
        edges.append(p)
        p *= 2
    return [*edges, n]


def linear_edges(n: int, width: int) -> list[int]:
    """Bucket edges ``0, w, 2w, ..., n`` (the last bucket may be shorter)."""
    if width < 1:
        raise ConfigError(f"linear bucket width {width}: use a positive number of tokens")
    return [*range(0, n, width), n]


def buckets(nll: torch.Tensor, edges: Sequence[int]) -> list[dict]:
    """Mean NLL of the positions in each ``[lo, hi)`` of consecutive ``edges`` (fp64 sums)."""
    cs = torch.cat([torch.zeros(1, dtype=torch.float64), nll.double().cumsum(0)])
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi > lo:
            out.append({"lo": lo, "hi": hi, "n": hi - lo, "nll": float((cs[hi] - cs[lo]) / (hi - lo))})
    return out


def cumulative_points(n: int, per_octave: int = 4) -> list[int]:
    """Positions (token counts) at which the cumulative average is reported: ``per_octave`` a doubling, and ``n``."""
    pts = {n}
    k = 0
    while True:
        p = round(2 ** (k / per_octave))
        if p >= n:
            break
        pts.add(p)
        k += 1
    return sorted(pts)


def cumulative(nll: torch.Tensor, points: Sequence[int]) -> list[list[float]]:
    """``[[p, mean(nll[:p])], ...]``: the cumulative average NLL after ``p`` scored tokens (the paper's Figure 6)."""
    cs = nll.double().cumsum(0)
    return [[int(p), float(cs[p - 1] / p)] for p in points if 0 < p <= nll.numel()]


def summarize(nll: torch.Tensor, n_bytes: int, linear_width: int | None = None, per_octave: int = 4) -> dict:
    """Everything recorded for one document: mean NLL, bits per byte, log and linear buckets, cumulative curve.

    ``n_bytes`` is the UTF-8 size of the scored text; bits per byte = total NLL / ln 2 / n_bytes."""
    n = nll.numel()
    total = float(nll.double().sum())
    width = linear_width or max(1, math.ceil(n / 16))
    return {
        "n_scored": n,
        "nll_mean": total / n,
        "nll_sum": total,
        "bits_per_byte": total / math.log(2) / n_bytes if n_bytes else None,
        "log_buckets": buckets(nll, log_edges(n)),
        "linear_width": width,
        "linear_buckets": buckets(nll, linear_edges(n, width)),
        "cumulative": cumulative(nll, cumulative_points(n, per_octave)),
    }
