"""Warnings the estimators emit about their distributed runs."""

from __future__ import annotations

import warnings


class StaleUpdatesWarning(UserWarning):
    """Some pushes were rejected because they were staler than ``max_staleness``."""


class WorkerLostWarning(UserWarning):
    """Workers were lost during a fit; it recovered and went on without them."""


def _warn_stale_updates(n_rejected: int, n_received: int, limit: int | None,
                        auto: bool, stacklevel: int) -> None:
    """Warn that ``n_rejected`` of ``n_received`` pushes were too stale (if any were).

    Only for a limit the user chose: under ``max_staleness="auto"`` rejecting the
    pushes of a worker that fell behind the paper's bound is part of the algorithm
    (a loaded or shared machine does it now and then), and it is reported in the
    fitted counters and ``history_`` without a warning.

    Parameters
    ----------
    n_rejected, n_received : int
    limit : int or None
        The ``max_staleness`` used.
    auto : bool
        Whether it was ``max_staleness="auto"``.
    stacklevel : int
        Of the warning, counted from the caller of this function.
    """
    if not n_rejected or auto:
        return
    warnings.warn(f"{n_rejected} of {n_received} updates were rejected as staler than "
                  f"max_staleness={limit}", StaleUpdatesWarning,
                  stacklevel=stacklevel + 1)
