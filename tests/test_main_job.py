"""The README's main job, run as a user would: embedded cluster, bundled corpus."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_main_job_runs_on_the_embedded_cluster(tmp_path):
    out_file = tmp_path / "lda.json"
    proc = subprocess.run(
        [sys.executable, "-m", "dask_dpsgd", "lda", "--n-components", "5", "--max-iter",
         "1", "--output", str(out_file)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "held-out perplexity" in proc.stdout
    assert "Dask dashboard: http://127.0.0.1:" in proc.stdout + proc.stderr
    assert "DPSVI passes" in proc.stderr  # the tqdm progress bar
    summary = json.loads(out_file.read_text())
    assert len(summary["topics"]) == 5
    assert 100 < summary["perplexity"] < 50_000


def test_cli_help_lists_parameters():
    proc = subprocess.run([sys.executable, "-m", "dask_dpsgd", "lda", "--help"],
                          capture_output=True, text=True, check=True)
    for flag in ("--n-components", "--max-iter", "--n-workers", "--threads-per-worker",
                 "--scheduler-address"):
        assert flag in proc.stdout


def test_cli_rejects_bad_values():
    proc = subprocess.run([sys.executable, "-m", "dask_dpsgd", "lda", "--max-iter", "x"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "invalid int value" in proc.stderr
