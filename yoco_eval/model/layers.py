"""Blocks shared by YOCO and the Transformer baseline, so a comparison measures the architecture, not the code.

RMSNorm in the official order (fp32 statistics, cast back, then the weight), the SwiGLU feed-forward with the
official roles (``fc1`` the SiLU branch, ``gate`` the linear one, ``fc2`` down), the pre-norm decoder layer, the
:class:`Mixer` contract of a token mixer, and :class:`LanguageModel` (backend names, the K/V cache storage,
parameter counts).

These are the plain definitions (training, the conformance tests, the reference). Inference-time rewrites
(projection fusion, residual-in-place GEMMs, feed-forward row slicing) are applied from outside by
:func:`yoco_eval.model.inference.prepare_for_inference` and compute the same function.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from yoco_eval.errors import ConfigError
from yoco_eval.model.cache import Step, check_kv_dtype
from yoco_eval.ops import Backends, check_backend_names, fused, resolve_backends


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32, cast back, then (if affine) multiplied by the weight (the official order)."""

    def __init__(self, dim: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused.rms_norm(x, self.weight, self.eps)


class FeedForward(nn.Module):
    """SwiGLU with the official roles: ``fc2(silu(fc1 x) * gate x)``."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=False)
        self.gate = nn.Linear(dim, hidden_dim, bias=False)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(fused.silu_mul(self.fc1(x), self.gate(x)))


class Mixer(nn.Module):
    """A token mixer (retention, attention): input projections, :meth:`mix`, then the output projection.

    ``in_projections`` names the ``nn.Linear`` modules that all read the mixer's input (in the order
    :meth:`project_in` returns them); ``out_proj`` is the last step. Spelling the three stages out is what lets an
    inference rewrite fuse the input projections or fold the residual add into ``out_proj``'s GEMM."""

    in_projections: tuple[str, ...] = ()
    out_proj: nn.Linear

    def project_in(self, x: torch.Tensor, step: Step) -> tuple[torch.Tensor, ...]:
        """Every input projection of ``x`` ``[B, T, d]``, in ``in_projections`` order."""
        return tuple(getattr(self, name)(x) for name in self.in_projections)

    def mix(self, x: torch.Tensor, *args) -> torch.Tensor:
        """The mixer up to its output projection: ``[B, T, d]`` -> ``[B, T, H * D]``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        return self.out_proj(self.mix(x, *args))


class DecoderLayer(nn.Module):
    """Pre-norm block: ``h = x + mixer(norm(x))``; ``out = h + ffn(norm(h))``."""

    def __init__(self, mixer: Mixer, dim: int, hidden_dim: int, eps: float):
        super().__init__()
        self.mixer_layer_norm = RMSNorm(dim, eps)
        self.mixer = mixer
        self.final_layer_norm = RMSNorm(dim, eps)
        self.ffn = FeedForward(dim, hidden_dim)

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        h = x + self.mixer(self.mixer_layer_norm(x), *args)
        return h + self.ffn(self.final_layer_norm(h))


def select_positions(x: torch.Tensor, pos: torch.Tensor, select) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The positions a forward's ``logits_from`` asks for: ``(x [B, N, d], their positions [B, N], tail)``;
    ``select`` None = all, int n = the last n, ``[B, N]`` int64 = gathered (``tail`` False)."""
    if select is None:
        return x, pos, True
    if isinstance(select, int):
        return x[:, -select:], pos[:, -select:], True
    idx = select.to(x.device)
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1])), pos.gather(1, idx), False


class LanguageModel(nn.Module):
    """What YOCO and the Transformer baseline share: kernel backends, the K/V cache storage, parameter counts.

    Args:
        attn_backend / retention_backend / decode_backend: kernel names (see :mod:`yoco_eval.ops`), checked here
            and resolved once per device by :func:`yoco_eval.ops.resolve_backends`.
        kv_dtype: K/V cache storage, ``"auto"`` (the model's dtype) or ``"fp8"`` where the model implements it
            (``kv_dtypes``); see :mod:`yoco_eval.model.cache`. Change it only with :meth:`set_kv_dtype`.
    """

    kv_dtypes: tuple[str, ...] = ("auto",)  # the storages this model implements

    def __init__(self, attn_backend: str = "auto", retention_backend: str = "auto", decode_backend: str = "auto",
                 kv_dtype: str = "auto"):  # fmt: skip
        super().__init__()
        self.set_backends(attn_backend, retention_backend, decode_backend)
        self.set_kv_dtype(kv_dtype)

    @property
    def kv_dtype(self) -> str:
        return self._kv_dtype

    def set_kv_dtype(self, kv_dtype: str) -> None:
        """Store the K/V cache as ``kv_dtype`` from the next :meth:`setup_cache` on (and round the full forward's
        shared keys/values the same way). Raises :class:`~yoco_eval.errors.ConfigError` for an unknown value or
        one this model does not implement."""
        if check_kv_dtype(kv_dtype) not in self.kv_dtypes:
            raise ConfigError(
                f"kv_dtype={kv_dtype!r} is for YOCO checkpoints (YOCO's shared cache only): a Transformer's prefill "
                "would dequantize every layer's cache at every chunk; use kv_dtype=auto for the Transformer baseline"
            )
        self._kv_dtype = kv_dtype

    def set_backends(self, attn: str = "auto", retention: str = "auto", decode: str = "auto") -> None:
        """Choose the kernels by name (checked now, resolved for the model's device at the next forward)."""
        check_backend_names(attn, retention, decode)
        self.backend_names = (attn, retention, decode)
        self._backends: tuple[Backends, torch.device] | None = None

    @property
    def backends(self) -> Backends:
        dev = self.embed_tokens.weight.device
        if self._backends is None or self._backends[1] != dev:
            attn, retention, decode = self.backend_names
            self._backends = (resolve_backends(attn, retention, dev, decode), dev)
        return self._backends[0]

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The final RMSNorm and output projection: ``[B, N, d]`` -> logits ``[B, N, vocab]`` (one row on the GPU
        through the GEMV, :func:`yoco_eval.ops.fused.linear`)."""
        return fused.linear(self.layer_norm(x), self.output_projection.weight)

    def num_params(self, embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not embeddings:
            n -= self.embed_tokens.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.output_projection.weight.numel()
        return n
