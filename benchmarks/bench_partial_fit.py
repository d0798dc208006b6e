"""A ``partial_fit`` stream without a Dask client: what does each call cost?

Issue 17's "one cluster for many fits", one question: with the embedded cluster kept
for the process, how does the per-call time of ``partial_fit`` on a 128-document
minibatch compare with scikit-learn's, and what does a 100-call stream cost end to end?
And what did it cost when every call started and closed its own cluster (the behaviour
before; emulated by :func:`dask_dpsgd.close_embedded_cluster` after each call)?

NIPS training documents, ``n_components`` topics, the same minibatches in the same
order for both libraries (scikit-learn's ``LatentDirichletAllocation`` with the
equivalent parameters, ``_common.sklearn_equivalent``), each stream in a fresh
interpreter (``_common.run_isolated``), methods interleaved per seed:

* **dpsvi-kept**: DPSVI's default (the embedded cluster kept between calls);
* **dpsvi-fresh**: the cluster closed after every call (``calls_fresh`` calls only);
* **sklearn**: ``LatentDirichletAllocation.partial_fit``.

Run from the repository root::

    PYTHONPATH=. python benchmarks/bench_partial_fit.py
    python benchmarks/summarize.py
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common

KIND = "partial_fit"
METHODS = ("dpsvi-kept", "dpsvi-fresh", "sklearn")


@dataclass(frozen=True, slots=True)
class BenchPartialFitConfig:
    """Per-call cost of a partial_fit stream without a client (issue #17)."""

    n_components: int = 20
    """Topics."""
    batch_size: int = 128
    """Documents per partial_fit call."""
    calls: int = 100
    """Calls per stream (DPSVI kept and scikit-learn)."""
    calls_fresh: int = 10
    """Calls of the cluster-per-call stream."""
    seeds: int = 3
    """Streams per method (seeds 0 .. seeds-1)."""
    output: str = "benchmarks/results/partial_fit.json"
    """Results file."""


def _stream(task: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from dask_dpsgd.datasets import load_nips

    nips = load_nips()
    X = nips.data[nips.train_indices]
    order = np.random.default_rng(task["seed"]).permutation(X.shape[0])
    b, n = task["batch_size"], task["calls"]
    batches = [X[order[(i * b) % X.shape[0]:][:b]] for i in range(n)]
    params = dict(n_components=task["n_components"], random_state=task["seed"],
                  total_samples=X.shape[0])
    if task["method"] == "sklearn":
        from sklearn.decomposition import LatentDirichletAllocation

        model: Any = LatentDirichletAllocation(**_common.sklearn_equivalent(params))
        close = None
    else:
        from dask_dpsgd import DPSVILatentDirichletAllocation, close_embedded_cluster

        model = DPSVILatentDirichletAllocation(**params)
        close = close_embedded_cluster if task["method"] == "dpsvi-fresh" else None
    times = []
    t_all = time.perf_counter()
    for batch in batches:
        t = time.perf_counter()
        model.partial_fit(batch)
        if close is not None:
            close()
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t_all
    test = nips.data[nips.test_indices]
    return {"call_s": times, "total_s": total,
            "perplexity": float(model.perplexity(test))}


def main(cfg: BenchPartialFitConfig) -> Path:
    results = _common.Results(cfg, KIND)
    for seed in range(cfg.seeds):
        order = METHODS[seed % len(METHODS):] + METHODS[:seed % len(METHODS)]
        for method in order:
            calls = cfg.calls_fresh if method == "dpsvi-fresh" else cfg.calls
            task = {"method": method, "seed": seed, "calls": calls,
                    "batch_size": cfg.batch_size, "n_components": cfg.n_components}
            out = _common.run_isolated(__file__, task)
            rec = {"method": method, "seed": seed, "calls": calls, **out}
            results.runs.append(rec)
            later = sorted(out["call_s"][1:])
            print(f"[seed {seed}] {method:12s} first {out['call_s'][0]:.3f}s, "
                  f"median later {later[len(later) // 2]:.4f}s, total "
                  f"{out['total_s']:.1f}s", flush=True)
            results.save()
    return results.save(finished=True)


if __name__ == "__main__":
    if not _common.worker_main(_stream):
        main(_common.parse_config(BenchPartialFitConfig))
