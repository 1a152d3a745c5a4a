"""Plain-PyTorch reference ops: the test oracle for every fast kernel, written for clarity, computed in fp32.

Shape legend (all ops): B batch, T / Tq / Tk sequence lengths, H (query) heads, Hk key/value heads, D head dim,
Dv value head dim. Tensors are ``[B, T, H, D]`` ("BTHD"); per-head gates are ``[B, T, H]``.
"""

from __future__ import annotations

import torch


def _up(x: torch.Tensor) -> torch.Tensor:
    """fp32 math, or fp64 when given fp64 (so the oracle can itself be checked in higher precision)."""
    return x.double() if x.dtype == torch.float64 else x.float()


def naive_parallel_retention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_g: torch.Tensor, initial_state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated retention in its parallel (quadratic) form.

    ``o_n = sum_{m<=n} (q_n . k_m) prod_{i=m+1..n} g_i v_m  +  (q_n prod_{i<=n} g_i) S_0``.

    Args:
        q, k: ``[B, T, H, D]`` (k already scaled). v: ``[B, T, H, Dv]``.
        log_g: ``[B, T, H]`` log of the per-token, per-head decay (<= 0).
        initial_state: ``[B, H, D, Dv]`` or None (zeros).
    Returns:
        o ``[B, T, H, Dv]`` fp32 and the final state ``[B, H, D, Dv]`` fp32.
    """
    q, k, v, g = _up(q), _up(k), _up(v), _up(log_g)
    B, T, H, D = q.shape
    b = g.cumsum(1).transpose(1, 2)  # [B, H, T] cumulative log decay
    diff = b[..., :, None] - b[..., None, :]  # [B, H, T, T]: log prod_{i=m+1..n} g_i
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    decay = torch.where(causal, diff, torch.full_like(diff, float("-inf"))).exp()
    scores = torch.einsum("bnhd,bmhd->bhnm", q, k) * decay
    o = torch.einsum("bhnm,bmhe->bnhe", scores, v)
    # final state: S_T = prod(all) S_0 + sum_m k_m^T v_m prod_{i>m} g_i
    w = (b[..., -1:] - b).exp()  # [B, H, T]
    state = torch.einsum("bhm,bmhd,bmhe->bhde", w, k, v)
    if initial_state is not None:
        s0 = _up(initial_state)
        o = o + torch.einsum("bnhd,bhde->bnhe", q * b.transpose(1, 2).exp()[..., None], s0)
        state = state + b[..., -1, None, None].exp() * s0
    return o, state


def naive_recurrent_retention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_g: torch.Tensor, initial_state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated retention token by token: ``S_t = g_t S_{t-1} + k_t^T v_t``, ``o_t = q_t S_t``. Same contract as
    :func:`naive_parallel_retention`."""
    q, k, v, g = _up(q), _up(k), _up(v), _up(log_g)
    B, T, H, D = q.shape
    S = (
        torch.zeros(B, H, D, v.shape[-1], device=q.device, dtype=q.dtype)
        if initial_state is None
        else _up(initial_state)
    )
    out = []
    for t in range(T):
        S = g[:, t, :, None, None].exp() * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        out.append(torch.einsum("bhd,bhde->bhe", q[:, t], S))
    return torch.stack(out, 1), S


def naive_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    k_valid: torch.Tensor | None = None,
    window: int | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Exact softmax attention with position masks and grouped-query heads.

    Query ``i`` sees key ``j`` iff ``k_valid[j]`` and ``k_pos[j] <= q_pos[i]`` and, with a window C,
    ``q_pos[i] - k_pos[j] < C`` (C keys including itself). Query head ``h`` reads key/value head ``h // (H/Hk)``.

    Args:
        q: ``[B, Tq, H, D]``; k: ``[B, Tk, Hk, D]``; v: ``[B, Tk, Hk, Dv]``.
        q_pos: ``[B, Tq]`` absolute positions; k_pos: ``[B, Tk]``; k_valid: ``[B, Tk]`` bool or None.
    Returns:
        ``[B, Tq, H, Dv]`` in fp32. A query that sees no key gets zeros.
    """
    B, Tq, H, D = q.shape
    Hk = k.shape[2]
    scale = D**-0.5 if scale is None else scale
    kk = _up(k).repeat_interleave(H // Hk, dim=2)
    vv = _up(v).repeat_interleave(H // Hk, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", _up(q), kk) * scale
    mask = k_pos[:, None, :] <= q_pos[:, :, None]  # [B, Tq, Tk]
    if window is not None:
        mask = mask & (q_pos[:, :, None] - k_pos[:, None, :] < window)
    if k_valid is not None:
        mask = mask & k_valid[:, None, :]
    s = s.masked_fill(~mask[:, None], float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return torch.einsum("bhqk,bkhe->bqhe", p, vv)
