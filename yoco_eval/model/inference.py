"""Inference-time rewrites of a model, applied from outside, and the CUDA-graph decode step.

The model files (:mod:`yoco_eval.model.yoco`, :mod:`yoco_eval.model.transformer`, :mod:`yoco_eval.model.layers`)
are the plain definitions. :func:`prepare_for_inference` rewrites a model IN PLACE for serving, the way gpt-fast
applies quantization: each block's class is swapped for an inference variant defined here (a subclass with the
same parameters, so ``state_dict`` keys, saving and loading are unchanged) that computes the same function with
fewer passes over memory:

* projection fusion: the input projections of a mixer (q/k/v(/g/gt)) and the feed-forward's ``fc1``/``gate``
  run as ONE GEMM each. The official parameters become views into the fused tensor (no extra memory); if
  anything replaces them (``.to()``, ``load_state_dict(assign=True)``), the views no longer match and the plain
  projections run again.
* residual in place: at inference (no autograd, contiguous activations) each block's two output GEMMs add into
  the residual stream themselves (cuBLAS ``beta = 1``: the sum is rounded once, and the separate add's pass over
  ``[T, d]`` is gone). A layer then returns its input tensor, overwritten: a forward hook that keeps a layer's
  output must clone it.
* feed-forward row slicing: the fused up-projection runs over at most :data:`FFN_ROWS` tokens at a time, so the
  ``[rows, 2 * hidden]`` activation stays bounded however long the prefill chunk.

:class:`GraphDecoder` captures one decode step as a CUDA graph over its own cache.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from yoco_eval.model.layers import DecoderLayer, FeedForward
from yoco_eval.model.transformer import SelfAttention
from yoco_eval.model.yoco import CrossAttention, GatedRetention, SlidingWindowAttention
from yoco_eval.ops import fused, triton_kernels

# the feed-forward runs over at most this many tokens at a time, which bounds its [rows, hidden] activation (512 MiB
# for YOCO-3B in bf16). YOCO-3B's 512K prefill in 64K chunks, one H100, one process (python -m
# yoco_eval.bench.knob_ab): 2.889 s at 8,192 rows, 2.832 at 32,768, 2.827 at 65,536 (twice the activation for 0.2%)
FFN_ROWS = 32768


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """Rewrite ``model`` in place for inference (see the module docstring) and return it. Idempotent; the
    rewritten model computes the same function (same parameters, same state-dict keys). Blocks without an
    inference variant are left as they are: a :class:`~yoco_eval.model.phi4flash.Phi4Flash` comes back unchanged."""
    with torch.no_grad():
        for mod in model.modules():
            variant = _VARIANTS.get(type(mod))
            if variant is not None:
                mod.__class__ = variant
            if isinstance(mod, (_FusedInputs, InferenceFeedForward)) and _fused_weight(mod) is None:
                _fuse(mod)
    return model


def _fuse(mod: nn.Module) -> None:
    """Concatenate the weights of ``mod``'s fused projections into one tensor and make each a view into it."""
    names = mod.fused_names
    params = [getattr(mod, n).weight for n in names]
    w = torch.cat([p.detach() for p in params], 0)
    off = 0
    for n, p in zip(names, params):
        getattr(mod, n).weight.data = w[off : off + p.shape[0]]
        off += p.shape[0]
    mod._fused = w


def _fused_weight(mod: nn.Module) -> torch.Tensor | None:
    """The fused weight while the parameters are still views into it (and not training), else None."""
    w = getattr(mod, "_fused", None)
    if w is None or mod.training:
        return None
    first = getattr(mod, mod.fused_names[0]).weight
    if first.data_ptr() != w.data_ptr() or first.dtype != w.dtype or first.device != w.device:
        mod._fused = None  # parameters were replaced: fall back to the separate projections
        return None
    return w


def add_linear_(residual: torch.Tensor, y: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``residual + linear(y)`` written INTO ``residual`` by the GEMM itself; ``residual`` ``[..., out]`` must be
    contiguous and free to overwrite. Returns ``residual``. One row (decode at batch 1):
    the Triton GEMV with the add in its epilogue (:func:`~yoco_eval.ops.triton_kernels.gemv`)."""
    if triton_kernels.gemv_on(y) and triton_kernels.gemv(y, linear.weight, residual, out=residual) is not None:
        return residual
    residual.view(-1, residual.shape[-1]).addmm_(y.reshape(-1, y.shape[-1]), linear.weight.t())
    return residual


class _FusedInputs:
    """Mixin for a :class:`~yoco_eval.model.layers.Mixer`: its input projections as one GEMM."""

    @property
    def fused_names(self) -> tuple[str, ...]:
        return self.in_projections

    def project_in(self, x: torch.Tensor, step) -> tuple[torch.Tensor, ...]:
        w = _fused_weight(self)
        if w is None or not self.fuse_now(x, step):
            return super().project_in(x, step)
        sizes = [getattr(self, n).weight.shape[0] for n in self.in_projections]
        return fused.linear(x, w).split(sizes, dim=-1)

    def fuse_now(self, x: torch.Tensor, step) -> bool:
        return True


class InferenceGatedRetention(_FusedInputs, GatedRetention):
    def fuse_now(self, x: torch.Tensor, step) -> bool:
        # fla-core's prefill kernels would copy the strided q/k/v of a fused GEMM: separate GEMMs there
        return step.backends.retention != "fla" or x.shape[1] == 1


class InferenceSlidingWindowAttention(_FusedInputs, SlidingWindowAttention):
    pass


class InferenceSelfAttention(_FusedInputs, SelfAttention):
    pass


class InferenceCrossAttention(CrossAttention):
    """One input projection: nothing to fuse, but a one-row query (decode) takes the GEMV like the others."""

    def project_in(self, x: torch.Tensor, step) -> tuple[torch.Tensor, ...]:
        return (fused.linear(x, self.q_proj.weight),)


class InferenceFeedForward(FeedForward):
    """The feed-forward with ``fc1``/``gate`` fused, run in row slices, optionally adding into a residual."""

    fused_names = ("fc1", "gate")

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``ffn(x)``, or ``residual + ffn(x)`` accumulated into ``residual`` (see :func:`add_linear_`)."""
        w = _fused_weight(self)
        if w is None:  # parameters replaced since the fusion: the separate projections
            if residual is None:
                return super().forward(x)
            return add_linear_(residual, fused.silu_mul(self.fc1(x), self.gate(x)), self.fc2)
        x2 = x.reshape(-1, x.shape[-1])
        if residual is None and x2.shape[0] <= FFN_ROWS:
            return self.fc2(fused.swiglu_up(x2, w)).view(x.shape)
        out = x2.new_zeros(x2.shape) if residual is None else residual.view(x2.shape)
        for r in range(0, x2.shape[0], FFN_ROWS):
            add_linear_(out[r : r + FFN_ROWS], fused.swiglu_up(x2[r : r + FFN_ROWS], w), self.fc2)
        return out.view(x.shape)


class InferenceDecoderLayer(DecoderLayer):
    """The pre-norm block with both output GEMMs adding into the residual stream (at inference)."""

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        if torch.is_grad_enabled() or not x.is_contiguous():
            h = x + self.mixer(self.mixer_layer_norm(x), *args)
            return h + self.ffn(self.final_layer_norm(h))
        # x is this forward's own activation (embedding or previous layer output): add into it
        h = add_linear_(x, self.mixer.mix(self.mixer_layer_norm(x), *args), self.mixer.out_proj)
        return self.ffn(self.final_layer_norm(h), residual=h)


_VARIANTS: dict[type, type] = {
    GatedRetention: InferenceGatedRetention,
    SlidingWindowAttention: InferenceSlidingWindowAttention,
    SelfAttention: InferenceSelfAttention,
    CrossAttention: InferenceCrossAttention,
    FeedForward: InferenceFeedForward,
    DecoderLayer: InferenceDecoderLayer,
}


def capture_graph(device, fn):
    """``fn()`` captured as a CUDA graph: two warm-up calls on a side stream first (kernels compiled and autotuned
    outside the capture), then the captured call. Returns ``(graph, fn's output)``; each replay rewrites that
    output in place."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(2):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        out = fn()
    return graph, out


class GraphDecoder:
    """One decode step (``tokens [B, 1]`` at per-row positions ``[B]``) captured as a CUDA graph over its own cache
    of ``batch`` rows and ``max_len`` positions.

    Captured on a fresh cache before any prefill (the warm-up writes are then wiped by ``cache.reset()``); under
    capture the cache has static shapes (:meth:`~yoco_eval.model.cache.Cache.static_shapes`): attention covers the
    whole preallocated buffer under a length mask, so the same graph serves every step. Prefill into
    :attr:`cache` as usual, then call :meth:`step` per token.

    The graph also makes the greedy choice: it sets the ``banned`` token ids' logits to -inf, writes each row's
    argmax into its own token input and advances its positions, so greedy decoding replays it with no host-side
    kernels in between (:meth:`step_greedy`)."""

    def __init__(self, model: nn.Module, batch: int, max_len: int, device, banned: list[int] | None = None):
        self.model = model
        self.cache = model.setup_cache(batch, max_len)
        self.tok = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.pos = torch.zeros(batch, dtype=torch.long, device=device)
        self.banned = torch.tensor(banned, dtype=torch.long, device=device) if banned else None

        def step():
            logits = model(self.tok, cache=self.cache, start_pos=self.pos)[:, -1].float()
            if self.banned is not None:
                logits.index_fill_(-1, self.banned, float("-inf"))
            self.tok.copy_(logits.argmax(-1, keepdim=True))  # the greedy next token, fed to the next replay
            self.pos.add_(1)
            return logits

        with self.cache.static_shapes():
            self.graph, self.logits = capture_graph(device, step)

    def step(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` ``[B]`` at positions ``pos`` ``[B]``; returns the fp32 logits ``[B, vocab]``, banned ids at
        -inf (a buffer the next step overwrites)."""
        self.tok.copy_(tokens.view(-1, 1))
        self.pos.copy_(pos)
        self.graph.replay()
        self.cache.advance(1)
        return self.logits

    @property
    def next_tokens(self) -> torch.Tensor:
        """The last step's greedy tokens ``[B]`` (argmax of its logits, banned ids excluded): the input of the next
        :meth:`step_greedy`, which overwrites them."""
        return self.tok[:, 0]

    def step_greedy(self) -> torch.Tensor:
        """Feed :attr:`next_tokens` at the positions after the last step's; returns the new :attr:`next_tokens`."""
        self.graph.replay()
        self.cache.advance(1)
        return self.next_tokens


class ScoringGraph:
    """A stateless forward (``model(tokens, logits_from=idx)``, no cache) captured as a CUDA graph for one padded
    shape: ``tokens`` ``[B, L]`` and logit positions ``idx`` ``[B, N]``. For scoring many short requests, where
    launching a forward's kernels one by one costs more than running them.

    Rows are right-padded into the static buffers: a causal model's positions before the padding never see it, and
    the caller reads only the logits it asked for. :meth:`run` returns a view of the graph's output buffer, valid
    until the next replay."""

    def __init__(self, model: nn.Module, batch: int, length: int, n_logits: int, device, pad_id: int):
        self.pad_id = pad_id
        self.tokens = torch.full((batch, length), pad_id, dtype=torch.long, device=device)
        self.idx = torch.zeros(batch, n_logits, dtype=torch.long, device=device)
        self.graph, self.logits = capture_graph(device, lambda: model(self.tokens, logits_from=self.idx))

    def run(self, tokens: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Logits ``[b, n, vocab]`` at ``idx`` ``[b, n]`` of ``tokens`` ``[b, t]`` (``b, t, n`` within the graph's
        shape; the same numbers as the eager forward on the unpadded rows)."""
        b, t = tokens.shape
        n = idx.shape[1]
        self.tokens.fill_(self.pad_id)
        self.tokens[:b, :t].copy_(tokens)
        self.idx.zero_()
        self.idx[:b, :n].copy_(idx)
        self.graph.replay()
        return self.logits[:b, :n]
