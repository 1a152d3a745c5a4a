"""``yoco-eval needle``: run a needle-in-a-haystack sweep (also ``python -m yoco_eval.niah.cli``).

Examples::

    # the YOCO paper's single-needle grid at 1M with the YOCO engine
    yoco-eval needle --model yoco --model-args pretrained=models/yoco-3b --lengths 128k:1M:128k \\
        --depths 0:100:11 --trials 10 --out reports/runs/yoco-1m

    # any lm-eval model, same generator and scorer (SmolLM2 from its GGUF, chat template on)
    yoco-eval needle --model hf --model-args pretrained=DIR,gguf_file=F.gguf,dtype=float32 --chat-template \\
        --lengths 1k,2k,4k,8000 --depths 0:100:5 --trials 2 --out reports/runs/smollm2

    # preview: grid, tokens and an estimated time; writes nothing
    yoco-eval needle ... --dry-run

    # print the aggregate table of a finished (or partial) run
    yoco-eval needle --show reports/runs/smollm2

Lengths: ``4096``, ``4k`` (= 4096), ``1M`` (= 1,048,576), ranges ``start:stop:step`` (``128k:1M:128k``), and
``max`` (the model's context minus --max-new-tokens). Depths: a list (``0,50,100``) or ``start:stop:count``
(``0:100:11`` = 11 evenly spaced depths).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

from yoco_eval.errors import YocoEvalError

_UNITS = {"": 1, "k": 1024, "K": 1024, "m": 1024**2, "M": 1024**2}


def _one_length(tok: str) -> int | str:
    tok = tok.strip()
    if tok == "max":
        return "max"
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", tok)
    if not m:
        raise YocoEvalError(f"bad length {tok!r}: use integers or k/M suffixes, e.g. 1k,4k,128k,1M")
    v = float(m.group(1)) * _UNITS[m.group(2)]
    if v != int(v) or v < 1:
        raise YocoEvalError(f"length {tok!r} is not a whole positive number of tokens: use e.g. 1536 or 1.5k")
    return int(v)


def parse_lengths(spec, max_length: int | None = None) -> list[int]:
    """``"1k,4k,1M"`` / ``"128k:1M:128k"`` / ``[1024, "4k"]`` → token counts (k = 1024, M = 1024²)."""
    items = spec if isinstance(spec, list) else str(spec).split(",")
    out: list[int] = []
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        if item.count(":") == 2:
            a, b, step = (_one_length(x) for x in item.split(":"))
            if "max" in (a, step) or not isinstance(a, int) or not isinstance(step, int) or step < 1:
                raise YocoEvalError(f"bad length range {item!r}: use start:stop:step, e.g. 128k:1M:128k")
            b = _resolve_max(b, max_length)
            out.extend(range(a, b + 1, step))
        else:
            out.append(_resolve_max(_one_length(item), max_length))
    if not out:
        raise YocoEvalError("no context lengths given: pass --lengths, e.g. 1k,4k,16k")
    return sorted(dict.fromkeys(out))


def _resolve_max(v, max_length):
    if v != "max":
        return v
    if not max_length:
        raise YocoEvalError("--lengths max needs a model with a known context size: give numbers instead")
    return max_length


def parse_depths(spec) -> list[float]:
    """``"0:100:11"`` (11 evenly spaced) or ``"0,25,50"`` → percents. Values outside 0–100 are rejected."""
    if isinstance(spec, list):
        vals = [float(x) for x in spec]
    else:
        s = str(spec).strip()
        try:
            if s.count(":") == 2:
                a, b, n = s.split(":")
                a, b, k = float(a), float(b), int(n)
                if k < 1:
                    raise ValueError
                vals = [a] if k == 1 else [round(a + (b - a) * i / (k - 1), 6) for i in range(k)]
            else:
                vals = [float(x) for x in s.split(",") if x.strip()]
        except ValueError as e:
            raise YocoEvalError(f"bad depths {spec!r}: use start:stop:count (0:100:11) or a list (0,50,100)") from e
    for d in vals:
        if not 0.0 <= d <= 100.0:
            raise YocoEvalError(f"depth {d:g} is outside 0–100: give depths in percent, e.g. 0:100:11")
    if not vals:
        raise YocoEvalError("no depths given: pass --depths, e.g. 0:100:11 or 0,50,100")
    return list(dict.fromkeys(vals))


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "needle",
        help="needle-in-a-haystack sweep (exact token lengths, resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(p)
    p.set_defaults(func=main)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS
    g = p.add_argument_group("what to run")
    g.add_argument("--config", help="a sweep YAML (tasks/sweeps/*.yaml); command-line flags override it")
    g.add_argument("--model", default=S, help="fake | yoco | an lm-eval model name (hf, vllm, ...); default fake")
    g.add_argument("--model-args", default=S, help="comma-separated key=value for the model (lm-eval style)")
    g.add_argument(
        "--tokenizer",
        default=S,
        help="tokenizer for --model fake (yoco-cl100k, cl100k_base, o200k_base, bytes, hf:DIR, a checkpoint folder); "
        "for other models it must match",
    )
    g.add_argument(
        "--chat-template",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="wrap the prompt in the tokenizer's chat template (counted in the length)",
    )
    g.add_argument("--system-prompt", default=S, help="system message for --chat-template")
    g.add_argument("--device", default=S, help="device for lm-eval models (cpu, cuda:0)")
    g.add_argument("--threads", type=int, default=S, help="torch CPU threads (torch.set_num_threads)")
    g = p.add_argument_group("grid")
    g.add_argument("--lengths", default=S, help="e.g. 1k,4k,128k,1M or 128k:1M:128k (k = 1024)")
    g.add_argument("--depths", default=S, help="e.g. 0:100:11 or 0,50,100 (percent)")
    g.add_argument("--trials", type=int, default=S, help="trials per (length, depth) cell (default 1)")
    g.add_argument("--seed", type=int, default=S, help="sweep seed (default 0)")
    g = p.add_argument_group("needles")
    g.add_argument(
        "--variant",
        default=S,
        help="single (YOCO wording), gkamradt, multi (YOCO Table 4), multikey, multivalue, multiquery, ruler-single",
    )
    g.add_argument("--num-needles", type=int, default=S, help="needles per prompt (multi-needle variants)")
    g.add_argument("--key-type", default=S, help="city, word, number, uuid")
    g.add_argument("--value-type", default=S, help="number (7 digits), number:D, word, uuid")
    g.add_argument("--placement", default=S, help="depth, yoco, random, spread")
    g.add_argument("--metric", default=S, help="substring, exact, all_values")
    g.add_argument("--needle-template", default=S, help="e.g. 'The secret code for {key} is {value}.'")
    g.add_argument("--question-template", default=S, help="e.g. 'What is the secret code for {key}?'")
    g.add_argument("--answer-prefix", default=S, help="text the answer continues, e.g. 'The secret code is'")
    g.add_argument("--instruction", default=S, help="instruction before the haystack")
    g = p.add_argument_group("haystack")
    g.add_argument("--haystack", default=S, help="noise, pg-essays (default), shakespeare, or a file/folder/.jsonl")
    g.add_argument("--haystack-field", default=S, help="JSONL text field (default text)")
    g.add_argument("--haystack-normalize", default=S, help="none, light, prose (default: per source)")
    g = p.add_argument_group("run")
    g.add_argument("--max-new-tokens", type=int, default=S, help="generation budget per cell (default 32)")
    g.add_argument("--out", default=S, help="run folder (default reports/runs/<run-name>)")
    g.add_argument("--run-name", default=S, help="run name (default from model, variant and haystack)")
    g.add_argument(
        "--dry-run", action="store_true", default=S, help="print grid, tokens and time estimate; write nothing"
    )
    g.add_argument("--tokens-per-s", type=float, default=S, help="throughput to assume for --dry-run")
    g.add_argument("--retry-errors", action="store_true", default=S, help="redo cells that failed earlier")
    g.add_argument(
        "--shared-haystack",
        action="store_true",
        default=S,
        help="one haystack and needle per length and trial, only the depth changes (as in Kamradt's test; the "
        "default draws a haystack per cell, as YOCO's eval does); the yoco model then reuses the shared prefix",
    )
    g.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        default=S,
        help="skip re-encoding each whole prompt to confirm its length",
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", default=S, help="no progress bar")
    g.add_argument("--show", metavar="RUN_DIR", default=S, help="print the aggregate table of a run folder and exit")
    g = p.add_argument_group("fake model (tests)")
    g.add_argument("--fake-mode", default=S, help=S)
    g.add_argument("--fake-sleep", type=float, default=S, help=S)
    g.add_argument("--fake-fail-lengths", default=S, help=S)
    g.add_argument("--fake-max-context", type=int, default=S, help=S)


DEFAULTS = {
    "model": "fake",
    "model_args": None,
    "tokenizer": None,
    "chat_template": False,
    "system_prompt": None,
    "device": None,
    "threads": None,
    "lengths": None,
    "depths": "0:100:11",
    "trials": 1,
    "seed": 0,
    "variant": "single",
    "num_needles": None,
    "key_type": None,
    "value_type": None,
    "placement": None,
    "metric": None,
    "needle_template": None,
    "question_template": None,
    "answer_prefix": None,
    "instruction": None,
    "haystack": "pg-essays",
    "haystack_field": "text",
    "haystack_normalize": None,
    "max_new_tokens": 32,
    "out": None,
    "run_name": None,
    "dry_run": False,
    "tokens_per_s": None,
    "retry_errors": False,
    "shared_haystack": False,
    "verify": True,
    "progress": True,
    "show": None,
    "fake_mode": "oracle",
    "fake_sleep": 0.0,
    "fake_fail_lengths": None,
    "fake_max_context": None,
}


def _settings(args: argparse.Namespace) -> dict:
    given = {k: v for k, v in vars(args).items() if k in DEFAULTS}
    cfg = load_sweep_file(args.config) if getattr(args, "config", None) else {}
    return {**DEFAULTS, **cfg, **given}


def default_sweep_file() -> Path | None:
    """``tasks/sweeps/default.yaml`` of the checkout, or of the installed wheel (``yoco_eval/_tasks``)."""
    here = Path(__file__).resolve()
    for cand in (
        here.parents[2] / "tasks" / "sweeps" / "default.yaml",
        here.parents[1] / "_tasks" / "sweeps" / "default.yaml",
    ):
        if cand.is_file():
            return cand
    return None


def load_sweep_file(path: str) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise YocoEvalError(f"sweep file {path} does not exist: give a YAML file such as tasks/sweeps/smollm2-8k.yaml")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise YocoEvalError(f"sweep file {path} is not valid YAML ({type(e).__name__}): fix its syntax") from e
    if not isinstance(data, dict):
        raise YocoEvalError(f"sweep file {path} must be a mapping of option: value")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = set(data) - set(DEFAULTS) - {"description"}
    if unknown:
        raise YocoEvalError(
            f"sweep file {path} has unknown keys {', '.join(sorted(unknown))}: see `yoco-eval needle -h`"
        )
    data.pop("description", None)
    return data


def _variant(s: dict):
    from yoco_eval.niah.variants import get_variant

    return get_variant(
        s["variant"],
        num_needles=s["num_needles"],
        key_type=s["key_type"],
        value_type=s["value_type"],
        placement=s["placement"],
        metric=s["metric"],
        needle=s["needle_template"],
        question=s["question_template"],
        answer_prefix=s["answer_prefix"],
        instruction=s["instruction"],
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80] or "run"


def _command_line() -> str:
    """How this process was invoked, as a shell line (recorded in run.json)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0.endswith(str(Path("niah") / "cli.py")):
        head = "python -m yoco_eval.niah.cli"
    elif argv0.endswith("__main__.py"):
        head = "python -m " + Path(argv0).parent.name
    else:
        head = Path(argv0).name or "python"
    return " ".join([head, *(shlex.quote(a) for a in sys.argv[1:])])


def show(run_dir: str) -> int:
    from yoco_eval.niah.runner import load_results
    from yoco_eval.niah.score import aggregate, format_table
    from yoco_eval.niah.timing import format_timing, sweep_timing

    p = Path(run_dir)
    if not (p / "run.json").is_file():
        raise YocoEvalError(f"{run_dir} is not a needle run folder (no run.json): give the --out of a run")
    meta = json.loads((p / "run.json").read_text())
    rows = load_results(p)
    print(
        f"{meta['run_name']}: model {meta['model']['name']}, variant {meta['variant']['name']}, "
        f"haystack {meta['haystack']['name']}, {len(rows)} cells"
    )
    if rows:
        print(format_table(aggregate(rows)))
        timing = sweep_timing(rows)
        if timing:
            print()
            print(format_timing(timing))
    return 0


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    if args is None or isinstance(args, list):
        parser = argparse.ArgumentParser(
            prog="yoco-eval needle", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        _add_arguments(parser)
        args = parser.parse_args(args)
    try:
        return _main(args)
    except YocoEvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    from yoco_eval.niah.models import load_needle_model
    from yoco_eval.niah.runner import SweepConfig, run_sweep
    from yoco_eval.niah.score import format_table
    from yoco_eval.tokenizer import load_tokenizer

    s = _settings(args)
    if s["show"]:
        return show(s["show"])
    if not getattr(args, "config", None):
        default = default_sweep_file()
        if default is not None:  # the default sweep (embedded model, grid) under whatever flags were given
            given = {k: v for k, v in vars(args).items() if k in DEFAULTS}
            base = load_sweep_file(str(default))
            if "model" in given and given["model"] != base.get("model"):
                base = {k: v for k, v in base.items() if k not in ("model_args", "tokenizer")}  # another model
            s = {**DEFAULTS, **base, **given}
    if not s["lengths"]:
        raise YocoEvalError("no context lengths given: pass --lengths, e.g. 1k,4k,16k (or --config FILE)")
    variant = _variant(s)
    depths = parse_depths(s["depths"])
    tokenizer = load_tokenizer(s["tokenizer"]) if s["tokenizer"] else None
    fake = {"mode": s["fake_mode"], "sleep_s": s["fake_sleep"], "max_context": s["fake_max_context"]}
    if s["fake_fail_lengths"]:
        fake["fail_lengths"] = {int(x) for x in str(s["fake_fail_lengths"]).split(",") if x.strip()}
    # Parse lengths that need no model first, so obvious mistakes fail before a model loads.
    lengths_spec = s["lengths"]
    if "max" not in str(lengths_spec):
        parse_lengths(lengths_spec)
    if s["threads"]:
        import torch

        torch.set_num_threads(int(s["threads"]))
    model = load_needle_model(
        s["model"],
        s["model_args"],
        tokenizer=tokenizer,
        chat_template=bool(s["chat_template"]),
        fake_options=fake,
        device=s["device"],
    )
    if s["model"] != "fake" and s["system_prompt"] and s["chat_template"]:
        from yoco_eval.niah.models import chat_frame

        model.prompt_format = chat_frame(model.lm.tokenizer, s["system_prompt"])
    max_len = (model.max_context - s["max_new_tokens"]) if getattr(model, "max_context", None) else None
    lengths = parse_lengths(lengths_spec, max_len)
    run_name = s["run_name"] or _slug(f"needle-{model.name}-{variant.name}-{Path(str(s['haystack'])).name}")
    out = s["out"] or f"reports/runs/{run_name}"
    cfg = SweepConfig(
        lengths=lengths,
        depths=depths,
        trials=int(s["trials"]),
        seed=int(s["seed"]),
        variant=variant,
        haystack=str(s["haystack"]),
        haystack_normalize=s["haystack_normalize"],
        haystack_field=s["haystack_field"],
        max_new_tokens=int(s["max_new_tokens"]),
        out=out,
        run_name=run_name,
        verify=bool(s["verify"]),
        retry_errors=bool(s["retry_errors"]),
        shared_haystack=bool(s["shared_haystack"]),
    )
    command = _command_line()
    summary = run_sweep(
        model,
        cfg,
        tokenizer=tokenizer if s["model"] != "fake" else None,
        progress=bool(s["progress"]),
        dry_run=bool(s["dry_run"]),
        tokens_per_s=s["tokens_per_s"],
        command=command,
    )
    if summary.get("dry_run"):
        return 0
    if summary.get("rank", 0) == 0 and "aggregate" in summary:
        print(f"{out}: {summary['rows']} cells ({summary['ran']} run now, {summary['errors']} errors)")
        print(format_table(summary["aggregate"]))
        _render(Path(out))
    return 0


def _render(out: Path) -> None:
    """The run's HTML report, then the index of the reports folder that holds it (regenerated after each run)."""
    from yoco_eval.report import render_index, render_run

    page = render_run(out)
    parts = out.resolve().parts
    root = Path(*parts[: len(parts) - parts[::-1].index("reports")]) if "reports" in parts else out.parent
    index = render_index(root)
    print(f"report: {page}\nindex:  {index}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
