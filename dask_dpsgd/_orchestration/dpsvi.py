"""DPSVI: LDA by distributed/parallel stochastic variational inference on Dask.

Layout of one fit (PAPER.md, DPSVI):

* worker 0 holds the :class:`~dask_dpsgd._server.actor.ParameterServer` actor with the
  global ``lambda`` under the SVI rule;
* every worker holds one shard of the documents, sent once (scattered to it, or, for a
  Dask array, the row chunks it already holds) and reused by every pass;
* a pass is one ordinary Dask task per worker (key ``dpsvi-pass-<p>-w<w>``, so it shows
  in the dashboard's task stream). The task walks its shard in minibatches: pull the
  minibatch's rows of ``lambda`` and the topic sums, run the E-step over numba's threads,
  push the sparse sufficient statistics through a :class:`Pusher` (one awaited call in
  flight), and go on. Workers never wait for each other inside a pass; the server
  applies pushes in arrival order and records each one's staleness.
* passes are separated by a barrier: that is where progress is reported, the training
  bound is evaluated (``evaluate_every``) and a failing task stops the fit.

This module holds no arithmetic: kernels do the maths, the server state does the update.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple

import distributed
import numba
import numpy as np
import scipy.sparse as sp

from dask_dpsgd._kernels import lda
from dask_dpsgd._orchestration.cluster import ClusterHandle
from dask_dpsgd._orchestration.pusher import Pusher
from dask_dpsgd._server.actor import ParameterServer

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DPSVIConfig:
    """Hyper-parameters a worker needs (plain values; shipped to every task).

    Attributes mirror :class:`~dask_dpsgd.DPSVILatentDirichletAllocation`;
    ``total_samples`` is ``D`` of the step ``D/|B|``; ``lag`` is the pusher's (0 or 1).
    """

    n_components: int
    doc_topic_prior: float
    topic_word_prior: float
    learning_offset: float
    learning_decay: float
    batch_size: int
    total_samples: float
    max_doc_update_iter: int
    mean_change_tol: float
    lag: int


class DPSVIResult(NamedTuple):
    """What a DPSVI run hands back to the estimator (plain data only)."""

    lam: np.ndarray  # (V, K) word-major lambda
    n_updates: int  # SVI steps applied by the server during this run
    n_passes: int
    history: list[dict[str, Any]]
    stats: dict[str, Any]
    staleness_histogram: np.ndarray
    train_perplexity: float | None
    pushes_sent: int


# --------------------------------------------------------------------------- tasks
# Module-level functions: they run on the workers.


def _csr_shard(parts: list[Any]) -> sp.csr_matrix:
    """Stack a worker's row blocks (CSR or dense) into one CSR float64 matrix."""
    blocks = [sp.csr_matrix(p, dtype=np.float64) for p in parts]
    X = blocks[0] if len(blocks) == 1 else sp.vstack(blocks, format="csr")
    X.sum_duplicates()
    X.sort_indices()
    return X


class Shard(NamedTuple):
    """A worker's documents and, per minibatch, what every pass needs of them.

    Built once per fit on the worker that holds the documents; every pass reuses it.
    """

    X: sp.csr_matrix
    batches: list[tuple[int, int]]  # row ranges of the minibatches
    words: list[np.ndarray]  # distinct global word ids of each minibatch
    cols: list[np.ndarray]  # each non-zero's row in the minibatch's word list
    indptrs: list[np.ndarray]  # int64 row pointers of each minibatch, from 0


def _make_shard(X: sp.csr_matrix, batch_size: int) -> Shard:
    """Split a CSR shard into minibatches and index their words (runs on the worker)."""
    batches = _minibatch_slices(X.shape[0], batch_size)
    words, cols, indptrs = [], [], []
    for a, b in batches:
        w, c = lda.minibatch_words(X.indices[X.indptr[a]:X.indptr[b]])
        words.append(w)
        cols.append(c)
        indptrs.append((X.indptr[a:b + 1] - X.indptr[a]).astype(np.int64))
    return Shard(X, batches, words, cols, indptrs)


def _prepare_shard_task(batch_size: int, *parts: Any) -> Shard:
    """Turn a worker's local row chunks into its shard (runs where they live)."""
    from dask_dpsgd._utils._validation import check_counts

    X = _csr_shard(list(parts))
    check_counts(X, "DPSVILatentDirichletAllocation.fit")
    return _make_shard(X, batch_size)


def _minibatch_slices(n_rows: int, batch_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch_size, n_rows)) for s in range(0, n_rows, batch_size)]


def _pass_task(server: Any, shard: Shard, worker: int, threads: int,
               cfg: DPSVIConfig, seed: Any, warmup_slots: tuple[int, ...] = ()
               ) -> dict[str, Any]:
    """One pass of one worker over its shard (see the module docstring).

    ``warmup_slots[i]`` is the global position of this worker's minibatch ``i`` in the
    synchronous warm-up: it is computed from parameters holding exactly the updates of
    the earlier positions (serial SVI), whichever worker made them.
    """
    numba.set_num_threads(threads)
    parallel = threads > 1
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    X, batches, words = shard.X, shard.batches, shard.words
    pusher = Pusher(server, worker, cfg.lag)
    # Parameters for upcoming minibatches, filled from push replies (module docstring).
    params: dict[int, tuple[int, Any]] = {}
    compute = 0.0
    for i, (a, b) in enumerate(batches):
        if i < len(warmup_slots):
            pusher.flush()
            base_version, (lam_rows, rowsums) = server.pull_after(
                warmup_slots[i], words[i]).result()
        elif i in params:
            base_version, (lam_rows, rowsums) = params.pop(i)
        else:
            # Nothing prefetched yet (start of a pass, end of the warm-up): wait for the
            # push in flight so the pull sees it, as a lag-0 reply would.
            reply = pusher.flush()
            if reply is not None and len(reply) == 3:  # it prefetched minibatch i + 1
                params[i + 1] = (reply[1], reply[2])
            base_version, (lam_rows, rowsums) = server.pull(words[i]).result()
        tc = time.perf_counter()
        exp_beta = lda.exp_elog_beta_rows(lam_rows, rowsums)
        cnts = X.data[X.indptr[a]:X.indptr[b]]
        gamma = lda.init_gamma(rng, b - a, cfg.n_components)
        sstats = lda.run_estep(shard.indptrs[i], shard.cols[i], cnts, exp_beta, gamma,
                               cfg.doc_topic_prior, cfg.max_doc_update_iter,
                               cfg.mean_change_tol, True, parallel)
        compute += time.perf_counter() - tc
        ahead = i + 1 + cfg.lag
        # In the warm-up the next minibatch's parameters come from pull_after instead.
        warm_next = i + 1 < len(warmup_slots)
        request = words[ahead] if ahead < len(batches) and not warm_next else None
        reply = pusher.send((words[i], sstats, b - a), base_version, request)
        # The reply carries the parameters for minibatch i + 1 (lag 0: this push's
        # reply; lag 1: the previous push's, which asked for i + 1).
        if reply is not None and len(reply) == 3:
            params[i + 1] = (reply[1], reply[2])
    pusher.flush()
    return {
        "worker": worker,
        "docs": X.shape[0],
        "tokens": float(X.data.sum()),
        "pushes_sent": pusher.n_sent,
        "pushes_applied": pusher.n_applied,
        "pushes_rejected": pusher.n_rejected,
        "compute_s": compute,
        "wait_s": pusher.wait_seconds,
        "elapsed_s": time.perf_counter() - t0,
    }


def _bound_task(server: Any, shard: Shard, threads: int,
                cfg: DPSVIConfig) -> tuple[float, float]:
    """Document part of the bound and the token count of a shard at current lambda."""
    numba.set_num_threads(threads)
    X = shard.X
    if X.shape[0] == 0:
        return 0.0, 0.0
    words, cols = lda.minibatch_words(X.indices)
    _, (lam_rows, rowsums) = server.pull(words).result()
    exp_beta = lda.exp_elog_beta_rows(lam_rows, rowsums)
    gamma = np.ones((X.shape[0], cfg.n_components))
    indptr = X.indptr.astype(np.int64)
    lda.run_estep(indptr, cols, X.data, exp_beta, gamma, cfg.doc_topic_prior,
                  cfg.max_doc_update_iter, cfg.mean_change_tol, False, threads > 1)
    elog_beta = lda.elog_beta_rows(lam_rows, rowsums)
    part = lda.doc_bound(indptr, cols, X.data, gamma, elog_beta, cfg.doc_topic_prior)
    return part, float(X.data.sum())


# ------------------------------------------------------------------------- driver


def _shard_rows(n_rows: int, batch_size: int, n_workers: int) -> list[np.ndarray]:
    """Minibatch ``b`` of the row order goes to worker ``b % n_workers``.

    Interleaving keeps the global order of minibatches close to the serial order that
    scikit-learn follows, and with one worker it is exactly that order.
    """
    rows: list[list[np.ndarray]] = [[] for _ in range(n_workers)]
    for b, (s, e) in enumerate(_minibatch_slices(n_rows, batch_size)):
        rows[b % n_workers].append(np.arange(s, e))
    return [np.concatenate(r) if r else np.arange(0) for r in rows]


def warmup_schedule(n_rows: list[int], batch_size: int, n_warmup: int
                    ) -> list[tuple[int, ...]]:
    """Global positions of each worker's first minibatches in the synchronous warm-up.

    Minibatches are taken round-robin over the workers that still have some (the order
    :func:`_shard_rows` gives a CSR corpus), and the first ``n_warmup`` positions are
    kept.

    Parameters
    ----------
    n_rows : list of int
        Documents in each worker's shard.
    batch_size : int
    n_warmup : int
        Updates in the warm-up.

    Returns
    -------
    list of tuple of int
        For each worker, the positions of its minibatches 0, 1, ... in the warm-up.
    """
    counts = [-(-n // batch_size) for n in n_rows]
    slots: list[list[int]] = [[] for _ in n_rows]
    g = 0
    for i in range(max(counts, default=0)):
        for w, c in enumerate(counts):
            if i < c and g < n_warmup:
                slots[w].append(g)
                g += 1
    return [tuple(s) for s in slots]


def place_shards(handle: ClusterHandle, X: Any, batch_size: int
                 ) -> tuple[list[Any], list[int]]:
    """Put one CSR shard on each worker; returns their futures (worker order).

    Parameters
    ----------
    handle : ClusterHandle
    X : scipy.sparse.csr_matrix or dask.array.Array
        Validated counts. A Dask array's row chunks stay on the workers that hold them:
        each chunk is assigned to the worker it lives on (or the least loaded worker of
        this fit when it lives elsewhere) and stacked there.
    batch_size : int

    Returns
    -------
    futures : list of distributed.Future
    n_rows : list of int
        Documents in each shard.
    """
    client = handle.client
    addrs = [s.address for s in handle.slots]
    token = uuid.uuid4().hex[:8]
    if sp.issparse(X):
        shards = _shard_rows(X.shape[0], batch_size, len(addrs))
        futures = []
        for w, (rows, addr) in enumerate(zip(shards, addrs, strict=True)):
            data = client.scatter(X[rows], workers=[addr], direct=True, hash=False)
            futures.append(client.submit(_make_shard, data, batch_size,
                                         key=f"dpsvi-shard-w{w}-{token}",
                                         workers=[addr], allow_other_workers=False,
                                         pure=False))
        _gather_round_errors(futures)
        return futures, [len(r) for r in shards]
    # Dask array: persist its chunks, find where they live, stack locally.
    X = X.rechunk({1: -1}).persist()
    chunk_futures = distributed.futures_of(X)
    chunk_futures.sort(key=lambda f: f.key)  # keys are (name, i, 0): row order
    who = client.who_has(chunk_futures)
    per_worker: dict[str, list[Any]] = {a: [] for a in addrs}
    for f in chunk_futures:
        holders = [a for a in who.get(f.key, ()) if a in per_worker]
        target = holders[0] if holders else min(per_worker, key=lambda a: len(per_worker[a]))
        per_worker[target].append(f)
    futures = []
    for w, addr in enumerate(addrs):
        futures.append(client.submit(_prepare_shard_task, batch_size, *per_worker[addr],
                                     key=f"dpsvi-shard-w{w}-{token}", workers=[addr],
                                     allow_other_workers=False, pure=False))
    _gather_round_errors(futures)
    sizes = client.gather([client.submit(_n_rows, f, workers=[a], pure=False)
                           for f, a in zip(futures, addrs, strict=True)])
    return futures, list(sizes)


def _n_rows(shard: Shard) -> int:
    return int(shard.X.shape[0])


def _gather_round_errors(futures: list[Any]) -> None:
    """Wait for futures that stay on the workers; raise the first error."""
    distributed.wait(futures)
    for f in futures:
        if f.status == "error":
            f.result()  # raises the worker's error (e.g. negative counts)


def _gather_round(futures: list[Any]) -> list[Any]:
    """Wait for one round of tasks; raise the first error at once, cancelling the rest."""
    pending = list(futures)
    while pending:
        distributed.wait(pending, return_when="FIRST_COMPLETED")
        for f in pending:
            if f.status in ("error", "cancelled"):
                others = [g for g in futures if g is not f]
                if others:
                    f.client.cancel(others)
                f.result()  # raises the worker's exception here, promptly
        pending = [f for f in pending if not f.done()]
    return [f.result() for f in futures]


def _run_dpsvi(handle: ClusterHandle, shards: list[Any], lam0: np.ndarray,
              cfg: DPSVIConfig, *, warmup: list[tuple[int, ...]], n_passes: int,
              first_step: int,
              evaluate_every: int, perp_tol: float, entropy: int,
              max_staleness: int | None, compute_train_bound: bool,
              progress: Any = None) -> DPSVIResult:
    """Train ``lambda`` by DPSVI on the shards already placed on the workers (in a span).

    Parameters
    ----------
    handle : ClusterHandle
    shards : list of distributed.Future
        One CSR shard per worker (:func:`place_shards`).
    warmup : list of tuple of int
        Each worker's warm-up positions in the first pass (:func:`warmup_schedule`).
    lam0 : ndarray of float64, shape (V, K)
        Initial ``lambda`` (word-major).
    cfg : DPSVIConfig
    first_step : int
        ``t`` of the first SVI step (``n_batch_iter_``).
    n_passes : int
        Passes over the corpus (``max_iter``).
    evaluate_every : int
        Evaluate the training perplexity every this many passes (<= 0: never) and stop
        when it changes by less than ``perp_tol``.
    perp_tol : float
    entropy : int
        Seed of the ``SeedSequence`` from which every (pass, worker) stream is spawned.
    max_staleness : int or None
        Server-side staleness bound.
    compute_train_bound : bool
        Evaluate the training perplexity after the last pass (scikit-learn's ``bound_``).
    progress : callable or None
        Called with each pass's history record.

    Returns
    -------
    DPSVIResult
    """
    client = handle.client
    token = uuid.uuid4().hex[:8]
    slots = handle.slots
    server_future = client.submit(
        ParameterServer, "svi",
        {"lam": lam0, "eta": cfg.topic_word_prior,
         "learning_offset": cfg.learning_offset, "learning_decay": cfg.learning_decay,
         "total_samples": cfg.total_samples, "first_step": first_step},
        max_staleness, actor=True, workers=[slots[0].address],
        allow_other_workers=False, key=f"dpsvi-server-{token}")
    server = server_future.result()
    seeds = np.random.SeedSequence(entropy)
    history: list[dict[str, Any]] = []
    sent = 0
    last_perp = None
    n_done = 0
    t_start = time.perf_counter()
    try:
        for p in range(n_passes):
            pass_seeds = seeds.spawn(len(slots))
            t0 = time.perf_counter()
            futures = [
                client.submit(_pass_task, server, shards[w], w, s.threads, cfg,
                              pass_seeds[w], warmup[w] if p == 0 else (),
                              key=f"dpsvi-pass-{p}-w{w}-{token}",
                              workers=[s.address], allow_other_workers=False,
                              pure=False)
                for w, s in enumerate(slots)
            ]
            results = _gather_round(futures)
            n_done += 1
            elapsed = time.perf_counter() - t0
            sent += sum(r["pushes_sent"] for r in results)
            stats = server.stats().result()
            docs = sum(r["docs"] for r in results)
            record: dict[str, Any] = {
                "pass": n_done,
                "time/elapsed_s": time.perf_counter() - t_start,
                "time/pass_s": elapsed,
                "time/docs_per_s": docs / elapsed if elapsed > 0 else float("nan"),
                "time/compute_s": sum(r["compute_s"] for r in results),
                "time/wait_s": sum(r["wait_s"] for r in results),
                "train/updates": stats["n_applied"],
                "train/staleness_mean": stats["staleness_mean"],
                "train/staleness_max": stats["staleness_max"],
                "comm/bytes_pushed": stats["bytes_pushed"],
                "comm/bytes_pulled": stats["bytes_pulled"],
            }
            stop = False
            if evaluate_every > 0 and n_done % evaluate_every == 0:
                perp = _train_perplexity(handle, server, shards, cfg, token, f"e{p}")
                record["train/perplexity"] = perp
                if last_perp is not None and abs(last_perp - perp) < perp_tol:
                    stop = True
                last_perp = perp
            history.append(record)
            if progress is not None:
                progress(record)
            if stop:
                break
        train_perp = None
        if compute_train_bound:
            train_perp = _train_perplexity(handle, server, shards, cfg, token, "final")
        stats = server.stats().result()
        hist = server.staleness_histogram().result()
        version, snap = server.snapshot().result()
    finally:
        client.cancel([server_future])
        del server
    return DPSVIResult(
        lam=snap["lambda"], n_updates=version, n_passes=n_done, history=history,
        stats=stats, staleness_histogram=hist, train_perplexity=train_perp,
        pushes_sent=sent)


def run_dpsvi(handle: ClusterHandle, *args: Any, **kwargs: Any) -> DPSVIResult:
    """Train ``lambda`` by DPSVI; parameters as :func:`_run_dpsvi`.

    Every task of the fit (parameter server, passes, bounds) belongs to one Dask span,
    ``dpsvi-fit``, so the dashboard groups them and reports their metrics together.
    """
    with distributed.span("dpsvi-fit"):
        return _run_dpsvi(handle, *args, **kwargs)


def _train_perplexity(handle: ClusterHandle, server: Any, shards: list[Any],
                      cfg: DPSVIConfig, token: str, tag: str) -> float:
    """Training perplexity at the server's current ``lambda`` (scikit-learn's ``bound_``)."""
    client = handle.client
    futures = [
        client.submit(_bound_task, server, shards[w], s.threads, cfg,
                      key=f"dpsvi-bound-{tag}-w{w}-{token}", workers=[s.address],
                      allow_other_workers=False, pure=False)
        for w, s in enumerate(handle.slots)
    ]
    parts = _gather_round(futures)
    _, snap = server.snapshot().result()
    score = sum(p[0] for p in parts) + lda.topic_word_bound(snap["lambda"],
                                                             cfg.topic_word_prior)
    tokens = sum(p[1] for p in parts)
    return float(np.exp(-score / tokens))
