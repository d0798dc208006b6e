"""HSA2C vs stable-baselines3 A2C: time and env steps to solve CartPole and Acrobot.

Same run, same hyper-parameters (stable-baselines3's A2C defaults, which
``HSA2CAgent`` shares; mapped by ``_common.sb3_a2c_equivalent``), several seeds,
interleaved (seed loop outer, then the environments, then the methods in an order
rotated per seed). "Solved" = the mean return of the last 100 training episodes reaches
the environment's threshold (CartPole-v1 475, Acrobot-v1 -100); every method stops
there, or at ``--max-timesteps`` (then the run counts as unsolved). Three axes
(docs/design.rst, "Benchmarks"):

* speed: wall-clock time to solve and training throughput (env steps/s).
  stable-baselines3: ``learn()`` wall until its callback stops it at the threshold
  (model and environment construction timed separately and not included);
  HSA2C: the whole ``fit()`` wall, which includes building the environments in the
  workers, starting the parameter server, the steps taken after the threshold until the
  workers see the stop flag, and collecting the results.
* sample efficiency and quality: env steps to solve (stable-baselines3: at the stop,
  which is the crossing; HSA2C: ``num_timesteps_`` at the stop, and the step at which
  the last-100 mean first crossed the threshold in ``episode_timesteps_`` /
  ``episode_returns_``), and the mean return of the final policy over
  ``--eval-episodes`` deterministic episodes (outside the timed region).
* memory: peak PSS summed over the run's processes (the driver, and for HSA2C the Dask
  workers), sampled every 50 ms.
* HSA2C's own costs: *fit overhead* = ``fit()`` wall minus the training loop's last
  ``history_`` time (environment inspection, cluster probe, parameter-server start,
  final stats); *steps after crossing* = env steps at the stop minus the crossing step
  (pushes in flight, the stop flag's round trip). With ``prefetch=True`` a push is
  answered one push later, so staleness is about 1 even with one worker.

* learning curve against wall-clock time (``wall_curve``: ``[seconds, env steps, mean
  return of the last <=100 episodes]`` rows, about every 0.5 s). HSA2C: its
  ``history_`` (the driver polls the parameter server every 0.5 s; seconds since
  ``run_hsa2c`` started, i.e. after the environment inspection and cluster probe of
  ``fit``); stable-baselines3: recorded by its callback every 0.5 s of ``learn()``
  (seconds since ``learn()`` started) and at the stop.

HSA2C layouts are given as ``MxP`` strings (``--layouts 1x1 1x2 2x1``: M Dask workers x P
numba threads each); each runs with ``parallelism=`` its mode, passed explicitly
(1x1 serial, 1xP hogwild, Mx1 parameter-server, MxP dpsgd), so a layout the cluster
cannot give is an error, never silently another mode. Every run is a fresh interpreter
(``_common.run_isolated``). Without ``--scheduler-address`` every HSA2C run gets a fresh
``LocalCluster`` of its layout (127.0.0.1, M workers with ``NUMBA_NUM_THREADS=P``),
started before the run and closed after it (``_common.RunCluster``: no other layout's
idle cluster shares the machine), and warmed up by an excluded short fit in the run's
own process; with it, every layout runs on that existing cluster (a big
``LocalCluster``, a ``SLURMCluster``, ...), on the first M of its workers (each must
allow P numba threads). Either way each layout is first warmed up by excluded short
fits on each environment (they compile or load the numba kernels), and each run's
driver process connects to the cluster as a client. ``n_envs`` is per worker in HSA2C:
``hsa2c-2x1`` runs 2 x 8 = 16 environments, the others 8, like stable-baselines3
(weak scaling); ``--total-envs N`` gives every method N environments in all instead
(strong scaling: ``N / M`` per worker).

Run from the repository root::

    PYTHONPATH=. python benchmarks/bench_a2c.py
    python benchmarks/summarize.py

``bench_a2c_modes.py`` runs the same measurement with the defaults of issue #4's
experiment (HSA2C's modes against serial on CartPole).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _ceiling
import _common
from _probes import _worker_numba, _worker_read, _worker_reset

KIND = "a2c"
WINDOW = 100  # episodes in the "solved" mean
CURVE_GRID = 5_000  # env steps between the stored learning-curve points
# Seconds between the stored points of the wall-clock curve: the HSA2C driver's poll
# interval (run_hsa2c's poll_interval), so both methods have the same granularity.
WALL_GRID = 0.5


def parse_layout(text: str) -> tuple[int, int]:
    """``"MxP"`` -> ``(M, P)``: M Dask workers x P numba threads per worker."""
    try:
        m, p = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"layout {text!r} is not MxP (e.g. 1x1, 2x1, 4x4)") from None
    if m < 1 or p < 1:
        raise SystemExit(f"layout {text!r}: workers and threads must be >= 1")
    return m, p


def layout_mode(m: int, p: int) -> str:
    """HSA2CAgent's ``parallelism`` for M workers x P threads."""
    if m == 1:
        return "serial" if p == 1 else "hogwild"
    return "parameter-server" if p == 1 else "dpsgd"


def method_layout(method: str) -> tuple[int, int] | None:
    """``"hsa2c-MxP"`` -> ``(M, P)``; None for the anchor (``"sb3"``)."""
    return parse_layout(method[len("hsa2c-"):]) if method.startswith("hsa2c-") else None


@dataclass(frozen=True, slots=True)
class BenchA2CConfig:
    """HSA2C vs stable-baselines3 A2C: time and env steps to solve, steps/s, memory."""

    envs: tuple[str, ...] = ("CartPole-v1", "Acrobot-v1")
    """Gymnasium ids to benchmark."""
    thresholds: tuple[float, ...] = (475.0, -100.0)
    """Solved when the mean return of the last 100 training episodes reaches this (one
    per env, in the same order)."""
    seeds: int = 5
    """Seeds per environment (random_state, random_state + 1, ...)."""
    random_state: int = 0
    """First seed."""
    max_timesteps: int = 1_000_000
    """Budget cap in env steps; a run that has not solved by then counts as unsolved."""
    n_envs: int = 8
    """Environments (stable-baselines3) and environments per worker (HSA2C)."""
    total_envs: int | None = None
    """Strong scaling: every method runs this many environments in all (HSA2C layout
    MxP: total_envs / M per worker, which must divide; overrides n_envs). None: n_envs
    per worker, so more workers run more environments (weak scaling)."""
    layouts: tuple[str, ...] = ("1x1", "1x2", "2x1")
    """HSA2C layouts, MxP = M Dask workers x P numba threads each (1x1 serial, 1xP
    hogwild, Mx1 parameter-server, MxP dpsgd)."""
    sb3: bool = True
    """Also run stable-baselines3's A2C (the anchor)."""
    scheduler_address: str | None = None
    """Run every layout on this existing Dask cluster (e.g. tcp://10.0.0.5:8786 of a
    SLURMCluster) instead of starting a fresh LocalCluster on 127.0.0.1 for every run;
    its workers need NUMBA_NUM_THREADS >= P."""
    eval_episodes: int = 10
    """Deterministic episodes the final policy is evaluated on (not timed)."""
    max_load: float = 0.7
    """Before the first run and before each seed's runs, wait until the 1-minute load
    average is at most this."""
    max_load_wait: float = 600.0
    """Longest wait for the load to drop before the first run, in seconds (then run
    anyway, recorded)."""
    seed_load_wait: float = 90.0
    """Longest wait for the load to drop before each later seed's runs, in seconds."""
    package_source: str = "head"
    """Code measured: head (the last commit, frozen in a temporary copy) or worktree
    (a copy of the files as they are, uncommitted edits included)."""
    output: str = "benchmarks/results/a2c_vs_sb3.json"
    """JSON file the raw runs are written to (overwritten)."""


# --------------------------------------------------------------------- helpers


def _first_crossing(steps: Any, returns: Any, threshold: float) -> int | None:
    """Index of the first episode where the mean of the last 100 reaches ``threshold``.

    Episodes in the order they were logged (stable-baselines3: as its ``ep_info_buffer``
    is filled; HSA2C: the parameter server's arrival order, which its stop rule uses).
    """
    import numpy as np

    r = np.asarray(returns, dtype=np.float64)
    if r.size < WINDOW:
        return None
    c = np.concatenate([[0.0], np.cumsum(r)])
    means = (c[WINDOW:] - c[:-WINDOW]) / WINDOW
    hit = np.flatnonzero(means >= threshold)
    return int(hit[0]) + WINDOW - 1 if hit.size else None


def _curve(steps: Any, returns: Any, total: int) -> list[list[float]]:
    """``[step, mean of the last <=100 episodes]`` every ``CURVE_GRID`` steps."""
    import numpy as np

    s = np.asarray(steps, dtype=np.float64)
    r = np.asarray(returns, dtype=np.float64)
    out = []
    for g in range(CURVE_GRID, int(total) + CURVE_GRID, CURVE_GRID):
        n = int(np.searchsorted(s, g, side="right"))
        if n:
            out.append([float(min(g, total)), float(r[max(0, n - WINDOW):n].mean())])
    return out


def _episode_summary(steps: Any, returns: Any, threshold: float, total: int,
                     cap: int) -> dict[str, Any]:
    import numpy as np

    i = _first_crossing(steps, returns, threshold)
    r = np.asarray(returns, dtype=np.float64)
    return {
        "solved": i is not None,
        "crossing_episode": i,
        "crossing_step": None if i is None else int(steps[i]),
        "n_episodes": int(r.size),
        "mean_last100_at_crossing": (None if i is None
                                     else float(r[i - WINDOW + 1:i + 1].mean())),
        "mean_last100_at_end": float(r[-WINDOW:].mean()) if r.size else None,
        "hit_budget": total >= cap,
        "curve": _curve(steps, returns, total),
    }


def _wall_summary(curve: list[list[float | None]], threshold: float) -> dict[str, Any]:
    """The wall-clock curve and the first of its points at or above ``threshold``.

    ``curve_solve_s`` is only as fine as the curve's 0.5 s grid; the time to solve is
    the run's stop (``time_s``), which happens at the crossing.
    """
    hit = next((t for t, _, r in curve if r is not None and r >= threshold), None)
    return {"wall_curve": curve, "curve_solve_s": hit}


def _evaluate(env_id: str, policy: Any, n_episodes: int, seed: int) -> list[float]:
    """Returns of ``n_episodes`` episodes of ``policy(obs) -> action`` (one env): the
    loop ``HSA2CAgent.evaluate`` runs, applied to both methods' policies."""
    from dask_dpsgd.rl._a2c import run_episodes
    from dask_dpsgd.rl._envs import make_spec

    return [float(r) for r in run_episodes(make_spec(env_id, None), policy, n_episodes,
                                           seed)]


# ----------------------------------------------------------------- one run each


def _hsa2c_params(task: dict[str, Any]) -> dict[str, Any]:
    """``HSA2CAgent`` parameters of a run (the common reference of both methods)."""
    return {"env": task["env_id"], "total_timesteps": task["max_timesteps"],
            "target_return": task["threshold"], "n_envs": task["n_envs"],
            "random_state": task["seed"]}


def _run_sb3(task: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    # Mapped by the parent (_common.sb3_a2c_equivalent imports dask_dpsgd, whose
    # numba and scikit-learn would otherwise count in this process's memory).
    eq = task["sb3"]
    threshold = task["threshold"]

    class StopAtThreshold(BaseCallback):
        """Stop once the last 100 Monitor episodes average ``threshold``.

        Reads the episodes from this step's ``infos`` (Monitor's ``"episode"``
        entries, which also fill ``ep_info_buffer``) so that the stop is at the step
        that completes the crossing, not one step later.
        """

        def __init__(self) -> None:
            super().__init__()
            self.recent: deque[float] = deque(maxlen=WINDOW)
            self.steps: list[int] = []
            self.returns: list[float] = []
            self.t0 = 0.0
            self.next_point = 0.0
            self.wall: list[list[float | None]] = []
            self.solved_s: float | None = None

        def _point(self, now: float) -> None:
            # Same row as HSA2C's history_: time, env steps, mean of the last <=100.
            self.wall.append([now - self.t0, float(self.num_timesteps),
                              float(np.mean(self.recent)) if self.recent else None])
            self.next_point = now - self.t0 + WALL_GRID

        def _on_training_start(self) -> None:
            self.t0 = time.perf_counter()

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                ep = info.get("episode")
                if ep is not None:
                    self.recent.append(float(ep["r"]))
                    self.steps.append(self.num_timesteps)
                    self.returns.append(float(ep["r"]))
            now = time.perf_counter()
            if len(self.recent) == WINDOW and np.mean(self.recent) >= threshold:
                self.solved_s = now - self.t0
                self._point(now)
                return False
            if now - self.t0 >= self.next_point:
                self._point(now)
            return True

        def _on_training_end(self) -> None:
            if self.solved_s is None:  # budget spent: close the curve at the end
                self._point(time.perf_counter())

    act = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}
    pk = {**eq["policy_kwargs"], "activation_fn": act[eq["policy_kwargs"]
                                                      ["activation_fn"]]}
    t0 = time.perf_counter()
    venv = make_vec_env(eq["env_id"], n_envs=eq["n_envs"], seed=eq["seed"])
    if eq["vec_normalize"] is not None:
        venv = VecNormalize(venv, **eq["vec_normalize"])
    model = A2C("MlpPolicy", venv, seed=eq["seed"], device="cpu", policy_kwargs=pk,
                **eq["a2c"])
    construct_s = time.perf_counter() - t0
    cb = StopAtThreshold()
    _common.reset_peak_rss()
    cpu0 = _common.cpu_seconds()
    with _common.PeakPss() as pss:
        t0 = time.perf_counter()
        model.learn(total_timesteps=eq["total_timesteps"], callback=cb)
        learn_s = time.perf_counter() - t0
    cpu = _common.cpu_seconds() - cpu0
    peak = _common.peak_rss_mib()
    steps = int(model.num_timesteps)
    summary = _episode_summary(cb.steps, cb.returns, threshold, steps,
                               task["max_timesteps"])
    t0 = time.perf_counter()
    ev = _evaluate(eq["env_id"],
                   lambda o: int(model.predict(o, deterministic=True)[0]),
                   task["eval_episodes"], 10_000 + task["seed"])
    return {
        "time_s": learn_s,
        "construct_s": construct_s,
        "time_incl_construct_s": learn_s + construct_s,
        "callback_solved_s": cb.solved_s,
        "steps": steps,
        "steps_per_s": steps / learn_s,
        "cpu_s": cpu,
        "cpu_util": cpu / learn_s,
        "peak_rss_mib": peak,
        "peak_pss_mib": pss.peak_mib,
        "pss_samples": pss.n_samples,
        "total_envs": eq["n_envs"],
        "eval_returns": ev,
        "eval_s": time.perf_counter() - t0,
        "torch_threads": torch.get_num_threads(),
        "params": eq,
        **summary,
        **_wall_summary(cb.wall, threshold),
    }


def _run_hsa2c(task: dict[str, Any]) -> dict[str, Any]:
    import socket

    import distributed
    import numpy as np

    from dask_dpsgd import HSA2CAgent
    from dask_dpsgd.engine._cluster import current_workers
    from dask_dpsgd.rl._a2c import PARALLEL_MIN_BATCH

    m, p = method_layout(task["method"])
    mode = layout_mode(m, p)
    params = _hsa2c_params(task)
    est = HSA2CAgent(**params, n_workers=m, threads_per_worker=p, parallelism=mode)
    with distributed.Client(task["scheduler"], set_as_default=True) as client:
        if task.get("warm_first"):
            # A fresh cluster (_common.RunCluster): load the kernels into its workers
            # first, excluded, as the start-of-benchmark warm-up did for the first one.
            HSA2CAgent(**{**params, "total_timesteps": 4_000, "target_return": None},
                       n_workers=m, threads_per_worker=p, parallelism=mode).fit()
        # The fit takes the first m workers in this order; the memory and CPU probes
        # follow it, so a larger shared cluster's idle workers are not counted.
        used = current_workers(client)[:m]
        if len(used) != m:
            raise RuntimeError(f"{task['method']}: cluster has {len(used)} workers, "
                               f"needs {m}")
        before = client.run(_worker_reset, workers=used)
        _common.reset_peak_rss()
        cpu0 = _common.cpu_seconds()
        # PSS is read from /proc here: only the workers on this host (a SLURMCluster's
        # are elsewhere; their peak RSS still counts, from _worker_read).
        here = socket.gethostname()
        local = [b["pid"] for b in before.values() if b["host"] == here]
        with _common.PeakPss(local) as pss:
            t0 = time.perf_counter()
            est.fit()
            fit_s = time.perf_counter() - t0
        cpu = _common.cpu_seconds() - cpu0
        after = client.run(_worker_read, workers=used)
    driver_peak = _common.peak_rss_mib()
    worker_peaks = [after[a]["peak_rss_mib"] for a in sorted(after)]
    worker_cpu = sum(after[a]["cpu_s"] - before[a]["cpu_s"] for a in after)
    steps = int(est.num_timesteps_)
    summary = _episode_summary(est.episode_timesteps_, est.episode_returns_,
                               task["threshold"], steps, task["max_timesteps"])
    hist = est.history_
    train_s = hist[-1]["time/elapsed_s"] if hist else float("nan")
    wall = [[h["time/elapsed_s"], float(h["time/total_timesteps"]),
             h["rollout/ep_rew_mean"] if np.isfinite(h["rollout/ep_rew_mean"]) else None]
            for h in hist]
    t0 = time.perf_counter()
    ev = _evaluate(task["env_id"], est.predict, task["eval_episodes"],
                   10_000 + task["seed"])
    return {
        "layout": f"{m}x{p}",
        "mode": mode,
        "parallelism_": est.parallelism_,
        "cores": m * p,
        # Whether the P threads split the gradient: below PARALLEL_MIN_BATCH samples
        # per update the workers run the serial kernel (threads would cost more).
        "threads_split_gradient": p > 1 and est.n_steps * task["n_envs"]
        >= PARALLEL_MIN_BATCH,
        "parallel_min_batch": PARALLEL_MIN_BATCH,
        "time_s": fit_s,
        # fit() minus the training loop: env inspection, cluster probe, parameter-server
        # start, and after the loop the final stats/snapshot calls.
        "fit_overhead_s": fit_s - train_s,
        "steps": steps,
        "steps_per_s": steps / fit_s,
        "cpu_s": cpu + worker_cpu,
        "cpu_util": (cpu + worker_cpu) / fit_s,
        "peak_rss_mib": driver_peak + sum(worker_peaks),
        "peak_rss_parts": {"driver": driver_peak,
                           **{f"worker{i}": v for i, v in enumerate(worker_peaks)}},
        "peak_pss_mib": pss.peak_mib,
        "pss_samples": pss.n_samples,
        "pss_workers": len(local),
        "total_envs": m * task["n_envs"],
        "eval_returns": ev,
        "eval_s": time.perf_counter() - t0,
        "params": {**params, "n_workers": m, "threads_per_worker": p},
        "hsa2c": {
            "history": hist,
            "n_workers_": est.n_workers_,
            "threads_per_worker_": est.threads_per_worker_,
            "n_updates_": est.n_updates_,
            "n_pushes_sent_": est.n_pushes_sent_,
            "n_updates_applied_": est.n_updates_applied_,
            "n_updates_rejected_": est.n_updates_rejected_,
            "staleness_mean_": est.staleness_mean_,
            "staleness_max_": est.staleness_max_,
            "staleness_histogram_": est.staleness_histogram_.tolist(),
        },
        **summary,
        **_wall_summary(wall, task["threshold"]),
    }


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Child-process entry: one (method, env, seed) run; returns its JSON record."""
    import numpy as np

    method = task["method"]
    if method == "sb3":
        out = _run_sb3(task)
        package = None
    elif method_layout(method) is not None:
        out = _run_hsa2c(task)
        import dask_dpsgd

        package = dask_dpsgd.__file__
    else:
        raise ValueError(f"unknown method {method!r}")
    return {
        "method": method,
        "env_id": task["env_id"],
        "threshold": task["threshold"],
        "seed": task["seed"],
        "rep": task["rep"],
        "order": task["order"],
        "warmup": bool(task.get("warmup")),
        "max_timesteps": task["max_timesteps"],
        "dask_dpsgd": package,
        "eval_mean": float(np.mean(out["eval_returns"])),
        **out,
    }


# ------------------------------------------------------------------------ driver


def _extra_versions() -> dict[str, str | None]:
    import importlib

    out = {}
    for name in ("torch", "stable_baselines3", "gymnasium"):
        try:
            out[name] = importlib.import_module(name).__version__
        except ImportError:
            out[name] = None
    return out


def _n_envs(cfg: BenchA2CConfig, method: str) -> int:
    """Environments per worker (HSA2C) or in all (SB3) of ``method``'s runs."""
    if cfg.total_envs is None:
        return cfg.n_envs
    layout = method_layout(method)
    return cfg.total_envs // (layout[0] if layout else 1)


def main(cfg: BenchA2CConfig, kind: str = KIND) -> Path:
    """Run the benchmark of ``cfg`` and write its JSON (``kind`` for summarize.py)."""
    import shutil

    import distributed

    layouts = list(dict.fromkeys(parse_layout(text) for text in cfg.layouts))
    methods = (["sb3"] if cfg.sb3 else []) + [f"hsa2c-{m}x{p}" for m, p in layouts]
    if not methods:
        raise SystemExit("nothing to run: give --layouts or --sb3")
    if cfg.total_envs is not None:
        bad = [f"{m}x{p}" for m, p in layouts if cfg.total_envs % m]
        if bad:
            raise SystemExit(f"--total-envs {cfg.total_envs} does not divide over the "
                             f"workers of {bad}")
    if len(cfg.envs) != len(cfg.thresholds):
        raise SystemExit(f"{len(cfg.envs)} envs but {len(cfg.thresholds)} thresholds")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    waits: list[dict[str, Any]] = [
        {"phase": "start", **_common.wait_for_quiet(cfg.max_load, cfg.max_load_wait)}]
    print(f"[load] start: {waits[-1]}", flush=True)
    # Freeze the code under test before any process imports it.
    snap_root, snapshot = _common.snapshot_package(cfg.package_source)
    machine = _common.machine_facts()
    machine["versions"].update(_extra_versions())
    package = Path(__file__).resolve().parents[1] / "dask_dpsgd"
    digest_start = _common.source_digest(package)
    started = _common.now_iso()
    # What the cores deliver to perfectly parallel work (the modes' speed-up verdict).
    ceiling = _ceiling.ceiling() if len(layouts) > 1 else None
    base = {"max_timesteps": cfg.max_timesteps, "n_envs": cfg.n_envs,
            "eval_episodes": cfg.eval_episodes}
    thresholds = dict(zip(cfg.envs, cfg.thresholds, strict=True))
    cluster_start: dict[str, float] = {}
    warmups: list[dict[str, Any]] = []
    worker_numba: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    t_start = time.perf_counter()

    def save(finished: str | None = None) -> Path:
        digests = {"start": digest_start}
        if finished:
            digests["end"] = _common.source_digest(package)
        return _common.write_results(
            cfg.output, kind=kind, config=cfg, machine=machine, runs=runs,
            started=started, finished=finished, warmups=warmups, load_waits=waits,
            cluster_start_s=cluster_start,
            worker_numba=worker_numba, worktree_digest=digests, snapshot=snapshot,
            total_wall_s=time.perf_counter() - t_start,
            **({"ceiling": ceiling} if ceiling else {}))

    try:
        for method in methods[1 if cfg.sb3 else 0:]:
            m, p = method_layout(method)
            # Warm-up fits, excluded: compile or load the numba kernels (cache=True),
            # on each environment (CartPole's vectorised env and Acrobot's
            # SyncVectorEnv take different code paths). Each measured run then gets a
            # fresh cluster of its own (_common.RunCluster), warmed up again inside it.
            with _common.RunCluster(m, p, cfg.scheduler_address) as rc:
                cluster_start[method] = rc.start_s
                for env_id in cfg.envs:
                    task = {**base, "method": method, "env_id": env_id,
                            "n_envs": _n_envs(cfg, method),
                            "threshold": thresholds[env_id], "max_timesteps": 4_000,
                            "eval_episodes": 1, "seed": cfg.random_state, "rep": -1,
                            "order": -1, "scheduler": rc.address, "warmup": True}
                    w = _common.run_isolated(__file__, task, timeout=600)
                    for key in ("hsa2c", "curve", "wall_curve"):
                        w.pop(key, None)
                    warmups.append(w)
                    print(f"[warm-up] {method} {env_id}: fit {w['time_s']:.2f}s "
                          f"(child {w['child_wall_s']:.1f}s)", flush=True)
                with distributed.Client(rc.address, set_as_default=False) as probe:
                    worker_numba[method] = list(probe.run(_worker_numba).values())
        seeds = _common.seeds(cfg.random_state, cfg.seeds)
        for rep, seed in enumerate(seeds):
            waits.append({"phase": f"seed {seed}",
                          **_common.wait_for_quiet(cfg.max_load,
                                                   cfg.max_load_wait if rep == 0
                                                   else cfg.seed_load_wait)})
            print(f"[load] seed {seed}: {waits[-1]}", flush=True)
            order = methods[rep % len(methods):] + methods[:rep % len(methods)]
            for env_id in cfg.envs:
                for i, method in enumerate(order):
                    task = {**base, "method": method, "env_id": env_id,
                            "threshold": thresholds[env_id], "seed": seed, "rep": rep,
                            "order": i, "n_envs": _n_envs(cfg, method)}
                    layout = method_layout(method)
                    if layout is None:
                        task["sb3"] = _common.sb3_a2c_equivalent(_hsa2c_params(task))
                        r = _common.run_isolated(__file__, task, timeout=1800)
                    else:
                        with _common.RunCluster(*layout, cfg.scheduler_address) as rc:
                            task["scheduler"] = rc.address
                            task["warm_first"] = cfg.scheduler_address is None
                            r = _common.run_isolated(__file__, task, timeout=1800)
                        r["cluster_start_s"] = rc.start_s
                    runs.append(r)
                    cross = r["crossing_step"]
                    print(f"[rep {rep} seed {seed}] {env_id:12s} {method:10s} "
                          f"{'solved' if r['solved'] else 'UNSOLVED':8s} "
                          f"{r['time_s']:6.2f}s  {r['steps']:>8,d} steps "
                          f"(crossing {cross if cross is not None else '-'})  "
                          f"{r['steps_per_s']:8,.0f} steps/s  eval "
                          f"{r['eval_mean']:7.1f}  PSS {r['peak_pss_mib']:5.0f} MiB  "
                          f"load {r['loadavg_before'][0]:.2f}", flush=True)
                    save()
    finally:
        shutil.rmtree(snap_root, ignore_errors=True)
    path = save(_common.now_iso())
    print(f"wrote {path} in {time.perf_counter() - t_start:.0f}s", flush=True)
    return path


if __name__ == "__main__":
    if not _common.worker_main(run_one):
        main(_common.parse_config(BenchA2CConfig))
