"""Warnings the estimators emit about their distributed runs."""

from __future__ import annotations


class StaleUpdatesWarning(UserWarning):
    """Some pushes were rejected because they were staler than ``max_staleness``."""


class WorkerLostWarning(UserWarning):
    """Workers were lost during a fit; it recovered and went on without them."""
