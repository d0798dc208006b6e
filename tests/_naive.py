"""Slow plain-numpy references for the LDA kernels (docs/design.rst, "Kernels")."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import digamma, gammaln, logsumexp

EPS = np.finfo(np.float64).eps


def dirichlet_expectation(x: np.ndarray) -> np.ndarray:
    """``E[log theta]`` row-wise for Dirichlet parameters ``x``."""
    return digamma(x) - digamma(x.sum(axis=1, keepdims=True))


def estep(X: sp.csr_matrix, exp_beta_kv: np.ndarray, gamma0: np.ndarray, alpha: float,
          max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Online-LDA E-step, document by document, exactly as Hoffman et al. write it.

    ``exp_beta_kv`` is topic-major (K, V) like scikit-learn's; returns ``gamma`` and
    the sufficient statistics ``(K, V)``.
    """
    gamma = gamma0.copy()
    sstats = np.zeros_like(exp_beta_kv)
    for d in range(X.shape[0]):
        ids = X.indices[X.indptr[d]:X.indptr[d + 1]]
        cnts = X.data[X.indptr[d]:X.indptr[d + 1]]
        g = gamma[d]
        et = np.exp(dirichlet_expectation(g[None])[0])
        eb = exp_beta_kv[:, ids]
        for _ in range(max_iter):
            last = g
            norm_phi = et @ eb + EPS
            g = et * ((cnts / norm_phi) @ eb.T) + alpha
            et = np.exp(dirichlet_expectation(g[None])[0])
            if np.mean(np.abs(g - last)) < tol:
                break
        gamma[d] = g
        norm_phi = et @ eb + EPS
        sstats[:, ids] += np.outer(et, cnts / norm_phi) * eb
    return gamma, sstats


def approx_bound(X: sp.csr_matrix, gamma: np.ndarray, lam_kv: np.ndarray, alpha: float,
                 eta: float) -> float:
    """scikit-learn's ``_approx_bound`` (``sub_sampling=False``) in plain numpy."""
    K, V = lam_kv.shape
    elog_theta = dirichlet_expectation(gamma)
    elog_beta = dirichlet_expectation(lam_kv)
    score = 0.0
    for d in range(X.shape[0]):
        ids = X.indices[X.indptr[d]:X.indptr[d + 1]]
        cnts = X.data[X.indptr[d]:X.indptr[d + 1]]
        score += cnts @ logsumexp(elog_theta[d][:, None] + elog_beta[:, ids], axis=0)

    def ll(prior, distr, elog, size):
        return (np.sum((prior - distr) * elog) + np.sum(gammaln(distr) - gammaln(prior))
                + np.sum(gammaln(prior * size) - gammaln(distr.sum(axis=1))))

    return score + ll(alpha, gamma, elog_theta, K) + ll(eta, lam_kv, elog_beta, V)


def svi_step(lam_kv: np.ndarray, sstats_kv: np.ndarray, rho: float, eta: float,
             doc_ratio: float) -> np.ndarray:
    """Dense online-VB update ``(1 - rho) lambda + rho (eta + D/|B| S)``."""
    return (1 - rho) * lam_kv + rho * (eta + doc_ratio * sstats_kv)
