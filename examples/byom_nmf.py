"""
Bring your own model: non-negative matrix factorisation by DPSGD
================================================================

A third model on the engine, written only against the public API
(:mod:`dask_dpsgd.engine`): the bundled NIPS document-word counts ``X`` (``D x V``)
factorised as ``X ~ W H`` with ``W >= 0`` (``D x K``, one row per document) and
``H >= 0`` (``K x V``, the global parameters), minimising the non-convex

    f(H) = 1/D sum_d min_{w_d >= 0} 1/2 ||x_d - w_d H||^2

(scikit-learn's ``MiniBatchNMF`` objective with the Frobenius loss, per document).

* **server** (a user-supplied update rule, :class:`NMFRule`): holds ``H`` and its Gram
  matrix ``G = H H^T``; a pull of a minibatch's words returns ``H[:, words]`` and ``G``
  (all a worker needs), and an update ``(words, C, A, s)`` is the projected gradient
  step ``H = max(0, H - s (A H - C))`` with ``C = W_B^T X_B`` nonzero on the
  minibatch's words only: workers push and pull in proportion to the words of a
  minibatch, not ``K x V``;
* **worker** (numba, Hogwild inside): for each minibatch ``B`` of its documents, solve
  every ``w_d`` given ``H`` by a few sweeps of coordinate descent (HALS; documents in
  parallel), then ``A = W_B^T W_B`` and ``C``, which the threads add into one shared
  array without locks (Hogwild), and the step ``s = rho / lambda_max(A)`` (``rho`` over
  the minibatch Lipschitz constant).

Run it with ``python examples/byom_nmf.py --parallelism serial`` (or ``hogwild``,
``parameter-server``, ``dpsgd``, ``auto``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numba
import numpy as np
import scipy.sparse as sp
from numba import prange

from dask_dpsgd import engine
from dask_dpsgd.datasets import load_nips

# ----------------------------------------------------------------------- kernels


@numba.njit(cache=True, nogil=True, parallel=True)
def solve_w(indptr, indices, data, Hw, G, sweeps, W):  # pragma: no cover - numba
    """``W[d] = argmin_{w >= 0} 1/2 ||x_d - w H||^2`` by ``sweeps`` HALS sweeps from
    ``W[d]`` (``Hw = H^T``, word-major, rows of the documents' words; ``G = H H^T``);
    documents in parallel."""
    n, K = W.shape
    for d in prange(n):
        b = np.zeros(K)
        for p in range(indptr[d], indptr[d + 1]):
            j = indices[p]
            for k in range(K):
                b[k] += data[p] * Hw[j, k]
        for _ in range(sweeps):
            for k in range(K):
                if G[k, k] <= 0.0:
                    continue
                gw = 0.0
                for m in range(K):
                    gw += G[k, m] * W[d, m]
                W[d, k] = max(0.0, W[d, k] + (b[k] - gw) / G[k, k])


@numba.njit(cache=True, nogil=True, parallel=True)
def add_xtw(indptr, indices, data, W, Cw):  # pragma: no cover - numba
    """``Cw += (W^T X)^T`` (word-major), documents in parallel, lock-free (Hogwild):
    threads add into the same rows of ``Cw`` without synchronising."""
    n, K = W.shape
    for d in prange(n):
        for p in range(indptr[d], indptr[d + 1]):
            j = indices[p]
            for k in range(K):
                Cw[j, k] += data[p] * W[d, k]


@numba.njit(cache=True, nogil=True, parallel=True)
def doc_losses(indptr, indices, data, Hw, G, W):  # pragma: no cover - numba
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
                wb += data[p] * W[d, k] * Hw[j, k]
        wgw = 0.0
        for k in range(K):
            for m in range(K):
                wgw += W[d, k] * G[k, m] * W[d, m]
        total += 0.5 * (xx - 2.0 * wb + wgw)
    return total


@numba.njit(cache=True, nogil=True, fastmath=True)
def projected_step(Hw, pos, Cw, A, s, G):  # pragma: no cover - numba
    """``H = max(0, H - s (A H - C))`` in place (``Hw = H^T``; ``Cw`` the rows of the
    words ``pos[v] >= 0``), and ``G = H H^T`` of the result, in one pass over ``H``."""
    V, K = Hw.shape
    G[:] = 0.0
    row = np.empty(K)
    for v in range(V):
        for k in range(K):
            acc = 0.0
            for m in range(K):
                acc += A[k, m] * Hw[v, m]
            row[k] = Hw[v, k] - s * acc
        i = pos[v]
        if i >= 0:
            for k in range(K):
                row[k] += s * Cw[i, k]
        for k in range(K):
            Hw[v, k] = max(0.0, row[k])
        for k in range(K):
            for m in range(K):
                G[k, m] += Hw[v, k] * Hw[v, m]


# ------------------------------------------------------------------ the plug-in


class NMFRule:
    """``H >= 0`` under projected gradient steps, with ``G = H H^T``.

    ``H`` is stored word-major (``Hw = H^T``, ``V x K``) so that a minibatch's words are
    rows. An update is ``(words, Cw, A, s)``: ``H = max(0, H - s (A H - C))`` where
    ``C``'s columns ``words`` are ``Cw``'s rows (the rest zero). A pull of ``words``
    returns ``(Hw[words], G)``; of ``None``, ``(Hw, G)``.
    """

    def __init__(self, H: np.ndarray) -> None:
        self.Hw = np.ascontiguousarray(np.asarray(H, dtype=np.float64).T)
        self.G = self.Hw.T @ self.Hw
        self.pos = np.full(self.Hw.shape[0], -1, dtype=np.int64)

    def apply(self, delta: tuple[Any, ...], step: int) -> None:
        """One projected step (:func:`projected_step`)."""
        words, Cw, A, s = delta
        self.pos[words] = np.arange(len(words))
        projected_step(self.Hw, self.pos, Cw, A, float(s), self.G)
        self.pos[words] = -1

    def is_finite(self, delta: tuple[Any, ...]) -> bool:
        """Only finite statistics and steps."""
        _, Cw, A, s = delta
        return bool(np.isfinite(Cw).all() and np.isfinite(A).all() and np.isfinite(s))

    def pull(self, request: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``Hw``'s rows ``request`` (all for ``None``) and ``G`` (copies)."""
        Hw = self.Hw.copy() if request is None else self.Hw[request]
        return Hw, self.G.copy()

    def snapshot(self) -> dict[str, np.ndarray]:
        """``{"H": H}`` (``K x V``)."""
        return {"H": np.ascontiguousarray(self.Hw.T)}

    def nbytes(self, obj: Any) -> int:
        """Bytes of the arrays in an update or a pulled payload."""
        return sum(int(a.nbytes) for a in obj if isinstance(a, np.ndarray))


class Minibatch(NamedTuple):
    """A minibatch's documents, their distinct words and each non-zero's column in
    them."""

    X: sp.csr_matrix
    words: np.ndarray
    cols: np.ndarray


def make_minibatches(X: sp.csr_matrix, batch_size: int) -> list[Minibatch]:
    """Cut a shard into minibatches and index their words (once per fit)."""
    out = []
    for a in range(0, X.shape[0], batch_size):
        Xb = X[a:a + batch_size]
        words, cols = np.unique(Xb.indices, return_inverse=True)
        out.append(Minibatch(Xb, words, cols.astype(np.int32)))
    return out


class NMFWorker:
    """A worker's pass over its documents: one projected-gradient step per minibatch."""

    def __init__(self, batches: list[Minibatch], algo: NMFAlgorithm,
                 ctx: engine.WorkerContext) -> None:
        self.batches = batches
        self.algo = algo
        self.n_updates = len(batches)
        rng = np.random.default_rng(ctx.seed)
        self.W0 = rng.uniform(0.0, 1.0, (algo.batch_size, algo.n_components))
        self.compute_s = 0.0

    def request(self, index: int) -> np.ndarray:
        """The minibatch's words."""
        return self.batches[index].words

    def compute(self, index: int, params: tuple[np.ndarray, np.ndarray],
                unseen: Sequence[Any]) -> tuple[Any, ...]:
        """The projected-gradient step of minibatch ``index`` at ``params``."""
        t0 = time.perf_counter()
        Hw, G = params
        b = self.batches[index]
        X = b.X
        W = self.W0[:X.shape[0]].copy()
        solve_w(X.indptr, b.cols, X.data, Hw, G, self.algo.sweeps, W)
        A = W.T @ W
        Cw = np.zeros_like(Hw)
        add_xtw(X.indptr, b.cols, X.data, W, Cw)
        step = self.algo.step / max(np.linalg.eigvalsh(A)[-1], 1e-12)
        self.compute_s += time.perf_counter() - t0
        return b.words, Cw, A, step

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

    def prepare(self, parts: Sequence[Any]) -> list[Minibatch]:
        """The worker's documents in indexed minibatches."""
        X = sp.vstack([sp.csr_matrix(p, dtype=np.float64) for p in parts], format="csr")
        X.sort_indices()
        return make_minibatches(X, self.batch_size)

    def shard_size(self, shard: list[Minibatch]) -> int:
        """Documents in the shard."""
        return sum(b.X.shape[0] for b in shard)

    def make_rule(self, snapshot: dict[str, Any] | None, updates_done: int) -> NMFRule:
        """``H`` under the projected rule."""
        return NMFRule(self.H0 if snapshot is None else snapshot["H"])

    def worker(self, shard: list[Minibatch], ctx: engine.WorkerContext) -> NMFWorker:
        """The worker's pass."""
        return NMFWorker(shard, self, ctx)

    def evaluate(self, shard: list[Minibatch], params: tuple[np.ndarray, np.ndarray]
                 ) -> tuple[float, float]:
        """Summed per-document loss of the shard, and its documents."""
        Hw, G = params
        total = 0.0
        for b in shard:
            W = np.full((b.X.shape[0], self.n_components), 0.5)
            X = b.X
            solve_w(X.indptr, X.indices, X.data, Hw, G, 5 * self.sweeps, W)
            total += doc_losses(X.indptr, X.indices, X.data, Hw, G, W)
        return total, float(self.shard_size(shard))

    def loss(self, X: sp.csr_matrix, H: np.ndarray) -> float:
        """The objective ``f(H)`` on the documents ``X`` (no cluster)."""
        Hw = np.ascontiguousarray(H.T)
        total, count = self.evaluate(self.prepare([X]), (Hw, H @ H.T))
        return total / count


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
