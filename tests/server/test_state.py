"""Parameter-server state without a cluster: update rules, versions, staleness."""

from __future__ import annotations

import numpy as np
import pytest

from dask_dpsgd._server.state import (
    STALENESS_BINS,
    AddRule,
    ServerState,
    SVIRule,
    staleness_bound,
)
from tests import _naive


def _svi(V=30, K=4, seed=0, **kw):
    lam0 = np.random.default_rng(seed).gamma(100.0, 0.01, (V, K))
    args = dict(eta=0.25, learning_offset=10.0, learning_decay=0.7, total_samples=500.0)
    args.update(kw)
    return lam0, SVIRule(lam0, **args)


def test_svi_rule_lazy_sparse_step_equals_dense_update():
    V, K = 30, 4
    lam0, rule = _svi(V, K)
    rng = np.random.default_rng(1)
    dense = lam0.T.copy()  # topic-major, as scikit-learn stores it
    # Many steps so that the lazy scale is folded back several times.
    for step in range(300):
        words = np.sort(rng.choice(V, size=rng.integers(1, V), replace=False))
        sstats = rng.gamma(1.0, 1.0, (len(words), K))
        n_docs = int(rng.integers(1, 20))
        rule.apply((words, sstats, n_docs), step)
        S = np.zeros((K, V))
        S[:, words] = sstats.T
        rho = (10.0 + 1 + step) ** -0.7
        dense = _naive.svi_step(dense, S, rho, 0.25, 500.0 / n_docs)
        if step % 37 == 0:
            rows, sums = rule.pull(words)
            np.testing.assert_allclose(rows, dense.T[words], rtol=1e-9)
            np.testing.assert_allclose(sums, dense.sum(axis=1), rtol=1e-9)
    np.testing.assert_allclose(rule.snapshot()["lambda"], dense.T, rtol=1e-9)
    assert rule.scale >= SVIRule.RESCALE_BELOW


def test_svi_rule_rho_follows_sklearn_schedule():
    _, rule = _svi(first_step=7)
    assert rule.rho(0) == pytest.approx((10.0 + 7) ** -0.7)
    assert rule.rho(3) == pytest.approx((10.0 + 10) ** -0.7)


def test_svi_rule_refuses_word_ids_outside_the_vocabulary():
    """The gather and scatter kernels index lambda unchecked: a topic-major lambda
    (K x V given where V x K is expected) used to crash the process on the first pull."""
    _, rule = _svi(V=30, K=4)
    before = rule.snapshot()["lambda"]
    with pytest.raises(ValueError, match=r"word ids 5\.\.30, outside the vocabulary "
                       r"\[0, 30\)"):
        rule.pull(np.array([5, 30]))
    with pytest.raises(ValueError, match=r"word ids -1\.\.2"):
        rule.apply((np.array([-1, 2]), np.ones((2, 4)), 1), 0)
    with pytest.raises(ValueError, match=r"statistics have shape \(2, 3\), expected "
                       r"\(n_words, K\) = \(2, 4\)"):
        rule.apply((np.array([1, 2]), np.ones((2, 3)), 1), 0)
    with pytest.raises(ValueError, match="lambda must be 2-D"):
        SVIRule(np.ones(5), 0.1, 10.0, 0.7, 100.0)
    np.testing.assert_array_equal(rule.snapshot()["lambda"], before)  # nothing applied
    assert rule.scale == 1.0


def test_pull_returns_copies():
    _, rule = _svi()
    rows, _ = rule.pull(np.array([0, 1]))
    rows[:] = -1
    assert (rule.pull(np.array([0, 1]))[0] > 0).all()


def test_state_counts_staleness_and_versions():
    state = ServerState(AddRule(np.zeros(3)))
    assert state.push(np.ones(3), 0, worker=0).applied
    assert state.push(np.ones(3), 0, worker=1).staleness == 1
    out = state.push(np.ones(3), 0, worker=1)
    assert (out.applied, out.staleness, out.version) == (True, 2, 3)
    stats = state.stats()
    assert stats.version == 3
    assert stats.staleness_max == 2
    assert stats.staleness_mean == pytest.approx(1.0)
    assert stats.pushes_by_worker == {0: 1, 1: 2}
    np.testing.assert_array_equal(state.staleness_histogram()[:3], [1, 1, 1])
    np.testing.assert_array_equal(state.rule.theta, [3, 3, 3])


def test_state_rejects_nonfinite_without_touching_parameters():
    state = ServerState(AddRule(np.zeros(2)))
    for bad in (np.array([np.nan, 0.0]), np.array([0.0, np.inf])):
        out = state.push(bad, 0)
        assert not out.applied and out.reason == "nonfinite"
    np.testing.assert_array_equal(state.rule.theta, [0.0, 0.0])
    s = state.stats()
    assert (s.n_received, s.n_applied, s.n_rejected_nonfinite) == (2, 0, 2)
    assert s.version == 0


def test_state_rejects_stale_updates_beyond_bound():
    state = ServerState(AddRule(np.zeros(1)), max_staleness=1)
    state.push(np.ones(1), 0)
    state.push(np.ones(1), 0)  # staleness 1: accepted
    out = state.push(np.ones(1), 0)  # staleness 2: rejected
    assert not out.applied and out.reason == "stale" and out.staleness == 2
    s = state.stats()
    assert s.n_applied + s.n_rejected_stale == s.n_received == 3


def test_state_refuses_impossible_base_version():
    state = ServerState(AddRule(np.zeros(1)))
    with pytest.raises(ValueError, match="base_version=5"):
        state.push(np.ones(1), 5)


def test_staleness_histogram_grows_to_stay_exact():
    state = ServerState(AddRule(np.zeros(1)))
    late = 3 * STALENESS_BINS + 5
    for _ in range(late):
        state.push(np.zeros(1), state.version)
    state.push(np.zeros(1), 0)  # computed from version 0, applied at version `late`
    hist = state.staleness_histogram()
    assert hist[late] == 1 and hist[0] == late and hist.sum() == late + 1
    stats = state.stats()
    assert stats.staleness_max == late
    assert stats.staleness_sum == late


def test_bytes_are_accounted():
    state = ServerState(AddRule(np.zeros(10)))
    state.push(np.ones(10), 0)
    state.pull()
    s = state.stats()
    assert s.bytes_pushed == 80 and s.bytes_pulled == 80


@pytest.mark.parametrize(
    ("total", "workers", "lag", "expected"),
    [(10_000, 1, 0, 100),  # the paper's bound: workers <= sqrt(T)
     (10_001, 2, 1, 101),  # ceil
     (0, 1, 0, 2),  # never below twice a steady round's staleness (M (1 + lag))
     (188, 8, 0, 16),
     (300, 2, 1, 18)],
)
def test_default_staleness_bound(total, workers, lag, expected):
    assert staleness_bound(total, workers, lag) == expected


def test_stale_pushes_are_rejected_not_down_weighted():
    state = ServerState(AddRule(np.zeros(2)), max_staleness=1)
    for _ in range(3):
        state.push(np.ones(2), state.version)
    outcome = state.push(np.full(2, 100.0), base_version=1)  # staleness 2
    assert not outcome.applied and outcome.reason == "stale"
    np.testing.assert_array_equal(state.rule.theta, [3.0, 3.0])  # untouched
    assert (state.n_received, state.n_applied, state.n_rejected_stale) == (4, 3, 1)


def test_push_part_applies_the_merged_update_once_every_part_is_in():
    V, K = 30, 4
    lam0, whole = _svi(V, K)
    _, split = _svi(V, K)
    s_whole, s_split = ServerState(whole), ServerState(split)
    rng = np.random.default_rng(3)
    for slot in range(3):
        # Two workers' shares of one minibatch: overlapping words, 5 + 7 documents.
        w0 = np.sort(rng.choice(V, 12, replace=False))
        w1 = np.sort(rng.choice(V, 9, replace=False))
        st0, st1 = rng.gamma(1.0, 1.0, (12, K)), rng.gamma(1.0, 1.0, (9, K))
        first = s_split.push_part((w0, st0, 5), slot, 0, slot, 2)
        assert s_split.version == slot  # waiting for the second share
        assert first.applied
        s_split.push_part((w1, st1, 7), slot, 1, slot, 2)
        assert s_split.version == slot + 1
        S = np.zeros((V, K))
        np.add.at(S, w0, st0)
        np.add.at(S, w1, st1)
        words = np.flatnonzero(S.any(axis=1))
        s_whole.push((words, S[words], 12), slot, 0)
    np.testing.assert_allclose(split.snapshot()["lambda"], whole.snapshot()["lambda"],
                               rtol=1e-12)
    stats = s_split.stats()
    # Every share is a received and applied push; the server made 3 updates.
    assert (stats.n_received, stats.n_applied, stats.version) == (6, 6, 3)
    assert stats.pushes_by_worker == {0: 3, 1: 3}
    assert stats.staleness_max == 0


def test_push_part_with_a_nonfinite_share_rejects_the_whole_update():
    lam0, rule = _svi()
    state = ServerState(rule)
    words = np.array([1, 2])
    state.push_part((words, np.ones((2, 4)), 3), 0, 0, 0, 2)
    out = state.push_part((words, np.full((2, 4), np.nan), 3), 0, 1, 0, 2)
    assert not out.applied and out.reason == "nonfinite"
    assert state.version == 0
    np.testing.assert_array_equal(rule.snapshot()["lambda"], lam0)
    stats = state.stats()
    assert (stats.n_received, stats.n_applied, stats.n_rejected_nonfinite) == (
        2, 0, 2)


def test_push_part_of_one_is_an_ordinary_push():
    _, a = _svi()
    _, b = _svi()
    sa, sb = ServerState(a), ServerState(b)
    delta = (np.array([0, 5]), np.full((2, 4), 2.0), 4)
    sa.push(delta, 0)
    sb.push_part(delta, 0, 0, 0, 1)
    np.testing.assert_array_equal(a.snapshot()["lambda"], b.snapshot()["lambda"])
    assert sa.stats() == sb.stats()
    with pytest.raises(ValueError, match="n_parts"):
        sb.push_part(delta, 1, 0, 1, 0)


def test_svi_rule_adds_up_the_bounds_reported_with_applied_updates():
    """The minibatch bounds pushed with the statistics are summed over the applied
    updates (a warm-up update's parts add up; a rejected push does not count; a NaN
    bound, from a zero doc_topic_prior, never rejects its update)."""
    lam0, rule = _svi()
    state = ServerState(rule, max_staleness=0)
    words, st = np.array([1, 4]), np.ones((2, 4))
    assert rule.progress() == {"bound_sum": 0.0, "bound_tokens": 0.0,
                               "bound_updates": 0}
    state.push((words, st, 3, (-70.0, 10.0)), 0)
    state.push((words, st, 3), 1)  # no bound reported: parameters change, sums do not
    state.push_part((words, st, 2, (-20.0, 4.0)), 2, 0, 2, 2)
    state.push_part((words, st, 2, (-30.0, 6.0)), 2, 1, 2, 2)
    assert state.push((words, st, 3, (-1e9, 1.0)), 0).reason == "stale"
    assert rule.progress() == {"bound_sum": -120.0, "bound_tokens": 20.0,
                               "bound_updates": 2}
    assert state.version == 3
    state.push((words, st, 3, (float("nan"), 5.0)), 3)
    assert state.version == 4 and np.isnan(rule.progress()["bound_sum"])
    # A merged update without a bound in every part reports none.
    merged = SVIRule.merge([(words, st, 2, (-1.0, 1.0)), (words, st, 2)])
    assert merged.bound is None  # a part without a bound: the merge has none
