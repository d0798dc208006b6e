"""
DPSVI LDA with dask-ml's wrappers: Incremental and ParallelPostFit
==================================================================

The documents are a Dask array whose row blocks are loaded by tasks (here: slices of
the bundled NIPS corpus; in practice, files read by each task).

* ``dask_ml.wrappers.Incremental`` feeds the blocks to ``partial_fit`` one after the
  other. Each ``partial_fit`` is itself distributed: dask-ml runs it as a task on a
  worker, and from there DPSVI spreads the block's minibatches over the same cluster's
  workers and the parameter server (the task steps out of its worker's thread pool
  while it waits, so the fit's own tasks can run on that worker too).
* ``dask_ml.wrappers.ParallelPostFit`` fits on an in-memory sample, then transforms the
  whole Dask array block by block, in parallel on the workers: the fitted estimator
  holds plain arrays, so it is shipped to the workers without any cluster state.

Needs ``pip install dask-ml`` (in the ``test`` extra).
"""

from __future__ import annotations

import argparse
import time

import dask
import dask.array as da
import numpy as np
from dask_ml.wrappers import Incremental, ParallelPostFit
from distributed import Client, LocalCluster

from dask_dpsgd import DPSVILatentDirichletAllocation
from dask_dpsgd.datasets import load_nips


def load_rows(start: int, stop: int) -> np.ndarray:
    """Documents ``start:stop`` as dense counts (runs in a task, on a worker)."""
    return load_nips().data[start:stop].toarray()


def document_blocks(n_docs: int, block: int) -> da.Array:
    """A Dask array of ``n_docs`` documents in row blocks that tasks load."""
    n_words = load_nips().data.shape[1]
    blocks = [da.from_delayed(dask.delayed(load_rows)(a, min(a + block, n_docs)),
                              shape=(min(a + block, n_docs) - a, n_words), dtype=float)
              for a in range(0, n_docs, block)]
    return da.concatenate(blocks)


def main(n_docs: int, block: int, n_components: int) -> None:
    vocab = load_nips().feature_names
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster):
        X = document_blocks(n_docs, block)
        print(f"documents: {X.shape[0]} x {X.shape[1]} words in "
              f"{X.numblocks[0]} blocks of {block}")

        # ---- Incremental: one DPSVI partial_fit per block, blocks in random order
        inc = Incremental(DPSVILatentDirichletAllocation(
            n_components=n_components, total_samples=n_docs, random_state=0),
            random_state=0)
        t0 = time.perf_counter()
        inc.fit(X)
        lda = inc.estimator_
        print(f"Incremental: {X.numblocks[0]} partial_fit calls in "
              f"{time.perf_counter() - t0:.1f} s on {lda.n_workers_} workers, "
              f"{lda.n_batch_iter_ - 1} minibatch updates in all")
        for k, row in enumerate(lda.components_):
            print(f"  topic {k}:", " ".join(vocab[i] for i in row.argsort()[::-1][:6]))

        # ---- ParallelPostFit: fit on a sample in memory, transform every block
        sample = load_nips().data[:block]
        ppf = ParallelPostFit(DPSVILatentDirichletAllocation(
            n_components=n_components, max_iter=2, random_state=0))
        ppf.fit(sample)
        doc_topics = ppf.transform(X)  # lazy: one transform task per block
        t0 = time.perf_counter()
        theta = doc_topics.compute()
        print(f"ParallelPostFit: transformed {X.numblocks[0]} blocks in parallel in "
              f"{time.perf_counter() - t0:.1f} s")
        # dask-ml keeps the input's column chunks on the lazy result; the computed
        # array has one column per topic.
        print(f"document-topic shape: {theta.shape}, rows sum to 1: "
              f"{np.allclose(theta.sum(axis=1), 1.0)}")


if __name__ == "__main__":  # Dask starts worker processes: guard the entry point
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--n-docs", type=int, default=1500)
    parser.add_argument("--block", type=int, default=250,
                        help="documents per Dask array block (default: 250)")
    parser.add_argument("--n-components", type=int, default=8)
    args = parser.parse_args()
    main(args.n_docs, args.block, args.n_components)
