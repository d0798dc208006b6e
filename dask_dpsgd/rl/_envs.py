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
    """What a worker needs to build its environments.

    Attributes
    ----------
    env_id : str or None
        A gymnasium id such as ``"CartPole-v1"``.
    factory : callable or None
        A zero-argument callable returning a ``gymnasium.Env`` (picklable, e.g. a
        module-level function or ``functools.partial``); for an environment instance,
        an :class:`InstanceCopy` of it.
    env_kwargs : dict
        Keyword arguments of ``gymnasium.make`` (id only).
    vector_fns : tuple of callables or None
        A vector environment's ``env_fns``: each worker runs one copy of each.
    vector_copy : InstanceCopy or None
        A vector environment without ``env_fns``: each worker runs a copy of it.
    label : str or None
        Name of an instance, for messages.
    """

    env_id: str | None
    factory: Callable[[], gym.Env] | None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    vector_fns: tuple[Callable[[], gym.Env], ...] | None = None
    vector_copy: InstanceCopy | None = None
    label: str | None = None

    @property
    def name(self) -> str:
        """Readable name for messages."""
        if self.env_id is not None:
            return repr(self.env_id)
        if self.label is not None:
            return self.label
        return getattr(self.factory, "__name__", repr(self.factory))

    @property
    def n_envs(self) -> int | None:
        """Environments per worker a vector environment fixes (``None``: any)."""
        if self.vector_fns is not None:
            return len(self.vector_fns)
        if self.vector_copy is not None:
            return self.vector_copy.num_envs
        return None


class InstanceCopy:
    """A zero-argument factory of independent copies of an environment instance.

    The instance is pickled once (``cloudpickle``, which also takes lambdas inside
    wrappers); each call unpickles a fresh copy, so every environment of every worker
    has its own state. Copies are seeded apart by the vector environment's
    ``reset(seed=...)`` (seed, seed + 1, ...), with a seed per worker.

    Parameters
    ----------
    env : gymnasium.Env or gymnasium.vector.VectorEnv
        The instance.
    """

    def __init__(self, env: Any) -> None:
        import cloudpickle

        self.label = str(env)
        self.num_envs = int(getattr(env, "num_envs", 1))
        try:
            self.payload = cloudpickle.dumps(env)
        except Exception as exc:  # noqa: BLE001 - any pickling failure, named
            raise TypeError(
                f"environment instance {self.label} cannot be pickled to reach the "
                f"workers ({type(exc).__name__}: {exc}); pass a gymnasium id or a "
                "zero-argument factory that builds it instead") from exc

    def __call__(self) -> Any:
        """A fresh copy of the instance."""
        import cloudpickle

        return cloudpickle.loads(self.payload)

    def __repr__(self) -> str:
        return f"InstanceCopy({self.label})"


def make_spec(env: Any, env_kwargs: dict[str, Any] | None) -> EnvSpec:
    """Turn the estimator's ``env`` parameter into an :class:`EnvSpec`: a gymnasium id,
    a factory, an environment instance (a copy per environment, :class:`InstanceCopy`)
    or a vector environment (its ``env_fns`` when it has them, else a copy of it per
    worker). No environment is stepped."""
    kwargs = dict(env_kwargs or {})
    if isinstance(env, str):
        return EnvSpec(env, None, kwargs)
    if kwargs:
        raise ValueError("env_kwargs apply to a gymnasium id; a factory or an instance "
                         "takes its own arguments (use functools.partial)")
    if isinstance(env, gym.vector.VectorEnv):
        fns = getattr(env, "env_fns", None)
        if fns is not None:
            return EnvSpec(None, None, {}, vector_fns=tuple(fns), label=str(env))
        copy = InstanceCopy(env)
        return EnvSpec(None, None, {}, vector_copy=copy, label=copy.label)
    if isinstance(env, gym.Env):
        copy = InstanceCopy(env)
        return EnvSpec(None, copy, {}, label=copy.label)
    if callable(env):
        return EnvSpec(None, env, {})
    raise TypeError(
        f"env must be a gymnasium id (str), a zero-argument factory returning a "
        f"gymnasium.Env, a gymnasium.Env or a gymnasium.vector.VectorEnv, got "
        f"{type(env).__name__}")


def make_env(spec: EnvSpec) -> gym.Env:
    """One (non-vectorised) environment, with errors naming the environment."""
    if spec.env_id is not None:
        try:
            return gym.make(spec.env_id, **spec.env_kwargs)
        except gym.error.Error as exc:
            raise ValueError(f"cannot make gymnasium environment {spec.name}: {exc}") from exc
    if spec.vector_fns is not None:
        env = spec.vector_fns[0]()
    elif spec.vector_copy is not None:
        raise TypeError(f"{spec.name} is a vector environment without env_fns: it "
                        "cannot give a single environment (pass a factory)")
    else:
        env = spec.factory()  # type: ignore[misc]
    if not isinstance(env, gym.Env):
        raise TypeError(f"env factory {spec.name} returned {type(env).__name__}, not a "
                        "gymnasium.Env")
    return env


_OBS_LEAVES = (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete,
               gym.spaces.MultiBinary)


def _leaves(space: gym.Space, path: str, name: str) -> list[tuple[str, gym.Space]]:
    """The leaf spaces of an observation space in flattening order (a Dict's keys in
    its order, a Tuple's items in theirs), each with its path for messages."""
    if isinstance(space, gym.spaces.Dict):
        return [leaf for key, sub in space.spaces.items()
                for leaf in _leaves(sub, f"{path}[{key!r}]", name)]
    if isinstance(space, gym.spaces.Tuple):
        return [leaf for i, sub in enumerate(space.spaces)
                for leaf in _leaves(sub, f"{path}[{i}]", name)]
    if isinstance(space, _OBS_LEAVES):
        return [(path, space)]
    where = f" (at observation{path})" if path else ""
    raise ValueError(
        f"environment {name} has observation space {space}{where}; HSA2CAgent supports "
        "Box, Discrete, MultiDiscrete and MultiBinary observations and Dict/Tuple "
        "spaces of them")


def _leaf_dim(space: gym.Space) -> int:
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return int(space.nvec.sum())
    return int(np.prod(space.shape)) if space.shape else 1


class ObsEncoder:
    """Observations of a gymnasium space as float64 rows of ``dim`` features, as
    stable-baselines3's ``preprocess_obs`` then ``Flatten`` (``MultiInputPolicy``'s
    ``CombinedExtractor`` with MLP extractors for Dict spaces).

    A Box is flattened (any shape), a Discrete one-hot encoded (``n`` columns, from
    its ``start``), a MultiDiscrete one one-hot block per component, a MultiBinary
    taken as 0/1 features; a Dict concatenates its keys in the space's order, a Tuple
    its items. A value outside a Discrete or MultiDiscrete range is an error naming
    the environment, the value and where it is.

    Parameters
    ----------
    space : gymnasium.Space
        The observation space of one environment.
    name : str
        The environment's name, for messages.
    """

    def __init__(self, space: gym.Space, name: str = "environment") -> None:
        self.space, self.name = space, name
        self.leaves = _leaves(space, "", name)
        self.dim = sum(_leaf_dim(leaf) for _, leaf in self.leaves)
        self.plain_box = isinstance(space, gym.spaces.Box)

    def _leaf_values(self, obs: Any) -> list[Any]:
        """The leaf values of a (possibly batched) structured observation."""
        def walk(space: gym.Space, value: Any, path: str) -> list[Any]:
            if isinstance(space, gym.spaces.Dict):
                if not isinstance(value, dict):
                    raise ValueError(f"observation{path} of {self.name} is "
                                     f"{type(value).__name__}, expected a dict with keys "
                                     f"{list(space.spaces)}")
                missing = [k for k in space.spaces if k not in value]
                if missing:
                    raise ValueError(f"observation{path} of {self.name} lacks key(s) "
                                     f"{missing}")
                return [v for k, sub in space.spaces.items()
                        for v in walk(sub, value[k], f"{path}[{k!r}]")]
            if isinstance(space, gym.spaces.Tuple):
                if not isinstance(value, tuple | list) or len(value) != len(space):
                    raise ValueError(f"observation{path} of {self.name} is not a tuple "
                                     f"of {len(space)} items")
                return [v for i, sub in enumerate(space.spaces)
                        for v in walk(sub, value[i], f"{path}[{i}]")]
            return [value]
        return walk(self.space, obs, "")

    def rows(self, obs: Any, n: int) -> np.ndarray:
        """A batch of ``n`` observations (as a vector env returns them: arrays with a
        leading batch axis, in the space's structure) as C-contiguous ``(n, dim)``
        float64 rows."""
        if self.plain_box:
            return np.ascontiguousarray(
                np.asarray(obs, dtype=np.float64).reshape(n, self.dim))
        out = np.empty((n, self.dim))
        col = 0
        for (path, leaf), value in zip(self.leaves, self._leaf_values(obs), strict=True):
            value = np.asarray(value)
            width = _leaf_dim(leaf)
            if isinstance(leaf, gym.spaces.Discrete | gym.spaces.MultiDiscrete):
                sizes = np.atleast_1d(leaf.nvec if isinstance(
                    leaf, gym.spaces.MultiDiscrete) else leaf.n).reshape(-1)
                if value.size != n * sizes.size:
                    raise ValueError(
                        f"environment {self.name} returned observation{path} of shape "
                        f"{value.shape[1:]}; its space has shape {leaf.shape}")
                index = (value.reshape(n, -1).astype(np.int64)
                         - np.asarray(leaf.start, dtype=np.int64).reshape(1, -1))
                bad = (index < 0) | (index >= sizes)
                if bad.any():
                    raise ValueError(
                        f"environment {self.name} returned observation{path} "
                        f"{value.reshape(n, -1)[np.flatnonzero(bad.any(axis=1))[:1]]} "
                        f"outside its space {leaf}")
                block = out[:, col:col + width]
                block[:] = 0.0
                offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
                block[np.arange(n)[:, None], offsets + index] = 1.0
            else:
                try:
                    out[:, col:col + width] = value.reshape(n, width)
                except ValueError as exc:
                    raise ValueError(
                        f"environment {self.name} returned observation{path} of shape "
                        f"{value.shape[1:]}; its space has shape {leaf.shape}") from exc
            col += width
        return out

    def one(self, obs: Any) -> np.ndarray:
        """One observation (e.g. an episode's final one) as a ``(1, dim)`` row."""
        self._leaf_values(obs)  # its structure, checked with errors naming the keys
        return self.rows(_batched(self.space, obs), 1)

    def batch(self, obs: Any) -> tuple[np.ndarray, bool]:
        """A user's observation, one or a batch, as ``(n, dim)`` rows and whether it
        was a single observation (the first leaf's shape decides)."""
        path, leaf = self.leaves[0]
        first = np.asarray(self._leaf_values(obs)[0])
        shape = tuple(leaf.shape)
        if first.shape == shape:
            single = True
        elif first.ndim == len(shape) + 1 and first.shape[1:] == shape:
            single = False
        else:
            what = f"observation{path}" if path else "observations"
            raise ValueError(f"{what} of shape {first.shape} do not match the "
                             f"environment's observation shape {shape} (one "
                             f"observation) or (n, *{shape}) (a batch)")
        if single:
            obs = _batched(self.space, obs)
        return self.rows(obs, 1 if single else first.shape[0]), single


def _batched(space: gym.Space, obs: Any) -> Any:
    """One structured observation with a leading batch axis of 1."""
    if isinstance(space, gym.spaces.Dict):
        return {k: _batched(sub, obs[k]) for k, sub in space.spaces.items()}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(_batched(sub, obs[i]) for i, sub in enumerate(space.spaces))
    return np.asarray(obs)[None]


@dataclass(frozen=True)
class ActionCodec:
    """The policy head an action space needs, and the kernels' actions as the
    environment takes them.

    The kernels write actions as float64 rows of ``cols`` columns: an index
    (Discrete), one index per component (MultiDiscrete; MultiBinary as components of
    two values), or the unclipped Gaussian sample of the flattened Box.

    Attributes
    ----------
    kind : {"discrete", "box", "multidiscrete", "multibinary"}
    n_outputs : int
        Policy head outputs: logits (all components' concatenated) or the Box size.
    cols : int
        Columns of the kernels' actions array.
    groups : tuple of int or None
        Categories per component (MultiDiscrete/MultiBinary).
    shape : tuple of int
        One action's shape in the environment.
    low, high : ndarray or None
        Flattened Box bounds (actions are clipped to them, as stable-baselines3 does).
    start : ndarray of int64
        Discrete / MultiDiscrete offsets, flattened.
    dtype : numpy dtype
        The action space's dtype.
    """

    kind: str
    n_outputs: int
    cols: int
    groups: tuple[int, ...] | None
    shape: tuple[int, ...]
    low: np.ndarray | None
    high: np.ndarray | None
    start: np.ndarray
    dtype: Any

    @property
    def continuous(self) -> bool:
        """A Gaussian head (Box actions)."""
        return self.kind == "box"

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """Kernel actions ``(n, cols)`` as a batch of environment actions."""
        n = actions.shape[0]
        if self.kind == "box":
            return np.clip(actions, self.low, self.high).reshape(n, *self.shape)
        index = actions.astype(np.int64) + self.start
        if self.kind == "discrete":
            return index[:, 0]
        return index.reshape(n, *self.shape).astype(self.dtype)


def action_codec(name: str, space: gym.Space) -> ActionCodec:
    """The :class:`ActionCodec` of an action space; an unsupported one is an error
    naming it."""
    if isinstance(space, gym.spaces.Discrete):
        return ActionCodec("discrete", int(space.n), 1, None, (), None, None,
                           np.array([int(space.start)]), space.dtype)
    if isinstance(space, gym.spaces.Box):
        dim = int(np.prod(space.shape)) if space.shape else 1
        if not np.issubdtype(space.dtype, np.floating):
            raise ValueError(f"environment {name} has a Box action space of dtype "
                             f"{space.dtype}; HSA2CAgent's Gaussian policy needs a "
                             "floating-point Box")
        return ActionCodec("box", dim, dim, None, tuple(space.shape),
                           np.asarray(space.low, dtype=np.float64).reshape(-1),
                           np.asarray(space.high, dtype=np.float64).reshape(-1),
                           np.zeros(1, dtype=np.int64), space.dtype)
    if isinstance(space, gym.spaces.MultiDiscrete):
        groups = tuple(int(v) for v in space.nvec.reshape(-1))
        return ActionCodec("multidiscrete", sum(groups), len(groups), groups,
                           tuple(space.shape), None, None,
                           np.asarray(space.start, dtype=np.int64).reshape(-1),
                           space.dtype)
    if isinstance(space, gym.spaces.MultiBinary):
        size = int(np.prod(space.shape))
        return ActionCodec("multibinary", 2 * size, size, (2,) * size,
                           tuple(space.shape), None, None,
                           np.zeros(size, dtype=np.int64), space.dtype)
    raise ValueError(
        f"environment {name} has action space {space}; HSA2CAgent supports Discrete, "
        "MultiDiscrete, MultiBinary and Box actions (not Dict or Tuple)")


@dataclass(frozen=True)
class SpaceInfo:
    """An environment's spaces as the kernels need them."""

    observation_space: gym.Space
    action_space: gym.Space
    obs: ObsEncoder
    action: ActionCodec

    @property
    def obs_dim(self) -> int:
        """Features of a flattened observation."""
        return self.obs.dim

    @property
    def continuous(self) -> bool:
        """A Gaussian policy head."""
        return self.action.continuous

    @property
    def n_act_outputs(self) -> int:
        """Policy head outputs."""
        return self.action.n_outputs


def space_info(spec: EnvSpec, observation_space: gym.Space, action_space: gym.Space
               ) -> SpaceInfo:
    """Check the spaces are ones the actor-critic supports; describe them."""
    return SpaceInfo(observation_space, action_space,
                     ObsEncoder(observation_space, spec.name),
                     action_codec(spec.name, action_space))


def inspect_env(spec: EnvSpec) -> SpaceInfo:
    """Build one environment (a vector environment's copy), check its spaces, close
    it."""
    if spec.vector_copy is not None:
        vec = spec.vector_copy()
        try:
            return space_info(spec, vec.single_observation_space,
                              vec.single_action_space)
        finally:
            vec.close()
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
    e.g. CartPole) uses it; a vector environment's ``env_fns`` build one copy each (its
    size, not ``n_envs``); a vector environment without them is copied whole; anything
    else runs in a :class:`BoxSyncVectorEnv`
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
    if spec.vector_fns is not None:
        return BoxSyncVectorEnv(list(spec.vector_fns), f"environment {spec.name}")
    if spec.vector_copy is not None:
        return spec.vector_copy()
    return BoxSyncVectorEnv([spec.factory] * n_envs, f"environment {spec.name}")
