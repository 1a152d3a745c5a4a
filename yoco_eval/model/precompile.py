"""Compile a model's Triton kernels before its first forward, in parallel and in the background (the cold start).

A fresh process compiles each Triton kernel on its first launch, one after another, inside the first prefill and
the first decode step: on an H100 machine about 3 s for yoco-eval's own kernels, plus fla-core's retention kernels.
:func:`start` runs the model's own forward once in a background thread, on a throwaway cache, for a short prompt
(``SPLIT_DECODE_MIN`` tokens, so the last token's attention takes the split-key decode kernel) and one decode step,
with our kernels in compile-only mode (:func:`yoco_eval.ops.triton_kernels.compile_only`): each launch hands its
compilation to a thread pool (Triton's ``AsyncCompileMode``) and returns at once, so they compile side by side.
fla-core's kernels run for real in the background thread (pinned on Hopper: one compilation each). The values
computed are garbage and thrown away; only the kernel variants stay, in Triton's per-process cache, because the
warm-up calls the model's code with the real shapes, strides and dtypes.

The Engine starts this when it is built and waits for it (:meth:`~yoco_eval.generate.Engine.ready`) before its
first forward and before any CUDA-graph capture, so the caller's own set-up (building the first prompt) overlaps
the compilation. Never fatal: a failure is logged once and the kernels compile on first use, as without it.
``YOCO_EVAL_PRECOMPILE=0`` turns it off.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from yoco_eval import settings

log = logging.getLogger("yoco_eval")


def _async_compile_mode():
    try:
        from triton.runtime._async_compile import AsyncCompileMode  # Triton >= 3.5
    except Exception:  # noqa: BLE001 - an older Triton: the kernels compile on first use
        return None
    return AsyncCompileMode


def supported(model, device: torch.device) -> bool:
    """A yoco-eval model (YOCO, Transformer) on a CUDA device, with our Triton kernels on and a Triton that can
    compile asynchronously."""
    from yoco_eval.model.layers import LanguageModel
    from yoco_eval.ops import triton_kernels

    s = settings.get()
    return (torch.device(device).type == "cuda" and isinstance(model, LanguageModel) and s.precompile and s.triton
            and triton_kernels.triton is not None and not s.triton_interpret
            and _async_compile_mode() is not None)  # fmt: skip


_started: weakref.WeakSet = weakref.WeakSet()  # models warmed once already: their kernels are compiled


def start(model, device) -> Future | None:
    """Start compiling ``model``'s kernels in a background thread; the future resolves to True when all are
    compiled (False after a failure, logged). None where :func:`supported` says no, or this model was warmed."""
    if model in _started or not supported(model, device):
        return None
    _started.add(model)
    done: Future = Future()

    def run():
        try:
            warm(model, torch.device(device))
            done.set_result(True)
        except BaseException as e:  # noqa: BLE001 - the real calls compile whatever is missing
            log.warning("yoco-eval: compiling the kernels ahead failed (%s); they compile on first use", e)
            done.set_result(False)

    threading.Thread(target=run, name="yoco-eval-precompile", daemon=True).start()
    return done


def warm(model, device: torch.device, workers: int | None = None) -> None:
    """Run ``model`` once (a ``SPLIT_DECODE_MIN``-token prefill with the last token's logits, then one decode step)
    on a throwaway cache with our kernels compile-only, their compilations on ``workers`` threads; returns when
    every compilation has finished."""
    from yoco_eval.ops import triton_kernels
    from yoco_eval.ops.attention import SPLIT_DECODE_MIN

    AsyncCompileMode = _async_compile_mode()
    workers = workers or min(8, os.cpu_count() or 1)
    with torch.cuda.device(device), torch.inference_mode(), ThreadPoolExecutor(workers) as pool:
        with AsyncCompileMode(pool), triton_kernels.compile_only():
            exercise(model, device, SPLIT_DECODE_MIN)
        torch.cuda.current_stream(device).synchronize()


def exercise(model, device, tokens: int) -> None:
    """The calls the warm-up makes: a ``tokens``-long prefill into a throwaway cache with the last token's logits,
    then one decode step (the Engine's contract: ``setup_cache``, ``forward(tokens, cache, start_pos,
    logits_from)``)."""
    cache = model.setup_cache(1, tokens + 16)
    ids = torch.zeros(1, tokens, dtype=torch.long, device=device)
    model(ids, cache=cache, start_pos=0, logits_from=1)
    model(ids[:, :1], cache=cache, start_pos=torch.full((1,), tokens, device=device))
