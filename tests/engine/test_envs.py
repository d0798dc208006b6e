"""The workers' vectorised environments (``dask_dpsgd.rl._envs``).

``BoxSyncVectorEnv`` replaces gymnasium's ``SyncVectorEnv.step`` by a leaner one for
Box observations; these tests hold it to the parent's outputs, step for step, on real
gymnasium environments.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest

from dask_dpsgd.rl._envs import BoxSyncVectorEnv, make_spec, make_vector_env


def _actions(space: gym.Space, n_steps: int, seed: int) -> list[np.ndarray]:
    space.seed(seed)
    return [space.sample() for _ in range(n_steps)]


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "Pendulum-v1",
                                    "MountainCarContinuous-v0"])
def test_box_sync_vector_env_steps_exactly_as_gymnasiums(env_id):
    n_envs, n_steps = 3, 600  # long enough for every env's episodes to end
    # A short time limit so that truncations occur too, not only terminations.
    make = functools.partial(gym.make, env_id, max_episode_steps=70)
    ours = BoxSyncVectorEnv([make] * n_envs)
    ref = gym.vector.SyncVectorEnv([make] * n_envs,
                                   autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs, _ = ours.reset(seed=5)
    obs_ref, _ = ref.reset(seed=5)
    np.testing.assert_array_equal(obs, obs_ref)
    ended = 0
    previous = None
    for action in _actions(ref.action_space, n_steps, seed=6):
        out = ours.step(action)
        out_ref = ref.step(action)
        for got, want in zip(out[:4], out_ref[:4], strict=True):
            np.testing.assert_array_equal(got, want)
            assert got.dtype == want.dtype and got.shape == want.shape
        info, info_ref = out[4], out_ref[4]
        assert sorted(info) == sorted(info_ref)
        if "final_obs" in info_ref:
            ended += 1
            np.testing.assert_array_equal(info["_final_obs"], info_ref["_final_obs"])
            for e in np.flatnonzero(info_ref["_final_obs"]):
                np.testing.assert_array_equal(info["final_obs"][e],
                                              info_ref["final_obs"][e])
        if previous is not None:  # fresh arrays every step: nothing the caller keeps
            assert not any(np.shares_memory(a, b)  # is overwritten by the next step
                           for a, b in zip(out[:4], previous, strict=True))
        previous = out[:4]
    assert ended > 0
    ours.close()
    ref.close()


class _InfoEnv(gym.Env):
    """2-D uint8 observations, infos whose keys vary by step, random episode ends."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (2, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(4)
        self.t = 0

    def _obs(self) -> np.ndarray:
        return self.np_random.integers(0, 256, (2, 3), dtype=np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {"reset_at": 1}

    def step(self, action):
        self.t += 1
        info = {"t": self.t, "vec": np.full(2, float(action))}
        if action == 3:
            info["rare"] = "three"
        end = self.np_random.random()
        return (self._obs(), float(action) - 1.5, bool(end < 0.05), bool(end > 0.95),
                info)


def test_box_sync_vector_env_merges_infos_as_gymnasium_does():
    ours = BoxSyncVectorEnv([_InfoEnv] * 4)
    ref = gym.vector.SyncVectorEnv([_InfoEnv] * 4,
                                   autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    for env in (ours, ref):
        env.reset(seed=3)
    keys = set()
    for action in _actions(ref.action_space, 300, seed=4):
        out, out_ref = ours.step(action), ref.step(action)
        for got, want in zip(out[:4], out_ref[:4], strict=True):
            np.testing.assert_array_equal(got, want)
            assert got.dtype == want.dtype
        info, info_ref = out[4], out_ref[4]
        assert sorted(info) == sorted(info_ref)
        keys |= set(info)
        for key, want in info_ref.items():
            if key == "final_obs":  # an object array: None where no episode ended
                for e in np.flatnonzero(info_ref["_final_obs"]):
                    np.testing.assert_equal(info[key][e], want[e])
            else:
                np.testing.assert_equal(info[key], want)
    # Every kind of entry occurred: per-step keys, a sometimes-present key, the
    # reset's info of an autoreset copy and the final observations.
    assert {"t", "vec", "rare", "reset_at", "final_obs", "final_info"} <= keys


def test_make_vector_env_choices():
    acrobot = make_vector_env(make_spec("Acrobot-v1", None), 2)
    assert isinstance(acrobot, BoxSyncVectorEnv)
    assert acrobot.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    # A registered numpy-vectorised implementation is used as it is.
    cartpole = make_vector_env(make_spec("CartPole-v1", None), 2)
    assert not isinstance(cartpole, gym.vector.SyncVectorEnv)
    factory = make_vector_env(make_spec(functools.partial(gym.make, "CartPole-v1"), None), 2)
    assert isinstance(factory, BoxSyncVectorEnv)
    # env_kwargs reach every copy.
    limited = make_vector_env(make_spec("Acrobot-v1", {"max_episode_steps": 3}), 2)
    limited.reset(seed=0)
    for _ in range(3):
        *_, truncated, _ = limited.step(np.zeros(2, np.int64))
    assert truncated.all()
    for env in (acrobot, cartpole, factory, limited):
        env.close()


def test_other_observation_spaces_take_gymnasiums_step():
    # Discrete observations: not a Box, so the parent's space-generic step serves.
    env = BoxSyncVectorEnv([functools.partial(gym.make, "FrozenLake-v1")] * 2)
    env.reset(seed=0)
    obs, *_ = env.step(np.array([1, 2]))
    assert obs.shape == (2,) and env.observation_space.contains(obs)
    env.close()
