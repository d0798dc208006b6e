"""The worker side of fire-and-forget: one awaited actor call in flight.

Raw un-awaited actor calls reorder, open a connection each and lose their exceptions
(docs/design.rst, "Pusher"). A :class:`Pusher` keeps exactly one call in flight per
worker: the worker sends an update and goes on computing; the reply (fresh parameters)
is collected just before the next send. Every reply is awaited, so errors raised by the
server surface in the worker's task, updates from one worker arrive in order, and a
server slower than the workers throttles them (backpressure) instead of queueing without
bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import time
from collections.abc import Callable
from typing import Any

import distributed

#: ``Pusher.send``'s request meaning "push only, ask for nothing".
NOTHING: Any = type("Nothing", (), {"__repr__": lambda self: "NOTHING"})()

# Seconds between checks of the abort flag while a worker waits on the server.
POLL_SECONDS = 0.25


class FitAbandoned(RuntimeError):
    """The driver abandoned this fit's server (recovery from a lost worker, or the end)."""


def await_reply(future: Any, aborted: Callable[[], bool] | None = None) -> Any:
    """``future.result()``, but give up as soon as ``aborted()`` turns true.

    A call to an actor whose worker died can hang for the comm timeouts (tens of
    seconds) while distributed retries the connection; the worker thread would stay
    blocked, and with one Dask thread per worker the recovered fit could not run there.
    Polling lets the driver release it (see ``dpsvi.abort_segment``).
    """
    if aborted is None:
        return future.result()
    while True:
        if aborted():
            raise FitAbandoned("the fit abandoned this parameter server")
        try:
            return future.result(timeout=POLL_SECONDS)
        except (TimeoutError, concurrent.futures.TimeoutError):
            continue


class LocalServer:
    """A parameter-server actor called from a task in the worker process that holds it.

    Distributed routes a task's actor call through the network stack even when the
    actor lives in the task's own process (only actor-to-actor calls are short-cut),
    so the serial and Hogwild layouts, and the worker hosting the server in any
    layout, paid a full serialise-send-deserialise round trip per update to reach an
    object in their own memory. Here the call runs as the same coroutine on the same
    event loop that an actor call would use (so calls from every worker still run one
    at a time, in arrival order), without the trip.

    The update path (:attr:`BY_REFERENCE`: pushes and pulls) passes arguments and
    replies by reference, as the network path does in effect: an actor call captures
    its arguments and serialises them later, on the event loop, so a caller hands an
    update over when it sends it and must not change it afterwards (the engine's
    callers send fresh arrays or arrays they never write: a shard's word ids), and the
    server's replies are arrays built for the reply, which it keeps no reference to
    (``ParameterServer``'s contract; tested). Copying them would cost a pass several
    percent (docs/design.rst, "Pusher"). Every other call deep-copies both ways.
    """

    BY_REFERENCE = frozenset({"push", "push_part", "push_pull", "pull", "pull_after"})

    def __init__(self, obj: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._obj = obj
        self._loop = loop

    def __getattr__(self, name: str) -> Callable[..., concurrent.futures.Future]:
        method = getattr(self._obj, name)
        by_reference = name in self.BY_REFERENCE

        async def run(args: tuple[Any, ...]) -> Any:
            reply = await method(*args)
            return reply if by_reference else copy.deepcopy(reply)

        def call(*args: Any) -> concurrent.futures.Future:
            # Read like an actor future: .result(timeout) returns or raises the reply.
            return asyncio.run_coroutine_threadsafe(
                run(args if by_reference else copy.deepcopy(args)), self._loop)

        return call


def reach(server: Any) -> Any:
    """How a worker task should call ``server``: directly when its actor is local.

    Outside a worker, or for an actor held by another worker, the actor proxy itself.
    """
    try:
        worker = distributed.get_worker()
    except ValueError:
        return server
    obj = worker.state.actors.get(server.key)
    if obj is None:
        return server
    return LocalServer(obj, worker.loop.asyncio_loop)


class Pusher:
    """Send updates to a parameter-server actor with at most one call in flight.

    Parameters
    ----------
    server : distributed.Actor or LocalServer
        Proxy of a :class:`dask_dpsgd._server.actor.ParameterServer` (:func:`reach`).
    worker : int
        This worker's index, sent with every push.
    lag : {0, 1}
        0: wait for each reply before computing on (serial within the worker, the
        exact SVI/SGD sequence when there is one worker). 1: compute the next step while
        the previous push is in flight; the parameters used are then one own update
        behind (pipelining).
    aborted : callable or None
        Polled while waiting for a reply; when it returns true the wait raises
        :class:`FitAbandoned`.

    Attributes
    ----------
    n_sent, n_applied, n_rejected : int
        Pushes sent and the server's verdicts received so far.
    wait_seconds : float
        Time spent blocked on replies.
    """

    def __init__(self, server: Any, worker: int, lag: int,
                 aborted: Callable[[], bool] | None = None) -> None:
        if lag not in (0, 1):
            raise ValueError(f"lag must be 0 or 1, got {lag!r}")
        self.server = server
        self.aborted = aborted
        self.worker = worker
        self.lag = lag
        self._inflight: Any = None
        self.n_sent = 0
        self.n_applied = 0
        self.n_rejected = 0
        self.wait_seconds = 0.0

    def _collect(self) -> Any:
        if self._inflight is None:
            return None
        t = time.perf_counter()
        reply = await_reply(self._inflight, self.aborted)
        self.wait_seconds += time.perf_counter() - t
        self._inflight = None
        if reply.applied:
            self.n_applied += 1
        else:
            self.n_rejected += 1
        return reply

    def send(self, delta: Any, base_version: int, request: Any = NOTHING,
             part: tuple[int, int] | None = None) -> Any:
        """Push ``delta``; ask for ``request`` in the same call (:data:`NOTHING`, the
        default: push only).

        ``part=(slot, n_parts)`` pushes one part of a synchronous update instead
        (``ParameterServer.push_part``; no request).

        ``delta`` is handed over: the caller must not write to its arrays afterwards
        (the call may read them later, on the event loop; :class:`LocalServer`).

        Returns
        -------
        reply : PushReply or None
            With ``lag=0`` the reply to this push, with ``lag=1`` the reply to the
            previous one (``None`` for the first).
        """
        previous = self._collect()
        if part is not None:
            self._inflight = self.server.push_part(delta, base_version, self.worker, part)
        elif request is NOTHING:
            self._inflight = self.server.push(delta, base_version, self.worker)
        else:
            self._inflight = self.server.push_pull(delta, base_version, self.worker,
                                                   request)
        self.n_sent += 1
        if self.lag == 0:
            return self._collect()
        return previous

    def flush(self) -> Any:
        """Wait for the call in flight; returns its reply (or ``None``)."""
        return self._collect()


def close_server(server: Any, timeout: float = 5.0) -> None:
    """Close a parameter-server actor, waking any worker blocked on it; never raises.

    Its worker may already be gone (that may be why the fit is closing it).
    """
    try:
        server.close().result(timeout=timeout)
    except Exception:  # noqa: BLE001 - best effort on a server being abandoned
        pass


# Segments (one parameter server each) the driver abandoned, per worker process: their
# tasks stop waiting on the dead server at once (see abort_segment).
_ABANDONED: set[str] = set()


def _abandon(token: str) -> None:
    _ABANDONED.add(token)


def abandoned(token: str) -> bool:
    """Whether the driver abandoned segment ``token`` (checked by worker tasks)."""
    return token in _ABANDONED


def abort_segment(client: Any, addresses: list[str], token: str) -> None:
    """Tell the workers' still-running tasks of segment ``token`` to give up."""
    try:
        client.run(_abandon, token, workers=addresses, on_error="ignore")
    except Exception:  # noqa: BLE001 - a worker may be gone between check and call
        pass
