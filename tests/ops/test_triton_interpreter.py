"""Our Triton kernels, run on the CPU under Triton's interpreter (the cases and their rule: interpret_cases.py).

The interpreter is chosen when a kernel is defined, so the cases run in a subprocess that sets
``TRITON_INTERPRET=1`` before anything imports them. Triton comes with the ``test`` extra."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed: pip install -e '.[test]'")
def test_triton_kernels_under_the_interpreter():
    cases = Path(__file__).with_name("interpret_cases.py")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop("YOCO_EVAL_TRITON", None)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", str(cases)],
                       env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    print(r.stdout.splitlines()[-1] if r.stdout else r.stderr[-500:])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
