"""Where a serial HSA2C worker's time per environment step goes (no Dask in the loop).

The Acrobot half of issue #3's target depends on one core's throughput, and a Python
environment such as Acrobot takes most of it. This script measures, per environment
id, in microseconds per environment step (one copy stepped once):

* **environment loops** with fixed random actions, ``n_envs`` copies: the bare
  environment (``env.unwrapped.step``, one copy stepped ``n_envs`` times as often),
  the ``gymnasium.make`` wrapped environment (the same), gymnasium's
  ``SyncVectorEnv`` (``SAME_STEP`` autoreset) and HSA2C's ``BoxSyncVectorEnv``, and,
  where gymnasium registers one, the numpy-vectorised implementation
  (``vector_entry_point``, what HSA2C uses for such ids);
* **the worker's own loop** (``rl._a2c.A2CWorker`` run by ``engine.run_in_process``, SB3's A2C
  defaults, one numba thread) run in this process for ``worker_steps`` environment
  steps, the parameter server called in memory on a background event loop (as
  ``LocalServer`` does inside a Dask worker): total time per step, and its parts in
  ``env.step``, in the numba kernels, and the rest (the loop's bookkeeping).

Repeats are interleaved (every measurement once, then again) and reported as medians.
Reproduce (from the repository root)::

    PYTHONPATH=. python benchmarks/bench_a2c_loop.py
    python benchmarks/summarize.py
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common

KIND = "a2c_loop"


@dataclass(frozen=True, slots=True)
class BenchA2CLoopConfig:
    """Where a serial HSA2C worker's time per environment step goes."""

    envs: tuple[str, ...] = ("Acrobot-v1", "CartPole-v1", "Pendulum-v1")
    """Gymnasium ids to measure."""
    n_envs: int = 8
    """Environment copies per vector (and per worker)."""
    env_steps: int = 24_000
    """Environment steps per environment-loop measurement."""
    worker_steps: int = 100_000
    """Environment steps per worker-loop measurement."""
    repeats: int = 3
    """Interleaved repetitions of every measurement."""
    random_state: int = 0
    """Seed of the actions, the environments and the worker."""
    package_source: str = "head"
    """Code measured: head (the last commit, frozen in a temporary copy) or worktree
    (a copy of the files as they are, uncommitted edits included)."""
    output: str = "benchmarks/results/a2c_loop.json"
    """JSON file the raw runs are written to (overwritten)."""


def _time_vector(env: Any, actions: Any, seed: int) -> float:
    """Microseconds per environment step of ``env.step`` over the batches ``actions``."""
    env.reset(seed=seed)
    t0 = time.perf_counter()
    for a in actions:
        env.step(a)
    return (time.perf_counter() - t0) / (len(actions) * env.num_envs) * 1e6


def _time_single(env: Any, actions: Any, seed: int) -> float:
    """Microseconds per step of one copy stepped through every action of the batches."""
    env.reset(seed=seed)
    flat = [a for batch in actions for a in batch]
    t0 = time.perf_counter()
    for a in flat:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return (time.perf_counter() - t0) / len(flat) * 1e6


def _env_loops(env_id: str, cfg: BenchA2CLoopConfig) -> dict[str, float]:
    import gymnasium as gym
    import numpy as np

    from dask_dpsgd.rl._envs import BoxSyncVectorEnv

    n = cfg.n_envs
    make = lambda: gym.make(env_id)  # noqa: E731
    vectors = {
        "sync_vector_env": gym.vector.SyncVectorEnv(
            [make] * n, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP),
        "box_sync_vector_env": BoxSyncVectorEnv([make] * n),
    }
    if gym.envs.registry[env_id].vector_entry_point is not None:
        vectors["vector_entry_point"] = gym.make_vec(
            env_id, num_envs=n, vectorization_mode="vector_entry_point")
    space = vectors["sync_vector_env"].action_space
    space.seed(cfg.random_state)
    actions = [space.sample() for _ in range(max(1, cfg.env_steps // n))]
    if isinstance(space, gym.spaces.MultiDiscrete):
        actions = [np.asarray(a, dtype=np.int64) for a in actions]
    out = {"wrapped_env": _time_single(make(), actions, cfg.random_state),
           "bare_env": _time_single(make().unwrapped, actions, cfg.random_state)}
    for name, env in vectors.items():
        out[name] = _time_vector(env, actions, cfg.random_state)
        env.close()
    return out


def _worker_loop(env_id: str, cfg: BenchA2CLoopConfig) -> dict[str, float]:
    import numpy as np

    from dask_dpsgd import HSA2CAgent, engine
    from dask_dpsgd._kernels import nn
    from dask_dpsgd.rl._a2c import A2CAlgorithm
    from dask_dpsgd.rl._envs import inspect_env, make_spec

    # The estimator's own mapping of its (SB3's A2C) defaults to the workers' config.
    agent = HSA2CAgent(n_envs=cfg.n_envs, total_timesteps=cfg.worker_steps)
    spec = make_spec(env_id, None)
    info = inspect_env(spec)
    layout = nn.make_layout(info.obs_dim, info.n_act_outputs, tuple(agent.net_arch),
                            info.continuous, activation=agent.activation)
    theta0 = nn.init_params(layout, np.random.default_rng(cfg.random_state),
                            log_std_init=agent.log_std_init)
    run_cfg = agent._run_config(layout)
    algorithm = A2CAlgorithm(spec, run_cfg, theta0, info.obs_dim)
    t0 = time.perf_counter()
    # One worker's loop, its pusher and the server, in this process (no Dask).
    _, reports = engine.run_in_process(algorithm, spec, random_state=cfg.random_state)
    wall = time.perf_counter() - t0
    res = reports[0].counters
    steps = res["updates"] * run_cfg.n_steps * cfg.n_envs
    per = 1e6 / steps
    return {"worker_total": wall * per, "worker_env": res["time/env_s"] * per,
            "worker_kernels": res["time/compute_s"] * per,
            "worker_rest": (wall - res["time/env_s"] - res["time/compute_s"]) * per,
            "worker_env_steps": steps}


def main(cfg: BenchA2CLoopConfig) -> Path:
    # Freeze the code under test before anything imports it.
    snap_root, snapshot = _common.snapshot_package(cfg.package_source)
    machine = _common.machine_facts()
    started = _common.now_iso()
    runs: list[dict[str, Any]] = []
    for env_id in cfg.envs:  # warm-up, excluded: numba's cache, first-call checks
        _worker_loop(env_id, BenchA2CLoopConfig(envs=(env_id,), worker_steps=4_000))
    for rep in range(cfg.repeats):
        for env_id in cfg.envs:
            rec = {"rep": rep, "env_id": env_id, "n_envs": cfg.n_envs,
                   **_env_loops(env_id, cfg), **_worker_loop(env_id, cfg)}
            runs.append(rec)
            print(f"[rep {rep}] {env_id}: " + ", ".join(
                f"{k} {v:.2f}" for k, v in rec.items() if isinstance(v, float)),
                flush=True)
    path = _common.write_results(cfg.output, kind=KIND, config=cfg, machine=machine,
                                 runs=runs, started=started,
                                 finished=_common.now_iso(), snapshot=snapshot)
    import shutil

    shutil.rmtree(snap_root, ignore_errors=True)
    return path


if __name__ == "__main__":
    print(f"wrote {main(_common.parse_config(BenchA2CLoopConfig))}")
