"""Inference state, preallocated once per batch: what YOCO keeps between prefill chunks and decode steps.

YOCO holds, per sequence:
    * one retention state ``[H, D, Dv]`` per gated-retention layer (constant size, fp32), or
      a window ring buffer of C keys/values per sliding-window layer (constant size);
    * ONE shared key/value cache ``[T_max, Hk, D]`` that every cross-decoder layer reads (K stored after RoPE).
The Transformer baseline holds one such key/value cache per layer, which is what YOCO saves.

Bookkeeping: ``lengths`` ``[B]`` (device) counts the valid tokens written per row; ``seen`` (host int) is the
largest of them, so attention can slice the caches to ``[:seen]`` without a device sync.

Opt-in fp8 storage (``kv_dtype="fp8"``): keys and values as float8 e4m3 with one fp32 scale per (token, head)
(``x ~= q * scale``, ``scale = max|x| / 448``), about half the bytes. It is lossy (3 mantissa bits): a model
with an fp8 cache is the model whose shared keys/values are rounded that way, which is what its full forward
computes too (:func:`yoco_eval.ops.fp8.fake_quant`), so cached inference still reproduces the full forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from yoco_eval.errors import ConfigError
from yoco_eval.ops.fp8 import FP8, as_bytes

KV_DTYPES = ("auto", "fp8")


def check_kv_dtype(kv_dtype: str) -> str:
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
    v: torch.Tensor  # [B, T_max, Hk, D]
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
        # fp8 rows are gathered as bytes; scales keep their head-major layout
        k, v = (as_bytes(t)[rows].view(FP8) for t in (self.k, self.v))
        ks, vs = (t.transpose(1, 2)[rows].transpose(1, 2) for t in (self.k_scale, self.v_scale))
        return KVCache(k, v, ks, vs)

    def put_rows(self, idx: torch.Tensor, src: KVCache) -> None:
        """Copy ``src``'s rows into rows ``idx`` (same layout; fp8 as bytes)."""
        for x, y in zip(self.tensors(), src.tensors(), strict=True):
            as_bytes(x)[idx] = as_bytes(y)


@dataclass
class Cache:
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
        return KVCache(*(torch.zeros(shape, device=device, dtype=FP8) for _ in range(2)), *scales)
    return KVCache(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))


def new_window(batch: int, window: int, n_heads: int, head_dim: int, device, dtype) -> WindowCache:
    shape = (batch, window + 1, n_heads, head_dim)
    return WindowCache(
        torch.zeros(shape, device=device, dtype=dtype),
        torch.zeros(shape, device=device, dtype=dtype),
        torch.full((batch, window + 1), -1, dtype=torch.long, device=device),
    )
