"""Shared fixtures: one real Dask LocalCluster for the whole session, and small corpora."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp


@pytest.fixture(scope="session")
def client():
    """A real LocalCluster on 127.0.0.1: 2 worker processes x 1 Dask thread, numba
    pools of 2 threads (so a fit may use 1 worker x 2 cores or 2 workers x 1 core).

    It is the default client while the session runs, as a user's ``with Client(...)``
    would be.
    """
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, env={"NUMBA_NUM_THREADS": "2"},
    ) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="session")
def fragile():
    """2 worker processes x 1 thread (1 numba thread) for tests that kill workers.

    The nannies restart a killed worker (under a new address); each use waits for both.
    Not the default client: tests make it current for their fits only.
    """
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, env={"NUMBA_NUM_THREADS": "1"},
    ) as cluster, distributed.Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture(scope="session")
def nips():
    """The bundled NIPS corpus (float64 CSR) with its 90/10 split."""
    from dask_dpsgd.datasets import load_nips

    bunch = load_nips()
    X = bunch.data.astype(np.float64)
    return X[bunch.train_indices], X[bunch.test_indices], bunch.feature_names


def synthetic_corpus(n_docs: int, n_topics: int, words_per_topic: int,
                     doc_len: int, seed: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Documents drawn from known, disjoint (block-diagonal) topics.

    Each topic owns ``words_per_topic`` words; each document mixes at most two topics.
    Returns the counts and the true topic of each word.
    """
    rng = np.random.default_rng(seed)
    V = n_topics * words_per_topic
    rows, cols, vals = [], [], []
    for d in range(n_docs):
        topics = rng.choice(n_topics, size=2, replace=False)
        weights = rng.dirichlet([0.3, 0.3])
        z = rng.choice(topics, size=doc_len, p=weights)
        w = z * words_per_topic + rng.integers(0, words_per_topic, size=doc_len)
        ids, cnt = np.unique(w, return_counts=True)
        rows += [d] * len(ids)
        cols += ids.tolist()
        vals += cnt.tolist()
    X = sp.csr_matrix((vals, (rows, cols)), shape=(n_docs, V), dtype=np.float64)
    return X, np.repeat(np.arange(n_topics), words_per_topic)
