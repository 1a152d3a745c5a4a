"""``yoco-eval report DIR``: re-render every report under DIR from the results files alone.

Usage::

    yoco-eval report reports/                       # every run, lm-eval and profile page, then reports/index.html
    yoco-eval report reports/runs/my-run            # one run folder (holds run.json) → its report.html
    yoco-eval report reports/runs/my-nll            # one NLL run folder (holds nll.jsonl) → its report.html
    yoco-eval report reports/ --compare reports/runs/a reports/runs/b   # also reports/compare/a__vs__b.html
                                                    # (two needle runs, or two NLL runs overlaid)
    yoco-eval report reports/examples               # the committed examples (their own tree, own index)

Only DIR's own tree is written: a subfolder with its own index.html (such as reports/examples) is linked from
DIR/index.html, not re-rendered. Also runnable as ``python -m yoco_eval.report.cli DIR``. Input problems (a
missing or truncated results file, a corrupt line, a half-copied run folder) are shown on the page and printed
one per line as ``warning: FILE:LINE: problem — fix``; the rest still renders.
Exit status: 0 rendered (with or without warnings), 2 nothing rendered (a bad argument, one ``error:`` line).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from yoco_eval.errors import YocoEvalError
from yoco_eval.report.index import is_nll_run, render_all
from yoco_eval.report.nll import _render_nll
from yoco_eval.report.problems import Problem
from yoco_eval.report.render import RUN_PAGE, _render_run

HELP = "render HTML reports (heatmaps, index, comparisons, lm-eval and profile pages) from results files"


def _arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "dir",
        metavar="DIR",
        type=Path,
        help="a reports folder (rendered recursively, plus DIR/index.html), one run folder with run.json, or "
        "one NLL run folder with nll.jsonl",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        action="append",
        metavar=("A", "B"),
        type=Path,
        default=[],
        help="also write DIR/compare/A__vs__B.html comparing two needle run folders, or two NLL run folders "
        "(repeatable)",
    )
    p.add_argument("--no-index", action="store_true", help="do not write DIR/index.html")
    p.add_argument(
        "--generated-at",
        metavar="TEXT",
        default=None,
        help="render time to print in page footers (omitted by default, so output is reproducible)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``report`` on the top-level ``yoco-eval`` parser; the subcommand calls :func:`main`."""
    p = subparsers.add_parser("report", help=HELP, description=__doc__.split("\n\n")[0])
    _arguments(p)
    p.set_defaults(func=main)
    return p


def _check(args: argparse.Namespace) -> None:
    if not args.dir.exists():
        raise YocoEvalError(f"{args.dir}: no such folder — pass the reports folder (e.g. reports) or a run folder")
    if not args.dir.is_dir():
        raise YocoEvalError(f"{args.dir}: not a folder — pass the reports folder or a run folder, not a file")
    for a, b in args.compare:
        kinds = []
        for run in (a, b):
            if (run / "run.json").is_file():
                kinds.append("needle")
            elif is_nll_run(run):
                kinds.append("nll")
            else:
                raise YocoEvalError(
                    f"{run}: no run.json or nll.jsonl there — --compare takes two needle run folders or two NLL run "
                    "folders"
                )
        if kinds[0] != kinds[1]:
            what = {"needle": "a needle run", "nll": "an NLL run"}
            raise YocoEvalError(f"{a} is {what[kinds[0]]} and {b} {what[kinds[1]]}: compare two runs of one kind")


def main(args: argparse.Namespace) -> int:
    """Run ``yoco-eval report`` with parsed arguments; returns the exit status (never raises on bad input)."""
    try:
        _check(args)
        single = ((args.dir / "run.json").is_file() or is_nll_run(args.dir)) and not args.compare
        if single and is_nll_run(args.dir):  # one NLL run folder: its report.html from nll.jsonl
            path, problems = _render_nll([args.dir], args.dir / RUN_PAGE, args.generated_at)
            pages, index = [path], None
            problems = [Problem(f"{args.dir.name}/{p.path}", p.line, p.message, p.fix) for p in problems]
        elif single:
            r = _render_run(args.dir, base=args.dir.parent, generated_at=args.generated_at)
            pages, index, problems = [r.path], None, r.problems
        else:
            s = render_all(
                args.dir, [tuple(p) for p in args.compare], generated_at=args.generated_at, with_index=not args.no_index
            )
            pages, index, problems = s.pages, s.index, s.problems
    except YocoEvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(
            f"error: {e.filename or args.dir}: {e.strerror or e} — check the folder exists and is writable",
            file=sys.stderr,
        )
        return 2
    base = args.dir.parent if single else args.dir
    for p in problems:
        shown = p.path if p.path.startswith(("A: ", "B: ")) else (base / p.path).as_posix()
        where = shown if p.line is None else f"{shown}:{p.line}"
        print(f"warning: {where}: {p.message} — {p.fix}", file=sys.stderr)
    if not args.quiet:
        print(
            f"rendered {len(pages)} page{'s' if len(pages) != 1 else ''}"
            + (f"; index: {index}" if index else f": {pages[0]}" if single else "")
        )
    return 0  # problems are in the pages and the warnings: one half-copied folder must not fail the command


def _standalone(argv: list[str] | None = None) -> int:
    parser = _arguments(argparse.ArgumentParser(prog="yoco-eval report", description=HELP))
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(_standalone())

__all__ = ["HELP", "RUN_PAGE", "add_parser", "main"]
