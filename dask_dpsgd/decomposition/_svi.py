"""DPSVI as an engine plug-in: LDA's stochastic variational inference, no Dask here.

The engine (:mod:`dask_dpsgd.engine`) places one shard of documents on each worker and
runs one round per pass (docs/design.rst, "DPSVI"). On a worker, :class:`SVIWorker`
walks its shard in minibatches: from the minibatch's rows of the topic-word parameters
``lambda`` and their column sums it runs the E-step over numba's threads and returns
the sparse sufficient statistics, with the documents part of the minibatch's bound
that the E-step found along the way (shown live by :class:`BoundMeter`). The server
applies them by the SVI step (:class:`~dask_dpsgd._server.state.SVIRule`).

The first ``warmup_updates`` SVI steps of a model are synchronous: each is a
minibatch's worth of documents in equal shares from every worker, computed in parallel
from the same ``lambda`` and added up by the server into one step
(:func:`warmup_schedule`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numba
import numpy as np
import scipy.sparse as sp

from dask_dpsgd._kernels import lda
from dask_dpsgd._server.state import SVIParams, SVIRule, SVIUpdate
from dask_dpsgd._utils._validation import check_counts
from dask_dpsgd.algorithm import AlgorithmBase, SyncPart, WorkerContext


@dataclass(frozen=True, slots=True)
class SVIConfig:
    """Hyper-parameters of DPSVI (plain values; shipped to every task).

    Attributes mirror :class:`~dask_dpsgd.DPSVILatentDirichletAllocation`;
    ``total_samples`` is ``D`` of the step ``D/|B|``.
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


def _minibatch_slices(n_rows: int, batch_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch_size, n_rows)) for s in range(0, n_rows, batch_size)]


def shard_rows(n_rows: int, batch_size: int, n_workers: int) -> list[np.ndarray]:
    """Minibatch ``b`` of the row order goes to worker ``b % n_workers``.

    Interleaving keeps the global order of minibatches close to the serial order that
    scikit-learn follows, and with one worker it is exactly that order.
    """
    rows: list[list[np.ndarray]] = [[] for _ in range(n_workers)]
    for b, (s, e) in enumerate(_minibatch_slices(n_rows, batch_size)):
        rows[b % n_workers].append(np.arange(s, e))
    return [np.concatenate(r) if r else np.arange(0) for r in rows]


@dataclass(frozen=True, eq=False)
class Shard:
    """A worker's documents and, per minibatch, what every pass needs of them.

    Built once per fit on the worker that holds the documents; every pass (and every
    evaluation, :attr:`index`) reuses it.
    """

    X: sp.csr_matrix
    batches: list[tuple[int, int]]  # row ranges of the minibatches
    words: list[np.ndarray]  # distinct global word ids of each minibatch
    cols: list[np.ndarray]  # each non-zero's row in the minibatch's word list
    indptrs: list[np.ndarray]  # int64 row pointers of each minibatch, from 0

    @functools.cached_property
    def index(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole shard's distinct words and each non-zero's row in them (an
        evaluation's pull and E-step), computed on first use."""
        words, cols = lda.minibatch_words(self.X.indices)
        return words, cols


def _index_rows(X: sp.csr_matrix, a: int, b: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct words, each non-zero's row in them, and row pointers of rows ``a:b``."""
    words, cols = lda.minibatch_words(X.indices[X.indptr[a]:X.indptr[b]])
    return words, cols, (X.indptr[a:b + 1] - X.indptr[a]).astype(np.int64)


def make_shard(X: sp.csr_matrix, batch_size: int) -> Shard:
    """Split a CSR shard into minibatches and index their words."""
    batches = _minibatch_slices(X.shape[0], batch_size)
    words, cols, indptrs = [], [], []
    for a, b in batches:
        w, c, p = _index_rows(X, a, b)
        words.append(w)
        cols.append(c)
        indptrs.append(p)
    return Shard(X, batches, words, cols, indptrs)


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


def warmup_schedule(n_rows: Sequence[int], batch_size: int, n_warmup: int
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
    n_rows : sequence of int
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


class SVIWorker:
    """One worker's pass over its shard: one E-step per minibatch (the engine's loop).

    Parameters
    ----------
    shard : Shard
    cfg : SVIConfig
    ctx : WorkerContext
        Its ``plan`` lists the worker's shares of the synchronous warm-up
        (:class:`WarmPart`), computed first; the pass then goes on asynchronously from
        the minibatch after the last one the warm-up used.
    """

    def __init__(self, shard: Shard, cfg: SVIConfig, ctx: WorkerContext) -> None:
        self.shard = shard
        self.cfg = cfg
        self.parallel = ctx.threads > 1
        self.rng = np.random.default_rng(ctx.seed)
        warmup: tuple[WarmPart, ...] = ctx.plan or ()
        self.sync_parts = [self._sync_part(p) for p in warmup]
        self.first = warmup[-1].batch + 1 if warmup else 0
        self.n_updates = len(shard.batches) - self.first
        self.compute_s = 0.0
        self.workspace = lda.EStepWorkspace()  # the E-step buffers, reused
        # Minibatch i's statistics go to buffer i % 2, reused (no fresh array's page
        # faults per minibatch; docs/design.rst, "Kernels"). Safe: when minibatch i is
        # computed, the push of i - 2 has had its
        # reply (one push in flight, lag <= 1), and the server keeps no reference to a
        # push it has replied to (ParameterServer's contract). Warm-up parts wait on
        # the server for the other workers' parts, so they get fresh arrays.
        self.ring = lda.EStepWorkspace()

    def _sync_part(self, part: WarmPart) -> SyncPart:
        X, shard = self.shard.X, self.shard
        a, b = part.rows
        if (a, b) == shard.batches[part.batch]:  # the whole minibatch: indexed already
            index = (shard.words[part.batch], shard.cols[part.batch],
                     shard.indptrs[part.batch])
        else:
            index = _index_rows(X, a, b)
        return SyncPart(part.after, part.slot, part.n_parts, index[0], (part.rows, index))

    def _estep(self, rows: tuple[int, int], words: np.ndarray, cols: np.ndarray,
               indptr: np.ndarray, params: SVIParams, slot: int | None) -> SVIUpdate:
        """The update of rows ``a:b``, with the documents part of its bound."""
        tc = time.perf_counter()
        cfg, X = self.cfg, self.shard.X
        lam_rows, rowsums = params
        a, b = rows
        out = (None if slot is None else
               self.ring.get(f"sstats{slot}", (lam_rows.shape[0] * cfg.n_components,)))
        exp_beta = lda.exp_elog_beta_rows(lam_rows, rowsums, self.workspace)
        gamma = lda.init_gamma(self.rng, b - a, cfg.n_components)
        cnts = X.data[X.indptr[a]:X.indptr[b]]
        sstats, bound = lda.run_estep(indptr, cols, cnts, exp_beta, gamma,
                                      cfg.doc_topic_prior, cfg.max_doc_update_iter,
                                      cfg.mean_change_tol, True, self.parallel,
                                      self.workspace, out, return_bound=True)
        self.compute_s += time.perf_counter() - tc
        return SVIUpdate(words, sstats, b - a, (bound, float(cnts.sum())))

    def request(self, index: int) -> np.ndarray:
        """The distinct words of minibatch ``first + index``."""
        return self.shard.words[self.first + index]

    def compute(self, index: int, params: SVIParams, unseen: Sequence[Any]
                ) -> SVIUpdate:
        """The statistics of minibatch ``first + index`` at ``params``."""
        j = self.first + index
        s = self.shard
        return self._estep(s.batches[j], s.words[j], s.cols[j], s.indptrs[j], params,
                           j % 2)

    def compute_part(self, part: SyncPart, params: SVIParams) -> SVIUpdate:
        """The statistics of a warm-up share (fresh arrays)."""
        rows, (words, cols, indptr) = part.data
        return self._estep(rows, words, cols, indptr, params, None)

    def report(self) -> dict[str, float]:
        """Documents and tokens of the shard, E-step seconds."""
        X = self.shard.X
        return {"docs": float(X.shape[0]), "tokens": float(X.data.sum()),
                "time/compute_s": self.compute_s}


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

    ``None`` until the first minibatch with a bound is applied. Sums that went down
    (a recovery's new server starts them at 0) restart the meter.
    """

    def __init__(self) -> None:
        self._pass_mark = (0.0, 0.0)
        self._live_mark = (0.0, 0.0)
        self._live_last: float | None = None

    def _sums(self, reported: dict[str, Any]) -> tuple[float, float]:
        now = float(reported["bound_sum"]), float(reported["bound_tokens"])
        if now[1] < max(self._pass_mark[1], self._live_mark[1]):
            self._pass_mark = self._live_mark = (0.0, 0.0)
        return now

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


class _Checked(NamedTuple):
    """A shard's documents, validated on the driver (CSR float64, sorted indices)."""

    X: sp.csr_matrix


class SVIAlgorithm(AlgorithmBase):
    """LDA by DPSVI on the engine: shards of documents, one round per pass.

    Parameters
    ----------
    cfg : SVIConfig
    lam0 : ndarray of float64, shape (V, K)
        Initial word-major ``lambda`` (unused when resuming from a checkpoint).
    first_step : int
        ``t`` of the engine fit's first SVI step (scikit-learn's ``n_batch_iter_``).
    warmup_updates : int
        Synchronous warm-up updates, counted from the model's first update.
    """

    name = "dpsvi"
    round_name = "pass"
    kind = "lda"
    score_name = "perplexity"

    def __init__(self, cfg: SVIConfig, lam0: np.ndarray, first_step: int,
                 warmup_updates: int) -> None:
        self.cfg = cfg
        self.lam0 = lam0
        self.first_step = int(first_step)
        self.warmup_updates = int(warmup_updates)
        self.meter = BoundMeter()

    def __getstate__(self) -> dict[str, Any]:
        # Workers need the configuration, not the initial lambda (the server's rule
        # is built on the driver).
        return {**self.__dict__, "lam0": None}

    def split(self, data: sp.csr_matrix, n_workers: int) -> list[_Checked]:
        """Interleaved minibatches (:func:`shard_rows`) of the validated corpus."""
        return [_Checked(data[rows]) for rows in shard_rows(
            data.shape[0], self.cfg.batch_size, n_workers)]

    def prepare(self, parts: Sequence[Any]) -> Shard:
        """Stack the worker's row blocks (CSR or dense) into its indexed shard.

        Blocks of a Dask array (not validated on the driver) are checked here.
        """
        if len(parts) == 1 and isinstance(parts[0], _Checked):
            X = parts[0].X
        else:
            blocks = [sp.csr_matrix(p, dtype=np.float64) for p in parts]
            X = blocks[0] if len(blocks) == 1 else sp.vstack(blocks, format="csr")
            X.sum_duplicates()
            X.sort_indices()
            check_counts(X, "DPSVILatentDirichletAllocation.fit")
        return make_shard(X, self.cfg.batch_size)

    def shard_size(self, shard: Shard) -> int:
        """Documents in the shard."""
        return int(shard.X.shape[0])

    def make_rule(self, snapshot: dict[str, Any] | None, updates_done: int) -> SVIRule:
        """The SVI step's rule at ``t = first_step + updates_done``."""
        cfg = self.cfg
        lam = self.lam0 if snapshot is None else snapshot["lambda"]
        return SVIRule(lam, cfg.topic_word_prior, cfg.learning_offset,
                       cfg.learning_decay, cfg.total_samples,
                       first_step=self.first_step + updates_done,
                       state=None if snapshot is None else snapshot["state"])

    def plan(self, round: int, shard_sizes: Sequence[int], updates_done: int
             ) -> list[tuple[WarmPart, ...]]:
        """The warm-up's shares, while the model has had fewer than
        ``warmup_updates`` updates."""
        n_warm = max(0, self.warmup_updates - (self.first_step + updates_done - 1))
        return warmup_schedule(shard_sizes, self.cfg.batch_size, n_warm)

    def worker(self, shard: Shard, ctx: WorkerContext) -> SVIWorker:
        """The worker's pass."""
        return SVIWorker(shard, self.cfg, ctx)

    def evaluate_request(self, shard: Shard) -> np.ndarray:
        """Every distinct word of the shard."""
        return shard.index[0]

    def evaluate(self, shard: Shard, params: Any) -> tuple[float, float]:
        """Documents part of the bound and the tokens of the shard at ``params``."""
        X = shard.X
        if X.shape[0] == 0:
            return 0.0, 0.0
        cfg = self.cfg
        cols = shard.index[1]
        lam_rows, rowsums = params
        exp_beta = lda.exp_elog_beta_rows(lam_rows, rowsums)
        gamma = np.ones((X.shape[0], cfg.n_components))
        indptr = X.indptr.astype(np.int64)
        lda.run_estep(indptr, cols, X.data, exp_beta, gamma, cfg.doc_topic_prior,
                      cfg.max_doc_update_iter, cfg.mean_change_tol, False,
                      numba.get_num_threads() > 1)
        elog_beta = lda.elog_beta_rows(lam_rows, rowsums)
        part = lda.doc_bound(indptr, cols, X.data, gamma, elog_beta, cfg.doc_topic_prior)
        return part, float(X.data.sum())

    def score(self, total: float, count: float, snapshot: dict[str, Any]) -> float:
        """Training perplexity (scikit-learn's ``bound_``)."""
        score = total + lda.topic_word_bound(snapshot["lambda"], self.cfg.topic_word_prior)
        return float(np.exp(-score / count))

    def record(self, progress: dict[str, Any], snapshot: Any,
               round_end: tuple[Sequence[Any], float] | None) -> dict[str, Any]:
        """Documents per second and the minibatch per-word bound."""
        out: dict[str, Any] = {}
        if round_end is None:
            bound = self.meter.live(progress)
        else:
            reports, elapsed = round_end
            docs = sum(r.counters["docs"] for r in reports)
            out["time/docs_per_s"] = docs / elapsed if elapsed > 0 else float("nan")
            bound = self.meter.end_pass(progress)
            self.meter.live(progress)
        if bound is not None:
            out[BOUND_KEY] = bound
        return out
