"""Numeric kernels (numpy + numba only; no Dask, scikit-learn or gymnasium).

Importing this package pins numba's threading layer to a thread-safe one before any
``parallel=True`` kernel is compiled: numba's ``workqueue`` layer aborts the whole
process when two threads call a parallel kernel at once (measured, MECHANICS.md D4),
which inside a Dask worker shows up as ``KilledWorker``. ``threadsafe`` makes numba
pick OpenMP or TBB and raise instead of silently falling back to ``workqueue``.
"""

from __future__ import annotations

import os

import numba

# Respect an explicit user choice (environment variable), otherwise insist on a safe layer.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "threadsafe"
