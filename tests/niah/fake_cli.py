"""A test-only entry point: ``yoco-eval needle`` with knobs for the fake model that the user CLI does not have.

    python tests/niah/fake_cli.py --fake-sleep 0.15 --fake-fail-lengths 2048 --lengths 1k ...

Every other flag goes to :func:`yoco_eval.niah.cli.main`; ``--model fake`` there builds a
:class:`FakeNeedleModel` with these options (also under torchrun: pass this file as the script).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, when run as a script

from yoco_eval.niah import cli, models  # noqa: E402


def fake_loader(options: dict):
    """A stand-in for :func:`yoco_eval.niah.models.load_needle_model` whose ``fake`` model takes ``options``."""
    real = models.load_needle_model

    def load(model, model_args=None, *, tokenizer=None, **kw):
        if model == "fake":
            return models.FakeNeedleModel(tokenizer, **options)
        return real(model, model_args, tokenizer=tokenizer, **kw)

    return load


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fake_cli", allow_abbrev=False)
    p.add_argument("--fake-mode", default="oracle")
    p.add_argument("--fake-sleep", type=float, default=0.0)
    p.add_argument("--fake-fail-lengths", default="")
    p.add_argument("--fake-max-context", type=int, default=None)
    ours, rest = p.parse_known_args([a for a in argv if a != "--"])
    options = {"mode": ours.fake_mode, "sleep_s": ours.fake_sleep, "max_context": ours.fake_max_context}
    if ours.fake_fail_lengths:
        options["fail_lengths"] = {int(x) for x in ours.fake_fail_lengths.split(",")}
    models.load_needle_model = fake_loader(options)
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
