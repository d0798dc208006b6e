"""DPSVI: LDA by distributed/parallel stochastic variational inference on Dask.

Layout of one fit (docs/design.rst, "DPSVI"):

* worker 0 holds the :class:`~dask_dpsgd._server.actor.ParameterServer` actor with the
  global ``lambda`` under the SVI rule; worker 0's own tasks call it in memory
  (:func:`~dask_dpsgd._orchestration.pusher.reach`), the others over the network;
* every worker holds one shard of the documents, sent once (scattered to it, or, for a
  Dask array, the row chunks it already holds) and reused by every pass;
* a pass is one ordinary Dask task per worker (key ``dpsvi-pass-<p>-w<w>``, so it shows
  in the dashboard's task stream). The task walks its shard in minibatches: pull the
  minibatch's rows of ``lambda`` and the topic sums, run the E-step over numba's threads,
  push the sparse sufficient statistics through a :class:`Pusher` (one awaited call in
  flight), with the documents part of the minibatch's bound that the E-step found
  along the way (:class:`BoundMeter`), and go on. Workers never wait for each other
  inside a pass; the server applies pushes in arrival order and records each one's
  staleness.
* the first ``warmup_updates`` SVI steps of a model are synchronous: each is a
  minibatch's worth of documents in equal shares from every worker, computed in
  parallel from the same ``lambda`` and added up by the server into one step
  (:func:`warmup_schedule`);
* passes are separated by a barrier: that is where progress is reported, the training
  bound is evaluated (``evaluate_every``) and a failing task stops the fit.

This module holds no arithmetic: kernels do the maths, the server state does the update.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any, NamedTuple

import distributed
import numba
import numpy as np
import scipy.sparse as sp

from dask_dpsgd._kernels import lda
from dask_dpsgd._orchestration.cluster import (
    ClusterHandle,
    WorkerLostError,
    lost_workers,
)
from dask_dpsgd._orchestration.live import LiveMetrics
from dask_dpsgd._orchestration.pusher import Pusher, abandoned, await_reply, reach
from dask_dpsgd._orchestration.serving import (
    ServerWatch,
    counts_record,
    loss_event,
    merge_counts,
    merge_histograms,
    serving,
    start_server,
)

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
    n_batch_iter: int  # t of the next SVI step (scikit-learn's n_batch_iter_)
    n_passes: int  # passes done, counting those before a resume
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


def _index_rows(X: sp.csr_matrix, a: int, b: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct words, each non-zero's row in them, and row pointers of rows ``a:b``."""
    words, cols = lda.minibatch_words(X.indices[X.indptr[a]:X.indptr[b]])
    return words, cols, (X.indptr[a:b + 1] - X.indptr[a]).astype(np.int64)


def _make_shard(X: sp.csr_matrix, batch_size: int) -> Shard:
    """Split a CSR shard into minibatches and index their words (runs on the worker)."""
    batches = _minibatch_slices(X.shape[0], batch_size)
    words, cols, indptrs = [], [], []
    for a, b in batches:
        w, c, p = _index_rows(X, a, b)
        words.append(w)
        cols.append(c)
        indptrs.append(p)
    return Shard(X, batches, words, cols, indptrs)


def _prepare_shard_task(batch_size: int, *parts: Any) -> Shard:
    """Turn a worker's local row chunks into its shard (runs where they live)."""
    from dask_dpsgd._utils._validation import check_counts

    X = _csr_shard(list(parts))
    check_counts(X, "DPSVILatentDirichletAllocation.fit")
    return _make_shard(X, batch_size)


def _minibatch_slices(n_rows: int, batch_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch_size, n_rows)) for s in range(0, n_rows, batch_size)]


class WarmPart(NamedTuple):
    """A worker's share of one update of the synchronous warm-up (:func:`warmup_schedule`).

    Attributes
    ----------
    batch : int
        The worker's minibatch the share is cut from.
    rows : tuple of int
        Its rows ``(start, stop)`` in the worker's shard.
    after : int
        Pushes the server must have received before the share is computed: every part
        of every earlier warm-up update.
    slot : int
        The warm-up update (0, 1, ...) the share belongs to.
    n_parts : int
        Shares (workers) making up that update.
    """

    batch: int
    rows: tuple[int, int]
    after: int
    slot: int
    n_parts: int


def _pass_task(server: Any, shard: Shard, worker: int, threads: int,
               cfg: DPSVIConfig, seed: Any, warmup: tuple[WarmPart, ...] = (),
               token: str = "") -> dict[str, Any]:
    """One pass of one worker over its shard (see the module docstring).

    ``warmup`` lists this worker's shares of the synchronous warm-up, computed first:
    each from parameters holding exactly the earlier warm-up updates (serial SVI),
    pushed as a part of its update; the workers' shares of one update are computed in
    parallel. The pass then goes on asynchronously from the minibatch after the last
    one the warm-up used.
    """
    numba.set_num_threads(threads)
    server = reach(server)
    parallel = threads > 1
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    X, batches, words = shard.X, shard.batches, shard.words

    def aborted() -> bool:
        return abandoned(token)

    pusher = Pusher(server, worker, cfg.lag, aborted)
    compute = 0.0
    workspace = lda.EStepWorkspace()  # the pass's E-step buffers, reused per minibatch
    # Minibatch i's statistics go to buffer i % 2, reused (no fresh 1 MB array's page
    # faults and copy per minibatch: 1-3% of a pass, measured on NIPS with K=20, serial
    # and 1x2 alike). Safe: when minibatch i is computed, the push of i - 2 has had its
    # reply (one push in flight, lag <= 1), and the server keeps no reference to a push
    # it has replied to (ParameterServer's contract). Warm-up parts wait on the server
    # for the other workers' parts, so they get fresh arrays.
    ring = lda.EStepWorkspace()

    def estep(rows: tuple[int, int], lam_rows: np.ndarray, rowsums: np.ndarray,
              cols: np.ndarray, indptr: np.ndarray, slot: int | None
              ) -> tuple[np.ndarray, tuple[float, float]]:
        """The minibatch's statistics and ``(documents part of its bound, tokens)``,
        pushed with them for the live metrics (``SVIRule``)."""
        nonlocal compute
        tc = time.perf_counter()
        a, b = rows
        out = (None if slot is None
               else ring.get(f"sstats{slot}", (lam_rows.shape[0] * cfg.n_components,)))
        exp_beta = lda.exp_elog_beta_rows(lam_rows, rowsums, workspace)
        gamma = lda.init_gamma(rng, b - a, cfg.n_components)
        cnts = X.data[X.indptr[a]:X.indptr[b]]
        sstats, bound = lda.run_estep(indptr, cols, cnts, exp_beta, gamma,
                                      cfg.doc_topic_prior, cfg.max_doc_update_iter,
                                      cfg.mean_change_tol, True, parallel, workspace,
                                      out, return_bound=True)
        compute += time.perf_counter() - tc
        return sstats, (bound, float(cnts.sum()))

    for part in warmup:
        a, b = part.rows
        if (a, b) == batches[part.batch]:  # the whole minibatch: indexed already
            w_ids, cols, indptr = (words[part.batch], shard.cols[part.batch],
                                   shard.indptrs[part.batch])
        else:
            w_ids, cols, indptr = _index_rows(X, a, b)
        pusher.flush()
        base_version, (lam_rows, rowsums) = await_reply(
            server.pull_after(part.after, w_ids), aborted)
        sstats, bound = estep(part.rows, lam_rows, rowsums, cols, indptr, None)
        pusher.send((w_ids, sstats, b - a, bound), base_version,
                    part=(part.slot, part.n_parts))
    first = warmup[-1].batch + 1 if warmup else 0
    # Parameters for upcoming minibatches, filled from push replies (module docstring).
    params: dict[int, tuple[int, Any]] = {}
    for i in range(first, len(batches)):
        if i in params:
            base_version, (lam_rows, rowsums) = params.pop(i)
        else:
            # Nothing prefetched yet (start of a pass, end of the warm-up): wait for the
            # push in flight so the pull sees it, as a lag-0 reply would.
            reply = pusher.flush()
            if reply is not None and len(reply) == 3:  # it prefetched minibatch i + 1
                params[i + 1] = (reply[1], reply[2])
            base_version, (lam_rows, rowsums) = await_reply(server.pull(words[i]),
                                                            aborted)
        a, b = batches[i]
        sstats, bound = estep(batches[i], lam_rows, rowsums, shard.cols[i],
                              shard.indptrs[i], i % 2)
        ahead = i + 1 + cfg.lag
        request = words[ahead] if ahead < len(batches) else None
        reply = pusher.send((words[i], sstats, b - a, bound), base_version, request)
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
    server = reach(server)
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

#: History/live-metrics key of the minibatch per-word bound (:class:`BoundMeter`).
BOUND_KEY = "train/minibatch_bound_per_word"


class BoundMeter:
    """The minibatch per-word bound of a segment, from the server's reported sums.

    Each push carries the documents part of its minibatch's variational bound, as the
    worker's E-step found it at the parameters it pulled (before the server applies
    the push: in the first pass, the minibatch has not been trained on yet), and the
    minibatch's tokens; the server adds them up over the applied updates
    (``SVIRule.progress``). The ratio of two differences of those sums is the bound per
    token of the minibatches applied in between:

    * :meth:`end_pass`: over the pass just finished (``history_``);
    * :meth:`live`: over those applied since the previous live record (the dashboard's
      curve), the last value again when none was.

    ``None`` until the first minibatch with a bound is applied. A new segment (a
    recovery's new server, whose sums start at 0) takes a new meter.
    """

    def __init__(self) -> None:
        self._pass_mark = (0.0, 0.0)
        self._live_mark = (0.0, 0.0)
        self._live_last: float | None = None

    @staticmethod
    def _sums(reported: dict[str, Any]) -> tuple[float, float]:
        return float(reported["bound_sum"]), float(reported["bound_tokens"])

    @staticmethod
    def _per_word(now: tuple[float, float], mark: tuple[float, float]) -> float | None:
        tokens = now[1] - mark[1]
        return (now[0] - mark[0]) / tokens if tokens > 0 else None

    def end_pass(self, reported: dict[str, Any]) -> float | None:
        """Bound per token over the minibatches applied since the last call."""
        now = self._sums(reported)
        value = self._per_word(now, self._pass_mark)
        self._pass_mark = now
        return value

    def live(self, reported: dict[str, Any]) -> float | None:
        """Bound per token since the previous live value (or that value again)."""
        now = self._sums(reported)
        value = self._per_word(now, self._live_mark)
        if value is not None:
            self._live_mark = now
            self._live_last = value
        return self._live_last


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
                    ) -> list[tuple[WarmPart, ...]]:
    """Each worker's shares of the synchronous warm-up's updates.

    The warm-up takes each worker's first ``ceil(n_warmup / M)`` minibatches (``M``
    workers; fewer if its shard has fewer). The ``P`` workers that have an ``i``-th
    minibatch cut it into ``P`` near-equal shares (unless one has fewer than ``P``
    documents: then each of those minibatches is an update of its own, in turn), and
    the warm-up's updates for row ``i`` are ``j = 0 .. P - 1``: share ``j`` of each of
    them, about a minibatch's worth of documents drawn from all the shards, whose
    E-step the workers compute in parallel from the same parameters. So the warm-up is
    serial SVI (each update sees every earlier one, as many updates as minibatches)
    without running on one worker at a time; it makes at least ``n_warmup`` updates
    (rounded up to whole minibatches per worker). With one worker, update ``i`` is
    minibatch ``i``.

    Parameters
    ----------
    n_rows : list of int
        Documents in each worker's shard.
    batch_size : int
    n_warmup : int
        Updates wanted in the warm-up (0: none).

    Returns
    -------
    list of tuple of WarmPart
        For each worker, its shares in the order it computes them.
    """
    n_workers = len(n_rows)
    if n_warmup <= 0 or n_workers == 0:
        return [() for _ in n_rows]
    per_worker = -(-n_warmup // n_workers)
    batches = [_minibatch_slices(n, batch_size)[:per_worker] for n in n_rows]
    slots: dict[tuple[int, int], list[tuple[int, int, tuple[int, int]]]] = {}
    for i in range(per_worker):
        # The workers with an i-th minibatch each cut it into that many shares.
        having = [w for w in range(n_workers) if i < len(batches[w])]
        if not having:
            break
        if min(batches[w][i][1] - batches[w][i][0] for w in having) < len(having):
            # A minibatch too small to share: each is an update of its own (in turn).
            for j, w in enumerate(having):
                slots[(i, j)] = [(w, i, batches[w][i])]
            continue
        for w in having:
            a, b = batches[w][i]
            cuts = [a + (b - a) * j // len(having) for j in range(len(having) + 1)]
            for j in range(len(having)):
                slots.setdefault((i, j), []).append((w, i, (cuts[j], cuts[j + 1])))
    out: list[list[WarmPart]] = [[] for _ in n_rows]
    after = 0
    for g, key in enumerate(sorted(slots)):
        shares = slots[key]
        for w, i, rows in shares:
            out[w].append(WarmPart(i, rows, after, g, len(shares)))
        after += len(shares)
    return [tuple(o) for o in out]


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
        _gather_round(futures, addrs)
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
    _gather_round(futures, addrs)
    sizes = _gather_round([client.submit(_n_rows, f, workers=[a], pure=False)
                           for f, a in zip(futures, addrs, strict=True)], addrs)
    return futures, list(sizes)


def _n_rows(shard: Shard) -> int:
    return int(shard.X.shape[0])


def _gather_round(futures: list[Any], addresses: list[str] | None = None,
                  poll: float = 1.0, on_poll: Any = None) -> list[Any]:
    """Wait for one round of tasks; raise the first error at once, cancelling the rest.

    Tasks are pinned to their workers, so a task whose worker died would wait forever
    for it: every ``poll`` seconds the workers in ``addresses`` are checked, and a lost
    one raises :class:`WorkerLostError` (as does an error explained by a lost worker,
    e.g. the parameter server's worker gone). ``on_poll()``, if given, is called at
    each check that found every worker alive (updates-lost watch, live metrics).
    """
    client = futures[0].client
    addresses = addresses or []
    pending = list(futures)
    while pending:
        try:
            distributed.wait(pending, timeout=poll, return_when="FIRST_COMPLETED")
        except distributed.TimeoutError:
            pass
        except CancelledError:
            # The scheduler forgets the tasks of a worker that died (wait raises
            # FuturesCancelledError): look at who is gone below.
            pass
        failed = [f for f in pending if f.status in ("error", "cancelled")]
        lost = lost_workers(client, addresses) if (failed or addresses) else []
        if failed or lost:
            client.cancel([g for g in futures if g.status == "pending"])
            if lost:
                raise WorkerLostError(lost)
            failed[0].result()  # raises the worker's exception here, promptly
        pending = [f for f in pending if not f.done()]
        if pending and on_poll is not None:
            on_poll()
    return [f.result() for f in futures]


@dataclass(slots=True)
class _Checkpoint:
    """Driver-side state at the last checkpoint (what a recovery restarts from)."""

    lam: np.ndarray
    raw: dict[str, np.ndarray] | None  # the server's exact internal state, if known
    step: int  # n_batch_iter: t of the next SVI step
    passes_done: int  # absolute pass count
    pushes_sent: int = 0
    counts: dict[str, int] | None = None  # server counters summed over segments
    histogram: np.ndarray | None = None
    history: list[dict[str, Any]] | None = None


def fit_dpsvi(handle: ClusterHandle, X: Any, lam0: np.ndarray, cfg: DPSVIConfig, *,
              first_step: int, start_pass: int, n_passes: int, warmup_updates: int,
              evaluate_every: int, perp_tol: float, entropy: int,
              max_staleness: int | None, compute_train_bound: bool,
              progress: Any = None, on_checkpoint: Any = None,
              raw0: dict[str, np.ndarray] | None = None,
              max_recoveries: int = 3, live: LiveMetrics | None = None,
              checkpoint_every: int = 1
              ) -> tuple[DPSVIResult, list[dict[str, Any]]]:
    """Place the shards and train, recovering from lost workers.

    After every ``checkpoint_every`` passes (and the last) the driver keeps ``lambda``
    and the counters (an in-memory checkpoint; ``on_checkpoint(lam, raw, step,
    passes_done)`` may also write it to a file; ``raw`` is the server's exact internal
    state, given back as ``raw0``). When a worker is lost (including the one holding the
    parameter-server actor, which Dask does not restart: docs/design.rst, "Lost
    workers"), the fit
    resumes on the workers left: shards are placed again, a new actor starts from the
    checkpoint, and the passes since are run again; their updates before the failure
    are discarded and reported.

    Parameters
    ----------
    handle : ClusterHandle
    X : scipy.sparse.csr_matrix or dask.array.Array
    lam0 : ndarray of float64, shape (V, K)
    cfg : DPSVIConfig
    first_step : int
        ``t`` of the first SVI step.
    start_pass : int
        Passes already done (non-zero when resuming from a checkpoint file).
    n_passes : int
        Total passes wanted (``max_iter``), counting ``start_pass``.
    warmup_updates : int
        Synchronous warm-up updates counted from the model's first update.
    evaluate_every, perp_tol, entropy, max_staleness, compute_train_bound, progress
        As in :func:`_run_passes`.
    on_checkpoint : callable or None
    max_recoveries : int
        Lost-worker recoveries allowed before giving up.
    live : LiveMetrics or None
        Publisher of the dashboard's live metrics (see :func:`_run_passes`).

    Returns
    -------
    result : DPSVIResult
    events : list of dict
        One record per recovery.
    """
    ckpt = _Checkpoint(lam=lam0, raw=raw0, step=first_step, passes_done=start_pass,
                       counts={},
                       histogram=np.zeros(0, dtype=np.int64), history=[])
    events: list[dict[str, Any]] = []
    while True:
        try:
            try:
                shards, n_rows = place_shards(handle, X, cfg.batch_size)
            except WorkerLostError:
                raise
            except Exception as exc:  # a scatter to a worker that just died, ...
                lost = lost_workers(handle.client, [s.address for s in handle.slots])
                if lost:
                    raise WorkerLostError(lost) from exc
                raise
            n_warm = max(0, warmup_updates - (ckpt.step - 1))
            warmup = warmup_schedule(n_rows, cfg.batch_size, n_warm)
            with distributed.span("dpsvi-fit"):
                result = _run_passes(
                    handle, shards, ckpt, cfg, warmup=warmup, n_passes=n_passes,
                    evaluate_every=evaluate_every, perp_tol=perp_tol, entropy=entropy,
                    max_staleness=max_staleness,
                    compute_train_bound=compute_train_bound, progress=progress,
                    on_checkpoint=on_checkpoint, live=live,
                    checkpoint_every=checkpoint_every)
            return result, events
        except WorkerLostError as exc:
            if len(events) >= max_recoveries:
                raise
            survivors = [s for s in handle.slots if s.address not in exc.addresses]
            if not survivors:
                raise RuntimeError("every worker of the fit was lost; nothing left to "
                                   "continue on") from exc
            logger.warning("dask-dpsgd: %s; resuming from pass %d on %d worker(s), "
                           "%d update(s) lost", exc, ckpt.passes_done, len(survivors),
                           exc.updates_lost)
            events.append(loss_event(exc, len(survivors),
                                     resumed_from_pass=ckpt.passes_done,
                                     resumed_at_update=ckpt.step - first_step))
            handle = ClusterHandle(handle.client, handle.owned, tuple(survivors),
                                   handle.dashboard_link)


def _run_passes(handle: ClusterHandle, shards: list[Any], ckpt: _Checkpoint,
                cfg: DPSVIConfig, *, warmup: list[tuple[WarmPart, ...]], n_passes: int,
                evaluate_every: int, perp_tol: float, entropy: int,
                max_staleness: int | None, compute_train_bound: bool,
                progress: Any = None, on_checkpoint: Any = None,
                live: LiveMetrics | None = None,
                checkpoint_every: int = 1) -> DPSVIResult:
    """Passes ``ckpt.passes_done .. n_passes - 1`` on the placed shards.

    Parameters
    ----------
    handle : ClusterHandle
    shards : list of distributed.Future
        One shard per worker (:func:`place_shards`).
    ckpt : _Checkpoint
        Where to start; updated in place after every pass.
    cfg : DPSVIConfig
    warmup : list of tuple of WarmPart
        Each worker's warm-up shares in the first pass run here (:func:`warmup_schedule`).
    n_passes : int
        Total passes (absolute).
    evaluate_every : int
        Evaluate the training perplexity every this many passes (<= 0: never) and stop
        when it changes by less than ``perp_tol``.
    perp_tol : float
    entropy : int
        Root seed: pass ``p``, worker ``w`` draws from ``SeedSequence(entropy,
        spawn_key=(p, w))``, so a resumed fit repeats an uninterrupted one's streams.
    max_staleness : int or None
    compute_train_bound : bool
        Evaluate the training perplexity after the last pass (scikit-learn's ``bound_``).
    progress, on_checkpoint : callable or None
    live : LiveMetrics or None
        Gets every pass's record and, during a pass, the server's counters about once
        a second (two actor calls, only when a record is due: counters and reported
        bounds), with the perplexity of the last evaluated pass and the minibatch
        per-word bound (:class:`BoundMeter`): what the dashboard's live page plots.

    Returns
    -------
    DPSVIResult
    """
    client = handle.client
    token = uuid.uuid4().hex[:8]
    slots = handle.slots
    addresses = [s.address for s in slots]
    first_step = ckpt.step
    server_future, server = start_server(
        client, "svi",
        {"lam": ckpt.lam, "eta": cfg.topic_word_prior,
         "learning_offset": cfg.learning_offset, "learning_decay": cfg.learning_decay,
         "total_samples": cfg.total_samples, "first_step": first_step,
         "raw": ckpt.raw},
        max_staleness, slots[0].address, f"dpsvi-server-{token}")
    last_perp = None
    t_start = time.perf_counter()
    base_counts = dict(ckpt.counts or {})
    base_hist = ckpt.histogram if ckpt.histogram is not None else np.zeros(0, np.int64)

    def totals(stats: dict[str, Any], hist: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
        return merge_counts(base_counts, stats), merge_histograms(base_hist, hist)

    watch = ServerWatch()
    meter = BoundMeter()

    def poll(passes_done: int, server: Any = server) -> None:
        # Mid-pass: the server's counters, for a lower bound on the updates a loss of
        # its worker would discard, and for the dashboard (no bound is computed: the
        # minibatch bound is what the workers' E-steps reported with their pushes).
        try:
            stats = server.stats().result(timeout=2)
        except Exception:  # noqa: BLE001 - its worker may be dying; the check follows
            return
        watch.seen(stats["version"])
        if live is not None and live.due():
            record = {"pass": passes_done,
                      **counts_record(merge_counts(base_counts, stats))}
            if last_perp is not None:
                record["train/perplexity"] = last_perp
            try:
                bound = meter.live(server.progress().result(timeout=2))
            except Exception:  # noqa: BLE001 - as above
                bound = None
            if bound is not None:
                record[BOUND_KEY] = bound
            live.publish(record)

    start = ckpt.passes_done
    pending: list[dict[str, Any]] = []  # records of the passes since the last checkpoint
    pending_sent = 0
    with serving(client, addresses, token, server_future, server, watch):
        for p in range(ckpt.passes_done, n_passes):
            t0 = time.perf_counter()
            futures = [
                client.submit(_pass_task, server, shards[w], w, s.threads, cfg,
                              np.random.SeedSequence(entropy, spawn_key=(p, w)),
                              warmup[w] if p == start else (), token,
                              key=f"dpsvi-pass-{p}-w{w}-{token}",
                              workers=[s.address], allow_other_workers=False,
                              pure=False)
                for w, s in enumerate(slots)
            ]
            results = _gather_round(futures, addresses,
                                    on_poll=functools.partial(poll, p))
            elapsed = time.perf_counter() - t0
            stats = server.stats().result()
            hist = server.staleness_histogram().result()
            counts, merged = totals(stats, np.trim_zeros(hist, "b"))
            docs = sum(r["docs"] for r in results)
            record: dict[str, Any] = {
                "pass": p + 1,
                "time/elapsed_s": time.perf_counter() - t_start,
                "time/pass_s": elapsed,
                "time/docs_per_s": docs / elapsed if elapsed > 0 else float("nan"),
                "time/compute_s": sum(r["compute_s"] for r in results),
                "time/wait_s": sum(r["wait_s"] for r in results),
                **counts_record(counts),
            }
            reported = server.progress().result()
            bound = meter.end_pass(reported)
            if bound is not None:
                record[BOUND_KEY] = bound
            stop = False
            # The server's state after the pass, fetched once for the bound and the
            # checkpoint (nothing changes it in between).
            snapshot = None
            if evaluate_every > 0 and (p + 1) % evaluate_every == 0:
                snapshot = server.snapshot().result()
                perp = _train_perplexity(handle, server, shards, cfg, token, f"e{p}",
                                         snapshot[1]["lambda"])
                record["train/perplexity"] = perp
                if last_perp is not None and abs(last_perp - perp) < perp_tol:
                    stop = True
                last_perp = perp
            pending_sent += sum(r["pushes_sent"] for r in results)
            pending.append(record)
            if ((p + 1 - start) % checkpoint_every == 0 or p + 1 == n_passes or stop):
                # A checkpoint: what a recovery restarts from (the passes since the last
                # one are run again).
                version, snap = snapshot or server.snapshot().result()
                ckpt.lam = snap["lambda"]
                ckpt.raw = snap["raw"]
                ckpt.step = first_step + version
                watch.checkpoint(version)
                ckpt.passes_done = p + 1
                ckpt.pushes_sent += pending_sent
                ckpt.counts = counts
                ckpt.histogram = merged
                ckpt.history.extend(pending)
                pending, pending_sent = [], 0
                if on_checkpoint is not None:
                    on_checkpoint(ckpt.lam, ckpt.raw, ckpt.step, ckpt.passes_done)
            if progress is not None:
                progress(record)
            if live is not None:
                # The page's curve is per window, as between passes (BoundMeter).
                point = {k: v for k, v in record.items() if k != BOUND_KEY}
                bound = meter.live(reported)
                if bound is not None:
                    point[BOUND_KEY] = bound
                live.publish(point, force=True)
            if stop:
                break
        # The last pass ended with a checkpoint, so ckpt holds the server's final
        # lambda and step (the bound's tasks only read it).
        train_perp = None
        if compute_train_bound:
            train_perp = _train_perplexity(handle, server, shards, cfg, token, "final",
                                           ckpt.lam)
        stats = server.stats().result()
        hist = np.trim_zeros(server.staleness_histogram().result(), "b")
    del server
    counts, merged = totals(stats, hist)
    stats = {**stats, **counts,
             "staleness_mean": (counts["staleness_sum"] / counts["n_applied"]
                                if counts["n_applied"] else 0.0)}
    return DPSVIResult(
        lam=ckpt.lam, n_batch_iter=ckpt.step, n_passes=ckpt.passes_done,
        history=list(ckpt.history), stats=stats, staleness_histogram=merged,
        train_perplexity=train_perp, pushes_sent=ckpt.pushes_sent)


def _train_perplexity(handle: ClusterHandle, server: Any, shards: list[Any],
                      cfg: DPSVIConfig, token: str, tag: str, lam: np.ndarray) -> float:
    """Training perplexity at the server's current ``lambda`` (scikit-learn's ``bound_``).

    ``lam`` is that ``lambda`` (the caller's snapshot), for the topic-word term.
    """
    client = handle.client
    futures = [
        client.submit(_bound_task, server, shards[w], s.threads, cfg,
                      key=f"dpsvi-bound-{tag}-w{w}-{token}", workers=[s.address],
                      allow_other_workers=False, pure=False)
        for w, s in enumerate(handle.slots)
    ]
    parts = _gather_round(futures, [s.address for s in handle.slots])
    score = sum(p[0] for p in parts) + lda.topic_word_bound(lam, cfg.topic_word_prior)
    tokens = sum(p[1] for p in parts)
    return float(np.exp(-score / tokens))
