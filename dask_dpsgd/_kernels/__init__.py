"""Numeric kernels (numpy + numba only; no Dask, scikit-learn or gymnasium).

Importing this package pins numba's threading layer to a thread-safe one before any
``parallel=True`` kernel is compiled: numba's ``workqueue`` layer aborts the whole
process when two threads call a parallel kernel at once (docs/design.rst, "Threading
layer"), which inside a Dask worker shows up as ``KilledWorker``. ``threadsafe`` makes
numba pick OpenMP or TBB and raise instead of silently falling back to ``workqueue``.
"""

from __future__ import annotations

import os

import numba

# Respect an explicit user choice (environment variable), otherwise insist on a safe layer.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "threadsafe"


def sync_numba_config() -> None:
    """Re-read the ``NUMBA_*`` environment variables unless numba's pool has started.

    A Dask nanny applies its ``env=`` (``NUMBA_NUM_THREADS`` sized for the worker) after
    the worker process has imported numba when a spawned worker re-imports the user's
    script (docs/design.rst, "Thread budget"), so numba's config still holds the
    machine's core count. The thread pool would then start at that size, and the next
    compilation (a cold cache: a fresh install) re-reads the environment, sees
    ``NUMBA_NUM_THREADS`` changed after the pool started, and raises. Called first thing
    on every worker of a fit.
    """
    from numba.np.ufunc import parallel

    if not parallel._is_initialized:
        numba.core.config.reload_config()


def parallel_twin(fn):
    """Copy of a kernel body under its own name, for its ``parallel=True`` dispatcher.

    Parameters
    ----------
    fn : function
        Plain kernel body.

    Returns
    -------
    function
        Same code, globals and docstring; ``__name__``/``__qualname__`` end in
        ``_parallel``.

    Notes
    -----
    numba's on-disk cache keys an entry on the function's bytecode and signature but
    not on ``parallel=True`` (``numba/core/caching.py``, ``_index_key``) and names the
    cache file after the qualified name, so a serial and a parallel dispatcher of one
    function with ``cache=True`` share entries: whichever compiles first is loaded for
    both. Measured here: the parallel gradient then never started numba's threads. A
    twin with its own qualified name gets its own cache file.
    """
    twin = type(fn)(
        fn.__code__,
        fn.__globals__,
        fn.__name__ + "_parallel",
        fn.__defaults__,
        fn.__closure__,
    )
    twin.__qualname__ = fn.__qualname__ + "_parallel"
    twin.__doc__ = fn.__doc__
    return twin
