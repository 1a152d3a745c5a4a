"""``yoco-eval nll``: cumulative average NLL against position over long documents (the paper's Figure 6).

    yoco-eval nll --model models/yoco-needle-7m --model models/transformer-needle-7m \\
        --corpus book --corpus code --tokens 8192 --chunk 1024 --out runs/nll

Writes ``<out>/nll.jsonl`` (one line per model x corpus; rerun the same command to resume) and renders
``<out>/report.html`` (chart of cumulative average NLL against position, log x, every model overlaid, and a table).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from yoco_eval.errors import YocoEvalError

HELP = "NLL by position over book-length text and repository code (the paper's Figure 6), resumable"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("nll", help=HELP, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="SPEC",
        help="checkpoint folder (YOCO, Transformer, HF Llama) or preset name; repeat for several",
    )
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME",
        help="display name of the model at the same position (default: the folder or preset name)",
    )
    p.add_argument("--corpus", action="append", metavar="NAME|PATH",
                   help="book (Shakespeare + PG essays), code (the Python stdlib), or a text file/folder; "
                   "repeat for several (default: book and code)")  # fmt: skip
    p.add_argument("--tokens", type=int, default=8192, help="document length, in each model's own tokens")
    p.add_argument("--chunk", type=int, default=2048, help="tokens per forward call (bounds the logits held)")
    p.add_argument("--linear-width", type=int, default=None, help="linear bucket width in tokens (default T/16)")
    p.add_argument("--device", default="auto", help="auto (cuda when a GPU is visible), cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16")
    p.add_argument("--out", required=True, help="run folder (nll.jsonl and report.html are written there)")
    p.add_argument("--no-report", action="store_true", help="do not render report.html")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    from yoco_eval.loading import resolve_device, resolve_dtype
    from yoco_eval.nll.run import NllConfig, run_nll

    if args.tokens < 2:
        raise YocoEvalError(f"--tokens {args.tokens}: give at least 2 tokens")
    if args.chunk < 1:
        raise YocoEvalError(f"--chunk {args.chunk}: give a positive number of tokens")
    if len(args.label) > len(args.model):
        raise YocoEvalError(f"{len(args.label)} --label for {len(args.model)} --model: give at most one per model")
    device = resolve_device(args.device)  # the one device/dtype resolution (yoco_eval.loading)
    dtype = resolve_dtype(args.dtype, device)
    device = str(device)
    cfg = NllConfig(models=list(args.model), corpora=list(args.corpus or ["book", "code"]), tokens=args.tokens,
                    chunk=args.chunk, device=device, dtype=dtype, linear_width=args.linear_width,
                    labels=list(args.label))  # fmt: skip
    path = run_nll(cfg, args.out)
    print(f"results: {path}")
    if not args.no_report:
        from yoco_eval.report.nll import render_nll

        page = render_nll([path], Path(args.out) / "report.html")
        print(f"report: {page}")
    return 0


def _standalone(argv: list[str] | None = None) -> int:
    """``python -m yoco_eval.nll.cli ...`` until the lead registers ``nll`` in the command table."""
    parser = argparse.ArgumentParser(prog="yoco-eval")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["nll", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except YocoEvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_standalone())
