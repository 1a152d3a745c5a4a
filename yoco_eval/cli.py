"""The ``yoco-eval`` command: one subcommand per job, each a plain function of its parsed flags.

    yoco-eval needle ...     needle-in-a-haystack sweep (yoco_eval.niah.cli)
    yoco-eval report DIR     re-render HTML reports and the index from results files (yoco_eval.report.cli)
    yoco-eval generate ...   generate text from a prompt
    yoco-eval profile ...    memory / prefill / decode profile against context length (yoco_eval.profile)
    yoco-eval lm-eval ...    lm-evaluation-harness with the `yoco` model registered (same flags as lm_eval)
    yoco-eval convert ...    save a checkpoint in our format or the official one

User errors (:class:`~yoco_eval.errors.YocoEvalError`) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from yoco_eval.errors import YocoEvalError

# subcommand -> module exposing add_parser(subparsers) and main(args) -> int
SUBCOMMANDS = {
    "needle": "yoco_eval.niah.cli",
    "report": "yoco_eval.report.cli",
    "generate": "yoco_eval.cli_generate",
    "profile": "yoco_eval.profile",
    "convert": "yoco_eval.cli_generate",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yoco-eval", description="Long-context evaluation around YOCO.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log kernel choices and progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("lm-eval", help="run lm-evaluation-harness with --model yoco available (same flags as lm_eval)")
    for name, modname in SUBCOMMANDS.items():
        if only is not None and name != only:
            continue
        try:
            mod = importlib.import_module(modname)
        except ImportError:  # a part not installed / not built yet
            continue
        adder = getattr(mod, f"add_{name}_parser", None) or getattr(mod, "add_parser", None)
        if adder is not None and name not in sub.choices:
            adder(sub)
        sp = sub.choices.get(name)
        if sp is not None and sp.get_default("func") is None and hasattr(mod, "main"):
            sp.set_defaults(func=mod.main)
    return parser


def _cpu_threads() -> None:
    """CPU runs use ONE intra-op thread unless YOCO_EVAL_THREADS says otherwise: on small CPU machines OpenMP's
    second thread made our models several times slower (see tests/conftest.py for the measurement)."""
    import os

    import torch

    torch.set_num_threads(int(os.environ.get("YOCO_EVAL_THREADS", "1")))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "lm-eval":
        from yoco_eval.lm_eval_cli import main as lm_eval_main

        return lm_eval_main(argv[1:])
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "-v", "--verbose")):
        argv = ["needle", *argv]  # the default: the embedded model's needle sweep (flags override its grid)
    only = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    _cpu_threads()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except YocoEvalError as e:
        print(f"yoco-eval: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("yoco-eval: interrupted (finished work is kept; rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
