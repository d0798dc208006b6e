"""
LDA on a SLURM cluster with dask-jobqueue
=========================================

Submits ``--jobs`` Slurm jobs through dask-jobqueue's ``SLURMCluster``, each one Dask
worker with **one Dask thread** and ``--cores`` cores booked for numba (the job script
exports ``NUMBA_NUM_THREADS``), fits :class:`dask_dpsgd.DPSVILatentDirichletAllocation`
on the bundled NIPS corpus on those workers and prints the held-out perplexity.

Run it where you submit jobs (a login node), from a Python environment that the compute
nodes see at the same path; dask-jobqueue is not a dependency of dask-dpsgd::

    pip install dask-jobqueue
    python slurm_submit.py --jobs 4 --cores 8 --memory 16GiB --walltime 01:00:00 \\
        --queue normal

This process holds the Dask scheduler: the workers connect back to it, and their jobs
are cancelled when it ends. ``--interface`` picks the network interface both use (for
instance ``ib0``; ``lo`` on a single-node test Slurm).
"""

from __future__ import annotations

import argparse
import time

from dask_jobqueue import SLURMCluster
from distributed import Client

from dask_dpsgd import DPSVILatentDirichletAllocation
from dask_dpsgd.datasets import load_nips


def main(args: argparse.Namespace) -> None:
    # ---- the cluster: one Dask thread per job, every booked core for numba
    cluster = SLURMCluster(
        cores=1, processes=1,                 # one Dask worker thread per job ...
        job_cpu=args.cores,                   # ... and all the job's cores for numba
        job_script_prologue=[f"export NUMBA_NUM_THREADS={args.cores}"],
        memory=args.memory, walltime=args.walltime, queue=args.queue,
        interface=args.interface, job_name=args.job_name,
        # any free port (login nodes are shared); loopback only on a loopback cluster
        scheduler_options={"dashboard_address":
                           "127.0.0.1:0" if args.interface == "lo" else ":0"},
    )
    with cluster, Client(cluster) as client:
        print(cluster.job_script())
        print("dashboard:", client.dashboard_link)
        t0 = time.perf_counter()
        cluster.scale(jobs=args.jobs)
        print(f"waiting for {args.jobs} Slurm job(s) to start ...", flush=True)
        client.wait_for_workers(args.jobs, timeout=args.timeout)
        print(f"{args.jobs} worker(s) up after {time.perf_counter() - t0:.1f} s")

        # ---- data and fit: the estimator uses the current (SLURM) client
        corpus = load_nips()
        X_train = corpus.data[corpus.train_indices]
        X_test = corpus.data[corpus.test_indices]
        lda = DPSVILatentDirichletAllocation(n_components=args.n_components,
                                             max_iter=args.max_iter,
                                             random_state=0).fit(X_train)

    # ---- report: the fitted model holds plain arrays and scores without the cluster
    vocab = corpus.feature_names
    for k, row in enumerate(lda.components_):
        print(f"topic {k:2d}:", " ".join(vocab[i] for i in row.argsort()[::-1][:8]))
    print(f"{lda.n_workers_} SLURM worker(s) x {lda.threads_per_worker_} numba "
          f"threads; {lda.n_updates_applied_} updates, staleness mean "
          f"{lda.staleness_mean_:.2f}")
    print(f"held-out perplexity: {lda.perplexity(X_test):.1f}")


if __name__ == "__main__":  # Dask starts processes: guard the entry point
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--jobs", type=int, default=2,
                        help="Slurm jobs, one Dask worker each (default: 2)")
    parser.add_argument("--cores", type=int, default=4,
                        help="cores per job, all used by numba (default: 4)")
    parser.add_argument("--memory", default="8GiB",
                        help="memory per job (default: 8GiB)")
    parser.add_argument("--walltime", default="01:00:00",
                        help="time limit per job (default: 01:00:00)")
    parser.add_argument("--queue", default=None,
                        help="Slurm partition (default: the cluster's default)")
    parser.add_argument("--interface", default=None,
                        help="network interface of scheduler and workers, e.g. ib0")
    parser.add_argument("--job-name", default="dask-dpsgd",
                        help="Slurm job name (default: dask-dpsgd)")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds to wait for the jobs to start (default: 3600)")
    parser.add_argument("--n-components", type=int, default=20)
    parser.add_argument("--max-iter", type=int, default=3)
    main(parser.parse_args())
