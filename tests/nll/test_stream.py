"""Streaming NLL: equal to the full forward (derived tolerance), and memory flat in T beyond the cache."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from yoco_eval.model.checkpoint import load_model
from yoco_eval.nll.stream import buckets, cumulative, full_nll, log_edges, stream_nll, summarize

MODELS = Path(__file__).resolve().parents[2] / "models"
SPECS = ["yoco-debug", str(MODELS / "yoco-needle-7m"), "transformer-debug", str(MODELS / "transformer-needle-7m")]
TEXT = (
    "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer "
    "The slings and arrows of outrageous fortune, Or to take arms against a sea of troubles "
    "And by opposing end them. To die, to sleep; No more; and by a sleep to say we end "
    "The heart-ache and the thousand natural shocks That flesh is heir to: 'tis a consummation "
    "Devoutly to be wish'd. To die, to sleep; To sleep, perchance to dream. ay, there's the rub."
)


@pytest.fixture(scope="module", params=SPECS, ids=["yoco-debug", "yoco-needle-7m", "transformer-debug",
                                                   "transformer-needle-7m"])  # fmt: skip
def loaded(request):
    return load_model(request.param)


@pytest.mark.parametrize("chunk", [1, 64, 97, 300, 1000], ids=lambda c: f"chunk{c}")
def test_stream_equals_full_forward(loaded, chunk):
    """|stream (fp32) - full (fp64 model)| <= 2 x |full (fp32) - full (fp64 model)|, position by position max.

    The fp32 full forward's own error against the fp64 model is the scale of rounding this computation has; the
    chunked path may reorder sums (chunked retention, the fp32 recurrent state across chunks) but must stay within
    twice that. 97 and 1000 do not divide the 300 scored positions; 300 is one chunk; 1 is token by token."""
    tok = loaded.tokenizer
    ids = tok.encode(TEXT)[:299]  # with BOS: 300 positions
    m64 = copy.deepcopy(loaded.model).double()
    ref = full_nll(m64, ids, bos_id=tok.bos_id, dtype=torch.float64)
    full32 = full_nll(loaded.model, ids, bos_id=tok.bos_id, dtype=torch.float32).double()
    res = stream_nll(loaded.model, ids, chunk=chunk, bos_id=tok.bos_id)
    assert res.nll.dtype == torch.float32 and res.nll.shape == ref.shape == (len(ids),)
    budget = 2 * (full32 - ref).abs().max().item()
    err = (res.nll.double() - ref).abs().max().item()
    assert err <= budget, f"stream error {err:.3g} > 2 x fp32 full-forward error ({budget:.3g})"


def test_without_bos_the_first_token_is_context(loaded):
    ids = loaded.tokenizer.encode(TEXT)[:120]
    res = stream_nll(loaded.model, ids, chunk=50, bos_id=None)
    ref = full_nll(loaded.model, ids, bos_id=None)
    assert res.nll.shape == (119,)
    assert torch.allclose(res.nll, ref, atol=1e-3)


class _Allocs(TorchDispatchMode):
    """Records the shape and byte size of every tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[tuple[int, ...], int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.seen.append((tuple(t.shape), t.numel() * t.element_size()))
        return out


def _allocations(model, T: int, chunk: int, stream: bool = True) -> list[tuple[tuple[int, ...], int]]:
    ids = torch.randint(4, 260, (T,), generator=torch.Generator().manual_seed(T))
    with _Allocs() as rec:
        if stream:
            stream_nll(model, ids, chunk=chunk, bos_id=0)
        else:
            full_nll(model, ids, bos_id=0)
    return rec.seen


@pytest.mark.parametrize("spec", ["yoco-debug", "transformer-debug"])
def test_memory_flat_in_T_beyond_the_cache(spec):
    """Measured with every tensor any op returns, at T = 1,000 and 4,000 (chunk 100).

    * the largest vocab-wide tensor (logits, their fp32 log-softmax block) is the same at both T: chunk x vocab;
    * every tensor with no axis as long as the keys (nothing >= 300 wide: dims here are <= 264 apart from the
      position axis) has the same largest size at both T;
    * tensors with a key-length axis (the cache, attention reading it, the 4-byte-a-token NLL vector) grow at most
      linearly in T, like the cache, never quadratically.
    The full forward, for contrast, returns a [T, vocab] tensor."""
    model = load_model(spec, attn_backend="torch").model  # SDPA's CausalBias subclass does not mix with dispatch modes
    vocab = model.config.vocab_size
    small, big = _allocations(model, 1000, 100), _allocations(model, 4000, 100)

    def largest(seen, keep):
        return max(b for shape, b in seen if keep(shape))

    def wide(s):
        return bool(s) and s[-1] == vocab

    def flat(s):
        return all(d < 300 for d in s)

    assert largest(small, wide) == largest(big, wide) <= 100 * vocab * 4
    assert largest(small, flat) == largest(big, flat)
    assert largest(big, lambda s: True) <= 4.2 * largest(small, lambda s: True)
    full = _allocations(model, 2000, 0, stream=False)
    assert largest(full, wide) >= 2000 * vocab * 4  # the contrast: a full forward holds [T, vocab]


def test_summaries_are_exact_on_known_values():
    nll = torch.arange(1, 11, dtype=torch.float32)  # 1..10
    assert log_edges(10) == [0, 1, 2, 4, 8, 10]
    b = buckets(nll, log_edges(10))
    assert [(x["lo"], x["hi"], x["nll"]) for x in b] == [(0, 1, 1.0), (1, 2, 2.0), (2, 4, 3.5), (4, 8, 6.5),
                                                         (8, 10, 9.5)]  # fmt: skip
    assert cumulative(nll, [1, 4, 10]) == [[1, 1.0], [4, 2.5], [10, 5.5]]
    s = summarize(nll, n_bytes=20, linear_width=4)
    assert [x["nll"] for x in s["linear_buckets"]] == [2.5, 6.5, 9.5]
    assert s["bits_per_byte"] == pytest.approx(55 / math.log(2) / 20)
    assert s["cumulative"][-1] == [10, 5.5]
