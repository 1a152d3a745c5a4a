"""Decode's host loop at long context: what each way of driving the CUDA-graph decode step costs a token.

YOCO-3B (random weights, bf16) after one prompt of ``--context`` tokens, each way under the steady-state protocol
(:mod:`yoco_eval.bench.protocol`: cold call apart, warm-up, median of 3):

* ``generate``: :meth:`Engine.generate` with ``ignore_eos`` (the product's loop: step k+1 is queued before the host
  reads step k's tokens); ``decode_ms`` = its decode time / (``gen`` - 1), as ``yoco-eval profile`` reports it.
* ``sync``: the loop before the look-ahead, on the same graph: the argmax, the tokens read to the host, then the
  next step queued (the GPU waits for the host every step).
* ``replay``: the graph replayed ``gen`` - 1 times back to back, nothing else: the floor of any loop.

Run on the device machine from the repo root::

    python -m yoco_eval.bench.decode_loop --out decode_loop.json [--context 512k] [--gen 64] [--kv-dtype fp8]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from yoco_eval.bench.protocol import Protocol, autotune_policy, measure_steady
from yoco_eval.profile import build_random, parse_lengths, preset_tokenizer
from yoco_eval.runinfo import hardware, write_record


def _ms_per_step(fn, steps: int) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0) / steps


@torch.inference_mode()
def bench(context: int, gen: int, kv_dtype: str = "auto", model_name: str = "yoco-3b", log=print) -> dict:
    from yoco_eval.generate import Engine

    model = build_random(model_name)
    model.set_kv_dtype(kv_dtype)
    engine = Engine(model, preset_tokenizer(model_name), chunk_size=65536, max_length=context + gen + 1)
    V = model.config.vocab_size
    prompt = torch.randint(4, V, (context,)).tolist()
    rows = {}

    def generate():
        o = engine.generate([prompt], max_new_tokens=gen, ignore_eos=True)[0]
        return {"decode_ms": 1000 * o.decode_s / (gen - 1)}

    rows["generate"] = measure_steady(generate, Protocol(), log=log)
    # the same graph, its cache holding the prompt (a replayed step reads the whole buffer under a mask: its cost
    # does not depend on what the cache holds)
    g = engine.graph_decoder(1, context + gen)
    engine.prefill([prompt], g.cache)
    start = torch.tensor([context], device="cuda")
    first = torch.tensor([5], device="cuda")

    def sync_loop():
        tok, pos = first, start
        for _ in range(gen - 1):
            tok = g.step(tok, pos).argmax(-1)
            tok.tolist()  # the host reads the tokens before it queues the next step
            pos = pos + 1

    def replay_loop():
        for _ in range(gen - 1):
            g.graph.replay()

    rows["sync"] = measure_steady(lambda: {"decode_ms": _ms_per_step(sync_loop, gen - 1)}, Protocol(), log=log)
    rows["replay"] = measure_steady(lambda: {"decode_ms": _ms_per_step(replay_loop, gen - 1)}, Protocol(), log=log)
    out = {"model": model_name, "context_length": context, "gen": gen, "kv_dtype": kv_dtype,
           "autotune": autotune_policy(), "ways": {k: t.fields() for k, t in rows.items()}}  # fmt: skip
    for k, t in rows.items():
        log(f"{k:>9}: {t.median['decode_ms']:.3f} ms a token (spread {t.spread['decode_ms']:.1%}, "
            f"cold {t.cold['decode_ms']:.3f})")  # fmt: skip
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--context", default="512k")
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--kv-dtype", default="auto", choices=["auto", "fp8"])
    a = ap.parse_args(argv)
    (context,) = parse_lengths(a.context)
    res = bench(context, a.gen, a.kv_dtype)
    command = "python -m yoco_eval.bench.decode_loop " + " ".join(argv if argv is not None else sys.argv[1:])
    write_record(a.out, hardware(argparse.Namespace(device="cuda")), command, res)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
