"""Pendulum-v1: how soon does each method reach an eval return of -200 (solved)?

Issue 16's first target, one question: every one of 5 seeds reaches a deterministic
evaluation return >= -200 within 500k environment steps, and HSA2C's median wall time to
get there is >= 5x shorter than stable-baselines3's A2C with rl-zoo's hyper-parameters,
at <= 1.5x its steps.

* **SB3 A2C, rl-zoo** (``hyperparams/a2c.yml``, Pendulum): 8 environments, ``n_steps``
  8, ``gamma`` and ``gae_lambda`` 0.9, ``vf_coef`` 0.4, ``ent_coef`` 0, RMSprop,
  ``max_grad_norm`` 0.5, learning rate linear from 7e-4, gSDE with ``log_std_init`` -2,
  ``ortho_init=False``, ``VecNormalize`` of observations and rewards (``gamma`` 0.9);
  torch on one thread.
* **SB3 A2C, no gSDE**: the same, with plain Gaussian exploration (``log_std_init``
  0), the settings HSA2C runs (the like-for-like comparison of the two codes; SB3's
  learning rate stays rl-zoo's).
* **HSA2C**: the same settings (``tests/rl/test_hsa2c.py``'s: learning rate linear from
  1e-3, ``normalize_observations`` and ``normalize_reward``, ``ortho_init=False``) with
  plain Gaussian exploration (``log_std_init`` 0) and with gSDE (``use_sde``,
  ``log_std_init`` -2, as rl-zoo's), serial (1x1) and on two workers (2x1), each fit on
  its own embedded cluster.

Every ``eval_every`` steps each method's policy is copied by a callback (HSA2C's runs on
the driver at the first read of the parameter server past the mark; the workers do not
wait for it) with the wall time since training began; evaluation (10 deterministic episodes on a fresh environment,
observation statistics frozen) runs after training, so it costs no training time. Time
and steps to solve are those of the first copy at or above the threshold.

Run from the repository root::

    PYTHONPATH=. python benchmarks/bench_pendulum.py
    python benchmarks/summarize.py
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common

KIND = "pendulum"


@dataclass(frozen=True, slots=True)
class BenchPendulumConfig:
    """HSA2C against SB3's rl-zoo A2C on Pendulum-v1 (issue #16)."""

    seeds: int = 5
    """Seeds 0 .. seeds-1."""
    total_timesteps: int = 500_000
    """Training budget of every run."""
    eval_every: int = 25_000
    """Environment steps between two copies of the policy."""
    eval_episodes: int = 10
    """Deterministic episodes per evaluation."""
    threshold: float = -200.0
    """Eval return counted as solved."""
    layouts: tuple[str, ...] = ("1x1", "2x1")
    """HSA2C layouts MxP."""
    sb3: tuple[str, ...] = ("zoo", "nosde")
    """SB3 A2C variants to run (needs the bench extra): zoo (gSDE), nosde."""
    hsa2c: tuple[str, ...] = ("plain", "sde")
    """HSA2C variants: plain Gaussian exploration, gSDE (rl-zoo's use_sde)."""
    output: str = "benchmarks/results/pendulum.json"
    """Results file."""


HSA2C_KW = dict(n_steps=8, gamma=0.9, gae_lambda=0.9, vf_coef=0.4, ent_coef=0.0,
                max_grad_norm=0.5, normalize_advantage=False, normalize_observations=True,
                normalize_reward=True, ortho_init=False)
# rl-zoo's exploration for Pendulum: gSDE from log_std -2, its matrix drawn once per
# rollout (sde_sample_freq -1).
SDE_KW = dict(use_sde=True, log_std_init=-2.0)


def _sb3(cfg: BenchPendulumConfig, seed: int, variant: str) -> dict[str, Any]:
    import torch
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=8, seed=seed), gamma=0.9)
    model = A2C("MlpPolicy", env, n_steps=8, gamma=0.9, gae_lambda=0.9, vf_coef=0.4,
                ent_coef=0.0, max_grad_norm=0.5, use_rms_prop=True,
                normalize_advantage=False, learning_rate=lambda p: p * 7e-4,
                use_sde=variant == "zoo", seed=seed, device="cpu",
                policy_kwargs=dict(log_std_init=-2 if variant == "zoo" else 0.0,
                                   ortho_init=False))
    copies: list[tuple[float, int, Any, Any]] = []

    class Copy(BaseCallback):
        """Copy the policy and the observation statistics every ``eval_every`` steps,
        the copying left out of the clock."""

        paused = 0.0
        next_at = cfg.eval_every

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next_at:
                t = time.perf_counter()
                copies.append((t - t0 - self.paused, self.num_timesteps,
                               {k: v.clone() for k, v in
                                self.model.policy.state_dict().items()},
                               (env.obs_rms.mean.copy(), env.obs_rms.var.copy())))
                self.next_at += cfg.eval_every
                self.paused += time.perf_counter() - t
            return True

    t0 = time.perf_counter()
    callback = Copy()
    model.learn(cfg.total_timesteps, callback=callback)
    wall = time.perf_counter() - t0 - callback.paused
    eval_env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=10_000 + seed),
                            training=False, norm_reward=False)
    curve = []
    for t, steps, state, (mean, var) in copies:
        model.policy.load_state_dict(state)
        eval_env.obs_rms.mean, eval_env.obs_rms.var = mean, var
        ret, _ = evaluate_policy(model, eval_env, n_eval_episodes=cfg.eval_episodes,
                                 deterministic=True)
        curve.append([t, steps, float(ret)])
    return {"method": f"sb3-{variant}", "seed": seed, "wall_s": wall, "curve": curve}


def _hsa2c(cfg: BenchPendulumConfig, layout: str, seed: int, variant: str = "plain"
           ) -> dict[str, Any]:
    import numpy as np

    from dask_dpsgd import HSA2CAgent, close_embedded_cluster
    from dask_dpsgd.rl import LinearSchedule
    from dask_dpsgd.rl.callbacks import BaseCallback

    m, p = (int(v) for v in layout.split("x"))
    copies: list[tuple[float, int, tuple[np.ndarray, ...]]] = []

    class Copy(BaseCallback):
        """Copy the policy and observation statistics at the first read of the server
        past every ``eval_every`` steps (the workers do not wait for it)."""

        next_at = cfg.eval_every

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next_at:
                copies.append((time.perf_counter() - t0, self.num_timesteps,
                               (self.model.params_.copy(), self.model.obs_mean_.copy(),
                                self.model.obs_var_.copy())))
                self.next_at = (self.num_timesteps // cfg.eval_every + 1) * cfg.eval_every
            return True

    extra = SDE_KW if variant == "sde" else {}
    agent = HSA2CAgent("Pendulum-v1", learning_rate=LinearSchedule(1e-3),
                       total_timesteps=cfg.total_timesteps, n_workers=m,
                       threads_per_worker=p, random_state=seed, poll_interval=0.05,
                       **{**HSA2C_KW, **extra})
    t0 = time.perf_counter()
    agent.learn(callback=Copy())
    wall = time.perf_counter() - t0
    close_embedded_cluster()  # each fit on its own cluster; none idles during SB3's
    curve = []
    for t, steps, (theta, mean, var) in copies:
        agent.params_, agent.obs_mean_, agent.obs_var_ = theta, mean, var
        ret = agent.score(n_episodes=cfg.eval_episodes, random_state=10_000 + seed)
        curve.append([t, steps, float(ret)])
    name = f"hsa2c-{layout}" + ("-sde" if variant == "sde" else "")
    return {"method": name, "seed": seed, "wall_s": wall, "curve": curve,
            "steps_per_s": agent.num_timesteps_ / wall}


def main(cfg: BenchPendulumConfig) -> Path:
    results = _common.Results(cfg, KIND)
    for seed in range(cfg.seeds):
        todo = [lambda s=seed, v=v: _sb3(cfg, s, v) for v in cfg.sb3] + [
            lambda s=seed, lay=lay, v=v: _hsa2c(cfg, lay, s, v)
            for v in cfg.hsa2c for lay in cfg.layouts]
        for run in todo:
            rec = run()
            hit = next((c for c in rec["curve"] if c[2] >= cfg.threshold), None)
            rec["solve_s"], rec["solve_steps"] = (hit[0], hit[1]) if hit else (None, None)
            rec["final_eval"] = rec["curve"][-1][2] if rec["curve"] else None
            results.runs.append(rec)
            print(f"[seed {seed}] {rec['method']:12s} wall {rec['wall_s']:6.1f}s "
                  f"solve {rec['solve_s']} s at {rec['solve_steps']} steps, final eval "
                  f"{rec['final_eval']}", flush=True)
            results.save()
    return results.save(finished=True)


if __name__ == "__main__":
    main(_common.parse_config(BenchPendulumConfig))
