"""The environment is read in one place, validated, and importing the package writes nothing."""

import os
import subprocess
import sys

import pytest

from yoco_eval.errors import ConfigError
from yoco_eval.settings import Settings


def test_defaults_and_values():
    s = Settings.from_env({})
    assert (s.threads, s.triton, s.fla_full_autotune, s.world_size, s.commit) == (1, True, False, 1, None)
    s = Settings.from_env({"YOCO_EVAL_THREADS": "4", "YOCO_EVAL_TRITON": "0", "WORLD_SIZE": "2", "RANK": "1",
                           "YOCO_EVAL_COMMIT": "abc", "YOCO_EVAL_FLA_FULL_AUTOTUNE": "1"})
    assert (s.threads, s.triton, s.world_size, s.rank, s.commit, s.fla_full_autotune) == (4, False, 2, 1, "abc", True)


BAD = [{"YOCO_EVAL_THREADS": "two"}, {"YOCO_EVAL_THREADS": "0"}, {"YOCO_EVAL_TRITON": "maybe"}]


@pytest.mark.parametrize("env", BAD)
def test_bad_values_name_the_variable(env):
    with pytest.raises(ConfigError, match=next(iter(env))):
        Settings.from_env(env)


def test_import_has_no_side_effects():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_CACHE_DIR"}
    code = "import os, yoco_eval, yoco_eval.settings; print(os.environ.get('TRITON_CACHE_DIR'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"
