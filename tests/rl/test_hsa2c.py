"""HSA2CAgent on real gymnasium environments and the session's real Dask cluster."""

from __future__ import annotations

import pickle
import time

import gymnasium as gym
import numpy as np
import pytest
from sklearn.base import clone

from dask_dpsgd import HSA2CAgent
from dask_dpsgd.engine._cluster import current_workers
from dask_dpsgd.exceptions import WorkerLostWarning
from dask_dpsgd.rl import LinearSchedule
from tests._faults import KILL_SEEDS, check_recovery, kill_after, kill_point


class _TextObsEnv(gym.Env):
    observation_space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,)),
                                         "b": gym.spaces.Text(5)})
    action_space = gym.spaces.Discrete(2)


class _TupleActionEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,))
    action_space = gym.spaces.Tuple([gym.spaces.Discrete(2), gym.spaces.Discrete(3)])


class _StrictEnv(gym.Env):
    """Refuses an action outside its space, as many environments do."""

    observation_space = gym.spaces.Box(-1, 1, (2,))
    action_space = gym.spaces.Box(-1, 1, (2,))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        if np.shape(action) != (2,):
            raise ValueError(f"action of shape {np.shape(action)} is not in the space")
        return np.zeros(2, dtype=np.float32), 0.0, False, False, {}


class _DropsAComponent(gym.ActionWrapper):
    """A user's wrapper that returns wrongly shaped actions."""

    def action(self, action):
        return action[:1]


def _strict_env_badly_wrapped():
    return _DropsAComponent(_StrictEnv())


class _NaNRewardEnv(gym.Env):
    """Returns a NaN reward at the third step."""

    observation_space = gym.spaces.Box(-1, 1, (3,))
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        reward = float("nan") if self.t == 3 else 1.0
        return np.zeros(3, dtype=np.float32), reward, False, self.t >= 10, {}


CARTPOLE_SEEDS = (0, 1, 2, 3, 4)


@pytest.mark.slow
@pytest.mark.learning
@pytest.mark.timeout(900)  # five fits of up to 1M steps
@pytest.mark.parametrize(("parallelism", "n_workers"),
                         [("serial", 1), ("parameter-server", 2)])
def test_cartpole_learns(client, parallelism, n_workers):
    """Every seed reaches the target (mean of the last 100 episodes >= 475) inside the
    1M-step budget, and its deterministic policy then scores >= 195.

    Steps to the target, measured (seeds 0-4 are the ones tested):

    ========================  =====  =====  =====  =====  =====  =====  =====  =====
    layout / seed               0      1      2      3      4      5      6      7
    ========================  =====  =====  =====  =====  =====  =====  =====  =====
    serial, AMD EPYC          138k   140k   125k   236k   116k   150k   114k   144k
    serial, generic x86-64    138k   140k   125k   793k   116k   150k   114k   144k
    2 x 1, AMD EPYC           160k   144k   165k   156k   141k   132k   145k   190k
    2 x 1, generic x86-64     145k   166k   220k   136k   140k
    ========================  =====  =====  =====  =====  =====  =====  =====  =====

    "generic" is numba compiling for a generic x86-64 CPU (NUMBA_CPU_NAME=generic, as
    CI runs the learning tests once more). Serial seed 3 shows why the budget is 1M and
    not 400k: on generic code its policy collapsed once and took 793k steps (the
    smallest margin, 207k steps); every other run needed at most 236k. The 2 x 1 runs
    are asynchronous, so each run of a seed is a new trajectory. The evaluations (20
    deterministic episodes, at the step the training mean crossed 475) scored 500 in
    all of the runs above, but 417 in one later 2 x 1 run of seed 0: the greedy policy
    at that moment can trail the training mean, so the assertion is CartPole's older
    "solved" level, 195 (smallest margin measured: 222).
    """
    for seed in CARTPOLE_SEEDS:
        agent = HSA2CAgent("CartPole-v1", total_timesteps=1_000_000, target_return=475,
                           random_state=seed, parallelism=parallelism).fit()
        # Early stop on the target: the budget was not spent.
        assert agent.num_timesteps_ < 1_000_000, seed
        assert np.mean(agent.episode_returns_[-100:]) >= 475, seed
        assert agent.score(n_episodes=20, random_state=0) >= 195, seed
        assert agent.n_workers_ == n_workers
        assert agent.threads_per_worker_ == [1] * n_workers
        assert agent.parallelism_ == parallelism
        assert agent.n_pushes_sent_ == agent.n_updates_applied_ + agent.n_updates_rejected_
        assert agent.num_timesteps_ == agent.history_[-1]["time/total_timesteps"]
        assert len(agent.episode_returns_) == len(agent.episode_lengths_)


# Pendulum-v1 settings of the learning test below: rewards x 0.01 (Pendulum's returns
# reach -1,600; unscaled, their value targets swamp the policy's gradient), rl-zoo's
# n_steps / gamma / gae_lambda / vf_coef, no advantage normalisation (A2C's default)
# and a learning rate of 1.4e-3, 500k steps on 1 worker x 1 core.
PENDULUM_SEEDS = (0, 1, 2, 3, 4)
# rl-zoo's A2C settings for Pendulum without gSDE (n_steps 8, gamma and GAE lambda 0.9,
# vf_coef 0.4, observations and rewards normalised, PyTorch's default initialisation, a
# linearly decaying learning rate), on one worker; 500k steps as the target.
PENDULUM_KW = dict(n_steps=8, gamma=0.9, gae_lambda=0.9, vf_coef=0.4,
                   learning_rate=LinearSchedule(1e-3), normalize_advantage=False,
                   normalize_observations=True, normalize_reward=True, ortho_init=False,
                   total_timesteps=500_000, n_workers=1, threads_per_worker=1)


@pytest.mark.slow
@pytest.mark.learning
@pytest.mark.timeout(900)  # five fits of 500k steps
def test_pendulum_is_learned_on_every_seed(client):
    """Every seed reaches an eval return >= -400 in 500k steps; the median >= -200.

    A random policy scores about -1,200 (the first 50 training episodes average
    -1,209 to -1,401 below); solved is about -200. Measured with these settings (eval =
    mean return of 10 deterministic episodes after training):

    ================  ======  ======  ======  ======  ======
    CPU / seed           0       1       2       3       4
    ================  ======  ======  ======  ======  ======
    first 50 (any)    -1209   -1243   -1394   -1350   -1401
    AMD EPYC, eval     -130    -131    -146    -130    -132
    generic, eval      -131    -133    -174    -229    -131
    ================  ======  ======  ======  ======  ======

    (AMD seeds 5-9: eval -131, -132, -129, -129, -130.) "generic" is numba compiling
    for a generic x86-64 CPU (NUMBA_CPU_NAME=generic), as CI runs the learning tests
    once more. Asserted: every seed >= -400 (worst -229: margin 171), median >= -200
    (AMD -131, generic -133: margin 67). Orthogonal initialisation (SB3's default)
    instead of PyTorch's left seed 0 at -861, and SB3's A2C at -1047 likewise
    (issue: HSA2C for stable-baselines3 users).
    """
    evals = []
    for seed in PENDULUM_SEEDS:
        agent = HSA2CAgent("Pendulum-v1", random_state=seed, **PENDULUM_KW).fit()
        first = agent.episode_returns_[:50].mean()
        ev = agent.score(n_episodes=10, random_state=0)
        evals.append(ev)
        assert first < -900, (seed, first)  # it started from a random policy
        assert ev >= -400, (seed, first, ev)
    assert np.median(evals) >= -200, evals
    assert agent.continuous_actions_ and agent.action_dim_ == 1
    assert agent.obs_mean_.shape == (3,)
    action, state = agent.predict(np.zeros(3), deterministic=True)
    assert state is None
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0


def test_one_worker_one_core_is_deterministic(client):
    kw = dict(total_timesteps=4_000, random_state=3, n_workers=1, threads_per_worker=1)
    a = HSA2CAgent("CartPole-v1", **kw).fit()
    b = HSA2CAgent("CartPole-v1", **kw).fit()
    np.testing.assert_array_equal(a.params_, b.params_)
    np.testing.assert_array_equal(a.episode_returns_, b.episode_returns_)
    c = HSA2CAgent("CartPole-v1", **{**kw, "random_state": 4}).fit()
    assert not np.array_equal(a.params_, c.params_)


def test_threads_do_not_change_the_result(client):
    # 8 steps x 64 envs = 512 samples: large enough that 2 threads split the gradient.
    from dask_dpsgd.rl._a2c import PARALLEL_MIN_BATCH

    assert 8 * 64 >= PARALLEL_MIN_BATCH
    kw = dict(total_timesteps=8_192, n_steps=8, n_envs=64, random_state=3, n_workers=1)
    a = HSA2CAgent("CartPole-v1", threads_per_worker=1, **kw).fit()
    b = HSA2CAgent("CartPole-v1", threads_per_worker=2, **kw).fit()
    np.testing.assert_allclose(a.params_, b.params_, rtol=1e-9, atol=1e-12)


def test_accounting_staleness_and_history(client):
    # No staleness limit: every push is applied, so every step counts.
    agent = HSA2CAgent("CartPole-v1", total_timesteps=20_000, push_every=2,
                       max_staleness=None, random_state=0, n_workers=2,
                       threads_per_worker=1).fit()
    assert agent.num_timesteps_ >= 20_000
    assert agent.n_pushes_sent_ == agent.n_updates_applied_
    hist = agent.staleness_histogram_
    assert hist.sum() == agent.n_updates_applied_
    assert agent.staleness_max_ == len(hist) - 1
    assert agent.n_updates_ * 5 * 8 <= agent.num_timesteps_
    rec = agent.history_[-1]
    assert rec["comm/bytes_pushed"] > 0 and rec["rollout/episodes"] == len(
        agent.episode_returns_)


def test_fitted_agent_pickles_and_predicts_without_cluster(client):
    agent = HSA2CAgent("CartPole-v1", total_timesteps=2_000, random_state=0).fit()
    restored = pickle.loads(pickle.dumps(agent))
    obs = np.random.default_rng(0).normal(size=(7, 4))
    np.testing.assert_array_equal(restored.predict(obs, deterministic=True)[0],
                                  agent.predict(obs, deterministic=True)[0])
    assert restored.predict(obs[0], deterministic=True)[0] in (0, 1)
    assert clone(agent).get_params() == agent.get_params()
    assert not hasattr(clone(agent), "params_")


def test_predict_rejects_wrong_shapes(client):
    agent = HSA2CAgent("CartPole-v1", total_timesteps=1_000, random_state=0).fit()
    with pytest.raises(ValueError, match=r"shape \(3,\) do not match"):
        agent.predict(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        agent.predict(np.full(4, np.nan))


@pytest.mark.parametrize(
    ("env", "match"),
    [("NoSuchEnv-v0", "cannot make gymnasium environment 'NoSuchEnv-v0'"),
     (_TextObsEnv, r"observation space Text\(1, 5, .*\(at observation\['b'\]\)"),
     (_TupleActionEnv, "action space Tuple")],
)
def test_unsupported_environments_are_refused(client, env, match):
    with pytest.raises(ValueError, match=match):
        HSA2CAgent(env, total_timesteps=100).fit()


def test_wrongly_shaped_actions_fail_the_fit_naming_them(client):
    with pytest.raises(ValueError, match=r"failed in step\(\) given actions of shape "
                       r"\(2, 2\).*action of shape \(1,\) is not in the space"):
        HSA2CAgent(_strict_env_badly_wrapped, total_timesteps=1_000, n_envs=2).fit()


def test_non_finite_reward_fails_the_fit_with_its_cause(client):
    with pytest.raises(ValueError, match="non-finite reward"):
        HSA2CAgent(_NaNRewardEnv, total_timesteps=1_000, n_envs=2).fit()


@pytest.mark.parametrize(
    ("params", "match"),
    [({"n_steps": 0}, "n_steps"), ({"gamma": 1.5}, "gamma"),
     ({"net_arch": (64, 0)}, "net_arch"), ({"activation": "elu"}, "activation"),
     ({"env": 3}, "env"), ({"parallelism": "fast"}, "parallelism"),
     ({"parallelism": "serial", "n_workers": 2}, "runs 1 worker, but n_workers=2"),
     ({"parallelism": "dpsgd", "threads_per_worker": 1}, "needs more than one"),
     ({"max_staleness": "soon"}, "max_staleness"),
     ({"checkpoint_every": 0}, "checkpoint_every"),
     ({"checkpoint_path": 3}, "checkpoint_path"), ({"poll_interval": 0}, "poll_interval")],
)
def test_invalid_parameters(client, params, match):
    with pytest.raises((ValueError, TypeError), match=match):
        HSA2CAgent(**{"total_timesteps": 100, **params}).fit()


def test_fit_takes_no_data():
    with pytest.raises(ValueError, match="takes no data"):
        HSA2CAgent().fit(np.zeros((3, 4)))


# Both the reference and the disturbed fits stop at the target; the budget only caps a
# slow trajectory. A recovered fit follows a new trajectory, and undisturbed 2 x 1 fits
# need up to ~500k steps to reach 475 (benchmarks/RESULTS.md, 10 seeds): with 300k,
# 2 of 45 local runs ended short of the target for that reason alone. The quality
# checks below then hold with margin: q >= 475 once the target is reached, against
# 0.95 x q_ref <= 475; the evaluations of CartPole policies at the target scored 500 on
# every seed and CPU of test_cartpole_learns (limit 195).
AGENT_KILL_KW = dict(env="CartPole-v1", total_timesteps=1_000_000, target_return=475,
                     random_state=0)


@pytest.fixture(scope="module")
def agent_reference(fragile):
    """An undisturbed fit on the ``fragile`` cluster, and how long it took."""
    with fragile.as_current():
        fragile.wait_for_workers(2)
        HSA2CAgent("CartPole-v1", total_timesteps=2_000, random_state=0).fit()  # warm
        t0 = time.perf_counter()
        reference = HSA2CAgent(**AGENT_KILL_KW).fit()
        return reference, time.perf_counter() - t0


@pytest.mark.slow
@pytest.mark.learning
@pytest.mark.parametrize("seed", KILL_SEEDS)
def test_fit_survives_a_worker_killed_at_a_random_point(fragile, agent_reference, seed):
    reference, duration = agent_reference
    victim, delay = kill_point(seed, duration)
    with fragile.as_current():
        fragile.wait_for_workers(2)
        workers = current_workers(fragile)  # worker 0 holds the parameter server
        killer = kill_after(fragile, workers[victim], delay)
        t0 = time.perf_counter()
        with pytest.warns(WorkerLostWarning, match=r"lost during the fit.*discarding"):
            agent = HSA2CAgent(**AGENT_KILL_KW).fit()
        killer.join()
        assert time.perf_counter() - t0 < 60
    check_recovery(agent, workers[victim], victim)
    # Quality: the mean return of the last 100 training episodes within 5 % of the
    # undisturbed run's (both stop at the target), and a passing evaluation.
    q_ref = np.mean(reference.episode_returns_[-100:])
    q = np.mean(agent.episode_returns_[-100:])
    assert q >= 0.95 * q_ref, (q, q_ref)
    assert agent.score(n_episodes=10, random_state=0) >= 195


def test_resume_from_checkpoint_equals_uninterrupted_run(client, tmp_path):
    kw = dict(checkpoint_every=1_600, random_state=0, n_workers=1,
              threads_per_worker=1)
    full = HSA2CAgent("CartPole-v1", total_timesteps=4_800,
                      checkpoint_path=tmp_path / "full.npz", **kw).fit()
    path = tmp_path / "agent.npz"
    # "Interrupted" after two checkpoints: the file on disk holds 3,200 steps.
    first = HSA2CAgent("CartPole-v1", total_timesteps=3_200, checkpoint_path=path,
                       **kw).fit()
    assert 3_200 <= first.num_timesteps_ < 4_800
    resumed = HSA2CAgent("CartPole-v1", total_timesteps=4_800, checkpoint_path=path,
                         **kw).fit()
    np.testing.assert_array_equal(resumed.params_, full.params_)
    np.testing.assert_array_equal(resumed.episode_returns_, full.episode_returns_)
    np.testing.assert_array_equal(resumed.episode_timesteps_, full.episode_timesteps_)
    assert resumed.num_timesteps_ == full.num_timesteps_
    # Counters cover the segments this call ran: the third one only.
    assert resumed.n_pushes_sent_ == resumed.n_updates_applied_
    assert resumed.n_updates_applied_ + first.n_updates_applied_ == full.n_updates_applied_
    # The boundaries are part of the run: it differs from one without checkpoints.
    plain = HSA2CAgent("CartPole-v1", total_timesteps=4_800, random_state=0,
                       n_workers=1, threads_per_worker=1).fit()
    assert not np.array_equal(plain.params_, full.params_)
    # The file is a plain npz: no pickle needed to read it.
    with np.load(path, allow_pickle=False) as data:
        assert data["theta"].shape == full.params_.shape


def test_checkpoint_of_another_agent_is_refused(client, tmp_path):
    path = tmp_path / "agent.npz"
    HSA2CAgent("CartPole-v1", total_timesteps=800, checkpoint_every=400,
               checkpoint_path=path, random_state=0).fit()
    with pytest.raises(ValueError, match="n_steps: 5 there, 8 here"):
        HSA2CAgent("CartPole-v1", n_steps=8, total_timesteps=800, checkpoint_every=400,
                   checkpoint_path=path).fit()


def test_default_max_staleness_is_the_papers_bound(client):
    agent = HSA2CAgent("CartPole-v1", total_timesteps=40_000, push_every=1,
                       random_state=0, n_workers=2, threads_per_worker=1).fit()
    # 1,000 pushes: ceil(sqrt(1000)) = 32 > 2 workers x 2 (prefetch) x 2.
    assert agent.max_staleness_ == 32
    assert agent.staleness_max_ <= 32
    assert HSA2CAgent(max_staleness=None, total_timesteps=400,
                      n_envs=2).fit().max_staleness_ is None


def test_poll_interval_sets_how_often_the_driver_checkpoints(client):
    """Each record of history_ is one poll (the in-memory checkpoint a recovery restarts
    from): a fit polled every 0.4 s has records at least that far apart."""
    agent = HSA2CAgent("CartPole-v1", total_timesteps=150_000, poll_interval=0.4,
                       random_state=0, n_workers=1, threads_per_worker=1).fit()
    times = [r["time/elapsed_s"] for r in agent.history_]
    assert len(times) >= 4, times
    # the last record is taken when the workers finish, not after a full interval
    assert np.diff(times[:-1]).min() >= 0.4 * 0.95, times
