"""Topic models trained by DPSGD."""

from dask_dpsgd.decomposition._dpsvi_lda import DPSVILatentDirichletAllocation

__all__ = ["DPSVILatentDirichletAllocation"]
