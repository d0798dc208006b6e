"""Live training metrics on the Dask dashboard: read over HTTP while real fits run."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request

import pytest

from dask_dpsgd.engine._live import metrics_page_url
from dask_dpsgd.engine._live_store import MetricsStore


def test_store_keeps_columns_aligned_and_the_last_fits():
    store = MetricsStore(max_fits=2, max_points=3)
    store.ingest(1.0, {"fit": "a", "event": "start", "kind": "lda", "title": "A"})
    for i in range(5):
        point = {"train/updates": i} if i % 2 else {"train/updates": i, "x": -i}
        store.ingest(2.0 + i, {"fit": "a", "event": "point", "point": point})
    store.ingest(9.0, {"fit": "a", "event": "end", "status": "done"})
    store.ingest(9.0, "not a record")
    cols = store.series("a")
    assert cols["train/updates"] == [2, 3, 4]  # the ring keeps the last 3
    assert cols["x"] == [-2, None, -4]
    assert store.summary("a")["status"] == "done"
    store.ingest(10.0, {"fit": "b", "event": "start"})
    store.ingest(11.0, {"fit": "c", "event": "start"})
    assert list(store.fits) == ["b", "c"] and store.latest_id() == "c"
    assert metrics_page_url("http://h:1/status", "c") == "http://h:1/dpsgd/status?fit=c"
    assert metrics_page_url(None) is None


class _RefusingClient:
    """A client whose scheduler refuses the plugin and every event."""

    def __init__(self) -> None:
        self.calls = 0

    def register_plugin(self, plugin):
        self.calls += 1
        raise RuntimeError("no such plugin")

    def log_event(self, topic, msg):
        self.calls += 1
        raise OSError("scheduler gone")


def test_a_refusing_scheduler_does_not_stop_the_fit():
    from dask_dpsgd.engine._live import live_metrics

    client = _RefusingClient()
    with live_metrics(client, "lda", "t", "http://h:1/status") as live:
        for i in range(3):
            live.publish({"train/updates": i}, force=True)
    assert live.url is None
    assert client.calls == 2  # events stop at the first failure


@pytest.fixture(scope="module")
def dashboard_client():
    """A LocalCluster on 127.0.0.1 with its dashboard on (the session one has none)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0", env={"NUMBA_NUM_THREADS": "1"},
    ) as cluster, distributed.Client(cluster, set_as_default=False) as c:
        yield c


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


class _Watcher(threading.Thread):
    """Reads ``metrics.json`` every ``interval`` s; keeps the running fit's latest
    records, and fetches its HTML page once."""

    def __init__(self, base: str, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.base, self.interval = base, interval
        self.stop = threading.Event()
        self.latest: list[dict] = []
        self.page_status: int | None = None
        self.page: bytes = b""
        self.errors: list[Exception] = []

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                _, body = _get(f"{self.base}/dpsgd/metrics.json")
            except urllib.error.HTTPError as exc:
                if exc.code != 404:  # 404: the plugin is not registered yet
                    self.errors.append(exc)
                continue
            except OSError as exc:
                self.errors.append(exc)
                continue
            running = [f for f in json.loads(body)["fits"] if f["status"] == "running"]
            if running and running[-1]["latest"]:
                self.latest.append(running[-1]["latest"])
                if self.page_status is None:
                    self.page_status, self.page = _get(
                        f"{self.base}/dpsgd/status?fit={running[-1]['id']}")


def _watch_fit(client, fit):
    """Run ``fit()`` on ``client`` while a thread watches the dashboard."""
    base = client.dashboard_link.rsplit("/status", 1)[0]
    watcher = _Watcher(base)
    watcher.start()
    t0 = time.perf_counter()
    try:
        with client.as_current():
            est = fit()
    finally:
        watcher.stop.set()
        watcher.join(15)
    assert not watcher.errors
    return est, watcher, base, time.perf_counter() - t0


def _check_live(watcher, est, base, progress_key):
    """The metrics changed while the fit ran, are sane, and end as the fit's own."""
    seen = [r[progress_key] for r in watcher.latest]
    # Read several times while the fit ran, and it moved between reads.
    assert len(seen) >= 3, seen
    assert seen == sorted(seen) and len(set(seen)) >= 2, seen
    assert all(r["train/staleness_mean"] >= 0 for r in watcher.latest)
    assert all(r["train/staleness_max"] >= r["train/staleness_mean"] - 1e-9
               for r in watcher.latest)
    rates = [r["time/updates_per_s"] for r in watcher.latest
             if r.get("time/updates_per_s") is not None]
    assert rates and max(rates) > 0 and min(rates) >= 0
    assert watcher.page_status == 200 and b"AjaxDataSource" in watcher.page
    # The fitted estimator points at its page; afterwards the fit shows as done with
    # the fitted counters.
    assert est.live_metrics_url_.startswith(f"{base}/dpsgd/status?fit=")
    fit_id = est.live_metrics_url_.rsplit("=", 1)[1]
    assert _get(est.live_metrics_url_)[0] == 200
    (fit,) = json.loads(_get(f"{base}/dpsgd/metrics.json?fit={fit_id}")[1])["fits"]
    assert fit["status"] == "done"
    assert fit["latest"]["train/updates"] == est.n_updates_applied_
    assert fit["latest"]["train/staleness_max"] == est.staleness_max_
    return fit


def test_lda_metrics_are_live_on_the_dashboard(dashboard_client, nips):
    from dask_dpsgd import DPSVILatentDirichletAllocation as LDA

    X = nips[0]
    # Long enough (6 passes, ~4 s here) for several reads on a fast machine too.
    lda = LDA(n_components=8, max_iter=6, batch_size=16, evaluate_every=1,
              random_state=0, n_workers=2, threads_per_worker=1)
    lda, watcher, base, elapsed = _watch_fit(dashboard_client, lambda: lda.fit(X))
    fit = _check_live(watcher, lda, base, "train/updates")
    perp = [p for p in fit["series"]["train/perplexity"] if p is not None]
    assert perp and all(p > 1 for p in perp)
    assert perp[-1] == pytest.approx(lda.history_[-1]["train/perplexity"])


def test_lda_default_run_plots_the_minibatch_bound(dashboard_client, nips):
    """Without evaluate_every (the default) the LDA page still has a training curve:
    the minibatch per-word bound the workers' E-steps report with their pushes."""
    from dask_dpsgd import DPSVILatentDirichletAllocation as LDA

    X = nips[0][:400]
    lda = LDA(n_components=8, max_iter=3, batch_size=16, random_state=0, n_workers=2,
              threads_per_worker=1)
    with dashboard_client.as_current():
        lda.fit(X)
    base = dashboard_client.dashboard_link.rsplit("/status", 1)[0]
    fit_id = lda.live_metrics_url_.rsplit("=", 1)[1]
    (fit,) = json.loads(_get(f"{base}/dpsgd/metrics.json?fit={fit_id}")[1])["fits"]
    series = fit["series"]
    assert all(p is None for p in series.get("train/perplexity", [None]))
    bound = [b for b in series["train/minibatch_bound_per_word"] if b is not None]
    # A value (per window) with every pass's record at least, all finite per-word
    # log-likelihood bounds (negative: a probability per token below 1).
    assert len(bound) >= 3
    assert all(math.isfinite(b) and -30 < b < 0 for b in bound)
    assert fit["latest"]["train/minibatch_bound_per_word"] == bound[-1]
    # history_ has it per pass (over the pass's minibatches).
    per_pass = [r["train/minibatch_bound_per_word"] for r in lda.history_]
    assert len(per_pass) == 3 and all(math.isfinite(b) and b < 0 for b in per_pass)
    # The page plots it under an honest title.
    status, page = _get(lda.live_metrics_url_)
    assert status == 200
    assert b"Minibatch per-word bound (documents part, training data" in page


def test_bound_meter_windows_the_servers_sums():
    from dask_dpsgd.decomposition._svi import BoundMeter

    meter = BoundMeter()

    def rep(total, tokens):
        return {"bound_sum": total, "bound_tokens": tokens, "bound_updates": 0}

    assert meter.live(rep(0.0, 0.0)) is None  # nothing applied yet
    assert meter.live(rep(-80.0, 10.0)) == -8.0
    assert meter.live(rep(-80.0, 10.0)) == -8.0  # no new minibatch: the last value
    assert meter.live(rep(-140.0, 20.0)) == -6.0  # the window since the last value
    assert meter.end_pass(rep(-140.0, 20.0)) == -7.0  # the whole pass
    assert meter.end_pass(rep(-150.0, 25.0)) == -2.0
    assert meter.end_pass(rep(-150.0, 25.0)) is None


def test_banner_says_where_the_page_is():
    from dask_dpsgd.engine._live import live_page_banner

    text = live_page_banner("http://127.0.0.1:1/status",
                            "http://127.0.0.1:1/dpsgd/status?fit=lda-1")
    assert "Dask dashboard: http://127.0.0.1:1/status" in text
    assert "Live training metrics: http://127.0.0.1:1/dpsgd/status?fit=lda-1" in text
    assert "no link to it" in text
    assert live_page_banner(None, None) == ""


def test_a2c_metrics_are_live_on_the_dashboard(dashboard_client):
    from dask_dpsgd import HSA2CAgent

    # Long enough (~6 s here) for several reads of the page while it trains: at
    # 200k steps a fast fit gave the watcher only two reads in one CI run.
    agent = HSA2CAgent("CartPole-v1", total_timesteps=400_000, n_workers=2,
                       threads_per_worker=1, random_state=0)
    agent, watcher, base, elapsed = _watch_fit(dashboard_client, agent.fit)
    fit = _check_live(watcher, agent, base, "time/total_timesteps")
    returns = [r for r in fit["series"]["rollout/ep_rew_mean"] if r is not None]
    assert returns and all(r > 0 for r in returns)  # CartPole pays 1 per step
    assert fit["latest"]["time/total_timesteps"] == agent.num_timesteps_
