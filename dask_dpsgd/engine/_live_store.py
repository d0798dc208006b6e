"""The live metrics kept on the scheduler: the records of the last fits (no Dask).

Shared by the driver side (:mod:`.live`: the event topic and plugin name it uses) and
the pages (:mod:`.live_page`: what they read), so neither imports the other's module.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

# Event topic of the published records, and the plugin's name on the scheduler.
TOPIC = "dask-dpsgd-metrics"
PLUGIN_NAME = "dask-dpsgd-live-metrics"
# The pages live under <dashboard>/<ROUTE>/.
ROUTE = "dpsgd"
# Ring buffers: the last MAX_FITS fits, the last MAX_POINTS records of each (at two
# records a second, a little over an hour).
MAX_FITS = 20
MAX_POINTS = 8192


class MetricsStore:
    """The records of the last fits, in arrival order (pure bookkeeping, no Dask).

    A message is a dict with ``fit`` (id) and ``event``: ``"start"`` (with ``kind`` and
    ``title``), ``"point"`` (with ``point``, a dict of scalars under the metric keys of
    ``history_``) or ``"end"`` (with ``status``).
    """

    def __init__(self, max_fits: int = MAX_FITS, max_points: int = MAX_POINTS) -> None:
        self.max_fits = max_fits
        self.max_points = max_points
        self.fits: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def ingest(self, when: float, msg: Any) -> None:
        """Record one message logged at time ``when`` (seconds since the epoch)."""
        if not isinstance(msg, dict) or not isinstance(msg.get("fit"), str):
            return
        fit = self.fits.get(msg["fit"])
        if fit is None:
            fit = {"id": msg["fit"], "kind": None, "title": msg["fit"],
                   "status": "running", "started": when, "updated": when,
                   "points": deque(maxlen=self.max_points)}
            self.fits[msg["fit"]] = fit
            while len(self.fits) > self.max_fits:
                self.fits.popitem(last=False)
        fit["updated"] = when
        event = msg.get("event")
        if event == "start":
            fit["kind"] = msg.get("kind")
            fit["title"] = str(msg.get("title", fit["title"]))
            fit["started"] = when
        elif event == "point" and isinstance(msg.get("point"), dict):
            fit["points"].append({"time": when, **msg["point"]})
        elif event == "end":
            fit["status"] = str(msg.get("status", "done"))

    def latest_id(self) -> str | None:
        """Id of the fit that started last."""
        return next(reversed(self.fits), None)

    def series(self, fit_id: str) -> dict[str, list[Any]]:
        """Columns of one fit's records (a key missing from a record gives None)."""
        points = list(self.fits[fit_id]["points"])
        keys: dict[str, None] = {}
        for p in points:
            keys.update(dict.fromkeys(p))
        return {k: [p.get(k) for p in points] for k in keys}

    def summary(self, fit_id: str, with_series: bool = True) -> dict[str, Any]:
        """One fit as a JSON-ready dict: identity, status, latest record, series."""
        fit = self.fits[fit_id]
        out = {k: fit[k] for k in ("id", "kind", "title", "status", "started",
                                   "updated")}
        out["n_points"] = len(fit["points"])
        out["latest"] = fit["points"][-1] if fit["points"] else {}
        if with_series:
            out["series"] = self.series(fit_id)
        return out
