"""dask-dpsgd: DPSGD (lock-free cores x asynchronous workers) on Dask.

Estimators
----------
DPSVILatentDirichletAllocation
    LDA by distributed/parallel stochastic variational inference.
"""

from dask_dpsgd.decomposition import DPSVILatentDirichletAllocation

__version__ = "0.1.0"

__all__ = ["DPSVILatentDirichletAllocation", "__version__"]
