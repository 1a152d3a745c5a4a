"""Phi-4-mini-flash on one GPU (the real 3.8B shape, seeded random weights, bf16): early-exit prefill against a
full forward of all 32 layers, peak memory against weights + K/V + 2 GB, decode per token against the bandwidth
floor. Run on the device machine from the repo root:

    python -m yoco_eval.bench.phi4flash --out reports/gpu/phi4flash_h100.json

Rows (every timing under the steady-state protocol of :mod:`yoco_eval.bench.protocol`: the cold call apart, warm-up
at the timed length, the median of 3 runs):

- ``early_exit``: what yoco-eval runs: the Engine's chunked prefill, where only layers 0..n/2 and the shared K/V
  run over every token and the 15 later layers only on the last one, then CUDA-graph decode steps.
  ``decode_floor_ms``: weights + one read of the shared K/V per layer that attends over it (9), over the card's
  measured copy bandwidth. ``mem_budget_bytes``: weights + the K/V of the prompt + 2 GiB (state and one chunk).
- ``full_forward``: the same chunks through all 32 layers at every position (what the HF code does over a prompt),
  logits of the last position only so that the head's cost is not counted against it.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial

MODEL = "phi4-mini-flash"
SLACK = 2 << 30  # the 2 GiB the acceptance allows for state and one chunk


def _prefill_all_layers(model, tokens, cache, chunk: int) -> None:
    import torch

    with torch.inference_mode():
        for s in range(0, tokens.shape[1], chunk):
            model(tokens[:, s : s + chunk], cache=cache, start_pos=s)


def full_forward_once(model, tokens, chunk: int) -> dict[str, float]:
    """One chunked prefill through every layer at every position; ``{"prefill_s": seconds}``."""
    from yoco_eval.bench.protocol import wallclock

    cache = model.setup_cache(1, tokens.shape[1])
    hook = model.model.final_layernorm.register_forward_hook(lambda m, i, o: o[:, -1:])
    try:
        _, seconds = wallclock(_prefill_all_layers, model, tokens, cache, chunk)
        return {"prefill_s": seconds}
    finally:
        hook.remove()
        del cache


def run(lengths: list[int], full_lengths: list[int], chunk: int, gen: int, runs: int, log=print, model_name=MODEL,
        device: str = "cuda", max_warmup: int = 2) -> dict:  # fmt: skip
    """The rows (see module docstring). ``model_name``/``device``: another preset or the CPU, for tests only (no
    bandwidth, peak-memory or CUDA-graph figures there)."""
    import torch

    from yoco_eval.bench.decode import copy_bandwidth
    from yoco_eval.bench.protocol import Protocol, autotune_policy, measure_steady
    from yoco_eval.generate import Engine
    from yoco_eval.profile import _generate_once, build_random, kv_bytes_per_token, kv_reads_per_token, preset_tokenizer

    bw = copy_bandwidth() if device == "cuda" else None
    if bw:
        log(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    model = build_random(model_name, device=device)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    per_tok, reads = kv_bytes_per_token(model), kv_reads_per_token(model)
    engine = Engine(model, preset_tokenizer(model_name), chunk_size=chunk, max_length=max(lengths) + gen + 1)
    V = model.config.vocab_size
    warm = [4 + i % (V - 4) for i in range(min(8192, max(lengths)))]
    engine.generate([warm], max_new_tokens=4, ignore_eos=True)  # load the kernels once
    protocol = Protocol(runs=runs, min_warmup=1, max_warmup=max_warmup)
    rows = []
    for T in sorted(set(lengths) | set(full_lengths)):
        g = torch.Generator().manual_seed(T)
        prompt = torch.randint(4, V, (T,), generator=g)
        base = {"model": model_name, "context_length": T, "chunk": chunk, "weights_bytes": weights,
                "kv_bytes": per_tok * T, "autotune": autotune_policy()}  # fmt: skip
        if T in lengths:
            log(f"early exit, {T} tokens")
            peaks: list = []
            row = {**base, "mode": "early_exit", "gen": gen}
            try:
                timing = measure_steady(partial(_generate_once, engine, [prompt.tolist()], gen, peaks), protocol, log)
                row.update(**timing.median, **timing.fields(), status="ok")
                if bw:
                    row["peak_mem_bytes"] = max(p for p, _ in peaks[len(timing.warmup) :])
                    row["prefill_peak_mem_bytes"] = max(q for _, q in peaks[len(timing.warmup) :])
                    row["mem_budget_bytes"] = weights + per_tok * (T + gen) + SLACK
                    row["decode_floor_ms"] = (weights + reads * per_tok * T) / bw * 1e3
            except torch.OutOfMemoryError as e:
                row.update(status="oom", error=str(e).splitlines()[0][:200])
            engine.drop_graphs()
            if bw:
                torch.cuda.empty_cache()
            rows.append(row)
            log(json.dumps({k: v for k, v in row.items() if k not in ("samples",)}))
        if T in full_lengths:
            log(f"full forward, {T} tokens")
            row = {**base, "mode": "full_forward"}
            tokens = prompt.to(device)[None]
            try:
                timing = measure_steady(partial(full_forward_once, model, tokens, chunk), protocol, log)
                row.update(**timing.median, **timing.fields(), status="ok")
            except torch.OutOfMemoryError as e:
                row.update(status="oom", error=str(e).splitlines()[0][:200])
            if bw:
                torch.cuda.empty_cache()
            rows.append(row)
            log(json.dumps({k: v for k, v in row.items() if k not in ("samples",)}))
    by = {(r["mode"], r["context_length"]): r for r in rows if r["status"] == "ok"}
    speedups = {
        T: by[("full_forward", T)]["prefill_s"] / by[("early_exit", T)]["prefill_s"]
        for T in full_lengths
        if ("full_forward", T) in by and ("early_exit", T) in by
    }
    for T, x in speedups.items():
        log(f"early-exit prefill at {T} tokens: {x:.2f}x faster than the full forward")
    return {"copy_bytes_per_s": bw, "kv_reads_per_decode_step": reads, "kv_bytes_per_token": per_tok,
            "early_exit_speedup": {str(k): v for k, v in speedups.items()}, "rows": rows}  # fmt: skip


def cli(argv: list[str] | None = None) -> int:
    from yoco_eval.profile import parse_lengths

    ap = argparse.ArgumentParser(prog="python -m yoco_eval.bench.phi4flash", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="results file (JSON)")
    ap.add_argument("--lengths", default="64k,256k,1m", help="early-exit prefill + decode lengths")
    ap.add_argument("--full-lengths", default="64k,256k",
                    help="full-forward lengths (quadratic: keep them short; '' for none)")
    ap.add_argument("--chunk", type=int, default=16384,
                    help="prefill chunk; 8K keeps state + one chunk inside 2 GB at 1M (measured: 1.05 GiB)")
    ap.add_argument("--gen", type=int, default=33, help="tokens generated per early-exit call (decode timing)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per row (median reported)")
    ap.add_argument("--max-warmup", type=int, default=2,
                    help="most warm-up calls at the timed length, the cold one included (a 256K full forward is ~20 s)")
    args = ap.parse_args(argv)
    import torch

    from yoco_eval.runinfo import write_record

    if not torch.cuda.is_available():
        print("error: this benchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    full = parse_lengths(args.full_lengths) if args.full_lengths.strip() else []
    res = run(parse_lengths(args.lengths), full, args.chunk, args.gen, args.runs,
              max_warmup=args.max_warmup)
    command = "python -m yoco_eval.bench.phi4flash " + " ".join(argv or sys.argv[1:])
    write_record(args.out, torch.cuda.get_device_name(), command, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
