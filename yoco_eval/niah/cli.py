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

    # print the score table of a finished (or partial) run
    yoco-eval needle --show reports/runs/smollm2

With no --lengths and no --config it runs tasks/sweeps/default.yaml (the embedded model; flags override it).
Lengths: ``4096``, ``4k`` (= 4096), ``1M`` (= 1,048,576), ranges ``start:stop:step`` (``128k:1M:128k``), and
``max`` (the model's context minus --max-new-tokens). Depths: a list (``0,50,100``) or ``start:stop:count``
(``0:100:11`` = 11 evenly spaced depths). Rerunning a command resumes its run folder; another grid on the same
folder needs --out NEW, --extend or --overwrite.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

from yoco_eval.axes import parse_depths, parse_lengths
from yoco_eval.errors import YocoEvalError

S = argparse.SUPPRESS

# Every setting, with its built-in default (flags, sweep YAML keys and these names are the same, ``-`` -> ``_``).
DEFAULTS = {
    "model": None, "model_args": None, "tokenizer": None, "chat_template": False, "system_prompt": None,
    "device": None, "threads": None, "lengths": None, "depths": "0:100:11", "trials": 1, "seed": 0,
    "variant": "single", "num_needles": None, "key_type": None, "value_type": None, "placement": None,
    "metric": None, "needle_template": None, "question_template": None, "answer_prefix": None, "instruction": None,
    "haystack": "pg-essays", "haystack_field": "text", "haystack_normalize": None, "max_new_tokens": 32,
    "out": None, "run_name": None, "dry_run": False, "tokens_per_s": None, "retry_errors": False, "extend": False,
    "overwrite": False, "shared_haystack": False, "verify": True, "progress": True, "show": None, "index": None,
}  # fmt: skip
_INT = {"threads", "trials", "seed", "num_needles", "max_new_tokens"}
_BOOL = {"chat_template", "dry_run", "retry_errors", "extend", "overwrite", "shared_haystack", "verify", "progress"}
_AXES = {"lengths", "depths"}  # a string, a number or a list


def _type_error(key: str, value) -> str | None:
    """What is wrong with a sweep-file value's type (None when it is fine)."""
    if value is None:
        return None
    if key in _INT:
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif key in _BOOL:
        ok, want = isinstance(value, bool), "true or false"
    elif key == "tokens_per_s":
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif key in _AXES:
        ok, want = isinstance(value, (str, int, float, list)) and not isinstance(value, bool), "a string or a list"
    else:
        ok, want = isinstance(value, (str, int, float)) and not isinstance(value, bool), "a string"
    return None if ok else f"{key}: {value!r} is not {want}"


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


def _shipped_sweep(path: str) -> Path:
    """``path`` if it exists, else the shipped sweep it names (``yoco-single-1m`` or ``tasks/sweeps/X.yaml``, from
    any directory), else ``path`` unchanged."""
    p = Path(path)
    default = default_sweep_file()
    if p.is_file() or default is None:
        return p
    name = p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml"
    shipped = default.parent / name
    return shipped if str(p.parent) in (".", "tasks/sweeps") and shipped.is_file() else p


def load_sweep_file(path: str) -> dict:
    """A sweep YAML as settings. Broken YAML, unknown keys and values of the wrong type are one-line errors that
    name the line."""
    import yaml

    p = _shipped_sweep(path)
    if not p.is_file():
        raise YocoEvalError(f"sweep file {path} does not exist: give a YAML file or a shipped sweep such as smollm2-8k")
    text = p.read_text(encoding="utf-8", errors="replace")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise YocoEvalError(f"sweep file {path} is not valid YAML{where} ({problem}): fix its syntax") from None
    if not isinstance(data, dict):
        raise YocoEvalError(f"sweep file {path} must be a mapping of option: value, e.g. 'lengths: 1k,4k'")
    lines = {str(k.value).replace("-", "_"): k.start_mark.line + 1 for k, _ in getattr(node, "value", [])}
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(DEFAULTS) - {"description"})
    if unknown:
        raise YocoEvalError(
            f"sweep file {path} has unknown keys {', '.join(unknown)} (line {lines.get(unknown[0], '?')}): "
            "see `yoco-eval needle -h` for the option names"
        )
    data.pop("description", None)
    for key, value in data.items():
        problem = _type_error(key, value)
        if problem:
            raise YocoEvalError(f"sweep file {path}, line {lines.get(key, '?')}: {problem}: fix the value")
    return data


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "needle",
        help="needle-in-a-haystack sweep (exact token lengths, resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=main)
    return p


def _defaults_shown() -> dict:
    """What each flag falls back to, for --help: the default sweep file's value, else the built-in one."""
    base = dict(DEFAULTS)
    path = default_sweep_file()
    if path is not None:
        try:
            base.update(load_sweep_file(str(path)))
        except YocoEvalError:
            pass  # a broken default file is reported when it is used, not by --help
    return base


def _flag(g, shown: dict, flag: str, help: str, **kw) -> None:
    """One option; its help ends with its default (flags default to SUPPRESS so that given ones can be told)."""
    key = kw.get("dest") or flag.lstrip("-").replace("-", "_")
    value = shown.get(key)
    shown_value = not (value is None or value is False or value == "")
    if shown_value and kw.get("action") not in ("store_true", "store_false"):
        help += f" (default: {value})"
    g.add_argument(flag, default=S, help=help, **kw)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = _defaults_shown()
    g = p.add_argument_group("what to run")
    g.add_argument("--config", help="a sweep YAML, or a shipped one by name (yoco-single-1m, smollm2-8k, ...: "
                   "tasks/sweeps/); command-line flags override it")  # fmt: skip
    _flag(g, d, "--model", "yoco | an lm-eval model name (hf, vllm, ...) | fake (no weights: reads the answer "
          "from the prompt, to try a grid)")  # fmt: skip
    _flag(g, d, "--model-args", "comma-separated key=value for the model (lm-eval style)")
    _flag(g, d, "--tokenizer", "for --model fake: yoco-cl100k, cl100k_base, o200k_base, bytes, hf:DIR or a checkpoint "
          "folder; for other models it must match")
    _flag(g, d, "--chat-template", "wrap the prompt in the tokenizer's chat template (counted in the length)",
          action=argparse.BooleanOptionalAction)  # fmt: skip
    _flag(g, d, "--system-prompt", "system message for --chat-template")
    _flag(g, d, "--device", "device for every model: auto, cpu, cuda, cuda:1")
    _flag(g, d, "--threads", "torch CPU threads (torch.set_num_threads)", type=int)
    g = p.add_argument_group("grid")
    _flag(g, d, "--lengths", "e.g. 1k,4k,128k,1M or 128k:1M:128k (k = 1024)")
    _flag(g, d, "--depths", "e.g. 0:100:11 or 0,50,100 (percent)")
    _flag(g, d, "--trials", "trials per (length, depth) cell", type=int)
    _flag(g, d, "--seed", "sweep seed", type=int)
    g = p.add_argument_group("needles")
    _flag(g, d, "--variant", "single (YOCO wording), gkamradt, multi (YOCO Table 4), multikey, multivalue, "
          "multiquery, ruler-single")  # fmt: skip
    _flag(g, d, "--num-needles", "needles per prompt (multi-needle variants)", type=int)
    _flag(g, d, "--key-type", "city, word, number, uuid")
    _flag(g, d, "--value-type", "number (7 digits), number:D, word, uuid")
    _flag(g, d, "--placement", "depth, yoco, random, spread")
    _flag(g, d, "--metric", "substring, exact, all_values")
    _flag(g, d, "--needle-template", "e.g. 'The secret code for {key} is {value}.'")
    _flag(g, d, "--question-template", "e.g. 'What is the secret code for {key}?'")
    _flag(g, d, "--answer-prefix", "text the answer continues, e.g. 'The secret code is'")
    _flag(g, d, "--instruction", "instruction before the haystack")
    g = p.add_argument_group("haystack")
    _flag(g, d, "--haystack", "noise, pg-essays, shakespeare, or a file/folder/.jsonl")
    _flag(g, d, "--haystack-field", "JSONL text field")
    _flag(g, d, "--haystack-normalize", "none, light, prose (default: per source)")
    _add_run_arguments(p, d)


def _add_run_arguments(p: argparse.ArgumentParser, d: dict) -> None:
    g = p.add_argument_group("run")
    _flag(g, d, "--max-new-tokens", "generation budget per cell", type=int)
    _flag(g, d, "--out", "run folder (default: reports/runs/<run-name>)")
    _flag(g, d, "--run-name", "run name (default: from model, variant and haystack)")
    _flag(g, d, "--index", "the one index page to update after the run, or none (default: <reports>/index.html when "
          "--out is inside a folder named reports, else none)", metavar="PATH")  # fmt: skip
    _flag(g, d, "--dry-run", "print grid, tokens and time estimate; write nothing", action="store_true")
    _flag(g, d, "--tokens-per-s", "throughput to assume for --dry-run", type=float)
    _flag(g, d, "--retry-errors", "redo cells that failed earlier", action="store_true")
    existing = g.add_mutually_exclusive_group()
    _flag(existing, d, "--extend", "add this grid's cells to the run already in --out (another grid)",
          action="store_true")  # fmt: skip
    _flag(existing, d, "--overwrite", "replace the run already in --out (its results are deleted)",
          action="store_true")  # fmt: skip
    _flag(g, d, "--shared-haystack", "one haystack and needle per length and trial, only the depth changes (as in "
          "Kamradt's test; the default draws a haystack per cell, as YOCO's eval does); the yoco model then reuses "
          "the shared prefix", action="store_true")  # fmt: skip
    _flag(g, d, "--no-verify", "skip re-encoding each whole prompt to confirm its length", dest="verify",
          action="store_false")  # fmt: skip
    _flag(g, d, "--no-progress", "no progress bar", dest="progress", action="store_false")
    _flag(g, d, "--show", "print the score table of a run folder and exit", metavar="RUN_DIR")
    if not any(a.dest == "debug" for a in p._actions):  # `yoco-eval` adds it to its own parser
        p.add_argument("--debug", action="store_true", default=S, help="show the traceback of an error")


def settings_of(args: argparse.Namespace) -> dict:
    """Every setting of this run: flags over --config over (no --config) tasks/sweeps/default.yaml over DEFAULTS.
    When a flag names another model than the default sweep's, that sweep's model args and tokenizer are dropped."""
    given = {k: v for k, v in vars(args).items() if k in DEFAULTS}
    default = default_sweep_file()
    base = load_sweep_file(str(default)) if default is not None else {}
    if getattr(args, "config", None):  # a sweep file takes only its model from the default sweep, if it names none
        cfg = load_sweep_file(args.config)
        pick = "model" not in cfg and "model" not in given
        model = {k: base[k] for k in ("model", "model_args", "tokenizer") if k in base and pick}
        return {**DEFAULTS, **model, **cfg, **given}
    if "model" in given and given["model"] != base.get("model"):
        base = {k: v for k, v in base.items() if k not in ("model_args", "tokenizer")}  # another model
    return {**DEFAULTS, **base, **given}


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


def format_scores(agg: dict) -> str:
    """The score table as the HTML report shows it: percent, per (depth, length) cell, then per length and overall
    with the 95% Wilson interval."""
    lengths, depths = sorted(agg["by_length"]), sorted(agg["by_depth"])
    lines = ["score (%)  " + " ".join(f"{L:>8}" for L in lengths), "depth"]
    for dep in depths:
        cells = []
        for L in lengths:
            st = agg["by_cell"].get(f"{L}|{format(dep, '.12g')}")
            cells.append(f"{100 * st['mean']:>8.1f}" if st and st["mean"] is not None else f"{'-':>8}")
        lines.append(f"{dep:>8g}%  " + " ".join(cells))
    lines += ["", "mean score with its 95% Wilson interval (n = scored cells):"]

    def stat(name: str, st: dict) -> str:
        mean = f"{100 * st['mean']:5.1f}%" if st["mean"] is not None else "    -"
        ci = f"  95% CI {100 * st['ci95'][0]:5.1f}–{100 * st['ci95'][1]:5.1f}%" if st["ci95"] else ""
        err = f"  errors {st['n_error']}" if st["n_error"] else ""
        return f"  {name:<16} {mean}{ci}  n={st['n']}{err}"

    lines += [stat(f"length {L}", agg["by_length"][L]) for L in lengths]
    lines.append(stat("overall", agg["overall"]))
    return "\n".join(lines)


def show(run_dir: str) -> int:
    """``--show``: the score and timing tables of a run folder (reads only; unreadable lines are reported)."""
    from yoco_eval.niah.score import aggregate
    from yoco_eval.niah.store import load_results, read_run_json
    from yoco_eval.niah.timing import format_timing, sweep_timing

    p = Path(run_dir)
    meta = read_run_json(p) if p.is_dir() else None
    if meta is None:
        raise YocoEvalError(f"{run_dir} is not a needle run folder (no run.json): give the --out of a run")
    notes: list[str] = []
    rows = load_results(p, notes)
    for note in notes:
        print(note, file=sys.stderr)
    print(
        f"{meta.get('run_name')}: model {meta['model']['name']}, variant {meta['variant']['name']}, "
        f"haystack {meta['haystack']['name']}, {len(rows)} cells"
    )
    if rows:
        print(format_scores(aggregate(rows)))
        timing = sweep_timing(rows)
        if timing:
            print()
            print(format_timing(timing))
    return 0


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """Run ``needle`` from parsed flags (``yoco-eval``) or an argv list (``python -m yoco_eval.niah.cli``). User
    errors print one line and return 2; Ctrl-C returns 130; ``--debug`` lets the traceback through."""
    if args is None or isinstance(args, list):
        parser = argparse.ArgumentParser(
            prog="yoco-eval needle", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        add_arguments(parser)
        args = parser.parse_args(args)
    if getattr(args, "debug", False):
        return _main(args)
    try:
        return _main(args)
    except YocoEvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (finished cells are kept: rerun the same command to resume)", file=sys.stderr)
        return 130


def _sweep_config(s: dict, model, variant, lengths_spec):
    from yoco_eval.niah.grid import SweepConfig

    max_len = (model.max_context - s["max_new_tokens"]) if getattr(model, "max_context", None) else None
    run_name = s["run_name"] or _slug(f"needle-{model.name}-{variant.name}-{Path(str(s['haystack'])).name}")
    return SweepConfig(
        lengths=parse_lengths(lengths_spec, max_len),
        depths=parse_depths(s["depths"]),
        trials=int(s["trials"]),
        seed=int(s["seed"]),
        variant=variant,
        haystack=str(s["haystack"]),
        haystack_normalize=s["haystack_normalize"],
        haystack_field=s["haystack_field"],
        max_new_tokens=int(s["max_new_tokens"]),
        out=s["out"] or f"reports/runs/{run_name}",
        run_name=run_name,
        verify=bool(s["verify"]),
        retry_errors=bool(s["retry_errors"]),
        shared_haystack=bool(s["shared_haystack"]),
        on_existing="overwrite" if s["overwrite"] else "extend" if s["extend"] else "resume",
    )


def _check_out_early(s: dict) -> None:
    """Refuse a bad --out, or another grid on its run, before a model loads (the full check runs again later)."""
    from yoco_eval.niah.grid import another_grid, check_out_folder, grid_difference
    from yoco_eval.niah.store import read_run_json

    check_out_folder(s["out"])
    if s["extend"] or s["overwrite"] or "max" in str(s["lengths"]) or not Path(s["out"]).is_dir():
        return
    existing = read_run_json(s["out"])
    if existing is None or not isinstance(existing.get("grid"), dict):
        return
    asked = {"lengths": parse_lengths(s["lengths"]), "depths": parse_depths(s["depths"]), "trials": int(s["trials"])}
    try:
        diff = grid_difference(existing["grid"], asked)
    except (KeyError, TypeError, ValueError):
        return  # an odd run.json: the full check after loading the model explains it
    if diff:
        raise another_grid(s["out"], diff)


def _main(args: argparse.Namespace) -> int:
    s = settings_of(args)
    if s["show"]:
        return show(s["show"])
    if not s["model"]:
        raise YocoEvalError("no model given: pass --model yoco --model-args pretrained=DIR (or --config FILE)")
    if not s["lengths"]:
        raise YocoEvalError("no context lengths given: pass --lengths, e.g. 1k,4k,16k (or --config FILE)")
    if s["extend"] and s["overwrite"]:
        raise YocoEvalError("--extend and --overwrite exclude each other: pick one")
    # Everything that needs no model is checked first, so obvious mistakes fail before a model loads.
    variant = _variant(s)
    parse_depths(s["depths"])
    if "max" not in str(s["lengths"]):
        parse_lengths(s["lengths"])
    if s["out"]:
        _check_out_early(s)
    # a first line within a second or two: the imports below (torch, the engine) and the model load take longer
    print(f"loading model {s['model']}" + (f" ({s['model_args']})" if s["model_args"] else "") + " ...",
          file=sys.stderr, flush=True)  # fmt: skip
    from yoco_eval.niah.models import load_needle_model
    from yoco_eval.niah.runner import run_sweep
    from yoco_eval.runinfo import use_cpu_threads
    from yoco_eval.tokenizer import load_tokenizer

    use_cpu_threads(s["threads"])
    tokenizer = load_tokenizer(s["tokenizer"]) if s["tokenizer"] else None
    model = load_needle_model(
        s["model"], s["model_args"], tokenizer=tokenizer, chat_template=bool(s["chat_template"]), device=s["device"],
        system_prompt=s["system_prompt"] if s["model"] == "yoco" else None,
    )
    if s["model"] not in ("fake", "yoco") and s["system_prompt"] and s["chat_template"]:  # lm-eval models
        from yoco_eval.niah.models import chat_frame

        model.prompt_format = chat_frame(model.lm.tokenizer, s["system_prompt"])
    cfg = _sweep_config(s, model, variant, s["lengths"])
    summary = run_sweep(
        model,
        cfg,
        tokenizer=tokenizer if s["model"] != "fake" else None,
        progress=bool(s["progress"]),
        dry_run=bool(s["dry_run"]),
        tokens_per_s=s["tokens_per_s"],
        command=_command_line(),
    )
    if summary.get("dry_run"):
        return 0
    if summary.get("rank", 0) == 0 and "aggregate" in summary:
        print(f"{cfg.out}: {summary['rows']} cells ({summary['ran']} run now, {summary['errors']} errors)")
        print(format_scores(summary["aggregate"]))
        _render(Path(cfg.out), index_path(Path(cfg.out), s["index"]))
    return 0


def index_path(out: Path, given: str | None) -> Path | None:
    """The one index a run updates: ``--index PATH`` (``none``: no index), else ``<reports>/index.html`` of the
    nearest folder named ``reports`` above ``--out``, else none (a run elsewhere writes only inside ``--out``)."""
    if given is not None:
        return None if str(given).lower() in ("", "none") else Path(given)
    parts = out.resolve().parts
    if "reports" not in parts[:-1]:
        return None
    return Path(*parts[: len(parts) - 1 - parts[-2::-1].index("reports")]) / "index.html"


def _render(out: Path, index: Path | None) -> None:
    """The run's HTML report in ``out``, then ``index`` (if any): nothing else is created or rewritten."""
    from yoco_eval.report import render_run_and_index

    page, written = render_run_and_index(out, index)
    print(f"report: {page}" + (f"\nindex:  {written}" if written is not None else ""))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
