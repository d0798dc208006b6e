"""``HSA2CAgent``: advantage actor-critic trained by DPSGD (the paper's HSA2C)."""

from __future__ import annotations

import copy
import os
from numbers import Integral, Real
from typing import Any

import gymnasium as gym
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from dask_dpsgd import engine
from dask_dpsgd._kernels import nn
from dask_dpsgd._server.state import resolve_max_staleness
from dask_dpsgd._utils._checkpoint import (
    check_fingerprint,
    checkpoint_root_seed,
    load_checkpoint,
    save_checkpoint,
)
from dask_dpsgd._utils._report import record_layout, record_server
from dask_dpsgd._utils._rl_plain import LinearSchedule
from dask_dpsgd._utils._validation import PARALLELISM
from dask_dpsgd.engine._live import live_page_banner
from dask_dpsgd.exceptions import _warn_stale_updates
from dask_dpsgd.rl._a2c import (
    A2CAlgorithm,
    A2CConfig,
    act,
    learning_rate_at,
    run_episodes,
)
from dask_dpsgd.rl._envs import (
    EnvSpec,
    ObsEncoder,
    SpaceInfo,
    action_codec,
    inspect_env,
    make_spec,
)
from dask_dpsgd.rl._logs import CSVLog, TensorBoardLog
from dask_dpsgd.rl.callbacks import BaseCallback, as_callback


def _schedule_key(learning_rate: Any) -> Any:
    """A learning rate as a checkpoint's fingerprint compares it: a float as it is, a
    :class:`LinearSchedule` by its rates, another callable by its qualified name (its
    repr would hold an address that differs from one process to the next)."""
    if isinstance(learning_rate, LinearSchedule):
        return repr(learning_rate)
    if callable(learning_rate):
        kind = learning_rate if hasattr(learning_rate, "__qualname__") else type(
            learning_rate)
        return f"{kind.__module__}.{kind.__qualname__}"
    return learning_rate


class HSA2CAgent(BaseEstimator):
    """Advantage actor-critic for gymnasium environments, trained by HSA2C (DPSGD).

    Inside each Dask worker: synchronous A2C over the worker's own ``n_envs``
    environments, the batch gradient computed by numba kernels over the worker's cores
    and applied to its local parameters at once. Across workers: every ``push_every``
    updates a worker pushes the sum of its steps to a parameter server (a Dask Actor)
    without waiting for the others and continues from the fresh global parameters; the
    server measures each push's staleness (Mohamad, Alamri & Bouchachia, 2022).

    The policy and value function are separate MLPs as in stable-baselines3's
    ``MlpPolicy``; parameter names and defaults are stable-baselines3's ``A2C``.

    Parameters
    ----------
    env : str, callable, gymnasium.Env or gymnasium.vector.VectorEnv
        A gymnasium id (``"CartPole-v1"``); a zero-argument factory returning a
        ``gymnasium.Env`` (picklable: it is sent to the workers); an environment
        instance, wrapped or not: it is pickled once (``cloudpickle``) and every
        environment of every worker is a fresh copy of it, seeded apart (worker seeds
        from ``random_state``, ``seed + i`` for copy ``i``); or a vector environment:
        each worker runs the copies its ``env_fns`` build (a ``SyncVectorEnv`` or
        ``AsyncVectorEnv``; stepped in the worker's process) or, without them, a copy
        of the vector environment itself, and ``n_envs`` is its ``num_envs``. ``None``
        (a loaded agent whose environment was not stored) predicts but cannot train
        or score until ``env`` is set.
    learning_rate : float or callable, default=7e-4
        The optimiser's step size, or a schedule: a picklable callable of the
        remaining progress ``p`` (1 at the start, 0 at ``total_timesteps``, from the
        global step count) returning the rate, as stable-baselines3's. A worker
        evaluates it at every update; :class:`~dask_dpsgd.rl.LinearSchedule` is
        rl-zoo's ``lin_<rate>``. A schedule that returns a negative or non-finite rate
        stops the fit with an error naming the value.
    n_steps : int, default=5
        Steps per environment per update (rollout length).
    gamma : float, default=0.99
        Discount.
    gae_lambda : float, default=1.0
        GAE ``lambda``; 1.0 gives n-step returns.
    ent_coef : float, default=0.0
        Entropy bonus coefficient.
    vf_coef : float, default=0.5
        Value loss coefficient.
    max_grad_norm : float, default=0.5
        Gradient-norm clipping.
    rms_prop_eps : float, default=1e-5
        RMSProp epsilon.
    use_rms_prop : bool, default=True
        RMSProp (alpha 0.99, as A2C/A3C); ``False`` uses Adam (betas 0.9, 0.999).
    normalize_advantage : bool, default=False
    normalize_observations : bool, default=False
        Normalise observations with running moments merged over all workers by the
        parameter server (as stable-baselines3's ``VecNormalize``), clipped at
        ``clip_obs``.
    clip_obs : float, default=10.0
    normalize_reward : bool, default=False
        Learn from rewards divided by the running standard deviation of the
        discounted return (``gamma``), clipped at ``clip_reward``, as
        stable-baselines3's ``VecNormalize(norm_reward=True)``. The return moments are
        merged over all workers by the parameter server. Episode returns
        (``episode_returns_``, ``rollout/ep_rew_mean``) stay unscaled.
    clip_reward : float, default=10.0
    net_arch : tuple of int or dict, default=(64, 64)
        Hidden layer sizes of both networks, or ``dict(pi=[...], vf=[...])`` for the
        policy and value networks apart (stable-baselines3's ``net_arch``; a list in
        the dict may be empty: a linear head on the observation).
    activation : {"tanh", "relu"}, default="tanh"
    log_std_init : float, default=0.0
        Initial log standard deviation of Gaussian (Box) policies (with ``use_sde``,
        of every entry of gSDE's ``log_std`` matrix).
    use_sde : bool, default=False
        Generalized state-dependent exploration for Box actions (Raffin et al., 2022),
        as stable-baselines3's ``use_sde``: the exploration noise is ``h(s) @ E``,
        ``h(s)`` the policy net's last hidden layer and ``E`` a matrix drawn from
        ``N(0, exp(log_std)**2)`` (``log_std`` a learned latent x action matrix), so
        the action's variance depends on the state and the noise is smooth in time.
        rl-zoo's continuous-control A2C settings use it (with ``log_std_init=-2``).
    sde_sample_freq : int, default=-1
        Steps between draws of each environment's ``E`` within a rollout; ``-1``: once
        per rollout (stable-baselines3's default).
    ortho_init : bool, default=True
        Initial weights as stable-baselines3's ``ortho_init``: orthogonal (gain
        ``sqrt(2)`` hidden layers, 0.01 policy head, 1 value head) with zero biases.
        ``False`` draws PyTorch's default ``nn.Linear`` initialisation instead, which
        rl-zoo uses for its continuous-control A2C settings (Pendulum among them).
    total_timesteps : int, default=100_000
        Environment steps to train for, summed over all workers.
    target_return : float, default=None
        Stop early once the mean return of the last 100 training episodes reaches it.
    n_envs : int, default=None
        Environments per worker (``None``: 8, or a vector ``env``'s ``num_envs``).
    push_every : int, default=10
        Updates a worker makes between pushes to the parameter server.
    prefetch : bool, default=True
        Keep computing while a push is in flight (its reply is used at the next push):
        the engine's ``lag`` of 1 (``False``: lag 0).
    n_workers : int, default=None
        Dask workers (``None``: all of the client's; embedded: sized to the machine).
    threads_per_worker : int, default=None
        Numba threads per worker for the gradient (``None``: the worker's share of its
        host's cores).
    parallelism : {"auto", "serial", "hogwild", "parameter-server", "dpsgd"}, \
default="auto"
        The engine's mode, as for :class:`DPSVILatentDirichletAllocation`: 1 x 1,
        1 worker x its cores (gradient split over threads), workers x 1 core, or
        several x several; ``"auto"`` sizes the rest of ``n_workers`` /
        ``threads_per_worker`` to the cluster. The mode run is in ``parallelism_``.
    max_staleness : int, "auto" or None, default="auto"
        Staleness limit: the server *rejects* (never down-weights) a push computed on
        parameters more than this many updates old. Rejected pushes are counted in
        ``n_updates_rejected_`` and ``history_`` (``train/rejected_stale``); with a
        limit given as an int they are also warned about (``StaleUpdatesWarning``).
        Their environment steps do not count towards ``total_timesteps``. ``"auto"``
        takes the paper's bound, ``ceil(sqrt(T))`` with ``T`` the server updates of the
        fit, ``ceil(total_timesteps / (n_steps * n_envs * push_every))`` (each push
        carries ``push_every`` updates of one worker): the paper's speed-up holds while
        workers <= T^(1/2). So that a fit outside that regime (many workers, few
        pushes) does not reject the ordinary staleness of its own layout, the limit is
        never below ``2 * n_workers_ * (1 + prefetch)``, twice a steady round's
        staleness. ``None`` accepts any staleness. The value used is
        ``max_staleness_``.
    checkpoint_path : str or path-like, default=None
        Write a checkpoint to this ``.npz`` file (plain arrays and JSON, read back
        without pickle) every ``checkpoint_every`` environment steps and at the end of
        :meth:`fit`. If the file exists when ``fit`` starts, training continues from
        it (a warm start after the whole cluster is gone). The settings that shape
        training must match the checkpoint's, else ``fit`` refuses it. See Notes for
        what a resumed fit reproduces.
    checkpoint_every : int, default=10_000
        Environment steps (summed over workers) between checkpoints, when
        ``checkpoint_path`` is set.
    poll_interval : float, default=0.5
        Seconds between the driver's reads of the parameter server: each is the
        in-memory checkpoint a recovery from a lost worker restarts from (the updates
        applied since are lost), and feeds progress, live metrics and the early stop on
        ``target_return``.
    env_kwargs : dict, default=None
        Keyword arguments of ``gymnasium.make`` (with an id).
    random_state : int, RandomState instance or None, default=None
    log_path : str, path-like or None, default=None
        A folder where every ``history_`` record is also written to
        ``progress.csv`` as it arrives (stable-baselines3's file and keys; each
        ``fit``/``learn`` rewrites it).
    tensorboard_log : str, path-like or None, default=None
        A folder where each ``fit``/``learn`` writes a TensorBoard run,
        ``HSA2C_<n>``, of the records' numeric keys at ``time/total_timesteps``
        (stable-baselines3's parameter; no TensorFlow or ``tensorboard`` needed to
        write it).
    verbose : int, default=0
        1: a progress bar (timesteps, mean return, steps/s, staleness).

    Attributes
    ----------
    params_ : ndarray of float64, shape (n_params,)
        Policy and value parameters (flat; see ``dask_dpsgd._kernels.nn``).
    layout_ : tuple of int
        Layout of ``params_``.
    obs_mean_, obs_var_ : ndarray or None
        Observation moments (when ``normalize_observations``).
    observation_space_, action_space_ : gymnasium.Space
        The environment's spaces.
    observation_shape_ : tuple of int or None
        The shape of a Box observation space (``None`` for other spaces).
    continuous_actions_ : bool
    action_dim_ : int
        Outputs of the policy head: actions (Discrete), logits of all components
        (MultiDiscrete; MultiBinary as two per bit) or the flattened Box size.
    n_envs_ : int
        Environments per worker.
    obs_count_ : float
        Observations behind ``obs_mean_`` / ``obs_var_``.
    return_moments_ : tuple of float
        ``(mean, var, count)`` of the discounted return (``normalize_reward``).
    episode_returns_, episode_lengths_, episode_timesteps_ : ndarray
        Every training episode's return, length and (approximate) global step at its end.
    num_timesteps_ : int
        Environment steps taken.
    n_updates_ : int
        Gradient steps over all workers.
    n_pushes_sent_, n_updates_applied_, n_updates_rejected_ : int
    staleness_mean_, staleness_max_ : float, int
    staleness_histogram_ : ndarray of int
    history_ : list of dict
        Progress records with stable-baselines3's log keys (``rollout/ep_rew_mean``,
        ``rollout/ep_len_mean``, ``train/policy_loss``, ``train/entropy_loss``,
        ``train/value_loss``, ``train/explained_variance``, ``train/learning_rate``,
        ``time/fps``, ``time/total_timesteps``) and the parameter server's
        (``train/staleness_mean``, ``comm/bytes_pushed``, ...).
    live_metrics_url_ : str or None
        The last fit's page of live curves on the Dask dashboard
        (``.../dpsgd/status?fit=<id>``; :doc:`/live_metrics`); None without a dashboard. It
        lives as long as the cluster's scheduler.
    max_staleness_ : int or None
        Staleness limit used (``max_staleness`` resolved).
    recovery_events_ : list of dict
        One record per lost worker the fit survived (it continues on the workers left
        from the state polled last, every ``poll_interval`` s): ``workers`` lost,
        ``resumed_at_timestep``, ``workers_left``, ``updates_lost`` (pushes the server
        applied after that poll, discarded) and ``updates_lost_exact`` (False when the
        server's own worker was lost: the count is then 0, the lower bound known).
    updates_lost_ : int
        Sum of ``updates_lost`` over ``recovery_events_``.
    parallelism_ : str
        The mode the last fit ran in (``"serial"``, ``"hogwild"``,
        ``"parameter-server"`` or ``"dpsgd"``), from its workers and threads.
    n_workers_ : int
    threads_per_worker_ : list of int

    Notes
    -----
    Determinism: with one worker and one thread, a fixed ``random_state`` reproduces
    the run bit for bit; with several workers, the arrival order of pushes varies.

    Checkpoints: an environment's internal state cannot in general be saved, so with
    ``checkpoint_path`` training is cut into segments at every multiple of
    ``checkpoint_every`` steps (a worker ends its segment at its first push at or past
    the boundary). At a boundary the server's state is written (parameters, step
    count, episode log, observation moments); the next segment's workers reset their
    environments from seeds derived from ``random_state`` and the segment's index,
    restart their optimiser statistics (RMSProp's bias-corrected as Adam's are, so the
    first steps of a restarted segment are not up to 10x a steady step) and drop
    unfinished episodes. A recovery from a lost worker restarts them the same way. A fit resumed from
    the checkpoint therefore runs exactly the segments an uninterrupted fit with the
    same ``checkpoint_path`` settings runs next: with one worker and one thread its
    parameters and episodes are bit-identical. The boundaries make such a fit differ
    from one without ``checkpoint_path``. Counters (pushes, staleness, ``history_``)
    cover the segments run by the current call.

    References
    ----------
    S. Mohamad, H. Alamri, A. Bouchachia. Scaling up stochastic gradient descent for
    non-convex optimisation. Machine Learning, 2022.

    V. Mnih et al. Asynchronous methods for deep reinforcement learning. ICML, 2016.

    A. Raffin, J. Kober, F. Stulp. Smooth exploration for robotic reinforcement
    learning. CoRL, 2022 (gSDE, ``use_sde``).

    Examples
    --------
    >>> from dask_dpsgd import HSA2CAgent
    >>> agent = HSA2CAgent("CartPole-v1", total_timesteps=2_000, random_state=0).fit()
    >>> action, _ = agent.predict([0.0, 0.0, 0.0, 0.0], deterministic=True)
    >>> int(action) in (0, 1)
    True
    """

    _parameter_constraints: dict = {
        "env": [str, callable, gym.Env, gym.vector.VectorEnv, None],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), callable],
        "n_steps": [Interval(Integral, 1, None, closed="left")],
        "gamma": [Interval(Real, 0, 1, closed="both")],
        "gae_lambda": [Interval(Real, 0, 1, closed="both")],
        "ent_coef": [Interval(Real, 0, None, closed="left")],
        "vf_coef": [Interval(Real, 0, None, closed="left")],
        "max_grad_norm": [Interval(Real, 0, None, closed="neither")],
        "rms_prop_eps": [Interval(Real, 0, None, closed="neither")],
        "use_rms_prop": ["boolean"],
        "normalize_advantage": ["boolean"],
        "normalize_observations": ["boolean"],
        "clip_obs": [Interval(Real, 0, None, closed="neither")],
        "normalize_reward": ["boolean"],
        "clip_reward": [Interval(Real, 0, None, closed="neither")],
        "net_arch": [tuple, list, dict],
        "activation": [StrOptions({"tanh", "relu"})],
        "log_std_init": [Real],
        "ortho_init": ["boolean"],
        "use_sde": ["boolean"],
        "sde_sample_freq": [Interval(Integral, -1, None, closed="left")],
        "total_timesteps": [Interval(Integral, 1, None, closed="left")],
        "target_return": [None, Real],
        "n_envs": [None, Interval(Integral, 1, None, closed="left")],
        "push_every": [Interval(Integral, 1, None, closed="left")],
        "prefetch": ["boolean"],
        "n_workers": [None, Interval(Integral, 1, None, closed="left")],
        "threads_per_worker": [None, Interval(Integral, 1, None, closed="left")],
        "parallelism": [StrOptions(set(PARALLELISM))],
        "max_staleness": [None, StrOptions({"auto"}),
                          Interval(Integral, 0, None, closed="left")],
        "checkpoint_path": [None, str, os.PathLike],
        "checkpoint_every": [Interval(Integral, 1, None, closed="left")],
        "poll_interval": [Interval(Real, 0, None, closed="neither")],
        "env_kwargs": [None, dict],
        "log_path": [None, str, os.PathLike],
        "tensorboard_log": [None, str, os.PathLike],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, env="CartPole-v1", *, learning_rate=7e-4, n_steps=5, gamma=0.99,
                 gae_lambda=1.0, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5,
                 rms_prop_eps=1e-5, use_rms_prop=True, normalize_advantage=False,
                 normalize_observations=False, clip_obs=10.0, normalize_reward=False,
                 clip_reward=10.0, net_arch=(64, 64),
                 activation="tanh", log_std_init=0.0, ortho_init=True,
                 use_sde=False, sde_sample_freq=-1,
                 total_timesteps=100_000,
                 target_return=None, n_envs=None, push_every=10, prefetch=True,
                 n_workers=None, threads_per_worker=None, parallelism="auto",
                 max_staleness="auto", checkpoint_path=None, checkpoint_every=10_000,
                 poll_interval=0.5, env_kwargs=None, log_path=None,
                 tensorboard_log=None, random_state=None, verbose=0):
        self.env = env
        self.learning_rate = learning_rate
        self.n_steps = n_steps
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.ent_coef = ent_coef
        self.vf_coef = vf_coef
        self.max_grad_norm = max_grad_norm
        self.rms_prop_eps = rms_prop_eps
        self.use_rms_prop = use_rms_prop
        self.normalize_advantage = normalize_advantage
        self.normalize_observations = normalize_observations
        self.clip_obs = clip_obs
        self.normalize_reward = normalize_reward
        self.clip_reward = clip_reward
        self.net_arch = net_arch
        self.activation = activation
        self.log_std_init = log_std_init
        self.ortho_init = ortho_init
        self.use_sde = use_sde
        self.sde_sample_freq = sde_sample_freq
        self.total_timesteps = total_timesteps
        self.target_return = target_return
        self.n_envs = n_envs
        self.push_every = push_every
        self.prefetch = prefetch
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.parallelism = parallelism
        self.max_staleness = max_staleness
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = checkpoint_every
        self.poll_interval = poll_interval
        self.env_kwargs = env_kwargs
        self.log_path = log_path
        self.tensorboard_log = tensorboard_log
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = (self.n_workers != 1
                                  and self.parallelism not in ("serial", "hogwild"))
        tags.requires_fit = True
        return tags

    def _check_params(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Checks beyond the declared constraints; the policy and value nets' hidden
        layer widths."""
        for name in ("log_std_init", "target_return"):
            value = getattr(self, name)
            if value is not None and not np.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.env is None:
            raise ValueError("env is None (an agent loaded without its environment): "
                             "set env (set_params(env=...) or load_model(path, env=...)) "
                             "to train or score it")
        # A schedule is called once here, so a broken one fails before any cluster work.
        learning_rate_at(self.learning_rate, 1.0)
        return _net_arch(self.net_arch)

    def _run_config(self, layout: tuple[int, ...], n_envs: int,
                    total_timesteps: int) -> A2CConfig:
        """The workers' hyper-parameters (plain values) for the network ``layout``."""
        return A2CConfig(
            layout=layout, n_envs=n_envs, n_steps=self.n_steps,
            gamma=float(self.gamma), gae_lambda=float(self.gae_lambda),
            ent_coef=float(self.ent_coef), vf_coef=float(self.vf_coef),
            max_grad_norm=float(self.max_grad_norm),
            optimizer="rmsprop" if self.use_rms_prop else "adam",
            learning_rate=(self.learning_rate if callable(self.learning_rate)
                           else float(self.learning_rate)),
            rms_prop_eps=float(self.rms_prop_eps),
            normalize_advantage=bool(self.normalize_advantage),
            normalize_observations=bool(self.normalize_observations),
            clip_obs=float(self.clip_obs), total_timesteps=int(total_timesteps),
            target_return=None if self.target_return is None else float(self.target_return),
            push_every=self.push_every, normalize_reward=bool(self.normalize_reward),
            clip_reward=float(self.clip_reward),
            sde_sample_freq=int(self.sde_sample_freq))

    def _n_envs(self, spec: EnvSpec) -> int:
        """Environments per worker: ``n_envs``, or a vector env's size."""
        fixed = spec.n_envs
        if fixed is None:
            return 8 if self.n_envs is None else int(self.n_envs)
        if self.n_envs is not None and int(self.n_envs) != fixed:
            raise ValueError(f"n_envs={self.n_envs} but env is a vector environment of "
                             f"{fixed} copies: leave n_envs=None or set it to {fixed}")
        return fixed

    def fit(self, X=None, y=None):
        """Train the agent in its environment for ``total_timesteps`` steps, from
        freshly initialised parameters.

        Parameters
        ----------
        X, y : None
            Ignored; an agent learns from its environment (``env``).

        Returns
        -------
        self : HSA2CAgent
            Fitted agent.
        """
        if X is not None or y is not None:
            raise ValueError("HSA2CAgent.fit takes no data: it learns from env; call fit()")
        self._validate_params()
        return self._learn(int(self.total_timesteps), None, True, True,
                           bool(self.verbose))

    def learn(self, total_timesteps=None, callback=None, reset_num_timesteps=True,
              progress_bar=False):
        """Train, as stable-baselines3's ``learn``: a fitted agent goes on from its
        current parameters.

        Parameters
        ----------
        total_timesteps : int, default=None
            Environment steps to take in this call, summed over workers (``None``:
            the ``total_timesteps`` parameter).
        callback : BaseCallback, list of BaseCallback or None
            Called on the driver at every read of the parameter server
            (:mod:`dask_dpsgd.rl.callbacks`); one returning ``False`` ends training.
        reset_num_timesteps : bool, default=True
            As stable-baselines3's. A fitted agent always continues from its current
            parameters and observation and return moments (the optimiser's
            statistics restart; :meth:`fit` is what starts from new parameters).
            ``True`` restarts the counters: ``num_timesteps_`` and the episode log
            start from zero and a learning-rate schedule runs over
            ``total_timesteps``. ``False`` goes on counting: the episode log is
            extended and a schedule runs over ``num_timesteps_ + total_timesteps``
            steps. An unfitted agent starts from new parameters either way. With
            ``checkpoint_path`` a continued run writes the file; an existing one is
            not resumed from.
        progress_bar : bool, default=False
            Show a progress bar (as ``verbose=1``).

        Returns
        -------
        self : HSA2CAgent
        """
        self._validate_params()
        total = self.total_timesteps if total_timesteps is None else total_timesteps
        if isinstance(total, bool) or not isinstance(total, Integral) or total < 1:
            raise ValueError(f"total_timesteps must be a positive int, got {total!r}")
        if not isinstance(reset_num_timesteps, bool | np.bool_):
            raise ValueError(f"reset_num_timesteps must be a bool, got "
                             f"{reset_num_timesteps!r}")
        return self._learn(int(total), as_callback(callback), False,
                           bool(reset_num_timesteps),
                           bool(progress_bar) or bool(self.verbose))

    def _learn(self, steps: int, callback: BaseCallback | None, fresh: bool,
               reset: bool, bar_on: bool) -> HSA2CAgent:
        """Train ``steps`` steps: from new parameters (``fresh`` or unfitted), else
        from the fitted state with the counters restarted (``reset``) or not."""
        arch_pi, arch_vf = self._check_params()
        spec = make_spec(self.env, self.env_kwargs)
        n_envs = self._n_envs(spec)
        info = inspect_env(spec)
        if self.use_sde and not info.continuous:
            raise ValueError(f"use_sde=True needs Box actions; environment {spec.name} "
                             f"has action space {info.action_space}")
        layout = nn.make_layout(info.obs_dim, info.n_act_outputs, arch_pi, info.continuous,
                                activation=self.activation, hidden_vf=arch_vf,
                                action_groups=info.action.groups,
                                sde=bool(self.use_sde))
        rs = check_random_state(self.random_state)
        theta0 = nn.init_params(layout, np.random.default_rng(rs.randint(2**31 - 1)),
                                log_std_init=float(self.log_std_init),
                                ortho_init=bool(self.ortho_init))
        root_seed = int(rs.randint(np.iinfo(np.int32).max))
        every = None if self.checkpoint_path is None else int(self.checkpoint_every)
        resume, budget, start = None, steps, 0
        fresh = fresh or not hasattr(self, "params_")
        if not fresh:
            if tuple(self.layout_) != tuple(layout):
                raise ValueError(
                    "cannot continue training: the environment's spaces or net_arch "
                    "changed since the last fit (the parameter layouts differ); call "
                    "fit() to start from new parameters")
            state = self._state()
            if reset:
                state["total_steps"] = np.array(0)
                state["episodes"] = np.empty((0, 3))
            start = int(state["total_steps"])
            budget = start + steps
            # A fresh seed per continuation, so its segments do not replay the last.
            root_seed = int(np.random.default_rng(
                [root_seed, int(self.num_timesteps_)]).integers(2**31 - 1))
            resume = engine.Checkpoint(state, 0, start // every if every else 0)
        cfg = self._run_config(layout, n_envs, budget)
        on_checkpoint = None
        if self.checkpoint_path is not None:
            fingerprint = self._fingerprint(layout, n_envs)
            if resume is None and os.path.exists(self.checkpoint_path):
                resume, root_seed = self._resume(fingerprint, theta0.shape[0],
                                                 info.obs_dim)
            on_checkpoint = self._checkpoint_writer(fingerprint, root_seed)
        from tqdm.auto import tqdm

        bar = None
        title = f"HSA2C {spec.name}, {budget} timesteps"
        algorithm = A2CAlgorithm(spec, cfg, theta0, info.obs_dim, every)
        pushes = -(-steps // (self.n_steps * n_envs * self.push_every))
        self._set_spaces(info, layout, n_envs)
        logs = [*([CSVLog(self.log_path)] if self.log_path is not None else []),
                *([TensorBoardLog(self.tensorboard_log)]
                  if self.tensorboard_log is not None else [])]

        def max_staleness(n_workers: int) -> int | None:
            self.max_staleness_ = resolve_max_staleness(
                self.max_staleness, pushes, n_workers, int(self.prefetch))
            return self.max_staleness_

        def on_start(fit_start: engine.FitStart) -> None:
            nonlocal bar
            if bar_on:
                bar = tqdm(total=budget, initial=start, desc="HSA2C timesteps",
                           unit="step")
                banner = live_page_banner(fit_start.dashboard_link, fit_start.live_url)
                if banner:
                    bar.write(banner)
            if callback is not None:
                callback.on_training_start()

        def progress(record: dict[str, Any]) -> None:
            if bar is not None:
                bar.n = min(record["time/total_timesteps"], bar.total)
                bar.set_postfix({
                    "ep_rew_mean": f"{record['rollout/ep_rew_mean']:.1f}",
                    "steps/s": f"{record['time/steps_per_s']:.0f}",
                    "stale": f"{record['train/staleness_mean']:.2f}"})
                bar.refresh()

        def on_poll(record: dict[str, Any], snapshot: dict[str, Any]) -> bool:
            stop = False
            if callback is not None:
                self._adopt(snapshot)
                callback.locals = {"record": record}
                callback.logger_record = {}
                stop = not callback.on_step()
                record.update(callback.logger_record)
            for log in logs:
                log.write(record)
            return stop

        if callback is not None:
            if fresh:  # the callback sees a policy from the first read on
                self._adopt({"theta": theta0, **_empty_state(info.obs_dim)})
            callback.init_callback(self)
        try:
            result = engine.fit(
                algorithm, spec, n_rounds=algorithm.n_rounds,
                parallelism=self.parallelism, n_workers=self.n_workers,
                threads_per_worker=self.threads_per_worker, lag=int(self.prefetch),
                max_staleness=max_staleness, random_state=root_seed, history="poll",
                poll_interval=float(self.poll_interval), resume=resume,
                on_checkpoint=on_checkpoint, progress=progress, on_poll=on_poll,
                title=title, on_start=on_start, verbose=self.verbose)
        finally:
            if bar is not None:
                bar.close()
            for log in logs:
                log.close()
        record_layout(self, result.threads)
        self._adopt(result.snapshot)
        self.n_updates_ = int(result.counters.get("updates", 0))
        counts = result.counts
        events = [e.as_dict() for e in result.events]
        record_server(self, counts=counts, pushes_sent=result.pushes_sent,
                      history=result.history, live_url=result.live_url, events=events,
                      restart_point="the last polled state", stacklevel=3)
        if callback is not None:
            callback.on_training_end()
        if not events and counts.n_received != result.pushes_sent:
            raise RuntimeError(f"update accounting failed: workers sent "
                               f"{result.pushes_sent} pushes, the server received "
                               f"{counts.n_received}")
        if counts.n_rejected_nonfinite:
            raise FloatingPointError(
                f"{counts.n_rejected_nonfinite} parameter update(s) held NaN or "
                "infinity and were rejected; training diverged (lower learning_rate or "
                "max_grad_norm, or normalise observations)")
        _warn_stale_updates(counts.n_rejected_stale, counts.n_received,
                            self.max_staleness_, self.max_staleness == "auto",
                            stacklevel=3)
        return self

    def _set_spaces(self, info: SpaceInfo, layout: tuple[int, ...], n_envs: int) -> None:
        """The fitted attributes fixed by the environment and the network."""
        self.layout_ = layout
        self.observation_space_ = info.observation_space
        self.action_space_ = info.action_space
        box = isinstance(info.observation_space, gym.spaces.Box)
        self.observation_shape_ = tuple(info.observation_space.shape) if box else None
        self.continuous_actions_ = info.continuous
        self.action_dim_ = info.n_act_outputs
        self.n_envs_ = n_envs
        self._codecs = None

    def _adopt(self, snap: dict[str, Any]) -> None:
        """Take a server state (a snapshot of the update rule) as the fitted state."""
        self.params_ = np.array(snap["theta"], dtype=np.float64)
        norm = bool(self.normalize_observations)
        self.obs_mean_ = np.array(snap["obs_mean"]) if norm else None
        self.obs_var_ = np.array(snap["obs_var"]) if norm else None
        self.obs_count_ = float(snap["obs_count"])
        self.return_moments_ = (float(np.ravel(snap["ret_mean"])[0]),
                                float(np.ravel(snap["ret_var"])[0]),
                                float(snap["ret_count"]))
        episodes = np.asarray(snap["episodes"], dtype=np.float64).reshape(-1, 3)
        self.episode_timesteps_ = episodes[:, 0].astype(np.int64)
        self.episode_returns_ = episodes[:, 1].copy()
        self.episode_lengths_ = episodes[:, 2].astype(np.int64)
        self.num_timesteps_ = int(snap["total_steps"])

    def _state(self) -> dict[str, np.ndarray]:
        """The fitted state as an update rule's snapshot (to continue training)."""
        dim = self._encoders()[0].dim
        obs_mean = self.obs_mean_ if self.obs_mean_ is not None else np.zeros(dim)
        obs_var = self.obs_var_ if self.obs_var_ is not None else np.ones(dim)
        mean, var, count = getattr(self, "return_moments_", (0.0, 1.0, 1e-4))
        episodes = np.column_stack([self.episode_timesteps_, self.episode_returns_,
                                    self.episode_lengths_]).astype(np.float64)
        return {"theta": np.array(self.params_), "obs_mean": np.array(obs_mean),
                "obs_var": np.array(obs_var),
                "obs_count": np.array(getattr(self, "obs_count_", 1e-4)),
                "ret_mean": np.array([mean]), "ret_var": np.array([var]),
                "ret_count": np.array(count), "episodes": episodes.reshape(-1, 3),
                "total_steps": np.array(self.num_timesteps_)}

    def _copy_fitted(self) -> HSA2CAgent:
        """A copy of this fitted agent with its own parameter arrays."""
        other = copy.copy(self)
        other.params_ = self.params_.copy()
        return other
    # Parameters that shape training: a checkpoint resumes only a fit that agrees.
    _CHECKPOINT_PARAMS = ("n_steps", "gamma", "gae_lambda", "ent_coef",
                          "vf_coef", "max_grad_norm", "rms_prop_eps", "use_rms_prop",
                          "normalize_advantage", "normalize_observations", "clip_obs",
                          "activation", "log_std_init", "push_every",
                          "prefetch", "checkpoint_every")

    def _fingerprint(self, layout: tuple[int, ...], n_envs: int) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed by this fit."""
        if isinstance(self.env, str):
            env = self.env
        elif isinstance(self.env, gym.Env | gym.vector.VectorEnv):
            env = str(self.env)
        else:
            env = getattr(self.env, "__qualname__", type(self.env).__qualname__)
        return {"env": env, "env_kwargs": repr(self.env_kwargs),
                "layout": [int(v) for v in layout],
                **{k: getattr(self, k) for k in self._CHECKPOINT_PARAMS},
                "n_envs": n_envs,
                "learning_rate": _schedule_key(self.learning_rate),
                # Only when on: checkpoints from before the option resume unchanged.
                **({"normalize_reward": True, "clip_reward": self.clip_reward}
                   if self.normalize_reward else {}),
                **({"use_sde": True, "sde_sample_freq": self.sde_sample_freq}
                   if self.use_sde else {})}

    def _resume(self, fingerprint: dict[str, Any], n_params: int,
                obs_dim: int) -> tuple[engine.Checkpoint, int]:
        arrays, meta = load_checkpoint(self.checkpoint_path)
        check_fingerprint(self.checkpoint_path, meta, fingerprint)
        keys = ("theta", "obs_mean", "obs_var", "obs_count", "episodes", "total_steps")
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise ValueError(f"checkpoint {self.checkpoint_path} lacks "
                             f"{', '.join(missing)}; it is not an HSA2CAgent checkpoint")
        # Return moments: absent from checkpoints written before reward normalisation.
        keys += tuple(k for k in ("ret_mean", "ret_var", "ret_count") if k in arrays)
        snapshot = {k: np.asarray(arrays[k], dtype=np.float64) for k in keys}
        shapes_ok = (snapshot["theta"].shape == (n_params,)
                     and snapshot["obs_mean"].shape == snapshot["obs_var"].shape
                     == (obs_dim,) and snapshot["episodes"].ndim == 2
                     and snapshot["episodes"].shape[1] == 3
                     and all(snapshot[k].shape == (1,) for k in ("ret_mean", "ret_var")
                             if k in snapshot))
        if not shapes_ok or not all(np.isfinite(v).all() for v in snapshot.values()):
            raise ValueError(f"checkpoint {self.checkpoint_path} holds invalid state "
                             f"(parameters of shape {snapshot['theta'].shape}, expected "
                             f"({n_params},); all values must be finite)")
        return (engine.Checkpoint(snapshot, 0, int(meta["boundaries_done"])),
                checkpoint_root_seed(meta))

    def _checkpoint_writer(self, fingerprint: dict[str, Any], root_seed: int) -> Any:
        path = self.checkpoint_path

        def write(ckpt: engine.Checkpoint) -> None:
            save_checkpoint(path, {k: np.asarray(v) for k, v in ckpt.snapshot.items()},
                            {"fingerprint": fingerprint, "root_seed": int(root_seed),
                             "boundaries_done": int(ckpt.rounds_done),
                             "format": "dask-dpsgd-hsa2c-checkpoint-2"})

        return write

    def _encoders(self) -> tuple[ObsEncoder, Any]:
        """The observation encoder and action codec of the fitted spaces (cached)."""
        cached = getattr(self, "_codecs", None)
        if cached is None:
            obs_space, act_space = self._spaces()
            cached = (ObsEncoder(obs_space, "the agent's environment"),
                      action_codec("the agent's environment", act_space))
            self._codecs = cached
        return cached

    def _spaces(self) -> tuple[gym.Space, gym.Space]:
        if hasattr(self, "observation_space_"):
            return self.observation_space_, self.action_space_
        # A model file written before the spaces were stored: a Box observation and
        # the Discrete or Box action its private attributes describe.
        obs = gym.spaces.Box(-np.inf, np.inf, tuple(self.observation_shape_))
        if self.continuous_actions_:
            act: gym.Space = gym.spaces.Box(self._action_low, self._action_high)
        else:
            act = gym.spaces.Discrete(self.action_dim_, start=self._discrete_start)
        return obs, act

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        """The policy's action for one observation or a batch, as stable-baselines3's
        ``predict`` (so ``evaluate_policy(agent, env)`` runs it).

        Parameters
        ----------
        observation : array-like or dict
            One observation of the environment's observation space or a batch (a
            leading axis; for a Dict space, every key's array has it).
        state : None
            Recurrent state; passed through (the policy is not recurrent).
        episode_start : array-like or None
            Ignored (no recurrent state to reset).
        deterministic : bool, default=False
            The most likely action (the Gaussian mean) instead of a sample.

        Returns
        -------
        action : ndarray
            One action of the action space (Box actions clipped to its bounds), or a
            batch of them.
        state : None
            ``state``, unchanged.
        """
        check_is_fitted(self)
        encoder, codec = self._encoders()
        flat, single = encoder.batch(observation)
        if not np.isfinite(flat).all():
            raise ValueError("observations contain NaN or infinity")
        actions = codec.to_env(act(self.params_, self.layout_, flat, self.obs_mean_,
                                   self.obs_var_, float(self.clip_obs),
                                   bool(deterministic), np.random.default_rng()))
        return (actions[0] if single else actions), state

    def evaluate(self, env=None, n_episodes=20, *, deterministic=True, random_state=None):
        """Returns and lengths of evaluation episodes, run in this process.

        Parameters
        ----------
        env : str, callable, gymnasium.Env or None, default=None
            Environment to evaluate in (``None``: the training ``env``); as ``env``
            (an instance is copied, so its state is left untouched).
        n_episodes : int, default=20
        deterministic : bool, default=True
        random_state : int, default=None
            Seed of the evaluation environment's first reset.

        Returns
        -------
        returns, lengths : ndarray of shape (n_episodes,)
        """
        check_is_fitted(self)
        if not isinstance(n_episodes, Integral) or n_episodes < 1:
            raise ValueError(f"n_episodes must be a positive int, got {n_episodes!r}")
        if env is None and self.env is None:
            raise ValueError("env is None: pass an environment to evaluate in")
        if isinstance(env, gym.vector.VectorEnv) or (
                env is None and isinstance(self.env, gym.vector.VectorEnv)):
            raise ValueError("evaluate in a single environment, not a vector one")
        spec = make_spec(self.env if env is None else env,
                         self.env_kwargs if env is None else None)
        seed = check_random_state(random_state).randint(2**31 - 1)
        return run_episodes(
            spec, lambda o: self.predict(o, deterministic=deterministic)[0],
            int(n_episodes), int(seed), with_lengths=True)

    def score(self, env=None, n_episodes=20, *, deterministic=True, random_state=None):
        """Mean return over evaluation episodes (:meth:`evaluate`).

        Parameters
        ----------
        env : str, callable, gymnasium.Env or None, default=None
            Environment to evaluate in (default: the training ``env``).
        n_episodes : int, default=20
        deterministic : bool, default=True
        random_state : int, default=None
            Seed of the evaluation environment.

        Returns
        -------
        float
            Mean episode return.
        """
        returns, _ = self.evaluate(env, n_episodes, deterministic=deterministic,
                                   random_state=random_state)
        return float(np.mean(returns))


def _net_arch(net_arch: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The policy and value nets' hidden widths from ``net_arch`` (a sequence for
    both, or ``dict(pi=..., vf=...)``)."""
    def widths(value: Any, what: str, allow_empty: bool) -> tuple[int, ...]:
        if isinstance(value, str) or not isinstance(value, tuple | list):
            raise ValueError(f"net_arch{what} must be a sequence of positive ints, got "
                             f"{value!r}")
        arch = tuple(value)
        if (not arch and not allow_empty) or not all(
                isinstance(h, Integral) and not isinstance(h, bool) and h > 0
                for h in arch):
            raise ValueError(f"net_arch{what} must be a non-empty sequence of positive "
                             f"ints, got {value!r}" if not allow_empty else
                             f"net_arch{what} must be a sequence of positive ints, got "
                             f"{value!r}")
        return tuple(int(h) for h in arch)

    if isinstance(net_arch, dict):
        if set(net_arch) != {"pi", "vf"}:
            raise ValueError(f"net_arch as a dict must have exactly the keys 'pi' and "
                             f"'vf', got {sorted(net_arch)}")
        return (widths(net_arch["pi"], "['pi']", True),
                widths(net_arch["vf"], "['vf']", True))
    arch = widths(net_arch, "", False)
    return arch, arch


def _empty_state(obs_dim: int) -> dict[str, Any]:
    """An update rule's snapshot fields of an agent before its first step."""
    return {"obs_mean": np.zeros(obs_dim), "obs_var": np.ones(obs_dim),
            "obs_count": 1e-4, "ret_mean": np.zeros(1), "ret_var": np.ones(1),
            "ret_count": 1e-4, "episodes": np.empty((0, 3)), "total_steps": 0}
