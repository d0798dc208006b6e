"""Fault and load scenarios for both estimators on real Dask worker processes.

What issue #5 asks to be shown, run a few times each, written as JSON for
``summarize.py`` ("Fault and load tests" in ``benchmarks/RESULTS.md``):

* ``lda-kill`` / ``a2c-kill``: a 2-worker ``LocalCluster`` (1 core each); a worker is
  killed (SIGKILL) at a random moment of the fit, drawn from a seeded RNG
  (``tests/_faults.py:kill_point``: the victim alternates between the parameter
  server's worker and the other one, the moment is uniform in 10-60 % of an
  undisturbed fit's duration). Recorded: whether the fit completed, its recoveries,
  the updates lost since the last checkpoint, the update accounting and the quality
  relative to the undisturbed fit measured first on the same cluster (LDA: held-out
  perplexity; A2C: mean return of the last 100 training episodes).
* ``lda-load`` / ``a2c-load``: 8 worker processes on this machine's cores, every
  worker pushing, with the default staleness limit (``max_staleness="auto"``).
* ``lda-pause`` / ``a2c-pause``: one of the 8 workers is paused (SIGSTOP, then
  SIGCONT) for ``pause_seconds`` mid-fit; its pushes arrive late and meet the
  staleness rule. Quality relative to an unpaused fit on the same cluster.

Every fit checks pushes sent = applied + rejected itself (and raises otherwise); the
JSON keeps the three counts of every run so the table can show the sum.

Run from the repository root (``tests/_faults.py`` supplies the fault injection)::

    PYTHONPATH=. python benchmarks/bench_faults.py
    python benchmarks/summarize.py
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common

KIND = "faults"
SCENARIOS = ("lda-kill", "a2c-kill", "lda-load", "a2c-load", "lda-pause", "a2c-pause")


@dataclass(frozen=True, slots=True)
class BenchFaultsConfig:
    """Fault and load scenarios: faults injected, fits completed, updates lost."""

    scenarios: tuple[str, ...] = SCENARIOS
    """Scenarios to run, among lda-kill, a2c-kill, lda-load, a2c-load, lda-pause,
    a2c-pause."""
    repeats: int = 2
    """Disturbed fits per scenario (seeds random_state, random_state + 1, ...)."""
    random_state: int = 0
    """First seed (of the estimators and of the kill points)."""
    lda_passes: int = 6
    """Passes of the killed LDA fits (NIPS training split, K=8, batch 64)."""
    a2c_timesteps: int = 300_000
    """Budget of the killed A2C fits (CartPole-v1; they stop at a mean return of 475)."""
    load_passes: int = 10
    """Passes of the LDA fits on 8 workers (K=10, batch 16)."""
    load_timesteps: int = 60_000
    """Budget of the A2C fits on 8 workers (4 envs each, a push every 2 updates)."""
    pause_seconds: float = 2.0
    """How long the paused worker stays stopped."""
    crowd_workers: int = 8
    """Worker processes of the load and pause scenarios."""
    output: str = "benchmarks/results/faults.json"
    """JSON file the runs are written to (overwritten)."""


# --------------------------------------------------------------------- helpers


def _cluster(n_workers: int) -> Any:
    """A LocalCluster client on 127.0.0.1: processes of 1 thread (1 numba thread)."""
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, env={"NUMBA_NUM_THREADS": "1"},
        # The killed and abandoned tasks' errors are expected; the runs record them.
        silence_logs=logging.CRITICAL)
    client = distributed.Client(cluster, set_as_default=False)
    client.wait_for_workers(n_workers)
    return cluster, client


def _counters(est: Any) -> dict[str, Any]:
    """Update accounting, staleness and recovery record of a fitted estimator."""
    events = est.recovery_events_
    return {
        "n_workers": est.n_workers_,
        "pushes_sent": est.n_pushes_sent_,
        "applied": est.n_updates_applied_,
        "rejected": est.n_updates_rejected_,
        "accounting_ok": est.n_pushes_sent_ == (est.n_updates_applied_
                                                + est.n_updates_rejected_),
        "max_staleness": est.max_staleness_,
        "staleness_mean": est.staleness_mean_,
        "staleness_max": est.staleness_max_,
        "recoveries": len(events),
        "updates_lost": est.updates_lost_,
        "updates_lost_exact": all(e["updates_lost_exact"] for e in events),
        "events": events,
    }


def _run(scenario: str, seed: int, fault: str | None, fit: Callable[[], Any],
         inject: Callable[[], Any] | None, quality: Callable[[Any], dict[str, float]],
         ) -> tuple[dict[str, Any], Any]:
    """One fit, with the fault ``inject()`` starts (a thread) running beside it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        thread = inject() if inject is not None else None
        t0 = time.perf_counter()
        est, error = None, None
        try:
            est = fit()
        except Exception as exc:  # noqa: BLE001 - a failed fit is a result here
            error = f"{type(exc).__name__}: {exc}"
        wall = time.perf_counter() - t0
        if thread is not None:
            thread.join()
    record: dict[str, Any] = {
        "scenario": scenario, "seed": seed, "fault": fault,
        "faults_injected": int(fault is not None), "completed": est is not None,
        "error": error, "wall_s": wall,
        "warnings": sorted({w.category.__name__ for w in caught}),
    }
    if est is not None:
        record.update(_counters(est))
        record.update(quality(est))
    print(f"[{scenario}] seed {seed} fault={fault}: completed={record['completed']} "
          f"recoveries={record.get('recoveries')} lost={record.get('updates_lost')} "
          f"sent={record.get('pushes_sent')} applied={record.get('applied')} "
          f"rejected={record.get('rejected')} {wall:.1f} s", flush=True)
    return record, est


# ------------------------------------------------------------------- scenarios


def _kill_runs(cfg: BenchFaultsConfig, scenario: str, client: Any, make: Callable[[], Any],
               quality: Callable[[Any], dict[str, float]]) -> list[dict[str, Any]]:
    """An undisturbed fit, then ``repeats`` fits each losing a worker at random."""
    from dask_dpsgd.engine._cluster import current_workers
    from tests._faults import kill_after, kill_point

    client.wait_for_workers(2)
    ref, _ = _run(scenario, cfg.random_state, None, make, None, quality)
    runs = [ref]
    for i in range(cfg.repeats):
        seed = cfg.random_state + i
        victim, delay = kill_point(seed, ref["wall_s"])
        client.wait_for_workers(2)
        workers = current_workers(client)
        role = "server's worker" if victim == 0 else "other worker"
        rec, _ = _run(scenario, seed, f"SIGKILL {role} at {delay:.1f} s", make,
                      lambda a=workers[victim], d=delay: kill_after(client, a, d),
                      quality)
        runs.append(rec)
    # The victim's nanny restarts it; later scenarios want the cluster whole again.
    client.wait_for_workers(2)
    return runs


def _with_ratio(runs: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Quality of every run relative to the scenario's undisturbed run (first)."""
    ref = runs[0].get(key)
    for r in runs:
        if ref and r.get(key) is not None:
            r["quality_ratio"] = r[key] / ref
    return runs


def _pause_runs(cfg: BenchFaultsConfig, scenario: str, client: Any,
                make: Callable[[], Any], quality: Callable[[Any], dict[str, float]],
                at: Callable[[float], float]) -> list[dict[str, Any]]:
    """An unpaused fit, then ``repeats`` fits with the last worker paused mid-fit."""
    from dask_dpsgd.engine._cluster import current_workers
    from tests._faults import signal_after

    ref, _ = _run(scenario, cfg.random_state, None, make, None, quality)
    runs = [ref]
    victim = current_workers(client)[-1]  # not the parameter server's worker
    delay = at(ref["wall_s"])
    for i in range(cfg.repeats):
        rec, _ = _run(scenario, cfg.random_state + i,
                      f"SIGSTOP a worker at {delay:.1f} s for {cfg.pause_seconds:g} s",
                      make, lambda: signal_after(client, victim, delay, signal.SIGSTOP,
                                                 resume_after=cfg.pause_seconds),
                      quality)
        runs.append(rec)
    return runs


def _lda_quality(X_test: Any) -> Callable[[Any], dict[str, float]]:
    return lambda est: {"quality": float(est.perplexity(X_test)),
                        "quality_name": "held-out perplexity (lower is better)"}


def _a2c_quality(est: Any) -> dict[str, Any]:
    import numpy as np

    return {"quality": float(np.mean(est.episode_returns_[-100:])),
            "quality_name": "mean return, last 100 training episodes",
            "eval_return": est.score(n_episodes=10, random_state=0)}


def scenario_runs(cfg: BenchFaultsConfig, name: str, clients: dict[str, Any],
                  nips: tuple[Any, Any]) -> list[dict[str, Any]]:
    """The runs of scenario ``name`` (see the module docstring)."""
    from dask_dpsgd import DPSVILatentDirichletAllocation as LDA
    from dask_dpsgd import HSA2CAgent
    from dask_dpsgd.engine._cluster import machine_cores

    X_train, X_test = nips
    client = clients["pair" if name.endswith("-kill") else "crowd"]
    seed = cfg.random_state
    with client.as_current():
        if name == "lda-kill":
            kw = dict(n_components=8, max_iter=cfg.lda_passes, batch_size=64,
                      random_state=seed)
            LDA(**{**kw, "max_iter": 1}).fit(X_train[:200])  # load the kernels
            return _with_ratio(_kill_runs(cfg, name, client,
                                          lambda: LDA(**kw).fit(X_train),
                                          _lda_quality(X_test)), "quality")
        if name == "a2c-kill":
            kw = dict(total_timesteps=cfg.a2c_timesteps, target_return=475,
                      random_state=seed)
            HSA2CAgent(total_timesteps=2_000, random_state=seed).fit()  # warm
            return _with_ratio(_kill_runs(cfg, name, client,
                                          lambda: HSA2CAgent(**kw).fit(),
                                          _a2c_quality), "quality")
        if name == "lda-load":
            kw = dict(n_components=10, batch_size=16, max_iter=cfg.load_passes)
            LDA(n_components=10, batch_size=16, max_iter=1).fit(X_train[:400])
            return [_run(name, seed + i, f"{cfg.crowd_workers} workers on "
                         f"{machine_cores()} cores",
                         lambda s=seed + i: LDA(random_state=s, **kw).fit(X_train),
                         None, _lda_quality(X_test))[0] for i in range(cfg.repeats)]
        if name == "a2c-load":
            kw = dict(total_timesteps=cfg.load_timesteps, n_envs=4, push_every=2)
            HSA2CAgent(total_timesteps=2_000, random_state=seed).fit()  # warm
            return [_run(name, seed + i, f"{cfg.crowd_workers} workers on "
                         f"{machine_cores()} cores",
                         lambda s=seed + i: HSA2CAgent(random_state=s, **kw).fit(),
                         None, _a2c_quality)[0] for i in range(cfg.repeats)]
        if name == "lda-pause":
            # One pass of 188 minibatches, K=100 (a pass of ~2 s), no warm-up: the
            # pause falls inside the pass and nobody waits for the paused worker.
            kw = dict(n_components=100, batch_size=8, max_iter=1, random_state=seed,
                      warmup_updates=0)
            return _with_ratio(_pause_runs(cfg, name, client,
                                           lambda: LDA(**kw).fit(X_train),
                                           _lda_quality(X_test),
                                           lambda d: 0.25 * d), "quality")
        if name == "a2c-pause":
            kw = dict(total_timesteps=cfg.load_timesteps, n_envs=4, push_every=2,
                      random_state=seed)
            return _with_ratio(_pause_runs(cfg, name, client,
                                           lambda: HSA2CAgent(**kw).fit(),
                                           _a2c_quality, lambda d: 1.0), "quality")
    raise ValueError(f"unknown scenario {name!r}; choose from {SCENARIOS}")


def main(cfg: BenchFaultsConfig) -> Path:
    import numpy as np
    import scipy.sparse as sp

    from dask_dpsgd.datasets import load_nips

    unknown = set(cfg.scenarios) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    # Lost workers make distributed log at WARNING and above; the runs record them.
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    bunch = load_nips()
    X = sp.csr_matrix(bunch.data, dtype=np.float64)
    nips = (X[bunch.train_indices], X[bunch.test_indices])
    machine = _common.machine_facts()
    started = _common.now_iso()
    runs: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        clients: dict[str, Any] = {}
        for name, n in (("pair", 2), ("crowd", cfg.crowd_workers)):
            if any(s.endswith("-kill") == (name == "pair") for s in cfg.scenarios):
                cluster, client = _cluster(n)
                stack.enter_context(cluster)
                stack.enter_context(client)
                clients[name] = client
        for name in cfg.scenarios:
            runs += scenario_runs(cfg, name, clients, nips)
            _common.write_results(cfg.output, kind=KIND, config=cfg, machine=machine,
                                  runs=runs, started=started,
                                  total_wall_s=time.perf_counter() - t_start)
    return _common.write_results(cfg.output, kind=KIND, config=cfg, machine=machine,
                                 runs=runs, started=started, finished=_common.now_iso(),
                                 total_wall_s=time.perf_counter() - t_start)


if __name__ == "__main__":
    if str(_common.REPO_DIR) not in sys.path:
        sys.path.insert(0, str(_common.REPO_DIR))  # tests._faults
    print(f"wrote {main(_common.parse_config(BenchFaultsConfig))}")
