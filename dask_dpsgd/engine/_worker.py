"""The engine on a worker: drive an algorithm's :class:`WorkerLoop` against the server.

One round task per worker (docs/design.rst, "DPSGD"): the loop's numba kernels use the
worker's ``P`` threads (Hogwild inside the worker), and its updates go to the parameter
server through a :class:`~dask_dpsgd.engine._pusher.Pusher` (one awaited call in
flight), asynchronously with the other workers. A push asks for the parameters of the
update ``1 + lag`` ahead in the same call, so a worker pulls on its own only when no
reply brought them (the first update of a round, after the synchronous parts).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from typing import Any

import numba
import numpy as np

from dask_dpsgd.algorithm import Algorithm, WorkerContext, WorkerLoop, WorkerReport
from dask_dpsgd.engine._pusher import (
    NOTHING,
    Pusher,
    abandoned,
    await_reply,
    reach,
)


def round_context(worker: int, n_workers: int, threads: int, round: int,
                  random_state: int | None, lag: int, trained: bool,
                  plans: Sequence[Any] | None) -> WorkerContext:
    """Worker ``worker``'s context in round ``round``.

    Its seed is ``SeedSequence(random_state, spawn_key=(round, worker))``, so a round's
    randomness depends on the round and the worker, not on which process runs it (a
    resumed fit and :func:`run_in_process` draw what a cluster fit draws).
    """
    return WorkerContext(worker, n_workers, threads, round,
                         np.random.SeedSequence(random_state, spawn_key=(round, worker)),
                         lag, trained, None if plans is None else plans[worker])


def drive(loop: WorkerLoop, server: Any, pusher: Pusher,
          aborted: Callable[[], bool] | None = None) -> None:
    """Run ``loop`` to the end of its round, pushing every update through ``pusher``.

    Parameters
    ----------
    loop : WorkerLoop
    server : distributed.Actor or LocalServer
        The parameter server (for pulls; pushes go through ``pusher``).
    pusher : Pusher
        Its ``lag`` is the fit's.
    aborted : callable or None
        Polled while waiting on the server (the driver abandoned the segment).
    """
    lag = pusher.lag
    # Synchronous parts first (the warm-up), each from the parameters holding exactly
    # the updates before its slot.
    for part in getattr(loop, "sync_parts", ()):
        pusher.flush()
        version, params = await_reply(server.pull_after(part.after, part.request),
                                      aborted)
        compute_part = getattr(loop, "compute_part")  # noqa: B009 - optional method
        pusher.send(compute_part(part, params), version, part=(part.slot, part.n_parts))
    n = loop.n_updates
    prefetched: dict[int, tuple[int, Any]] = {}  # update index -> (version, params)
    asked: collections.deque[int | None] = collections.deque()  # per push in flight
    # This worker's latest ``lag`` updates: pushed, not in a reply's parameters yet.
    recent: collections.deque[Any] = collections.deque(maxlen=lag)

    def take(reply: Any) -> None:
        if reply is None:
            return
        target = asked.popleft() if asked else None
        if target is not None:
            prefetched[target] = (reply.version, reply.payload)

    i = 0
    while n is None or i < n:
        if i in prefetched:
            version, params = prefetched.pop(i)
            unseen: tuple[Any, ...] = tuple(recent)
        else:
            # Nothing brought by a reply: wait for the push in flight (so the pull
            # sees it, as a lag-0 reply would), then pull.
            take(pusher.flush())
            if i in prefetched:
                version, params = prefetched.pop(i)
            else:
                version, params = await_reply(server.pull(loop.request(i)), aborted)
            unseen = ()
        delta = loop.compute(i, params, unseen)
        if delta is None:
            break
        target = i + 1 + lag
        if n is None or target < n:
            asked.append(target)
            take(pusher.send(delta, version, loop.request(target)))
        else:
            asked.append(None)
            take(pusher.send(delta, version, NOTHING))
        recent.append(delta)
        i += 1
    take(pusher.flush())


def round_task(server: Any, shard: Any, algorithm: Algorithm, ctx: WorkerContext,
               token: str = "") -> WorkerReport:
    """One worker's round: build its loop, drive it, report (runs as a Dask task)."""
    numba.set_num_threads(ctx.threads)
    server = reach(server)
    t0 = time.perf_counter()

    def aborted() -> bool:
        return abandoned(token)

    loop = algorithm.worker(shard, ctx)
    pusher = Pusher(server, ctx.worker, ctx.lag, aborted)
    try:
        drive(loop, server, pusher, aborted)
    finally:
        close = getattr(loop, "close", None)
        if close is not None:
            close()
    return WorkerReport(ctx.worker, pusher.n_sent, pusher.n_applied, pusher.n_rejected,
                        pusher.wait_seconds, time.perf_counter() - t0, loop.report())


def evaluate_task(server: Any, shard: Any, algorithm: Any,
                  threads: int) -> tuple[float, float]:
    """A shard's ``(sum, count)`` of the algorithm's score at the server's parameters."""
    numba.set_num_threads(threads)
    server = reach(server)
    _, params = server.pull(algorithm.evaluate_request(shard)).result()
    return algorithm.evaluate(shard, params)


def prepare_task(algorithm: Any, *parts: Any) -> Any:
    """A worker's shard from its parts (runs where they live)."""
    return algorithm.prepare(list(parts))


def shard_size_task(algorithm: Any, shard: Any) -> int:
    """Samples in a placed shard."""
    return int(algorithm.shard_size(shard))
