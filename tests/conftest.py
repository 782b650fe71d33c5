"""Shared fixtures: a per-session kdgm cache (data decoded once) and a tiny-run helper."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def kdgm_cache(tmp_path_factory) -> Path:
    """One cache folder for the whole session, so MNIST is decoded from the wheel once."""
    folder = Path(os.environ.get("KDGM_TEST_CACHE", tmp_path_factory.getbasetemp() / "kdgm-cache"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def cli_env(kdgm_cache, monkeypatch) -> dict[str, str]:
    """Environment for running the ``kdgm`` command in a subprocess with the session cache."""
    monkeypatch.setenv("KDGM_CACHE_DIR", str(kdgm_cache))
    return {**os.environ, "KDGM_CACHE_DIR": str(kdgm_cache), "PYTHONUNBUFFERED": "1"}


def kdgm_command(*args: str) -> list[str]:
    """The ``kdgm`` console command run with this interpreter."""
    return [sys.executable, "-m", "kdgm.cli", *args]
