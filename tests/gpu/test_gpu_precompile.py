"""Compiling ahead (yoco_eval.model.precompile) on the GPU: once ``Engine.ready()`` returns, a first chunked prefill
and CUDA-graph decode of YOCO-3B load no Triton kernel the warm-up did not compile, and generate the same tokens as
a process that compiles on first use. Each side runs in a fresh process with an empty Triton cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gpu

SCRIPT = r"""
import json, sys, threading, time
from triton import knobs
events = []
def listen(*, src, metadata, times, cache_hit, **_):
    name = getattr(getattr(src, "fn", None), "__name__", None) or str(metadata.get("name", "?"))
    events.append([name, threading.current_thread().name, bool(cache_hit)])
knobs.compilation.listener = listen
import torch
from yoco_eval.generate import Engine
from yoco_eval.profile import build_random, preset_tokenizer
model = build_random("yoco-3b")
t0 = time.perf_counter()
engine = Engine(model, preset_tokenizer("yoco-3b"), chunk_size=16384, max_length=40000)
engine.ready()
t_ready = time.perf_counter() - t0
ahead = list(events)
g = torch.Generator().manual_seed(0)
prompt = torch.randint(100, 90000, (20001,), generator=g).tolist()  # two chunks, the last one short and odd
out = engine.generate([prompt], max_new_tokens=12)[0].tokens
print(json.dumps({"ready_s": t_ready, "ahead": ahead, "after": events[len(ahead):], "tokens": out}))
"""


def _run(tmp_path, precompile: bool) -> dict:
    env = {**os.environ, "YOCO_EVAL_PRECOMPILE": "1" if precompile else "0",
           "TRITON_CACHE_DIR": str(tmp_path / f"triton-{int(precompile)}")}  # fmt: skip
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_after_ready_the_first_prefill_and_decode_compile_nothing(tmp_path):
    warm, cold = _run(tmp_path, True), _run(tmp_path, False)
    ours = sorted({e[0] for e in warm["ahead"]})
    workers = {e[1] for e in warm["ahead"]}
    print(f"ahead: {len(warm['ahead'])} kernels in {warm['ready_s']:.2f} s on threads {sorted(workers)}: {ours}")
    print(f"after ready: {warm['after']}; without it, {len(cold['after'])} kernels compiled on first use")
    assert warm["after"] == [], "kernels the warm-up missed"
    assert {"_rms_norm_kernel", "_retention_step_kernel", "_decode_split_kernel"} <= set(ours)
    assert {e[0] for e in cold["after"]} <= set(ours)  # every kernel a first run compiles, the warm-up did
    assert warm["tokens"] == cold["tokens"]
