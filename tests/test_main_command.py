"""The README's main command, end to end on CPU: the embedded YOCO model retrieves needles from a haystack it never
saw in training, and the same pipeline scores a weight-shuffled copy near zero (it measures real retrieval)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GRID = ["--lengths", "384,512,768", "--depths", "0:100:5", "--trials", "2"]


def run_main(tmp: Path, *extra: str) -> list[dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "YOCO_EVAL_THREADS": "1"}
    out = tmp / "run"
    proc = subprocess.run([sys.executable, "-m", "yoco_eval", *GRID, "--out", str(out), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "report.html").is_file()
    # the console: a header before any work (model, grid, folder), the table in percent with its interval named
    header = next(x for x in proc.stderr.splitlines() if x.startswith("needle sweep:"))
    assert "30 cells (3 lengths × 5 depths × 2 trials" in header and str(out) in header
    assert "score (%)" in proc.stdout and "95% Wilson interval" in proc.stdout
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]
    assert len(rows) == 3 * 5 * 2 and all(r["status"] == "ok" for r in rows)
    return rows


def test_main_command_retrieves_needles_with_the_embedded_model(tmp_path):
    rows = run_main(tmp_path)
    mean = sum(r["score"] for r in rows) / len(rows)
    print(f"embedded yoco-needle-7m, 384-768 tokens x 5 depths x 2 trials: mean retrieval {mean:.3f}")
    assert mean >= 0.9
    assert (tmp_path / "run" / "run.json").is_file()


def test_shuffled_weights_score_near_zero(tmp_path):
    from yoco_eval.model.checkpoint import load_model, save_model

    loaded = load_model(ROOT / "models" / "yoco-needle-7m")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in loaded.model.parameters():
            flat = p.data.view(-1)
            flat.copy_(flat[torch.randperm(flat.numel(), generator=g)])
    save_model(loaded.model, tmp_path / "shuffled")
    rows = run_main(tmp_path, "--model-args", f"pretrained={tmp_path / 'shuffled'},max_length=2048")
    mean = sum(r["score"] for r in rows) / len(rows)
    print(f"weight-shuffled copy, same grid: mean retrieval {mean:.3f}")
    assert mean <= 0.1


def test_shared_haystack_reuses_prefixes_with_the_same_answers(tmp_path):
    """--shared-haystack: one haystack per (length, trial), deepest needle first, each prompt continuing from the
    prefix it shares with the one before. The outputs must equal those of the same grid prefilled from scratch."""
    args = f"pretrained={ROOT / 'models' / 'yoco-needle-7m'},max_length=2048,chunk_size=64"
    reuse = run_main(tmp_path / "reuse", "--shared-haystack", "--model-args", args)
    plain = run_main(tmp_path / "plain", "--shared-haystack", "--model-args", args + ",prefix_reuse=false")
    by_cell = {r["cell"]: r for r in plain}
    for r in reuse:
        assert r["output"] == by_cell[r["cell"]]["output"], r["cell"]
        assert r["prompt_excerpts"] == by_cell[r["cell"]]["prompt_excerpts"]
    reused = sum(r["reused_prompt_tokens"] for r in reuse)
    total = sum(r["prompt_tokens"] for r in reuse)
    assert all(r["reused_prompt_tokens"] == 0 for r in plain)
    # the first (deepest) prompt of a haystack shares only the instruction with the previous haystack's prompts
    firsts = [r for r in reuse if r["depth_percent"] == 100.0]
    assert all(r["reused_prompt_tokens"] < r["needles"][0]["token_position"] for r in firsts)
    print(f"shared haystack: {reused} of {total} prompt tokens reused ({reused / total:.0%})")
    assert reused >= 0.25 * total
    mean = sum(r["score"] for r in reuse) / len(reuse)
    assert mean >= 0.9
