"""
LDA quickstart: DPSVI on the bundled NIPS corpus
================================================

Fits topics with :class:`dask_dpsgd.DPSVILatentDirichletAllocation` on an embedded local
Dask cluster (no client given), prints the top words per topic and the held-out
perplexity. This is what ``python -m dask_dpsgd lda`` does, as a script.
"""

from __future__ import annotations

import argparse

from dask_dpsgd import DPSVILatentDirichletAllocation
from dask_dpsgd.datasets import load_nips


def main(n_components: int, max_iter: int) -> None:
    # ---- data: the bundled corpus and its 90/10 split
    corpus = load_nips()
    X = corpus.data
    X_train, X_test = X[corpus.train_indices], X[corpus.test_indices]

    # ---- fit: no Dask client exists, so an embedded LocalCluster is started and closed
    lda = DPSVILatentDirichletAllocation(n_components=n_components, max_iter=max_iter,
                                         random_state=0, verbose=1).fit(X_train)

    # ---- report
    vocab = corpus.feature_names
    for k, row in enumerate(lda.components_):
        print(f"topic {k:2d}:", " ".join(vocab[i] for i in row.argsort()[::-1][:8]))
    print(f"held-out perplexity: {lda.perplexity(X_test):.1f}")
    print(f"updates applied: {lda.n_updates_applied_}, staleness mean "
          f"{lda.staleness_mean_:.2f}")


if __name__ == "__main__":  # Dask starts worker processes: guard the entry point
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--n-components", type=int, default=10)
    parser.add_argument("--max-iter", type=int, default=3)
    args = parser.parse_args()
    main(args.n_components, args.max_iter)
