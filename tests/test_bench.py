"""Every benchmark script runs end to end (a few steps each), so that bench/ cannot rot while the library changes."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

CASES = {
    "air_step.py": (["--steps", "2", "--warmup", "1", "--n-per-count", "100", "--threads", "1"],
                    "ASR penalty cost"),
    "vae_throughput.py": (["--steps", "3", "--repeats", "1"], "throughput ratio kdgm/plain"),
    "dcgan_throughput.py": (["--steps", "3", "--repeats", "1"], "throughput ratio kdgm/plain"),
    "glow_vs_normflows.py": (["--steps", "2", "--eval-examples", "64", "--threads", "1"], "kdgm / normflows"),
}


HELPERS = {"pyro_air.py"}  # imported by a script, not run on its own


def test_every_bench_script_has_a_case():
    assert sorted(p.name for p in BENCH.glob("*.py") if p.name not in HELPERS) == sorted(CASES)


@pytest.mark.parametrize("script", sorted(CASES))
def test_bench_script_runs_and_prints_its_ratio(script, tmp_path):
    if script == "glow_vs_normflows.py" and importlib.util.find_spec("normflows") is None:
        pytest.skip("normflows is not installed (pip install -e '.[bench]')")
    args, expected = CASES[script]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout, result.stdout[-2000:]
