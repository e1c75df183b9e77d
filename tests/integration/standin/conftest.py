"""Session fixtures for the stand-in: one dist built per test session, shared read-only."""

from __future__ import annotations

import shutil

import pytest

from tests.testlab.standin import build_dist, require_torch


@pytest.fixture(scope="session")
def standin_dist(tmp_path_factory):
    """A stand-in dist built with the project's build command (reusing the venv's torch)."""
    require_torch()
    out = tmp_path_factory.mktemp("standin") / "dist"
    r = build_dist(out)
    assert r.returncode == 0, f"stand-in build failed:\n{r.stdout}\n{r.stderr}"
    yield out
    shutil.rmtree(out.parent, ignore_errors=True)
