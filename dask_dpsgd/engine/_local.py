"""One worker's rounds in this process, with no cluster: the algorithms' unit-test path.

The parameter server runs on a private event loop thread and is called the way a task
in the server's own worker calls it (:class:`~dask_dpsgd.engine._pusher.LocalServer`),
so the algorithm's loop, the pusher and the server are the code a fit runs.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numba

from dask_dpsgd._server.actor import ParameterServer
from dask_dpsgd.algorithm import Algorithm, Checkpoint, WorkerReport
from dask_dpsgd.engine._pusher import LocalServer, Pusher
from dask_dpsgd.engine._worker import drive, round_context


def run_in_process(algorithm: Algorithm, data: Any, *, n_rounds: int = 1, lag: int = 0,
                   threads: int = 1, random_state: int = 0,
                   resume: Checkpoint | None = None
                   ) -> tuple[Checkpoint, list[WorkerReport]]:
    """Run ``n_rounds`` rounds of one worker over all of ``data``, no Dask involved.

    Parameters
    ----------
    algorithm : Algorithm
    data : object
        Cut by ``algorithm.split(data, 1)``.
    n_rounds : int
    lag : {0, 1}
    threads : int
        Numba threads of the worker (1: serial, more: Hogwild).
    random_state : int
        As in :func:`dask_dpsgd.engine.fit` (same seeds: a serial fit repeats this).
    resume : Checkpoint or None

    Returns
    -------
    checkpoint : Checkpoint
        The parameters after the last round.
    reports : list of WorkerReport
        One per round.
    """
    ckpt = resume if resume is not None else Checkpoint(None, 0, 0)
    shard = algorithm.prepare(list(algorithm.split(data, 1)))
    sizes = [algorithm.shard_size(shard)] if hasattr(algorithm, "shard_size") else [0]
    server = ParameterServer(algorithm.make_rule(ckpt.snapshot, ckpt.updates_done))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    reports = []
    try:
        local = LocalServer(server, loop)
        for r in range(ckpt.rounds_done, n_rounds):
            done = ckpt.updates_done + server.state.version
            plan = getattr(algorithm, "plan", lambda *a: None)(r, sizes, done)
            ctx = round_context(0, 1, threads, r, random_state, lag, done > 0, plan)
            worker_loop = algorithm.worker(shard, ctx)
            pusher = Pusher(local, 0, lag)
            try:
                drive(worker_loop, local, pusher)
            finally:
                getattr(worker_loop, "close", lambda: None)()
            reports.append(WorkerReport(0, pusher.n_sent, pusher.n_applied,
                                        pusher.n_rejected, pusher.wait_seconds, 0.0,
                                        worker_loop.report()))
    finally:
        numba.set_num_threads(previous)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
    return (Checkpoint(server.state.rule.snapshot(),
                       ckpt.updates_done + server.state.version, n_rounds), reports)
