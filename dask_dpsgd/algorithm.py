"""What an algorithm implements to run on the DPSGD engine, and the records it returns.

Nothing here imports Dask: an algorithm is plain Python (numba inside), unit-tested
without a cluster (:func:`dask_dpsgd.engine.run_in_process`), and
:func:`dask_dpsgd.engine.fit` runs it in any of the four modes (docs/byom.rst, "Bring
your own model"). :mod:`dask_dpsgd.engine` re-exports every name defined here.

Vocabulary (one name per concept):

* *round*: one task per worker over its shard (LDA: a pass over the corpus); rounds
  are separated by a barrier where the engine evaluates, checkpoints and reports;
* *update*: what a worker pushes once (``delta``), computed from parameters of a known
  *version* (the server's count of applied updates);
* *request*: what a worker asks the server for (the rule's ``pull`` argument);
* *lag*: pushes a worker may have in flight while it computes the next update (0 or 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from dask_dpsgd._server.state import AddRule, SVIRule, UpdateRule

__all__ = ["AddRule", "Algorithm", "AlgorithmBase", "Checkpoint", "FitResult", "FitStart",
           "RecoveryEvent", "SVIRule", "ServerCounts", "SyncPart", "UpdateRule",
           "WorkerContext", "WorkerLoop", "WorkerReport"]

@dataclass(frozen=True, slots=True)
class WorkerContext:
    """Where and how one worker runs one round (given to :meth:`Algorithm.worker`).

    Attributes
    ----------
    worker : int
        The worker's index, 0-based; worker 0 holds the parameter server.
    n_workers : int
        Workers in the fit (``M``).
    threads : int
        Numba threads the worker's kernels may use (``P``, its Hogwild cores); the
        engine has called ``numba.set_num_threads(threads)`` already.
    round : int
        Index of the round (0-based, counting rounds of earlier fits when resuming).
    seed : numpy.random.SeedSequence
        The worker's seed for this round: ``SeedSequence(random_state, spawn_key=(round,
        worker))``, so a resumed or recovered fit repeats an uninterrupted one's draws.
    lag : int
        The fit's ``lag`` (0 or 1).
    resumed : bool
        Whether the parameters were trained before this round began (a later round, a
        checkpoint or a recovery): per-worker optimiser statistics start empty then.
    plan : object
        What :meth:`Algorithm.plan` gave this worker for this round (``None`` without).
    """

    worker: int
    n_workers: int
    threads: int
    round: int
    seed: np.random.SeedSequence
    lag: int = 0
    resumed: bool = False
    plan: Any = None


class SyncPart(NamedTuple):
    """A worker's share of one synchronous update (the engine's warm-up mechanism).

    The engine pulls ``request`` once the server has received ``after`` pushes, the
    worker computes its share from those parameters (:meth:`WorkerLoop.compute_part`),
    and the server applies the ``n_parts`` shares of update ``slot`` together, merged by
    its rule's ``merge``: serial SGD's step, computed in parallel.
    """

    after: int
    slot: int
    n_parts: int
    request: Any = None
    data: Any = None


@runtime_checkable
class WorkerLoop(Protocol):
    """One worker's computation during one round (lives on the worker, no Dask).

    The engine drives it: for update ``i = 0, 1, ...`` it pulls ``request(i)`` from the
    server (or takes the parameters a previous push's reply brought), calls
    ``compute(i, params, unseen)`` and pushes the result; it stops after ``n_updates``
    updates, or when ``compute`` returns ``None``.

    Attributes
    ----------
    n_updates : int or None
        Updates this worker makes in the round (``None``: until ``compute`` returns
        ``None``).
    """

    n_updates: int | None

    def request(self, index: int) -> Any:
        """What to pull to compute update ``index`` (the rule's ``pull`` argument)."""

    def compute(self, index: int, params: Any, unseen: Sequence[Any]) -> Any | None:
        """Update ``index`` computed from ``params`` (the rule's answer to ``request``).

        ``unseen`` lists this worker's own updates that ``params`` does not contain yet
        (pushed, still in flight: at most ``lag`` of them), oldest first, for an
        algorithm that keeps a local copy (A3C's local/global split). Returns the
        update to push (the rule's ``delta``; handed over: the worker must not write to
        its arrays afterwards), or ``None`` to end the round.
        """

    def report(self) -> dict[str, float]:
        """Counters of the round (e.g. ``time/compute_s``), summed over the workers;
        those whose name holds a ``/`` go into the round's history record, all into
        :attr:`FitResult.counters`."""


class Algorithm(Protocol):
    """A model trained by DPSGD: data handling, worker loop and server-side rule.

    The object is pickled to every worker; keep it small (hyper-parameters, not data).
    :class:`AlgorithmBase` gives the optional methods their defaults.
    """

    def split(self, data: Any, n_workers: int) -> Sequence[Any]:
        """Cut the training data into one part per worker (on the driver).

        Not called for a :class:`dask.array.Array` ``data``: the engine leaves its row
        chunks on the workers that hold them and gives each worker its own.
        """

    def prepare(self, parts: Sequence[Any]) -> Any:
        """A worker's *shard*, built once per placement from its parts (on the worker)
        and reused by every round (index it, check it, open its environments' specs)."""

    def make_rule(self, snapshot: dict[str, np.ndarray] | None, updates_done: int) -> Any:
        """The server's update rule, from the initial parameters or from ``snapshot``
        (a checkpoint: the rule's own ``snapshot()``) after ``updates_done`` updates."""

    def worker(self, shard: Any, ctx: WorkerContext) -> WorkerLoop:
        """The worker's loop for one round (on the worker)."""


class AlgorithmBase:
    """Defaults for :class:`Algorithm`'s optional methods; subclass and override."""

    #: Name of the score in history records (``"train/" + score_name``).
    score_name = "loss"

    def shard_size(self, shard: Any) -> int:
        """Samples in a shard (for :meth:`plan`); ``len(shard)`` by default."""
        return len(shard)

    def plan(self, round: int, shard_sizes: Sequence[int], updates_done: int
             ) -> Sequence[Any] | None:
        """Per-worker plans of a round (``WorkerContext.plan``); ``None``: no plans."""
        return None

    def evaluate(self, shard: Any, params: Any) -> tuple[float, float]:
        """A shard's ``(sum, count)`` of the score at ``params`` (the rule's answer to
        :meth:`evaluate_request`); the engine adds them up over shards."""
        raise NotImplementedError(f"{type(self).__name__} defines no evaluate()")

    def evaluate_request(self, shard: Any) -> Any:
        """What :meth:`evaluate` needs pulled for ``shard`` (``None``: everything)."""
        return None

    def score(self, total: float, count: float, snapshot: dict[str, np.ndarray]) -> float:
        """The score from the summed ``evaluate`` parts (lower is better); the mean
        ``total / count`` by default. ``snapshot`` is the server's parameters."""
        return total / count if count else float("nan")

    def record(self, progress: dict[str, Any], snapshot: dict[str, np.ndarray] | None,
               round_end: tuple[Sequence[WorkerReport], float] | None
               ) -> dict[str, Any]:
        """Extra history/live keys (``{}`` by default).

        ``progress`` is the rule's ``progress()``; ``snapshot`` the server's parameters
        (``None`` on a live-metrics poll); ``round_end`` the workers' reports and the
        round's seconds at the end of a round (``None`` on a poll).
        """
        return {}

    def stop(self, progress: dict[str, Any]) -> bool:
        """Whether training is complete after a round (``False`` by default)."""
        return False


class WorkerReport(NamedTuple):
    """What one worker's round task hands back to the driver."""

    worker: int
    pushes_sent: int
    pushes_applied: int
    pushes_rejected: int
    wait_s: float
    elapsed_s: float
    counters: dict[str, float]


@dataclass(slots=True)
class ServerCounts:
    """The server's counters summed over a fit's segments (one server per segment).

    Every received push is exactly one of applied / rejected (stale or non-finite).
    """

    n_received: int = 0
    n_applied: int = 0
    n_rejected_stale: int = 0
    n_rejected_nonfinite: int = 0
    bytes_pushed: int = 0
    bytes_pulled: int = 0
    staleness_sum: int = 0
    staleness_max: int = 0
    staleness_histogram: np.ndarray = field(
        default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def staleness_mean(self) -> float:
        """Mean staleness of the applied updates."""
        return self.staleness_sum / self.n_applied if self.n_applied else 0.0

    def plus(self, stats: Any, histogram: np.ndarray) -> ServerCounts:
        """These counts plus one segment's server ``stats()`` (a ``ServerStats``) and
        histogram."""
        hist = np.zeros(max(len(self.staleness_histogram), len(histogram)), np.int64)
        hist[:len(self.staleness_histogram)] += self.staleness_histogram
        hist[:len(histogram)] += histogram
        def add(key: str) -> int:
            return int(getattr(self, key)) + int(getattr(stats, key))

        return ServerCounts(
            n_received=add("n_received"), n_applied=add("n_applied"),
            n_rejected_stale=add("n_rejected_stale"),
            n_rejected_nonfinite=add("n_rejected_nonfinite"),
            bytes_pushed=add("bytes_pushed"), bytes_pulled=add("bytes_pulled"),
            staleness_sum=add("staleness_sum"),
            staleness_max=max(self.staleness_max, int(stats.staleness_max)),
            staleness_histogram=hist)

    def record(self) -> dict[str, Any]:
        """The history/live-metrics keys of these counts."""
        return {
            "train/updates": self.n_applied,
            "train/staleness_mean": self.staleness_mean,
            "train/staleness_max": self.staleness_max,
            "train/rejected_stale": self.n_rejected_stale,
            "comm/bytes_pushed": self.bytes_pushed,
            "comm/bytes_pulled": self.bytes_pulled,
        }


class RecoveryEvent(NamedTuple):
    """One recovery from lost workers."""

    workers: list[str]
    workers_left: int
    resumed_from_round: int
    resumed_at_update: int
    updates_lost: int
    updates_lost_exact: bool
    time: float

    def as_dict(self) -> dict[str, Any]:
        """The record as the estimators' ``recovery_events_`` show it."""
        return {"event": "worker_lost", **self._asdict()}


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A point a fit can resume from (the driver's in-memory copy, or a file's).

    Attributes
    ----------
    snapshot : dict of str to ndarray or None
        The rule's ``snapshot()`` (``None``: the initial parameters).
    updates_done : int
        Updates applied to the model before this point (all segments, all fits).
    rounds_done : int
        Rounds completed.
    """

    snapshot: dict[str, Any] | None
    updates_done: int
    rounds_done: int


class FitStart(NamedTuple):
    """What :func:`dask_dpsgd.engine.fit` tells ``on_start`` once the cluster is up.

    Attributes
    ----------
    threads : tuple of int
        Numba threads of each worker of the fit.
    dashboard_link : str or None
        Dask's dashboard.
    live_url : str or None
        The fit's live metrics page.
    counters : dict of str to float
        The workers' :meth:`WorkerLoop.report` counters, summed over the rounds kept.
    """

    threads: tuple[int, ...]
    dashboard_link: str | None
    live_url: str | None


@dataclass(slots=True)
class FitResult:
    """What :func:`dask_dpsgd.engine.fit` returns.

    Attributes
    ----------
    snapshot : dict of str to ndarray
        The final parameters (the rule's ``snapshot()``).
    updates_done, rounds_done : int
        As in :class:`Checkpoint`, at the end.
    history : list of dict
        One record per round (or per poll, with ``history="poll"``).
    counts : ServerCounts
        Server counters over the whole fit.
    pushes_sent : int
        Pushes the workers sent (equals ``counts.n_received`` unless a push was lost
        with a worker).
    events : list of RecoveryEvent
    score : float or None
        The score after the last round, with ``final_score=True``.
    threads : tuple of int
        Numba threads of each worker (the layout the fit ran on).
    live_url : str or None
        The fit's live metrics page.
    counters : dict of str to float
        The workers' :meth:`WorkerLoop.report` counters, summed over the rounds kept.
    """

    snapshot: dict[str, Any]
    updates_done: int
    rounds_done: int
    history: list[dict[str, Any]]
    counts: ServerCounts
    pushes_sent: int
    events: list[RecoveryEvent]
    score: float | None
    threads: tuple[int, ...]
    live_url: str | None = None
    counters: dict[str, float] = field(default_factory=dict)
