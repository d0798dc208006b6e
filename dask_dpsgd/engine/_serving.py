"""The driver's side of one parameter server: start it, and end its segment cleanly.

Both estimators run a fit as one or more *segments*: a parameter-server actor plus
worker tasks. A segment ends normally, on an error, or because a worker left the
cluster; :func:`serving` turns any error explained by a lost worker into
:class:`~dask_dpsgd.engine._cluster.WorkerLostError` (the signal to recover) and
always releases the segment's worker tasks and the actor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from dask_dpsgd._server.actor import ParameterServer
from dask_dpsgd._server.state import UpdateRule
from dask_dpsgd.engine._cluster import WorkerLostError, lost_workers
from dask_dpsgd.engine._pusher import abort_segment, close_server


def start_server(client: Any, rule: UpdateRule,
                 max_staleness: int | None, address: str, key: str,
                 poll: float = 1.0) -> tuple[Any, Any]:
    """Start a :class:`ParameterServer` actor pinned to ``address``.

    Raises :class:`WorkerLostError` if that worker leaves before the actor starts
    (checked every ``poll`` seconds).

    Returns
    -------
    future : distributed.Future
        Keep it: releasing it destroys the actor.
    server : distributed.Actor
        The proxy workers call.
    """
    future = client.submit(ParameterServer, rule, max_staleness,
                           actor=True, workers=[address], allow_other_workers=False,
                           key=key)
    while True:
        try:
            return future, future.result(timeout=poll)
        except TimeoutError:
            # Pinned to a worker that died before the scheduler placed it, the actor
            # would wait for that worker forever (seen when a kill hit a fit's start).
            if lost_workers(client, [address]):
                client.cancel([future])
                raise WorkerLostError([address]) from None


class ServerWatch:
    """What the driver knows of a segment's server version, to count updates lost.

    ``checkpoint_version`` is the server's version in the driver's last checkpoint (what
    a recovery restarts from); ``seen_version`` the latest version the driver read.
    When a worker is lost, the updates applied after the checkpoint are discarded:
    :func:`serving` reads the version at the loss from the server if its worker lives
    (exact), else falls back to ``seen_version`` (a lower bound).
    """

    def __init__(self) -> None:
        self.checkpoint_version = 0
        self.seen_version = 0

    def seen(self, version: int) -> None:
        """Record a version read from the server."""
        self.seen_version = max(self.seen_version, int(version))

    def checkpoint(self, version: int) -> None:
        """Record the version of the checkpoint just taken."""
        self.seen(version)
        self.checkpoint_version = int(version)


@contextlib.contextmanager
def serving(client: Any, addresses: list[str], token: str, server_future: Any,
            server: Any, watch: ServerWatch | None = None) -> Iterator[None]:
    """Run a segment's body; translate losses; always release its tasks and actor.

    Parameters
    ----------
    client : distributed.Client
    addresses : list of str
        The segment's workers; ``addresses[0]`` holds the actor.
    token : str
        The segment's tasks poll this token to learn they are abandoned.
    server_future, server
        From :func:`start_server`.
    watch : ServerWatch or None
        Versions seen by the driver; a :class:`WorkerLostError` leaving the block then
        carries ``updates_lost`` (applied after the last checkpoint) and
        ``updates_lost_exact`` (False when the server's worker was the one lost, so the
        count is the lower bound ``seen_version - checkpoint_version``).
    """
    try:
        yield
    except Exception as exc:
        # The actor's worker may be the one that died: its callers see OSError,
        # CancelledError or "Worker holding Actor was lost". Report it as the loss it is.
        if isinstance(exc, WorkerLostError):
            err = exc
        else:
            lost = lost_workers(client, addresses)
            if not lost:
                raise
            err = WorkerLostError(lost)
            err.__cause__ = exc
        if watch is not None:
            exact = False
            if addresses[0] not in err.addresses:
                try:
                    watch.seen(server.stats().result(timeout=5).version)
                    exact = True
                except Exception:  # noqa: BLE001 - its worker may go too; keep the bound
                    pass
            err.updates_lost = max(0, watch.seen_version - watch.checkpoint_version)
            err.updates_lost_exact = exact
        if err is exc:
            raise
        raise err from exc
    finally:
        # Release the segment's tasks on live workers; close the server if its worker
        # lives (calls to a dead one wait for distributed's connect timeouts).
        gone = set(lost_workers(client, addresses))
        abort_segment(client, [a for a in addresses if a not in gone], token)
        if addresses[0] not in gone:
            close_server(server)
        client.cancel([server_future])
