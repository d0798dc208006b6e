"""LDA kernels for stochastic variational inference (the DPSVI E-step and bound).

Notation follows Hoffman et al. (2013) and docs/design.rst ("DPSVI"): ``K`` topics,
``lambda`` (topic-word
variational Dirichlet), ``gamma`` (document-topic variational Dirichlet), ``alpha``
(``doc_topic_prior``), ``eta`` (``topic_word_prior``). Every topic-word array here is stored
**word-major** (``(n_words, K)``), the transpose of scikit-learn's ``components_``: a
minibatch needs a few words' columns of ``lambda``, and word-major makes each of them one
contiguous row, so the parameter server's sparse pull is a row gather and the inner loops
over topics vectorise.

Kernels are written as plain Python functions and compiled once at import into a serial
and a ``parallel=True`` dispatcher (docs/design.rst, "Kernels"); the plain functions
stay importable
for tests.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba import prange

from dask_dpsgd._kernels import parallel_twin
from dask_dpsgd._kernels.special import dirichlet_expectation_rows, psi

# Same guard as scikit-learn's E-step (np.finfo(float).eps) so a word whose every topic
# weight underflows does not divide by zero.
EPS = float(np.finfo(np.float64).eps)


def _doc_estep(cols, cnts, exp_beta, gamma_d, alpha, max_iter, tol, exp_theta, last,
               acc, rows):
    """Coordinate ascent for one document's ``gamma_d``; returns ``exp(E[log theta_d])``.

    Parameters
    ----------
    cols : ndarray of int64, shape (n_d,)
        Row of ``exp_beta`` for each distinct word of the document.
    cnts : ndarray of float64, shape (n_d,)
        Word counts ``n_dw``.
    exp_beta : ndarray of float64, shape (n_words, K)
        ``exp(E[log beta])`` word-major.
    gamma_d : ndarray of float64, shape (K,)
        Initial ``gamma_d``; overwritten with the converged value.
    alpha : float
        Document-topic prior.
    max_iter : int
        ``max_doc_update_iter``.
    tol : float
        ``mean_change_tol`` on ``mean(|gamma_new - gamma_old|)``.
    exp_theta, last, acc : ndarray of float64, shape (K,)
        Workspaces; ``exp_theta`` holds ``exp(E[log theta_d])`` on return.
    rows : ndarray of float64, shape (>= n_d, K)
        Workspace: the document's rows of ``exp_beta``, gathered once so that the up to
        ``max_iter`` sweeps read contiguous memory (scikit-learn gathers
        ``exp_topic_word_distr[:, ids]`` for the same reason).

    Notes
    -----
    Equivalent to the loop of ``sklearn.decomposition._lda._update_doc_distribution``
    for one document::

        for _ in range(max_iter):
            last = gamma_d
            norm_phi = exp_theta @ exp_beta[cols].T + EPS
            gamma_d = exp_theta * ((cnts / norm_phi) @ exp_beta[cols]) + alpha
            exp_theta = exp(psi(gamma_d) - psi(gamma_d.sum()))
            if mean(abs(gamma_d - last)) < tol: break
    """
    K = gamma_d.shape[0]
    n_d = cols.shape[0]
    for j in range(n_d):
        src = exp_beta[cols[j]]
        for k in range(K):
            rows[j, k] = src[k]
    s = 0.0
    for k in range(K):
        s += gamma_d[k]
    ps = psi(s)
    for k in range(K):
        exp_theta[k] = math.exp(psi(gamma_d[k]) - ps)
    for _ in range(max_iter):
        for k in range(K):
            last[k] = gamma_d[k]
            acc[k] = 0.0
        # phi_dwk is proportional to exp_theta_k * exp_beta_wk and norm_phi_w normalises
        # it; gamma_dk = alpha + sum_w n_dw phi_dwk. norm_phi_w needs only this
        # iteration's exp_theta, so the two products share one sweep over the rows:
        # each row of exp_beta is read once per iteration, while it is in L1.
        # Four words at a time: four independent dot products keep the FMA units busy
        # (one running sum is a latency-bound dependency chain; docs/design.rst,
        # "Kernels").
        n4 = n_d - n_d % 4
        for j in range(0, n4, 4):
            t0 = 0.0
            t1 = 0.0
            t2 = 0.0
            t3 = 0.0
            for k in range(K):
                e = exp_theta[k]
                t0 += e * rows[j, k]
                t1 += e * rows[j + 1, k]
                t2 += e * rows[j + 2, k]
                t3 += e * rows[j + 3, k]
            r0 = cnts[j] / (t0 + EPS)
            r1 = cnts[j + 1] / (t1 + EPS)
            r2 = cnts[j + 2] / (t2 + EPS)
            r3 = cnts[j + 3] / (t3 + EPS)
            for k in range(K):
                acc[k] += (r0 * rows[j, k] + r1 * rows[j + 1, k] + r2 * rows[j + 2, k]
                           + r3 * rows[j + 3, k])
        for j in range(n4, n_d):
            t = 0.0
            for k in range(K):
                t += exp_theta[k] * rows[j, k]
            r = cnts[j] / (t + EPS)
            for k in range(K):
                acc[k] += r * rows[j, k]
        s = 0.0
        for k in range(K):
            gamma_d[k] = exp_theta[k] * acc[k] + alpha
            s += gamma_d[k]
        ps = psi(s)
        change = 0.0
        for k in range(K):
            exp_theta[k] = math.exp(psi(gamma_d[k]) - ps)
            change += abs(gamma_d[k] - last[k])
        if change / K < tol:
            break


_doc_estep_jit = numba.njit(cache=True, nogil=True, fastmath=True)(_doc_estep)


def _estep_docs(indptr, cols, cnts, exp_beta, gamma, alpha, max_iter, tol, exp_theta,
                vecs, rows_ws):
    """Phase 1 of the E-step of a minibatch: every document's ``gamma``.

    Parameters
    ----------
    indptr : ndarray of int64, shape (n_docs + 1,)
        CSR row pointers of the minibatch.
    cols : ndarray of int64, shape (nnz,)
        For each non-zero, its row in ``exp_beta`` (minibatch-local word index).
    cnts : ndarray of float64, shape (nnz,)
        Counts ``n_dw``.
    exp_beta : ndarray of float64, shape (n_words, K)
        ``exp(E[log beta])`` for the minibatch's words, word-major.
    gamma : ndarray of float64, shape (n_docs, K)
        Initial ``gamma``; overwritten with the converged values.
    alpha, max_iter, tol : float, int, float
        ``doc_topic_prior``, ``max_doc_update_iter``, ``mean_change_tol``.
    exp_theta : ndarray of float64, shape (n_docs, K)
        Written: each document's ``exp(E[log theta_d])`` (what phase 2 needs).
    vecs : ndarray of float64, shape (n_threads, >= 5, K)
        Per thread: four contiguous vectors (strided ones cost the inner loops their
        vectorisation) and rows of padding, so that two threads never write one cache
        line.
    rows_ws : ndarray of float64, shape (n_threads, >= longest document, K)
        Per-thread workspaces, indexed by ``numba.get_thread_id()`` (0 when compiled
        without ``parallel``), kept from one minibatch to the next by the caller
        (:class:`EStepWorkspace`).

    Notes
    -----
    Race-free: document ``d`` writes only ``gamma[d]`` and ``exp_theta[d]``, and each
    thread its own workspaces. A document's result does not depend on the thread that
    computes it, so the caller may hand documents out dynamically (``run_estep`` uses
    chunks of one document: their cost varies several-fold with the iterations they
    take to converge, which a static split cannot foresee).
    """
    K = exp_beta.shape[1]
    for d in prange(indptr.shape[0] - 1):
        t = numba.get_thread_id()
        a, b = indptr[d], indptr[d + 1]
        # The iterations run on the thread's own vectors; the document's rows are
        # written once at the end. Neighbouring documents go to different threads, and
        # rows rewritten every iteration would share cache lines across cores.
        g, e = vecs[t, 3], vecs[t, 0]
        for k in range(K):
            g[k] = gamma[d, k]
        _doc_estep_jit(cols[a:b], cnts[a:b], exp_beta, g, alpha, max_iter, tol, e,
                       vecs[t, 1], vecs[t, 2], rows_ws[t])
        for k in range(K):
            gamma[d, k] = g[k]
            exp_theta[d, k] = e[k]


def _word_sstats(wdoc, wcnt, a, b, row, exp_theta, out):
    """``out = sum_i n_i exp_theta[d_i] * row / (exp_theta[d_i] . row)`` over ``a:b``.

    Returns
    -------
    loglik : float
        ``sum_i n_i log(exp_theta[d_i] . row)`` over the terms whose dot product is
        positive: the word's part of ``E[log p(w | theta, beta)]`` (the dot product is
        ``exp(logsumexp_k(E[log theta_dk] + E[log beta_kw]))``, which the statistics
        need anyway, so the bound costs one ``log`` per non-zero).
    n_zero : int
        Terms whose dot product is 0 (the word has probability 0 under the document's
        topics: possible only with zero priors); their ``log`` is ``-inf``, added by the
        caller, since this body is compiled with ``fastmath`` (no infinities).
    """
    K = row.shape[0]
    for k in range(K):
        out[k] = 0.0
    ll = 0.0
    n_zero = 0
    for i in range(a, b):
        th = exp_theta[wdoc[i]]
        t = 0.0
        for k in range(K):
            t += th[k] * row[k]
        r = wcnt[i] / (t + EPS)
        for k in range(K):
            out[k] += r * th[k] * row[k]
        if t > 0.0:
            ll += wcnt[i] * math.log(t)
        else:
            n_zero += 1
    return ll, n_zero


# One compiled body for every caller, so the serial and parallel E-steps do the same
# floating-point operations in the same order.
_word_sstats_jit = numba.njit(cache=True, nogil=True, fastmath=True)(_word_sstats)


def _sstats_by_word(wptr, wdoc, wcnt, exp_beta, exp_theta, sstats, wll):
    """Phase 2 of the E-step of a minibatch: sufficient statistics, word by word.

    Parameters
    ----------
    wptr, wdoc, wcnt : ndarray
        The minibatch by word (:func:`_by_word`): the documents holding word ``w`` are
        ``wdoc[wptr[w]:wptr[w + 1]]`` (in document order), with counts ``wcnt``.
    exp_beta : ndarray of float64, shape (n_words, K)
    exp_theta : ndarray of float64, shape (n_docs, K)
        From phase 1.
    sstats : ndarray of float64, shape (n_words, K)
        Written (every row).
    wll : ndarray of float64, shape (n_words,)
        Written: ``wll[w] = sum_d n_dw log(exp_theta_d . exp_beta_w)``, word ``w``'s
        part of ``E[log p(w | theta, beta)]`` (``-inf`` where a term is 0).

    Notes
    -----
    Row ``w`` is ``sum_d n_dw exp_theta_d * exp_beta_w / (exp_theta_d . exp_beta_w)``:
    scikit-learn's ``suff_stats`` after its final ``*= exp_dirichlet_component_``.
    Race-free and without per-thread copies: iteration ``w`` writes only row ``w``
    (lost mass measured under Hogwild ``+=``: docs/design.rst, "Race-free sums"), and it
    adds the documents in order, so the result does not depend on the number of
    threads. The lock-free (Hogwild) level of DPSGD is in how threads and workers read
    ``lambda`` while others update it, not in these sums.
    """
    for w in prange(wptr.shape[0] - 1):
        ll, n_zero = _word_sstats_jit(wdoc, wcnt, wptr[w], wptr[w + 1], exp_beta[w],
                                      exp_theta, sstats[w])
        wll[w] = ll if n_zero == 0 else -math.inf


def _by_word(indptr, cols, cnts, wptr, wdoc, wcnt):
    """Transpose a minibatch (CSR by document) to CSC by word, documents in order.

    ``wptr`` (int64, ``n_words + 1``), ``wdoc`` (int64, ``nnz``) and ``wcnt`` (float64,
    ``nnz``) are written. Equivalent to ``scipy.sparse.csr_matrix(...).tocsc()`` with
    sorted indices; a counting sort, O(nnz).
    """
    wptr[:] = 0
    for i in range(cols.shape[0]):
        wptr[cols[i] + 1] += 1
    for w in range(wptr.shape[0] - 1):
        wptr[w + 1] += wptr[w]
    fill = wptr[:-1].copy()
    for d in range(indptr.shape[0] - 1):
        for i in range(indptr[d], indptr[d + 1]):
            j = fill[cols[i]]
            wdoc[j] = d
            wcnt[j] = cnts[i]
            fill[cols[i]] = j + 1


# Each phase compiled twice: one thread (``parallel=False``: ``prange`` is ``range``)
# and over numba's threads (a twin, so the two do not share a cache entry).
estep_docs = numba.njit(cache=True, nogil=True)(_estep_docs)
estep_docs_parallel = numba.njit(cache=True, nogil=True, parallel=True)(
    parallel_twin(_estep_docs))
sstats_by_word = numba.njit(cache=True, nogil=True)(_sstats_by_word)
sstats_by_word_parallel = numba.njit(cache=True, nogil=True, parallel=True)(
    parallel_twin(_sstats_by_word))
by_word = numba.njit(cache=True, nogil=True)(_by_word)


def _elog_beta_rows(lam_rows, rowsums, out, take_exp):
    """``E[log beta]`` (or its ``exp``) for some words (rows of word-major ``lambda``).

    Parameters
    ----------
    lam_rows : ndarray of float64, shape (n_words, K)
        ``lambda[w, :]`` for the words wanted.
    rowsums : ndarray of float64, shape (K,)
        ``sum_v lambda[v, k]`` over the whole vocabulary.
    out : ndarray of float64, shape (n_words, K)
        Written in place.
    take_exp : bool
        Write ``exp(E[log beta])`` instead of ``E[log beta]``.

    Notes
    -----
    Equivalent to ``psi(lam_rows) - psi(rowsums)[None, :]`` (then ``np.exp``).
    Race-free: each row is written by one thread.
    """
    n, K = lam_rows.shape
    ps = np.empty(K)
    for k in range(K):
        ps[k] = psi(rowsums[k])
    for i in prange(n):
        for k in range(K):
            v = psi(lam_rows[i, k]) - ps[k]
            out[i, k] = math.exp(v) if take_exp else v


elog_beta_rows_kernel = numba.njit(cache=True, nogil=True, parallel=True)(
    _elog_beta_rows)


def exp_elog_beta_rows(lam_rows, rowsums, workspace=None):
    """``exp(E[log beta])`` word-major for the given rows of ``lambda``.

    With an :class:`EStepWorkspace`, the result lives in its buffer (valid until the
    workspace's next minibatch) instead of a new array.
    """
    if workspace is None:
        out = np.empty_like(lam_rows)
    else:
        out = workspace.get("exp_beta", lam_rows.shape)
    elog_beta_rows_kernel(lam_rows, rowsums, out, True)
    return out


def elog_beta_rows(lam_rows, rowsums):
    """``E[log beta]`` word-major for the given rows of ``lambda``."""
    out = np.empty_like(lam_rows)
    elog_beta_rows_kernel(lam_rows, rowsums, out, False)
    return out


def _doc_word_loglik(indptr, indices, cnts, elog_theta, elog_beta):
    """``sum_d sum_w n_dw logsumexp_k(E[log theta_dk] + E[log beta_kw])``.

    Parameters
    ----------
    indptr, indices, cnts : CSR arrays of the documents (global word ids).
    elog_theta : ndarray of float64, shape (n_docs, K)
    elog_beta : ndarray of float64, shape (n_features, K), word-major.

    Returns
    -------
    float
        The ``E[log p(docs | theta, beta)]`` term of scikit-learn's ``_approx_bound``.

    Notes
    -----
    Race-free: a ``prange`` sum reduction (numba reduces the per-thread partial sums).
    """
    n_docs = indptr.shape[0] - 1
    K = elog_theta.shape[1]
    total = 0.0
    for d in prange(n_docs):
        part = 0.0
        for j in range(indptr[d], indptr[d + 1]):
            row = elog_beta[indices[j]]
            m = -np.inf
            for k in range(K):
                v = elog_theta[d, k] + row[k]
                if v > m:
                    m = v
            s = 0.0
            for k in range(K):
                s += math.exp(elog_theta[d, k] + row[k] - m)
            part += cnts[j] * (m + math.log(s))
        total += part
    return total


doc_word_loglik = numba.njit(cache=True, nogil=True, parallel=True)(_doc_word_loglik)


class EStepWorkspace:
    """Buffers the E-step reuses from one minibatch to the next.

    Each buffer is allocated once and grown when a minibatch needs more, so the
    E-step's threads do not fault fresh pages in on every minibatch (why that matters:
    docs/design.rst, "Kernels").
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: Any = np.float64
            ) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype`` (contents undefined)."""
        n = 1
        for s in shape:
            n *= int(s)
        buf = self._buffers.get(name)
        if buf is None or buf.shape[0] < n or buf.dtype != dtype:
            buf = np.empty(max(n, 1), dtype=dtype)
            self._buffers[name] = buf
        return buf[:n].reshape(shape)


def run_estep(indptr, cols, cnts, exp_beta, gamma, alpha, max_iter, tol, cal_sstats,
              parallel, workspace=None, out=None, return_bound=False):
    """E-step of a minibatch: documents (``_estep_docs``), then words (``_sstats_by_word``).

    Parameters
    ----------
    indptr, cols, cnts, exp_beta, gamma, alpha, max_iter, tol
        As in ``_estep_docs``; ``gamma`` is updated in place.
    cal_sstats : bool
        Also compute the sufficient statistics.
    parallel : bool
        Run both phases over ``numba.get_num_threads()`` threads. The result is the
        one-thread result, bit for bit.
    workspace : EStepWorkspace or None
        Buffers kept across minibatches (a pass's worth of calls); None: fresh ones.
    out : ndarray of float64 or None
        A 1-D buffer of at least ``n_words * K`` elements, owned by the caller, for the
        statistics: they are written into it and returned as a view of it. A buffer the
        caller reuses from one minibatch to the next skips the fresh array's page
        faults and copy (see :class:`EStepWorkspace`); None: a new array.
    return_bound : bool
        Also return the minibatch's documents part of the variational bound (needs
        ``cal_sstats``).

    Returns
    -------
    sstats : ndarray of float64, shape (n_words, K) or None
        Sufficient statistics (word-major) when ``cal_sstats``: a view of ``out``, or a
        new array; never a workspace buffer.
    doc_bound : float
        Only with ``return_bound``: ``sum_d (E[log p(w_d | theta_d, beta)]
        + E[log p(theta_d | alpha)] - E[log q(theta_d | gamma_d)])`` at the converged
        ``gamma`` and the given ``exp_beta`` (the minibatch's per-document terms of
        the ELBO of Hoffman et al. 2010, without the topic-word term), as
        :func:`doc_bound` computes it from ``E[log beta]``. Its word part comes from
        the products the statistics need anyway (one ``log`` per non-zero), its
        ``theta`` part from :func:`theta_bound` (``O(n_docs K)``). NaN with
        ``alpha = 0`` (the Dirichlet prior is then improper), as scikit-learn's bound.
    """
    ws = EStepWorkspace() if workspace is None else workspace
    n_words, K = exp_beta.shape
    indptr = np.asarray(indptr, np.int64)
    n_docs = indptr.shape[0] - 1
    # Asked even for one thread: it starts numba's threading layer, without which
    # ``_estep_docs`` (it calls ``numba.get_thread_id()``) crashes when loaded from the
    # on-disk cache (docs/design.rst, "Threading layer").
    all_threads = numba.get_num_threads()
    n_threads = all_threads if parallel else 1
    max_len = int(np.max(np.diff(indptr))) if n_docs > 0 else 0
    vecs = ws.get("vecs", (n_threads, 4 + -(-8 // K), K))
    rows = ws.get("rows", (n_threads, max(max_len, 1), K))
    alpha, max_iter, tol = float(alpha), int(max_iter), float(tol)
    exp_theta = ws.get("exp_theta", (n_docs, K))
    args = (indptr, cols, cnts, exp_beta, gamma, alpha, max_iter, tol, exp_theta, vecs,
            rows)
    if parallel:
        # Documents are handed out one at a time: their cost varies several-fold with
        # the iterations they take to converge, which a static split cannot foresee.
        with numba.parallel_chunksize(1):
            estep_docs_parallel(*args)
    else:
        estep_docs(*args)
    if not cal_sstats:
        if return_bound:
            raise ValueError("return_bound needs cal_sstats: the bound's word part is "
                             "computed with the sufficient statistics")
        return None
    nnz = cols.shape[0]
    wptr = ws.get("wptr", (n_words + 1,), np.int64)
    wdoc = ws.get("wdoc", (nnz,), np.int64)
    wcnt = ws.get("wcnt", (nnz,))
    by_word(indptr, cols, cnts, wptr, wdoc, wcnt)
    if out is not None:
        if out.ndim != 1 or out.dtype != np.float64 or out.shape[0] < n_words * K:
            raise ValueError(f"out must be a 1-D float64 buffer of at least "
                             f"{n_words * K} elements")
        sstats = out[:n_words * K].reshape(n_words, K)
    else:
        # Written into a kept buffer and copied out: a fresh array would take its page
        # faults inside the kernel (see the class docstring).
        sstats = ws.get("sstats", (n_words, K))
    wll = ws.get("wll", (n_words,))
    (sstats_by_word_parallel if parallel else sstats_by_word)(
        wptr, wdoc, wcnt, exp_beta, exp_theta, sstats, wll)
    sstats = sstats if out is not None else sstats.copy()
    if not return_bound:
        return sstats
    return sstats, float(wll.sum()) + float(theta_bound(gamma, alpha))


def minibatch_words(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct words of a minibatch and each non-zero's local word index.

    Parameters
    ----------
    indices : ndarray of int, shape (nnz,)
        Global word ids (CSR ``indices``).

    Returns
    -------
    words : ndarray of int64, shape (n_words,)
        Sorted distinct global word ids: the only columns of ``lambda`` the minibatch
        pulls and pushes.
    cols : ndarray of int64, shape (nnz,)
        ``words[cols] == indices``.
    """
    words, cols = np.unique(indices, return_inverse=True)
    return words.astype(np.int64, copy=False), cols.astype(np.int64, copy=False)


def init_gamma(rng: np.random.Generator, n_docs: int, K: int) -> np.ndarray:
    """Random initial ``gamma`` as online LDA and scikit-learn draw it: Gamma(100, 1/100)."""
    return rng.gamma(100.0, 0.01, (n_docs, K))


def _theta_bound(gamma, alpha):
    """``E[log p(theta | alpha) - log q(theta | gamma)]`` summed over documents.

    Notes
    -----
    Equivalent to scikit-learn's ``_loglikelihood(alpha, gamma, E[log theta], K)``::

        sum((alpha - gamma) * Elog_theta) + sum(gammaln(gamma) - gammaln(alpha))
        + sum(gammaln(alpha * K) - gammaln(gamma.sum(axis=1)))

    with ``Elog_theta = psi(gamma) - psi(gamma.sum(axis=1))[:, None]``; applied to
    ``lambda`` (rows = topics, ``K`` -> ``V``) it is the topic-word term.
    """
    n, K = gamma.shape
    total = 0.0
    la = math.lgamma(alpha)
    laK = math.lgamma(alpha * K)
    for d in range(n):
        s = 0.0
        for k in range(K):
            s += gamma[d, k]
        ps = psi(s)
        for k in range(K):
            g = gamma[d, k]
            total += (alpha - g) * (psi(g) - ps) + math.lgamma(g) - la
        total += laK - math.lgamma(s)
    return total


theta_bound = numba.njit(cache=True, nogil=True)(_theta_bound)


def doc_bound(indptr, cols, cnts, gamma, elog_beta, alpha):
    """Document part of the variational bound (scikit-learn's ``_approx_bound``).

    Parameters
    ----------
    indptr, cols, cnts : CSR arrays; ``cols`` index rows of ``elog_beta``.
    gamma : ndarray of float64, shape (n_docs, K)
        Converged ``gamma`` (``random_init=False`` E-step, as scikit-learn scores).
    elog_beta : ndarray of float64, shape (n_words, K)
        ``E[log beta]`` word-major for the words ``cols`` refers to.
    alpha : float

    Returns
    -------
    float
        ``E[log p(docs | theta, beta)] + E[log p(theta) - log q(theta)]``.
    """
    elog_theta = np.empty_like(gamma)
    dirichlet_expectation_rows(gamma, elog_theta)
    return float(doc_word_loglik(indptr, cols, cnts, elog_theta, elog_beta)) + float(
        theta_bound(gamma, float(alpha)))


def topic_word_bound(lam, eta):
    """``E[log p(beta | eta) - log q(beta | lambda)]`` for word-major ``lam`` (V, K).

    Equivalent to scikit-learn's ``_loglikelihood(eta, components_,
    E[log beta], n_features)``.
    """
    return float(theta_bound(np.ascontiguousarray(lam.T), float(eta)))



def _scatter_add_rows(M, rowsum, words, sstats, coef):
    """``M[words] += coef * sstats`` and ``rowsum += coef * sstats.sum(axis=0)``.

    The parameter server's sparse SVI step in one pass (numpy's fancy-index ``+=``
    gathers, adds and scatters through temporaries, so a repeated word would count
    once); a word repeated in ``words`` adds each of its rows.
    """
    n, K = sstats.shape
    for i in range(n):
        dst = M[words[i]]
        src = sstats[i]
        for k in range(K):
            v = coef * src[k]
            dst[k] += v
            rowsum[k] += v


scatter_add_rows = numba.njit(cache=True, nogil=True)(_scatter_add_rows)


def _gather_rows_affine(M, words, shift, scale, out):
    """``out = shift + scale * M[words]`` (the server's sparse pull of ``lambda``)."""
    K = M.shape[1]
    for i in range(words.shape[0]):
        src = M[words[i]]
        for k in range(K):
            out[i, k] = shift + scale * src[k]


gather_rows_affine = numba.njit(cache=True, nogil=True)(_gather_rows_affine)
