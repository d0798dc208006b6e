"""HSA2C as an engine plug-in: advantage actor-critic over gymnasium, no Dask here.

The engine (:mod:`dask_dpsgd.engine`) runs one task per worker per round (a *segment*:
the whole budget, or the steps up to the next checkpoint boundary; docs/design.rst,
"HSA2C"). On a worker, :class:`A2CWorker` is synchronous A2C over its own batch of
``n_envs`` environments: :meth:`~A2CWorker.collect_rollout` (``n_steps`` in all of
them into a :class:`RolloutBuffer`), :meth:`~A2CWorker.gradient` (returns, advantages
and the policy-value gradient, split over the worker's cores by the numba kernels) and
:meth:`~A2CWorker.apply` (the optimiser step on the worker's local ``theta``), as
stable-baselines3's ``collect_rollouts`` / ``RolloutBuffer`` / ``train``. Every
``push_every`` updates it pushes the sum of its steps with the episodes it finished
and its observation moments, and rebases on the global ``theta`` of the reply,
re-applying its own steps the reply cannot contain yet (A3C's local/global split).
The server (:class:`~dask_dpsgd._server.state.A2CRule`) adds them in arrival order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numba
import numpy as np

from dask_dpsgd._kernels import a2c, nn
from dask_dpsgd._server.state import A2CParams, A2CRule, A2CUpdate

# Defined in _utils (model files read it without importing this plug-in); named here
# too, where pickles of agents fitted before the move look for it.
from dask_dpsgd._utils._rl_plain import LinearSchedule  # noqa: F401
from dask_dpsgd.algorithm import AlgorithmBase, WorkerContext, WorkerReport
from dask_dpsgd.rl._envs import EnvSpec, make_env, make_vector_env, space_info

# Rollout batch (n_steps x n_envs samples) from which the gradient is split over
# threads; below it two threads meeting at a barrier every update cost more than they
# save (docs/design.rst, "Kernels").
PARALLEL_MIN_BATCH = 512


@dataclass(frozen=True, slots=True)
class A2CConfig:
    """Hyper-parameters a worker needs (plain values); they mirror
    :class:`~dask_dpsgd.HSA2CAgent`'s."""

    layout: tuple[int, ...]
    n_envs: int
    n_steps: int
    gamma: float
    gae_lambda: float
    ent_coef: float
    vf_coef: float
    max_grad_norm: float
    optimizer: str
    learning_rate: float | Callable[[float], float]  # or of the remaining progress
    rms_prop_eps: float
    normalize_advantage: bool
    normalize_observations: bool
    clip_obs: float
    total_timesteps: int
    target_return: float | None
    push_every: int
    normalize_reward: bool = False
    clip_reward: float = 10.0
    sde_sample_freq: int = -1  # gSDE layouts: steps between exploration draws


def learning_rate_at(learning_rate: float | Callable[[float], float],
                     progress_remaining: float) -> float:
    """The learning rate at ``progress_remaining`` (1 at the start of training, 0 at
    ``total_timesteps``): the float itself, or the schedule called, as SB3's.

    Raises
    ------
    ValueError
        If a schedule returns anything but a finite number >= 0.
    """
    if not callable(learning_rate):
        return float(learning_rate)
    value = learning_rate(float(progress_remaining))
    try:
        lr = float(value)
    except (TypeError, ValueError):
        lr = float("nan")
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"the learning_rate schedule returned {value!r} at "
                         f"progress_remaining={progress_remaining:.4g}; it must return a "
                         "finite number >= 0")
    return lr


class RolloutBuffer:
    """Preallocated arrays of one worker's rollout (``n_steps x n_envs`` transitions)."""

    def __init__(self, n_steps: int, n_envs: int, obs_dim: int, action_cols: int) -> None:
        self.obs = np.empty((n_steps, n_envs, obs_dim))
        self.actions = np.empty((n_steps, n_envs, action_cols))
        self.values = np.empty((n_steps, n_envs))
        self.log_probs = np.empty((n_steps, n_envs))
        self.rewards = np.empty((n_steps, n_envs))
        self.terminated = np.empty((n_steps, n_envs), dtype=np.bool_)
        self.truncated = np.empty((n_steps, n_envs), dtype=np.bool_)
        self.trunc_values = np.zeros((n_steps, n_envs))
        self.valid = np.ones((n_steps, n_envs), dtype=np.bool_)
        self.advantages = np.empty((n_steps, n_envs))
        self.returns = np.empty((n_steps, n_envs))


def _check_finite_obs(out: np.ndarray, env_name: str) -> np.ndarray:
    """Observation rows, checked finite (the error names the environment)."""
    if not np.isfinite(out).all():
        raise ValueError(f"environment {env_name} returned a non-finite observation: "
                         f"{out[~np.isfinite(out).all(axis=1)][0]}")
    return out


def _raise_non_finite(rew: np.ndarray, obs: np.ndarray, env_name: str) -> None:
    """Raise the error naming the non-finite reward or observation of a step."""
    if not np.isfinite(rew).all():
        raise ValueError(f"environment {env_name} returned a non-finite reward "
                         f"{rew[~np.isfinite(rew)][0]!r}")
    _check_finite_obs(obs, env_name)


def _step_error(exc: Exception, env_name: str, actions: np.ndarray) -> Exception:
    """The error of an environment's ``step``, saying which actions it was given
    (a wrapper's ``action()`` returning the wrong shape fails here)."""
    message = (f"environment {env_name} failed in step() given actions of shape "
               f"{np.shape(actions)} and dtype {np.asarray(actions).dtype} (one row per "
               f"copy): {type(exc).__name__}: {exc}")
    try:
        return type(exc)(message)
    except Exception:  # noqa: BLE001 - an exception type that takes other arguments
        return RuntimeError(message)


class A2CWorker:
    """One worker's segment of HSA2C (the engine's loop; see the module docstring).

    Parameters
    ----------
    spec : EnvSpec
    cfg : A2CConfig
    ctx : WorkerContext
        Its ``plan`` is the environment step count at which the segment ends;
        ``resumed`` (the policy was trained before this segment) bias-corrects the
        RMSProp statistics, which start empty (:func:`a2c.rmsprop_bias_correction`).
    """

    n_updates = None

    def __init__(self, spec: EnvSpec, cfg: A2CConfig, ctx: WorkerContext) -> None:
        self.spec, self.cfg = spec, cfg
        self.until = int(ctx.plan) if ctx.plan is not None else cfg.total_timesteps
        self.resumed = ctx.resumed
        self.parallel = ctx.threads > 1 and cfg.n_steps * cfg.n_envs >= PARALLEL_MIN_BATCH
        self.rng = np.random.default_rng(ctx.seed)
        self.env = make_vector_env(spec, cfg.n_envs)
        try:
            self._setup()
        except BaseException:
            self.env.close()
            raise

    def _setup(self) -> None:
        cfg, env = self.cfg, self.env
        info = space_info(self.spec, env.single_observation_space,
                          env.single_action_space)
        self.info = info
        self.obs_dim = info.obs_dim
        self.action_cols = info.action.cols
        self.sde = cfg.layout[nn.L_CONTINUOUS] == nn.HEAD_SDE
        self.layout = np.asarray(cfg.layout, dtype=np.int64)
        self.next_step_mode = (env.metadata.get("autoreset_mode")
                               == gym.vector.AutoresetMode.NEXT_STEP)
        self.loss_grad = nn.select_a2c_loss_grad(self.parallel)
        n_chunks = numba.get_num_threads() if self.parallel else 1
        n_params = nn.n_params(cfg.layout)
        self.theta = np.empty(n_params)
        self.grad = np.empty(n_params)
        self.opt_step = np.empty(n_params)
        self.acc = np.zeros(n_params)  # steps since the last push
        self.opt_a = np.zeros(n_params)
        self.opt_b = np.zeros(n_params)
        self.losses = np.empty(3)
        # Sums over this push's updates of policy, entropy and value loss, explained
        # variance, and the update count (SB3's train/ log keys).
        self.stats_sum = np.zeros(5)
        self.slabs, self.work = nn.make_grad_workspace(cfg.layout, n_chunks)
        self.buf = RolloutBuffer(cfg.n_steps, cfg.n_envs, self.obs_dim, self.action_cols)
        self.last_values = np.empty(cfg.n_envs)
        self.tmp_v = np.empty(1)
        self.norm_obs = np.empty((cfg.n_envs, self.obs_dim))
        self.batch_mean = np.zeros(self.obs_dim)
        self.batch_var = np.zeros(self.obs_dim)
        self.batch_count = 0.0
        self.obs_mean = np.zeros(self.obs_dim)
        self.obs_var = np.ones(self.obs_dim)
        # Reward normalisation (VecNormalize's norm_reward): each environment's
        # discounted return, the moments of this push's returns, the global variance.
        self.ret = np.zeros(cfg.n_envs)
        self.ret_batch_mean = np.zeros(1)
        self.ret_batch_var = np.zeros(1)
        self.ret_batch_count = 0.0
        self.ret_global = (0.0, 1.0, 1e-4)  # (mean, var, count) of the last pull
        self.ret_merged = (np.empty(1), np.empty(1))  # it merged with ret_batch_*
        obs, _ = env.reset(seed=int(self.rng.integers(2**31 - 1)))
        self.obs = _check_finite_obs(info.obs.rows(obs, cfg.n_envs), self.spec.name)
        self.prev_done = np.zeros(cfg.n_envs, dtype=np.bool_)
        self.done = np.zeros(cfg.n_envs, dtype=np.bool_)
        self.ep_ret = np.zeros(cfg.n_envs)
        self.ep_len = np.zeros(cfg.n_envs, dtype=np.int64)
        self.episodes: list[tuple[float, float, float]] = []
        self.global_steps = 0  # the server's step count as this worker knows it
        self.steps_since_push = 0
        self.updates = 0
        self.compute_s = 0.0
        self.env_s = 0.0

    # ------------------------------------------------------------ the engine's loop
    def request(self, index: int) -> None:
        """Everything the rule serves (its ``pull`` takes no request)."""
        return None

    def compute(self, index: int, params: A2CParams, unseen: Sequence[A2CUpdate]
                ) -> A2CUpdate | None:
        """``push_every`` A2C updates from the global ``params``; their summed steps,
        steps, episodes and observation moments (``None`` once the server is done or
        the segment's end is reached)."""
        # Rebase on the global parameters, with this worker's steps still in flight.
        self.theta[:] = params.theta
        for delta in unseen:
            self.theta += delta.theta
        self.obs_mean, self.obs_var = params.obs_mean, params.obs_var
        self.ret_global = params.return_moments
        self.global_steps = params.total_steps + sum(d.steps for d in unseen)
        if params.done or self.global_steps >= self.until:
            return None
        for _ in range(self.cfg.push_every):
            self.collect_rollout()
            self.gradient()
            self.apply()
        moments = ((self.batch_mean.copy(), self.batch_var.copy(), self.batch_count)
                   if self.cfg.normalize_observations else None)
        ret_moments = ((self.ret_batch_mean.copy(), self.ret_batch_var.copy(),
                        self.ret_batch_count) if self.cfg.normalize_reward else None)
        n_stats = self.stats_sum[4]
        stats = self.stats_sum[:4] / n_stats if n_stats else None
        delta = A2CUpdate(self.acc.copy(), self.steps_since_push,
                          np.asarray(self.episodes, dtype=np.float64).reshape(-1, 3),
                          moments, ret_moments, stats)
        self.stats_sum[:] = 0.0
        self.acc[:] = 0.0
        for arr in (self.batch_mean, self.batch_var, self.ret_batch_mean,
                    self.ret_batch_var):
            arr[:] = 0.0
        self.batch_count = self.ret_batch_count = 0.0
        self.episodes = []
        self.steps_since_push = 0
        return delta

    def report(self) -> dict[str, float]:
        """Gradient updates and seconds in the kernels and in the environments."""
        return {"updates": float(self.updates), "time/compute_s": self.compute_s,
                "time/env_s": self.env_s}

    def close(self) -> None:
        """Close the environments."""
        self.env.close()

    # ---------------------------------------------------------------- A2C's steps
    def _normalize(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        if not self.cfg.normalize_observations:
            return x
        a2c.normalize_obs(x, self.obs_mean, self.obs_var, self.cfg.clip_obs, 1e-8, out)
        return out

    def collect_rollout(self) -> None:
        """``n_steps`` steps in every environment into the rollout buffer, with the
        episodes that finish (stamped with the global step they end at)."""
        cfg, buf, info, n_envs = self.cfg, self.buf, self.info, self.cfg.n_envs
        if self.sde:
            # gSDE (SB3's collect_rollouts): one exploration matrix per environment,
            # drawn at the rollout's start and every sde_sample_freq steps.
            explore = draw_noise(self.rng, cfg.layout, (n_envs,), self.theta)
        else:
            noise = draw_noise(self.rng, cfg.layout, (cfg.n_steps, n_envs), self.theta)
        for t in range(cfg.n_steps):
            if self.sde and t > 0 and cfg.sde_sample_freq > 0 and (
                    t % cfg.sde_sample_freq == 0):
                explore = draw_noise(self.rng, cfg.layout, (n_envs,), self.theta)
            if cfg.normalize_observations:
                self.batch_count = a2c.running_mean_std_update(
                    self.batch_mean, self.batch_var, self.batch_count, self.obs)
            buf.obs[t] = self._normalize(self.obs, self.norm_obs)
            tc = time.perf_counter()
            nn.policy_act_value(self.theta, self.layout, buf.obs[t], False,
                                explore if self.sde else noise[t],
                                buf.actions[t], buf.values[t], buf.log_probs[t])
            self.compute_s += time.perf_counter() - tc
            # The log-probability uses the unclipped sample; the env gets it clipped
            # to its bounds (Box), as stable-baselines3 does.
            act = info.action.to_env(buf.actions[t])
            te = time.perf_counter()
            try:
                obs_next, rew, term, trunc, extra = self.env.step(act)
            except Exception as exc:
                raise _step_error(exc, self.spec.name, act) from exc
            self.env_s += time.perf_counter() - te
            rew = np.ascontiguousarray(rew, dtype=np.float64)
            self.obs = info.obs.rows(obs_next, n_envs)  # checked below
            term = np.ascontiguousarray(term, dtype=np.bool_)
            trunc = np.ascontiguousarray(trunc, dtype=np.bool_)
            # Checks, rollout rows and episode counters in one kernel call (as NumPy
            # one-liners on 8-element arrays they cost a tenth of the worker's time).
            # Under NEXT_STEP autoreset the step after a done is gymnasium's reset
            # transition: not learned from and not part of any episode.
            n_done = a2c.record_step(t, self.obs, rew, term, trunc, self.next_step_mode,
                                     buf.rewards, buf.terminated, buf.truncated,
                                     buf.valid, self.prev_done, self.ep_ret, self.ep_len,
                                     self.done)
            if n_done < 0:
                _raise_non_finite(rew, self.obs, self.spec.name)
            if cfg.normalize_reward:
                self._scale_rewards(t, rew, n_done)
            if n_done == 0:
                continue
            if not self.next_step_mode:
                self._bootstrap_truncated(t, term, trunc, extra)
            for e in np.flatnonzero(self.done):
                stamp = self.global_steps + self.steps_since_push + (t + 1) * n_envs
                self.episodes.append((float(stamp), float(self.ep_ret[e]),
                                      float(self.ep_len[e])))
                self.ep_ret[e] = 0.0
                self.ep_len[e] = 0
        self.steps_since_push += cfg.n_steps * n_envs

    def _scale_rewards(self, t: int, rew: np.ndarray, n_done: int) -> None:
        """Reward normalisation of rollout row ``t``, as SB3's ``VecNormalize``:
        every environment's discounted return ``R = gamma R + r`` feeds the running
        variance, and the reward learned from is ``clip(r / sqrt(var + 1e-8),
        -clip_reward, clip_reward)``. The variance is the global one of the last pull
        merged with this worker's returns since (as one SB3 process sees all of its
        own). ``R`` restarts at each episode's end. Episode returns stay unscaled."""
        cfg, buf = self.cfg, self.buf
        valid = buf.valid[t]
        self.ret = np.where(valid, self.ret * cfg.gamma + rew, self.ret)
        rows = self.ret[valid].reshape(-1, 1)
        if rows.shape[0]:
            self.ret_batch_count = a2c.running_mean_std_update(
                self.ret_batch_mean, self.ret_batch_var, self.ret_batch_count, rows)
        mean, var = self.ret_merged
        mean[0], var[0], count = self.ret_global
        if self.ret_batch_count > 0:
            a2c.running_mean_std_merge(mean, var, count, self.ret_batch_mean,
                                       self.ret_batch_var, self.ret_batch_count)
        np.clip(rew / math.sqrt(var[0] + 1e-8), -cfg.clip_reward, cfg.clip_reward,
                out=buf.rewards[t])
        if n_done > 0:
            self.ret[self.done] = 0.0

    def _bootstrap_truncated(self, t: int, term: np.ndarray, trunc: np.ndarray,
                             extra: dict[str, Any]) -> None:
        """Truncated, not terminated: bootstrap from V(final observation) (gymnasium's
        terminated/truncated split; SB3 issue #633). Every final observation is
        checked for finiteness, used or not."""
        obs_dim, name, enc = self.obs_dim, self.spec.name, self.info.obs
        for e in np.flatnonzero(term):
            _check_finite_obs(enc.one(extra["final_obs"][e]), name)
        for e in np.flatnonzero(np.logical_and(trunc, np.logical_not(term))):
            fin = _check_finite_obs(enc.one(extra["final_obs"][e]), name)
            nn.predict_values(self.theta, self.layout,
                              self._normalize(fin, np.empty((1, obs_dim))), self.tmp_v)
            self.buf.trunc_values[t, e] = self.tmp_v[0]

    def gradient(self) -> bool:
        """Returns, advantages (GAE) and the clipped policy-value gradient of the
        rollout into ``self.grad``; ``False`` when the rollout has no valid row."""
        tc = time.perf_counter()
        cfg, buf = self.cfg, self.buf
        nn.predict_values(self.theta, self.layout,
                          self._normalize(self.obs, self.norm_obs), self.last_values)
        if self.next_step_mode:
            # The observation returned at a done step is the final one: its value is
            # the next row's V(s) (or the last values for the last row).
            buf.trunc_values[:-1] = buf.values[1:]
            buf.trunc_values[-1] = self.last_values
        a2c.compute_returns_and_advantages(
            buf.rewards, buf.values, buf.terminated, buf.truncated, self.last_values,
            buf.trunc_values, cfg.gamma, cfg.gae_lambda, buf.advantages, buf.returns)
        if self.next_step_mode:
            valid = buf.valid
            ob, ac = buf.obs[valid], buf.actions[valid]
            ad, rt = buf.advantages[valid], buf.returns[valid]
        else:  # every row is valid: the same rows in the same order, without copies
            ob, ac = buf.obs.reshape(-1, self.obs_dim), buf.actions.reshape(-1, self.action_cols)
            ad, rt = buf.advantages.reshape(-1), buf.returns.reshape(-1)
        values = buf.values[buf.valid] if self.next_step_mode else buf.values.reshape(-1)
        if cfg.normalize_advantage and ad.shape[0] > 1:
            ad = (ad - ad.mean()) / (ad.std() + 1e-8)
        ok = bool(ob.shape[0])
        if ok:
            self.loss_grad(self.theta, self.layout, np.ascontiguousarray(ob),
                           np.ascontiguousarray(ac), np.ascontiguousarray(ad),
                           np.ascontiguousarray(rt), cfg.ent_coef, cfg.vf_coef,
                           self.grad, self.losses, self.slabs, self.work)
            a2c.clip_grad_norm(self.grad, cfg.max_grad_norm)
            self.stats_sum[:3] += self.losses
            var_returns = float(np.var(rt))
            self.stats_sum[3] += (1.0 - float(np.var(rt - values)) / var_returns
                                  if var_returns > 0 else 0.0)
            self.stats_sum[4] += 1
        self._has_grad = ok
        self.compute_s += time.perf_counter() - tc
        return ok

    def apply(self) -> None:
        """The optimiser step of the last gradient on the local ``theta``, added to
        the steps of the next push."""
        if not self._has_grad:
            return
        tc = time.perf_counter()
        cfg = self.cfg
        self.updates += 1
        done = (self.global_steps + self.steps_since_push) / cfg.total_timesteps
        lr = learning_rate_at(cfg.learning_rate, max(0.0, 1.0 - done))
        if cfg.optimizer == "rmsprop":
            eps = cfg.rms_prop_eps
            if self.resumed:
                # Empty statistics on a trained policy: the first steps would be up to
                # 10x a steady step in every coordinate (seen to undo a solved
                # CartPole after a lost worker). Adam corrects this itself.
                lr, eps = a2c.rmsprop_bias_correction(lr, eps, 0.99, self.updates)
            a2c.rmsprop_step(self.theta, self.grad, self.opt_a, lr, 0.99, eps, self.opt_step)
        else:
            a2c.adam_step(self.theta, self.grad, self.opt_a, self.opt_b, self.updates,
                          lr, 0.9, 0.999, 1e-8, self.opt_step)
        self.acc += self.opt_step
        self.compute_s += time.perf_counter() - tc


class A2CAlgorithm(AlgorithmBase):
    """HSA2C on the engine: every worker gets the environment spec; one round per
    checkpoint segment.

    Parameters
    ----------
    spec : EnvSpec
    cfg : A2CConfig
    theta0 : ndarray of float64
        Initial flat parameters.
    obs_dim : int
    checkpoint_every : int or None
        Environment steps per segment (``None``: one segment).
    """

    name = "hsa2c"
    round_name = "segment"
    kind = "a2c"

    def __init__(self, spec: EnvSpec, cfg: A2CConfig, theta0: np.ndarray, obs_dim: int,
                 checkpoint_every: int | None = None) -> None:
        self.spec, self.cfg, self.theta0, self.obs_dim = spec, cfg, theta0, obs_dim
        self.checkpoint_every = checkpoint_every
        self._t0: float | None = None
        self.steps0 = 0  # the step count this fit started from

    @property
    def n_rounds(self) -> int:
        """Segments of the whole budget."""
        every = self.checkpoint_every
        return 1 if every is None else -(-self.cfg.total_timesteps // every)

    def split(self, data: EnvSpec, n_workers: int) -> list[EnvSpec]:
        """The environment spec, for every worker."""
        return [data] * n_workers

    def prepare(self, parts: Sequence[Any]) -> EnvSpec:
        """The spec itself."""
        return parts[0]

    def shard_size(self, shard: Any) -> int:
        """Environments are not counted."""
        return 0

    def make_rule(self, snapshot: dict[str, Any] | None, updates_done: int) -> A2CRule:
        """The actor-critic's parameters, step count, episodes and moments."""
        if self._t0 is None:
            self._t0 = time.perf_counter()
            self.steps0 = 0 if snapshot is None else int(snapshot["total_steps"])
        theta = self.theta0 if snapshot is None else snapshot["theta"]
        return A2CRule(theta, self.obs_dim, self.cfg.total_timesteps,
                       self.cfg.target_return, snapshot=snapshot)

    def plan(self, round: int, shard_sizes: Sequence[int], updates_done: int
             ) -> list[int]:
        """The environment step count at which segment ``round`` ends."""
        end = self.cfg.total_timesteps
        if self.checkpoint_every is not None:
            end = min(end, (round + 1) * self.checkpoint_every)
        return [end] * len(shard_sizes)

    def worker(self, shard: EnvSpec, ctx: WorkerContext) -> A2CWorker:
        """The worker's segment."""
        return A2CWorker(shard, self.cfg, ctx)

    def record(self, progress: dict[str, Any], snapshot: Any,
               round_end: tuple[Sequence[WorkerReport], float] | None
               ) -> dict[str, Any]:
        """Timesteps, their rate, and the mean return of the last 100 episodes."""
        elapsed = time.perf_counter() - (self._t0 or time.perf_counter())
        steps = progress["total_steps"]
        remaining = max(0.0, 1.0 - steps / self.cfg.total_timesteps)
        rate = (steps - self.steps0) / elapsed if elapsed > 0 else 0.0
        return {"time/total_timesteps": steps,
                "time/steps_per_s": rate, "time/fps": rate,
                "train/learning_rate": learning_rate_at(self.cfg.learning_rate,
                                                        remaining),
                "rollout/ep_rew_mean": progress["mean_return_100"],
                "rollout/ep_len_mean": progress["mean_length_100"],
                "rollout/episodes": progress["n_episodes"],
                **{f"train/{k}": progress[k] for k in (
                    "policy_loss", "entropy_loss", "value_loss", "explained_variance")}}

    def stop(self, progress: dict[str, Any]) -> bool:
        """The budget is spent or the target return reached."""
        return bool(progress["done"])


def draw_noise(rng: np.random.Generator, layout: tuple[int, ...],
               batch: tuple[int, ...], theta: np.ndarray) -> np.ndarray:
    """The randomness the action kernels take for a batch of shape ``batch``
    (:func:`nn.noise_cols` columns): standard normals (Gaussian head), uniforms on
    [0, 1) (categorical heads), or gSDE exploration matrices drawn from ``theta``'s
    ``log_std`` (:func:`nn.sample_exploration`), one per sample."""
    head = layout[nn.L_CONTINUOUS]
    if head == nn.HEAD_SDE:
        n = int(np.prod(batch))
        return nn.sample_exploration(theta, layout, rng, n).reshape(
            *batch, nn.noise_cols(layout))
    cols = nn.noise_cols(layout)
    if head == nn.HEAD_GAUSSIAN:
        return rng.standard_normal((*batch, cols))
    return rng.random((*batch, cols))


def act(theta: np.ndarray, layout: tuple[int, ...], obs: np.ndarray,
        obs_mean: np.ndarray | None, obs_var: np.ndarray | None, clip_obs: float,
        deterministic: bool, rng: np.random.Generator) -> np.ndarray:
    """Actions of the policy for a batch of flattened observations (kernel calls only).

    Returns the raw kernel output of shape ``(n, action_cols)``: action indices as
    floats (categorical heads) or the unclipped Gaussian mean/sample (Box).
    """
    obs = np.ascontiguousarray(obs, dtype=np.float64)
    if obs_mean is not None:
        out = np.empty_like(obs)
        a2c.normalize_obs(obs, obs_mean, obs_var, clip_obs, 1e-8, out)
        obs = out
    n = obs.shape[0]
    noise = draw_noise(rng, layout, (n,), theta)
    actions = np.empty((n, layout[10]))
    nn.policy_act(theta, np.asarray(layout, dtype=np.int64), obs, deterministic, noise,
                  actions)
    return actions


def run_episodes(spec: EnvSpec, policy: Any, n_episodes: int, seed: int,
                 max_steps: int = 1_000_000, *, with_lengths: bool = False) -> Any:
    """Returns of ``n_episodes`` episodes of ``policy(obs) -> env action``.

    Runs locally, one environment. ``max_steps`` bounds the total steps so a policy
    that never ends an episode cannot hang the caller. ``with_lengths``: also the
    episodes' lengths, as ``(returns, lengths)``.
    """
    env = make_env(spec)
    returns: list[float] = []
    lengths: list[int] = []
    steps = 0
    try:
        obs, _ = env.reset(seed=seed)
        total, length = 0.0, 0
        while len(returns) < n_episodes:
            obs, rew, term, trunc, _ = env.step(policy(obs))
            total += float(rew)
            steps += 1
            length += 1
            if not np.isfinite(rew):
                raise ValueError(f"environment {spec.name} returned a non-finite reward")
            if term or trunc:
                returns.append(total)
                lengths.append(length)
                total, length = 0.0, 0
                obs, _ = env.reset()
            if steps >= max_steps:
                raise RuntimeError(
                    f"{len(returns)} of {n_episodes} evaluation episodes of {spec.name} "
                    f"finished within {max_steps} steps")
    finally:
        env.close()
    if with_lengths:
        return np.asarray(returns), np.asarray(lengths)
    return np.asarray(returns)
