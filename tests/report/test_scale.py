"""A full-size sweep (20 lengths × 21 depths × 10 trials = 4,200 rows) renders in seconds and stays small."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from yoco_eval.report import render_index, render_run

LENGTHS = [int(1024 * 2 ** (i / 2)) // 64 * 64 for i in range(20)]  # 1K … ~741K, half-octave steps
DEPTHS = [5.0 * i for i in range(21)]
TRIALS = 10
MAX_SECONDS = 10.0  # measured 0.4 s here (load + render + write); CI has 2 slow cores
MAX_BYTES = 4_500_000  # measured 3.85 MB, nearly all of it the drill-down text of 4,200 trials

QUESTION = "What is the special magic number for Lisbon mentioned in the provided text?"
WORDS = (
    "the essay argues that startups should do things that do not scale because early users teach you what "
    "to build and how"
).split()


def make_big_run(d: Path) -> None:
    rng = random.Random(0)
    d.mkdir(parents=True)
    meta = {
        "schema": "yoco-eval/needle-run/1",
        "run_name": "big",
        "model": {"name": "yoco-3b"},
        "grid": {"lengths": LENGTHS, "depths": DEPTHS, "trials": TRIALS, "seed": 1},
    }
    (d / "run.json").write_text(json.dumps(meta))
    with (d / "results.jsonl").open("w", encoding="utf-8") as f:
        for length in LENGTHS:
            for depth in DEPTHS:
                for t in range(TRIALS):
                    failed = rng.random() < 0.03
                    value = str(rng.randrange(10**6, 10**7))
                    text = f"One of the special magic numbers for the city of Lisbon is: {value}."
                    score = None if failed else float(rng.random() < 1 - length / 2e6 - depth / 1000)
                    prose = " ".join(rng.choice(WORDS) for _ in range(90))  # ≈500 characters each side
                    f.write(
                        json.dumps(
                            {
                                "cell": f"L{length}_D{depth:g}_T{t}",
                                "context_length": length,
                                "depth_percent": depth,
                                "trial": t,
                                "seed": rng.randrange(1 << 30),
                                "status": "error" if failed else "ok",
                                "error": "CUDA out of memory" if failed else None,
                                "prompt_tokens": length - 20,
                                "needles": [
                                    {
                                        "key": "Lisbon",
                                        "value": value,
                                        "text": text,
                                        "token_position": int(length * depth / 100),
                                        "depth_actual": depth + 0.1,
                                        "is_target": True,
                                    }
                                ],
                                "question": QUESTION,
                                "expected": [value],
                                "output": None if failed else f"The special magic number is {value}.",
                                "score": score,
                                "metric": "string_match_all",
                                "duration_s": 1.5,
                                "prefill_s": 0.9,
                                "tokens_per_s": 40.0,
                                "peak_mem_bytes": 10**10,
                                "timestamp_utc": "2026-01-01T00:00:00Z",
                                "rank": 0,
                                "prompt_excerpts": [
                                    {
                                        "token_position": int(length * depth / 100),
                                        "before": prose,
                                        "needle": text,
                                        "after": prose,
                                    }
                                ],
                            }
                        )
                        + "\n"
                    )


def test_20x21x10_grid_renders_fast_and_small(tmp_path):
    make_big_run(tmp_path / "runs" / "big")
    start = time.perf_counter()
    page = render_run(tmp_path / "runs" / "big")
    seconds = time.perf_counter() - start
    size = page.stat().st_size
    print(f"\n20x21x10 run report: {seconds:.2f} s, {size / 1e6:.2f} MB")
    assert seconds < MAX_SECONDS
    assert size < MAX_BYTES
    html = page.read_text(encoding="utf-8")
    assert html.count('<a href="#cell=') >= 20 * 21  # every cell is a drill-down link
    start = time.perf_counter()
    index = render_index(tmp_path)
    assert time.perf_counter() - start < MAX_SECONDS
    assert index.stat().st_size < 300_000  # the index holds cell means only, not trial details
