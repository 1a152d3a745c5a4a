"""Shared fixtures for the report tests: a writable copy of tests/fixtures/report/root and hostile strings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURE_ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "report" / "root"
GOLDEN_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "report" / "golden"
XSS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')
UNICODE = "Zürich – 東京 – naïve café – Ωμέγα – 🧪"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A fresh copy of the fixture reports folder, named ``root`` (page text depends on the folder name)."""
    dst = tmp_path / "root"
    shutil.copytree(FIXTURE_ROOT, dst)
    return dst
