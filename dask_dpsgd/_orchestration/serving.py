"""The driver's side of one parameter server: start it, and end its segment cleanly.

Both estimators run a fit as one or more *segments*: a parameter-server actor plus
worker tasks. A segment ends normally, on an error, or because a worker left the
cluster; :func:`serving` turns any error explained by a lost worker into
:class:`~dask_dpsgd._orchestration.cluster.WorkerLostError` (the signal to recover) and
always releases the segment's worker tasks and the actor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from dask_dpsgd._orchestration.cluster import WorkerLostError, lost_workers
from dask_dpsgd._orchestration.pusher import abort_segment, close_server
from dask_dpsgd._server.actor import ParameterServer


def start_server(client: Any, rule: str, rule_kwargs: dict[str, Any],
                 max_staleness: int | None, address: str, key: str
                 ) -> tuple[Any, Any]:
    """Start a :class:`ParameterServer` actor pinned to ``address``.

    Returns
    -------
    future : distributed.Future
        Keep it: releasing it destroys the actor.
    server : distributed.Actor
        The proxy workers call.
    """
    future = client.submit(ParameterServer, rule, rule_kwargs, max_staleness,
                           actor=True, workers=[address], allow_other_workers=False,
                           key=key)
    return future, future.result()


@contextlib.contextmanager
def serving(client: Any, addresses: list[str], token: str, server_future: Any,
            server: Any) -> Iterator[None]:
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
    """
    try:
        yield
    except Exception as exc:
        # The actor's worker may be the one that died: its callers see OSError,
        # CancelledError or "Worker holding Actor was lost". Report it as the loss it is.
        if isinstance(exc, WorkerLostError):
            raise
        lost = lost_workers(client, addresses)
        if lost:
            raise WorkerLostError(lost) from exc
        raise
    finally:
        # Release the segment's tasks on live workers; close the server if its worker
        # lives (calls to a dead one wait for distributed's connect timeouts).
        gone = set(lost_workers(client, addresses))
        abort_segment(client, [a for a in addresses if a not in gone], token)
        if addresses[0] not in gone:
            close_server(server)
        client.cancel([server_future])


# Server counters that add up across the segments of one fit.
COUNTERS = ("n_received", "n_applied", "n_rejected_stale", "n_rejected_nonfinite",
            "bytes_pushed", "bytes_pulled", "staleness_sum")


def merge_counts(base: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """Counters of earlier segments (``base``) plus this segment's server ``stats``."""
    out = {k: base.get(k, 0) + stats[k] for k in COUNTERS}
    out["staleness_max"] = max(base.get("staleness_max", 0), stats["staleness_max"])
    return out


def counts_record(counts: dict[str, Any]) -> dict[str, Any]:
    """The history/live-metrics keys of merged server counters (:func:`merge_counts`)."""
    n = counts["n_applied"]
    return {
        "train/updates": n,
        "train/staleness_mean": counts["staleness_sum"] / n if n else 0.0,
        "train/staleness_max": counts["staleness_max"],
        "comm/bytes_pushed": counts["bytes_pushed"],
        "comm/bytes_pulled": counts["bytes_pulled"],
    }


def merge_histograms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum of two staleness histograms of different lengths."""
    out = np.zeros(max(len(a), len(b)), dtype=np.int64)
    out[:len(a)] += a
    out[:len(b)] += b
    return out
