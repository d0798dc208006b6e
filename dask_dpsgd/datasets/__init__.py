"""Bundled data sets and loaders, in the style of :mod:`sklearn.datasets`."""

from __future__ import annotations

from dask_dpsgd.datasets._base import (
    corpus_format,
    load_corpus,
    load_matrix_market,
    load_nips,
    load_text_folder,
    load_uci_bow,
)

__all__ = ["corpus_format", "load_corpus", "load_matrix_market", "load_nips",
           "load_text_folder", "load_uci_bow"]
