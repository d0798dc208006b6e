"""Hostile input, property-tested with hypothesis (issue: hostile input).

Random count matrices (negative, NaN, inf, huge counts, empty rows, zero columns,
int/float dtypes, wrong shapes), random invalid parameter values, and environment
factories with bad spaces or non-finite observations/rewards. Each must give a clear
error or a correct result: never a hang, a crashed worker, or a silent change of the
caller's data. Every fit runs on the session's real LocalCluster (2 workers); after
each failing fit the cluster must still have both workers.
"""

from __future__ import annotations

import functools
import math
import re

import gymnasium as gym
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dask_dpsgd import DPSVILatentDirichletAllocation, HSA2CAgent

LDA = DPSVILatentDirichletAllocation

# Small examples, no example database written into the repository, no deadline (each
# example is a real Dask run), the session cluster fixture reused by every example.
PROPS = settings(deadline=None, database=None, max_examples=20,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])
ENV_PROPS = settings(PROPS, max_examples=6)

FORMATS = ("dense", "csr", "csc", "coo", "csr_array")
DTYPES = (np.int32, np.int64, np.float32, np.float64)


def _healthy(client) -> None:
    """No worker of the session cluster crashed."""
    assert len(client.scheduler_info()["workers"]) == 2


def _as_format(dense: np.ndarray, fmt: str):
    if fmt == "dense":
        return dense
    if fmt == "csr_array":
        return sp.csr_array(dense)
    return {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "coo": sp.coo_matrix}[fmt](dense)


def _snapshot(X):
    """Everything of ``X`` a fit must leave as it was (a deep copy)."""
    if sp.issparse(X):
        arrays = {k: np.array(getattr(X, k), copy=True)
                  for k in ("data", "indices", "indptr", "row", "col") if hasattr(X, k)}
        return type(X), X.dtype, X.shape, X.nnz, arrays, X.toarray()
    return type(X), X.dtype, X.shape, None, {}, np.array(X, copy=True)


def _assert_unchanged(X, snap) -> None:
    kind, dtype, shape, nnz, arrays, dense = snap
    assert type(X) is kind and X.dtype == dtype and X.shape == shape
    if sp.issparse(X):
        assert X.nnz == nnz
        for k, v in arrays.items():
            np.testing.assert_array_equal(getattr(X, k), v, err_msg=f"X.{k} changed")
        np.testing.assert_array_equal(X.toarray(), dense)
    else:
        np.testing.assert_array_equal(X, dense)


@st.composite
def count_matrices(draw, *, zero: bool = False):
    """Valid (non-negative, finite) document-word counts in any accepted container.

    Empty rows, all-zero columns, fractional and huge counts (up to 1e12, within the
    dtype) included; at least one positive count unless ``zero``.
    """
    n = draw(st.integers(1, 30))
    m = draw(st.integers(1, 40))
    dtype = draw(st.sampled_from(DTYPES))
    fmt = draw(st.sampled_from(FORMATS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if zero:
        if fmt != "dense" and draw(st.booleans()):
            # Explicitly stored zeros are still no count.
            k = draw(st.integers(1, n * m))
            coo = sp.coo_matrix((np.zeros(k, dtype=dtype), (rng.integers(0, n, k),
                                                            rng.integers(0, m, k))),
                                shape=(n, m))
            return {"coo": coo, "csr": coo.tocsr(), "csc": coo.tocsc(),
                    "csr_array": sp.csr_array(coo)}[fmt]
        return _as_format(np.zeros((n, m), dtype=dtype), fmt)
    top = draw(st.sampled_from([1.0, 5.0, 1e3, 1e6, 1e9, 1e12]))
    if np.issubdtype(dtype, np.integer):
        top = min(top, float(np.iinfo(dtype).max))
    density = draw(st.floats(0.05, 1.0))
    mask = rng.random((n, m)) < density
    if np.issubdtype(dtype, np.integer):
        vals = rng.integers(1, int(top), size=(n, m), endpoint=True)
    else:
        vals = rng.uniform(0.0, top, size=(n, m))  # fractional counts (tf-idf, ...)
    dense = np.where(mask, vals, 0).astype(dtype)
    dense[draw(st.lists(st.integers(0, n - 1), max_size=n // 2))] = 0  # empty rows
    dense[:, draw(st.lists(st.integers(0, m - 1), max_size=m // 2))] = 0  # zero columns
    if not (dense > 0).any():
        dense[draw(st.integers(0, n - 1)), draw(st.integers(0, m - 1))] = 1
    return _as_format(dense, fmt)


# --------------------------------------------------------------------------- (a) valid


@PROPS
@given(X=count_matrices(), n_components=st.integers(2, 3), batch_size=st.integers(1, 8))
def test_valid_counts_fit_and_transform_without_touching_the_input(client, X,
                                                                    n_components,
                                                                    batch_size):
    snap = _snapshot(X)
    # max_staleness=None: with minibatches of a few tiny documents, the worker that
    # holds the server (in-memory calls) can run more than the "auto" limit ahead of
    # the other one's network round trip, and a rejected stale push is the algorithm
    # at work, not an input problem; this test counts every minibatch's step.
    lda = LDA(n_components=n_components, max_iter=1, batch_size=batch_size,
              random_state=0, max_staleness=None).fit(X)
    _assert_unchanged(X, snap)
    assert lda.components_.shape == (n_components, X.shape[1])
    assert np.isfinite(lda.components_).all() and (lda.components_ > 0).all()
    assert np.isfinite(lda.bound_)
    assert lda.n_pushes_sent_ == lda.n_updates_applied_ and lda.n_updates_rejected_ == 0
    # One SVI step per minibatch (the warm-up's steps may each be several pushes).
    assert lda.n_batch_iter_ == 1 + -(-X.shape[0] // batch_size)
    doc_topic = lda.transform(X)
    _assert_unchanged(X, snap)
    assert doc_topic.shape == (X.shape[0], n_components)
    assert np.isfinite(doc_topic).all() and (doc_topic >= 0).all()
    # scikit-learn's dtype rule: a float32 input makes a float32 model and output.
    float32 = getattr(X, "dtype", None) == np.float32
    assert doc_topic.dtype == (np.float32 if float32 else np.float64)
    np.testing.assert_allclose(doc_topic.sum(axis=1), 1.0, rtol=1e-6 if float32 else 1e-10)


@PROPS
@given(X=count_matrices(zero=True))
def test_all_zero_matrix_is_refused(client, X):
    snap = _snapshot(X)
    with pytest.raises(ValueError, match="no positive count"):
        LDA(n_components=2, max_iter=1, batch_size=4).fit(X)
    _assert_unchanged(X, snap)


def test_non_canonical_csr_input_is_left_as_it_was(client):
    # A CSR matrix with a duplicate entry (row 0, column 2 stored twice) and unsorted
    # indices is a valid scipy matrix: [[2, 0, 4], [0, 4, 0]], total count 10.
    X = sp.csr_matrix((np.array([1.0, 2.0, 3.0, 4.0]), np.array([2, 0, 2, 1]),
                       np.array([0, 3, 4])), shape=(2, 3))
    snap = _snapshot(X)  # (toarray does not canonicalise; X.sum() would, in place)
    lda = LDA(n_components=2, max_iter=1, batch_size=1, random_state=0).fit(X)
    assert np.isfinite(lda.components_).all()
    _assert_unchanged(X, snap)
    assert X.sum() == 10.0


# ------------------------------------------------------------------------ (b) invalid

_BAD = {"negative": (-1.0, "Negative values"), "nan": (np.nan, "NaN"),
        "inf": (np.inf, "infinity"), "-inf": (-np.inf, "infinity")}


@st.composite
def bad_matrices(draw):
    """A valid count matrix with one entry replaced by a negative / NaN / inf value."""
    X = draw(count_matrices())
    dense = X.toarray() if sp.issparse(X) else X.copy()
    kinds = ["negative"] if np.issubdtype(dense.dtype, np.integer) else list(_BAD)
    kind = draw(st.sampled_from(kinds))
    value = _BAD[kind][0]
    if kind == "negative":
        value = -draw(st.sampled_from([1, 3, 1_000_000]))
    r, c = draw(st.integers(0, X.shape[0] - 1)), draw(st.integers(0, X.shape[1] - 1))
    dense[r, c] = value
    fmt = "dense" if not sp.issparse(X) else draw(st.sampled_from(FORMATS[1:]))
    return _as_format(dense, fmt), kind


def _fitted(n_features: int) -> LDA:
    X = np.ones((4, n_features))
    return LDA(n_components=2, max_iter=1, batch_size=2, random_state=0).fit(X)


@PROPS
@given(case=bad_matrices(),
       method=st.sampled_from(["fit", "partial_fit", "fit_transform", "transform",
                               "score", "perplexity"]))
def test_negative_nan_or_inf_entries_are_refused_by_name(client, case, method):
    X, kind = case
    snap = _snapshot(X)
    est = LDA(n_components=2, max_iter=1, batch_size=4)
    if method in ("transform", "score", "perplexity"):
        est = _fitted(X.shape[1])
    with pytest.raises(ValueError, match=_BAD[kind][1]):
        getattr(est, method)(X)
    _assert_unchanged(X, snap)
    _healthy(client)


@pytest.mark.parametrize("kind", list(_BAD))
def test_dask_array_with_bad_entry_fails_fit_by_name(client, kind):
    da = pytest.importorskip("dask.array")
    dense = np.ones((40, 6))
    dense[29, 4] = _BAD[kind][0]
    with pytest.raises(ValueError, match=_BAD[kind][1]):
        LDA(n_components=2, max_iter=1, batch_size=4).fit(da.from_array(dense,
                                                                       chunks=(10, -1)))
    _healthy(client)


@pytest.mark.parametrize("kind", list(_BAD))
def test_dask_array_with_bad_entry_fails_transform_by_name(client, kind):
    da = pytest.importorskip("dask.array")
    lda = _fitted(6)
    dense = np.ones((20, 6))
    dense[13, 4] = _BAD[kind][0]
    try:
        with pytest.raises(ValueError, match=_BAD[kind][1]):
            lda.transform(da.from_array(dense, chunks=(5, -1))).compute()
    finally:
        _healthy(client)


@PROPS
@given(shape=st.one_of(st.tuples(st.integers(1, 40)),
                       st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)),
                       st.just(())),
       method=st.sampled_from(["fit", "partial_fit", "transform"]))
def test_wrong_dimensionality_is_refused(client, shape, method):
    X = np.ones(shape)
    est = _fitted(5) if method == "transform" else LDA(n_components=2, max_iter=1)
    pattern = r"2D array" if len(shape) < 2 else rf"dim {len(shape)}"
    with pytest.raises(ValueError, match=pattern):
        getattr(est, method)(X)


@PROPS
@given(n_fit=st.integers(1, 40), n_other=st.integers(1, 40),
       fmt=st.sampled_from(FORMATS),
       method=st.sampled_from(["transform", "score", "perplexity", "partial_fit"]))
def test_other_feature_count_is_refused_naming_both(client, n_fit, n_other, fmt, method):
    if n_fit == n_other:
        n_other += 1
    lda = _fitted(n_fit)
    components = lda.components_.copy()
    X = _as_format(np.ones((3, n_other)), fmt)
    with pytest.raises(ValueError, match=rf"X has {n_other} features, but "
                                         rf"\w+ is expecting {n_fit} features"):
        getattr(lda, method)(X)
    np.testing.assert_array_equal(lda.components_, components)  # model untouched


# ---------------------------------------------------------------- (c) bad parameters

_ints = st.integers(-10**6, 10**6)
# Below zero (hypothesis orders -0.0 below 0.0, and -0.0 passes a check for >= 0).
_NEGATIVE = st.floats(max_value=0.0, exclude_max=True).filter(lambda v: v < 0)
# Outside scikit-learn's closed interval [0, 1] (priors, learning_decay).
_OUTSIDE_0_1 = _NEGATIVE | st.floats(min_value=1.0, exclude_min=True)
_WRONG_TYPES = st.sampled_from(["3", "ten", 2.5, [1], b"1"])
BAD_LDA_PARAMS = st.one_of(
    st.tuples(st.just("n_components"), st.integers(max_value=0) | _WRONG_TYPES),
    st.tuples(st.just("learning_decay"),
              _OUTSIDE_0_1 | st.just(math.nan) | st.just("0.7")),
    st.tuples(st.just("learning_offset"),
              st.floats(max_value=1.0, exclude_max=True) | st.just(math.nan)),
    st.tuples(st.just("batch_size"), st.integers(max_value=0) | _WRONG_TYPES),
    st.tuples(st.just("max_iter"), st.integers(max_value=-1) | _WRONG_TYPES),
    st.tuples(st.just("max_staleness"), st.integers(max_value=-1) | _WRONG_TYPES),
    st.tuples(st.just("warmup_updates"), st.integers(max_value=-1) | _WRONG_TYPES),
    st.tuples(st.just("doc_topic_prior"), _OUTSIDE_0_1 | st.just("a")),
    st.tuples(st.just("topic_word_prior"), _OUTSIDE_0_1 | st.just(math.nan)),
    st.tuples(st.just("total_samples"), st.floats(max_value=0.0) | st.just(math.nan)),
    st.tuples(st.just("perp_tol"), _NEGATIVE),
    st.tuples(st.just("mean_change_tol"), _NEGATIVE),
    st.tuples(st.just("max_doc_update_iter"), st.integers(max_value=-1) | _WRONG_TYPES),
    st.tuples(st.just("evaluate_every"), _WRONG_TYPES),
    st.tuples(st.just("learning_method"),
              st.text(max_size=8).filter(lambda s: s not in ("online", "batch"))),
    st.tuples(st.just("n_workers"), st.integers(max_value=0) | st.integers(3, 64)
              | _WRONG_TYPES),
    st.tuples(st.just("threads_per_worker"), st.integers(max_value=0)
              | st.integers(3, 64) | _WRONG_TYPES),
    st.tuples(st.just("n_jobs"), st.just(0) | st.sampled_from(["2", 1.5])),
    st.tuples(st.just("prefetch"), st.sampled_from(["yes", 2, None])),
    st.tuples(st.just("random_state"), st.integers(max_value=-1) | st.just("seed")),
    st.tuples(st.just("verbose"), st.integers(max_value=-1) | st.just("loud")),
    st.tuples(st.just("checkpoint_path"), st.integers() | st.just(1.5)),
)


@settings(PROPS, max_examples=40)
@given(bad=BAD_LDA_PARAMS)
def test_invalid_lda_parameters_are_refused_by_name(client, bad):
    name, value = bad
    X = np.ones((6, 5))
    with pytest.raises(ValueError, match=re.escape(name)):
        LDA(**{"n_components": 2, "max_iter": 1, "batch_size": 2, name: value}).fit(X)
    _healthy(client)


def test_n_jobs_beyond_the_workers_cores_is_used_or_refused_by_its_name(client):
    X = np.ones((6, 5))
    try:
        LDA(n_components=2, max_iter=1, batch_size=2, n_jobs=99).fit(X)
    except ValueError as exc:
        assert "n_jobs" in str(exc), str(exc)
    _healthy(client)


BAD_AGENT_PARAMS = st.one_of(
    st.tuples(st.just("learning_rate"), st.floats(max_value=0.0) | st.just(math.nan)
              | st.just(math.inf)),
    st.tuples(st.just("n_steps"), st.integers(max_value=0) | _WRONG_TYPES),
    st.tuples(st.just("gamma"), _OUTSIDE_0_1 | st.just(math.nan)),
    st.tuples(st.just("gae_lambda"), st.floats(min_value=1.0, exclude_min=True)),
    st.tuples(st.just("ent_coef"), _NEGATIVE),
    st.tuples(st.just("vf_coef"), _NEGATIVE),
    st.tuples(st.just("max_grad_norm"), st.floats(max_value=0.0) | st.just(math.nan)),
    st.tuples(st.just("rms_prop_eps"), st.floats(max_value=0.0)),
    st.tuples(st.just("clip_obs"), st.floats(max_value=0.0) | st.just(math.inf)),
    st.tuples(st.just("net_arch"), st.sampled_from(
        [(), (64, 0), (-1,), ("64",), (64, 2.5), "64", 64, None])),
    st.tuples(st.just("activation"),
              st.text(max_size=6).filter(lambda s: s not in ("tanh", "relu"))),
    st.tuples(st.just("total_timesteps"), st.integers(max_value=0) | _WRONG_TYPES),
    st.tuples(st.just("n_envs"), st.integers(max_value=0) | _WRONG_TYPES),
    st.tuples(st.just("push_every"), st.integers(max_value=0) | _WRONG_TYPES),
    st.tuples(st.just("max_staleness"), st.integers(max_value=-1) | _WRONG_TYPES),
    st.tuples(st.just("n_workers"), st.integers(max_value=0) | st.integers(3, 64)),
    st.tuples(st.just("threads_per_worker"), st.integers(max_value=0)
              | st.integers(3, 64)),
    st.tuples(st.just("env_kwargs"), st.sampled_from(["x", [1], 3])),
    st.tuples(st.just("use_rms_prop"), st.sampled_from(["yes", 2])),
    st.tuples(st.just("env"), st.sampled_from([3, None, b"CartPole-v1"])),
)


@settings(PROPS, max_examples=40)
@given(bad=BAD_AGENT_PARAMS)
def test_invalid_agent_parameters_are_refused_by_name(client, bad):
    name, value = bad
    with pytest.raises(ValueError, match=re.escape(name)):
        HSA2CAgent(**{"env": "CartPole-v1", "total_timesteps": 100, "n_envs": 1,
                      name: value}).fit()
    _healthy(client)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_log_std_init_is_refused_by_name(client, value):
    try:
        with pytest.raises(ValueError, match="log_std_init"):
            HSA2CAgent("Pendulum-v1", log_std_init=value, total_timesteps=200,
                       n_envs=1).fit()
    finally:
        _healthy(client)


# ------------------------------------------------------------ (d) hostile environments


def _space(kind: str) -> gym.Space:
    return {
        "Box": gym.spaces.Box(-1.0, 1.0, (3,), np.float64),
        "Box2D": gym.spaces.Box(-1.0, 1.0, (2, 2), np.float64),
        "IntBox": gym.spaces.Box(0, 3, (2,), np.int64),
        "Discrete": gym.spaces.Discrete(2),
        "Dict": gym.spaces.Dict({"a": gym.spaces.Box(-1.0, 1.0, (2,))}),
        "Tuple": gym.spaces.Tuple((gym.spaces.Box(-1.0, 1.0, (2,)),
                                   gym.spaces.Discrete(2))),
        "MultiBinary": gym.spaces.MultiBinary(3),
        "MultiDiscrete": gym.spaces.MultiDiscrete([2, 3]),
        "Text": gym.spaces.Text(4),
        "Sequence": gym.spaces.Sequence(gym.spaces.Discrete(2)),
        "DictOfText": gym.spaces.Dict({"a": gym.spaces.Discrete(2),
                                       "b": gym.spaces.Text(3)}),
    }[kind]


class _SpacesEnv(gym.Env):
    """An environment that only declares its spaces (the agent must refuse it)."""

    def __init__(self, obs: str, act: str) -> None:
        self.observation_space = _space(obs)
        self.action_space = _space(act)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


_GOOD_OBS = ["Box", "Box2D", "Discrete", "Dict", "Tuple", "MultiBinary", "MultiDiscrete"]
_BAD_OBS = {"Text": r"observation space Text\(", "Sequence": r"observation space Sequence\(",
            "DictOfText": r"observation space Text\(.*\(at observation\['b'\]\)"}
_GOOD_ACT = ["Discrete", "Box", "Box2D", "MultiBinary", "MultiDiscrete"]
_BAD_ACT = {"Dict": r"action space Dict\(", "Tuple": r"action space Tuple\(",
            "Text": r"action space Text\(", "IntBox": r"Box action space of dtype int64"}


@settings(PROPS, max_examples=12)
@given(obs=st.sampled_from([*_GOOD_OBS, *_BAD_OBS]),
       act=st.sampled_from([*_GOOD_ACT, *_BAD_ACT]))
def test_unsupported_spaces_are_refused_naming_the_space(client, obs, act):
    if obs in _GOOD_OBS and act in _GOOD_ACT:
        act = "Tuple"
    env = functools.partial(_SpacesEnv, obs, act)
    pattern = _BAD_OBS[obs] if obs in _BAD_OBS else _BAD_ACT[act]
    with pytest.raises(ValueError, match=pattern):
        HSA2CAgent(env, total_timesteps=100, n_envs=1).fit()
    _healthy(client)


class _FaultyEnv(gym.Env):
    """Zero observations and unit rewards, except one bad value at global step ``at``.

    ``fault``: "obs" puts ``value`` into the observation returned at step ``at`` (0:
    by ``reset``), "reward" makes it the reward. ``end`` ends the episode at that step
    ("terminated" / "truncated"), so the bad observation is the episode's final one.
    """

    def __init__(self, fault: str, at: int, value: float, index: int = 0,
                 end: str = "none", obs_shape: tuple[int, ...] = (3,),
                 returned_shape: tuple[int, ...] | None = None) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, obs_shape, np.float64)
        self.action_space = gym.spaces.Discrete(2)
        self.fault, self.at, self.value, self.index, self.end = fault, at, value, index, end
        self.returned_shape = returned_shape or obs_shape
        self.t = 0
        self.episode_t = 0

    def _obs(self, bad: bool) -> np.ndarray:
        obs = np.zeros(self.returned_shape)
        if bad:
            obs.flat[self.index % obs.size] = self.value
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode_t = 0
        return self._obs(self.fault == "obs" and self.at == 0 and self.t == 0), {}

    def step(self, action):
        self.t += 1
        self.episode_t += 1
        hit = self.t == self.at
        reward = self.value if hit and self.fault == "reward" else 1.0
        terminated = hit and self.end == "terminated"
        truncated = (hit and self.end == "truncated") or self.episode_t >= 25
        return self._obs(hit and self.fault == "obs"), reward, terminated, truncated, {}


_NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


@ENV_PROPS
@given(at=st.integers(0, 40), value=_NON_FINITE, index=st.integers(0, 2),
       end=st.sampled_from(["none", "truncated"]), n_envs=st.integers(1, 2),
       n_workers=st.integers(1, 2))
def test_non_finite_observation_fails_the_fit(client, at, value, index, end, n_envs,
                                              n_workers):
    env = functools.partial(_FaultyEnv, "obs", at, value, index, end)
    with pytest.raises(ValueError, match="non-finite observation"):
        HSA2CAgent(env, total_timesteps=400, n_envs=n_envs, n_workers=n_workers,
                   random_state=0).fit()
    _healthy(client)


def test_non_finite_final_observation_of_terminated_episode_fails_the_fit(client):
    env = functools.partial(_FaultyEnv, "obs", 7, math.nan, 0, "terminated")
    try:
        with pytest.raises(ValueError, match="non-finite observation"):
            HSA2CAgent(env, total_timesteps=400, n_envs=2, random_state=0).fit()
    finally:
        _healthy(client)


@ENV_PROPS
@given(at=st.integers(1, 40), value=_NON_FINITE, n_envs=st.integers(1, 2),
       n_workers=st.integers(1, 2))
def test_non_finite_reward_fails_the_fit(client, at, value, n_envs, n_workers):
    env = functools.partial(_FaultyEnv, "reward", at, value)
    with pytest.raises(ValueError, match="non-finite reward"):
        HSA2CAgent(env, total_timesteps=400, n_envs=n_envs, n_workers=n_workers,
                   random_state=0).fit()
    _healthy(client)


def test_observation_of_another_shape_than_its_space_fails_the_fit(client):
    env = functools.partial(_FaultyEnv, "none", 0, 0.0, 0, "none", (3,), (4,))
    with pytest.raises(ValueError, match=r"_FaultyEnv.*\(copy 0\) returned an "
                       r"observation of shape \(4,\) at reset; its observation space "
                       r"has shape \(3,\)"):
        HSA2CAgent(env, total_timesteps=200, n_envs=2, random_state=0).fit()
    _healthy(client)


class _GrowingObsEnv(_FaultyEnv):
    """Right shape at reset, a longer observation from step ``at`` on."""

    def step(self, action):
        obs, *rest = super().step(action)
        return (np.zeros(4) if self.t >= self.at else obs), *rest


def test_observation_that_changes_shape_during_a_step_fails_the_fit(client):
    env = functools.partial(_GrowingObsEnv, "none", 7, 0.0)
    with pytest.raises(ValueError, match=r"_GrowingObsEnv.*\(copy \d\) returned an "
                       r"observation of shape \(4,\); its observation space has "
                       r"shape \(3,\)"):
        HSA2CAgent(env, total_timesteps=200, n_envs=2, random_state=0).fit()
    _healthy(client)


def _not_an_env():
    return object()


def test_factory_returning_a_non_env_is_refused(client):
    with pytest.raises(TypeError, match="not a gymnasium.Env"):
        HSA2CAgent(_not_an_env, total_timesteps=100).fit()


def test_finite_faulty_env_control_fits(client):
    # The control of the properties above: the same env without a bad value trains.
    env = functools.partial(_FaultyEnv, "none", 0, 0.0)
    agent = HSA2CAgent(env, total_timesteps=400, n_envs=2, random_state=0).fit()
    assert agent.num_timesteps_ >= 400
    assert np.isfinite(agent.params_).all()
    assert agent.n_pushes_sent_ == agent.n_updates_applied_ + agent.n_updates_rejected_
