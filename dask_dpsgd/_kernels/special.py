"""Special functions compiled with numba.

The digamma function ``psi`` is not provided by numba; this is the same asymptotic
expansion scikit-learn uses in ``sklearn/decomposition/_online_lda_fast.pyx`` so that
our E-step and bound agree with scikit-learn's to rounding error.
"""

from __future__ import annotations

import math

import numba
import numpy as np

EULER = 0.577215664901532860606512090082402431


def _psi(x):
    """Digamma function for a positive float.

    Parameters
    ----------
    x : float
        Argument, ``x >= 0``.

    Returns
    -------
    float
        ``psi(x)``. Equivalent to ``scipy.special.digamma(x)`` to about 1e-12
        relative for ``x > 1e-6``; ``psi(0) = -inf``, the limit from the right, as
        scikit-learn's C code returns it (a zero ``doc_topic_prior`` or
        ``topic_word_prior`` lets a Dirichlet parameter reach 0, and ``exp(-inf) = 0``
        then drops that topic or word, as it does in scikit-learn).
    """
    if x <= 1e-6:
        if x == 0.0:
            # numba's division follows Python's and would raise ZeroDivisionError.
            return -math.inf
        # psi(x) = -EULER - 1/x + O(x)
        return -EULER - 1.0 / x
    result = 0.0
    # Recurrence psi(x) = psi(x + 1) - 1/x pushes x into the asymptotic range.
    while x < 6.0:
        result -= 1.0 / x
        x += 1.0
    r = 1.0 / x
    result += math.log(x) - 0.5 * r
    r = r * r
    result += -r * (
        1.0 / 12.0 - r * (1.0 / 120.0 - r * (1.0 / 252.0 - r * (1.0 / 240.0 - r / 132.0)))
    )
    return result


psi = numba.njit(cache=True, nogil=True)(_psi)


def _dirichlet_expectation_rows(x, out):
    """``E[log X]`` for every row of a Dirichlet parameter matrix.

    Parameters
    ----------
    x : ndarray of shape (n_rows, n_cols)
        Dirichlet parameters, positive.
    out : ndarray of shape (n_rows, n_cols)
        Written in place.

    Notes
    -----
    Equivalent to ``psi(x) - psi(x.sum(axis=1))[:, None]``.
    """
    n, m = x.shape
    for i in range(n):
        s = 0.0
        for j in range(m):
            s += x[i, j]
        ps = psi(s)
        for j in range(m):
            out[i, j] = psi(x[i, j]) - ps


dirichlet_expectation_rows = numba.njit(cache=True, nogil=True)(
    _dirichlet_expectation_rows
)


def dirichlet_expectation(x: np.ndarray) -> np.ndarray:
    """Return ``psi(x) - psi(x.sum(axis=1, keepdims=True))`` (row-wise).

    Parameters
    ----------
    x : ndarray of shape (n_rows, n_cols)
        Dirichlet parameters.

    Returns
    -------
    ndarray of shape (n_rows, n_cols)
        ``E[log theta]`` for ``theta ~ Dir(x[i])`` in each row.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    dirichlet_expectation_rows(x, out)
    return out
