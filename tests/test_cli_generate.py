"""`yoco-eval generate` and `convert`: the summary line says in words why generation stopped; --help shows defaults."""

from __future__ import annotations

import pytest

from yoco_eval import cli


def test_generate_says_why_it_stopped(capsys):
    argv = ["generate", "--model", "yoco-needle-7m", "--device", "cpu", "--prompt", "ROMEO:", "--max-new-tokens", "5"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "5 generated, stopped at --max-new-tokens;" in err and "length" not in err


def test_generate_and_convert_help_show_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "most tokens to generate (default: 64)" in text and "(default: 0.0)" in text
    assert "(default: None)" not in text and "(default: [])" not in text  # required or empty: no default shown
    with pytest.raises(SystemExit):
        cli.main(["convert", "--help"])
    assert "(default: yoco-eval)" in " ".join(capsys.readouterr().out.split())
