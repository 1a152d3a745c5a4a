"""What fla-core's autotuning picks on this GPU for YOCO's retention prefill, and what each config costs (the
evidence behind the Hopper pins in :mod:`yoco_eval.ops.retention`). Run on the GPU machine from the repo root:

    python -m yoco_eval.bench.fla_autotune --out reports/gpu/fla_autotune_h100.json

It runs fla-core's ``chunk_simple_gla`` at the YOCO-3B shape (24 heads of 128, bf16) with fla-core's FULL search
(no pins), then, for every autotuned kernel the call ran, lists each config's time from Triton's own benchmark and
the winner. The autotuning keys do not hold the sequence length, so one call at ``--tokens`` decides for all.
"""

from __future__ import annotations

import argparse
import sys

import torch


def _config(c) -> dict:
    return {"kwargs": dict(c.kwargs), "num_warps": c.num_warps, "num_stages": c.num_stages}


def measure(tokens: int, heads: int = 24, head_dim: int = 128) -> dict:
    from yoco_eval.ops.retention import _fla_tuners, fla_chunk_retention, full_fla_autotune

    full_fla_autotune()
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, tokens, heads, head_dim, device="cuda", generator=g).bfloat16() for _ in range(3))
    log_g = torch.nn.functional.logsigmoid(torch.randn(1, tokens, heads, device="cuda", generator=g) * 2) / 16
    fla_chunk_retention(q, k * head_dim**-0.5, v, log_g, torch.zeros(1, heads, head_dim, head_dim, device="cuda"))
    torch.cuda.synchronize()
    out = {}
    for name, tuner in _fla_tuners().items():  # the kernels the Hopper pins cover
        timings = getattr(tuner, "configs_timings", None) or {}
        best = getattr(tuner, "best_config", None)
        out[name] = {
            "configs": len(tuner.configs),
            "best": _config(best) if best is not None else None,
            "timings_ms": sorted(({**_config(c), "ms": t if isinstance(t, float) else list(t)}
                                  for c, t in timings.items()), key=lambda r: r["ms"] if isinstance(r["ms"], float)
                                 else r["ms"][0]),  # fmt: skip
        }
    return out


def cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m yoco_eval.bench.fla_autotune", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="results file (JSON)")
    ap.add_argument("--tokens", type=int, default=65536, help="sequence length of the call (default 65536)")
    args = ap.parse_args(argv)
    from yoco_eval.runinfo import hardware, write_record

    picks = measure(args.tokens)
    for name, r in picks.items():
        print(f"{name}: {r['configs']} configs, best {r['best']}")
        for t in r["timings_ms"]:
            print(f"    {t}")
    write_record(args.out, hardware(argparse.Namespace(device="cuda")),
                 "python -m yoco_eval.bench.fla_autotune " + " ".join(argv or sys.argv[1:]),
                 {"tokens": args.tokens, "heads": 24, "head_dim": 128, "kernels": picks})  # fmt: skip
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
