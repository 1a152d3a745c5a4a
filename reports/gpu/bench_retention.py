"""The self-decoder's retention on one prefill chunk on the GPU (YOCO-3B shape: 24 heads of 128, bf16, a state
carried in): RoPE + fla-core's chunked kernel + the output gate (how the model ran it until 2026-11-27 e),
fla-core with 128-token blocks, and yoco-eval's two-pass kernels with RoPE and the gate inside
(:mod:`yoco_eval.ops.triton_retention`) over their block configs. Run on the device machine:

    python reports/gpu/bench_retention.py [out.json] [T]

Times are medians of triton.testing.do_bench (CUDA events, warmed). ``max_diff`` is each way's largest output
difference from the unfused path (both in bf16; the GPU tests hold the kernels to the fp64 reference).
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
    from fla.ops.simple_gla import chunk_simple_gla

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

    z = torch.randn(B, T, H * D, device=dev, generator=g).to(bf)  # the output gate's input (g_proj)
    o_fla = ref

    def gate():
        triton_kernels.silu_gate_head_norm(z, o_fla, 1e-5)

    ways = {
        "rope": (rope_both, None),
        "fla_chunk64": (lambda: chunk_simple_gla(qr, kr, v, g=log_g, scale=1.0, initial_state=s0,
                                                 output_final_state=True), ref),  # fmt: skip
        "fla_chunk128": (lambda: chunk_simple_gla(qr, kr, v, g=log_g, scale=1.0, initial_state=s0,
                                                  output_final_state=True, chunk_size=128), None),  # fmt: skip
        "gate": (gate, None),
    }
    for bt in (64, 128):
        for w2 in (4, 8):
            for s2 in (1, 2):
                for per_sm in (2, 4, 8):
                    cfg = (bt, 64, 4, w2, s2, per_sm)
                    ways["ours_gated_" + "_".join(map(str, cfg))] = (
                        lambda cfg=cfg: rope_retention(q, k, v, log_g, tables, scale, s0, gate=z, config=cfg), None)

    def stages(cfg, reps=20) -> dict:
        """Mean ms of each stage (host prep, state pass, combine, output pass), from CUDA events between them."""
        evs, tot = [], {}

        def timer(name):
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            evs.append((name, e))

        for _ in range(reps):
            evs.clear()
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            rope_retention(q, k, v, log_g, tables, scale, s0, gate=z, config=cfg, _timer=timer)
            torch.cuda.synchronize()
            prev = start
            for name, e in evs:
                tot[name] = tot.get(name, 0.0) + prev.elapsed_time(e) / reps
                prev = e
        return tot

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
        if name.startswith("fla"):
            row["max_diff"] = (res[0].float() - ref.float()).abs().max().item()
        elif name.startswith("ours"):  # against the unfused path's gated output
            gated = triton_kernels.silu_gate_head_norm(z, ref, 1e-5)
            row["max_diff"] = (res[0].float() - gated.float()).abs().max().item()
            row["stages_ms"] = stages(tuple(int(x) for x in name.split("_")[2:]))
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = sum(next(r["ms"] for r in rows if r["way"] == w) for w in ("rope", "fla_chunk64", "gate"))
    best = min((r for r in rows if r["way"].startswith("ours") and "ms" in r), key=lambda r: r["ms"], default=None)
    summary = {"rope_fla_chunk64_gate_ms": base, "best_ours": best}
    print(json.dumps(summary))
    if out:
        json.dump({"card": torch.cuda.get_device_name(), "rows": rows, "summary": summary}, open(out, "w"), indent=1)
    return rows


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None, int(sys.argv[2]) if len(sys.argv) > 2 else 32768)
