"""yoco_eval.runinfo: what a run records (commit, hardware, time, torchrun context), environment via settings."""

from __future__ import annotations

import re

import pytest

from yoco_eval import runinfo, settings


@pytest.fixture
def env(monkeypatch):
    yield monkeypatch
    monkeypatch.undo()
    settings.reload()


def test_commit_comes_from_settings_then_git(env):
    env.setenv("YOCO_EVAL_COMMIT", "abc123")
    settings.reload()
    assert runinfo.git_commit() == "abc123"
    env.delenv("YOCO_EVAL_COMMIT")
    settings.reload()
    commit = runinfo.git_commit()
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit)


def test_single_process_context_and_time_format(env):
    env.delenv("WORLD_SIZE", raising=False)
    settings.reload()
    assert runinfo.dist_context() == (0, 1, None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", runinfo.utc_now())
    hw = runinfo.hardware()
    assert hw["device"] == "cpu" and "logical cores" in hw["name"]
