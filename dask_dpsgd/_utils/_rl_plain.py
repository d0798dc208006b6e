"""Plain forms the model files need of the actor-critic's objects, with no import of
the ``rl`` plug-in (which imports :mod:`dask_dpsgd.io` for its callbacks): the
learning-rate schedule class and gymnasium spaces as JSON."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np


class LinearSchedule:
    """A learning rate falling linearly from ``initial`` to ``final`` over training.

    Called with the remaining progress ``p`` (1 at the start, 0 at the end), it returns
    ``final + p * (initial - final)``: rl-zoo's ``lin_7e-4`` is
    ``LinearSchedule(7e-4)``. A plain class, so an agent using it can be cloned,
    pickled, checkpointed and saved.

    Parameters
    ----------
    initial : float
        The rate at the start (> 0).
    final : float, default=0.0
        The rate at the end (>= 0).
    """

    def __init__(self, initial: float, final: float = 0.0) -> None:
        initial, final = float(initial), float(final)
        if not (math.isfinite(initial) and initial > 0):
            raise ValueError(f"LinearSchedule: initial must be a finite number > 0, got "
                             f"{initial!r}")
        if not (math.isfinite(final) and final >= 0):
            raise ValueError(f"LinearSchedule: final must be a finite number >= 0, got "
                             f"{final!r}")
        self.initial, self.final = initial, final

    def __call__(self, progress_remaining: float) -> float:
        return self.final + progress_remaining * (self.initial - self.final)

    def __repr__(self) -> str:
        return f"LinearSchedule({self.initial!r}, {self.final!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, LinearSchedule)
                and (self.initial, self.final) == (other.initial, other.final))

    def __hash__(self) -> int:
        return hash((self.initial, self.final))


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """A Box, Discrete, MultiDiscrete, MultiBinary, Dict or Tuple space as plain JSON
    data (a model file stores the spaces ``predict`` needs without pickle); the
    inverse of :func:`space_from_json`."""
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "dtype": str(space.dtype), "shape": list(space.shape),
                "low": np.asarray(space.low, dtype=np.float64).reshape(-1).tolist(),
                "high": np.asarray(space.high, dtype=np.float64).reshape(-1).tolist()}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(),
                "start": np.asarray(space.start).tolist(), "dtype": str(space.dtype)}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": [int(v) for v in np.atleast_1d(space.n)]}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": [[k, space_to_json(v)]
                                           for k, v in space.spaces.items()]}
    if isinstance(space, gym.spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(v) for v in space.spaces]}
    raise TypeError(f"space {space} has no JSON form")


def space_from_json(data: dict[str, Any]) -> gym.Space:
    """The space :func:`space_to_json` described."""
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "Box":
        shape, dtype = tuple(data["shape"]), np.dtype(data["dtype"])
        return gym.spaces.Box(np.asarray(data["low"], dtype=dtype).reshape(shape),
                              np.asarray(data["high"], dtype=dtype).reshape(shape),
                              shape, dtype=dtype)
    if kind == "Discrete":
        return gym.spaces.Discrete(int(data["n"]), start=int(data["start"]))
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(np.asarray(data["nvec"]),
                                        dtype=np.dtype(data["dtype"]),
                                        start=np.asarray(data["start"]))
    if kind == "MultiBinary":
        n = data["n"]
        return gym.spaces.MultiBinary(n[0] if len(n) == 1 else n)
    if kind == "Dict":
        return gym.spaces.Dict({k: space_from_json(v) for k, v in data["spaces"]})
    if kind == "Tuple":
        return gym.spaces.Tuple([space_from_json(v) for v in data["spaces"]])
    raise ValueError(f"not a stored gymnasium space: {data!r}")
