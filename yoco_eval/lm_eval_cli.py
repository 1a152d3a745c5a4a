"""``yoco-eval lm-eval ...`` / ``python -m yoco_eval.lm_eval_cli ...``: lm-eval's own CLI with ``--model yoco``.

Same flags as ``lm_eval`` (``run`` is implied). It imports the adapter (registering ``yoco``) and, when no
``--include_path`` (or ``--config``) is given, points ``--include_path`` at the project's offline tasks: the copy
shipped inside the wheel (``yoco_eval/_tasks``) or, in a source checkout / editable install, ``tasks/``.
Works under ``torchrun --nproc_per_node N -m yoco_eval.lm_eval_cli ...`` and ``accelerate launch -m ...``.
A :class:`~yoco_eval.errors.YocoEvalError` prints one line and exits with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from yoco_eval.errors import YocoEvalError

_HELP = {"-h", "--help"}


def tasks_dir() -> Path | None:
    """The offline task folder: ``yoco_eval/_tasks`` in a wheel install, else ``<checkout>/tasks``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_tasks", here.parent / "tasks"):
        if candidate.is_dir() and any(candidate.rglob("*.yaml")):
            return candidate
    return None


def _with_default_include_path(argv: list[str]) -> list[str]:
    if not argv or argv[0] in _HELP:
        return argv
    if any(a.split("=", 1)[0] in ("--include_path", "--config", "-C") for a in argv):
        return argv
    found = tasks_dir()
    return [*argv, "--include_path", str(found)] if found is not None else argv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from lm_eval.__main__ import cli_evaluate

        import yoco_eval.lm_eval_adapter  # noqa: F401  (registers --model yoco / yoco-eval)
    except ImportError as e:
        print(f"yoco-eval lm-eval: error: cannot import lm-eval ({e}): pip install 'lm-eval==0.4.13'", file=sys.stderr)
        return 2
    saved = sys.argv
    sys.argv = ["lm_eval", *_with_default_include_path(argv)]
    try:
        cli_evaluate()
    except YocoEvalError as e:
        print(f"yoco-eval lm-eval: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # lm-eval's own message for a task name it cannot find: one line, with the way out
        if not str(e).startswith("Tasks not found"):
            raise
        names = str(e).split(":", 1)[-1].strip()
        print(f"yoco-eval lm-eval: error: unknown task(s) {names}: list the tasks with `yoco-eval lm-eval ls tasks` "
              "(the project's offline ones are in tasks/README.md)", file=sys.stderr)  # fmt: skip
        return 2
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
