"""Inference state, preallocated once per batch: what YOCO keeps between prefill chunks and decode steps.

YOCO holds, per sequence:
    * one retention state ``[H, D, Dv]`` per gated-retention layer (constant size, fp32), or
      a window ring buffer of C keys/values per sliding-window layer (constant size);
    * ONE shared key/value cache ``[T_max, Hk, D]`` that every cross-decoder layer reads (K stored after RoPE).
The Transformer baseline holds one such key/value cache per layer, which is what YOCO saves.

Bookkeeping: ``lengths`` ``[B]`` (device) counts the valid tokens written per row; ``seen`` (host int) is the
largest of them, so attention can slice the caches to ``[:seen]`` without a device sync.

A forward call is one :class:`Step`: :func:`make_step` places its tokens, every layer reads and writes the cache
through it, and :func:`commit_step` advances the lengths. This module owns every flag of a cache (``seen``,
``ragged``, ``static``, ``writes``): other modules change them only through :class:`Cache`'s methods. Another
family's cache (:mod:`yoco_eval.model.phi4flash_cache`) shares the Engine-facing ones through :class:`CacheFlags`.

Opt-in fp8 storage (``kv_dtype="fp8"``): keys and values as float8 e4m3 with one fp32 scale per (token, head)
(``x ~= q * scale``, ``scale = max|x| / 448``), about half the bytes. It is lossy (3 mantissa bits): a model
with an fp8 cache is the model whose shared keys/values are rounded that way, which is what its full forward
computes too (:func:`yoco_eval.ops.fp8.fake_quant`), so cached inference still reproduces the full forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from yoco_eval.errors import ConfigError
from yoco_eval.ops import Backends, fp8
from yoco_eval.ops.fp8 import FP8, as_bytes
from yoco_eval.ops.rope import rope_tables

KV_DTYPES = ("auto", "fp8")


def check_kv_dtype(kv_dtype: str) -> str:
    """The one validation of a ``kv_dtype`` value (models and the Engine call it); returns it."""
    if kv_dtype not in KV_DTYPES:
        raise ConfigError(f"unknown kv_dtype {kv_dtype!r}: choose one of {', '.join(KV_DTYPES)}")
    return kv_dtype


@dataclass
class WindowCache:
    """Ring buffer of the last C keys/values of one sliding-window layer. Slot C is a scratch slot for writes
    that must be dropped (keeps the scatter shape static); ``pos`` is -1 for empty slots."""

    k: torch.Tensor  # [B, C + 1, H, D]
    v: torch.Tensor  # [B, C + 1, H, D]
    pos: torch.Tensor  # [B, C + 1] int64

    @property
    def window(self) -> int:
        return self.k.shape[1] - 1


@dataclass
class KVCache:
    """Keys (after RoPE) and values at absolute positions ``[0, T_max)``; with fp8 storage, their scales."""

    k: torch.Tensor  # [B, T_max, Hk, D]
    v: torch.Tensor  # [B, T_max, Hk, D]; fp8: a token-contiguous view (fp8.value_zeros)
    k_scale: torch.Tensor | None = None  # [B, T_max, Hk] fp32 (fp8 storage only), stored head-major: see new_kv
    v_scale: torch.Tensor | None = None

    @property
    def quantized(self) -> bool:
        return self.k_scale is not None

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.k, self.v, self.k_scale, self.v_scale) if t is not None]

    def nbytes(self) -> int:
        return _nbytes(self.tensors())

    def select_rows(self, rows: torch.Tensor) -> KVCache:
        if not self.quantized:
            return KVCache(self.k[rows].clone(), self.v[rows].clone())
        # fp8 rows are gathered as bytes; values and scales keep their layouts
        k, v = as_bytes(self.k)[rows].view(FP8), fp8.value_rows(self.v, rows)
        ks, vs = (t.transpose(1, 2)[rows].transpose(1, 2) for t in (self.k_scale, self.v_scale))
        return KVCache(k, v, ks, vs)

    def put_rows(self, idx: torch.Tensor, src: KVCache) -> None:
        """Copy ``src``'s rows into rows ``idx`` (same layout; fp8 as bytes)."""
        for x, y in zip(self.tensors(), src.tensors(), strict=True):
            as_bytes(x)[idx] = as_bytes(y)

    def write(self, k: torch.Tensor, v: torch.Tensor, step: Step):
        """Write this call's keys/values ``[B, T, Hk, D]`` at their positions; return the cache's keys/values
        ``[:step.end]`` (for an fp8 cache, as :class:`~yoco_eval.ops.fp8.QuantKV` reads)."""
        if self.quantized:
            (kq, ks), (vq, vs) = fp8.quantize(k), fp8.quantize(v)
            srcs = (kq, vq, ks, vs)
        else:
            srcs = (k, v)
        parts = [(as_bytes(dst), as_bytes(src)) for dst, src in zip(self.tensors(), srcs, strict=True)]
        if step.start is not None:
            for dst, src in parts:
                dst[:, step.start : step.start + k.shape[1]] = src
        else:
            rows = torch.arange(k.shape[0], device=k.device)[:, None]
            for dst, src in parts:
                dst[rows, step.pos] = src
        e = step.end
        if self.quantized:
            return fp8.QuantKV(self.k[:, :e], self.k_scale[:, :e]), fp8.QuantKV(self.v[:, :e], self.v_scale[:, :e])
        return self.k[:, :e], self.v[:, :e]


class CacheFlags:
    """The bookkeeping every model's cache shares (:class:`Cache`, and the caches of other families such as
    :class:`~yoco_eval.model.phi4flash_cache.Phi4FlashCache`): the methods through which the Engine, the CUDA-graph
    decoder and :class:`~yoco_eval.generate.PrefixCache` change ``writes``, ``static`` and ``seen``. A subclass is
    a dataclass with the fields ``batch_size``, ``lengths``, ``seen``, ``ragged``, ``static`` and ``writes``."""

    def note_prefill(self) -> None:
        """Count one prefill call into this cache (:class:`~yoco_eval.generate.PrefixCache` compares the count to
        tell whether someone else wrote into the cache since it saved its states)."""
        self.writes += 1

    @contextmanager
    def static_shapes(self) -> Iterator[CacheFlags]:
        """Within the block, decode steps attend over the whole preallocated buffer under a length mask (static
        shapes, as a CUDA graph capture needs); the host-side ``seen`` is left alone."""
        self.static = True
        try:
            yield self
        finally:
            self.static = False

    def advance(self, n: int = 1) -> None:
        """Every row has taken ``n`` more tokens through a replayed CUDA graph (whose commit updated ``lengths`` on
        the device, but cannot update the host-side ``seen``)."""
        self.seen += n

    def _put_lengths(self, rows: list[int], src: CacheFlags) -> torch.Tensor:
        """The bookkeeping half of ``put_rows``: copy ``src``'s lengths into ``rows``; returns the row index."""
        idx = torch.tensor(rows, device=self.lengths.device)
        self.lengths[idx] = src.lengths
        self.seen = max(self.seen, src.seen)
        self.ragged = True if len(rows) != self.batch_size else src.ragged
        return idx


@dataclass
class Cache(CacheFlags):
    """State of a batch of sequences. ``retention``/``windows`` are YOCO's self-decoder states (one list is
    empty); ``kv`` holds ONE shared cache for YOCO, or one per layer for the Transformer."""

    batch_size: int
    max_seq_len: int
    lengths: torch.Tensor  # [B] int64, valid tokens written per row
    retention: list[torch.Tensor] = field(default_factory=list)  # [B, H, D, Dv] fp32 per gRet layer
    windows: list[WindowCache] = field(default_factory=list)
    kv: list[KVCache] = field(default_factory=list)
    seen: int = 0  # host-side max(lengths)
    ragged: bool = False  # rows hold different numbers of tokens (some call had padding)
    static: bool = False  # decode under CUDA-graph capture/replay: attend over the whole buffer
    writes: int = 0  # prefill calls into this cache so far (lets a saved state tell whether its K/V still holds)

    def nbytes(self) -> int:
        return _nbytes(_state_tensors(self.retention, self.windows)) + sum(c.nbytes() for c in self.kv)

    def put_rows(self, rows: list[int], src: Cache) -> None:
        """Copy every row of ``src`` into rows ``rows`` of this cache (same layout); the rows not written keep
        their own lengths, so the cache becomes ragged unless all of its rows were written."""
        idx = self._put_lengths(rows, src)
        for a, b in zip(self.retention, src.retention, strict=True):
            a[idx] = b
        for a, b in zip(self.windows, src.windows, strict=True):
            a.k[idx], a.v[idx], a.pos[idx] = b.k, b.v, b.pos
        for a, b in zip(self.kv, src.kv, strict=True):
            a.put_rows(idx, b)

    def reset(self) -> None:
        """Forget all sequences (keeps the memory)."""
        self.lengths.zero_()
        self.seen = 0
        self.ragged = False
        for s in self.retention:
            s.zero_()
        for w in self.windows:
            w.pos.fill_(-1)

    def save_state(self) -> CacheState:
        """Copy the constant-size part (self-decoder states, lengths). With :meth:`load_state` it rewinds the cache
        to this point, provided the K/V before it is not overwritten in between: K/V is append-only and is not
        copied, which is what makes a snapshot cheap (about 20 MB for YOCO-3B at any context length)."""
        return CacheState(
            lengths=self.lengths.clone(), seen=self.seen, ragged=self.ragged,
            retention=[s.clone() for s in self.retention],
            windows=[WindowCache(w.k.clone(), w.v.clone(), w.pos.clone()) for w in self.windows],
        )  # fmt: skip

    def load_state(self, state: CacheState) -> None:
        """Rewind to a :meth:`save_state` point, in place (tensors captured by a CUDA graph stay valid)."""
        self.lengths.copy_(state.lengths)
        self.seen, self.ragged = state.seen, state.ragged
        for dst, src in zip(self.retention, state.retention, strict=True):
            dst.copy_(src)
        for dst, src in zip(self.windows, state.windows, strict=True):
            dst.k.copy_(src.k)
            dst.v.copy_(src.v)
            dst.pos.copy_(src.pos)

    def select_rows(self, rows: torch.Tensor) -> Cache:
        """A new cache holding copies of the given rows (e.g. to fork a shared prefix)."""
        return Cache(
            batch_size=len(rows), max_seq_len=self.max_seq_len, lengths=self.lengths[rows].clone(),
            retention=[s[rows].clone() for s in self.retention],
            windows=[WindowCache(w.k[rows].clone(), w.v[rows].clone(), w.pos[rows].clone()) for w in self.windows],
            kv=[c.select_rows(rows) for c in self.kv], seen=self.seen,
            ragged=self.ragged,
        )  # fmt: skip


@dataclass
class CacheState:
    """A :class:`Cache`'s constant-size state at one point of its sequences (see :meth:`Cache.save_state`)."""

    lengths: torch.Tensor
    seen: int
    ragged: bool
    retention: list[torch.Tensor]
    windows: list[WindowCache]

    def nbytes(self) -> int:
        return _nbytes(_state_tensors(self.retention, self.windows))


def _state_tensors(retention: list[torch.Tensor], windows: list[WindowCache]) -> list[torch.Tensor]:
    """The constant-size part of a cache: what :class:`CacheState` copies."""
    return [*retention, *(t for w in windows for t in (w.k, w.v, w.pos))]


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def new_kv(batch: int, max_seq_len: int, n_kv_heads: int, head_dim: int, device, dtype, kv_dtype: str = "auto"
           ) -> KVCache:  # fmt: skip
    """Zeroed K/V for ``max_seq_len`` positions; ``kv_dtype`` "auto" stores ``dtype``, "fp8" e4m3 + scales."""
    shape = (batch, max_seq_len, n_kv_heads, head_dim)
    if check_kv_dtype(kv_dtype) == "fp8":
        # scales: a [B, T, Hk] view of [B, Hk, T] storage, so decode reads each head's scales contiguously
        scales = [torch.ones(batch, n_kv_heads, max_seq_len, device=device).transpose(1, 2) for _ in range(2)]
        v = fp8.value_zeros(batch, max_seq_len, n_kv_heads, head_dim, device)  # token-contiguous: see fp8
        return KVCache(torch.zeros(shape, device=device, dtype=FP8), v, *scales)
    return KVCache(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))


def new_window(batch: int, window: int, n_heads: int, head_dim: int, device, dtype) -> WindowCache:
    shape = (batch, window + 1, n_heads, head_dim)
    return WindowCache(
        torch.zeros(shape, device=device, dtype=dtype),
        torch.zeros(shape, device=device, dtype=dtype),
        torch.full((batch, window + 1), -1, dtype=torch.long, device=device),
    )


# ---------------------------------------------------------------------------------------------------------------
# The step: where the tokens of one forward call sit


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
    kv_lens: dict = field(default_factory=dict)  # decode key counts, once per call (not once per layer)

    def kv_len(self, q_pos: torch.Tensor) -> torch.Tensor:
        """``[B]``: the keys a decode query at ``q_pos`` ``[B, 1]`` sees (its own included), made once per call."""
        key = id(q_pos)  # the cross-decoder passes one q_pos tensor to all its layers
        if key not in self.kv_lens:
            self.kv_lens[key] = (q_pos, q_pos[:, -1] + 1)  # q_pos kept alive so its id stays unique
        return self.kv_lens[key][1]

    def rope_tables(self, freqs: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (freqs.numel(), dtype)  # one model uses one theta and one style, so the head dim decides
        if key not in self.rope:
            self.rope[key] = rope_tables(self.pos, freqs, dtype)
        return self.rope[key]

    def key_valid(self, n_keys: int) -> torch.Tensor | None:
        """``[B, n_keys]`` bool: the keys (cache positions ``[0, n_keys)``) that this call's tokens may see, before
        causality: what earlier calls wrote plus this call's own real tokens. None when all are valid."""
        if self.cache is None:
            return self.valid
        k_pos = torch.arange(n_keys, device=self.pos.device).expand(self.pos.shape[0], n_keys)
        seen = k_pos < self.cache.lengths[:, None]
        if self.valid is None:
            return seen | (k_pos <= self.pos[:, -1:])
        own = torch.zeros_like(seen)  # this call's own tokens: only the real ones
        if self.start is not None:
            own[:, self.start : self.start + self.valid.shape[1]] = self.valid
        else:
            own.scatter_(1, self.pos, self.valid)
        return seen | own


def make_step(tokens: torch.Tensor, start_pos, cache: Cache | None, valid: torch.Tensor | None,
              backends: Backends) -> Step:  # fmt: skip
    """Place ``tokens`` ``[B, T]`` starting at ``start_pos`` (an int shared by all rows, or a ``[B]`` tensor of
    per-row positions) in ``cache`` (None: a stateless full forward). See the model's ``forward``."""
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
