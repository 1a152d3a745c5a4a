"""`yoco-eval`: the command table against the README, loud imports, one-line errors, Ctrl-C, --debug."""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from yoco_eval import cli

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> tuple[set[str], set[str]]:
    """(`yoco-eval <sub>` run in the README's code blocks, `yoco-eval <sub>` in its table of commands)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = "\n".join(re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S))
    pattern = r"(?<![\w/-])yoco-eval[ \t]+([a-z][a-z-]*)"
    table = re.findall(r"^\| `yoco-eval ([a-z][a-z-]*)` \|", text, flags=re.M)
    return set(re.findall(pattern, blocks)), set(table)


def test_command_table_matches_the_readme():
    """Every command of the table is in the README's command list and run by one of its code blocks, and the
    README shows no command the table lacks."""
    in_blocks, listed = _readme_commands()
    assert in_blocks <= set(cli.COMMANDS), f"README commands missing from the table: {in_blocks - set(cli.COMMANDS)}"
    assert listed == set(cli.COMMANDS), f"README command list != table: {listed ^ set(cli.COMMANDS)}"
    assert set(cli.COMMANDS) <= in_blocks, f"commands no README code block shows: {set(cli.COMMANDS) - in_blocks}"


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_is_wired(name):
    cmd = cli.COMMANDS[name]
    assert callable(getattr(importlib.import_module(cmd.module), cmd.adder))
    if not cmd.passthrough:
        parser = cli.build_parser(name)
        sub = next(a for a in parser._actions if a.dest == "command").choices[name]
        assert callable(sub.get_default("func"))


def test_a_broken_import_fails_loudly(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "needle", cli.Command("yoco_eval.no_such_module", "add_parser", "broken"))
    with pytest.raises(ImportError):
        cli.main(["needle", "--lengths", "1k"])
    # the listing still names it: nothing disappears silently
    assert "needle" in cli.build_parser(None).format_help()


def test_lm_eval_task_module_does_not_import_the_cli():
    code = "import sys, yoco_eval.niah.lm_eval_task; print(sorted(m for m in sys.modules if m.endswith('cli')))"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "yoco_eval.cli" not in out.stdout and "yoco_eval.niah.cli" not in out.stdout


def test_help_lists_commands_and_needle_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    top = capsys.readouterr().out
    assert all(name in top for name in cli.COMMANDS) and "--debug" in top
    with pytest.raises(SystemExit):
        cli.main(["needle", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # help wraps its lines
    assert "(default: 0:100:11)" in text and "(default: 0)" in text and "--extend" in text
    assert "--fake" not in text and "default fake" not in text and "default: fake" not in text


def test_ctrl_c_during_start_up_is_one_line_and_130(tmp_path):
    out = tmp_path / "run"
    code = (
        "import os, signal, sys, time\n"
        "import yoco_eval.niah.models as m\n"
        "def load(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)\n"
        "m.load_needle_model = load\n"
        "from yoco_eval.cli import main\n"
        f"sys.exit(main(['--model', 'fake', '--lengths', '1k', '--out', {str(out)!r}]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # SIGINT at its default in the child even when this pytest runs in the background (which ignores it)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    assert res.returncode == 130, res.stderr
    lines = [x for x in res.stderr.strip().splitlines() if not x.startswith("loading model")]
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in res.stderr
    assert not out.exists()


def test_ctrl_c_while_importing_a_command(monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["needle", "--lengths", "1k"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("yoco-eval: interrupted")


def test_out_pointing_at_a_file_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    afile = tmp_path / "file.txt"
    afile.write_text("not a folder\n")
    for out in (afile, afile / "run"):
        argv = ["--model", "fake", "--haystack", "noise", "--lengths", "1k", "--depths", "50", "--out", str(out)]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is not a folder" in err[0], err
        assert afile.read_text() == "not a folder\n"
    from yoco_eval.errors import YocoEvalError

    with pytest.raises(YocoEvalError, match="is not a folder"):
        cli.main(["--debug", *argv])
