"""
CountVectorizer -> DPSVI LDA in a Pipeline under GridSearchCV
=============================================================

Texts go through scikit-learn's ``CountVectorizer`` and the topic model; ``GridSearchCV``
picks the number of topics by held-out variational bound (the estimator's ``score``).
All fits share the Dask client opened here.
"""

from __future__ import annotations

import argparse

import numpy as np
from distributed import Client, LocalCluster
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from dask_dpsgd import DPSVILatentDirichletAllocation
from dask_dpsgd.datasets import load_nips


def nips_texts(n_docs: int) -> list[str]:
    """Documents back as text from the bundled bag of words (word order is lost)."""
    corpus = load_nips()
    vocab = corpus.feature_names
    X = corpus.data[:n_docs]
    return [" ".join(np.repeat(vocab[X[d].indices], X[d].data)) for d in range(n_docs)]


def main(n_docs: int) -> None:
    texts = nips_texts(n_docs)
    pipe = Pipeline([
        ("counts", CountVectorizer(max_df=0.9, min_df=2)),
        ("lda", DPSVILatentDirichletAllocation(max_iter=2, random_state=0)),
    ])
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster):
        search = GridSearchCV(pipe, {"lda__n_components": [5, 10]}, cv=2).fit(texts)
    print("best:", search.best_params_, f"score {search.best_score_:.0f}")
    print("document-topic shape:", search.transform(texts[:3]).shape)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--n-docs", type=int, default=300)
    main(parser.parse_args().n_docs)
