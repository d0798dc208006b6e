"""What both estimators record after a fit: layout, server accounting, recoveries.

The estimator layer only reports (docs/design.rst, "Estimator API"): these helpers set
the fitted attributes the two estimators share from what the engine handed back, and
warn about lost workers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from dask_dpsgd._utils._validation import effective_mode
from dask_dpsgd.exceptions import WorkerLostWarning


def record_layout(est: Any, threads: Sequence[int]) -> None:
    """``n_workers_``, ``threads_per_worker_`` and ``parallelism_`` of the fit whose
    workers ran ``threads`` numba threads each."""
    est.n_workers_ = len(threads)
    est.threads_per_worker_ = list(threads)
    est.parallelism_ = effective_mode(threads)


def record_server(est: Any, *, counts: Any, pushes_sent: int,
                  history: list[dict[str, Any]],
                  live_url: str | None, events: list[dict[str, Any]],
                  restart_point: str, stacklevel: int) -> None:
    """Update accounting, staleness, history and recoveries of the fit.

    Parameters
    ----------
    est : estimator
    counts : dask_dpsgd.engine.ServerCounts
        The parameter server's counters over the fit.
    pushes_sent : int
        Pushes the workers sent.
    history : list of dict
    live_url : str or None
        The fit's live metrics page.
    events : list of dict
        Recovery events (each with ``workers`` and ``updates_lost``).
    restart_point : str
        What a recovery restarts from, for the warning ("the last checkpoint", ...).
    stacklevel : int
        Of the :class:`WorkerLostWarning`, counted from the caller of this function.
    """
    est.n_pushes_sent_ = pushes_sent
    est.n_updates_applied_ = counts.n_applied
    est.n_updates_rejected_ = counts.n_rejected_stale + counts.n_rejected_nonfinite
    est.staleness_mean_ = counts.staleness_mean
    est.staleness_max_ = counts.staleness_max
    est.staleness_histogram_ = np.trim_zeros(counts.staleness_histogram, "b")
    est.history_ = history
    est.live_metrics_url_ = live_url
    est.recovery_events_ = events
    est.updates_lost_ = sum(e["updates_lost"] for e in events)
    if events:
        lost = [a for e in events for a in e["workers"]]
        warnings.warn(
            f"{len(lost)} Dask worker(s) lost during the fit ({', '.join(lost)}); it "
            f"resumed {len(events)} time(s) from {restart_point} on the workers left, "
            f"discarding {est.updates_lost_} update(s) (see recovery_events_)",
            WorkerLostWarning, stacklevel=stacklevel + 1)
