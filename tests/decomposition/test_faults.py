"""Checkpoints, resume, and fits that lose real worker processes (issue: fault tolerance)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from dask_dpsgd import DPSVILatentDirichletAllocation as LDA
from dask_dpsgd.exceptions import WorkerLostWarning


def test_resume_from_checkpoint_equals_uninterrupted_run(client, nips, tmp_path):
    X = nips[0][:300]
    kw = dict(n_components=5, batch_size=64, random_state=0, n_workers=1,
              threads_per_worker=1)
    full = LDA(max_iter=3, **kw).fit(X)
    path = tmp_path / "lda.npz"
    # "Interrupted" after one pass: the checkpoint on disk holds pass 1.
    LDA(max_iter=1, checkpoint_path=str(path), **kw).fit(X)
    resumed = LDA(max_iter=3, checkpoint_path=str(path), **kw).fit(X)
    np.testing.assert_array_equal(resumed.components_, full.components_)
    assert resumed.n_batch_iter_ == full.n_batch_iter_
    assert resumed.n_iter_ == 3
    assert len(resumed.history_) == 2  # only the two passes it ran


def test_checkpoint_of_another_fit_is_refused(client, nips, tmp_path):
    path = tmp_path / "lda.npz"
    LDA(n_components=4, max_iter=1, random_state=0, checkpoint_path=str(path)).fit(
        nips[0][:50])
    with pytest.raises(ValueError, match="n_components: 4 there, 5 here"):
        LDA(n_components=5, max_iter=1, checkpoint_path=str(path)).fit(nips[0][:50])


def test_checkpoint_with_object_arrays_cannot_run_code(client, nips, tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, __meta__=np.array("{}"),
             components=np.array([os.system], dtype=object))
    with pytest.raises(ValueError, match="not a readable dask-dpsgd checkpoint"):
        LDA(n_components=2, max_iter=1, checkpoint_path=str(path)).fit(nips[0][:20])


def _kill_after(client, address: str, delay: float) -> threading.Thread:
    """SIGKILL the worker process at ``address`` after ``delay`` seconds."""
    pid = client.run(os.getpid, workers=[address])[address]

    def kill() -> None:
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)

    t = threading.Thread(target=kill, daemon=True)
    t.start()
    return t


@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 1], ids=["actor-worker", "other-worker"])
def test_fit_survives_a_killed_worker(nips, victim):
    distributed = pytest.importorskip("distributed")
    X_train, X_test, _ = nips
    kw = dict(n_components=8, max_iter=6, batch_size=64, random_state=0)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  env={"NUMBA_NUM_THREADS": "1"}) as cluster, \
            distributed.Client(cluster, set_as_default=False) as c, c.as_current():
        LDA(**{**kw, "max_iter": 1}).fit(X_train[:200])  # load the kernels
        t0 = time.perf_counter()
        reference = LDA(**kw).fit(X_train)
        duration = time.perf_counter() - t0
        workers = sorted(c.scheduler_info()["workers"])
        # Worker 0 holds the parameter server (slots are sorted by address). Kill it
        # (or the other) about a third of the way into the fit.
        killer = _kill_after(c, workers[victim], delay=0.35 * duration)
        with pytest.warns(WorkerLostWarning, match="lost during the fit"):
            disturbed = LDA(**kw).fit(X_train)
        killer.join()
    assert len(disturbed.recovery_events_) >= 1
    event = disturbed.recovery_events_[0]
    assert event["workers"] == [workers[victim]]
    assert disturbed.n_iter_ == 6
    assert disturbed.n_pushes_sent_ == (disturbed.n_updates_applied_
                                        + disturbed.n_updates_rejected_)
    p_ref, p_dist = reference.perplexity(X_test), disturbed.perplexity(X_test)
    assert abs(p_dist / p_ref - 1) <= 0.05, (p_dist, p_ref)
