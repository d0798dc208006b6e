"""
LDA on an existing Dask cluster
===============================

The estimator uses whatever Dask client is current. Here a ``LocalCluster`` of two
worker processes, one Dask thread each, numba sized to one core each: the pure
asynchronous parameter-server layout (2 workers x 1 core). On SLURM, replace the cluster
with dask-jobqueue's, booking the cores for numba rather than for Dask threads::

    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=1, processes=1, job_cpu=8, memory="16GiB",
                           walltime="01:00:00",
                           job_script_prologue=["export NUMBA_NUM_THREADS=8"])
    cluster.scale(jobs=4)
"""

from __future__ import annotations

import argparse

from distributed import Client, LocalCluster

from dask_dpsgd import DPSVILatentDirichletAllocation
from dask_dpsgd.datasets import load_nips


def main(max_iter: int) -> None:
    corpus = load_nips()
    X_train = corpus.data[corpus.train_indices]
    X_test = corpus.data[corpus.test_indices]
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0",
                      env={"NUMBA_NUM_THREADS": "1"}) as cluster, Client(cluster) as client:
        print("dashboard:", client.dashboard_link)
        lda = DPSVILatentDirichletAllocation(n_components=10, max_iter=max_iter,
                                             random_state=0).fit(X_train)
    # The fitted model holds plain arrays: it scores after the cluster is gone.
    print(f"{lda.n_workers_} workers x {lda.threads_per_worker_} threads; staleness "
          f"histogram {lda.staleness_histogram_.tolist()}")
    print(f"held-out perplexity: {lda.perplexity(X_test):.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--max-iter", type=int, default=3)
    main(parser.parse_args().max_iter)
