"""The FFN's up-projection GEMM with SwiGLU in its epilogue, against cuBLAS's GEMM + the SwiGLU kernel.

``h = silu(x @ W1^T) * (x @ W2^T)`` with ``W = [W1; W2]`` ``[2N, K]`` (the fused fc1/gate weight). The fused kernel
(:func:`yoco_eval.ops.triton_kernels.swiglu_up`) keeps both accumulators of an output tile and writes only ``h``
``[M, N]``. This times it over tile configurations and row counts (the FFN runs at most ``FFN_ROWS`` rows at a time),
which set ``_SWIGLU_UP_CONFIG`` and ``SWIGLU_UP_MIN_ROWS``. Usage on the GPU: ``python -m
yoco_eval.bench.swiglu_gemm OUT.json``. (The pointer-based, non-persistent TMA and flattened-persistent versions of
commit 2cda956 were slower at 8,192 rows: ``reports/gpu/swiglu_gemm_variants_h100.log``.) It also times the
paired-weight variant (:func:`~yoco_eval.ops.triton_kernels.swiglu_up_paired`: one ``[BM, 2 BN]`` product a step,
where the shipped kernel issues two ``[BM, BN]`` ones on the same x tile), which the model would use only if it wins.
"""

from __future__ import annotations

import argparse
import json

import torch
from triton.testing import do_bench

from yoco_eval.ops import fused, triton_kernels

CONFIGS = [(128, 128, 64, 3, 8), (128, 128, 64, 4, 8), (256, 64, 64, 3, 8), (128, 64, 64, 4, 4),
           (128, 128, 128, 2, 8)]  # BM, BN, BK, stages, warps
PAIRED_CONFIGS = [(128, 128, 64, 3, 8), (128, 128, 64, 4, 8), (128, 64, 64, 4, 8), (256, 64, 64, 3, 8)]


def bench(fn, *args) -> float:
    """Median ms of ``fn(*args)`` (CUDA events, warmed)."""
    return do_bench(lambda: fn(*args), warmup=25, rep=100, return_mode="median")


def main(out_path):
    print(torch.cuda.get_device_name())
    res = {"device": torch.cuda.get_device_name(), "rows": []}
    K, N = 3072, 8192  # YOCO-3B: d = 3072, FFN hidden 8192
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1000, K, device="cuda", generator=g).bfloat16()
    w = (torch.randn(2 * N, K, device="cuda", generator=g) * K**-0.5).bfloat16()
    ab = x.double() @ w.double().T
    ref = torch.nn.functional.silu(ab[:, :N]) * ab[:, N:]
    wp = triton_kernels.pair_swiglu_weight(w)
    e = [((h.double() - ref).norm() / ref.norm()).item() for h in
         (fused._swiglu_up(x, w), triton_kernels.swiglu_up(x, w, min_rows=1),
          triton_kernels.swiglu_up_paired(x, wp, PAIRED_CONFIGS[0]))]  # fmt: skip
    res["check_rel_l2"] = {"base": e[0], "fused": e[1], "paired": e[2]}
    print(f"check 1000 rows: rel L2 {e[1]:.3g} fused, {e[2]:.3g} paired, {e[0]:.3g} cuBLAS + SwiGLU")
    for M in (1024, 2048, 4096, 8192, 16384, 32768):
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        flop = 2 * M * K * 2 * N
        t_gemm = bench(torch.nn.functional.linear, x, w)
        t_base = bench(fused._swiglu_up, x, w)
        row = {"M": M, "cublas_gemm_ms": t_gemm, "cublas_tflops": flop / t_gemm / 1e9, "base_ms": t_base,
               "fused": []}
        print(f"M={M}: cuBLAS GEMM {t_gemm:.3f} ms ({flop / t_gemm / 1e9:.0f} TFLOP/s), + SwiGLU {t_base:.3f} ms")
        for cfg in CONFIGS:
            try:
                t = bench(triton_kernels.swiglu_up, x, w, cfg, 1)
            except Exception as err:  # a config that does not fit (shared memory, registers)
                print(f"  {cfg}: failed ({type(err).__name__}: {str(err).splitlines()[0][:100]})")
                continue
            row["fused"].append({"cfg": cfg, "ms": t, "tflops": flop / t / 1e9})
            print(f"  {cfg}: {t:.3f} ms ({flop / t / 1e9:.0f} TFLOP/s), {t / t_base:.3f}x the base")
        row["paired"] = []
        for cfg in PAIRED_CONFIGS:
            try:
                t = bench(triton_kernels.swiglu_up_paired, x, wp, cfg)
            except Exception as err:
                print(f"  paired {cfg}: failed ({type(err).__name__}: {str(err).splitlines()[0][:100]})")
                continue
            row["paired"].append({"cfg": cfg, "ms": t, "tflops": flop / t / 1e9})
            print(f"  paired {cfg}: {t:.3f} ms ({flop / t / 1e9:.0f} TFLOP/s), {t / t_base:.3f}x the base")
        res["rows"].append(row)
    json.dump(res, open(out_path, "w"), indent=1)


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m yoco_eval.bench.swiglu_gemm", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default="/tmp/bench_swiglu_gemm.json", help="results file (JSON)")
    main(ap.parse_args(argv).out)


if __name__ == "__main__":
    cli()
