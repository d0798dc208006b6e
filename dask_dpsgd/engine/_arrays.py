"""Recognising Dask collections without making the estimator layer import Dask."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_dask_array(X: Any) -> bool:
    """Whether ``X`` is a ``dask.array.Array``."""
    try:
        import dask.array as da
    except ImportError:  # pragma: no cover - dask is a dependency
        return False
    return isinstance(X, da.Array)


def map_row_blocks(X: Any, func: Any, n_out: int, out_dtype: Any = np.float64,
                   **kwargs: Any) -> Any:
    """Apply ``func(block, **kwargs) -> ndarray (n_rows, n_out)`` to each row chunk.

    Parameters
    ----------
    X : dask.array.Array of shape (n_rows, n_features)
    func : callable
    n_out : int
        Columns of the output.
    out_dtype : numpy dtype, default=float64
        The dtype ``func`` returns.
    **kwargs
        Passed to ``func``.

    Returns
    -------
    dask.array.Array of shape (n_rows, n_out), of ``out_dtype``
    """
    X = X.rechunk({1: -1})
    return X.map_blocks(func, dtype=np.dtype(out_dtype), chunks=(X.chunks[0], (n_out,)),
                        meta=np.empty((0, 0), dtype=out_dtype), **kwargs)
