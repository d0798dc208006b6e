"""Live training metrics in the Dask dashboard (issue #6).

While a fit runs, the driver publishes a small record of scalars (updates applied,
updates/s, staleness, perplexity or mean episode return) about twice a second as a Dask
*event* (``Client.log_event`` on the topic :data:`TOPIC`). A scheduler plugin,
:class:`LiveMetricsPlugin`, registered by the client at fit time, keeps the records of
the last fits in ring buffers and serves them from the scheduler's HTTP server (the
dashboard's port):

* ``<dashboard>/dpsgd/status``: a Bokeh page of live curves, like Dask's own pages;
* ``<dashboard>/dpsgd/metrics.json``: the same series as plain JSON.

Events rather than a custom RPC handler because they are Dask's own channel for this:
they need nothing on the scheduler to be received (``client.get_events(TOPIC)`` reads
them even where the plugin was refused), the plugin sees each one through the
``SchedulerPlugin.log_event`` hook, and it replays those logged before it started. Any
failure here (no dashboard, a scheduler that cannot import this package, an old
scheduler) is logged at DEBUG and the fit goes on: metrics are a convenience, never a
reason to fail a fit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from dask_dpsgd.engine._live_page import add_routes
from dask_dpsgd.engine._live_store import (
    PLUGIN_NAME,
    ROUTE,
    TOPIC,
    MetricsStore,
)

logger = logging.getLogger(__name__)


def metrics_page_url(dashboard_link: str | None, fit_id: str | None = None
                     ) -> str | None:
    """URL of the live metrics page next to Dask's ``.../status`` dashboard link."""
    if not dashboard_link:
        return None
    base = dashboard_link.split("?", 1)[0]
    if base.endswith("/status"):
        base = base[:-len("/status")]
    url = f"{base.rstrip('/')}/{ROUTE}/status"
    return f"{url}?fit={fit_id}" if fit_id else url


def live_page_banner(dashboard_link: str | None, page_url: str | None) -> str:
    """The lines a verbose fit (and the command line) prints about where to watch it.

    Dask's own pages cannot link to the live metrics page: ``distributed`` has no API
    to add a page to its dashboard's navigation bar or "More..." menu (both are lists
    fixed when the scheduler starts, ``distributed.dashboard.scheduler``), and the
    only supported extension, the ``distributed.scheduler.http.routes`` setting, adds
    routes, not links, and only to a scheduler started after it is set. So the page's
    URL is printed, next to the dashboard's; the page links back to the dashboard.

    Parameters
    ----------
    dashboard_link : str or None
        Dask's dashboard link.
    page_url : str or None
        The live metrics page (:func:`metrics_page_url`).

    Returns
    -------
    str
        Several lines, or ``""`` when there is neither.
    """
    if not dashboard_link and not page_url:
        return ""
    lines = ["=" * 72]
    if dashboard_link:
        lines.append(f"Dask dashboard: {dashboard_link}")
    if page_url:
        lines.append(f"Live training metrics: {page_url}")
        lines.append("  (a dask-dpsgd page on the dashboard's server: Dask's own pages "
                     "have no link to it)")
    lines.append("=" * 72)
    return "\n".join(lines)


def _scalar(value: Any) -> float | int | str | None:
    """A JSON- and msgpack-safe scalar: numpy numbers to Python, NaN/inf to None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, int)):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


class LiveMetricsPlugin(SchedulerPlugin):
    """Scheduler plugin keeping the published records and serving the pages.

    Registered by :func:`live_metrics` with ``client.register_plugin``; ``idempotent``
    so a second fit on the same cluster keeps the first one's plugin (and history).
    """

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self) -> None:
        self.store = MetricsStore()

    def start(self, scheduler: Any) -> None:
        """Replay the records logged so far and add the HTTP routes (if any server)."""
        for when, msg in scheduler.get_events(TOPIC):
            self.store.ingest(when, msg)
        app = getattr(scheduler, "http_application", None)
        if app is None:
            return
        add_routes(app, scheduler)

    def log_event(self, topic: str, msg: Any) -> None:
        """Scheduler hook, called for every event logged on the cluster."""
        if topic == TOPIC:
            self.store.ingest(time.time(), msg)


class LiveMetrics:
    """The driver's publisher of one fit's live records.

    Parameters
    ----------
    client : distributed.Client
    kind : {"lda", "a2c"}
    title : str
        Shown on the page.
    dashboard_link : str or None
        Dask's dashboard link; the page's URL is derived from it.
    min_interval : float
        Seconds between published records (unless forced).

    Attributes
    ----------
    fit_id : str
    url : str or None
        The fit's page, or None without a dashboard.
    """

    def __init__(self, client: Any, kind: str, title: str,
                 dashboard_link: str | None, min_interval: float = 0.4) -> None:
        self.client = client
        self.kind = kind
        self.title = title
        self.fit_id = f"{kind}-{uuid.uuid4().hex[:8]}"
        self.url = metrics_page_url(dashboard_link, self.fit_id)
        self.min_interval = min_interval
        self._enabled = True
        self._t0 = time.perf_counter()
        self._last_t: float | None = None
        self._last_updates: float | None = None

    def _send(self, msg: dict[str, Any]) -> None:
        if not self._enabled:
            return
        try:
            self.client.log_event(TOPIC, msg)
        except Exception as exc:  # a scheduler refusing events must not stop a fit
            logger.debug("dask-dpsgd: live metrics off, log_event failed: %r", exc)
            self._enabled = False

    def open(self) -> None:
        """Register the plugin (once per cluster) and announce the fit."""
        try:
            self.client.register_plugin(LiveMetricsPlugin())
        except Exception as exc:  # no dashboard page; events still reach the scheduler
            logger.debug("dask-dpsgd: live metrics page unavailable, the scheduler "
                         "refused the plugin: %r", exc)
            self.url = None
        self._send({"fit": self.fit_id, "event": "start", "kind": self.kind,
                    "title": self.title})

    def due(self) -> bool:
        """Whether a record would be published now (so callers can skip polling)."""
        return (self._enabled and (self._last_t is None or time.perf_counter()
                                   - self._last_t >= self.min_interval))

    def publish(self, record: dict[str, Any], force: bool = False) -> None:
        """Publish the scalars of ``record`` plus ``time/updates_per_s``.

        ``time/updates_per_s`` is the rate of ``train/updates`` since the previous
        record; records arriving sooner than ``min_interval`` are dropped unless
        ``force``.
        """
        if not (force or self.due()):
            return
        now = time.perf_counter()
        point = {k: _scalar(v) for k, v in record.items()
                 if v is None or isinstance(v, (str, int, float))
                 or hasattr(v, "__float__")}
        # One clock for the whole fit (records' own elapsed times restart with each
        # recovered segment), so the curves' x-axis only moves forward.
        point["time/elapsed_s"] = now - self._t0
        updates = point.get("train/updates")
        if isinstance(updates, (int, float)):
            if self._last_t is not None and self._last_updates is not None \
                    and now > self._last_t:
                point["time/updates_per_s"] = ((updates - self._last_updates)
                                               / (now - self._last_t))
            self._last_updates = updates
        self._last_t = now
        self._send({"fit": self.fit_id, "event": "point", "point": point})

    def close(self, status: str) -> None:
        """Mark the fit ``"done"`` or ``"failed"`` on the page."""
        self._send({"fit": self.fit_id, "event": "end", "status": status})


@contextlib.contextmanager
def live_metrics(client: Any, kind: str, title: str,
                 dashboard_link: str | None) -> Iterator[LiveMetrics]:
    """A :class:`LiveMetrics` open for the body, closed as done or failed."""
    live = LiveMetrics(client, kind, title, dashboard_link)
    live.open()
    try:
        yield live
    except BaseException:
        live.close("failed")
        raise
    live.close("done")
