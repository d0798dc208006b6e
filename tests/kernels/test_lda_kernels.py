"""LDA kernels against the plain-numpy references in tests/_naive.py."""

from __future__ import annotations

import os
import subprocess
import sys

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import digamma

from dask_dpsgd._kernels import lda
from dask_dpsgd._kernels.special import dirichlet_expectation, psi
from tests import _naive


def _corpus(n_docs=40, V=60, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n_docs, V, density=0.2, format="csr", random_state=seed,
                  data_rvs=lambda n: rng.integers(1, 6, n).astype(float))
    X.sort_indices()
    return X


@pytest.mark.parametrize("x", [1e-8, 1e-3, 0.05, 0.7, 1.0, 5.9, 6.0, 17.3, 1e4])
def test_psi_matches_scipy(x):
    assert psi(x) == pytest.approx(digamma(x), rel=1e-9, abs=1e-9)


def test_dirichlet_expectation_matches_reference():
    x = np.random.default_rng(1).gamma(1.0, 1.0, (5, 7)) + 1e-3
    np.testing.assert_allclose(dirichlet_expectation(x), _naive.dirichlet_expectation(x),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("K", [1, 3, 8])
def test_estep_matches_reference(parallel, K):
    X = _corpus()
    rng = np.random.default_rng(2)
    lam = rng.gamma(100.0, 0.01, (K, X.shape[1])) + rng.gamma(1.0, 1.0, (K, X.shape[1]))
    exp_beta = np.exp(_naive.dirichlet_expectation(lam))
    gamma0 = rng.gamma(100.0, 0.01, (X.shape[0], K))
    ref_gamma, ref_sstats = _naive.estep(X, exp_beta, gamma0, 0.1, 50, 1e-3)

    words, cols = lda.minibatch_words(X.indices)
    exp_beta_wm = lda.exp_elog_beta_rows(np.ascontiguousarray(lam.T[words]),
                                         lam.sum(axis=1))
    np.testing.assert_allclose(exp_beta_wm, exp_beta.T[words], rtol=1e-10)
    gamma = gamma0.copy()
    sstats = lda.run_estep(X.indptr.astype(np.int64), cols, X.data, exp_beta_wm, gamma,
                           0.1, 50, 1e-3, True, parallel)
    np.testing.assert_allclose(gamma, ref_gamma, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(sstats, ref_sstats.T[words], rtol=1e-7, atol=1e-9)
    # Every token's expected count is distributed over topics: mass is conserved.
    assert sstats.sum() == pytest.approx(X.sum(), rel=1e-9)


@pytest.mark.parametrize("threads", [1, 2])
def test_parallel_equals_serial_bitwise_with_empty_docs(threads):
    # Documents are handed to threads one at a time and the statistics summed word by
    # word in document order, so the parallel E-step gives the serial one's numbers
    # exactly, whatever the number of threads.
    X = _corpus(n_docs=30).tolil()
    X[3, :] = 0
    X[17, :] = 0
    X = X.tocsr()
    K = 4
    rng = np.random.default_rng(3)
    lam = rng.gamma(1.0, 1.0, (K, X.shape[1])) + 0.1
    words, cols = lda.minibatch_words(X.indices)
    eb = lda.exp_elog_beta_rows(np.ascontiguousarray(lam.T[words]), lam.sum(axis=1))
    g0 = rng.gamma(100.0, 0.01, (X.shape[0], K))
    out = []
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        for parallel in (False, True):
            g = g0.copy()
            s = lda.run_estep(X.indptr.astype(np.int64), cols, X.data, eb, g, 0.2, 30,
                              1e-4, True, parallel)
            out.append((g, s))
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])
    # An empty document keeps gamma = alpha + 0 after the first iteration.
    np.testing.assert_allclose(out[0][0][3], 0.2)


def test_max_doc_update_iter_zero_keeps_initial_gamma():
    X = _corpus()
    words, cols = lda.minibatch_words(X.indices)
    eb = np.full((len(words), 3), 0.5)
    g0 = np.random.default_rng(4).gamma(100.0, 0.01, (X.shape[0], 3))
    g = g0.copy()
    lda.run_estep(X.indptr.astype(np.int64), cols, X.data, eb, g, 0.1, 0, 1e-3, False,
                  False)
    np.testing.assert_array_equal(g, g0)


def test_bound_matches_reference_and_sklearn():
    from sklearn.decomposition import LatentDirichletAllocation

    X = _corpus(n_docs=25, V=40, seed=5)
    K = 3
    sk = LatentDirichletAllocation(n_components=K, max_iter=2, learning_method="online",
                                   random_state=0).fit(X)
    gamma = sk._unnormalized_transform(X)
    lam = sk.components_
    ref = _naive.approx_bound(X, gamma, lam, sk.doc_topic_prior_, sk.topic_word_prior_)
    assert ref == pytest.approx(sk._approx_bound(X, gamma, False), rel=1e-9)
    elog_beta = lda.elog_beta_rows(np.ascontiguousarray(lam.T), lam.sum(axis=1))
    ours = lda.doc_bound(X.indptr.astype(np.int64), X.indices.astype(np.int64), X.data,
                         gamma, elog_beta, sk.doc_topic_prior_)
    ours += lda.topic_word_bound(lam.T, sk.topic_word_prior_)
    assert ours == pytest.approx(ref, rel=1e-9)


def test_minibatch_words_maps_back():
    idx = np.array([5, 2, 9, 2, 5, 0])
    words, cols = lda.minibatch_words(idx)
    np.testing.assert_array_equal(words, [0, 2, 5, 9])
    np.testing.assert_array_equal(words[cols], idx)


def test_by_word_is_the_minibatch_in_csc_order():
    X = _corpus(n_docs=40).tolil()
    X[5, :] = 0
    X = X.tocsr()
    words, cols = lda.minibatch_words(X.indices)
    nnz = X.nnz
    wptr = np.full(len(words) + 1, -7, np.int64)  # garbage: the kernel must overwrite
    wdoc = np.full(nnz, -7, np.int64)
    wcnt = np.full(nnz, np.nan)
    lda.by_word(X.indptr.astype(np.int64), cols, X.data, wptr, wdoc, wcnt)
    C = sp.csr_matrix((X.data, cols, X.indptr), shape=(X.shape[0], len(words))).tocsc()
    C.sort_indices()
    np.testing.assert_array_equal(wptr, C.indptr)
    np.testing.assert_array_equal(wdoc, C.indices)
    np.testing.assert_array_equal(wcnt, C.data)


def _minibatch(n_docs, K, seed, *, V=60, corpus_seed=0, floor=0.1):
    """A corpus minibatch, ``exp(E[log beta])`` of its words and initial ``gamma``
    (``lambda`` drawn from ``Gamma(1, 1) + floor``)."""
    X = _corpus(n_docs=n_docs, V=V, seed=corpus_seed)
    rng = np.random.default_rng(seed)
    lam = rng.gamma(1.0, 1.0, (K, X.shape[1])) + floor
    words, cols = lda.minibatch_words(X.indices)
    eb = lda.exp_elog_beta_rows(np.ascontiguousarray(lam.T[words]), lam.sum(axis=1))
    return X, words, cols, eb, rng.gamma(100.0, 0.01, (X.shape[0], K))


def test_parallel_estep_is_repeatable_bit_for_bit():
    X, _, cols, eb, g0 = _minibatch(60, 5, 8)
    runs = []
    for _ in range(3):
        g = g0.copy()
        runs.append(lda.run_estep(X.indptr.astype(np.int64), cols, X.data, eb, g, 0.2,
                                  30, 1e-4, True, True))
    # Which thread takes which document cannot change the sums.
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


@pytest.mark.parametrize("parallel", [False, True])
def test_estep_into_a_caller_buffer_equals_a_fresh_array(parallel):
    K = 4
    X, words, cols, eb, g0 = _minibatch(40, K, 9)
    args = (X.indptr.astype(np.int64), cols, X.data, eb)
    fresh = lda.run_estep(*args, g0.copy(), 0.2, 30, 1e-4, True, parallel)
    buf = np.full(len(words) * K + 7, np.nan)  # larger than needed, as a reused one is
    into = lda.run_estep(*args, g0.copy(), 0.2, 30, 1e-4, True, parallel, None, buf)
    assert np.shares_memory(into, buf) and into.shape == (len(words), K)
    np.testing.assert_array_equal(into, fresh)
    assert np.isnan(buf[len(words) * K:]).all()  # nothing written past the result
    with pytest.raises(ValueError, match="at least"):
        lda.run_estep(*args, g0.copy(), 0.2, 30, 1e-4, True, parallel, None, buf[:5])


_FRESH_PROCESS_SERIAL_ESTEP = """
import numpy as np
from dask_dpsgd._kernels import lda
indptr = np.array([0, 2, 3], dtype=np.int64)
cols = np.array([0, 1, 1], dtype=np.int64)
gamma = np.ones((2, 3))
eb = np.full((2, 3), 0.5)
s = lda.run_estep(indptr, cols, np.array([1.0, 2.0, 3.0]), eb, gamma, 0.1, 20, 1e-3,
                  True, False)
print(float(s.sum()))
"""


def test_serial_estep_from_a_warm_cache_in_a_fresh_process(tmp_path):
    # The first run compiles into a private cache, the second loads from it: the
    # loaded serial kernel needs numba's threading layer started (get_thread_id), and
    # a process that ran nothing parallel before used to die here (SIGSEGV).
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    outs = [subprocess.run([sys.executable, "-c", _FRESH_PROCESS_SERIAL_ESTEP], env=env,
                           capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    for out in outs:
        assert out.returncode == 0, out.stderr[-2000:]
    assert any(tmp_path.rglob("*.nbi"))  # the second run did load from the cache
    # Every count ends in the statistics: 1 + 2 + 3.
    assert [float(o.stdout) for o in outs] == [pytest.approx(6.0)] * 2


def test_psi_of_zero_is_minus_infinity_as_sklearns():
    """A zero prior lets a Dirichlet parameter reach 0; scikit-learn's C digamma gives
    -inf there (exp(-inf) = 0 drops the topic), numba's division would raise."""
    assert psi(0.0) == -np.inf
    x = np.array([[0.0, 1.0, 2.0]])
    out = dirichlet_expectation(x)
    assert out[0, 0] == -np.inf and np.isfinite(out[0, 1:]).all()


@pytest.mark.parametrize("parallel", [False, True])
def test_estep_bound_is_the_documents_part_of_the_bound(parallel):
    """run_estep's bound (from the statistics' own products) equals doc_bound's (from
    E[log beta] and logsumexp) at the converged gamma; the statistics do not change."""
    X = _corpus(n_docs=30, V=50, seed=6)
    K, alpha = 5, 0.2
    rng = np.random.default_rng(7)
    lam = rng.gamma(1.0, 1.0, (K, X.shape[1])) + 0.05
    words, cols = lda.minibatch_words(X.indices)
    lam_rows = np.ascontiguousarray(lam.T[words])
    eb = lda.exp_elog_beta_rows(lam_rows, lam.sum(axis=1))
    g0 = rng.gamma(100.0, 0.01, (X.shape[0], K))
    indptr = X.indptr.astype(np.int64)
    g1, g2 = g0.copy(), g0.copy()
    plain = lda.run_estep(indptr, cols, X.data, eb, g1, alpha, 50, 1e-4, True, parallel)
    sstats, bound = lda.run_estep(indptr, cols, X.data, eb, g2, alpha, 50, 1e-4, True,
                                  parallel, return_bound=True)
    np.testing.assert_array_equal(sstats, plain)
    np.testing.assert_array_equal(g2, g1)
    elog_beta = lda.elog_beta_rows(lam_rows, lam.sum(axis=1))
    ref = lda.doc_bound(indptr, cols, X.data, g2, elog_beta, alpha)
    assert np.isfinite(bound) and bound < 0
    assert bound == pytest.approx(ref, rel=1e-9)
    with pytest.raises(ValueError, match="cal_sstats"):
        lda.run_estep(indptr, cols, X.data, eb, g0.copy(), alpha, 50, 1e-4, False,
                      parallel, return_bound=True)


def test_estep_with_zero_prior_stays_finite_and_its_bound_is_nan():
    """alpha = 0 (scikit-learn's closed interval): gamma and the statistics stay finite,
    the bound is NaN (improper prior), as scikit-learn's."""
    X, _, cols, eb, gamma = _minibatch(30, 6, 9, V=50, corpus_seed=8, floor=0.05)
    sstats, bound = lda.run_estep(X.indptr.astype(np.int64), cols, X.data, eb, gamma,
                                  0.0, 200, 1e-6, True, False, return_bound=True)
    assert np.isfinite(gamma).all() and (gamma == 0).any()  # topics dropped
    assert np.isfinite(sstats).all()
    assert sstats.sum() == pytest.approx(X.sum(), rel=1e-9)
    assert np.isnan(bound)
