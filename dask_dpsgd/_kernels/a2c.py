"""A2C kernels for HSA2C: returns, advantages, clipping, optimisers, obs normaliser.

Paper symbols (docs/design.rst, "HSA2C"): a rollout of ``n_steps`` in each of ``n_envs``
environments gives arrays of shape ``(n_steps, n_envs)``; ``R_t`` returns,
``A_t = R_t - V(s_t)`` advantages, discount ``gamma``, GAE parameter ``gae_lambda``
(``gae_lambda = 1`` is the n-step return of A2C/A3C, SB3's A2C default). The optimiser
kernels act in place on flat float64 vectors (``theta`` of ``dask_dpsgd._kernels.nn``)
with caller-held state arrays, and also write the step they applied (``out_delta``) so
a worker can push parameter deltas to the parameter server.

Kernels are plain Python functions compiled once at import with explicit signatures into
``cache=True, nogil=True, error_model="numpy"`` dispatchers (docs/design.rst,
"Kernels"); the undecorated ``_name`` functions stay importable for tests. None of them
loops in parallel: their work is O(n_params) or O(n_steps * n_envs), far below the
gradient's.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_F1 = "float64[::1]"
_F2 = "float64[:, ::1]"
_B2 = "boolean[:, ::1]"
# error_model="numpy": float division by zero gives inf/nan instead of raising, which
# removes the branch that stops LLVM from vectorising the loops with a division.
_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}

# torch.nn.utils.clip_grad_norm_ adds this to the norm before dividing.
CLIP_EPS = 1e-6


def _compute_returns_and_advantages(
    rewards,
    values,
    terminated,
    truncated,
    last_values,
    truncation_values,
    gamma,
    gae_lambda,
    out_advantages,
    out_returns,
):
    """GAE(lambda) advantages ``A_t`` and returns ``R_t = A_t + V(s_t)`` of a rollout.

    Parameters
    ----------
    rewards : ndarray of float64, shape (n_steps, n_envs)
        ``r_t``: reward of the transition from ``s_t`` with action ``a_t``.
    values : ndarray of float64, shape (n_steps, n_envs)
        ``V(s_t)`` computed during the rollout.
    terminated, truncated : ndarray of bool, shape (n_steps, n_envs)
        Gymnasium's flags returned by the ``step`` at ``t``.
    last_values : ndarray of float64, shape (n_envs,)
        ``V(s_{n_steps})``, the value of the observation after the last step (used only
        where the last step did not end the episode).
    truncation_values : ndarray of float64, shape (n_steps, n_envs)
        ``V(final_observation)`` of step ``t`` wherever ``truncated[t] and not
        terminated[t]``; read nowhere else (fill with anything, e.g. zeros).
    gamma : float
        Discount ``gamma`` (SB3 default 0.99).
    gae_lambda : float
        ``lambda`` of GAE; 1.0 (SB3 A2C default) gives n-step returns.
    out_advantages, out_returns : ndarray of float64, shape (n_steps, n_envs)
        Written.

    Notes
    -----
    Equivalent to SB3's ``RolloutBuffer.compute_returns_and_advantage`` after SB3's
    timeout fix in ``collect_rollouts``
    (``tests/_naive_a2c.py::returns_advantages_sb3``)::

        next_value[t] = 0                    if terminated[t]
                      = truncation_values[t] elif truncated[t]
                      = last_values          elif t == n_steps - 1
                      = values[t + 1]        otherwise
        done[t]  = terminated[t] | truncated[t]
        delta[t] = rewards[t] + gamma * next_value[t] - values[t]
        A[t]     = delta[t] + gamma * gae_lambda * (1 - done[t]) * A[t + 1]   (A[n] = 0)
        R[t]     = A[t] + values[t]

    With ``gae_lambda = 1`` the telescoping sum gives ``R_t = sum_k gamma**(k-t) r_k +
    gamma**(e-t) * next_value[e-1]`` up to the episode end or rollout end ``e``.

    Bootstrapping: a *terminated* step ends the MDP and gets no bootstrap; a
    *truncated* one (time limit) is cut by the environment, not the MDP, so it is
    bootstrapped with the value of the final observation it would have continued from.
    See Gymnasium's "Handling Time Limits" tutorial (terminated vs truncated,
    https://gymnasium.farama.org/tutorials/gymnasium_basics/handling_time_limits/)
    and SB3 issue #633 (https://github.com/DLR-RM/stable-baselines3/issues/633),
    whose fix adds ``gamma * V(terminal_observation)`` to the reward; folding it into
    ``next_value`` is the same quantity. If both flags are set, termination wins
    (SB3's ``TimeLimit.truncated = truncated and not terminated``).

    Contract with Gymnasium vector envs (https://farama.org/Vector-Autoreset-Mode).
    In ``AutoresetMode.SAME_STEP`` (SB3's VecEnv behaviour) ``s_{t+1}`` after a done
    is the reset observation and the final observation is ``infos["final_obs"][env]``:
    pass ``V(final_obs)`` in ``truncation_values[t]``. In ``AutoresetMode.NEXT_STEP``
    (Gymnasium's default, and the only mode of the numpy-vectorised classic-control
    envs) the observation returned at a done step *is* the final observation, so
    ``truncation_values[t] = values[t + 1]`` (or ``last_values`` at the last step);
    the following step is a reset transition (action ignored, reward 0, flags false)
    whose ``A``/``R`` are meaningless and which the caller must leave out of the
    gradient batch.
    """
    n_steps, n_envs = rewards.shape
    for e in range(n_envs):
        last_gae = 0.0
        for t in range(n_steps - 1, -1, -1):
            if terminated[t, e]:
                next_value = 0.0
                non_terminal = 0.0
            elif truncated[t, e]:
                next_value = truncation_values[t, e]
                non_terminal = 0.0
            else:
                next_value = last_values[e] if t == n_steps - 1 else values[t + 1, e]
                non_terminal = 1.0
            # TD error; the GAE recursion restarts at every episode boundary.
            delta = rewards[t, e] + gamma * next_value - values[t, e]
            last_gae = delta + gamma * gae_lambda * non_terminal * last_gae
            out_advantages[t, e] = last_gae
            out_returns[t, e] = last_gae + values[t, e]


compute_returns_and_advantages = numba.njit(
    f"void({_F2}, {_F2}, {_B2}, {_B2}, {_F1}, {_F2}, float64, float64, {_F2}, {_F2})",
    **_JIT,
)(_compute_returns_and_advantages)


def _grad_norm(grad):
    """Euclidean norm of ``grad``.

    Parameters
    ----------
    grad : ndarray of float64, shape (n_params,)

    Returns
    -------
    float
        Equivalent to ``np.linalg.norm(grad)`` (no overflow guard: gradients are finite
        and moderate here).
    """
    s = 0.0
    for j in range(grad.shape[0]):
        s += grad[j] * grad[j]
    return math.sqrt(s)


def _clip_grad_norm(grad, max_norm):
    """Scale ``grad`` in place so its norm is at most ``max_norm``; return the factor.

    Parameters
    ----------
    grad : ndarray of float64, shape (n_params,)
        Gradient ``g``, modified in place.
    max_norm : float
        ``max_grad_norm`` (SB3 A2C default 0.5).

    Returns
    -------
    scale : float
        ``min(1, max_norm / (||g|| + 1e-6))``, the factor applied.

    Notes
    -----
    Equivalent to ``torch.nn.utils.clip_grad_norm_([g], max_norm)`` (which also
    multiplies by the clamped coefficient when it is 1, and adds 1e-6 to the norm).
    """
    scale = min(1.0, max_norm / (_grad_norm_jit(grad) + CLIP_EPS))
    if scale < 1.0:
        for j in range(grad.shape[0]):
            grad[j] *= scale
    return scale


_grad_norm_jit = numba.njit(**_JIT)(_grad_norm)
clip_grad_norm = numba.njit(f"float64({_F1}, float64)", **_JIT)(_clip_grad_norm)


def _rmsprop_step(params, grad, square_avg, lr, alpha, eps, out_delta):
    """One RMSProp step, in place.

    Parameters
    ----------
    params : ndarray of float64, shape (n_params,)
        ``theta``, updated in place (pass a zeroed buffer to only accumulate steps).
    grad : ndarray of float64, shape (n_params,)
        Gradient ``g`` (after clipping).
    square_avg : ndarray of float64, shape (n_params,)
        Running average of ``g**2`` (zeros initially), updated in place.
    lr : float
        Learning rate (SB3 A2C default 7e-4).
    alpha : float
        Smoothing constant (SB3 A2C: 0.99).
    eps : float
        Added to the root (SB3 A2C ``rms_prop_eps``: 1e-5).
    out_delta : ndarray of float64, shape (n_params,)
        Written: the step applied, ``params_new - params_old``.

    Notes
    -----
    Equivalent to ``torch.optim.RMSprop(lr=lr, alpha=alpha, eps=eps, weight_decay=0,
    momentum=0, centered=False)``, which SB3's A2C uses::

        square_avg = alpha * square_avg + (1 - alpha) * g**2
        delta      = -lr * g / (sqrt(square_avg) + eps)
        params    += delta
    """
    for j in range(params.shape[0]):
        g = grad[j]
        s = alpha * square_avg[j] + (1.0 - alpha) * g * g
        square_avg[j] = s
        d = -lr * g / (math.sqrt(s) + eps)
        out_delta[j] = d
        params[j] += d


rmsprop_step = numba.njit(
    f"void({_F1}, {_F1}, {_F1}, float64, float64, float64, {_F1})",
    **_JIT,
)(_rmsprop_step)


def rmsprop_bias_correction(lr: float, eps: float, alpha: float,
                            k: int) -> tuple[float, float]:
    """``lr`` and ``eps`` that make :func:`rmsprop_step` bias-corrected at step ``k``.

    ``square_avg`` starts at zero, so after ``k`` steps it averages ``g**2`` with total
    weight ``1 - alpha**k``: the first step divides by ``sqrt(1 - alpha) |g|`` and is
    ``1 / sqrt(1 - alpha)`` (10 for alpha 0.99) times a steady step, per coordinate.
    Harmless at the start of training (SB3 and PyTorch do it), it can wreck a trained
    policy when statistics restart mid-training. Dividing ``square_avg`` by
    ``1 - alpha**k``, as Adam does (Kingma & Ba 2015, Algorithm 1), removes it.

    Parameters
    ----------
    lr, eps, alpha : float
        As for :func:`rmsprop_step`.
    k : int
        Steps taken since the statistics were zero, this one included (>= 1).

    Returns
    -------
    (lr, eps) : tuple of float
        To pass to :func:`rmsprop_step`.

    Notes
    -----
    Equivalent to ``delta = -lr * g / (sqrt(square_avg / c**2) + eps)`` with
    ``c = sqrt(1 - alpha**k)``: multiply numerator and denominator by ``c``.
    """
    c = math.sqrt(1.0 - alpha ** k)
    return lr * c, eps * c


def _adam_step(
    params, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, out_delta
):
    """One Adam step, in place.

    Parameters
    ----------
    params : ndarray of float64, shape (n_params,)
        ``theta``, updated in place.
    grad : ndarray of float64, shape (n_params,)
        Gradient ``g``.
    exp_avg, exp_avg_sq : ndarray of float64, shape (n_params,)
        First and second moment estimates (zeros initially), updated in place.
    step : int
        Index of this step, starting at 1 (torch's ``state["step"]`` after increment).
    lr, beta1, beta2, eps : float
        As ``torch.optim.Adam`` (defaults 1e-3, 0.9, 0.999, 1e-8).
    out_delta : ndarray of float64, shape (n_params,)
        Written: the step applied.

    Notes
    -----
    Equivalent to ``torch.optim.Adam(lr, betas=(beta1, beta2), eps=eps)``::

        exp_avg    = beta1 * exp_avg + (1 - beta1) * g
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g**2
        delta = -lr / (1 - beta1**step) * exp_avg
                / (sqrt(exp_avg_sq) / sqrt(1 - beta2**step) + eps)
    """
    step_size = lr / (1.0 - beta1**step)
    bc2_sqrt = math.sqrt(1.0 - beta2**step)
    for j in range(params.shape[0]):
        g = grad[j]
        m = beta1 * exp_avg[j] + (1.0 - beta1) * g
        v = beta2 * exp_avg_sq[j] + (1.0 - beta2) * g * g
        exp_avg[j] = m
        exp_avg_sq[j] = v
        d = -step_size * m / (math.sqrt(v) / bc2_sqrt + eps)
        out_delta[j] = d
        params[j] += d


adam_step = numba.njit(
    f"void({_F1}, {_F1}, {_F1}, {_F1}, int64, float64, float64, float64, float64, "
    f"{_F1})",
    **_JIT,
)(_adam_step)


def _running_mean_std_merge(mean, var, count, other_mean, other_var, other_count):
    """Merge another set of moments into ``(mean, var, count)``, in place.

    Parameters
    ----------
    mean, var : ndarray of float64, shape (obs_dim,)
        Running mean and population variance, updated in place.
    count : float
        Their weight (SB3 starts at ``epsilon = 1e-4`` with ``var = 1``).
    other_mean, other_var : ndarray of float64, shape (obs_dim,)
        Moments of the other data (e.g. another worker's statistics).
    other_count : float
        Its weight.

    Returns
    -------
    float
        ``count + other_count``.

    Notes
    -----
    Equivalent to SB3's ``RunningMeanStd.update_from_moments`` (Chan et al.'s parallel
    variance merge)::

        delta = other_mean - mean;  tot = count + other_count
        mean += delta * other_count / tot
        var   = (var * count + other_var * other_count
                 + delta**2 * count * other_count / tot) / tot
    """
    tot = count + other_count
    for j in range(mean.shape[0]):
        delta = other_mean[j] - mean[j]
        m2 = var[j] * count + other_var[j] * other_count
        m2 += delta * delta * count * other_count / tot
        mean[j] += delta * other_count / tot
        var[j] = m2 / tot
    return tot


_running_mean_std_merge_jit = numba.njit(**_JIT)(_running_mean_std_merge)
#: Merges a worker's moments into the server's (``A2CRule``).
running_mean_std_merge = numba.njit(
    f"float64({_F1}, {_F1}, float64, {_F1}, {_F1}, float64)", **_JIT
)(_running_mean_std_merge)


def _running_mean_std_update(mean, var, count, batch):
    """Fold a batch of observations into the running moments, in place.

    Parameters
    ----------
    mean, var : ndarray of float64, shape (obs_dim,)
        Running mean and population variance, updated in place.
    count : float
        Their weight.
    batch : ndarray of float32 or float64, shape (n, obs_dim)
        New observations, ``n >= 1``.

    Returns
    -------
    float
        ``count + n``.

    Notes
    -----
    Equivalent to SB3's ``RunningMeanStd.update(batch)``: the batch's mean and
    ``np.var`` (two-pass, in float64) merged by :func:`running_mean_std_merge`. Over
    several batches from ``count = 0`` it reproduces ``np.mean``/``np.var`` of their
    concatenation.
    """
    n, d = batch.shape
    b_mean = np.empty(d)
    b_var = np.empty(d)
    for j in range(d):
        s = 0.0
        for i in range(n):
            s += batch[i, j]
        mu = s / n
        s = 0.0
        for i in range(n):
            x = batch[i, j] - mu
            s += x * x
        b_mean[j] = mu
        b_var[j] = s / n
    return _running_mean_std_merge_jit(mean, var, count, b_mean, b_var, float(n))


running_mean_std_update = numba.njit(
    [
        f"float64({_F1}, {_F1}, float64, float32[:, ::1])",
        f"float64({_F1}, {_F1}, float64, {_F2})",
    ],
    **_JIT,
)(_running_mean_std_update)


def _normalize_obs(obs, mean, var, clip_obs, epsilon, out):
    """Normalise and clip observations with running moments.

    Parameters
    ----------
    obs : ndarray of float32 or float64, shape (n, obs_dim)
        Raw observations.
    mean, var : ndarray of float64, shape (obs_dim,)
        Running moments.
    clip_obs : float
        Clip bound (SB3 ``VecNormalize`` default 10.0).
    epsilon : float
        Added to ``var`` under the root (SB3 default 1e-8).
    out : ndarray of float64, shape (n, obs_dim)
        Written (may not alias a float32 ``obs``; may alias a float64 one).

    Notes
    -----
    Equivalent to SB3's ``VecNormalize._normalize_obs``::

        np.clip((obs - mean) / np.sqrt(var + epsilon), -clip_obs, clip_obs)
    """
    n, d = obs.shape
    for j in range(d):
        std = math.sqrt(var[j] + epsilon)
        for i in range(n):
            x = (obs[i, j] - mean[j]) / std
            out[i, j] = min(max(x, -clip_obs), clip_obs)


normalize_obs = numba.njit(
    [
        f"void(float32[:, ::1], {_F1}, {_F1}, float64, float64, {_F2})",
        f"void({_F2}, {_F1}, {_F1}, float64, float64, {_F2})",
    ],
    **_JIT,
)(_normalize_obs)


def _record_step(
    t, obs, rew, term, trunc, next_step_mode, rewards, terminated, truncated, valid,
    prev_done, ep_ret, ep_len, done,
):
    """Book one vector step of a rollout: checks, rollout rows, episode counters.

    Parameters
    ----------
    t : int
        Row of the rollout arrays to write.
    obs : ndarray of float64, shape (n_envs, obs_dim)
        The step's (flattened) observations; only checked.
    rew : ndarray of float64, shape (n_envs,)
    term, trunc : ndarray of bool, shape (n_envs,)
        Terminated / truncated flags from the environment.
    next_step_mode : bool
        gymnasium's ``NEXT_STEP`` autoreset: the step after a done is the reset
        transition, not part of any episode (``valid`` false there).
    rewards : ndarray of float64, shape (n_steps, n_envs)
        Row ``t`` written with ``rew``.
    terminated, truncated : ndarray of bool, shape (n_steps, n_envs)
        Row ``t`` written with ``term`` / ``trunc``.
    valid : ndarray of bool, shape (n_steps, n_envs)
        Row ``t`` written (``NEXT_STEP`` only; otherwise left as it is, all true).
    prev_done : ndarray of bool, shape (n_envs,)
        ``term | trunc`` of the previous step (``NEXT_STEP`` only; updated).
    ep_ret : ndarray of float64, shape (n_envs,)
        Running episode returns, incremented by the valid rewards.
    ep_len : ndarray of int64, shape (n_envs,)
        Running episode lengths, incremented where valid.
    done : ndarray of bool, shape (n_envs,)
        Written: an episode ended at this step (and the step is valid).

    Returns
    -------
    int
        Number of episodes that ended; ``-1`` if a reward is not finite, ``-2`` if an
        observation is not finite (nothing else is then guaranteed written).

    Notes
    -----
    Equivalent to, in NumPy::

        if not np.isfinite(rew).all(): return -1
        if not np.isfinite(obs).all(): return -2
        rewards[t], terminated[t], truncated[t] = rew, term, trunc
        done[:] = term | trunc
        if next_step_mode:
            valid[t] = ~prev_done; done &= valid[t]; prev_done[:] = term | trunc
        ep_ret += np.where(valid[t], rew, 0.0); ep_len += valid[t]
        return done.sum()
    """
    n, d = obs.shape
    for e in range(n):
        if not math.isfinite(rew[e]):
            return -1
    for e in range(n):
        for j in range(d):
            if not math.isfinite(obs[e, j]):
                return -2
    n_done = 0
    for e in range(n):
        rewards[t, e] = rew[e]
        terminated[t, e] = term[e]
        truncated[t, e] = trunc[e]
        ended = term[e] or trunc[e]
        if next_step_mode:
            valid[t, e] = not prev_done[e]
            prev_done[e] = ended
        ok = valid[t, e]
        done[e] = ended and ok
        if ok:
            ep_ret[e] += rew[e]
            ep_len[e] += 1
        if done[e]:
            n_done += 1
    return n_done


_B1 = "boolean[::1]"
record_step = numba.njit(
    f"int64(int64, {_F2}, {_F1}, {_B1}, {_B1}, boolean, {_F2}, {_B2}, {_B2}, {_B2}, "
    f"{_B1}, {_F1}, int64[::1], {_B1})",
    **_JIT,
)(_record_step)
