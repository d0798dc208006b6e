"""dask-dpsgd: DPSGD (lock-free cores x asynchronous workers) on Dask.

Estimators
----------
DPSVILatentDirichletAllocation
    LDA by distributed/parallel stochastic variational inference.
HSA2CAgent
    Advantage actor-critic by hybrid synchronous/asynchronous DPSGD.
close_embedded_cluster
    Close the local Dask cluster that fits without a client share.

The estimators are imported lazily so that importing a low layer (the numba kernels, the
parameter-server state) does not pull in Dask and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

# The one place the version is written: pyproject.toml has setuptools read this literal.
__version__ = "0.1.0"

_LAZY = {
    "DPSVILatentDirichletAllocation": "dask_dpsgd.decomposition",
    "HSA2CAgent": "dask_dpsgd.rl",
    "close_embedded_cluster": "dask_dpsgd.engine",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dask_dpsgd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
