"""Golden files: the pages rendered from tests/fixtures/report/root must match the committed HTML byte for byte.

After an intended change to the templates or the data step, regenerate and review the diff::

    YOCO_UPDATE_GOLDEN=1 python -m pytest tests/report/test_golden.py
    git diff tests/fixtures/report/golden/
"""

from __future__ import annotations

import difflib
import os

import pytest

from tests.report.conftest import GOLDEN_DIR
from yoco_eval.report import render_all

# golden file name → page under the rendered root
PAGES = {
    "run_alpha.html": "runs/alpha/report.html",
    "index.html": "index.html",
    "compare_alpha_beta.html": "compare/alpha__vs__beta.html",
    "lm_eval.html": "lm-eval.html",
    "profile.html": "profile/profile_h100.html",
}


@pytest.mark.parametrize("golden", sorted(PAGES))
def test_page_matches_golden(root, tmp_path, golden):
    render_all(root, [(root / "runs" / "alpha", root / "runs" / "beta")])
    html = (root / PAGES[golden]).read_text(encoding="utf-8")
    assert str(tmp_path) not in html  # no machine-specific paths leak into pages
    path = GOLDEN_DIR / golden
    if os.environ.get("YOCO_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run YOCO_UPDATE_GOLDEN=1 python -m pytest tests/report/test_golden.py"
    want = path.read_text(encoding="utf-8")
    if html != want:
        diff = "".join(list(difflib.unified_diff(want.splitlines(True), html.splitlines(True), "golden", "now"))[:60])
        pytest.fail(
            f"{golden} differs from the golden file (if intended: YOCO_UPDATE_GOLDEN=1 python -m pytest "
            f"tests/report/test_golden.py, then review git diff):\n{diff}"
        )
