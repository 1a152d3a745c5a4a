"""The self-decoder's retention on one prefill chunk on the GPU (YOCO-3B shape: 24 heads of 128, bf16, a state
carried in): RoPE + fla-core's chunked kernel (how the model ran it until 2026-11-27 e), fla-core with 128-token
blocks, fla-core's one-pass ``fused_chunk`` kernel, and yoco-eval's one-pass kernel with RoPE inside
(:mod:`yoco_eval.ops.triton_retention`) over its block configs. Run on the device machine:

    python reports/gpu/bench_retention.py [out.json] [T]

Times are medians of triton.testing.do_bench (CUDA events, warmed). ``max_diff`` is each way's largest output
difference from RoPE + fla-core (both in bf16; the GPU tests hold the kernels to the fp64 reference).
"""

from __future__ import annotations

import json
import sys

import torch
from triton.testing import do_bench

from yoco_eval.ops import triton_kernels
from yoco_eval.ops.rope import inv_freq, rope_tables
from yoco_eval.ops.triton_retention import rope_retention


def main(out: str | None = None, T: int = 32768) -> list[dict]:
    from fla.ops.simple_gla import chunk_simple_gla, fused_chunk_simple_gla

    B, H, D = 1, 24, 128
    dev, bf = "cuda", torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(B, T, H, D, device=dev, generator=g).to(bf) for _ in range(3))
    log_g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, device=dev, generator=g) * 2 + 4) / 16
    s0 = torch.randn(B, H, D, D, device=dev, generator=g) * 0.1
    pos = (65536 + torch.arange(T, device=dev)).expand(B, T)
    tables = rope_tables(pos, inv_freq(D, 10000.0, "yoco", dev), bf)
    scale = D**-0.5
    qr = triton_kernels.rope_(q.clone(), *tables, True)
    kr = triton_kernels.rope_(k.clone(), *tables, True, scale)
    ref, _ = chunk_simple_gla(qr, kr, v, g=log_g, scale=1.0, initial_state=s0, output_final_state=True)
    qs, ks = q.clone(), k.clone()  # rotated over and over while timing: only the time is used

    def rope_both():
        triton_kernels.rope_(qs, *tables, True)
        triton_kernels.rope_(ks, *tables, True)

    ways = {
        "rope": (rope_both, None),
        "fla_chunk64": (lambda: chunk_simple_gla(qr, kr, v, g=log_g, scale=1.0, initial_state=s0,
                                                 output_final_state=True), ref),  # fmt: skip
        "fla_chunk128": (lambda: chunk_simple_gla(qr, kr, v, g=log_g, scale=1.0, initial_state=s0,
                                                  output_final_state=True, chunk_size=128), None),  # fmt: skip
        "fla_fused_chunk": (lambda: fused_chunk_simple_gla(qr, kr, v, g=log_g, scale=1.0, initial_state=s0,
                                                           output_final_state=True), None),  # fmt: skip
    }
    for bv in (16, 32, 64):
        for warps in (4, 8):
            for stages in (1, 2, 3):
                cfg = (bv, warps, stages)
                ways[f"ours_bv{bv}_w{warps}_s{stages}"] = (
                    lambda cfg=cfg: rope_retention(q, k, v, log_g, tables, scale, s0, config=cfg), None)
    rows = []
    for name, (fn, _) in ways.items():
        try:
            res = fn()
            torch.cuda.synchronize()
            ms = do_bench(fn, warmup=5, rep=100, return_mode="median")
        except Exception as e:  # a config that does not compile (registers, shared memory) is recorded, not fatal
            rows.append({"way": name, "error": f"{type(e).__name__}: {str(e)[:200]}"})
            print(json.dumps(rows[-1]), flush=True)
            continue
        row = {"way": name, "T": T, "ms": ms}
        if name != "rope":
            o = res[0]
            row["max_diff"] = (o.float() - ref.float()).abs().max().item()
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = next(r["ms"] for r in rows if r["way"] == "rope") + next(r["ms"] for r in rows if r["way"] == "fla_chunk64")
    best = min((r for r in rows if r["way"].startswith("ours") and "ms" in r), key=lambda r: r["ms"], default=None)
    summary = {"rope_plus_fla_chunk64_ms": base, "best_ours": best}
    print(json.dumps(summary))
    if out:
        json.dump({"card": torch.cuda.get_device_name(), "rows": rows, "summary": summary}, open(out, "w"), indent=1)
    return rows


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None, int(sys.argv[2]) if len(sys.argv) > 2 else 32768)
