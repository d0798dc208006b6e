"""HSA2C: hybrid synchronous/asynchronous advantage actor-critic on Dask.

Layout of one fit (docs/design.rst, "HSA2C"):

* worker 0 holds the :class:`~dask_dpsgd._server.actor.ParameterServer` actor with the
  flat parameter vector ``theta`` under the ``a2c`` rule (plus the global step count,
  the episode log and, optionally, the observation moments); worker 0's own task calls
  it in memory (:func:`~dask_dpsgd._orchestration.pusher.reach`), the others over the
  network;
* every worker runs one long task (key ``hsa2c-worker-w<w>``): **synchronous** A2C over
  its own batch of ``n_envs`` environments (one rollout of ``n_steps`` in all of them,
  one gradient step), the batch's gradient split over its cores by the numba kernels,
  and the step applied to its local copy of ``theta`` at once;
* **asynchronous** across workers: every ``push_every`` updates a worker pushes the sum
  of its steps through a :class:`Pusher` and takes the fresh ``theta`` of the reply,
  re-applying its own steps the reply cannot contain yet (A3C's local/global split).
  The server adds pushes in arrival order and measures their staleness.
* workers stop when the server's step count reaches ``total_timesteps`` (or the mean
  return of the last 100 episodes reaches ``target_return``); meanwhile the driver polls
  the server for progress.

This module holds no arithmetic beyond bookkeeping: the kernels do the maths.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any, NamedTuple

import distributed
import gymnasium as gym
import numba
import numpy as np

from dask_dpsgd._kernels import a2c, nn
from dask_dpsgd._orchestration.cluster import (
    ClusterHandle,
    WorkerLostError,
    lost_workers,
)
from dask_dpsgd._orchestration.envs import EnvSpec, make_vector_env, space_info
from dask_dpsgd._orchestration.live import LiveMetrics
from dask_dpsgd._orchestration.pusher import Pusher, abandoned, await_reply, reach
from dask_dpsgd._orchestration.serving import (
    ServerWatch,
    counts_record,
    loss_event,
    merge_counts,
    merge_histograms,
    serving,
    start_server,
)
from dask_dpsgd._server.state import A2CRule

logger = logging.getLogger(__name__)


# Rollout batch (n_steps x n_envs samples) from which the gradient is split over threads.
PARALLEL_MIN_BATCH = 512


@dataclass(frozen=True, slots=True)
class HSA2CConfig:
    """Hyper-parameters a worker needs (plain values)."""

    layout: tuple[int, ...]
    n_envs: int
    n_steps: int
    gamma: float
    gae_lambda: float
    ent_coef: float
    vf_coef: float
    max_grad_norm: float
    optimizer: str
    learning_rate: float
    rms_prop_eps: float
    normalize_advantage: bool
    normalize_observations: bool
    clip_obs: float
    total_timesteps: int
    target_return: float | None
    push_every: int
    lag: int


class HSA2CResult(NamedTuple):
    """What an HSA2C run hands back to the estimator (plain data only)."""

    theta: np.ndarray
    obs_mean: np.ndarray
    obs_var: np.ndarray
    obs_count: float
    episodes: np.ndarray  # (n, 3): approximate global step, return, length
    total_steps: int
    history: list[dict[str, Any]]
    stats: dict[str, Any]
    staleness_histogram: np.ndarray
    pushes_sent: int
    updates: int


class _Rollout:
    """Preallocated buffers of one worker's rollouts."""

    def __init__(self, n_steps: int, n_envs: int, obs_dim: int, act_dim: int) -> None:
        self.obs = np.empty((n_steps, n_envs, obs_dim))
        self.actions = np.empty((n_steps, n_envs, act_dim))
        self.values = np.empty((n_steps, n_envs))
        self.log_probs = np.empty((n_steps, n_envs))
        self.rewards = np.empty((n_steps, n_envs))
        self.terminated = np.empty((n_steps, n_envs), dtype=np.bool_)
        self.truncated = np.empty((n_steps, n_envs), dtype=np.bool_)
        self.trunc_values = np.zeros((n_steps, n_envs))
        self.valid = np.ones((n_steps, n_envs), dtype=np.bool_)
        self.advantages = np.empty((n_steps, n_envs))
        self.returns = np.empty((n_steps, n_envs))


def _obs_rows(obs: Any, n: int, obs_dim: int) -> np.ndarray:
    """Observations as a C-contiguous float64 ``(n, obs_dim)`` array (flattened rows)."""
    return np.ascontiguousarray(np.asarray(obs, dtype=np.float64).reshape(n, obs_dim))


def _flat_obs(obs: Any, n: int, obs_dim: int, env_name: str) -> np.ndarray:
    """:func:`_obs_rows`, checked finite (the error names the environment)."""
    out = _obs_rows(obs, n, obs_dim)
    if not np.isfinite(out).all():
        raise ValueError(f"environment {env_name} returned a non-finite observation: "
                         f"{out[~np.isfinite(out).all(axis=1)][0]}")
    return out


def _raise_non_finite(rew: np.ndarray, obs: np.ndarray, env_name: str) -> None:
    """Raise the error naming the non-finite reward or observation of a step."""
    if not np.isfinite(rew).all():
        raise ValueError(f"environment {env_name} returned a non-finite reward "
                         f"{rew[~np.isfinite(rew)][0]!r}")
    _flat_obs(obs, obs.shape[0], obs.shape[1], env_name)


def _worker_task(server: Any, spec: EnvSpec, cfg: HSA2CConfig, worker: int,
                 threads: int, seed: Any, token: str = "",
                 resumed: bool = False) -> dict[str, Any]:
    """One worker's whole training (see the module docstring)."""
    numba.set_num_threads(threads)
    server = reach(server)
    # Split the gradient over threads only when the batch is worth it: A2C's default
    # batch (5 steps x 8 envs = 40 samples) is tens of microseconds of work, and two
    # OpenMP threads meeting at a barrier every update cost more than they save (the
    # benchmark measured 38k vs 46k steps/s idle, and a collapse to 2-4k steps/s when
    # another process takes a core). Measured break-even is in the hundreds of samples.
    parallel = threads > 1 and cfg.n_steps * cfg.n_envs >= PARALLEL_MIN_BATCH
    rng = np.random.default_rng(seed)
    env = make_vector_env(spec, cfg.n_envs)
    try:
        return _train_worker(server, spec, env, cfg, worker, parallel, rng,
                             lambda: abandoned(token), resumed)
    finally:
        env.close()


def _train_worker(server: Any, spec: EnvSpec, env: gym.vector.VectorEnv,
                  cfg: HSA2CConfig, worker: int, parallel: bool,
                  rng: np.random.Generator, aborted: Any = None,
                  resumed: bool = False) -> dict[str, Any]:
    """Train on one worker until the server says done (see the module docstring).

    ``resumed``: the segment continues a model trained before (after a checkpoint
    boundary or a recovery); its RMSProp statistics, which start empty, are then
    bias-corrected (:func:`a2c.rmsprop_bias_correction`).
    """
    info_sp = space_info(spec, env.single_observation_space, env.single_action_space)
    n_envs, n_steps, obs_dim = cfg.n_envs, cfg.n_steps, info_sp.obs_dim
    act_dim = info_sp.n_act_outputs if info_sp.continuous else 1
    lay = np.asarray(cfg.layout, dtype=np.int64)
    next_step_mode = (env.metadata.get("autoreset_mode")
                      == gym.vector.AutoresetMode.NEXT_STEP)
    loss_grad = nn.select_a2c_loss_grad(parallel)
    n_chunks = numba.get_num_threads() if parallel else 1

    version, state = await_reply(server.pull(), aborted)
    theta = state["theta"].copy()
    obs_mean, obs_var = state["obs_mean"], state["obs_var"]
    n_params = theta.shape[0]
    grad = np.empty(n_params)
    step = np.empty(n_params)
    acc = np.zeros(n_params)
    opt_a = np.zeros(n_params)
    opt_b = np.zeros(n_params)
    losses = np.empty(3)
    slabs, work = nn.make_grad_workspace(cfg.layout, n_chunks)
    buf = _Rollout(n_steps, n_envs, obs_dim, act_dim)
    last_values = np.empty(n_envs)
    tmp_v = np.empty(1)
    norm_obs = np.empty((n_envs, obs_dim))
    batch_mean = np.zeros(obs_dim)
    batch_var = np.zeros(obs_dim)
    batch_count = 0.0

    raw, _ = env.reset(seed=int(rng.integers(2**31 - 1)))
    raw = _flat_obs(raw, n_envs, obs_dim, spec.name)
    prev_done = np.zeros(n_envs, dtype=np.bool_)
    done = np.zeros(n_envs, dtype=np.bool_)
    ep_ret = np.zeros(n_envs)
    ep_len = np.zeros(n_envs, dtype=np.int64)
    episodes: list[tuple[float, float, float]] = []
    pusher = Pusher(server, worker, cfg.lag, aborted)
    global_steps = state["total_steps"]
    steps_since_push = 0
    updates = 0
    since_push = 0
    done_flag = state["done"]
    t_compute = 0.0
    t_env = 0.0

    def normalize(x: np.ndarray, out: np.ndarray) -> np.ndarray:
        if not cfg.normalize_observations:
            return x
        a2c.normalize_obs(x, obs_mean, obs_var, cfg.clip_obs, 1e-8, out)
        return out

    while not done_flag:
        noise = (rng.standard_normal((n_steps, n_envs, act_dim)) if info_sp.continuous
                 else rng.random((n_steps, n_envs, 1)))
        for t in range(n_steps):
            if cfg.normalize_observations:
                batch_count = a2c.running_mean_std_update(batch_mean, batch_var,
                                                          batch_count, raw)
            buf.obs[t] = normalize(raw, norm_obs)
            tc = time.perf_counter()
            nn.policy_act_value(theta, lay, buf.obs[t], False, noise[t], buf.actions[t],
                                buf.values[t], buf.log_probs[t])
            t_compute += time.perf_counter() - tc
            if info_sp.continuous:
                # The log-probability uses the unclipped sample; the env gets it clipped
                # to its bounds, as stable-baselines3 does.
                act = np.clip(buf.actions[t], info_sp.action_low, info_sp.action_high)
            else:
                act = buf.actions[t, :, 0].astype(np.int64) + info_sp.discrete_start
            te = time.perf_counter()
            raw_next, rew, term, trunc, info = env.step(act)
            t_env += time.perf_counter() - te
            rew = np.ascontiguousarray(rew, dtype=np.float64)
            raw = _obs_rows(raw_next, n_envs, obs_dim)  # checked in record_step
            term = np.ascontiguousarray(term, dtype=np.bool_)
            trunc = np.ascontiguousarray(trunc, dtype=np.bool_)
            # Checks, rollout rows and episode counters in one kernel call: as a dozen
            # NumPy one-liners on 8-element arrays they cost ~1 us per env step, a
            # tenth of the worker's own time per step (measured on Acrobot). Under
            # NEXT_STEP autoreset the step after a done is gymnasium's reset
            # transition: not learned from and not part of any episode.
            n_done = a2c.record_step(t, raw, rew, term, trunc, next_step_mode,
                                     buf.rewards, buf.terminated, buf.truncated,
                                     buf.valid, prev_done, ep_ret, ep_len, done)
            if n_done < 0:
                _raise_non_finite(rew, raw, spec.name)
            if n_done == 0:
                continue
            if not next_step_mode:
                # Truncated, not terminated: bootstrap from V(final observation)
                # (gymnasium's terminated/truncated split; SB3 issue #633). Every final
                # observation is checked for finiteness, used or not.
                for e in np.flatnonzero(term):
                    _flat_obs(info["final_obs"][e], 1, obs_dim, spec.name)
                for e in np.flatnonzero(np.logical_and(trunc, np.logical_not(term))):
                    fin = _flat_obs(info["final_obs"][e], 1, obs_dim, spec.name)
                    nn.predict_values(theta, lay, normalize(fin, np.empty((1, obs_dim))),
                                      tmp_v)
                    buf.trunc_values[t, e] = tmp_v[0]
            for e in np.flatnonzero(done):
                episodes.append((float(global_steps + steps_since_push + (t + 1) * n_envs),
                                 float(ep_ret[e]), float(ep_len[e])))
                ep_ret[e] = 0.0
                ep_len[e] = 0
        tc = time.perf_counter()
        nn.predict_values(theta, lay, normalize(raw, norm_obs), last_values)
        if next_step_mode:
            # The observation returned at a done step is the final one: its value is
            # the next row's V(s) (or the last values for the last row).
            buf.trunc_values[:-1] = buf.values[1:]
            buf.trunc_values[-1] = last_values
        a2c.compute_returns_and_advantages(
            buf.rewards, buf.values, buf.terminated, buf.truncated, last_values,
            buf.trunc_values, cfg.gamma, cfg.gae_lambda, buf.advantages, buf.returns)
        if next_step_mode:
            valid = buf.valid
            ob, ac = buf.obs[valid], buf.actions[valid]
            ad, rt = buf.advantages[valid], buf.returns[valid]
        else:  # every row is valid: the same rows in the same order, without copies
            ob, ac = buf.obs.reshape(-1, obs_dim), buf.actions.reshape(-1, act_dim)
            ad, rt = buf.advantages.reshape(-1), buf.returns.reshape(-1)
        if cfg.normalize_advantage and ad.shape[0] > 1:
            ad = (ad - ad.mean()) / (ad.std() + 1e-8)
        if ob.shape[0]:
            loss_grad(theta, lay, np.ascontiguousarray(ob), np.ascontiguousarray(ac),
                      np.ascontiguousarray(ad), np.ascontiguousarray(rt), cfg.ent_coef,
                      cfg.vf_coef, grad, losses, slabs, work)
            a2c.clip_grad_norm(grad, cfg.max_grad_norm)
            updates += 1
            if cfg.optimizer == "rmsprop":
                lr, eps = cfg.learning_rate, cfg.rms_prop_eps
                if resumed:
                    # Empty statistics on a trained policy: the first steps would be
                    # up to 10x a steady step in every coordinate (seen to undo a
                    # solved CartPole after a lost worker). Adam corrects this itself.
                    lr, eps = a2c.rmsprop_bias_correction(lr, eps, 0.99, updates)
                a2c.rmsprop_step(theta, grad, opt_a, lr, 0.99, eps, step)
            else:
                a2c.adam_step(theta, grad, opt_a, opt_b, updates, cfg.learning_rate,
                              0.9, 0.999, 1e-8, step)
            acc += step
        t_compute += time.perf_counter() - tc
        steps_since_push += n_steps * n_envs
        since_push += 1
        if since_push >= cfg.push_every:
            moments = ((batch_mean.copy(), batch_var.copy(), batch_count)
                       if cfg.normalize_observations else None)
            delta = {"theta": acc.copy(), "steps": steps_since_push,
                     "episodes": np.asarray(episodes, dtype=np.float64).reshape(-1, 3),
                     "obs_moments": moments}
            reply = pusher.send(delta, version, request=True)
            acc[:] = 0.0
            batch_mean[:] = 0.0
            batch_var[:] = 0.0
            batch_count = 0.0
            episodes = []
            global_steps += steps_since_push
            steps_since_push = 0
            since_push = 0
            if reply is not None:
                _, version, state = reply
                # Rebase on the global parameters. With lag 1 the reply predates the
                # push just sent, whose steps are re-applied on top of it.
                theta = state["theta"] if cfg.lag == 0 else state["theta"] + delta["theta"]
                obs_mean, obs_var = state["obs_mean"], state["obs_var"]
                global_steps = state["total_steps"] + (delta["steps"] if cfg.lag else 0)
                done_flag = state["done"]
    # Hand over what was not pushed yet, then wait for the last reply.
    if steps_since_push or episodes:
        delta = {"theta": acc, "steps": steps_since_push,
                 "episodes": np.asarray(episodes, dtype=np.float64).reshape(-1, 3),
                 "obs_moments": ((batch_mean, batch_var, batch_count)
                                 if cfg.normalize_observations else None)}
        pusher.send(delta, version)
    pusher.flush()
    return {"worker": worker, "updates": updates, "pushes_sent": pusher.n_sent,
            "pushes_applied": pusher.n_applied, "pushes_rejected": pusher.n_rejected,
            "compute_s": t_compute, "env_s": t_env, "wait_s": pusher.wait_seconds}


class Resume(NamedTuple):
    """Where a fit continues from a checkpoint file (see :func:`run_hsa2c`)."""

    raw: dict[str, np.ndarray]  # the server's state (A2CRule.snapshot)
    segments_started: int  # seeds of the next segment: SeedSequence(entropy, (this, w))
    boundaries_done: int  # checkpoint segments completed


def run_hsa2c(handle: ClusterHandle, spec: EnvSpec, cfg: HSA2CConfig,
              theta0: np.ndarray, obs_dim: int, *, entropy: int,
              max_staleness: int | None, poll_interval: float = 0.5,
              progress: Any = None, max_recoveries: int = 3,
              checkpoint_every: int | None = None, resume: Resume | None = None,
              on_checkpoint: Any = None, live: LiveMetrics | None = None
              ) -> tuple[HSA2CResult, list[dict[str, Any]]]:
    """Train an actor-critic by HSA2C on the cluster's workers, surviving lost workers.

    The driver polls the server every ``poll_interval`` seconds for progress and keeps
    its latest state (parameters, step count, episode log, observation moments) as an
    in-memory checkpoint. When a worker is lost (the actor's included) the run continues
    on the workers left from that checkpoint, with the remaining budget; the updates
    applied since the last poll are lost (counted in the event's ``updates_lost``) and
    the workers' optimiser statistics restart. Every task of a run belongs to the Dask
    span ``hsa2c-fit``.

    With ``checkpoint_every``, training is cut into segments at every multiple of
    ``checkpoint_every`` environment steps: each segment's workers end at the boundary
    (at their first push at or past it), and the next segment starts new tasks that
    reset their environments from ``SeedSequence(entropy, spawn_key=(segment, w))``,
    with fresh optimiser statistics (bias-corrected, see :func:`_train_worker`), from
    the server's state at the boundary. That
    state is handed to ``on_checkpoint(raw, segments_started, boundaries_done)``;
    given back as ``resume`` it continues the run exactly where an uninterrupted one
    goes on (bit for bit with one worker and one thread).

    Parameters
    ----------
    handle : ClusterHandle
    spec : EnvSpec
    cfg : HSA2CConfig
    theta0 : ndarray of float64
        Initial parameters (ignored with ``resume``).
    obs_dim : int
    entropy : int
        Root seed: segment ``s``, worker ``w`` draws from ``SeedSequence(entropy,
        spawn_key=(s, w))``.
    max_staleness : int or None
    poll_interval : float
        Seconds between progress polls of the server.
    progress : callable or None
        Called with each history record.
    max_recoveries : int
    checkpoint_every : int or None
        Environment steps between segment boundaries (``None``: one segment).
    resume : Resume or None
        Continue from a checkpoint.
    on_checkpoint : callable or None
    live : LiveMetrics or None
        Gets each history record (the dashboard's live page plots them).

    Returns
    -------
    result : HSA2CResult
    events : list of dict
        One record per recovery.
    """
    state: dict[str, Any] = {"theta": theta0, "raw": None}
    if resume is not None:
        state.update(theta=resume.raw["theta"], raw=resume.raw)
    totals: dict[str, Any] = {"history": [], "pushes_sent": 0, "updates": 0,
                              "counts": {}, "histogram": np.zeros(0, np.int64),
                              "t0": time.perf_counter()}
    events: list[dict[str, Any]] = []
    segment = 0 if resume is None else resume.segments_started
    boundary = 0 if resume is None else resume.boundaries_done
    while True:
        end = cfg.total_timesteps
        if checkpoint_every is not None:
            end = min(end, (boundary + 1) * checkpoint_every)
        try:
            with distributed.span("hsa2c-fit"):
                result = _run_segment(handle, spec, cfg, state, totals, obs_dim,
                                      entropy=entropy, segment=segment, budget=end,
                                      max_staleness=max_staleness,
                                      poll_interval=poll_interval, progress=progress,
                                      live=live)
        except WorkerLostError as exc:
            if len(events) >= max_recoveries:
                raise
            survivors = [s for s in handle.slots if s.address not in exc.addresses]
            if not survivors:
                raise RuntimeError("every worker of the fit was lost") from exc
            raw = state["raw"]
            logger.warning("dask-dpsgd: %s; continuing on %d worker(s), %d update(s) "
                           "lost", exc, len(survivors), exc.updates_lost)
            events.append(loss_event(
                exc, len(survivors),
                resumed_at_timestep=int(raw["total_steps"]) if raw else 0))
            handle = ClusterHandle(handle.client, handle.owned, tuple(survivors),
                                   handle.dashboard_link)
            segment += 1
            continue
        segment += 1
        # Done: the whole budget spent, or stopped short of the boundary by the target.
        finished = end >= cfg.total_timesteps or result.total_steps < end
        if checkpoint_every is None:
            return result, events
        boundary += 1
        raw = {"theta": result.theta, "obs_mean": result.obs_mean,
               "obs_var": result.obs_var, "obs_count": result.obs_count,
               "episodes": result.episodes, "total_steps": np.array(result.total_steps)}
        state.update(theta=result.theta, raw=raw)
        totals.update(counts=result.stats, histogram=result.staleness_histogram,
                      pushes_sent=result.pushes_sent, updates=result.updates)
        if on_checkpoint is not None:
            on_checkpoint(raw, segment, boundary)
        if finished:
            return result, events


def _run_segment(handle: ClusterHandle, spec: EnvSpec, cfg: HSA2CConfig,
                 state: dict[str, Any], totals: dict[str, Any], obs_dim: int, *,
                 entropy: int, segment: int, budget: int, max_staleness: int | None,
                 poll_interval: float, progress: Any,
                 live: LiveMetrics | None = None) -> HSA2CResult:
    """One parameter server and one task per worker, until done or a worker is lost.

    ``budget``: the workers stop once the server's step count reaches it.
    """
    client = handle.client
    token = uuid.uuid4().hex[:8]
    addresses = [s.address for s in handle.slots]
    server_future, server = start_server(
        client, A2CRule(**{"theta": state["theta"], "obs_dim": obs_dim,
         "total_timesteps": budget, "target_return": cfg.target_return,
         "raw": state["raw"]}),
        max_staleness, addresses[0], f"hsa2c-server-{token}")
    history = totals["history"]
    t0 = totals["t0"]
    watch = ServerWatch()
    with serving(client, addresses, token, server_future, server, watch):
        futures = [
            client.submit(_worker_task, server, spec, cfg, w, s.threads,
                          np.random.SeedSequence(entropy, spawn_key=(segment, w)), token,
                          state["raw"] is not None,
                          key=f"hsa2c-worker-{segment}-w{w}-{token}",
                          workers=[s.address], allow_other_workers=False, pure=False)
            for w, s in enumerate(handle.slots)
        ]
        pending = list(futures)
        while pending:
            try:
                distributed.wait(pending, timeout=poll_interval,
                                 return_when="FIRST_COMPLETED")
            except (distributed.TimeoutError, CancelledError):
                pass
            lost = lost_workers(client, addresses)
            if lost:
                raise WorkerLostError(lost)
            for f in pending:
                if f.status in ("error", "cancelled"):
                    f.result()  # raises the worker's exception
            pending = [f for f in pending if not f.done()]
            stats = server.stats().result()
            prog = server.progress().result()
            version, snap = server.snapshot().result()
            # The in-memory checkpoint a recovery restarts from.
            state["theta"] = snap["theta"]
            state["raw"] = snap
            watch.checkpoint(version)
            counts = merge_counts(totals["counts"], stats)
            elapsed = time.perf_counter() - t0
            record = {
                "time/elapsed_s": elapsed,
                "time/total_timesteps": prog["total_steps"],
                "time/steps_per_s": prog["total_steps"] / elapsed if elapsed else 0.0,
                "rollout/ep_rew_mean": prog["mean_return_100"],
                "rollout/episodes": prog["n_episodes"],
                # Applied pushes, over every segment of the fit.
                **counts_record(counts),
            }
            history.append(record)
            if progress is not None:
                progress(record)
            if live is not None:
                # The last record (all tasks done) carries the final counters.
                live.publish(record, force=not pending)
        results = [f.result() for f in futures]
        stats = server.stats().result()
        hist = np.trim_zeros(server.staleness_histogram().result(), "b")
        _, snap = server.snapshot().result()
    del server
    counts = merge_counts(totals["counts"], stats)
    merged = merge_histograms(totals["histogram"], hist)
    n = counts["n_applied"]
    stats = {**stats, **counts,
             "staleness_mean": counts["staleness_sum"] / n if n else 0.0}
    return HSA2CResult(
        theta=snap["theta"], obs_mean=snap["obs_mean"], obs_var=snap["obs_var"],
        obs_count=float(snap["obs_count"]),
        episodes=snap["episodes"], total_steps=int(snap["total_steps"]),
        history=list(history), stats=stats, staleness_histogram=merged,
        pushes_sent=totals["pushes_sent"] + sum(r["pushes_sent"] for r in results),
        updates=totals["updates"] + sum(r["updates"] for r in results))


def act(theta: np.ndarray, layout: tuple[int, ...], obs: np.ndarray,
        obs_mean: np.ndarray | None, obs_var: np.ndarray | None, clip_obs: float,
        deterministic: bool, rng: np.random.Generator, continuous: bool,
        act_dim: int) -> np.ndarray:
    """Actions of the policy for a batch of flattened observations (kernel calls only).

    Returns the raw kernel output of shape ``(n, act_dim)``: the action index as float
    (Discrete) or the unclipped Gaussian mean/sample (Box).
    """
    obs = np.ascontiguousarray(obs, dtype=np.float64)
    if obs_mean is not None:
        out = np.empty_like(obs)
        a2c.normalize_obs(obs, obs_mean, obs_var, clip_obs, 1e-8, out)
        obs = out
    n = obs.shape[0]
    noise = (rng.standard_normal((n, act_dim)) if continuous else rng.random((n, 1)))
    actions = np.empty((n, act_dim))
    nn.policy_act(theta, np.asarray(layout, dtype=np.int64), obs, deterministic, noise,
                  actions)
    return actions


def run_episodes(spec: EnvSpec, policy: Any, n_episodes: int, seed: int,
                 max_steps: int = 1_000_000) -> np.ndarray:
    """Returns of ``n_episodes`` episodes of ``policy(obs_row) -> env action``.

    Runs locally, one environment, no Dask. ``max_steps`` bounds the total steps so a
    policy that never ends an episode cannot hang the caller.
    """
    from dask_dpsgd._orchestration.envs import make_env

    env = make_env(spec)
    returns = []
    steps = 0
    try:
        obs, _ = env.reset(seed=seed)
        total = 0.0
        while len(returns) < n_episodes:
            obs, rew, term, trunc, _ = env.step(policy(obs))
            total += float(rew)
            steps += 1
            if not np.isfinite(rew):
                raise ValueError(f"environment {spec.name} returned a non-finite reward")
            if term or trunc:
                returns.append(total)
                total = 0.0
                obs, _ = env.reset()
            if steps >= max_steps:
                raise RuntimeError(
                    f"{len(returns)} of {n_episodes} evaluation episodes of {spec.name} "
                    f"finished within {max_steps} steps")
    finally:
        env.close()
    return np.asarray(returns)
