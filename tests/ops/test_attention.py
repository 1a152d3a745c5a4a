"""Attention kernels against the plain reference, and the sliding window's exact extent."""

from __future__ import annotations

import pytest
import torch

from yoco_eval.config import get_config
from yoco_eval.model.cache import make_step
from yoco_eval.model.yoco import SlidingWindowAttention
from yoco_eval.ops import resolve_backends
from yoco_eval.ops.attention import attention
from yoco_eval.ops.naive import naive_attention


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backend", ["torch", "sdpa"])
@pytest.mark.parametrize("window", [None, 5])
def test_general_mask_matches_reference(backend, window):
    B, Tq, Tk, H, Hk, D = 2, 9, 23, 6, 2, 16
    q, k, v = rand(B, Tq, H, D, seed=1), rand(B, Tk, Hk, D, seed=2), rand(B, Tk, Hk, D, seed=3)
    q_pos = torch.tensor([[14 + i for i in range(Tq)], [3 + i for i in range(Tq)]])
    k_pos = torch.arange(Tk).expand(B, Tk)
    k_valid = torch.rand(B, Tk, generator=torch.Generator().manual_seed(4)) > 0.2
    ref = naive_attention(q.double(), k.double(), v.double(), q_pos, k_pos, k_valid, window)
    got = attention(q, k, v, q_pos, k_pos, k_valid, window=window, backend=backend)
    assert (got.double() - ref).abs().max() < 1e-5


@pytest.mark.parametrize("backend", ["torch", "sdpa"])
@pytest.mark.parametrize("Tq,Tk", [(1, 17), (5, 17), (17, 17)])
def test_lower_right_causal_matches_reference(backend, Tq, Tk):
    B, H, Hk, D = 1, 4, 2, 8
    q, k, v = rand(B, Tq, H, D, seed=5), rand(B, Tk, Hk, D, seed=6), rand(B, Tk, Hk, D, seed=7)
    q_pos = torch.arange(Tk - Tq, Tk)[None]
    ref = naive_attention(q.double(), k.double(), v.double(), q_pos, torch.arange(Tk)[None])
    got = attention(q, k, v, kind="lower_right", backend=backend)
    assert (got.double() - ref).abs().max() < 1e-5


@torch.inference_mode()
def test_sliding_window_sees_exactly_C_keys():
    """A perturbation planted just outside the window (position p - C) changes nothing at p; one inside does."""
    cfg = get_config("yoco-debug-swa")  # window C = 16
    C = cfg.sliding_window
    layer = SlidingWindowAttention(cfg, 0).eval()
    x = rand(1, 48, cfg.dim, seed=8)
    step = lambda: make_step(x[:, :, 0].long(), 0, None, None, resolve_backends("sdpa"))  # noqa: E731
    base = layer(x, step(), _freqs(cfg))
    p = 40
    outside, inside = x.clone(), x.clone()
    outside[:, p - C] += 5.0
    inside[:, p - C + 1] += 5.0
    y_out = layer(outside, step(), _freqs(cfg))
    y_in = layer(inside, step(), _freqs(cfg))
    assert torch.equal(y_out[:, p:], base[:, p:])  # p - C is outside the window of every query >= p
    assert not torch.allclose(y_in[:, p], base[:, p])  # p - C + 1 is the oldest key query p sees
    assert torch.equal(y_in[:, p + 1 :], base[:, p + 1 :])


def _freqs(cfg):
    from yoco_eval.ops.rope import inv_freq

    return inv_freq(cfg.self_head_dim, cfg.rope_theta, "yoco")


@pytest.mark.parametrize("splits", [1, 3, 8])
def test_split_key_decode_matches_reference(splits):
    """Flash-decoding merge: per-split log-sum-exp recombination is exact (torch twin of the GPU path)."""
    from yoco_eval.ops.attention import decode_attention

    B, Tk, H, Hk, D = 3, 1000, 6, 2, 16
    q, k, v = rand(B, 1, H, D, seed=11), rand(B, Tk, Hk, D, seed=12), rand(B, Tk, Hk, D, seed=13)
    lengths = torch.tensor([1000, 517, 3])
    k_valid = torch.arange(Tk)[None] < lengths[:, None]
    k_pos = torch.arange(Tk).expand(B, Tk)
    ref = naive_attention(q.double(), k.double(), v.double(), lengths[:, None] - 1, k_pos, k_valid)
    got = decode_attention(q, k, v, k_valid, splits=splits, backend="torch")
    assert (got.double() - ref).abs().max() < 1e-5
