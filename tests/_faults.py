"""Fault injection shared by the fault tests (and benchmarks/bench_faults.py): kill or
pause real worker processes."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np

# Seeds of the random kill points; victim = seed % 2 (0: the parameter server's
# worker, 1: the other), so both kinds of loss are covered.
KILL_SEEDS = (0, 1, 2)


def kill_point(seed: int, duration: float) -> tuple[int, float]:
    """The victim and a random moment of a fit lasting about ``duration`` seconds.

    Returns
    -------
    victim : int
        Index of the worker to kill in the sorted worker addresses (0 holds the
        parameter server).
    delay : float
        Seconds after the fit starts, uniform in 10-60 % of ``duration``.
    """
    rng = np.random.default_rng(seed)
    return seed % 2, float(rng.uniform(0.10, 0.60) * duration)


def signal_after(client, address: str, delay: float, sig: int = signal.SIGKILL,
                 resume_after: float | None = None) -> threading.Thread:
    """Send ``sig`` to the worker process at ``address`` after ``delay`` seconds.

    With ``resume_after``, send ``SIGCONT`` that many seconds later (a pause, with
    ``sig=signal.SIGSTOP``). Returns the started daemon thread.
    """
    pid = client.run(os.getpid, workers=[address])[address]

    def fire() -> None:
        time.sleep(delay)
        os.kill(pid, sig)
        if resume_after is not None:
            try:
                time.sleep(resume_after)
            finally:
                os.kill(pid, signal.SIGCONT)

    t = threading.Thread(target=fire, daemon=True)
    t.start()
    return t


def kill_after(client, address: str, delay: float) -> threading.Thread:
    """SIGKILL the worker process at ``address`` after ``delay`` seconds."""
    return signal_after(client, address, delay)


def check_recovery(est, victim_address: str, victim: int) -> None:
    """The recovery record of a fit that lost one worker: who, and what was lost."""
    assert len(est.recovery_events_) >= 1
    event = est.recovery_events_[0]
    assert event["workers"] == [victim_address]
    assert event["workers_left"] == 1
    assert event["updates_lost"] >= 0
    # The server's count at the loss is known exactly unless its own worker died.
    if victim == 1:
        assert event["updates_lost_exact"] is True
    assert est.updates_lost_ == sum(e["updates_lost"] for e in est.recovery_events_)
    assert est.n_pushes_sent_ == est.n_updates_applied_ + est.n_updates_rejected_
