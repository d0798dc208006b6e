"""The scheduler-side pages of the live training metrics (see :mod:`.live`).

Routes, added to the scheduler's HTTP application (the dashboard's port) when the
:class:`~dask_dpsgd.engine._live.LiveMetricsPlugin` starts:

``<prefix>dpsgd/status[?fit=<id>]``
    A Bokeh page of one fit's curves (default: the fit started last). It is a static
    Bokeh document whose ``AjaxDataSource`` polls ``series.json`` every second, so it
    needs no Bokeh server session; it loads BokehJS from the dashboard's own Bokeh
    server (``<prefix>static/js/``), so it works offline. Without Bokeh on the
    scheduler, a plain HTML table of the latest records.
``<prefix>dpsgd/metrics.json[?fit=<id>]``
    ``{"fits": [...]}``: every fit kept (or the one asked for) with its status, latest
    record and ``series`` (column name -> list).
``<prefix>dpsgd/series.json?fit=<id>``
    One fit's columns only (what the Bokeh data source reads).

The handlers look the plugin up on every request, so they answer 404 once it is
removed. They run on the scheduler's event loop, as the plugin's ``log_event`` hook
does: no locks.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import tornado.web as web

from dask_dpsgd.engine._live_store import PLUGIN_NAME, ROUTE, MetricsStore

logger = logging.getLogger(__name__)

# Curves of each kind of fit: (title, y-axis keys). x is always time/elapsed_s.
PANELS = {
    "lda": [("Minibatch per-word bound (documents part, training data; higher is "
             "better)", ["train/minibatch_bound_per_word"]),
            ("Training perplexity (only with evaluate_every > 0)",
             ["train/perplexity"]),
            ("Updates applied", ["train/updates"])],
    "a2c": [("Mean return, last 100 episodes", ["rollout/ep_rew_mean"]),
            ("Timesteps", ["time/total_timesteps"])],
}
COMMON_PANELS = [("Updates per second", ["time/updates_per_s"]),
                 ("Staleness", ["train/staleness_mean", "train/staleness_max"])]
COLORS = ("#1f77b4", "#d62728")
# Legend corner of a panel, by its first key, where the default (top left) would hide
# a curve that rises to its top.
LEGEND_AT = {"train/minibatch_bound_per_word": "bottom_right"}
# JSON has no NaN: unknown values travel as null, which BokehJS would plot as 0.
_NULL_TO_NAN = """
const out = {};
for (const [k, v] of Object.entries(cb_data.response)) {
  out[k] = v.map((x) => (x === null ? NaN : x));
}
return out;
"""


class _Handler(web.RequestHandler):
    def initialize(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def _store(self) -> MetricsStore:
        plugin = self.scheduler.plugins.get(PLUGIN_NAME)
        if plugin is None:
            raise web.HTTPError(404, "the dask-dpsgd live metrics plugin was removed")
        return plugin.store

    def _fit_id(self, store: MetricsStore, required: bool) -> str | None:
        fit_id = self.get_argument("fit", None)
        if fit_id is None and required:
            fit_id = store.latest_id()
        if fit_id is not None and fit_id not in store.fits:
            raise web.HTTPError(404, f"no fit {fit_id!r} on this scheduler")
        return fit_id


class MetricsJSON(_Handler):
    """``metrics.json``: every fit kept, or ``?fit=<id>``."""

    def get(self) -> None:
        store = self._store()
        fit_id = self._fit_id(store, required=False)
        ids = [fit_id] if fit_id else list(store.fits)
        self.write({"fits": [store.summary(i) for i in ids]})


class SeriesJSON(_Handler):
    """``series.json?fit=<id>``: columns only."""

    def get(self) -> None:
        store = self._store()
        fit_id = self._fit_id(store, required=True)
        self.write(page_series(store, fit_id) if fit_id else {})


class StatusPage(_Handler):
    """``status``: live Bokeh curves of one fit."""

    def get(self) -> None:
        store = self._store()
        fit_id = self._fit_id(store, required=True)
        if fit_id is None:
            self.write("<html><body><p>No dask-dpsgd fit has published metrics on "
                       "this scheduler yet.</p></body></html>")
            return
        try:
            page = bokeh_page(store, fit_id)
        except ImportError:
            page = table_page(store, fit_id)
        self.write(page)


def page_series(store: MetricsStore, fit_id: str) -> dict[str, list[Any]]:
    """A fit's columns, with every column its page plots (None where not yet known).

    A glyph whose column is missing draws nothing, not even later: LDA's perplexity
    appears only at evaluated passes.
    """
    cols = store.series(fit_id)
    n = len(next(iter(cols.values()), []))
    for _, keys in PANELS.get(store.fits[fit_id]["kind"], []) + COMMON_PANELS:
        for k in keys:
            cols.setdefault(k, [None] * n)
    cols.setdefault("time/elapsed_s", [None] * n)
    return cols


def _others(store: MetricsStore, fit_id: str) -> str:
    links = [f'<a href="status?fit={html.escape(i)}">{html.escape(f["title"])} '
             f"({html.escape(f['status'])})</a>"
             for i, f in reversed(store.fits.items()) if i != fit_id]
    return ("<p>Other fits: " + " | ".join(links) + "</p>") if links else ""


def bokeh_page(store: MetricsStore, fit_id: str) -> str:
    """A standalone Bokeh document polling ``series.json`` for ``fit_id``."""
    from bokeh.embed import file_html
    from bokeh.layouts import column, gridplot
    from bokeh.models import AjaxDataSource, CustomJS, Div
    from bokeh.plotting import figure
    from bokeh.resources import Resources

    fit = store.fits[fit_id]
    panels = PANELS.get(fit["kind"], []) + COMMON_PANELS
    keys = ["time/elapsed_s"] + [k for _, ks in panels for k in ks]
    initial: dict[str, list[float]] = {k: [] for k in keys}
    # Relative URLs: right under any HTTP prefix or proxy in front of the dashboard.
    source = AjaxDataSource(data_url=f"series.json?fit={fit_id}", method="GET",
                            polling_interval=1000, mode="replace", data=initial,
                            adapter=CustomJS(code=_NULL_TO_NAN))
    figures = []
    for title, ys in panels:
        fig = figure(title=title, height=260, sizing_mode="stretch_width",
                     x_axis_label="seconds since the fit started", tools="pan,"
                     "wheel_zoom,box_zoom,reset,save,hover")
        for y, color in zip(ys, COLORS, strict=False):
            label = y.split("/", 1)[1]
            fig.line("time/elapsed_s", y, source=source, color=color, legend_label=label)
            fig.scatter("time/elapsed_s", y, source=source, color=color, size=4,
                        legend_label=label)
        fig.legend.location = LEGEND_AT.get(ys[0], "top_left")
        figures.append(fig)
    header = Div(text=(
        f"<h2>dask-dpsgd: {html.escape(fit['title'])}</h2>"
        f"<p>Fit <code>{html.escape(fit_id)}</code>, status when loaded: "
        f"<b>{html.escape(fit['status'])}</b>. The curves refresh every second. "
        f'Data: <a href="metrics.json?fit={html.escape(fit_id)}">metrics.json</a>; '
        '<a href="../status">Dask dashboard</a>.</p>' + _others(store, fit_id)),
        sizing_mode="stretch_width")
    grid = gridplot(figures, ncols=2, sizing_mode="stretch_width")
    resources = Resources(mode="server", root_url="../")
    return file_html(column(header, grid, sizing_mode="stretch_width"), resources,
                     title=f"dask-dpsgd {fit['title']}")


def table_page(store: MetricsStore, fit_id: str) -> str:
    """The last records as an HTML table (when Bokeh is missing on the scheduler)."""
    fit = store.fits[fit_id]
    series = store.series(fit_id)
    keys = list(series)
    rows = list(zip(*series.values(), strict=True))[-50:]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in r) + "</tr>"
                   for r in rows)
    return (f'<html><head><meta http-equiv="refresh" content="2"></head><body>'
            f"<h2>dask-dpsgd: {html.escape(fit['title'])} ({html.escape(fit['status'])})"
            f"</h2>{_others(store, fit_id)}<table><tr>{head}</tr>{body}</table>"
            "</body></html>")


def _prefix(app: Any) -> str:
    """The scheduler's HTTP prefix, read off its Bokeh app (``/`` without one)."""
    for sub in getattr(app, "applications", []):
        prefix = getattr(sub, "_prefix", None)
        if isinstance(prefix, str) and prefix:
            return "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    return "/"


def add_routes(app: Any, scheduler: Any) -> None:
    """Add the pages to the scheduler's tornado application, once per application."""
    # Tornado cannot remove routes; a flag on the application keeps a plugin
    # re-registered after removal from stacking duplicates.
    if getattr(app, "_dask_dpsgd_routes", False):
        return
    base = _prefix(app) + ROUTE
    kwargs = {"scheduler": scheduler}
    app.add_handlers(r".*$", [
        (base + r"/?", web.RedirectHandler, {"url": base + "/status"}),
        (base + r"/status", StatusPage, kwargs),
        (base + r"/metrics\.json", MetricsJSON, kwargs),
        (base + r"/series\.json", SeriesJSON, kwargs),
    ])
    app._dask_dpsgd_routes = True
    logger.debug("dask-dpsgd live metrics served at %s/status", base)
