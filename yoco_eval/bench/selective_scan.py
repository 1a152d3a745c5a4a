"""Mamba-1's selective scan at long context on the GPU: the Triton kernel (:mod:`yoco_eval.ops.triton_scan`) against
the chunked PyTorch scan it replaces (Phi-4-mini-flash's shape: Di = 5120, N = 16, bf16 x/dt/B/C laid out as the
model passes them). Run on the device machine from the repo root:

    python -m yoco_eval.bench.selective_scan [out.json] [--lengths 65536 262144] [--configs 256:4:1 128:4:1]

Timing: the project's steady-state protocol (:mod:`yoco_eval.bench.protocol`: a cold call, warm-up at the timed
length until two calls agree, the median of >= 3 timed calls, each synchronized wall time). The chunk twin runs a
Python loop over 16-token chunks: it is timed only up to ``--twin-max-len`` tokens.
"""

from __future__ import annotations

import argparse
import json
from functools import partial

import torch

from yoco_eval.bench.protocol import Protocol, measure_steady, wallclock


def inputs(T: int, Di: int = 5120, N: int = 16, R: int = 160, seed: int = 0):
    """x a slice of the fused [x, z] projection, B and C slices of x_proj's output, dt around Mamba's init."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(1, T, 2 * Di, device="cuda", generator=g, dtype=torch.bfloat16)[..., :Di]
    proj = torch.randn(1, T, R + 2 * N, device="cuda", generator=g, dtype=torch.bfloat16)
    dt = torch.nn.functional.softplus(torch.randn(1, T, Di, device="cuda", generator=g, dtype=torch.bfloat16) - 4)
    A = -torch.arange(1, N + 1, device="cuda", dtype=torch.float32).expand(Di, N).contiguous()
    D = torch.ones(Di, device="cuda")
    return x, dt, A, proj[..., R : R + N], proj[..., R + N :], D


def timed(fn, protocol: Protocol) -> dict:
    t = measure_steady(lambda: {"s": wallclock(fn)[1]}, protocol, log=print)
    return {"ms": 1e3 * t.median["s"], "spread": t.spread["s"], **t.fields()}


def main(out: str, lengths: list[int], configs: list[str], twin_max_len: int, runs: int) -> None:
    from yoco_eval.ops.selective_scan import chunk_selective_scan
    from yoco_eval.ops.triton_scan import selective_scan_fwd

    protocol = Protocol(runs=runs)
    res = {"device": torch.cuda.get_device_name(), "Di": 5120, "N": 16, "dtype": "bfloat16", "rows": []}
    print(res["device"])
    for T in lengths:
        args = inputs(T)
        row = {"T": T, "triton": []}
        for cfg in configs:
            chunk, warps, carry = (int(v) for v in cfg.split(":"))
            print(f"T={T} triton chunk={chunk} warps={warps} carry_warps={carry}")
            r = timed(partial(selective_scan_fwd, *args, chunk=chunk, num_warps=warps, carry_warps=carry), protocol)
            row["triton"].append({"chunk": chunk, "warps": warps, "carry_warps": carry, **r})
            print(f"  median {r['ms']:.3f} ms ({T / r['ms'] * 1e3 / 1e6:.2f} M tokens/s)")
        if T <= twin_max_len:
            print(f"T={T} chunk twin (16-token chunks)")
            row["chunk_twin"] = timed(partial(chunk_selective_scan, *args, chunk=16), protocol)
            print(f"  median {row['chunk_twin']['ms']:.3f} ms")
        res["rows"].append(row)
        args = None  # free the inputs before the next length
        torch.cuda.empty_cache()
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {out}")


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m yoco_eval.bench.selective_scan", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default="/tmp/bench_selective_scan.json", help="results file (JSON)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[65536], help="prompt lengths T (default 65536)")
    ap.add_argument("--configs", nargs="+", default=["256:4:1"], help="Triton configs CHUNK:WARPS:CARRY_WARPS "
                    "(32 channels a warp; default 256:4:1, the kernel's)")  # fmt: skip
    ap.add_argument("--twin-max-len", type=int, default=8192, help="time the chunk twin only up to this T")
    ap.add_argument("--runs", type=int, default=3, help="timed runs (median; >= 3 follows the protocol)")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        ap.error("needs a CUDA GPU")
    main(a.out, a.lengths, a.configs, a.twin_max_len, a.runs)


if __name__ == "__main__":
    cli()
