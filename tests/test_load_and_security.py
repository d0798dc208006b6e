"""Update accounting under load and with a stalled worker; security by default.

Issue parts covered:

* "Update accounting: for every fit, pushes sent = applied + rejected, asserted under
  load (8 workers on 2 cores pushing for a while) and with slow or paused workers (a
  stalled worker's pushes arrive late and are handled by the staleness rule)."
* "Security by default: every server the library starts (embedded cluster, dashboard)
  binds to 127.0.0.1 only; a client with TLS (distributed.Security) works unchanged."
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dask_dpsgd import DPSVILatentDirichletAllocation, HSA2CAgent
from dask_dpsgd.decomposition._svi import shard_rows, warmup_schedule
from dask_dpsgd.exceptions import StaleUpdatesWarning

distributed = pytest.importorskip("distributed")

LDA = DPSVILatentDirichletAllocation
REPO = Path(__file__).resolve().parents[1]
N_DOCS = 1500  # the bundled NIPS corpus

# Wall-clock time the load test pushes for: the number of passes is sized from one
# timed pass. On the 2-core machine these tests were written on, a pass over NIPS
# (K=10, batch 16, 94 pushes, 8 workers, max_staleness=4) took ~0.36 s, so ~110
# passes (~10,000 pushes, about a third rejected) and a fit of ~40 s.
LOAD_SECONDS = 40.0


@pytest.fixture(scope="module")
def crowded():
    """8 worker processes x 1 thread on this (2-core) machine: an oversubscribed cluster.

    Not the default client: each test makes it current for its fits only.
    """
    with distributed.LocalCluster(n_workers=8, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  env={"NUMBA_NUM_THREADS": "1"}) as cluster, \
            distributed.Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(8)
        yield c


@functools.cache
def _nips():
    from dask_dpsgd.datasets import load_nips

    return load_nips().data  # int64 CSR, 1500 x 12375


@pytest.fixture(scope="module")
def nips_counts():
    return _nips()


def _pushes(n_docs: int, batch_size: int, n_workers: int, n_passes: int,
            warmup_updates: int = 10) -> int:
    """Pushes a fit sends: one per minibatch, but in the synchronous warm-up one per
    worker's share of each update."""
    shards = [len(r) for r in shard_rows(n_docs, batch_size, n_workers)]
    warm = warmup_schedule(shards, batch_size, warmup_updates)
    n_slots = len({p.slot for parts in warm for p in parts})
    return n_passes * -(-n_docs // batch_size) + sum(map(len, warm)) - n_slots


def _assert_accounting(lda, *, max_staleness=None) -> None:
    """sent = applied + rejected, and the staleness summary agrees with itself."""
    assert lda.n_pushes_sent_ == lda.n_updates_applied_ + lda.n_updates_rejected_
    hist = lda.staleness_histogram_
    assert hist.sum() == lda.n_updates_applied_
    assert lda.staleness_max_ == len(hist) - 1
    assert lda.staleness_mean_ == pytest.approx(
        (np.arange(len(hist)) * hist).sum() / hist.sum())
    if max_staleness is not None:
        assert lda.staleness_max_ <= max_staleness
    assert lda.history_[-1]["train/updates"] == lda.n_updates_applied_
    assert np.isfinite(lda.components_).all() and (lda.components_ > 0).all()
    assert np.isfinite(lda.bound_) and lda.bound_ > 0


@pytest.mark.slow
def test_accounting_holds_with_8_workers_pushing_on_2_cores(crowded, nips_counts):
    kw = dict(n_components=10, batch_size=16, random_state=0, max_staleness=4)
    pushes_per_pass = -(-N_DOCS // 16)
    with crowded.as_current():
        # Load the kernels on every worker, then time one pass to size the run.
        LDA(n_components=10, batch_size=16, max_iter=1).fit(nips_counts[:400])
        with pytest.warns(StaleUpdatesWarning):
            one = LDA(max_iter=1, **kw).fit(nips_counts)
        pass_s = one.history_[0]["time/pass_s"]
        n_passes = int(np.clip(round(LOAD_SECONDS / pass_s), 5, 200))
        t0 = time.perf_counter()
        with pytest.warns(StaleUpdatesWarning) as caught:
            lda = LDA(max_iter=n_passes, **kw).fit(nips_counts)
        duration = time.perf_counter() - t0
    print(f"load test: {n_passes} passes, {lda.n_pushes_sent_} pushes in {duration:.1f} s"
          f" ({lda.n_updates_rejected_} rejected)")
    assert lda.n_workers_ == 8
    assert lda.n_pushes_sent_ == _pushes(N_DOCS, 16, 8, n_passes)
    assert lda.n_pushes_sent_ > n_passes * pushes_per_pass  # 8 shares per warm-up step
    _assert_accounting(lda, max_staleness=4)
    # 8 workers on 2 cores with max_staleness=4: some pushes are always too late.
    assert lda.n_updates_rejected_ > 0
    stale = [w for w in caught if issubclass(w.category, StaleUpdatesWarning)]
    assert len(stale) == 1
    assert re.search(rf"^{lda.n_updates_rejected_} of {lda.n_pushes_sent_} updates were "
                     r"rejected as staler than max_staleness=4", str(stale[0].message))
    assert len(lda.history_) == n_passes == lda.n_iter_
    # Quality: finite, and many passes (even with rejections) beat a single one.
    assert lda.bound_ < one.bound_
    assert np.isfinite(lda.perplexity(nips_counts[:200]))
    assert len(crowded.scheduler_info(n_workers=-1)["workers"]) == 8


class _Staller(threading.Thread):
    """SIGSTOP one worker process for ``seconds``, ``delay`` s after a task whose key
    starts with ``prefix`` (a DPSVI pass, an HSA2C worker) is running on it."""

    def __init__(self, client, address: str, seconds: float, delay: float,
                 prefix: str = "dpsvi-pass-") -> None:
        super().__init__(daemon=True)
        self.client, self.address, self.prefix = client, address, prefix
        self.seconds, self.delay = seconds, delay
        self.pid = client.run(os.getpid, workers=[address])[address]
        self.paused_at: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline and not self.done.is_set():
                keys = self.client.processing(workers=[self.address])[self.address]
                if any(str(k).startswith(self.prefix) for k in keys):
                    time.sleep(self.delay)
                    os.kill(self.pid, signal.SIGSTOP)
                    self.paused_at = time.monotonic()
                    try:
                        time.sleep(self.seconds)
                    finally:
                        os.kill(self.pid, signal.SIGCONT)
                    return
                time.sleep(0.005)
        finally:
            self.done.set()


def _stalled_fit(client, victim, kw, *, seconds, at):
    staller = _Staller(client, victim, seconds=seconds, delay=at)
    staller.start()
    try:
        t0 = time.perf_counter()
        lda = LDA(**kw).fit(_nips())
        elapsed = time.perf_counter() - t0
    finally:
        staller.done.set()
        staller.join()
    assert staller.paused_at is not None, "the worker was never paused"
    assert elapsed >= seconds
    return lda


@pytest.mark.slow
def test_paused_worker_pushes_arrive_late_and_meet_the_staleness_rule(crowded):
    # Worker 0 (the first address) holds the parameter server; stall the last one for
    # 2 s a quarter into the pass. One pass of 188 minibatches, K=100 so the pass is
    # long enough (~2.2 s measured) for the pause to fall inside it; no warm-up, so no
    # worker waits for the stalled one inside the pass. The late push's staleness is
    # at most the others' 7/8 of 188 updates (< 256, the histogram's bins).
    kw = dict(n_components=100, batch_size=8, max_iter=1, random_state=0,
              warmup_updates=0, max_staleness=None)
    pushes = -(-N_DOCS // 8)
    with crowded.as_current():
        victim = sorted(crowded.scheduler_info(n_workers=-1)["workers"])[-1]
        base = LDA(**kw).fit(_nips())
        _assert_accounting(base)
        assert base.n_updates_applied_ == pushes and base.n_updates_rejected_ == 0
        at = 0.25 * base.history_[0]["time/pass_s"]

        # Without a staleness limit, the stalled worker's next push is applied with a
        # staleness of about the updates the others made during the pause.
        late = _stalled_fit(crowded, victim, kw, seconds=2.0, at=at)
        _assert_accounting(late)
        assert late.n_updates_applied_ == pushes and late.n_updates_rejected_ == 0
        assert late.staleness_max_ >= 2 * base.staleness_max_ + 10, (
            base.staleness_max_, late.staleness_max_)

        # With a limit between the normal staleness and the late push's, the late
        # push is rejected (counted and warned about) and the fit still completes.
        limit = 2 * base.staleness_max_ + 5
        with pytest.warns(StaleUpdatesWarning, match=rf"max_staleness={limit}"):
            strict = _stalled_fit(crowded, victim, {**kw, "max_staleness": limit},
                                  seconds=2.0, at=at)
        _assert_accounting(strict, max_staleness=limit)
        assert strict.n_pushes_sent_ == pushes
        assert strict.n_updates_rejected_ >= 1
        assert strict.n_iter_ == 1
    assert len(crowded.scheduler_info(n_workers=-1)["workers"]) == 8


def _agent_checks(agent, *, max_staleness=None) -> None:
    assert agent.n_pushes_sent_ == agent.n_updates_applied_ + agent.n_updates_rejected_
    hist = agent.staleness_histogram_
    assert hist.sum() == agent.n_updates_applied_
    if max_staleness is not None:
        assert agent.staleness_max_ == len(hist) - 1 <= max_staleness
        assert agent.staleness_mean_ == pytest.approx(
            (np.arange(len(hist)) * hist).sum() / hist.sum())
    assert np.isfinite(agent.params_).all()
    assert agent.num_timesteps_ >= agent.total_timesteps


def _stalled_agent_fit(client, victim, **kw):
    # One worker of 8 stalls for 2 s, 1 s after its training task started.
    staller = _Staller(client, victim, seconds=2.0, delay=1.0, prefix="hsa2c-segment-")
    staller.start()
    try:
        agent = HSA2CAgent("CartPole-v1", total_timesteps=60_000, n_envs=4,
                           push_every=2, random_state=0, **kw).fit()
    finally:
        staller.done.set()
        staller.join()
    assert staller.paused_at is not None, "the worker was never paused"
    return agent


@pytest.mark.slow
def test_agent_accounting_with_8_workers_and_a_paused_one(crowded):
    with crowded.as_current():
        victim = sorted(crowded.scheduler_info(n_workers=-1)["workers"])[-1]
        HSA2CAgent("CartPole-v1", total_timesteps=2_000, random_state=0).fit()  # warm
        # max_staleness=3 on 8 workers sharing 2 cores: many pushes are rejected,
        # the stalled worker's among them; the steps of rejected pushes do not count,
        # so the fit runs on until the applied ones reach the budget.
        with pytest.warns(StaleUpdatesWarning, match="max_staleness=3$"):
            strict = _stalled_agent_fit(crowded, victim, max_staleness=3)
        _agent_checks(strict, max_staleness=3)
        assert strict.n_updates_rejected_ > 0
        # Without a limit the stalled worker's push is applied, very late.
        late = _stalled_agent_fit(crowded, victim, max_staleness=None)
        _agent_checks(late)
        assert late.n_updates_rejected_ == 0
        assert late.staleness_max_ >= 50
    assert strict.n_workers_ == late.n_workers_ == 8
    assert len(crowded.scheduler_info(n_workers=-1)["workers"]) == 8


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["lda", "agent"])
def test_staleness_summary_stays_exact_beyond_255(crowded, estimator):
    with crowded.as_current():
        victim = sorted(crowded.scheduler_info(n_workers=-1)["workers"])[-1]
        if estimator == "lda":
            # 750 tiny minibatches in one pass; a 3 s stall lets the 7 others apply
            # several hundred updates before the stalled worker's push arrives.
            kw = dict(n_components=10, batch_size=2, max_iter=1, random_state=0,
                      warmup_updates=0, max_staleness=None)
            base = LDA(**kw).fit(_nips())
            late = _stalled_fit(crowded, victim, kw, seconds=3.0,
                                at=0.25 * base.history_[0]["time/pass_s"])
        else:
            late = _stalled_agent_fit(crowded, victim, max_staleness=None)
    if late.staleness_max_ < 256:
        pytest.skip(f"the stall gave staleness {late.staleness_max_} only; nothing to "
                    "check beyond 255")
    hist = late.staleness_histogram_
    assert hist.sum() == late.n_updates_applied_
    assert len(hist) - 1 == late.staleness_max_, (len(hist), late.staleness_max_)
    assert hist[late.staleness_max_] >= 1


# ------------------------------------------------------------------------- security

_EMBEDDED_SCRIPT = textwrap.dedent("""
    import json, threading, time

    import numpy as np
    import psutil

    from dask_dpsgd import DPSVILatentDirichletAllocation, HSA2CAgent
    from dask_dpsgd.engine._cluster import resolve_cluster
    from dask_dpsgd.datasets import load_nips


    def listening():
        me = psutil.Process()
        out = set()
        for p in [me, *me.children(recursive=True)]:
            try:
                for c in p.net_connections(kind="inet"):
                    if c.status == psutil.CONN_LISTEN:
                        out.add((c.laddr.ip, c.laddr.port))
            except psutil.Error:
                pass
        return out


    if __name__ == "__main__":
        report = {}
        with resolve_cluster(None, None) as h:
            info = h.client.scheduler_info()
            report["owned"] = h.owned
            report["scheduler"] = h.client.scheduler.address
            report["workers"] = sorted(info["workers"])
            report["nannies"] = sorted(str(w.get("nanny")) for w in info["workers"].values())
            report["dashboard"] = h.dashboard_link
            report["listening"] = sorted(listening())
        # Whole fits on the embedded cluster (no default client here), watching every
        # listening socket of this process and its children while they run.
        seen, stop = set(), threading.Event()

        def watch():
            while not stop.is_set():
                seen.update(listening())
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        lda = DPSVILatentDirichletAllocation(n_components=3, max_iter=1,
                                             random_state=0).fit(load_nips().data[:50])
        agent = HSA2CAgent("CartPole-v1", total_timesteps=500, n_envs=2,
                           random_state=0).fit()
        stop.set()
        watcher.join()
        report["listening_during_fits"] = sorted(seen)
        report["fits_ok"] = bool(np.isfinite(lda.components_).all()
                                 and np.isfinite(agent.params_).all())
        print("REPORT " + json.dumps(report), flush=True)
""")


def test_embedded_cluster_listens_on_localhost_only(tmp_path):
    pytest.importorskip("psutil")
    script = tmp_path / "embedded.py"
    script.write_text(_EMBEDDED_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("REPORT "))
    report = json.loads(line[len("REPORT "):])
    assert report["owned"] is True and report["fits_ok"] is True
    assert report["scheduler"].startswith("tcp://127.0.0.1:")
    assert report["workers"] and all(a.startswith("tcp://127.0.0.1:")
                                     for a in report["workers"])
    assert all(a.startswith("tcp://127.0.0.1:") for a in report["nannies"])
    if report["dashboard"] is not None:
        assert report["dashboard"].startswith("http://127.0.0.1:")
    for key in ("listening", "listening_during_fits"):
        sockets = report[key]
        # scheduler, and per worker a nanny and a worker at least
        assert len(sockets) >= 1 + 2 * len(report["workers"]), (key, sockets)
        exposed = [s for s in sockets if s[0] != "127.0.0.1"]
        assert not exposed, f"{key}: servers listening beyond 127.0.0.1: {exposed}"


@pytest.fixture(scope="module")
def tls_security(tmp_path_factory):
    """A self-signed certificate (its own CA) for 127.0.0.1/localhost, by openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not available to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                    "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=60)
    c, k = str(cert), str(key)
    return distributed.Security(tls_ca_file=c, tls_client_cert=c, tls_client_key=k,
                                tls_scheduler_cert=c, tls_scheduler_key=k,
                                tls_worker_cert=c, tls_worker_key=k,
                                require_encryption=True)


def test_both_estimators_fit_unchanged_on_a_tls_cluster(tls_security, nips_counts):
    # Two workers, so the pushes of worker 1 to the server actor on worker 0 also
    # travel over TLS.
    with distributed.LocalCluster(protocol="tls://", security=tls_security,
                                  host="127.0.0.1", n_workers=2, threads_per_worker=1,
                                  processes=True, dashboard_address=None,
                                  env={"NUMBA_NUM_THREADS": "1"}) as cluster, \
            distributed.Client(cluster, security=tls_security,
                               set_as_default=False) as c, c.as_current():
        assert c.scheduler.address.startswith("tls://127.0.0.1:")
        workers = sorted(c.scheduler_info()["workers"])
        assert len(workers) == 2 and all(a.startswith("tls://127.0.0.1:")
                                         for a in workers)
        lda = LDA(n_components=3, max_iter=1, batch_size=16,
                  random_state=0).fit(nips_counts[:100])
        agent = HSA2CAgent("CartPole-v1", total_timesteps=1_000, n_envs=2,
                           random_state=0).fit()
        # A client without the certificates is refused by the cluster.
        with pytest.raises(Exception):  # noqa: B017, PT011 - distributed's choice
            distributed.Client(c.scheduler.address.replace("tls://", "tcp://"),
                               timeout=3, set_as_default=False)
        assert len(c.scheduler_info()["workers"]) == 2
    assert lda.n_workers_ == 2 and agent.n_workers_ == 2
    assert np.isfinite(lda.components_).all()
    assert np.allclose(lda.transform(nips_counts[:5]).sum(axis=1), 1.0)
    assert lda.n_pushes_sent_ == lda.n_updates_applied_ + lda.n_updates_rejected_ == (
        _pushes(100, 16, 2, 1))
    assert lda.n_batch_iter_ == 1 + 7
    assert agent.num_timesteps_ >= 1_000 and np.isfinite(agent.params_).all()
    assert agent.n_pushes_sent_ == agent.n_updates_applied_ + agent.n_updates_rejected_
    assert agent.n_pushes_sent_ > 0
