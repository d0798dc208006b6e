"""The third model (examples/byom_nmf.py) on the public engine: speed and loss against
scikit-learn's single-threaded MiniBatchNMF, in the same run.

For each seed and each layout ``MxP`` (``M`` workers x ``P`` numba threads), NMF of the
bundled NIPS counts by ``dask_dpsgd.engine.fit`` with the example's plug-in, and
scikit-learn's ``MiniBatchNMF`` (Frobenius loss, the same ``K``, minibatch size and
passes, its BLAS limited to one thread) on the same matrix. Both are scored by the
example's per-document loss ``1/D sum_d min_{w_d >= 0} 1/2 ||x_d - w_d H||^2`` at their
final ``H``. The engine's fits run ``n = 1 .. passes`` passes, each from scratch, so that
the time to reach scikit-learn's final loss is measured, not interpolated. Time: the engine's rounds (``history_[-1]["time/elapsed_s"]``: server start
to the end of the last pass; cluster start and shard placement excluded, as in the LDA
benchmarks) and scikit-learn's ``fit``. Every layout gets a fresh LocalCluster, warmed
up by an excluded one-pass fit.

Run from the repository root::

    PYTHONPATH=. python benchmarks/bench_nmf.py
    python benchmarks/summarize.py
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common

KIND = "nmf"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@dataclass(frozen=True, slots=True)
class BenchNMFConfig:
    """NMF on the engine vs scikit-learn's MiniBatchNMF (issue #15)."""

    n_components: int = 10
    """K."""
    passes: int = 5
    """Passes over the corpus (both methods)."""
    batch_size: int = 64
    """Documents per minibatch (both methods)."""
    layouts: tuple[str, ...] = ("1x1", "1x2", "2x1")
    """Engine layouts MxP."""
    repeats: int = 3
    """Seeds."""
    random_state: int = 0
    """First seed."""
    output: str = str(_common.RESULTS_DIR / "nmf.json")
    """Where the raw results go."""


def _add_examples(folder: str = str(EXAMPLES)) -> None:
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _loss(nmf: Any, X: Any, H: Any) -> float:
    return nmf.NMFAlgorithm(H.shape[0], H).loss(X, H)


def _sklearn(X: Any, cfg: BenchNMFConfig, seed: int, nmf: Any) -> dict[str, Any]:
    from sklearn.decomposition import MiniBatchNMF
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        model = MiniBatchNMF(cfg.n_components, batch_size=cfg.batch_size,
                             max_iter=cfg.passes, init="random", tol=0.0,
                             max_no_improvement=None, random_state=seed)
        t0 = time.perf_counter()
        model.fit(X)
        wall = time.perf_counter() - t0
    return {"method": "sklearn", "seed": seed, "time_s": wall,
            "loss": _loss(nmf, X, model.components_), "passes": int(model.n_iter_)}


def _engine(X: Any, cfg: BenchNMFConfig, seed: int, nmf: Any, m: int, p: int,
            passes: int) -> dict[str, Any]:
    algo = nmf.NMFAlgorithm(cfg.n_components, nmf.initial_h(X, cfg.n_components, seed),
                            batch_size=cfg.batch_size)
    from dask_dpsgd import engine

    t0 = time.perf_counter()
    r = engine.fit(algo, X, n_rounds=passes, n_workers=m, threads_per_worker=p,
                   random_state=seed)
    wall = time.perf_counter() - t0
    H = r.snapshot["H"]
    return {"method": f"{m}x{p}", "seed": seed, "time_s": r.history[-1]["time/elapsed_s"],
            "fit_wall_s": wall, "loss": _loss(nmf, X, H), "passes": r.rounds_done,
            "staleness_mean": r.counts.staleness_mean, "updates": r.counts.n_applied}


def main(cfg: BenchNMFConfig) -> Path:
    import distributed
    import numpy as np

    from dask_dpsgd.datasets import load_nips

    _add_examples()
    import byom_nmf as nmf

    machine = _common.machine_facts()
    started = _common.now_iso()
    X = load_nips().data.astype(np.float64)
    seeds = _common.seeds(cfg.random_state, cfg.repeats)
    runs = [_sklearn(X, cfg, s, nmf) for s in seeds]
    for layout in cfg.layouts:
        m, p = (int(v) for v in layout.split("x"))
        with _common.RunCluster(m, p) as rc, distributed.Client(rc.address) as client:
            client.run(_add_examples)
            _engine(X[:256], cfg, 0, nmf, m, p, 1)  # warm-up
            runs += [_engine(X, cfg, s, nmf, m, p, n) for s in seeds
                     for n in range(1, cfg.passes + 1)]
    return _common.write_results(cfg.output, kind=KIND, config=cfg, machine=machine,
                                 runs=runs, started=started,
                                 finished=_common.now_iso(),
                                 corpus_shape=list(X.shape))


if __name__ == "__main__":
    print(main(_common.parse_config(BenchNMFConfig)))
