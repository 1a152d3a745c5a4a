"""Inference state of Phi-4-mini-flash (SambaY), preallocated once per batch.

Per sequence, the model keeps:
    * per Mamba layer (the memory layer n/2 included): the convolution tail ``[K-1, Di]`` (the last K-1 inputs
      of the depthwise conv) and the SSM state ``[Di, N]`` (fp32): constant size;
    * per sliding-window attention layer: a ring of the last ``w`` keys/values (constant size);
    * ONE growing key/value cache, written by the full-attention layer n/2+1 and read by every cross layer.
The gated (GMU) layers' memory is the memory layer's per-token output: it is used only by the same call's
positions whose logits are asked for, so nothing of it is kept between calls.

Layout of keys/values (windows and the shared cache): keys head-permuted for the differential split (the even
heads of the checkpoint's order first, then the odd ones: ``[KV, D]``), values paired (``[KV/2, 2D]``, pair j =
``[v_{2j} | v_{2j+1}]``), which is what both halves of differential attention read. Same bytes as the raw
``[KV, D]`` of each.

The bookkeeping (``lengths`` ``[B]``, host ``seen``, ``ragged``, ``static``, ``writes``) and the methods the Engine
drives a cache through (``note_prefill``, ``static_shapes``, ``advance`` from the shared
:class:`~yoco_eval.model.cache.CacheFlags`; ``put_rows``, ``reset``, ``save_state``/``load_state``, ``select_rows``,
``nbytes``) follow :class:`yoco_eval.model.cache.Cache`. A forward call is one :class:`Step`: :func:`make_step`
places its tokens, :func:`~yoco_eval.model.cache.commit_step` (shared with YOCO) advances the lengths; nothing
else sets the flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from yoco_eval.errors import YocoEvalError
from yoco_eval.model.cache import CacheFlags, KVCache, WindowCache, commit_step  # noqa: F401 - shared with YOCO


@dataclass
class MambaState:
    """One Mamba layer's constant-size state."""

    conv: torch.Tensor  # [B, K-1, Di] model dtype: the last K-1 conv inputs
    ssm: torch.Tensor  # [B, Di, N] fp32 (fp64 for an fp64 model)

    def clone(self) -> MambaState:
        return MambaState(self.conv.clone(), self.ssm.clone())


@dataclass
class Phi4FlashCache(CacheFlags):
    """State of a batch of sequences (see module docstring). ``mamba`` has one entry per Mamba layer in layer
    order, ``windows`` one per sliding-window layer, ``kv`` exactly one."""

    batch_size: int
    max_seq_len: int
    lengths: torch.Tensor  # [B] int64, valid tokens written per row
    mamba: list[MambaState] = field(default_factory=list)
    windows: list[WindowCache] = field(default_factory=list)
    kv: list[KVCache] = field(default_factory=list)
    seen: int = 0  # host-side max(lengths)
    ragged: bool = False  # rows hold different numbers of tokens (some call had padding)
    static: bool = False  # decode under CUDA-graph capture/replay: attend over the whole buffer
    writes: int = 0  # prefill calls into this cache so far

    def _state_tensors(self) -> list[torch.Tensor]:
        return _constant_tensors(self.mamba, self.windows)

    def nbytes(self) -> int:
        return _nbytes(self._state_tensors()) + sum(c.nbytes() for c in self.kv)

    def put_rows(self, rows: list[int], src: Phi4FlashCache) -> None:
        """Copy every row of ``src`` into rows ``rows`` of this cache (same layout); the rows not written keep
        their own lengths, so the cache becomes ragged unless all of its rows were written."""
        idx = self._put_lengths(rows, src)
        for a, b in zip(self.mamba, src.mamba, strict=True):
            a.conv[idx], a.ssm[idx] = b.conv, b.ssm
        for a, b in zip(self.windows, src.windows, strict=True):
            a.k[idx], a.v[idx], a.pos[idx] = b.k, b.v, b.pos
        for a, b in zip(self.kv, src.kv, strict=True):
            a.put_rows(idx, b)

    def reset(self) -> None:
        """Forget all sequences (keeps the memory)."""
        self.lengths.zero_()
        self.seen, self.ragged = 0, False
        for m in self.mamba:
            m.conv.zero_()
            m.ssm.zero_()
        for w in self.windows:
            w.pos.fill_(-1)

    def save_state(self) -> Phi4FlashCacheState:
        """Copy the constant-size part (Mamba states, windows, lengths); the append-only K/V is not copied, so
        :meth:`load_state` rewinds correctly as long as the K/V before this point is not overwritten."""
        return Phi4FlashCacheState(
            lengths=self.lengths.clone(), seen=self.seen, ragged=self.ragged,
            mamba=[m.clone() for m in self.mamba],
            windows=[WindowCache(w.k.clone(), w.v.clone(), w.pos.clone()) for w in self.windows],
        )  # fmt: skip

    def load_state(self, state: Phi4FlashCacheState) -> None:
        """Rewind to a :meth:`save_state` point, in place (tensors captured by a CUDA graph stay valid)."""
        self.lengths.copy_(state.lengths)
        self.seen, self.ragged = state.seen, state.ragged
        for dst, src in zip(self.mamba, state.mamba, strict=True):
            dst.conv.copy_(src.conv)
            dst.ssm.copy_(src.ssm)
        for dst, src in zip(self.windows, state.windows, strict=True):
            dst.k.copy_(src.k)
            dst.v.copy_(src.v)
            dst.pos.copy_(src.pos)

    def select_rows(self, rows: torch.Tensor) -> Phi4FlashCache:
        """A new cache holding copies of the given rows (e.g. to fork a shared prefix)."""
        return Phi4FlashCache(
            batch_size=len(rows), max_seq_len=self.max_seq_len, lengths=self.lengths[rows].clone(),
            mamba=[MambaState(m.conv[rows].clone(), m.ssm[rows].clone()) for m in self.mamba],
            windows=[WindowCache(w.k[rows].clone(), w.v[rows].clone(), w.pos[rows].clone()) for w in self.windows],
            kv=[c.select_rows(rows) for c in self.kv], seen=self.seen, ragged=self.ragged,
        )  # fmt: skip


@dataclass
class Phi4FlashCacheState:
    """A :class:`Phi4FlashCache`'s constant-size state at one point of its sequences."""

    lengths: torch.Tensor
    seen: int
    ragged: bool
    mamba: list[MambaState]
    windows: list[WindowCache]

    def nbytes(self) -> int:
        return _nbytes(_constant_tensors(self.mamba, self.windows))


def _constant_tensors(mamba: list[MambaState], windows: list[WindowCache]) -> list[torch.Tensor]:
    return [*(t for m in mamba for t in (m.conv, m.ssm)), *(t for w in windows for t in (w.k, w.v, w.pos))]


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def new_cache(cfg, batch_size: int, max_seq_len: int, device, dtype) -> Phi4FlashCache:
    """Zeroed state for ``cfg`` (a :class:`~yoco_eval.model.phi4flash.Phi4FlashConfig`)."""
    B, KV, D, Di = batch_size, cfg.num_key_value_heads, cfg.head_dim, cfg.d_inner
    state_dtype = torch.promote_types(dtype, torch.float32)  # SSM state: fp32 (fp64 for an fp64 model)
    c = Phi4FlashCache(B, max_seq_len, torch.zeros(B, dtype=torch.long, device=device))
    for i in range(cfg.num_hidden_layers):
        kind = cfg.layer_kind(i)
        if kind in ("mamba", "memory"):
            c.mamba.append(MambaState(
                torch.zeros(B, cfg.mamba_d_conv - 1, Di, device=device, dtype=dtype),
                torch.zeros(B, Di, cfg.mamba_d_state, device=device, dtype=state_dtype),
            ))  # fmt: skip
        elif kind == "swa":
            C = cfg.sliding_window
            c.windows.append(WindowCache(
                torch.zeros(B, C + 1, KV, D, device=device, dtype=dtype),
                torch.zeros(B, C + 1, KV // 2, 2 * D, device=device, dtype=dtype),
                torch.full((B, C + 1), -1, dtype=torch.long, device=device),
            ))  # fmt: skip
    c.kv.append(KVCache(
        torch.zeros(B, max_seq_len, KV, D, device=device, dtype=dtype),
        torch.zeros(B, max_seq_len, KV // 2, 2 * D, device=device, dtype=dtype),
    ))  # fmt: skip
    return c


# ---------------------------------------------------------------------------------------------------------------
# The step: where the tokens of one forward call sit


@dataclass
class Step:
    """pos ``[B, T]`` absolute positions; valid ``[B, T]`` bool (right padding) or None; n_valid ``[B]`` real
    tokens per row or None; start: common first position (prefill) or None (per-row decode positions);
    uniform: all rows hold the same tokens before and after (mask-free fast paths); end: keys ``[:end]`` cover
    every visible position."""

    pos: torch.Tensor
    valid: torch.Tensor | None
    n_valid: torch.Tensor | None
    start: int | None
    uniform: bool
    end: int
    cache: Phi4FlashCache | None
    attn_backend: str
    scan_impl: str = "auto"
    decode_backend: str = "torch"  # "triton": one query per row over a long cache takes the split-key kernel


def make_step(tokens, start_pos, cache: Phi4FlashCache | None, valid, attn_backend: str) -> Step:
    """Place ``tokens`` ``[B, T]`` from ``start_pos`` (an int shared by all rows, or a ``[B]`` tensor of per-row
    positions) in ``cache`` (None: a stateless full forward); see ``Phi4Flash.forward``."""
    B, T = tokens.shape
    ar = torch.arange(T, device=tokens.device)
    if isinstance(start_pos, torch.Tensor):
        pos, start = start_pos.to(tokens.device).view(B, 1) + ar, None
    else:
        pos, start = (start_pos + ar).expand(B, T), int(start_pos)
    n_valid = None if valid is None else valid.sum(1)
    if cache is None:
        return Step(pos, valid, n_valid, start, valid is None, (start or 0) + T, None, attn_backend)
    if start is not None and start + T > cache.max_seq_len:
        raise YocoEvalError(
            f"positions {start}..{start + T - 1} exceed the cache's max_seq_len {cache.max_seq_len}: "
            "set up the cache for longer sequences"
        )
    if valid is not None:
        cache.ragged = True
    if cache.static:  # CUDA-graph decode: static shapes, attend over the whole buffer under a mask
        return Step(pos, valid, n_valid, start, False, cache.max_seq_len, cache, attn_backend)
    end = max(cache.seen, start + T) if start is not None else cache.seen + T
    uniform = valid is None and not cache.ragged and (start is not None or B == 1)
    return Step(pos, valid, n_valid, start, uniform, end, cache, attn_backend)
