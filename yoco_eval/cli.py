"""The ``yoco-eval`` command: a table of subcommands, each a module with a parser builder and a function.

    yoco-eval needle ...     needle-in-a-haystack sweep (the default: `yoco-eval` alone runs the embedded model's)
    yoco-eval report DIR     re-render HTML reports and the index from results files
    yoco-eval generate ...   generate text from a prompt
    yoco-eval profile ...    memory / prefill / decode profile against context length
    yoco-eval nll ...        NLL by position over long documents (book text, repository code)
    yoco-eval convert ...    save a checkpoint in our format or the official one
    yoco-eval lm-eval ...    lm-evaluation-harness with the `yoco` model registered (same flags as lm_eval)

Only the chosen subcommand's module is imported (``yoco-eval --help`` imports none), and an import that fails
fails loudly: a broken module never silently removes its subcommand. User errors
(:class:`~yoco_eval.errors.YocoEvalError`) print one line and exit with status 2, Ctrl-C exits with 130, and
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import dataclass

from yoco_eval.errors import YocoEvalError


@dataclass(frozen=True)
class Command:
    """One subcommand: ``module.<adder>(subparsers)`` builds its parser and sets ``func``; ``passthrough``
    commands take their raw arguments (``module.main(argv)``). ``own_threads``: the command sets torch's CPU
    threads itself (after its first output line, since importing torch takes seconds)."""

    module: str
    adder: str
    help: str
    passthrough: bool = False
    own_threads: bool = False


COMMANDS: dict[str, Command] = {
    "needle": Command(
        "yoco_eval.niah.cli", "add_parser", "needle-in-a-haystack sweep (exact lengths, resumable)", own_threads=True
    ),  # fmt: skip
    "report": Command("yoco_eval.report.cli", "add_parser", "re-render HTML reports and the index from results files"),
    "generate": Command("yoco_eval.cli_generate", "add_generate_parser", "generate text from a prompt"),
    "profile": Command("yoco_eval.profile", "add_parser", "memory / prefill / decode against context length (GPU)"),
    "nll": Command("yoco_eval.nll.cli", "add_parser", "NLL by position over book-length text and code (paper Fig. 6)"),
    "convert": Command("yoco_eval.cli_generate", "add_convert_parser", "save a checkpoint in another format"),
    "lm-eval": Command(
        "yoco_eval.lm_eval_cli", "main", "lm-evaluation-harness with --model yoco (lm_eval's flags)", passthrough=True
    ),  # fmt: skip
}
DEFAULT_COMMAND = "needle"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written, and every option's default in its help line."""


class _Parser(argparse.ArgumentParser):
    """Subcommand parsers show their defaults unless the command picks its own formatter."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser. Every command is listed; only ``chosen`` is imported and given its real flags."""
    parser = argparse.ArgumentParser(
        prog="yoco-eval",
        description="Long-context evaluation around YOCO. With no command (or only flags) it runs `needle`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log kernel choices and progress details")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, cmd in COMMANDS.items():
        if name == chosen and not cmd.passthrough:
            getattr(importlib.import_module(cmd.module), cmd.adder)(sub)
        else:
            sub.add_parser(name, help=cmd.help, add_help=name != chosen)
    return parser


def _dispatch(argv: list[str], debug: bool) -> int:
    if argv and argv[0] in COMMANDS and COMMANDS[argv[0]].passthrough:
        cmd = COMMANDS[argv[0]]
        return int(getattr(importlib.import_module(cmd.module), cmd.adder)(argv[1:]) or 0)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "-v", "--verbose")):
        argv = [DEFAULT_COMMAND, *argv]  # the default: the embedded model's needle sweep (flags override its grid)
    chosen = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(chosen)
    args = parser.parse_args(argv)
    args.debug = debug
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if not COMMANDS[chosen].own_threads:
        from yoco_eval.runinfo import use_cpu_threads

        use_cpu_threads()
    return int(args.func(args) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = bool(argv) and argv[0] in COMMANDS and COMMANDS[argv[0]].passthrough
    debug = "--debug" in argv and not passthrough
    if debug:
        argv = [a for a in argv if a != "--debug"]
    try:
        return _dispatch(argv, debug)
    except YocoEvalError as e:
        if debug:
            raise
        print(f"yoco-eval: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the user gave that the system refuses (permissions, a full disk)
        if debug:
            raise
        print(f"yoco-eval: error: {e} (--debug shows where)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("yoco-eval: interrupted (finished work is kept; rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
