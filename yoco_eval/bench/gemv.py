"""Decode's weight reads at batch 1: the one-row Triton GEMV (:func:`yoco_eval.ops.triton_kernels.gemv`) against
cuBLAS on YOCO-3B's projections, each timed inside a CUDA graph (as decode runs them), with its fused epilogue
(residual add; SwiGLU over the fused up-projection) against cuBLAS plus the separate pass it replaces. Each timed
call runs the GEMV over enough distinct copies of the weight to pass 4x the L2 cache (as decode reads every weight
once a step, from HBM); a time is per GEMV. Run on the device machine from the repo root:

    python -m yoco_eval.bench.gemv [out.json]

Prints each shape's cuBLAS time, the best GEMV config and the weights' read rate, then one decode step's GEMV
total (26 layers' projections plus the K/V projection and the LM head) for cuBLAS and for each config.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys

import torch
import torch.nn.functional as F
from triton.testing import do_bench_cudagraph

from yoco_eval.ops import fused
from yoco_eval.ops import triton_kernels as tk
from yoco_eval.runinfo import write_record

D, FFN, VOCAB = 3072, 8192, 100288
# (name, rows of W, K, epilogue, uses per decode step): YOCO-3B, 13 self-decoder and 13 cross-decoder layers
SHAPES = (
    ("self in-proj (q, k, v, g, gate logits)", 4 * D + 24, D, "plain", 13),
    ("cross q-proj", D, D, "plain", 13),
    ("out-proj + residual", D, D, "residual", 26),
    ("up-proj + SwiGLU", 2 * FFN, D, "swiglu", 26),
    ("down-proj + residual", D, FFN, "residual", 26),
    ("shared K/V projection", 2 * 1024, D, "plain", 1),
    ("LM head", VOCAB, D, "plain", 1),
)
CONFIGS = list(itertools.product((4, 8, 16), (256, 512, 1024), (4, 8)))


def _cublas(x, w, epi, res):
    if epi == "residual":
        return lambda: res.view(1, -1).addmm_(x.view(1, -1), w.t())
    if epi == "swiglu":
        return lambda: fused.silu_mul(*F.linear(x, w).chunk(2, dim=-1))
    return lambda: F.linear(x, w)


def _over(fns):
    """One call running each of ``fns`` (one per weight copy)."""

    def run():
        for fn in fns:
            fn()

    return run


def _copies(nbytes: int) -> int:
    l2 = getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "L2_cache_size", 50 << 20)
    return max(1, -(-4 * l2 // nbytes))


def bench(rep: int = 100) -> dict:
    g = torch.Generator(device="cuda").manual_seed(0)
    res = {"card": torch.cuda.get_device_name(), "shapes": [], "configs": [list(c) for c in CONFIGS]}
    for name, n, k, epi, uses in SHAPES:
        x = torch.randn(1, 1, k, device="cuda", generator=g, dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", generator=g, dtype=torch.bfloat16) * k**-0.5
        n_out = n // 2 if epi == "swiglu" else n
        r0 = torch.randn(1, 1, n_out, device="cuda", generator=g, dtype=torch.bfloat16)
        res_buf = r0.clone()
        want = _cublas(x, w, epi, r0.clone())()
        ws = [w] + [w.clone() for _ in range(_copies(n * k * 2) - 1)]  # streamed from HBM, as in decode
        t_cublas = do_bench_cudagraph(_over([_cublas(x, c, epi, res_buf) for c in ws]), rep=rep) * 1e3 / len(ws)
        row = {"name": name, "rows": n, "k": k, "epilogue": epi, "uses": uses, "bytes": n * k * 2,
               "weight_copies": len(ws), "cublas_us": t_cublas, "gemv_us": {}, "max_diff": {}}  # fmt: skip
        for cfg in CONFIGS:
            kw = {"residual": res_buf, "out": res_buf} if epi == "residual" else {"swiglu": epi == "swiglu"}
            if epi == "residual":
                res_buf.copy_(r0)
            got = tk.gemv(x, w, config=cfg, **kw)
            row["max_diff"][str(cfg)] = (got.float() - want.float()).abs().max().item()
            fn = _over([functools.partial(tk.gemv, x, c, config=cfg, **kw) for c in ws])
            row["gemv_us"][str(cfg)] = do_bench_cudagraph(fn, rep=rep) * 1e3 / len(ws)  # us (the residual drifts)
        best = min(row["gemv_us"], key=row["gemv_us"].get)
        bw = lambda t, nbytes=row["bytes"]: nbytes / (t * 1e-6) / 1e12  # noqa: E731
        print(f"{name:40s} {n:6d} x {k:5d}: cuBLAS {t_cublas:7.1f} us ({bw(t_cublas):.2f} TB/s); GEMV best "
              f"{row['gemv_us'][best]:7.1f} us ({bw(row['gemv_us'][best]):.2f} TB/s) at {best}, "
              f"max |diff| {row['max_diff'][best]:.2e}")  # fmt: skip
        res["shapes"].append(row)
    step_cublas = sum(r["cublas_us"] * r["uses"] for r in res["shapes"])
    step = {str(c): sum(r["gemv_us"][str(c)] * r["uses"] for r in res["shapes"]) for c in CONFIGS}
    step_best = sum(min(min(r["gemv_us"].values()), r["cublas_us"]) * r["uses"] for r in res["shapes"])
    one = min(step, key=step.get)
    res.update(step_cublas_us=step_cublas, step_gemv_us=step, step_best_mix_us=step_best)
    print(f"one decode step's projections: cuBLAS {step_cublas:.0f} us; GEMV with one config {step[one]:.0f} us at "
          f"{one}; each shape's faster of the two {step_best:.0f} us")  # fmt: skip
    return res


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m yoco_eval.bench.gemv", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", help="write the full results here (JSON)")
    args = ap.parse_args(argv)
    res = bench()
    if args.out:  # with the card, date, commit and command every recorded result carries
        command = "python -m yoco_eval.bench.gemv " + " ".join(argv if argv is not None else sys.argv[1:])
        write_record(args.out, res.pop("card"), command, res)


if __name__ == "__main__":
    cli()
