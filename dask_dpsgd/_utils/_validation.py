"""Input checks whose messages name the method and the problem."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

#: The values of the estimators' ``parallelism`` parameter (the engine's mode; see
#: ``dask_dpsgd.engine._cluster.mode_layout``).
PARALLELISM = ("auto", "serial", "hogwild", "parameter-server", "dpsgd")


def effective_mode(threads: Sequence[int]) -> str:
    """The mode a fit actually ran in, from the numba threads of each of its workers."""
    many_threads = any(t > 1 for t in threads)
    if len(threads) == 1:
        return "hogwild" if many_threads else "serial"
    return "dpsgd" if many_threads else "parameter-server"


def check_counts(X: sp.csr_matrix | np.ndarray, whom: str) -> None:
    """Check a document-word count matrix: finite, non-negative, not all zero.

    Parameters
    ----------
    X : scipy.sparse matrix or ndarray of shape (n_docs, n_words)
    whom : str
        Method name used in the messages, e.g. ``"DPSVILatentDirichletAllocation.fit"``.

    Raises
    ------
    ValueError
        Naming the first problem found: NaN or infinite entries, negative entries, or
        no positive entry at all.
    """
    data = np.asarray(X.data) if sp.issparse(X) else np.asarray(X)
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype,
                                                                 np.complexfloating):
        raise ValueError(f"{whom}: document-word counts must be real numbers, got "
                         f"dtype {data.dtype}")
    finite = np.isfinite(data)
    if not finite.all():
        bad = data[~finite]
        kind = "NaN" if np.isnan(bad).any() else "infinity"
        raise ValueError(f"{whom}: input contains {kind} ({bad.size} non-finite "
                         "entries); counts must be finite")
    if data.size and data.min() < 0:
        raise ValueError(f"Negative values in data passed to {whom}; counts must be "
                         f"non-negative (min is {data.min()!r})")
    if data.size == 0 or not (data > 0).any():
        raise ValueError(f"{whom}: the document-word matrix of shape {X.shape} has no "
                         "positive count; there is nothing to learn from")


def check_counts_finite_nonneg(X: sp.csr_matrix | np.ndarray, whom: str) -> None:
    """As :func:`check_counts`, but an all-zero block is allowed (transform input)."""
    data = np.asarray(X.data) if sp.issparse(X) else np.asarray(X)
    if data.size and (data > 0).any():
        check_counts(X, whom)
        return
    if data.size:
        check_counts(np.concatenate([np.ravel(data), [1.0]]), whom)
