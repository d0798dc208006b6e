"""Bundled data sets and loaders, in the style of :mod:`sklearn.datasets`."""

from __future__ import annotations

from dask_dpsgd.datasets._base import (
    load_matrix_market,
    load_nips,
    load_text_folder,
    load_uci_bow,
)

__all__ = ["load_matrix_market", "load_nips", "load_text_folder", "load_uci_bow"]
