"""
Bring your own model: non-negative matrix factorisation by DPSGD
================================================================

A third model on the engine, written only against the public API
(:mod:`dask_dpsgd.engine`): the bundled NIPS document-word counts ``X`` (``D x V``)
factorised as ``X ~ W H`` with ``W >= 0`` (``D x K``, one row per document) and
``H >= 0`` (``K x V``, the global parameters), minimising the non-convex

    f(H) = 1/D sum_d min_{w_d >= 0} 1/2 ||x_d - w_d H||^2

(scikit-learn's ``MiniBatchNMF`` objective with the Frobenius loss, per document).

* **worker** (numba, Hogwild inside): for each minibatch ``B`` of its documents, solve
  every ``w_d`` given ``H`` by a few sweeps of coordinate descent (HALS; documents in
  parallel), then the minibatch gradient ``(W_B^T W_B H - W_B^T X_B) / |B|``, whose
  sparse part the threads add into one shared array without locks, and push the
  projected-gradient step ``-rho / L_B`` times it (``L_B`` the minibatch Lipschitz
  constant);
* **server** (a user-supplied update rule): ``H = max(0, H + delta)``, the projection.

Run it with ``python examples/byom_nmf.py --parallelism serial`` (or ``hogwild``,
``parameter-server``, ``dpsgd``, ``auto``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp
from numba import prange

from dask_dpsgd import engine
from dask_dpsgd.datasets import load_nips

# ----------------------------------------------------------------------- kernels


@numba.njit(cache=True, nogil=True, parallel=True)
def solve_w(indptr, indices, data, H, G, sweeps, W):  # pragma: no cover - numba
    """``W[d] = argmin_{w >= 0} 1/2 ||x_d - w H||^2`` by ``sweeps`` HALS sweeps from
    ``W[d]`` (``G = H H^T``); documents in parallel."""
    n, K = W.shape
    for d in prange(n):
        b = np.zeros(K)
        for p in range(indptr[d], indptr[d + 1]):
            j = indices[p]
            for k in range(K):
                b[k] += data[p] * H[k, j]
        for _ in range(sweeps):
            for k in range(K):
                if G[k, k] <= 0.0:
                    continue
                gw = 0.0
                for m in range(K):
                    gw += G[k, m] * W[d, m]
                W[d, k] = max(0.0, W[d, k] + (b[k] - gw) / G[k, k])


@numba.njit(cache=True, nogil=True, parallel=True)
def add_xtw(indptr, indices, data, W, C):  # pragma: no cover - numba
    """``C += W^T X`` (``K x V``), documents in parallel, lock-free (Hogwild): threads
    add into the same columns of ``C`` without synchronising."""
    n, K = W.shape
    for d in prange(n):
        for p in range(indptr[d], indptr[d + 1]):
            j = indices[p]
            for k in range(K):
                C[k, j] += data[p] * W[d, k]


@numba.njit(cache=True, nogil=True, parallel=True)
def doc_losses(indptr, indices, data, H, G, W):  # pragma: no cover - numba
    """Sum over documents of ``1/2 ||x_d - w_d H||^2``."""
    n, K = W.shape
    total = 0.0
    for d in prange(n):
        xx = 0.0
        wb = 0.0
        for p in range(indptr[d], indptr[d + 1]):
            j = indices[p]
            xx += data[p] * data[p]
            for k in range(K):
                wb += data[p] * W[d, k] * H[k, j]
        wgw = 0.0
        for k in range(K):
            for m in range(K):
                wgw += W[d, k] * G[k, m] * W[d, m]
        total += 0.5 * (xx - 2.0 * wb + wgw)
    return total


# ------------------------------------------------------------------ the plug-in


class ProjectedAddRule(engine.AddRule):
    """``H = max(0, H + delta)``: the projected step, applied by the server."""

    def apply(self, delta: np.ndarray, step: int) -> None:
        """Add the step and project onto ``H >= 0``."""
        np.maximum(self.theta + delta, 0.0, out=self.theta)


class NMFWorker:
    """A worker's pass over its documents: one projected-gradient step per minibatch."""

    def __init__(self, X: sp.csr_matrix, algo: NMFAlgorithm,
                 ctx: engine.WorkerContext) -> None:
        self.X = X
        self.algo = algo
        rng = np.random.default_rng(ctx.seed)
        self.batches = [(a, min(a + algo.batch_size, X.shape[0]))
                        for a in range(0, X.shape[0], algo.batch_size)]
        self.n_updates = len(self.batches)
        self.W0 = rng.uniform(0.0, 1.0, (algo.batch_size, algo.n_components))
        self.compute_s = 0.0

    def request(self, index: int) -> None:
        """All of ``H``."""
        return None

    def compute(self, index: int, params: np.ndarray, unseen: Sequence[Any]
                ) -> np.ndarray:
        """The projected-gradient step of minibatch ``index`` at ``H = params``."""
        t0 = time.perf_counter()
        K, V = self.algo.n_components, self.X.shape[1]
        H = params.reshape(K, V)
        a, b = self.batches[index]
        Xb = self.X[a:b]
        G = H @ H.T
        W = self.W0[:b - a].copy()
        solve_w(Xb.indptr, Xb.indices, Xb.data, H, G, self.algo.sweeps, W)
        A = W.T @ W
        grad = A @ H
        C = np.zeros((K, V))
        add_xtw(Xb.indptr, Xb.indices, Xb.data, W, C)
        grad -= C
        lipschitz = max(np.linalg.eigvalsh(A)[-1], 1e-12)
        self.compute_s += time.perf_counter() - t0
        return (-self.algo.step / lipschitz * grad).ravel()

    def report(self) -> dict[str, float]:
        """Seconds spent computing."""
        return {"time/compute_s": self.compute_s}


class NMFAlgorithm(engine.AlgorithmBase):
    """NMF of a document-word count matrix by projected SGD on ``H`` (see the module).

    Parameters
    ----------
    n_components : int
        ``K``.
    H0 : ndarray of shape (K, V)
        Initial ``H`` (non-negative).
    batch_size : int
        Documents per minibatch (``|B|``).
    step : float
        ``rho``: the step in units of ``1 / L_B``.
    sweeps : int
        HALS sweeps per ``w_d`` solve.
    """

    name = "nmf"
    score_name = "loss"

    def __init__(self, n_components: int, H0: np.ndarray, batch_size: int = 64,
                 step: float = 0.5, sweeps: int = 10) -> None:
        self.n_components = n_components
        self.H0 = H0
        self.batch_size = batch_size
        self.step = step
        self.sweeps = sweeps

    def split(self, data: sp.csr_matrix, n_workers: int) -> list[sp.csr_matrix]:
        """Contiguous row blocks, one per worker."""
        cuts = np.linspace(0, data.shape[0], n_workers + 1).astype(int)
        return [data[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]

    def prepare(self, parts: Sequence[Any]) -> sp.csr_matrix:
        """The worker's documents as one CSR matrix."""
        X = sp.vstack([sp.csr_matrix(p, dtype=np.float64) for p in parts], format="csr")
        X.sort_indices()
        return X

    def shard_size(self, shard: sp.csr_matrix) -> int:
        """Documents in the shard."""
        return int(shard.shape[0])

    def make_rule(self, snapshot: dict[str, Any] | None, updates_done: int
                  ) -> ProjectedAddRule:
        """``H`` (flattened) under the projected rule."""
        theta = self.H0.ravel() if snapshot is None else snapshot["theta"]
        return ProjectedAddRule(theta)

    def worker(self, shard: sp.csr_matrix, ctx: engine.WorkerContext) -> NMFWorker:
        """The worker's pass."""
        return NMFWorker(shard, self, ctx)

    def evaluate(self, shard: sp.csr_matrix, params: np.ndarray) -> tuple[float, float]:
        """Summed per-document loss of the shard, and its documents."""
        H = params.reshape(self.n_components, shard.shape[1])
        G = H @ H.T
        W = np.full((shard.shape[0], self.n_components), 0.5)
        solve_w(shard.indptr, shard.indices, shard.data, H, G, 5 * self.sweeps, W)
        return doc_losses(shard.indptr, shard.indices, shard.data, H, G, W), shard.shape[0]


def initial_h(X: sp.csr_matrix, n_components: int, seed: int) -> np.ndarray:
    """Uniform ``H`` on the scale scikit-learn's random NMF init uses."""
    scale = np.sqrt(X.mean() / n_components)
    return np.random.default_rng(seed).uniform(0.0, 2.0 * scale, (n_components, X.shape[1]))


def fit_nmf(X: sp.csr_matrix, n_components: int, n_rounds: int, seed: int = 0,
            **fit_kwargs: Any) -> engine.FitResult:
    """Fit NMF on ``X`` by DPSGD; ``fit_kwargs`` go to :func:`dask_dpsgd.engine.fit`."""
    algo = NMFAlgorithm(n_components, initial_h(X, n_components, seed))
    return engine.fit(algo, X, n_rounds=n_rounds, random_state=seed, final_score=True,
                      **fit_kwargs)


def main(parallelism: str, n_components: int, n_rounds: int) -> None:
    X = load_nips().data.astype(np.float64)
    t0 = time.perf_counter()
    result = fit_nmf(X, n_components, n_rounds, parallelism=parallelism)
    wall = time.perf_counter() - t0
    print(f"NMF of NIPS ({X.shape[0]} x {X.shape[1]}), K={n_components}, "
          f"{result.rounds_done} passes, {parallelism} on workers x threads "
          f"{list(result.threads)}: loss per document {result.score:.1f}, "
          f"{result.counts.n_applied} updates, staleness mean "
          f"{result.counts.staleness_mean:.2f}, {wall:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--parallelism", default="auto",
                        choices=["auto", "serial", "hogwild", "parameter-server", "dpsgd"])
    parser.add_argument("--n-components", type=int, default=10)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    main(args.parallelism, args.n_components, args.passes)
