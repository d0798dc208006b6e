"""The parameter server as a Dask Actor: a thin shell around :class:`ServerState`.

Nothing here imports Dask: a class becomes an actor when it is submitted with
``client.submit(ParameterServer, ..., actor=True)``. The methods are ``async def`` so they
run on the worker's event loop, one at a time, without a hop to the actor thread
(MECHANICS.md D1); being short and never awaiting anything, each runs atomically, which is
what makes the server lock-free and applies pushes strictly in arrival order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dask_dpsgd._server.state import AddRule, ServerState, SVIRule

RULES = {"svi": SVIRule, "add": AddRule}


class ParameterServer:
    """Global parameters of one fit, taking pushes and serving pulls.

    Parameters
    ----------
    rule : {"svi", "add"}
        Which update rule holds the parameters.
    rule_kwargs : dict
        Arguments of the rule's constructor (initial parameters, step sizes).
    max_staleness : int or None
        Passed to :class:`ServerState`.
    """

    def __init__(self, rule: str, rule_kwargs: dict[str, Any],
                 max_staleness: int | None = None) -> None:
        self.state = ServerState(RULES[rule](**rule_kwargs), max_staleness=max_staleness)

    async def push(self, delta: Any, base_version: int, worker: int) -> tuple[bool, int]:
        """Apply (or reject) one update; returns ``(applied, version)``."""
        outcome = self.state.push(delta, base_version, worker)
        return outcome.applied, outcome.version

    async def push_pull(self, delta: Any, base_version: int, worker: int,
                        request: Any) -> tuple[bool, int, Any]:
        """Apply (or reject) one update, then read fresh parameters in the same call.

        Returns
        -------
        applied : bool
        version : int
            Version of the returned parameters.
        payload : object
            The rule's answer to ``request``.
        """
        outcome = self.state.push(delta, base_version, worker)
        version, payload = self.state.pull(request)
        return outcome.applied, version, payload

    async def pull(self, request: Any = None) -> tuple[int, Any]:
        """``(version, parameters)`` for the request."""
        return self.state.pull(request)

    async def stats(self) -> dict[str, Any]:
        """Counters (see :meth:`ServerState.stats`)."""
        return self.state.stats()

    async def staleness_histogram(self) -> np.ndarray:
        """Applied updates per staleness value."""
        return self.state.staleness_histogram()

    async def snapshot(self) -> tuple[int, dict[str, np.ndarray]]:
        """``(version, full parameters)``."""
        return self.state.version, self.state.rule.snapshot()
