"""``yoco-eval profile``: memory, prefill latency, decode speed and throughput against context length.

Reproduces the paper's Figures 7-10 (YOCO against a same-size Transformer) on one GPU, with random weights (the
timing does not depend on them), and optionally re-measures peers in the same run (FLA's YOCO, HF Llama).
Writes ``profile.json`` (schema ``yoco-eval/profile/1``) that ``yoco-eval report`` renders as charts.

Method: each model is built once; kernels are warmed at a short length first; times are taken after a device
synchronize (wall clock around the synchronized region); peak memory is ``torch.cuda.max_memory_allocated``
after a reset, so it counts weights + caches + activations. A length that does not fit is recorded as
``oom`` with its estimated need (weights + caches at that length + the activation overhead measured at the
largest length that fit).
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import time
from functools import partial
from pathlib import Path

import torch

from yoco_eval.bench.protocol import PROTOCOL, Protocol, autotune_policy, measure_steady, require_protocol, wallclock
from yoco_eval.errors import YocoEvalError


def parse_lengths(text: str) -> list[int]:
    """Lengths in the given order (the one syntax: :func:`yoco_eval.axes.parse_lengths`)."""
    from yoco_eval.axes import parse_lengths as parse

    return parse(text, sort=False)


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak() -> int | None:
    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def _reset_peak() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


PROTOCOL_TEXT = (
    f"{PROTOCOL}: each row's first call at its length is recorded apart as 'cold'; warm-up calls at that length "
    "until two consecutive ones agree within 3%; 'median' and 'spread' ((max - min) / median) of the timed runs"
)


def _git_commit() -> str:
    from yoco_eval.runinfo import git_commit

    return (git_commit() or "unknown")[:12]


def build_random(name: str, device="cuda", dtype=None, **backends):
    """The preset ``name`` (YOCO, Transformer or Phi4Flash) with its seeded random weights, built in place on
    ``device`` (see ``build_preset``); on ``"meta"``, sizes only."""
    from yoco_eval.model.checkpoint import build_preset, preset_config

    dtype = dtype or (torch.bfloat16 if device != "cpu" else torch.float32)
    return build_preset(preset_config(name), device, dtype, **backends)


def preset_tokenizer(name: str):
    """A tokenizer that decodes every id of preset ``name``'s vocabulary (random weights emit any of them): the
    preset's own (o200k for Phi-4-mini-flash), else YOCO's cl100k + 4."""
    from yoco_eval.model.phi4flash_config import PRESET_TOKENIZERS
    from yoco_eval.tokenizer import YOCOTokenizer, load_tokenizer

    return load_tokenizer(PRESET_TOKENIZERS[name]) if name in PRESET_TOKENIZERS else YOCOTokenizer()


def kv_bytes_per_token(model) -> int:
    """Bytes of K/V one token adds to ``model``'s cache in bf16 (every layer's for a Transformer, the ONE shared
    K/V for YOCO and Phi4Flash: 5,120 for Phi-4-mini-flash), measured on a meta-device cache."""
    c = model.setup_cache(1, 1, device="meta", dtype=torch.bfloat16)
    return sum(x.nbytes() for x in c.kv)


def kv_reads_per_token(model) -> int:
    """How many times one decode step reads the whole shared K/V: once per cross-decoder layer for YOCO; for
    Phi4Flash once per cross-attention layer plus the full-attention layer that writes it (n/2 - 1 + 1)."""
    cfg = model.config
    if hasattr(cfg, "layer_kind"):  # Phi4Flash
        return sum(cfg.layer_kind(i) in ("full", "cross") for i in range(cfg.num_hidden_layers))
    return len(model.cross_decoder.layers)


@torch.inference_mode()
def profile_model(name: str, lengths: list[int], gen: int, chunk: int, batch: int = 1, warm: int = 8192,
                  log=print, device: str = "cuda", kv_dtype: str = "auto", protocol: Protocol | None = None,
                  **backends) -> list[dict]:  # fmt: skip
    """Rows of ``name`` at each length, each timed under ``protocol`` (default :class:`Protocol`: cold call apart,
    warm-up at the length, median of 3). ``prefill_s`` / ``decode_ms_per_token`` / ``throughput_tok_s`` are the
    medians; ``peak_mem_bytes`` is the largest peak of the timed runs."""
    from yoco_eval.generate import Engine

    protocol = protocol or Protocol()
    model = build_random(name, device=device, **backends)
    if kv_dtype not in model.kv_dtypes:
        log(f"{name}: kv_dtype={kv_dtype} is for YOCO only; measuring it with its own cache dtype")
    else:
        model.set_kv_dtype(kv_dtype)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    per_tok = kv_bytes_per_token(model)
    engine = Engine(model, preset_tokenizer(name), chunk_size=chunk, max_length=max(lengths) + gen + 1)
    V = model.config.vocab_size
    engine.generate([[4 + i % (V - 4) for i in range(warm)]] * batch, max_new_tokens=4, ignore_eos=True)  # warm kernels
    engine.drop_graphs()  # its decode graph's cache would count in every row's peak
    rows, overhead = [], None
    for T in lengths:
        row = {"model": name, "context_length": T, "batch": batch, "kv_dtype": model.kv_dtype, "status": "ok",
               "error": None, "autotune": autotune_policy(),
               "weights_bytes": weights, "kv_cache_bytes": per_tok * (T + gen) * batch}  # fmt: skip
        prompt = torch.randint(4, V, (T,)).tolist()
        peaks: list[tuple[int, int | None]] = []
        try:
            timing = measure_steady(partial(_generate_once, engine, [prompt] * batch, gen, peaks), protocol, log=log)
            timed = peaks[len(timing.warmup) :]  # the warm-up calls' peaks may hold one-time workspaces
            peak = max(p for p, _ in timed)
            pre_peaks = [q for _, q in timed if q is not None]
            row.update(timing.median, peak_mem_bytes=peak, prefill_peak_mem_bytes=max(pre_peaks, default=None))
            row.update(timing.fields())
            overhead = max(overhead or 0, peak - weights - row["kv_cache_bytes"])
        except torch.OutOfMemoryError as e:
            row.update(status="oom", error=str(e).splitlines()[0][:200], prefill_s=None, decode_ms_per_token=None,
                       peak_mem_bytes=None, throughput_tok_s=None)  # fmt: skip
            if overhead is not None:
                row["estimated_mem_bytes"] = weights + row["kv_cache_bytes"] + overhead
        engine.drop_graphs()
        rows.append(row)
        log(_fmt(row))
        if row["status"] == "oom":
            for T2 in lengths[lengths.index(T) + 1 :]:
                r2 = {**row, "context_length": T2, "kv_cache_bytes": per_tok * (T2 + gen) * batch}
                if overhead is not None:
                    r2["estimated_mem_bytes"] = weights + r2["kv_cache_bytes"] + overhead
                rows.append(r2)
                log(_fmt(r2))
            break
    del engine, model
    _reset_peak()
    return rows


def _generate_once(engine, prompts: list[list[int]], gen: int, peaks: list) -> dict[str, float]:
    """One timed generate call (prefill + ``gen`` decode steps); appends (peak, prefill peak) bytes to ``peaks``."""
    _reset_peak()
    o = engine.generate(prompts, max_new_tokens=gen, ignore_eos=True)[0]
    _sync()
    peaks.append((_peak() or 0, o.stats.get("prefill_peak_bytes")))
    return {"prefill_s": o.prefill_s, "decode_ms_per_token": 1000 * o.decode_s / max(1, gen - 1),
            "throughput_tok_s": len(prompts) * gen / (o.prefill_s + o.decode_s)}  # fmt: skip


def _fmt(r: dict) -> str:
    if r["status"] != "ok":
        est = r.get("estimated_mem_bytes")
        return f"{r['model']:>16} {r['context_length']:>8} {r['status']}" + (
            f" (needs ~{est / 2**30:.1f} GiB)" if est else ""
        )
    return (f"{r['model']:>16} {r['context_length']:>8} b{r['batch']} prefill {r['prefill_s']:7.3f} s  "
            f"decode {r['decode_ms_per_token']:7.2f} ms/tok  peak {r['peak_mem_bytes'] / 2**30:6.2f} GiB  "
            f"thr {r['throughput_tok_s']:7.1f} tok/s")  # fmt: skip


def add_parser(sub) -> None:
    p = sub.add_parser("profile", help="memory / prefill / decode / throughput against context length (GPU)")
    p.add_argument("--models", default="yoco-3b,transformer-3b", help="comma-separated presets")
    p.add_argument("--lengths", default="32k,64k,128k,256k,512k,1m")
    p.add_argument("--gen", type=int, default=32, help="tokens generated per length (decode timing)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--chunk-size", type=int, default=None,
                   help="prefill chunk (default: the documented GPU default, yoco_eval.generate.DEFAULT_CHUNK_SIZE)")
    p.add_argument("--retention-backend", default="auto", help="auto, fla (fla-core's Triton kernels) or torch")
    p.add_argument("--kv-dtype", default="auto", choices=["auto", "fp8"], help="YOCO's shared K/V storage")
    p.add_argument("--peers", default="", help="also re-measure peers in this run: fla, hf (comma-separated)")
    p.add_argument("--peer-lengths", default="128k,256k,512k,1m")
    p.add_argument("--fla-autotune", default="full", choices=["full", "pinned"],
                   help="with --peers fla: fla-core's full autotuning for both sides (default), or yoco-eval's Hopper "
                   "pins for both (fla-core's own H100 picks, no search: minutes shorter)")  # fmt: skip
    p.add_argument("--runs", type=int, default=3, help="timed runs per row, median reported (>= 3 to compare)")
    p.add_argument("--warmup", type=int, default=2,
                   help="least warm-up calls at the timed length, the cold one included (>= 1 to compare)")  # fmt: skip
    p.add_argument("--max-warmup", type=int, default=5,
                   help="most warm-up calls while two consecutive ones differ by more than 3%%")  # fmt: skip
    p.add_argument("--out", default="reports/profile/profile.json")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (rows, weights, K/V bytes, memory estimate per length) without a GPU")
    p.set_defaults(func=main)


def protocol_from_args(args) -> Protocol:
    """The timing protocol the flags ask for; refuses (one error line) a comparison that would not follow it."""
    protocol = Protocol(runs=args.runs, min_warmup=args.warmup, max_warmup=max(args.warmup, args.max_warmup))
    n_models = sum(len([x for x in names.split(",") if x.strip()]) for names in (args.models, args.peers))
    if n_models > 1 and not protocol.follows:
        raise YocoEvalError(
            f"refusing to compare {n_models} models with --runs {args.runs} --warmup {args.warmup}: every compared "
            "row needs a warm-up at the timed length and >= 3 timed runs (use --runs 3 --warmup 1 or more, or "
            "profile one model at a time)"
        )
    return protocol


def dry_run(args, lengths: list[int], protocol: Protocol) -> int:
    """Print what a profile would measure, with each model's weights and K/V bytes from a meta-device build."""
    from yoco_eval.config import get_config
    from yoco_eval.model.checkpoint import build_model

    print(f"profile plan: chunk {args.chunk_size} tokens, batch {args.batch}, {args.gen} generated tokens, "
          f"{protocol.runs} timed runs after >= {protocol.min_warmup} warm-up calls per row")  # fmt: skip
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        with torch.device("meta"):
            model = build_model(get_config(name)).to(torch.bfloat16)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        per_tok = kv_bytes_per_token(model)
        est = ", ".join(f"{_fmt_len(T)}: {(weights + per_tok * (T + args.gen) * args.batch) / 2**30:.1f} GiB"
                        for T in lengths)  # fmt: skip
        print(f"  {name}: {weights / 2**30:.2f} GiB of bf16 weights, {per_tok:,} K/V bytes per token; weights + K/V "
              f"at {est}")  # fmt: skip
    peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    if peers:
        print(f"  peers {', '.join(peers)} at {args.peer_lengths}")
    print(f"would write {args.out} (needs a CUDA GPU)")
    return 0


def _fmt_len(T: int) -> str:
    return f"{T // 2**20}M" if T % 2**20 == 0 else f"{T // 1024}K" if T % 1024 == 0 else str(T)


def main(args) -> int:
    from yoco_eval.generate import DEFAULT_CHUNK_SIZE

    protocol = protocol_from_args(args)
    lengths = parse_lengths(args.lengths)
    peer_lengths = parse_lengths(args.peer_lengths)
    if args.chunk_size is None:
        args.chunk_size = DEFAULT_CHUNK_SIZE["cuda"]
    if args.dry_run:
        return dry_run(args, lengths, protocol)
    if not torch.cuda.is_available():
        raise YocoEvalError("profile needs a CUDA GPU (it measures GPU memory and latency)")
    peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    if "fla" in peers:  # FLA's YOCO runs our fla-core kernels: both sides get one policy (each row says which)
        from yoco_eval.ops.retention import full_fla_autotune, prepare_fla

        if args.fla_autotune == "full":
            full_fla_autotune()
        else:
            prepare_fla()
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        rows += profile_model(name, lengths, args.gen, args.chunk_size, args.batch, kv_dtype=args.kv_dtype,
                              retention_backend=args.retention_backend, protocol=protocol)  # fmt: skip
    for peer in peers:
        from yoco_eval.bench.peers import measure

        try:
            rows += measure(peer, peer_lengths, protocol=protocol)
        except ImportError as e:
            print(f"peer {peer} skipped: {e}")
    write_profile(Path(args.out), rows, card=torch.cuda.get_device_name(), command=recorded_command(args, peers))
    print(f"wrote {args.out}")
    return 0


def recorded_command(args, peers: list[str]) -> str:
    """The command line a profile file records: every option that shaped its rows (the peer options only when a
    peer ran; ``--dry-run`` never writes a file)."""
    skip = {"func", "command", "verbose", "dry_run"} | (set() if peers else {"peers", "peer_lengths", "fla_autotune"})
    return "yoco-eval profile " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in skip
    )


def write_profile(out: Path, rows: list[dict], card: str, command: str) -> dict:
    """Write ``rows`` as a ``yoco-eval/profile/1`` file (atomically), after :func:`require_protocol` accepts them:
    a comparison whose rows are not steady state is refused with one error line and nothing is written."""
    require_protocol(rows)
    doc = {"schema": "yoco-eval/profile/1", "card": card,
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "commit": _git_commit(),
           "command": command, "protocol": PROTOCOL_TEXT, "rows": rows}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(out)
    return doc


@torch.inference_mode()
def bench_loglikelihood(name: str = "yoco-3b", ctx_len: int = 32768, n_ctx: int = 4, n_choices: int = 4,
                        cont_len: int = 16, chunk: int = 16384, batch_size: int = 4, log=print,
                        device: str = "cuda") -> dict:  # fmt: skip
    """lm-eval style loglikelihood requests with long contexts: time, tokens/s, and peak memory against
    weights + one cache + one chunk (no ``[T, vocab]`` logits are ever made)."""
    from yoco_eval.generate import Engine

    model = build_random(name, device=device)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    engine = Engine(model, preset_tokenizer(name), chunk_size=chunk, max_length=ctx_len + cont_len + 8)
    g = torch.Generator().manual_seed(0)
    reqs = []
    for _ in range(n_ctx):
        ctx = torch.randint(4, model.config.vocab_size, (ctx_len,), generator=g).tolist()
        for _ in range(n_choices):
            reqs.append((ctx, torch.randint(4, model.config.vocab_size, (cont_len,), generator=g).tolist()))
    engine.loglikelihood(reqs[:2], batch_size=batch_size)  # warm-up
    _reset_peak()
    _sync()
    t = time.perf_counter()
    out = engine.loglikelihood(reqs, batch_size=batch_size)
    _sync()
    dt = time.perf_counter() - t
    peak = _peak() or 0
    cache_bytes = kv_bytes_per_token(model) * (ctx_len + cont_len) * n_choices
    res = {"model": name, "context_length": ctx_len, "requests": len(reqs), "contexts": n_ctx, "choices": n_choices,
           "continuation_tokens": cont_len, "seconds": dt, "requests_per_s": len(reqs) / dt,
           "context_tokens_per_s": n_ctx * ctx_len / dt, "peak_mem_bytes": peak, "weights_bytes": weights,
           "cache_bytes_for_one_context_forked": cache_bytes, "chunk_size": chunk,
           "full_logits_bytes_avoided": ctx_len * model.config.vocab_size * 4,
           "finite": all(math.isfinite(lp) for lp, _ in out)}  # fmt: skip
    log(f"loglikelihood {name} ctx {ctx_len}: {len(reqs)} requests in {dt:.2f} s "
        f"({res['context_tokens_per_s']:.0f} context tok/s), peak {peak / 2**30:.2f} GiB "
        f"(weights {weights / 2**30:.2f} GiB)")  # fmt: skip
    return res


_GEMM_KERNELS = ("nvjet", "gemm", "cutlass", "sm90_xmma")  # cuBLAS and CUTLASS matrix-multiply kernel names


def _kernel_ms(prof, names: tuple[str, ...] = ()) -> float:
    """Milliseconds of kernels in a CUDA profile: all of them, or those whose name holds one of ``names``."""
    return sum(
        e.self_device_time_total for e in prof.key_averages() if not names or any(n in e.key.lower() for n in names)
    ) / 1e3


@torch.inference_mode()
def _find_syncs(engine, prompt: list[int], cache, log) -> None:
    """Log where a chunked prefill makes the host wait for the GPU (each such wait leaves the GPU idle while the
    host launches the next kernels): torch's sync debug mode, one stack per distinct call site."""
    import traceback
    import warnings

    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        stack = [f for f in traceback.extract_stack()[:-1] if "yoco_eval" in f.filename or "fla" in f.filename]
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack[-4:]))
        if where not in seen:
            seen.add(where)
            log(f"host sync: {str(message)[:80]} at {where}")

    old = warnings.showwarning
    warnings.showwarning = show
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            engine.prefill_only([prompt], cache)
    finally:
        torch.cuda.set_sync_debug_mode(0)
        warnings.showwarning = old
    log(f"{len(seen)} distinct host-sync call sites in a {len(prompt)}-token chunked prefill")


@torch.inference_mode()
def trace(name: str = "yoco-3b", ctx: int = 524288, chunk: int = 16384, steps: int = 50, log=print) -> dict:
    """Where the time goes: kernel table of one prefill chunk, and graph-replayed vs eager decode steps at ``ctx``."""
    from torch.profiler import ProfilerActivity, profile

    from yoco_eval.generate import Engine

    model = build_random(name)
    engine = Engine(model, preset_tokenizer(name), chunk_size=chunk, max_length=ctx + 128)
    V = model.config.vocab_size
    g = engine.graph_decoder(1, ctx + 64)
    prompt = torch.randint(4, V, (ctx,)).tolist()
    engine.prefill([prompt[:chunk]], g.cache)  # warm, the last token's logits path included (its kernels compile)
    g.cache.reset()
    x = torch.tensor([prompt[:chunk]], device="cuda")
    _, t_chunk = wallclock(model, x, cache=g.cache, start_pos=0, logits_from=0)
    g.cache.reset()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        model(x, cache=g.cache, start_pos=0, logits_from=0)
        _sync()
    log(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))
    busy = _kernel_ms(prof)
    log(f"one {chunk}-token chunk: {1000 * t_chunk:.1f} ms wall, {busy:.1f} ms of kernels "
        f"({1000 * t_chunk - busy:.1f} ms idle)")  # fmt: skip
    g.cache.reset()
    _find_syncs(engine, prompt[: 3 * chunk], g.cache, log)
    g.cache.reset()
    _, t_pre = wallclock(engine.prefill, [prompt], g.cache)
    # The whole prefill's kernels against chunks x one chunk's: a gap that the kernels account for (GEMMs slower
    # per chunk, e.g. lower clocks under sustained load) is not host overhead, and the reverse.
    g.cache.reset()
    with profile(activities=[ProfilerActivity.CUDA]) as prof_all:
        engine.prefill([prompt], g.cache)
        _sync()
    n_chunks = -(-ctx // chunk)
    busy_all = _kernel_ms(prof_all)
    gemm_one, gemm_all = _kernel_ms(prof, _GEMM_KERNELS), _kernel_ms(prof_all, _GEMM_KERNELS)
    log(f"whole {ctx}-token prefill: {t_pre:.3f} s wall, {busy_all / 1e3:.3f} s of kernels ({n_chunks} chunks x one "
        f"chunk's {busy:.1f} ms = {n_chunks * busy / 1e3:.3f} s); GEMMs {gemm_all / n_chunks:.1f} ms a chunk against "
        f"{gemm_one:.1f} ms in the single chunk")  # fmt: skip
    tok = torch.zeros(1, dtype=torch.long, device="cuda")
    pos = torch.tensor([ctx], device="cuda")
    for _ in range(3):
        g.step(tok, pos)
    _, t_graph = wallclock(lambda: [g.step(tok, pos) for _ in range(steps)])
    # one decode step's kernels: the shared K/V is read once per cross-decoder layer (each layer's query needs the
    # previous layer's output), so the attention's bytes, not the weights', set the step's floor
    n_prof = 10
    with profile(activities=[ProfilerActivity.CUDA]) as prof_dec:
        for _ in range(n_prof):
            g.step(tok, pos)
        _sync()
    log(prof_dec.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=60))
    dec_kernels = sum(e.count for e in prof_dec.key_averages() if e.self_device_time_total > 0) / n_prof
    log(f"decode step: {dec_kernels:.0f} kernels")
    dec_busy, dec_attn = _kernel_ms(prof_dec) / n_prof, _kernel_ms(prof_dec, ("_decode_",)) / n_prof
    dec_gemm = _kernel_ms(prof_dec, _GEMM_KERNELS) / n_prof
    kv_read = kv_reads_per_token(model) * kv_bytes_per_token(model) * ctx
    log(f"decode step at {ctx}: {1000 * t_graph / steps:.2f} ms wall (graph replay), {dec_busy:.2f} ms of kernels: "
        f"attention {dec_attn:.2f} ms ({kv_read / 1e9:.1f} GB of K/V, {kv_read / dec_attn / 1e9:.2f} TB/s), "
        f"GEMMs {dec_gemm:.2f} ms, other {dec_busy - dec_attn - dec_gemm:.2f} ms")  # fmt: skip
    res = {"model": name, "context": ctx, "chunk": chunk, "chunk_wall_ms": 1000 * t_chunk, "chunk_kernel_ms": busy,
           "prefill_s": t_pre, "prefill_kernel_s": busy_all / 1e3, "chunk_gemm_ms": gemm_one,
           "prefill_gemm_ms_per_chunk": gemm_all / n_chunks, "graph_decode_ms": 1000 * t_graph / steps,
           "decode_kernel_ms": dec_busy, "decode_kernels": dec_kernels, "decode_attention_ms": dec_attn,
           "decode_gemm_ms": dec_gemm}  # fmt: skip
    log(json.dumps(res))
    return res
