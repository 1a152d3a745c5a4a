"""The self-decoder's q/k/v/g projections of one prefill chunk on the GPU (YOCO-3B shape, bf16): how the model
runs them now (four separate ``d x d`` GEMMs, each output contiguous for fla-core) against one batched GEMM over
the four weights (outputs still contiguous) and one fused ``d x 4d`` GEMM (outputs strided: fla-core would copy
them). Says whether batching the projections would shorten the prefill. Run on the device machine:

    python -m yoco_eval.bench.projections [out.json]

Times are medians of triton.testing.do_bench (CUDA events, warmed); TFLOP/s counts 2 * rows * d * 4d.
"""

from __future__ import annotations

import argparse
import json

import torch
from triton.testing import do_bench


def bench_rows(T: int, w: torch.Tensor) -> list[dict]:
    d = w.shape[1]
    w4 = w.view(4, d, d)
    x = torch.randn(T, d, device="cuda", dtype=torch.bfloat16)
    out4 = torch.empty(4, T, d, device="cuda", dtype=torch.bfloat16)
    ways = {
        "separate": lambda: [torch.mm(x, w4[i].t(), out=out4[i]) for i in range(4)],
        "batched": lambda: torch.bmm(x.expand(4, T, d), w4.transpose(1, 2), out=out4),
        "fused_strided": lambda: torch.mm(x, w.t()),
    }
    ref = torch.stack([x @ w4[i].t() for i in range(4)])
    ways["batched"]()
    same = bool(torch.equal(out4, ref))  # reported, not assumed: batching may pick other tiles
    rows = []
    for name, fn in ways.items():
        t = do_bench(fn, warmup=25, rep=200, return_mode="median") / 1e3
        rows.append({"rows": T, "way": name, "ms": 1e3 * t, "tflops": 2 * T * d * 4 * d / t / 1e12,
                     "batched_equals_separate": same})  # fmt: skip
        print(json.dumps(rows[-1]))
    return rows


def main(out: str | None = None) -> list[dict]:
    d = 3072
    w = torch.randn(4 * d, d, device="cuda", dtype=torch.bfloat16) * d**-0.5
    rows = [r for T in (16384, 32768) for r in bench_rows(T, w)]
    if out:
        json.dump({"card": torch.cuda.get_device_name(), "rows": rows}, open(out, "w"), indent=1)
    return rows


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m yoco_eval.bench.projections", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", help="write the rows here (JSON)")
    main(ap.parse_args(argv).out)


if __name__ == "__main__":
    cli()
