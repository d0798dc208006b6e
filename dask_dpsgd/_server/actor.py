"""The parameter server as a Dask Actor: a thin shell around :class:`ServerState`.

Nothing here imports Dask: a class becomes an actor when it is submitted with
``client.submit(ParameterServer, ..., actor=True)``. The methods are ``async def`` so
they run on the worker's event loop, one at a time, without a hop to the actor thread
(docs/design.rst, "Parameter server"); being short and never awaiting anything, each
runs atomically, which is what makes the server lock-free and applies pushes strictly in
arrival order.
"""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

import numpy as np

from dask_dpsgd._server.state import ServerState, ServerStats, UpdateRule


class PushReply(NamedTuple):
    """The server's answer to one push.

    Attributes
    ----------
    applied : bool
        Whether the update was applied (else rejected: stale or non-finite).
    version : int
        The server's version after the push (with a payload: the payload's version).
    payload : object or None
        The parameters the push asked for (:meth:`ParameterServer.push_pull`); ``None``
        for a push that asked for nothing.
    """

    applied: bool
    version: int
    payload: Any = None


class ParameterServer:
    """Global parameters of one fit, taking pushes and serving pulls.

    Parameters
    ----------
    rule : UpdateRule
        The update rule holding the initial parameters (shipped to the server's
        worker with the actor's construction).
    max_staleness : int or None
        Passed to :class:`ServerState`.

    Notes
    -----
    Reference contract of the update path (``push``, ``push_part``, ``push_pull``,
    ``pull``, ``pull_after``), on which a caller in the server's own process relies to
    skip copies (``LocalServer``): the server never writes to an update it is handed;
    once it has replied to an ordinary push (``push``, ``push_pull``) it holds no
    reference to that push's arrays, so the caller may reuse them (only a part of a
    synchronous update, ``push_part``, is kept until the other parts arrive); and every
    array it replies with is built for that reply and not kept.
    ``tests/server/test_actor.py`` checks all three for every rule.
    """

    def __init__(self, rule: UpdateRule, max_staleness: int | None = None) -> None:
        self.state = ServerState(rule, max_staleness=max_staleness)
        self._received: asyncio.Condition | None = None
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this parameter server was closed (its fit ended or is "
                               "recovering from a lost worker)")

    async def close(self) -> None:
        """Refuse further pushes and wake every worker waiting in :meth:`pull_after`.

        Called when a fit abandons this server (end, or recovery from a lost worker), so
        no worker thread stays blocked on it.
        """
        self._closed = True
        await self._notify()

    def _condition(self) -> asyncio.Condition:
        # Created on first use, inside the worker's event loop that runs these methods.
        if self._received is None:
            self._received = asyncio.Condition()
        return self._received

    async def _notify(self) -> None:
        cond = self._condition()
        async with cond:
            cond.notify_all()

    async def push(self, delta: Any, base_version: int, worker: int) -> PushReply:
        """Apply (or reject) one update."""
        self._check_open()
        outcome = self.state.push(delta, base_version, worker)
        await self._notify()
        return PushReply(outcome.applied, outcome.version)

    async def push_part(self, delta: Any, base_version: int, worker: int,
                        part: tuple[int, int]) -> PushReply:
        """One part ``part = (slot, n_parts)`` of a synchronous update (see
        :meth:`ServerState.push_part`)."""
        self._check_open()
        outcome = self.state.push_part(delta, base_version, worker, *part)
        await self._notify()
        return PushReply(outcome.applied, outcome.version)

    async def push_pull(self, delta: Any, base_version: int, worker: int,
                        request: Any) -> PushReply:
        """Apply (or reject) one update, then read the parameters ``request`` asks for
        in the same call (the reply's ``version`` is theirs)."""
        self._check_open()
        outcome = self.state.push(delta, base_version, worker)
        version, payload = self.state.pull(request)
        await self._notify()
        return PushReply(outcome.applied, version, payload)

    async def pull_after(self, n_received: int, request: Any = None) -> tuple[int, Any]:
        """Wait until ``n_received`` pushes have arrived, then pull.

        This is how the synchronous warm-up serialises the first updates of a fit:
        worker ``w`` computes the update in global slot ``g`` from parameters that
        include every update of slots ``< g``. Counting received (not applied) pushes
        means a rejected push cannot leave a worker waiting forever.
        """
        cond = self._condition()
        async with cond:
            await cond.wait_for(
                lambda: self._closed or self.state.n_received >= n_received)
        self._check_open()
        return self.state.pull(request)

    async def pull(self, request: Any = None) -> tuple[int, Any]:
        """``(version, parameters)`` for the request."""
        return self.state.pull(request)

    async def stats(self) -> ServerStats:
        """Counters (see :meth:`ServerState.stats`)."""
        return self.state.stats()

    async def staleness_histogram(self) -> np.ndarray:
        """Applied updates per staleness value."""
        return self.state.staleness_histogram()

    async def snapshot(self) -> tuple[int, dict[str, np.ndarray]]:
        """``(version, full parameters)``."""
        return self.state.version, self.state.rule.snapshot()

    async def request_stop(self) -> bool:
        """Ask the rule to end training (``rule.request_stop()``: its pulls then say
        done, so workers finish their segment); ``False`` for a rule that cannot."""
        request = getattr(self.state.rule, "request_stop", None)
        if request is None:
            return False
        request()
        await self._notify()
        return True

    async def progress(self) -> dict[str, Any]:
        """What the rule tracks of the workers' reports (``rule.progress()``; ``{}``
        for a rule that tracks nothing)."""
        progress = getattr(self.state.rule, "progress", None)
        return {} if progress is None else progress()
