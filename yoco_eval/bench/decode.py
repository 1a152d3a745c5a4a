"""Decode attention at long context on the GPU: the Triton flash-decoding kernel's variants against the card's
measured copy bandwidth and the SDPA split-key path it replaces (YOCO-3B shape: 24 query heads, 8 key/value
heads, head dim 128, bf16; ``--fp8``: the opt-in fp8 cache, e4m3 + per-(token, head) fp32 scales in the cache's
layouts, token-contiguous values and head-major scales, and the same read from token-major values next to it). Run
on the device machine from the repo root:

    python -m yoco_eval.bench.decode [out.json] [--fp8]

Variants: keys per tile, pipeline stages, split counts (:data:`SPLIT_FACTORS` times the kernel's default) and, for
fp8, bf16 or fp16 products; 4 warps (8 tied or lost in every earlier sweep). Each time is the median of
triton.testing.do_bench (CUDA events, warmed). Bytes counted: every key and value of the context read once (the
floor for one query layer); bandwidth = bytes / time.
"""

from __future__ import annotations

import argparse
import itertools
import json
from functools import partial

import torch
from triton.testing import do_bench

from yoco_eval.ops import fp8 as fp8_format
from yoco_eval.ops import triton_kernels as tk
from yoco_eval.ops.attention import decode_attention

SPLIT_FACTORS = (None, 0.25, 0.5, 2)  # split counts swept, as multiples of the kernel's default (None)


def copy_bandwidth(nbytes: int = 2 << 30) -> float:
    src = torch.randn(nbytes // 2, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    t = do_bench(lambda: dst.copy_(src), warmup=50, rep=300, return_mode="median") / 1e3
    return 2 * nbytes / t  # read + write


def _quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [fp8_format.quantize(x[b]) for b in range(x.shape[0])]
    return torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts])


def bench_row(B: int, Tk: int, bandwidth: float, H: int = 24, Hk: int = 8, D: int = 128, fp8: bool = False) -> dict:
    g = torch.Generator(device="cuda").manual_seed(Tk + B)
    q = torch.randn(B, 1, H, D, device="cuda", generator=g, dtype=torch.bfloat16)
    k = torch.randn(B, Tk, Hk, D, device="cuda", generator=g, dtype=torch.bfloat16)
    v = torch.randn(B, Tk, Hk, D, device="cuda", generator=g, dtype=torch.bfloat16)
    L = torch.full((B,), Tk, device="cuda", dtype=torch.int32)
    ones = torch.ones(B, Tk, dtype=torch.bool, device="cuda")
    nbytes = 2 * B * Tk * Hk * D * 2
    quant = {}
    if fp8:  # the reference path reads the dequantized cache; the kernel reads e4m3 + scales
        (kq, ks), (vq, vs) = _quantize(k), _quantize(v)
        ks, vs = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (ks, vs))
        for x, xq, xs in ((k, kq, ks), (v, vq, vs)):  # in place, a row at a time (fp32 temporaries stay small)
            for b in range(B):
                x[b] = fp8_format.dequantize(xq[b], xs[b], torch.bfloat16)
        quant = {"k_scale": ks, "v_scale": vs}
        nbytes = 2 * B * Tk * Hk * (D + 4)
    sdpa = partial(decode_attention, q, k, v, ones, backend="sdpa")
    kk, vv = (kq, fp8_format.token_contiguous(vq)) if fp8 else (k, v)  # the cache's layouts
    ref = sdpa()
    t_sdpa = do_bench(sdpa, warmup=20, rep=200, return_mode="median")
    row = {"batch": B, "keys": Tk, "fp8": fp8, "bytes": nbytes, "floor_ms": nbytes / bandwidth * 1e3,
           "sdpa_split_ms": t_sdpa, "variants": []}  # fmt: skip
    print(f"B={B} Tk={Tk}: floor {row['floor_ms']:.3f} ms, SDPA split path {t_sdpa:.3f} ms")
    auto = partial(tk.decode_attention_splitk, q, kk, vv, L, **quant)
    row["auto_config_ms_before"] = do_bench(auto, warmup=20, rep=200, return_mode="median")  # again after the sweep
    # split counts: the default, a quarter, half and twice it (at 256 fp8 keys a tile, 3 stages fill a
    # multiprocessor's shared memory, one program each: the default then makes one wave, see _default_splits)
    grid = (((64, 128, 256), (4,), (3, 4), SPLIT_FACTORS, (False, True)) if fp8 else
            ((32, 64, 128), (4,), (3, 4), SPLIT_FACTORS, (False,)))  # fmt: skip
    for bn, nw, ns, smul, f16 in itertools.product(*grid):
        S = None if smul is None else max(1, int(smul * tk._default_splits(B * Hk, Tk, bn, fp8)))
        fn = partial(tk.decode_attention_splitk, q, kk, vv, L, splits=S, block_n=bn, num_warps=nw, num_stages=ns,
                     **quant, **({"fp16_operands": f16} if fp8 else {}))  # fmt: skip
        cfg = {"block_n": bn, "warps": nw, "stages": ns, "splits": S or "default", "fp16_operands": f16}
        try:
            diff = (fn().float() - ref.float()).abs().max().item()
            t = do_bench(fn, warmup=20, rep=200, return_mode="median")
        except Exception as e:  # noqa: BLE001 - a config that does not compile is recorded, not fatal
            row["variants"].append({**cfg, "error": str(e)[:120]})
            continue
        row["variants"].append({**cfg, "ms": t, "bytes_per_s": nbytes / (t / 1e3), "max_diff_vs_sdpa": diff})
    ok = [x for x in row["variants"] if "ms" in x]
    if not ok:
        print(f"   every variant failed: {row['variants'][0]['error']}")
        return row
    best = row["best"] = min(ok, key=lambda x: x["ms"])
    print(f"   best triton {best['ms']:.3f} ms = {best['bytes_per_s'] / 1e12:.2f} TB/s (block {best['block_n']}, "
          f"warps {best['warps']}, stages {best['stages']}, splits {best['splits']}, fp16 {best['fp16_operands']}); "
          f"max |diff| vs SDPA {best['max_diff_vs_sdpa']:.2e}")  # fmt: skip
    if fp8:  # the best of each operand type
        for f16 in (False, True):
            b = min((x for x in ok if x["fp16_operands"] == f16), key=lambda x: x["ms"])
            print(f"   {'fp16' if f16 else 'bf16'} operands: {b['ms']:.3f} ms = {b['bytes_per_s'] / 1e12:.2f} TB/s "
                  f"(block {b['block_n']}, warps {b['warps']}, stages {b['stages']}, splits {b['splits']})")
    row["auto_config_ms"] = do_bench(auto, warmup=20, rep=200, return_mode="median")
    print(f"   the kernel's own choice {tk._decode_config(B * Hk, Tk, fp8, fp8)}: {row['auto_config_ms']:.3f} ms "
          f"({row['auto_config_ms_before']:.3f} ms before the sweep)")
    if fp8:  # the same read from token-major values (the cache's layout before 035a5fd), its own default config
        tok = partial(tk.decode_attention_splitk, q, kk, vq, L, **quant)
        bn, ns = tk._decode_config(B * Hk, Tk, True)  # under one config, both layouts give the same bits
        same = torch.equal(tok(), auto(block_n=bn, num_stages=ns))
        row["token_major_values_ms"] = do_bench(tok, warmup=20, rep=200, return_mode="median")
        row["token_major_values_bitwise_equal"] = same
        print(f"   token-major values, default config {(bn, ns)}: "
              f"{row['token_major_values_ms']:.3f} ms (bitwise equal: {same})")
    return row


def main(out_path: str | None = None, fp8: bool = False) -> None:
    res = {"card": torch.cuda.get_device_name(), "copy_bytes_per_s": copy_bandwidth(), "rows": []}
    print(f"device copy bandwidth: {res['copy_bytes_per_s'] / 1e12:.2f} TB/s")
    shapes = ((1, 524288), (1, 1048576), (8, 524288)) if fp8 else ((1, 131072), (1, 524288), (1, 1048576), (4, 524288),
                                                                 (8, 524288))  # fmt: skip
    for B, Tk in shapes:
        res["rows"].append(bench_row(B, Tk, res["copy_bytes_per_s"], fp8=fp8))
        torch.cuda.empty_cache()
    if out_path:
        with open(out_path, "w") as f:
            json.dump(res, f, indent=1)


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m yoco_eval.bench.decode", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", help="write the full results here (JSON)")
    ap.add_argument("--fp8", action="store_true", help="time the opt-in fp8 cache (e4m3 + per-token scales)")
    args = ap.parse_args(argv)
    main(args.out, fp8=args.fp8)


if __name__ == "__main__":
    cli()
