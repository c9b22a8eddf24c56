"""Shared test helpers: locations of real data and the external references (R, Chromium)."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()


def _require(env: str, available: bool, what: str):
    if available:
        return lambda fn: fn
    if os.environ.get(env) == "1":
        # CI sets this: a missing reference must fail the run, not silently skip it
        return _fail_marker(what)
    return pytest.mark.skip(reason=f"{what} not installed (run `make sysdeps`)")


def _fail_marker(what: str):
    def deco(fn):
        # functools.wraps keeps the signature, so pytest still passes fixtures and parameters
        @functools.wraps(fn)
        def wrapper(*a, **k):
            pytest.fail(f"{what} is required (VALIDATE_REQUIRE_*=1) but not installed")

        return wrapper

    return deco


requires_r = _require("VALIDATE_REQUIRE_R", shutil.which("Rscript") is not None, "R (Rscript with rms, pROC)")
requires_browser = _require("VALIDATE_REQUIRE_BROWSER", Path("/usr/bin/chromium").exists(), "Debian chromium")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
