"""scikit-learn's common estimator checks, on the session's real Dask cluster."""

from __future__ import annotations

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from dask_dpsgd import DPSVILatentDirichletAllocation


@pytest.fixture(autouse=True)
def _default_client(client):
    """The checks fit many times: they run on the session cluster, not an embedded one."""
    return client


@parametrize_with_checks(
    [DPSVILatentDirichletAllocation(n_components=3, max_iter=2, batch_size=16,
                                    n_workers=1, threads_per_worker=1, random_state=0)]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
