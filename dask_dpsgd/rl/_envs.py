"""Gymnasium environments for the actor-critic: specification, vectorisation, checks.

Lives in the orchestration layer because workers build their environments here; the
estimator uses the same code to validate an environment before any cluster work.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    """What a worker needs to build its environments: a registered id or a factory.

    Attributes
    ----------
    env_id : str or None
        A gymnasium id such as ``"CartPole-v1"``.
    factory : callable or None
        A zero-argument callable returning a ``gymnasium.Env`` (picklable, e.g. a
        module-level function or ``functools.partial``).
    env_kwargs : dict
        Keyword arguments of ``gymnasium.make`` (id only).
    """

    env_id: str | None
    factory: Callable[[], gym.Env] | None
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Readable name for messages."""
        if self.env_id is not None:
            return repr(self.env_id)
        return getattr(self.factory, "__name__", repr(self.factory))


@dataclass(frozen=True, slots=True)
class SpaceInfo:
    """The flattened observation size and the action space, as the kernels need them."""

    obs_shape: tuple[int, ...]
    obs_dim: int
    continuous: bool
    n_act_outputs: int  # actions (Discrete) or action dimension (Box)
    action_low: np.ndarray | None
    action_high: np.ndarray | None
    discrete_start: int


def make_spec(env: Any, env_kwargs: dict[str, Any] | None) -> EnvSpec:
    """Turn the estimator's ``env`` parameter into an :class:`EnvSpec` (no env built)."""
    kwargs = dict(env_kwargs or {})
    if isinstance(env, str):
        return EnvSpec(env, None, kwargs)
    if callable(env):
        if kwargs:
            raise ValueError("env_kwargs apply to a gymnasium id; a factory takes its own "
                             "arguments (use functools.partial)")
        return EnvSpec(None, env, {})
    raise TypeError(
        f"env must be a gymnasium id (str) or a zero-argument factory returning a "
        f"gymnasium.Env, got {type(env).__name__}")


def make_env(spec: EnvSpec) -> gym.Env:
    """One (non-vectorised) environment, with errors naming the environment."""
    if spec.env_id is not None:
        try:
            return gym.make(spec.env_id, **spec.env_kwargs)
        except gym.error.Error as exc:
            raise ValueError(f"cannot make gymnasium environment {spec.name}: {exc}") from exc
    env = spec.factory()  # type: ignore[misc]
    if not isinstance(env, gym.Env):
        raise TypeError(f"env factory {spec.name} returned {type(env).__name__}, not a "
                        "gymnasium.Env")
    return env


def space_info(spec: EnvSpec, observation_space: gym.Space, action_space: gym.Space
               ) -> SpaceInfo:
    """Check the spaces are ones the actor-critic supports; describe them."""
    if not isinstance(observation_space, gym.spaces.Box):
        raise ValueError(
            f"environment {spec.name} has observation space {observation_space}; "
            "HSA2CAgent supports Box observations (flatten Dict/Tuple spaces with "
            "gymnasium.wrappers.FlattenObservation)")
    obs_shape = tuple(int(s) for s in observation_space.shape)
    obs_dim = int(np.prod(obs_shape)) if obs_shape else 1
    if isinstance(action_space, gym.spaces.Discrete):
        return SpaceInfo(obs_shape, obs_dim, False, int(action_space.n), None, None,
                         int(action_space.start))
    if isinstance(action_space, gym.spaces.Box):
        if len(action_space.shape) != 1:
            raise ValueError(f"environment {spec.name} has a Box action space of shape "
                             f"{action_space.shape}; only 1-D Box actions are supported")
        return SpaceInfo(obs_shape, obs_dim, True, int(action_space.shape[0]),
                         np.asarray(action_space.low, dtype=np.float64),
                         np.asarray(action_space.high, dtype=np.float64), 0)
    raise ValueError(
        f"environment {spec.name} has action space {action_space}; HSA2CAgent supports "
        "Discrete and Box actions (not MultiDiscrete, MultiBinary, Dict or Tuple)")


def inspect_env(spec: EnvSpec) -> SpaceInfo:
    """Build one environment, check its spaces, close it."""
    env = make_env(spec)
    try:
        return space_info(spec, env.observation_space, env.action_space)
    finally:
        env.close()


class BoxSyncVectorEnv(gym.vector.SyncVectorEnv):
    """gymnasium's ``SyncVectorEnv`` (``SAME_STEP`` autoreset) with a leaner ``step``.

    The parent's ``step`` serves every space: it batches the observations through the
    space-generic ``concatenate``, iterates the actions through ``iterate``, merges
    every environment's info dict, and copies its outputs. For a ``Box`` observation
    space each copy's observation is written straight into its row of the batch, and
    an info is merged only when it has entries. Same outputs as the parent, in fresh
    arrays every step (tested against it); the parent's ``reset``, ``close`` and
    attribute access are unchanged. On Acrobot-v1 (8 copies) it takes ~2.7 of the
    parent's ~28 us per environment step, most of the loop's own share on a Python
    environment whose step is ~25 us (``benchmarks/bench_a2c_loop.py``). Other
    observation spaces use the parent's ``step``.
    """

    def __init__(self, env_fns: Any, name: str = "environment") -> None:
        super().__init__(env_fns, copy=True,
                         autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        self._box = isinstance(self.single_observation_space, gym.spaces.Box)
        self._name = name

    def reset(self, *, seed: Any = None, options: Any = None) -> tuple[Any, dict[str, Any]]:
        """The parent's ``reset``, with an error naming a wrongly shaped observation."""
        try:
            return super().reset(seed=seed, options=options)
        except ValueError as exc:
            # gymnasium only says "Output array is the wrong shape"; its per-copy
            # observations (a private list, read if present) say which shape it was.
            want = self.single_observation_space.shape
            shapes = [np.shape(o) for o in getattr(self, "_env_obs", ())]
            bad = [(i, sh) for i, sh in enumerate(shapes) if sh != want]
            if not self._box or not bad:
                raise
            raise ValueError(f"{self._name} (copy {bad[0][0]}) returned an observation "
                             f"of shape {bad[0][1]} at reset; its observation space "
                             f"has shape {want}") from exc

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        """Step every copy; reset the ones that ended (``info["final_obs"]``)."""
        if not self._box:
            return super().step(actions)
        space = self.single_observation_space
        n = self.num_envs
        obs = np.empty((n, *space.shape), dtype=space.dtype)
        rewards = np.empty(n)
        terminated = np.empty(n, dtype=np.bool_)
        truncated = np.empty(n, dtype=np.bool_)
        infos: dict[str, Any] = {}
        if len(actions) != n:
            raise ValueError(f"expected {n} actions, got {len(actions)}")
        for i, env in enumerate(self.envs):
            o, rewards[i], terminated[i], truncated[i], info = env.step(actions[i])
            if terminated[i] or truncated[i]:
                infos = self._add_info(infos, {"final_obs": o, "final_info": info}, i)
                o, info = env.reset()
            if info:
                infos = self._add_info(infos, info, i)
            try:
                obs[i] = o
            except ValueError as exc:
                raise ValueError(f"{self._name} (copy {i}) returned an observation of "
                                 f"shape {np.shape(o)}; its observation space has "
                                 f"shape {space.shape}") from exc
        return obs, rewards, terminated, truncated, infos


def make_vector_env(spec: EnvSpec, n_envs: int) -> gym.vector.VectorEnv:
    """``n_envs`` copies, vectorised by gymnasium.

    A registered id with a numpy-vectorised implementation (``vector_entry_point``,
    e.g. CartPole) uses it; anything else runs in a :class:`BoxSyncVectorEnv`
    (gymnasium's ``SyncVectorEnv`` with ``SAME_STEP`` autoreset: the final
    observation of an episode in ``info``).
    """
    if spec.env_id is not None:
        registered = gym.envs.registry.get(spec.env_id)
        if registered is not None and registered.vector_entry_point is not None:
            return gym.make_vec(spec.env_id, num_envs=n_envs,
                                vectorization_mode="vector_entry_point",
                                **spec.env_kwargs)
        return BoxSyncVectorEnv([functools.partial(make_env, spec)] * n_envs,
                                f"environment {spec.name}")
    return BoxSyncVectorEnv([spec.factory] * n_envs, f"environment {spec.name}")
