"""The HSA2C plug-in without a cluster: A2CWorker's steps, reward normalisation and
learning-rate schedules (engine.run_in_process is the engine's loop without Dask)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dask_dpsgd import HSA2CAgent, engine
from dask_dpsgd._kernels import nn
from dask_dpsgd._server.state import A2CRule, A2CUpdate
from dask_dpsgd.algorithm import WorkerContext
from dask_dpsgd.rl import LinearSchedule
from dask_dpsgd.rl._a2c import (
    A2CAlgorithm,
    A2CConfig,
    A2CWorker,
    learning_rate_at,
)
from dask_dpsgd.rl._envs import inspect_env, make_spec

CFG = A2CConfig(layout=(), n_envs=4, n_steps=8, gamma=0.9, gae_lambda=0.9,
                ent_coef=0.0, vf_coef=0.4, max_grad_norm=0.5, optimizer="rmsprop",
                learning_rate=7e-4, rms_prop_eps=1e-5, normalize_advantage=False,
                normalize_observations=False, clip_obs=10.0, total_timesteps=4_000,
                target_return=None, push_every=2)


def _setup(env_id="Pendulum-v1", **changes):
    spec = make_spec(env_id, None)
    info = inspect_env(spec)
    layout = nn.make_layout(info.obs_dim, info.n_act_outputs, (16, 16), info.continuous,
                            activation="tanh")
    cfg = dataclasses.replace(CFG, layout=layout, **changes)
    theta0 = nn.init_params(layout, np.random.default_rng(0), log_std_init=0.0)
    return spec, cfg, theta0, info


def _worker(spec, cfg, seed=0):
    ctx = WorkerContext(0, 1, 1, 0, np.random.SeedSequence(seed), 0, False, None)
    return A2CWorker(spec, cfg, ctx)


def _plain_and_scaled(clip_reward):
    """Two Pendulum workers of one seed from the same parameters (the same actions
    and rewards), the second normalising its rewards."""
    spec, cfg, theta0, _ = _setup()
    plain = _worker(spec, cfg)
    scaled = _worker(spec, dataclasses.replace(cfg, normalize_reward=True,
                                               clip_reward=clip_reward))
    for w in (plain, scaled):
        w.theta[:] = theta0
    return cfg, plain, scaled


def test_reward_normalisation_divides_by_the_return_std_and_clips():
    cfg, plain, scaled = _plain_and_scaled(clip_reward=3.0)
    # As if pulled from a server that has seen many returns of variance 4.
    scaled.ret_global = (0.0, 4.0, 1e12)
    plain.collect_rollout()
    scaled.collect_rollout()
    raw = plain.buf.rewards  # the same seed: the same actions and rewards
    np.testing.assert_allclose(scaled.buf.rewards,
                               np.clip(raw / np.sqrt(4.0 + 1e-8), -3.0, 3.0), rtol=1e-6)
    assert (np.abs(raw) > 6.0).any()  # the clip was exercised
    # Episode returns are unscaled; the return moments follow R = gamma R + r.
    np.testing.assert_array_equal(scaled.ep_ret, plain.ep_ret)
    returns = np.zeros((cfg.n_steps + 1, cfg.n_envs))
    for t in range(cfg.n_steps):
        returns[t + 1] = cfg.gamma * returns[t] + raw[t]
    seen = returns[1:].reshape(-1)
    assert scaled.ret_batch_count == seen.size
    np.testing.assert_allclose(scaled.ret_batch_mean[0], seen.mean())
    np.testing.assert_allclose(scaled.ret_batch_var[0], seen.var())


def test_reward_scale_merges_the_pulled_moments_with_the_workers_own_returns():
    """As one SB3 process sees all of its returns: the variance used at each step is
    that of the returns the server had merged plus this worker's since its pull."""
    cfg, plain, scaled = _plain_and_scaled(clip_reward=1e9)
    pulled = np.random.default_rng(2).normal(-3.0, 2.0, 50)
    scaled.ret_global = (pulled.mean(), pulled.var(), float(pulled.size))
    plain.collect_rollout()
    scaled.collect_rollout()
    raw = plain.buf.rewards
    returns, seen = np.zeros(cfg.n_envs), [pulled]  # Pendulum: no episode ends in 8
    for t in range(cfg.n_steps):
        returns = cfg.gamma * returns + raw[t]
        seen.append(returns)
        var = np.concatenate(seen).var()
        np.testing.assert_allclose(scaled.buf.rewards[t], raw[t] / np.sqrt(var + 1e-8),
                                   rtol=1e-9)
    np.testing.assert_allclose(scaled.ret_merged[1][0], var, rtol=1e-9)


def test_server_merges_return_moments_of_every_push():
    spec, cfg, theta0, info = _setup()
    rule = A2CRule(theta0, info.obs_dim, 10_000)
    rng = np.random.default_rng(1)
    parts = [rng.normal(-5.0, 3.0, n) for n in (40, 25)]
    for x in parts:
        rule.apply(A2CUpdate(np.zeros_like(theta0), 8, np.empty((0, 3)), None,
                             (np.array([x.mean()]), np.array([x.var()]), float(x.size))),
                   0)
    both = np.concatenate(parts)
    # SB3's RunningMeanStd starts from a prior count of 1e-4 at mean 0, var 1.
    mean, var, count = rule.pull().return_moments
    np.testing.assert_allclose([mean, var, count], [both.mean(), both.var(), both.size],
                               rtol=1e-4)
    snap = rule.snapshot()
    again = A2CRule(theta0, info.obs_dim, 10_000, snapshot=snap)
    assert again.pull().return_moments == rule.pull().return_moments
    # A checkpoint written before reward normalisation has no return moments.
    old = {k: v for k, v in snap.items() if not k.startswith("ret_")}
    assert (A2CRule(theta0, info.obs_dim, 10_000, snapshot=old).pull().return_moments
            == (0.0, 1.0, 1e-4))


def test_learning_rate_schedules():
    lin = LinearSchedule(7e-4)
    assert lin(1.0) == 7e-4 and lin(0.0) == 0.0 and lin(0.5) == pytest.approx(3.5e-4)
    assert LinearSchedule(1e-3, 1e-4)(0.0) == pytest.approx(1e-4)
    assert learning_rate_at(2e-3, 0.3) == 2e-3
    assert learning_rate_at(lambda p: p * 1e-3, 0.25) == pytest.approx(2.5e-4)
    with pytest.raises(ValueError, match=r"returned -0\.5 at progress_remaining=0\.5"):
        learning_rate_at(lambda p: p - 1.0, 0.5)
    with pytest.raises(ValueError, match="returned 'fast'"):
        learning_rate_at(lambda p: "fast", 1.0)
    with pytest.raises(ValueError, match="initial must be a finite number > 0"):
        LinearSchedule(0.0)


def test_in_process_rounds_follow_the_schedule_and_learn_cartpole():
    spec, cfg, theta0, info = _setup("CartPole-v1", learning_rate=LinearSchedule(2e-3),
                                     total_timesteps=30_000, n_envs=8, n_steps=5,
                                     gamma=0.99, gae_lambda=1.0, vf_coef=0.5)
    algo = A2CAlgorithm(spec, cfg, theta0, info.obs_dim, checkpoint_every=10_000)
    ckpt, reports = engine.run_in_process(algo, spec, n_rounds=algo.n_rounds)
    assert ckpt.rounds_done == 3 and len(reports) == 3
    episodes = ckpt.snapshot["episodes"]
    assert episodes[-1, 0] <= 30_000 + cfg.n_envs * cfg.n_steps * cfg.push_every
    # The random policy lasts ~22 steps; 30k steps of A2C more than double it.
    first, last = episodes[:50, 1].mean(), episodes[-50:, 1].mean()
    assert last > 2 * first, (first, last)


def test_a_schedule_that_turns_negative_stops_the_fit_with_its_value(client):
    agent = HSA2CAgent("CartPole-v1", total_timesteps=4_000, n_workers=1,
                       threads_per_worker=1, learning_rate=lambda p: p - 0.5)
    with pytest.raises(ValueError, match="learning_rate schedule returned"):
        agent.fit()
    with pytest.raises(ValueError, match="returned -1"):
        HSA2CAgent("CartPole-v1", learning_rate=lambda p: -p).fit()


def test_history_logs_the_scheduled_learning_rate(client):
    agent = HSA2CAgent("CartPole-v1", total_timesteps=40_000, n_workers=1,
                       threads_per_worker=1, learning_rate=LinearSchedule(1e-3),
                       normalize_reward=True, poll_interval=0.05, random_state=0)
    agent.fit()
    rates = [r["train/learning_rate"] for r in agent.history_]
    assert len(rates) >= 2 and rates == sorted(rates, reverse=True)
    assert rates[0] < 1e-3  # polled after training began
    assert rates[-1] == pytest.approx(1e-3 * max(0.0, 1 - agent.num_timesteps_ / 40_000))
