"""The DPSVI plug-in without a cluster (engine.run_in_process), and the same plug-in on
the session's cluster: one worker's rounds are the same computation either way."""

from __future__ import annotations

import numpy as np
import pytest

from dask_dpsgd import engine
from dask_dpsgd.decomposition._svi import SVIAlgorithm, SVIConfig

K = 6


def _algorithm(X, seed=0, warmup_updates=10):
    cfg = SVIConfig(n_components=K, doc_topic_prior=1 / K, topic_word_prior=1 / K,
                    learning_offset=10.0, learning_decay=0.7, batch_size=64,
                    total_samples=float(X.shape[0]), max_doc_update_iter=100,
                    mean_change_tol=1e-3)
    lam0 = np.random.default_rng(seed).gamma(100.0, 0.01, (X.shape[1], K))
    return SVIAlgorithm(cfg, lam0, 1, warmup_updates)


@pytest.fixture(scope="module")
def docs(nips):
    return nips[0][:400].astype(np.float64)


def test_in_process_rounds_learn_and_threads_change_nothing(docs):
    algo = _algorithm(docs)
    n_batches = -(-docs.shape[0] // 64)
    serial, reports = engine.run_in_process(algo, docs, n_rounds=2, threads=1)
    assert serial.updates_done == 2 * n_batches
    assert sum(r.pushes_applied for r in reports) == serial.updates_done
    hogwild, _ = engine.run_in_process(_algorithm(docs), docs, n_rounds=2, threads=2)
    # The E-step's threads own disjoint documents and words (docs/design.rst,
    # "Race-free sums"): two threads compute what one does, to rounding.
    np.testing.assert_allclose(hogwild.snapshot["lambda"], serial.snapshot["lambda"],
                               rtol=1e-9)
    # Training lowers the per-word perplexity of the shard: pass 2 against pass 1.
    one, _ = engine.run_in_process(_algorithm(docs), docs, n_rounds=1, threads=1)
    shard = algo.prepare(algo.split(docs, 1))
    scores = []
    for ckpt in (one, serial):
        lam = ckpt.snapshot["lambda"]
        words = algo.evaluate_request(shard)
        part, tokens = algo.evaluate(shard, (lam[words], lam.sum(axis=0)))
        scores.append(algo.score(part, tokens, ckpt.snapshot))
    assert scores[1] < scores[0]


def test_in_process_equals_a_one_worker_cluster_fit(client, docs):
    """run_in_process is the engine's loop, pusher and server without Dask: a fit on a
    real cluster with one worker and one thread draws the same seeds and applies the
    same updates in the same order."""
    local, _ = engine.run_in_process(_algorithm(docs), docs, n_rounds=2, threads=1,
                                     random_state=5)
    fitted = engine.fit(_algorithm(docs), docs, n_rounds=2, n_workers=1,
                        threads_per_worker=1, client=client, random_state=5)
    assert fitted.updates_done == local.updates_done
    np.testing.assert_array_equal(fitted.snapshot["lambda"], local.snapshot["lambda"])
