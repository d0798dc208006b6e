"""The engine on the driver: one DPSGD fit of any :class:`Algorithm` on a Dask cluster.

Layout of one fit (docs/design.rst, "DPSGD"):

* the data is placed once: one shard per worker (:meth:`Algorithm.split` scattered to
  it, or a Dask array's row chunks left where they live), built into the worker's
  shard there (:meth:`Algorithm.prepare`) and reused by every round;
* worker 0 holds the :class:`~dask_dpsgd._server.actor.ParameterServer` actor with the
  algorithm's update rule; its own tasks call it in memory, the others over the network;
* a round is one Dask task per worker (key ``<name>-<round_name>-<r>-w<w>-<token>``, in
  the span ``<name>-fit``) that drives the algorithm's loop (:func:`~._worker.drive`);
  workers never wait for each other inside a round, the server applies their pushes in
  arrival order and records each one's staleness;
* rounds are separated by a barrier: the score is evaluated (``evaluate_every``), a
  checkpoint is taken (``checkpoint_every``), progress is reported, and a failing task
  stops the fit;
* a lost worker (the server's included) ends the segment: the fit resumes on the
  workers left from the last checkpoint (a new server, shards placed again) and
  reports what it discarded (:class:`RecoveryEvent`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import distributed
import numpy as np
import scipy.sparse as sp

from dask_dpsgd._server.state import ServerStats
from dask_dpsgd.algorithm import (
    Algorithm,
    Checkpoint,
    FitResult,
    FitStart,
    RecoveryEvent,
    ServerCounts,
    WorkerReport,
)
from dask_dpsgd.engine._arrays import is_dask_array
from dask_dpsgd.engine._cluster import (
    ClusterHandle,
    WorkerLostError,
    lost_workers,
    resolve_cluster,
)
from dask_dpsgd.engine._live import LiveMetrics, live_metrics
from dask_dpsgd.engine._serving import ServerWatch, serving, start_server
from dask_dpsgd.engine._worker import (
    evaluate_task,
    prepare_task,
    round_context,
    round_task,
    shard_size_task,
)

logger = logging.getLogger(__name__)

HISTORY = ("round", "poll")


@dataclass(slots=True)
class FitOptions:
    """How :func:`fit` runs (see its parameters)."""

    n_rounds: int = 1
    lag: int = 0
    max_staleness: int | None = None
    random_state: int = 0
    evaluate_every: int = 0
    tol: float | None = None
    final_score: bool = False
    history: str = "round"
    poll_interval: float = 1.0
    checkpoint_every: int = 1
    on_checkpoint: Callable[[Checkpoint], None] | None = None
    resume: Checkpoint | None = None
    max_recoveries: int = 3
    progress: Callable[[dict[str, Any]], None] | None = None
    on_poll: Callable[[dict[str, Any], dict[str, Any]], bool] | None = None


@dataclass(slots=True)
class _Run:
    """The driver's running state of one fit (across its segments)."""

    ckpt: Checkpoint
    counts: ServerCounts = field(default_factory=ServerCounts)  # at the checkpoint
    pushes_sent: int = 0  # at the checkpoint
    counters: dict[str, float] = field(default_factory=dict)  # workers', at the checkpoint
    history: list[dict[str, Any]] = field(default_factory=list)  # at the checkpoint
    events: list[RecoveryEvent] = field(default_factory=list)
    # The fit's clock (time/elapsed_s): from its first server's start, so placing the
    # data and starting the server are not counted.
    t0: float | None = None


def fit(algorithm: Algorithm, data: Any, *, n_rounds: int = 1,
        parallelism: str = "auto", n_workers: int | None = None,
        threads_per_worker: int | None = None, client: Any = None,
        n_jobs: int | None = None, lag: int = 0,
        max_staleness: int | Callable[[int], int | None] | None = None,
        random_state: int = 0, evaluate_every: int = 0, tol: float | None = None,
        final_score: bool = False, history: str = "round",
        poll_interval: float = 1.0, checkpoint_every: int = 1,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
        resume: Checkpoint | None = None, max_recoveries: int = 3,
        progress: Callable[[dict[str, Any]], None] | None = None,
        on_poll: Callable[[dict[str, Any], dict[str, Any]], bool] | None = None,
        title: str | None = None, on_start: Callable[[Any], None] | None = None,
        verbose: int = 0) -> FitResult:
    """Train ``algorithm`` on ``data`` by DPSGD: lock-free cores inside each worker,
    asynchronous workers around a parameter server.

    Parameters
    ----------
    algorithm : Algorithm
        The model (its worker loop, update rule and data handling).
    data : object
        The training data, cut by ``algorithm.split`` (a ``dask.array.Array``'s row
        chunks stay on the workers that hold them).
    n_rounds : int, default=1
        Rounds to run, counting those of ``resume`` (a round: one task per worker over
        its shard; LDA's pass).
    parallelism : {"auto", "serial", "hogwild", "parameter-server", "dpsgd"}
        The layout: 1 worker x 1 thread, 1 x ``P``, ``M`` x 1 or ``M`` x ``P`` (``M``
        workers, ``P`` numba threads each); a mode the cluster cannot give is an
        error. ``"auto"``: ``n_workers`` / ``threads_per_worker`` as given, the rest
        sized to the cluster.
    n_workers, threads_per_worker : int or None
        ``M`` and ``P``; ``None`` sizes them from the cluster.
    client : distributed.Client or None
        The cluster to run on; ``None``: the default client if there is one, else an
        embedded ``LocalCluster`` sized to this machine (one per process, reused by
        later fits; :func:`close_embedded_cluster`).
    n_jobs : int or None
        Caps each worker's budgeted threads, as scikit-learn's ``n_jobs``.
    lag : {0, 1}
        Pushes a worker may have in flight while computing its next update.
    max_staleness : int, callable or None
        Reject updates computed from parameters more than this many versions old
        (``None``: accept any); a callable gets the number of workers and returns it.
    random_state : int
        Root seed of the workers' ``SeedSequence(random_state, spawn_key=(round, w))``.
    evaluate_every : int
        Evaluate the score (:meth:`AlgorithmBase.evaluate`) every this many rounds
        (``<= 0``: never); with ``tol``, stop when it changes by less than ``tol``.
    tol : float or None
    final_score : bool
        Evaluate the score after the last round (:attr:`FitResult.score`).
    history : {"round", "poll"}
        One history record per round, or per poll of the server (every
        ``poll_interval`` seconds) plus one per round; ``"poll"`` also takes the
        in-memory checkpoint at every poll, so a recovery resumes mid-round.
    poll_interval : float
        Seconds between polls of the server (live metrics, lost-worker checks).
    checkpoint_every : int
        Rounds between checkpoints (and the last round); ``on_checkpoint`` gets each.
    on_checkpoint : callable or None
        ``on_checkpoint(Checkpoint)``, e.g. to write it to a file.
    resume : Checkpoint or None
        Continue from a checkpoint.
    max_recoveries : int
        Lost-worker recoveries allowed before the error is raised.
    progress : callable or None
        Called with every history record.
    on_poll : callable or None
        ``on_poll(record, snapshot) -> stop``, called with every history record and
        the server's state it was read with (``history="poll"``: at every poll); a
        true return asks the update rule to end training (``rule.request_stop()``):
        the workers finish at their next pull and the fit returns normally.
    title : str or None
        The fit's title on the live metrics page (``None``: the algorithm's name).
    on_start : callable or None
        Called with a :class:`FitStart` once the cluster is up.
    verbose : int
        Log the dashboard link when > 0.

    Returns
    -------
    FitResult
    """
    if history not in HISTORY:
        raise ValueError(f"history={history!r} is not one of {HISTORY}")
    if lag not in (0, 1):
        raise ValueError(f"lag must be 0 or 1, got {lag!r}")
    if n_rounds < 0:
        raise ValueError(f"n_rounds must be >= 0, got {n_rounds}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    opts = FitOptions(n_rounds=n_rounds, lag=lag,
                      max_staleness=None if callable(max_staleness) else max_staleness,
                      random_state=int(random_state), evaluate_every=evaluate_every,
                      tol=tol, final_score=final_score, history=history,
                      poll_interval=poll_interval, checkpoint_every=checkpoint_every,
                      on_checkpoint=on_checkpoint, resume=resume,
                      max_recoveries=max_recoveries, progress=progress,
                      on_poll=on_poll)
    kind = getattr(algorithm, "kind", "model")
    name = getattr(algorithm, "name", type(algorithm).__name__.lower())
    with _client(client), \
            resolve_cluster(n_workers, threads_per_worker, parallelism=parallelism,
                            thread_cap=n_jobs, verbose=verbose) as handle, \
            live_metrics(handle.client, kind, title or name,
                         handle.dashboard_link) as live:
        if callable(max_staleness):
            opts.max_staleness = max_staleness(len(handle.slots))
        if on_start is not None:
            on_start(FitStart(handle.threads, handle.dashboard_link, live.url))
        result = train(handle, algorithm, data, opts, live)
        result.live_url = live.url
        return result


@contextlib.contextmanager
def _client(client: Any) -> Iterator[None]:
    """Make ``client`` the current one for the block (no-op for ``None``)."""
    if client is None:
        yield
        return
    with client.as_current():
        yield


def train(handle: ClusterHandle, algorithm: Any, data: Any, opts: FitOptions,
          live: LiveMetrics | None = None) -> FitResult:
    """:func:`fit` on a resolved cluster: place the shards and run the rounds,
    recovering from lost workers."""
    resume = opts.resume
    run = _Run(ckpt=resume if resume is not None else Checkpoint(None, 0, 0))
    for address in handle.lost_at_start:
        logger.warning("dask-dpsgd: Dask worker %s lost while the fit started; "
                       "continuing on %d worker(s)", address, len(handle.slots))
        run.events.append(RecoveryEvent([address], len(handle.slots), run.ckpt.rounds_done,
                                        0, 0, True, time.time()))
    name = getattr(algorithm, "name", type(algorithm).__name__.lower())
    while True:
        try:
            shards, sizes = place(handle, algorithm, data)
            with distributed.span(f"{name}-fit"):
                return _segment(handle, algorithm, shards, sizes, run, opts, live)
        except WorkerLostError as exc:
            if len(run.events) >= opts.max_recoveries:
                raise
            survivors = [s for s in handle.slots if s.address not in exc.addresses]
            if not survivors:
                raise RuntimeError("every worker of the fit was lost; nothing left to "
                                   "continue on") from exc
            logger.warning("dask-dpsgd: %s; resuming from round %d on %d worker(s), "
                           "%d update(s) lost", exc, run.ckpt.rounds_done,
                           len(survivors), exc.updates_lost)
            start = resume.updates_done if resume is not None else 0
            run.events.append(RecoveryEvent(
                list(exc.addresses), len(survivors), run.ckpt.rounds_done,
                run.ckpt.updates_done - start, int(exc.updates_lost),
                bool(exc.updates_lost_exact), time.time()))
            handle = ClusterHandle(handle.client, handle.owned, tuple(survivors),
                                   handle.dashboard_link)


def place(handle: ClusterHandle, algorithm: Any, data: Any
          ) -> tuple[list[Any], list[int]]:
    """Put one shard on each worker of ``handle``; returns their futures and sizes.

    A Dask array's row chunks stay on the workers that hold them: each chunk goes to
    the worker it lives on (or the least loaded worker of this fit when it lives
    elsewhere). Anything else is cut by ``algorithm.split`` and scattered.
    """
    try:
        return _place(handle, algorithm, data)
    except WorkerLostError:
        raise
    except Exception as exc:  # a scatter to a worker that just died, ...
        lost = lost_workers(handle.client, [s.address for s in handle.slots])
        if lost:
            raise WorkerLostError(lost) from exc
        raise


def _place(handle: ClusterHandle, algorithm: Any, data: Any
           ) -> tuple[list[Any], list[int]]:
    client = handle.client
    addrs = [s.address for s in handle.slots]
    token = uuid.uuid4().hex[:8]
    name = getattr(algorithm, "name", "dpsgd")
    if is_dask_array(data):
        data = data.rechunk({1: -1}).persist()
        chunk_futures = distributed.futures_of(data)
        chunk_futures.sort(key=lambda f: f.key)  # keys are (name, i, 0): row order
        who = client.who_has(chunk_futures)
        per_worker: dict[str, list[Any]] = {a: [] for a in addrs}
        for f in chunk_futures:
            holders = [a for a in who.get(f.key, ()) if a in per_worker]
            target = (holders[0] if holders
                      else min(per_worker, key=lambda a: len(per_worker[a])))
            per_worker[target].append(f)
        parts = [per_worker[a] for a in addrs]
    else:
        split = list(algorithm.split(data, len(addrs)))
        if len(split) != len(addrs):
            raise ValueError(f"{type(algorithm).__name__}.split returned {len(split)} "
                             f"part(s) for {len(addrs)} worker(s)")
        parts = []
        for part, addr in zip(split, addrs, strict=True):
            big = sp.issparse(part) or (isinstance(part, np.ndarray) and part.nbytes > 1e5)
            parts.append([client.scatter(part, workers=[addr], direct=True, hash=False)
                          if big else part])
    futures = [client.submit(prepare_task, algorithm, *p, key=f"{name}-shard-w{w}-{token}",
                             workers=[a], allow_other_workers=False, pure=False)
               for w, (p, a) in enumerate(zip(parts, addrs, strict=True))]
    gather_round(futures, addrs)
    sizes = gather_round([client.submit(shard_size_task, algorithm, f, workers=[a],
                                        allow_other_workers=False, pure=False)
                          for f, a in zip(futures, addrs, strict=True)], addrs)
    return futures, [int(s) for s in sizes]


def _segment(handle: ClusterHandle, algorithm: Any, shards: list[Any], sizes: list[int],
             run: _Run, opts: FitOptions, live: LiveMetrics | None) -> FitResult:
    """Rounds ``run.ckpt.rounds_done .. n_rounds - 1`` with one parameter server."""
    client = handle.client
    token = uuid.uuid4().hex[:8]
    slots = handle.slots
    addresses = [s.address for s in slots]
    name = getattr(algorithm, "name", type(algorithm).__name__.lower())
    round_name = getattr(algorithm, "round_name", "round")
    round_key = round_name  # the history key of the round index ("pass" for LDA)
    score_key = f"train/{getattr(algorithm, 'score_name', 'loss')}"
    ckpt = run.ckpt
    base_updates = ckpt.updates_done
    trained_before = ckpt.snapshot is not None
    server_future, server = start_server(
        client, algorithm.make_rule(ckpt.snapshot, ckpt.updates_done),
        opts.max_staleness, addresses[0], f"{name}-server-{token}")
    if run.t0 is None:
        run.t0 = time.perf_counter()
    t0 = run.t0
    base = run.counts
    base_sent = run.pushes_sent
    base_counters = dict(run.counters)
    seg_counters: dict[str, float] = {}  # the workers' counters of finished rounds
    pending: list[dict[str, Any]] = []  # history since the checkpoint
    # Pushes of this segment's finished rounds, and the server's received count when
    # the current round began (a mid-round checkpoint counts what it received since).
    sent = 0
    received_at_round = 0
    last_score: float | None = None
    watch = ServerWatch()

    def counts_now(stats: ServerStats | None = None) -> ServerCounts:
        stats = stats if stats is not None else server.stats().result()
        watch.seen(stats.version)
        return base.plus(stats, np.trim_zeros(server.staleness_histogram().result(), "b"))

    def take_checkpoint(rounds_done: int, snap: tuple[int, dict[str, Any]],
                        mid_round: bool = False,
                        counts: ServerCounts | None = None) -> None:
        nonlocal pending
        version, snapshot = snap
        run.ckpt = Checkpoint(snapshot, base_updates + version, rounds_done)
        watch.checkpoint(version)
        run.counts = counts if counts is not None else counts_now()
        run.pushes_sent = base_sent + sent + (
            run.counts.n_received - base.n_received - received_at_round
            if mid_round else 0)
        run.counters = {k: base_counters.get(k, 0.0) + seg_counters.get(k, 0.0)
                        for k in base_counters.keys() | seg_counters.keys()}
        run.history.extend(pending)
        pending = []

    def emit(record: dict[str, Any], force: bool = False) -> None:
        pending.append(record)
        if opts.progress is not None:
            opts.progress(record)
        if live is not None:
            live.publish(record, force=force)

    def poll(r: int) -> None:
        if opts.history == "poll":
            try:
                stats = server.stats().result(timeout=5)
            except Exception:  # noqa: BLE001 - its worker may be dying; checked next
                return
            counts = counts_now(stats)
            progress = server.progress().result()
            snap = server.snapshot().result()
            # The in-memory checkpoint a recovery restarts from (mid-round).
            take_checkpoint(r, snap, mid_round=True, counts=counts)
            record = _record(r, counts, t0, algorithm.record(progress, snap[1], None))
            emit(record)
            if opts.on_poll is not None and opts.on_poll(record, snap[1]):
                server.request_stop().result()
            return
        if live is None or not live.due():
            return
        try:
            counts = counts_now(server.stats().result(timeout=2))
            progress = server.progress().result(timeout=2)
        except Exception:  # noqa: BLE001 - as above
            return
        record = _record(r, counts, t0, algorithm.record(progress, None, None))
        if last_score is not None:
            record[score_key] = last_score
        live.publish(record)

    with serving(client, addresses, token, server_future, server, watch):
        start = ckpt.rounds_done
        for r in range(start, opts.n_rounds):
            t_round = time.perf_counter()
            stats = server.stats().result()
            version = stats.version
            received_at_round = stats.n_received
            plans = algorithm.plan(r, sizes, base_updates + version)
            futures = [
                client.submit(
                    round_task, server, shards[w], algorithm,
                    round_context(w, len(slots), s.threads, r, opts.random_state,
                                  opts.lag, trained_before or base_updates + version > 0,
                                  plans),
                    token, key=f"{name}-{round_name}-{r}-w{w}-{token}",
                    workers=[s.address], allow_other_workers=False, pure=False)
                for w, s in enumerate(slots)]
            reports: list[WorkerReport] = gather_round(
                futures, addresses, poll=opts.poll_interval,
                on_poll=functools.partial(poll, r))
            elapsed = time.perf_counter() - t_round
            progress = server.progress().result()
            snap = server.snapshot().result()
            now = time.perf_counter() - t0  # the evaluation is not in this round's time
            record: dict[str, Any] = {}
            record[f"time/{round_name}_s"] = elapsed
            record["time/wait_s"] = sum(rep.wait_s for rep in reports)
            # The workers' namespaced counters ("time/compute_s", ...), summed.
            for key in sorted({k for rep in reports for k in rep.counters if "/" in k}):
                record[key] = sum(rep.counters.get(key, 0.0) for rep in reports)
            record.update(algorithm.record(progress, snap[1], (reports, elapsed)))
            stop = bool(algorithm.stop(progress))
            if opts.evaluate_every > 0 and (r + 1) % opts.evaluate_every == 0:
                score = _evaluate(handle, server, shards, algorithm, token, f"e{r}",
                                  snap[1])
                record[score_key] = score
                if (opts.tol is not None and last_score is not None
                        and abs(last_score - score) < opts.tol):
                    stop = True
                last_score = score
            # Read once, after the evaluation (its pulls count in bytes_pulled): the
            # record and the checkpoint agree.
            counts = counts_now()
            record = {round_key: r + 1, "time/elapsed_s": now, **counts.record(),
                      **record}
            sent += sum(rep.pushes_sent for rep in reports)
            for rep in reports:
                for key, value in rep.counters.items():
                    seg_counters[key] = seg_counters.get(key, 0.0) + value
            emit(record, force=True)
            if opts.on_poll is not None and opts.on_poll(record, snap[1]):
                stop = True
            if ((r + 1 - start) % opts.checkpoint_every == 0
                    or r + 1 == opts.n_rounds or stop):
                take_checkpoint(r + 1, snap, counts=counts)
                if opts.on_checkpoint is not None:
                    opts.on_checkpoint(run.ckpt)
            if stop:
                break
        if pending or run.ckpt.snapshot is None:
            # Records after the last checkpoint (history="poll"), or no round run at
            # all: the server's state is the result.
            take_checkpoint(run.ckpt.rounds_done, server.snapshot().result())
        final = run.ckpt.snapshot
        assert final is not None  # a checkpoint of this segment's server
        final_score = None
        if opts.final_score:
            final_score = _evaluate(handle, server, shards, algorithm, token, "final",
                                    final)
    return FitResult(snapshot=final, updates_done=run.ckpt.updates_done,
                     rounds_done=run.ckpt.rounds_done, history=list(run.history),
                     counts=run.counts, pushes_sent=run.pushes_sent,
                     events=list(run.events), score=final_score,
                     threads=handle.threads, counters=dict(run.counters))


def _record(r: int, counts: ServerCounts, t0: float, extra: dict[str, Any]
            ) -> dict[str, Any]:
    return {"round": r, "time/elapsed_s": time.perf_counter() - t0,
            **counts.record(), **extra}


def _evaluate(handle: ClusterHandle, server: Any, shards: list[Any], algorithm: Any,
              token: str, tag: str, snapshot: dict[str, Any]) -> float:
    """The algorithm's score at the server's current parameters (``snapshot``)."""
    name = getattr(algorithm, "name", "dpsgd")
    futures = [
        handle.client.submit(evaluate_task, server, shards[w], algorithm, s.threads,
                             key=f"{name}-evaluate-{tag}-w{w}-{token}",
                             workers=[s.address], allow_other_workers=False, pure=False)
        for w, s in enumerate(handle.slots)]
    parts = gather_round(futures, [s.address for s in handle.slots])
    return float(algorithm.score(sum(p[0] for p in parts), sum(p[1] for p in parts),
                                 snapshot))


def gather_round(futures: list[Any], addresses: list[str] | None = None,
                 poll: float = 1.0, on_poll: Callable[[], None] | None = None
                 ) -> list[Any]:
    """Wait for one round of tasks; raise the first error at once, cancelling the rest.

    Tasks are pinned to their workers, so a task whose worker died would wait forever
    for it: every ``poll`` seconds the workers in ``addresses`` are checked, and a lost
    one raises :class:`WorkerLostError` (as does an error explained by a lost worker,
    e.g. the parameter server's worker gone). ``on_poll()``, if given, is called at
    each check that found every worker alive (updates-lost watch, live metrics).
    """
    from concurrent.futures import CancelledError

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
