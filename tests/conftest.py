"""Shared fixtures: a per-session kdgm cache (data decoded once) and a tiny-run helper."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel test workers share the cores: one thread each avoids the oversubscription that makes torch's
    # thread pools wait on each other (measured 17 ms vs 480 ms per CNN step on 2 shared cores).
    torch.set_num_threads(1)


def sentiment_data_dir() -> Path | None:
    """The folder with the sentence data sets ($KDGM_DATA_DIR or ../shared/data), or None."""
    for candidate in (os.environ.get("KDGM_DATA_DIR"), SHARED_DATA):
        if candidate and (Path(candidate) / "sentiment" / "stsa.binary.train").is_file():
            return Path(candidate)
        if candidate and (Path(candidate) / "stsa.binary.train").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of small-tensor tests, restored afterwards: on 2 cores shared with other jobs,
    two threads measured 3-50x slower for them. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    threads = {"OMP_NUM_THREADS": "1"} if os.environ.get("PYTEST_XDIST_WORKER") else {}
    return {**os.environ, "KDGM_CACHE_DIR": str(kdgm_cache), "PYTHONUNBUFFERED": "1", **threads}


def kdgm_command(*args: str) -> list[str]:
    """The ``kdgm`` console command run with this interpreter."""
    return [sys.executable, "-m", "kdgm.cli", *args]


def step_every_phase(model, phases, batch) -> None:
    """One optimizer step of each of an experiment's phases on ``batch``, in order; every loss must be finite."""
    for phase in phases:
        out = phase.objective(model, batch)
        phase.optimizer.zero_grad()
        out.total.backward()
        phase.optimizer.step()
        assert torch.isfinite(out.total), phase.name
