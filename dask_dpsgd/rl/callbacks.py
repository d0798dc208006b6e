"""Callbacks of :meth:`HSA2CAgent.learn`, with stable-baselines3's names and protocol.

A callback runs on the driver (the process that called ``learn``/``fit``) while the
workers train. At every read of the parameter server (every ``poll_interval`` seconds,
and at the end of each checkpoint segment) the agent takes the server's state, so
``self.model`` *is* the current policy (``predict``, ``score`` and
:func:`~dask_dpsgd.io.save_model` work on it), and the callback's :meth:`on_step` is
called; returning ``False`` ends training: the workers stop at their next pull and
``learn`` returns normally. Workers do not wait for a callback: an evaluation on the
driver overlaps training.

Writing one: subclass :class:`BaseCallback` and override ``_on_step`` (and optionally
``_on_training_start`` / ``_on_training_end``); read ``self.model``,
``self.num_timesteps``, ``self.n_calls`` and ``self.locals["record"]`` (the latest
``history_`` record, with SB3's log keys). Frequencies in steps (``eval_freq``,
``save_freq``) are checked at these reads: an event happens at the first read at or
past each multiple, so with a fast environment and the default ``poll_interval`` of
0.5 s it can come several thousand steps late; lower the agent's ``poll_interval`` for
finer ones. Keys a callback adds to
``self.logger_record`` (a dict) are written into that record, as SB3's
``self.logger.record``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np

__all__ = ["BaseCallback", "CallbackList", "CheckpointCallback", "EvalCallback",
           "StopTrainingOnRewardThreshold"]


class BaseCallback:
    """Base class of the agent's callbacks (stable-baselines3's protocol).

    Parameters
    ----------
    verbose : int, default=0
        1 prints what the callback does.

    Attributes
    ----------
    model : HSA2CAgent
        The agent being trained (its parameters are the server's at the last read).
    num_timesteps : int
        Environment steps taken, summed over workers, at the last read.
    n_calls : int
        Calls of :meth:`on_step` so far.
    locals : dict
        ``{"record": <latest history record>}``.
    logger_record : dict
        Keys to add to the current history record.
    parent : BaseCallback or None
        The callback that calls this one (``EvalCallback``'s ``callback_on_new_best``).
    """

    def __init__(self, verbose: int = 0) -> None:
        self.verbose = verbose
        self.model: Any = None
        self.num_timesteps = 0
        self.n_calls = 0
        self.locals: dict[str, Any] = {}
        self.logger_record: dict[str, Any] = {}
        self.parent: BaseCallback | None = None

    def init_callback(self, model: Any) -> None:
        """Attach the agent before training starts."""
        self.model = model
        self._init_callback()

    def on_training_start(self) -> None:
        """Called once, after the cluster is up and before the first read."""
        self._on_training_start()

    def on_step(self) -> bool:
        """Called at every read of the server; ``False`` stops training."""
        self.n_calls += 1
        self.num_timesteps = int(self.model.num_timesteps_)
        return bool(self._on_step())

    def on_training_end(self) -> None:
        """Called once when training ends (also after a stop)."""
        self._on_training_end()

    def _init_callback(self) -> None:
        pass

    def _on_training_start(self) -> None:
        pass

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        pass


class CallbackList(BaseCallback):
    """Several callbacks in order; training stops if any of them says so.

    Parameters
    ----------
    callbacks : list of BaseCallback
    """

    def __init__(self, callbacks: Sequence[BaseCallback]) -> None:
        super().__init__()
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, BaseCallback):
                raise TypeError(f"callbacks must be BaseCallback instances, got "
                                f"{type(cb).__name__}")

    def _init_callback(self) -> None:
        for cb in self.callbacks:
            cb.init_callback(self.model)

    def _on_training_start(self) -> None:
        for cb in self.callbacks:
            cb.on_training_start()

    def _on_step(self) -> bool:
        go = True
        for cb in self.callbacks:
            cb.locals = self.locals
            cb.logger_record = self.logger_record
            go = cb.on_step() and go
        return go

    def _on_training_end(self) -> None:
        for cb in self.callbacks:
            cb.on_training_end()


def as_callback(callback: Any) -> BaseCallback | None:
    """``None``, a callback, or a list of callbacks as one :class:`BaseCallback`."""
    if callback is None or isinstance(callback, BaseCallback):
        return callback
    if isinstance(callback, list | tuple):
        return CallbackList(callback)
    raise TypeError(f"callback must be a BaseCallback, a list of them or None, got "
                    f"{type(callback).__name__}")


class CheckpointCallback(BaseCallback):
    """Save the agent every ``save_freq`` environment steps (:func:`save_model`).

    Parameters
    ----------
    save_freq : int
        Environment steps (summed over workers) between saves; a save happens at the
        first read of the server at or past each multiple.
    save_path : str or path-like
        Folder (created if missing) of ``<name_prefix>_<steps>_steps.npz`` files.
    name_prefix : str, default="hsa2c_model"
    verbose : int, default=0
    """

    def __init__(self, save_freq: int, save_path: str | os.PathLike,
                 name_prefix: str = "hsa2c_model", verbose: int = 0) -> None:
        super().__init__(verbose)
        if isinstance(save_freq, bool) or not isinstance(save_freq, Integral) or save_freq < 1:
            raise ValueError(f"save_freq must be a positive int, got {save_freq!r}")
        self.save_freq = save_freq
        self.save_path = os.fspath(save_path)
        self.name_prefix = name_prefix
        self.saved: list[str] = []
        self._next = save_freq

    def _init_callback(self) -> None:
        os.makedirs(self.save_path, exist_ok=True)
        self._next = (int(getattr(self.model, "num_timesteps_", 0) or 0)
                      // self.save_freq + 1) * self.save_freq

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            from dask_dpsgd.io import save_model

            path = os.path.join(self.save_path,
                                f"{self.name_prefix}_{self.num_timesteps}_steps.npz")
            save_model(self.model, path)
            self.saved.append(path)
            self._next = (self.num_timesteps // self.save_freq + 1) * self.save_freq
            if self.verbose:
                print(f"Saving model checkpoint to {path}")
        return True


class StopTrainingOnRewardThreshold(BaseCallback):
    """Stop training once a mean return reaches ``reward_threshold``.

    Used as :class:`EvalCallback`'s ``callback_on_new_best`` it tests the evaluation's
    best mean return (as stable-baselines3's); on its own, the mean return of the last
    100 training episodes (``rollout/ep_rew_mean``).

    Parameters
    ----------
    reward_threshold : float
    verbose : int, default=0
    """

    def __init__(self, reward_threshold: float, verbose: int = 0) -> None:
        super().__init__(verbose)
        if not np.isfinite(reward_threshold):
            raise ValueError(f"reward_threshold must be finite, got {reward_threshold!r}")
        self.reward_threshold = float(reward_threshold)

    def _on_step(self) -> bool:
        if isinstance(self.parent, EvalCallback):
            value = self.parent.best_mean_reward
        else:
            value = self.locals.get("record", {}).get("rollout/ep_rew_mean", np.nan)
        go = not (np.isfinite(value) and value >= self.reward_threshold)
        if not go and self.verbose:
            print(f"Stopping training: mean reward {value:.2f} reached the threshold "
                  f"{self.reward_threshold:.2f}")
        return go


class EvalCallback(BaseCallback):
    """Evaluate the policy every ``eval_freq`` steps on a separate environment and keep
    the best parameters.

    The evaluation runs ``n_eval_episodes`` episodes on the driver with
    :meth:`HSA2CAgent.score`, while the workers go on training. Its mean return and
    episode length are written to the history record as ``eval/mean_reward`` and
    ``eval/mean_ep_length``.

    Parameters
    ----------
    eval_env : str, callable or gymnasium.Env
        The evaluation environment (as the agent's ``env``; an instance is copied for
        each evaluation, its own state untouched).
    callback_on_new_best : BaseCallback or None
        Called when a new best mean return is found; ``False`` stops training.
    n_eval_episodes : int, default=5
    eval_freq : int, default=10_000
        Environment steps (summed over workers) between evaluations.
    best_model_save_path : str, path-like or None
        Folder where ``best_model.npz`` is written at each new best.
    deterministic : bool, default=True
    random_state : int, default=0
        Seed of the evaluation environment's first reset.
    verbose : int, default=0

    Attributes
    ----------
    best_mean_reward : float
    best_model : HSA2CAgent or None
        A copy of the agent with the best parameters seen (usable for ``predict``).
    evaluations_timesteps, evaluations_results : list
        Steps at each evaluation and the episode returns it measured.
    """

    def __init__(self, eval_env: Any, callback_on_new_best: BaseCallback | None = None,
                 n_eval_episodes: int = 5, eval_freq: int = 10_000,
                 best_model_save_path: str | os.PathLike | None = None,
                 deterministic: bool = True, random_state: int = 0,
                 verbose: int = 0) -> None:
        super().__init__(verbose)
        for name, value in (("n_eval_episodes", n_eval_episodes),
                            ("eval_freq", eval_freq)):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.eval_env = eval_env
        self.callback_on_new_best = callback_on_new_best
        if callback_on_new_best is not None:
            callback_on_new_best.parent = self
        self.n_eval_episodes = n_eval_episodes
        self.eval_freq = eval_freq
        self.best_model_save_path = (None if best_model_save_path is None
                                     else os.fspath(best_model_save_path))
        self.deterministic = deterministic
        self.random_state = random_state
        self.best_mean_reward = -np.inf
        self.best_model: Any = None
        self.last_mean_reward = -np.inf
        self.evaluations_timesteps: list[int] = []
        self.evaluations_results: list[list[float]] = []
        self._next = eval_freq

    def _init_callback(self) -> None:
        self._next = (int(getattr(self.model, "num_timesteps_", 0) or 0)
                      // self.eval_freq + 1) * self.eval_freq
        if self.best_model_save_path is not None:
            os.makedirs(self.best_model_save_path, exist_ok=True)
        if self.callback_on_new_best is not None:
            self.callback_on_new_best.init_callback(self.model)

    def _on_step(self) -> bool:
        if self.num_timesteps < self._next:
            return True
        self._next = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq
        returns, lengths = self.model.evaluate(
            self.eval_env, self.n_eval_episodes, deterministic=self.deterministic,
            random_state=self.random_state)
        mean = float(np.mean(returns))
        self.last_mean_reward = mean
        self.evaluations_timesteps.append(self.num_timesteps)
        self.evaluations_results.append([float(r) for r in returns])
        self.logger_record["eval/mean_reward"] = mean
        self.logger_record["eval/mean_ep_length"] = float(np.mean(lengths))
        if self.verbose:
            print(f"Eval num_timesteps={self.num_timesteps}, episode_reward={mean:.2f} "
                  f"+/- {np.std(returns):.2f}")
        if mean <= self.best_mean_reward:
            return True
        self.best_mean_reward = mean
        self.best_model = self.model._copy_fitted()
        if self.best_model_save_path is not None:
            from dask_dpsgd.io import save_model

            save_model(self.model,
                       os.path.join(self.best_model_save_path, "best_model.npz"))
        if self.callback_on_new_best is not None:
            self.callback_on_new_best.locals = self.locals
            return self.callback_on_new_best.on_step()
        return True
