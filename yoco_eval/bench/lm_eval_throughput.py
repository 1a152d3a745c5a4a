"""lm-eval throughput: ``--model yoco`` against lm-eval's own ``--model hf`` on the same Transformer checkpoint, the
same requests and the same answers (issue 20's row "lm-eval throughput"). Run from the repo root:

    python -m yoco_eval.bench.lm_eval_throughput --out reports/gpu/lm_eval_throughput_h100.json   # GPU, bf16

Requests are built by lm-eval itself from the project's offline tasks: ``yoco_mc_facts`` (loglikelihood),
``yoco_ppl_shakespeare`` (loglikelihood_rolling) and ``yoco_gen_arith`` (generate_until). Each model answers all of
them once per call; calls are timed under the steady-state protocol (:mod:`yoco_eval.bench.protocol`: cold call
apart, warm-up, median of 3). The row also says how far the answers are apart (max |d loglikelihood| in nats,
identical greedy generations), so that a speedup is only read next to equal results.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

TASKS = ("yoco_mc_facts", "yoco_ppl_shakespeare", "yoco_gen_arith")
KINDS = {"loglikelihood": "loglikelihood", "loglikelihood_rolling": "loglikelihood_rolling",
         "generate_until": "generate_until", "multiple_choice": "loglikelihood"}  # fmt: skip


def build_requests(limit: int | None) -> dict[str, list]:
    """lm-eval's own requests for :data:`TASKS`, by request type (``limit`` documents per task, None = all)."""
    from lm_eval.tasks import TaskManager

    root = Path(__file__).resolve().parents[2] / "tasks"
    tm = TaskManager(include_path=str(root), include_defaults=False)
    out: dict[str, list] = {}
    for name in TASKS:
        task = tm.load([name])["tasks"][name]
        task.build_all_requests(limit=limit, rank=0, world_size=1)
        out.setdefault(KINDS[task.OUTPUT_TYPE], []).extend(task.instances)
    return out


def answer_all(lm, reqs: dict[str, list]) -> tuple[dict[str, list], dict[str, float]]:
    """Every request through ``lm`` (an lm-eval LM); the answers and the seconds each request type took."""
    from yoco_eval.bench.protocol import wallclock

    answers, seconds = {}, {}
    for kind, rs in reqs.items():
        answers[kind], seconds[kind] = wallclock(getattr(lm, kind), rs, disable_tqdm=True)
    return answers, seconds


def _loglik(a) -> float:
    return a[0] if isinstance(a, tuple) else a


def agreement(ours: dict[str, list], ref: dict[str, list]) -> dict:
    """How far two models' answers are apart: max |d loglikelihood| (nats) per type, and relative to the reference's
    value (a rolling total sums thousands of tokens), identical generations."""
    out = {}
    for kind in ours:
        if kind == "generate_until":
            same = sum(a == b for a, b in zip(ours[kind], ref[kind], strict=True))
            out["generations_identical"] = f"{same}/{len(ref[kind])}"
        else:
            pairs = [(_loglik(a), _loglik(b)) for a, b in zip(ours[kind], ref[kind], strict=True)]
            out[f"{kind}_max_abs_diff"] = max(abs(a - b) for a, b in pairs)
            out[f"{kind}_max_rel_diff"] = max(abs(a - b) / max(abs(b), 1.0) for a, b in pairs)
    return out


def make_lm(name: str, folder: str, device: str, dtype: str, batch_size: int, max_length: int):
    """lm-eval's ``hf`` model or our ``yoco`` model on the same folder with the same settings."""
    kw = dict(pretrained=folder, device=device, dtype=dtype, max_length=max_length, batch_size=batch_size)
    if name == "hf":
        from lm_eval.models.huggingface import HFLM

        return HFLM(**kw)
    from yoco_eval.lm_eval_adapter import YOCOLM

    return YOCOLM(**kw)


def random_copy(folder: str, out: Path, seed: int = 0) -> str:
    """``folder`` (an HF causal-LM folder: its ``config.json`` and tokenizer; weights not needed) with seeded random
    weights, written to ``out``. For a GPU machine that cannot hold the real checkpoint: the time of a request does
    not depend on the weights' values, except that random weights never emit a stop sequence, so every generation
    runs to its token budget (the same work for both models)."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    model.save_pretrained(out, safe_serialization=True)
    for f in Path(folder).iterdir():
        if f.is_file() and not (out / f.name).exists() and f.suffix != ".safetensors":
            shutil.copy(f, out / f.name)
    return str(out)


def profile_table(lm, reqs: dict[str, list], rows: int = 40) -> str:
    """One more pass of every request through ``lm`` under torch.profiler: its ops by total host time (where a
    short request's time goes: launches and Python, or the GPU)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if str(lm.device).startswith("cuda") else [])
    with profile(activities=acts) as prof:
        answer_all(lm, reqs)
    return prof.key_averages().table(sort_by="cpu_time_total", row_limit=rows)


def run(folder: str, device: str, dtype: str, batch_size: int, max_length: int, limit: int | None, protocol=None,
        log=print, profile_to: str | None = None) -> dict:  # fmt: skip
    """Both models' rows and their ratio (see module docstring); ``profile_to``: also write each model's
    :func:`profile_table` there (``{path}.hf.txt``, ``{path}.yoco.txt``)."""
    from yoco_eval.bench.protocol import Protocol, measure_steady

    protocol = protocol or Protocol()
    reqs = build_requests(limit)
    n = sum(len(r) for r in reqs.values())
    log(f"{n} requests: " + ", ".join(f"{len(r)} {k}" for k, r in reqs.items()))
    rows, answers = {}, {}
    for name in ("hf", "yoco"):
        lm = make_lm(name, folder, device, dtype, batch_size, max_length)
        last: dict = {}

        def call(lm=lm, last=last):
            a, s = answer_all(lm, reqs)
            last["answers"] = a
            return {"seconds": sum(s.values()), **{f"{k}_s": v for k, v in s.items()}}

        log(f"--model {name}")
        timing = measure_steady(call, protocol, log)
        answers[name] = last["answers"]
        rows[name] = {"model": name, "requests": n, **timing.fields(),
                      "requests_per_s": n / timing.median["seconds"]}  # fmt: skip
        if profile_to:
            Path(f"{profile_to}.{name}.txt").write_text(profile_table(lm, reqs))
        del lm
    return {"folder": folder, "device": device, "dtype": dtype, "batch_size": batch_size, "max_length": max_length,
            "tasks": list(TASKS), "limit": limit, "rows": rows,
            "speedup_requests_per_s": rows["yoco"]["requests_per_s"] / rows["hf"]["requests_per_s"],
            "agreement": agreement(answers["yoco"], answers["hf"])}  # fmt: skip


def cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m yoco_eval.bench.lm_eval_throughput",
                                 description=__doc__.split("\n\n")[0])  # fmt: skip
    ap.add_argument("--out", required=True, help="results file (JSON)")
    ap.add_argument("--model-folder", default="smollm2-135m-instruct",
                    help="an HF Llama folder both models load (default: SmolLM2-135M-Instruct, shipped)")
    ap.add_argument("--device", default="auto", help="auto (cuda when a GPU is visible), cpu, cuda")
    ap.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--limit", type=int, default=None, help="documents per task (default: all)")
    ap.add_argument("--profile", metavar="PATH", help="also write each model's op profile to PATH.{hf,yoco}.txt")
    ap.add_argument("--random-weights", action="store_true",
                    help="time a seeded random-weight copy of the folder (needs only its config and tokenizer)")
    args = ap.parse_args(argv)
    from yoco_eval.loading import resolve_device, resolve_dtype, resolve_model
    from yoco_eval.runinfo import hardware, write_record

    device = str(resolve_device(args.device))
    folder = str(resolve_model(args.model_folder))
    with tempfile.TemporaryDirectory(prefix="yoco-lmeval-") as tmp:
        if args.random_weights:
            folder = random_copy(folder, Path(tmp))
        res = run(folder, device, resolve_dtype(args.dtype, device), args.batch_size, args.max_length, args.limit,
                  profile_to=args.profile)  # fmt: skip
    res["folder"] = args.model_folder
    res["weights"] = "seeded random (transformers init)" if args.random_weights else "the folder's"
    command = "python -m yoco_eval.bench.lm_eval_throughput " + " ".join(argv if argv is not None else sys.argv[1:])
    write_record(args.out, hardware(argparse.Namespace(device=device)), command, res)
    print(f"yoco / hf: {res['speedup_requests_per_s']:.2f}x requests/s; answers: {res['agreement']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
