"""The examples and the main jobs, run as a user runs them (subprocesses, tiny budgets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(args: list[str], cwd: Path, timeout: int = 240,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=cwd,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args", "expect"),
    [
        ("lda_quickstart.py", ["--n-components", "4", "--max-iter", "1"],
         "held-out perplexity"),
        ("lda_existing_cluster.py", ["--max-iter", "1"], "2 workers x [1, 1] threads"),
        ("lda_pipeline_gridsearch.py", ["--n-docs", "80"], "document-topic shape: (3,"),
        ("lda_dask_ml.py", ["--n-docs", "300", "--block", "100", "--n-components", "3"],
         "document-topic shape: (300, 3), rows sum to 1: True"),
        ("hsa2c_cartpole.py", ["--total-timesteps", "3000", "--plot", "curve.png"],
         "evaluation return"),
    ],
)
def test_example_runs(tmp_path, script, args, expect):
    # The existing-cluster example sizes numba through LocalCluster(env=...): run it on
    # an empty numba cache, as on a fresh install, where the kernels compile after the
    # env applied (a pool started at the old size used to make that compile raise).
    env = ({"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
           if script == "lda_existing_cluster.py" else None)
    proc = _run([str(EXAMPLES / script), *args], tmp_path, env=env)
    assert expect in proc.stdout
    if script.startswith("hsa2c"):
        assert (tmp_path / "curve.png").stat().st_size > 1000


@pytest.mark.slow
def test_a2c_main_job_trains_evaluates_and_plots(tmp_path):
    proc = _run(["-m", "dask_dpsgd", "a2c", "--env", "CartPole-v1", "--total-timesteps",
                 "5000", "--n-eval-episodes", "3", "--plot", "lc.png", "--output",
                 "a2c.json"], tmp_path)
    assert "evaluation return" in proc.stdout
    assert "Dask dashboard: http://127.0.0.1:" in proc.stdout + proc.stderr
    assert "HSA2C timesteps" in proc.stderr
    assert (tmp_path / "lc.png").stat().st_size > 1000
    out = json.loads((tmp_path / "a2c.json").read_text())
    assert out["timesteps"] >= 5000 and len(out["episode_returns"]) > 0


def test_a2c_cli_refuses_unknown_env(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dask_dpsgd", "a2c", "--env",
                           "NoSuchEnv-v0", "--total-timesteps", "100"],
                          capture_output=True, text=True, timeout=120, check=False,
                          cwd=tmp_path)
    assert proc.returncode != 0
    assert "cannot make gymnasium environment 'NoSuchEnv-v0'" in proc.stderr
