"""MuJoCo (HalfCheetah-v5, Hopper-v5): return at equal wall time, HSA2C vs SB3 A2C/PPO.

Issue 16's second target, one question: for a fixed wall-clock budget on this machine
(15 minutes), is HSA2C's deterministic evaluation return at every wall time at least
the better of stable-baselines3's A2C and PPO with rl-zoo's hyper-parameters?

* **SB3 A2C, rl-zoo** (``hyperparams/a2c.yml``, "Mujoco Envs"): A2C's defaults, one
  environment, ``VecNormalize`` of observations and rewards; torch on one thread.
* **SB3 PPO, rl-zoo** (``hyperparams/ppo.yml``, tuned HalfCheetah-v4 / Hopper-v4): one
  environment, ``n_steps`` 512, the tuned batch size, epochs, learning rate, clip range
  and coefficients, gSDE-free Gaussian with ``log_std_init`` -2, ``ortho_init=False``,
  ReLU 256-256 networks, ``VecNormalize``; torch on one thread.
* **HSA2C**: A2C's defaults as rl-zoo's A2C (so the comparison is of the two codes),
  ``normalize_observations`` and ``normalize_reward``, two workers x one core (the
  embedded default on two cores), ``n_envs`` 8 per worker.

Every ``copy_every_s`` seconds of training each method's policy (and observation
statistics) is copied by a callback, the copying left out of the clock; evaluation
(``eval_episodes`` deterministic episodes on a fresh environment, statistics frozen)
runs after training, so it costs no training time. Runs already in the results file
are skipped, so the benchmark can be run piecewise (``--seeds``, ``--envs``).

Run from the repository root (bench extra: stable-baselines3, torch, gymnasium[mujoco])::

    PYTHONPATH=. python benchmarks/bench_mujoco.py
    python benchmarks/summarize.py
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common

KIND = "mujoco"

PPO_ZOO = {
    "HalfCheetah-v5": dict(batch_size=64, n_steps=512, gamma=0.98,
                           learning_rate=2.0633e-05, ent_coef=0.000401762,
                           clip_range=0.1, n_epochs=20, gae_lambda=0.92,
                           max_grad_norm=0.8, vf_coef=0.58096),
    "Hopper-v5": dict(batch_size=32, n_steps=512, gamma=0.999,
                      learning_rate=9.80828e-05, ent_coef=0.00229519, clip_range=0.2,
                      n_epochs=5, gae_lambda=0.99, max_grad_norm=0.7,
                      vf_coef=0.835671),
}


@dataclass(frozen=True, slots=True)
class BenchMujocoConfig:
    """HSA2C against SB3's rl-zoo A2C and PPO on MuJoCo at equal wall time (issue #16)."""

    envs: tuple[str, ...] = ("HalfCheetah-v5", "Hopper-v5")
    """Environments."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds."""
    methods: tuple[str, ...] = ("hsa2c", "sb3-a2c", "sb3-ppo")
    """Methods to run."""
    budget_s: float = 900.0
    """Training wall time of every run."""
    copy_every_s: float = 60.0
    """Seconds of training between two copies of the policy."""
    eval_episodes: int = 5
    """Deterministic episodes per evaluation."""
    output: str = "benchmarks/results/mujoco.json"
    """Results file (runs already in it are skipped)."""


class _Clock:
    """Training time with the copying left out, and the copies it took."""

    def __init__(self, cfg: BenchMujocoConfig) -> None:
        self.cfg, self.t0, self.paused = cfg, time.perf_counter(), 0.0
        self.next_at = cfg.copy_every_s
        self.copies: list[tuple[float, int, Any]] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0 - self.paused

    def tick(self, steps: int, take: Any) -> bool:
        """Copy when due; ``False`` once the budget is spent."""
        now = self.elapsed()
        if now >= self.next_at or now >= self.cfg.budget_s:
            t = time.perf_counter()
            self.copies.append((min(now, self.cfg.budget_s), steps, take()))
            self.next_at += self.cfg.copy_every_s
            self.paused += time.perf_counter() - t
        return now < self.cfg.budget_s


def _sb3(cfg: BenchMujocoConfig, env_id: str, seed: int, algo: str) -> dict[str, Any]:
    import torch
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed))
    if algo == "ppo":
        model = PPO("MlpPolicy", env, seed=seed, device="cpu", **PPO_ZOO[env_id],
                    policy_kwargs=dict(log_std_init=-2, ortho_init=False,
                                       activation_fn=torch.nn.ReLU,
                                       net_arch=dict(pi=[256, 256], vf=[256, 256])))
    else:
        model = A2C("MlpPolicy", env, seed=seed, device="cpu")
    clock = _Clock(cfg)

    class Copy(BaseCallback):
        def _on_step(self) -> bool:
            return clock.tick(self.num_timesteps, lambda: (
                {k: v.clone() for k, v in self.model.policy.state_dict().items()},
                env.obs_rms.mean.copy(), env.obs_rms.var.copy()))

    clock.t0 = time.perf_counter()
    model.learn(10**9, callback=Copy())
    wall, steps = clock.elapsed(), model.num_timesteps
    eval_env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=10_000 + seed),
                            training=False, norm_reward=False)
    curve = []
    for t, n, (state, mean, var) in clock.copies:
        model.policy.load_state_dict(state)
        eval_env.obs_rms.mean, eval_env.obs_rms.var = mean, var
        ret, _ = evaluate_policy(model, eval_env, n_eval_episodes=cfg.eval_episodes,
                                 deterministic=True)
        curve.append([t, n, float(ret)])
    return {"method": f"sb3-{algo}", "env": env_id, "seed": seed, "wall_s": wall,
            "steps": steps, "curve": curve}


def _hsa2c(cfg: BenchMujocoConfig, env_id: str, seed: int) -> dict[str, Any]:
    from dask_dpsgd import HSA2CAgent, close_embedded_cluster
    from dask_dpsgd.rl.callbacks import BaseCallback

    clock = _Clock(cfg)

    class Copy(BaseCallback):
        def _on_step(self) -> bool:
            agent = self.model
            return clock.tick(self.num_timesteps, lambda: (
                agent.params_.copy(), agent.obs_mean_.copy(), agent.obs_var_.copy()))

    agent = HSA2CAgent(env_id, total_timesteps=10**9, n_workers=2,
                       threads_per_worker=1, normalize_observations=True,
                       normalize_reward=True, random_state=seed, poll_interval=0.25)
    clock.t0 = time.perf_counter()
    agent.learn(callback=Copy())
    wall, steps = clock.elapsed(), agent.num_timesteps_
    close_embedded_cluster()  # none idles during SB3's runs
    curve = []
    for t, n, (theta, mean, var) in clock.copies:
        agent.params_, agent.obs_mean_, agent.obs_var_ = theta, mean, var
        ret = agent.score(n_episodes=cfg.eval_episodes, random_state=10_000 + seed)
        curve.append([t, n, float(ret)])
    return {"method": "hsa2c", "env": env_id, "seed": seed, "wall_s": wall,
            "steps": steps, "curve": curve}


def main(cfg: BenchMujocoConfig) -> Path:
    path = Path(cfg.output)
    results = _common.Results(cfg, KIND, json.loads(path.read_text()).get("runs", [])
                              if path.exists() else [])
    done = {(r["env"], r["seed"], r["method"]) for r in results.runs}

    for env_id in cfg.envs:
        for seed in cfg.seeds:
            for method in cfg.methods:
                if (env_id, seed, method) in done:
                    continue
                rec = (_hsa2c(cfg, env_id, seed) if method == "hsa2c"
                       else _sb3(cfg, env_id, seed, method.removeprefix("sb3-")))
                results.runs.append(rec)
                print(f"[{env_id} seed {seed}] {method:8s} {rec['steps']} steps in "
                      f"{rec['wall_s']:.0f}s, evals "
                      f"{[round(c[2]) for c in rec['curve']]}", flush=True)
                results.save()
    return results.save(finished=True)


if __name__ == "__main__":
    main(_common.parse_config(BenchMujocoConfig))
