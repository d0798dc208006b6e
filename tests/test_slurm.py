"""Both estimators on a real Slurm through dask-jobqueue (docs/design.rst, "Slurm").

CI starts a single-node Slurm on localhost before the tests (``.ci/slurm/setup.sh``:
Debian's slurmctld + slurmd + munge). A machine without Slurm (no ``sbatch`` on PATH)
skips this module; one with Slurm runs it.

The layout under test is the one the docs recommend (docs/design.rst, "Slurm"): one Dask
thread per job, every core of the job booked for numba (``cores=1, processes=1,
job_cpu=N``) and numba told so through the job script (``export NUMBA_NUM_THREADS=N``).
The session ``client`` fixture is deliberately not used: the SLURM cluster's client must
be the default client here.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.slurm,
    pytest.mark.skipif(
        shutil.which("sbatch") is None,
        reason="no Slurm here (sbatch not on PATH); CI starts one with "
        ".ci/slurm/setup.sh",
    ),
]

WORKER_TIMEOUT_S = 120
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _job_cores() -> int:
    """Cores of this machine, all booked for one job (the test node is this host)."""
    return len(os.sched_getaffinity(0))


def _our_jobs(job_name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "--name", job_name, "-o", "%i %T"],
                         capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.splitlines()


def _slurm_state(log_dir: Path, job_name: str) -> str:
    """What to show when the worker does not come up: queue, node and job logs."""
    parts = []
    for cmd in (["squeue", "--name", job_name], ["sinfo", "-N", "-l"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              timeout=30)
        parts.append(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    for log in sorted(log_dir.glob("*")):
        parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}")
    return "\n".join(parts)


def _worker_facts() -> dict[str, object]:
    """What the worker process sees (run on it with ``client.run``)."""
    import numba

    return {
        "SLURM_JOB_ID": os.environ.get("SLURM_JOB_ID"),
        "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS"),
        "numba_pool": int(numba.config.NUMBA_NUM_THREADS),
    }


def test_estimators_fit_on_a_slurm_worker(tmp_path, request):
    import distributed
    from dask_jobqueue import SLURMCluster

    from dask_dpsgd import DPSVILatentDirichletAllocation, HSA2CAgent
    from dask_dpsgd.datasets import load_nips

    n = _job_cores()
    # A name of our own, so that the finalizer cancels this test's jobs and no others.
    job_name = f"dask-dpsgd-test-{uuid.uuid4().hex[:8]}"
    request.addfinalizer(lambda: subprocess.run(
        ["scancel", "--name", job_name], check=False, timeout=30))

    with SLURMCluster(
        cores=1, processes=1, job_cpu=n, memory="2GiB", walltime="00:10:00",
        queue="debug", interface="lo", job_name=job_name,
        job_script_prologue=[f"export NUMBA_NUM_THREADS={n}"],
        log_directory=str(tmp_path),
        scheduler_options={"dashboard_address": "127.0.0.1:0"},
    ) as cluster:
        script = cluster.job_script()
        assert f"export NUMBA_NUM_THREADS={n}" in script
        assert f"--cpus-per-task={n}" in script
        assert "--nthreads 1" in script

        t0 = time.perf_counter()
        cluster.scale(jobs=1)
        with distributed.Client(cluster) as client:
            try:
                client.wait_for_workers(1, timeout=WORKER_TIMEOUT_S)
            except (TimeoutError, asyncio.TimeoutError):  # distinct on Python 3.10
                pytest.fail(f"no SLURM worker after {WORKER_TIMEOUT_S}s\n"
                            + _slurm_state(tmp_path, job_name))
            print(f"SLURM worker up in {time.perf_counter() - t0:.1f}s")
            assert distributed.default_client() is client

            # The worker is the Slurm job's, and numba there was sized by the prologue.
            (facts,) = client.run(_worker_facts).values()
            # Job ids only: a live reference to a dask-jobqueue 0.9 Job object makes
            # SLURMCluster.close() fail (its Job.close() leaves the status "running",
            # and SpecCluster asserts on every Job object still alive).
            job_ids = [str(job.job_id) for job in cluster.workers.values()]
            assert job_ids == [facts["SLURM_JOB_ID"]]
            assert facts["NUMBA_NUM_THREADS"] == str(n)
            assert facts["numba_pool"] == n
            assert len(_our_jobs(job_name)) == 1

            X = load_nips().data[:200]
            lda = DPSVILatentDirichletAllocation(n_components=5, max_iter=1,
                                                 random_state=0).fit(X)
            assert lda.n_workers_ == 1
            assert lda.threads_per_worker_ == [n]
            perplexity = lda.perplexity(X)
            assert np.isfinite(perplexity)
            assert perplexity > 1
            assert lda.components_.shape == (5, X.shape[1])
            assert lda.n_updates_applied_ > 0

            agent = HSA2CAgent("CartPole-v1", total_timesteps=5_000,
                               random_state=0).fit()
            assert agent.n_workers_ == 1
            assert agent.threads_per_worker_ == [n]
            assert agent.num_timesteps_ >= 5_000
            assert len(agent.episode_returns_) > 0
            assert np.all(np.isfinite(agent.episode_returns_))
            assert np.all(agent.episode_returns_ >= 1)  # CartPole pays 1 per step
            print(f"LDA perplexity {perplexity:.1f}; A2C {len(agent.episode_returns_)} "
                  f"episodes, last return {agent.episode_returns_[-1]:.0f}")

    # Closing the cluster cancels its job; nothing of ours stays in the queue.
    deadline = time.monotonic() + 30
    while _our_jobs(job_name) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _our_jobs(job_name) == []


def _env_with_this_python() -> dict[str, str]:
    """This environment, with this interpreter's ``bin`` first on PATH (the jobs and
    the example run the same Python as the tests)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_slurm_submit_example_runs(tmp_path, request):
    job_name = f"dask-dpsgd-test-{uuid.uuid4().hex[:8]}"
    request.addfinalizer(lambda: subprocess.run(
        ["scancel", "--name", job_name], check=False, timeout=30))
    n = _job_cores()
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "slurm_submit.py"), "--jobs", "1", "--cores",
         str(n), "--memory", "2GiB", "--walltime", "00:10:00", "--queue", "debug",
         "--interface", "lo", "--job-name", job_name,
         "--timeout", str(WORKER_TIMEOUT_S),
         "--n-components", "4", "--max-iter", "1"],
        capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path,
        env=_env_with_this_python())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"export NUMBA_NUM_THREADS={n}" in proc.stdout
    assert f"1 SLURM worker(s) x [{n}] numba threads" in proc.stdout
    assert "held-out perplexity:" in proc.stdout


def _job_state(job_id: str) -> str:
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    return out.split("JobState=", 1)[1].split()[0]


def test_slurm_job_script_runs_the_main_job(tmp_path, request):
    job_name = f"dask-dpsgd-test-{uuid.uuid4().hex[:8]}"
    request.addfinalizer(lambda: subprocess.run(
        ["scancel", "--name", job_name], check=False, timeout=30))
    n = _job_cores()
    # (Polled here: ``sbatch --wait`` checks only every 10 s.)
    job_id = subprocess.run(
        ["sbatch", "--parsable", f"--job-name={job_name}", f"--cpus-per-task={n}",
         "--mem=4G", "--time=00:10:00", f"--chdir={tmp_path}",
         str(EXAMPLES / "slurm_job.sh"), "--n-components", "4", "--max-iter", "1",
         "--verbose", "0"],
        capture_output=True, text=True, timeout=60, check=True,
        env=_env_with_this_python()).stdout.strip().split(";")[0]
    deadline = time.monotonic() + 240
    while (state := _job_state(job_id)) in {"PENDING", "CONFIGURING", "RUNNING",
                                            "COMPLETING"}:
        assert time.monotonic() < deadline, f"job {job_id} still {state}"
        time.sleep(0.5)
    out = tmp_path / f"dask-dpsgd-lda-{job_id}.out"
    log = out.read_text(errors="replace") if out.exists() else "(no job output)"
    assert state == "COMPLETED", log[-3000:]
    threads = min(n, 4)  # the layout the job script derives from its CPUs
    assert f"{n} CPUs -> {n // threads} worker(s) x {threads} numba thread(s)" in log
    assert "held-out perplexity:" in log
    assert (tmp_path / f"dask-dpsgd-lda-{job_id}.json").stat().st_size > 0
