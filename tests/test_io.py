"""``dask_dpsgd.io``: pickle-free model files that round-trip both estimators."""

from __future__ import annotations

import json
import zipfile

import gymnasium as gym
import numpy as np
import pytest

from dask_dpsgd import DPSVILatentDirichletAllocation, HSA2CAgent
from dask_dpsgd.datasets import load_nips
from dask_dpsgd.io import ParameterNotSavedWarning, load_model, save_model


@pytest.fixture(scope="module")
def lda_fitted(client):
    X = load_nips().data[:60].astype(np.float64)
    lda = DPSVILatentDirichletAllocation(n_components=3, max_iter=1, random_state=0)
    return lda.fit(X), X


@pytest.fixture(scope="module")
def agent_fitted(client):
    return HSA2CAgent("CartPole-v1", total_timesteps=1000, net_arch=(16, 8),
                      random_state=0).fit()


def _entries(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


# --------------------------------------------------------------------------- #
# Round trips
# --------------------------------------------------------------------------- #
def test_lda_round_trip_transforms_and_scores_identically(lda_fitted, tmp_path):
    lda, X = lda_fitted
    path = save_model(lda, tmp_path / "lda.npz")
    assert path == tmp_path / "lda.npz"
    loaded = load_model(path)
    assert type(loaded) is DPSVILatentDirichletAllocation
    assert loaded.get_params() == lda.get_params()
    np.testing.assert_array_equal(loaded.components_, lda.components_)
    np.testing.assert_array_equal(loaded.transform(X[:20]), lda.transform(X[:20]))
    assert loaded.perplexity(X) == lda.perplexity(X)
    assert loaded.score(X) == lda.score(X)
    assert loaded.bound_ == lda.bound_
    assert loaded.history_ == lda.history_
    assert loaded.threads_per_worker_ == lda.threads_per_worker_
    assert loaded.n_features_in_ == lda.n_features_in_ == X.shape[1]
    np.testing.assert_array_equal(loaded.staleness_histogram_, lda.staleness_histogram_)
    # The RNG that partial_fit continues from is restored too.
    a, b = loaded.random_state_.get_state(), lda.random_state_.get_state()
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2:] == b[2:]


@pytest.mark.slow
def test_loaded_lda_works_without_any_dask_client(lda_fitted, tmp_path):
    """Score in a fresh process that never starts a cluster or a client."""
    import subprocess
    import sys

    lda, X = lda_fitted
    save_model(lda, tmp_path / "lda.npz")
    np.save(tmp_path / "X.npy", X[:10].toarray())
    code = (
        "import numpy as np; from dask_dpsgd.io import load_model; "
        f"m = load_model({str(tmp_path / 'lda.npz')!r}); "
        f"X = np.load({str(tmp_path / 'X.npy')!r}); "
        "print(repr(float(m.perplexity(X))))\n"
        "import distributed\n"
        "try:\n    distributed.default_client(); print('client')\n"
        "except ValueError:\n    print('no-client')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert float(out[0]) == lda.perplexity(X[:10])
    assert out[1] == "no-client"


def test_agent_round_trip_predicts_and_scores_identically(agent_fitted, tmp_path):
    agent = agent_fitted
    loaded = load_model(save_model(agent, tmp_path / "agent.npz"))
    assert type(loaded) is HSA2CAgent
    assert loaded.get_params() == agent.get_params()
    assert loaded.net_arch == (16, 8)  # a tuple stays a tuple
    assert loaded.layout_ == agent.layout_
    assert isinstance(loaded.layout_, tuple)
    assert loaded.observation_shape_ == (4,)
    # The spaces predict needs, stored as plain JSON.
    assert loaded.observation_space_ == agent.observation_space_
    assert loaded.action_space_ == agent.action_space_ == gym.spaces.Discrete(2)
    obs = np.random.default_rng(0).normal(size=(200, 4))
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0],
                                  agent.predict(obs, deterministic=True)[0])
    assert (loaded.predict(obs[0], deterministic=True)[0]
            == agent.predict(obs[0], deterministic=True)[0])
    assert (loaded.score(n_episodes=3, random_state=1)
            == agent.score(n_episodes=3, random_state=1))
    np.testing.assert_array_equal(loaded.params_, agent.params_)
    np.testing.assert_array_equal(loaded.episode_returns_, agent.episode_returns_)


def test_file_holds_plain_arrays_only(agent_fitted, tmp_path):
    path = save_model(agent_fitted, tmp_path / "agent.npz")
    entries = _entries(path)  # would raise on any object array
    assert all(a.dtype.kind in "biufcU" for a in entries.values())
    assert str(entries["__class__"]) == "HSA2CAgent"
    params = json.loads(str(entries["__params__"]))
    assert params["values"]["env"] == "CartPole-v1"
    assert "attr/params_" in entries


def test_save_writes_exactly_the_given_path(lda_fitted, tmp_path):
    lda, _ = lda_fitted
    save_model(lda, tmp_path / "model.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]
    loaded = load_model(tmp_path / "model.bin")
    assert isinstance(loaded, DPSVILatentDirichletAllocation)


# --------------------------------------------------------------------------- #
# What save_model refuses
# --------------------------------------------------------------------------- #
def _cartpole_factory():
    import gymnasium as gym

    return gym.make("CartPole-v1")


def test_agent_with_a_factory_env_is_saved_without_it(agent_fitted, tmp_path):
    import copy

    agent = copy.copy(agent_fitted)
    agent.env = _cartpole_factory
    path = save_model(agent, tmp_path / "a.npz")
    loaded = load_model(path)
    # The factory is not pickled: the loaded agent predicts, and asks for its env.
    assert loaded.env is None
    obs = np.random.default_rng(0).normal(size=(5, 4))
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0],
                                  agent.predict(obs, deterministic=True)[0])
    with pytest.raises(ValueError, match="env is None"):
        loaded.score(n_episodes=1)
    with pytest.raises(ValueError, match=r"load_model\(path, env=...\)"):
        loaded.learn(100)
    # Given back at load (as SB3's load(path, env=...)), it scores and trains on.
    again = load_model(path, env=_cartpole_factory)
    assert again.env is _cartpole_factory
    assert (again.score(n_episodes=2, random_state=1)
            == agent.score(n_episodes=2, random_state=1))
    with pytest.raises(ValueError, match="env applies to an HSA2CAgent"):
        load_model(save_model(DPSVILatentDirichletAllocation(n_components=2).fit(
            np.ones((3, 4))), tmp_path / "lda.npz"), env="CartPole-v1")


def test_a_linear_schedule_is_saved_and_rebuilt(agent_fitted, tmp_path):
    import copy

    from dask_dpsgd.rl import LinearSchedule

    agent = copy.copy(agent_fitted)
    agent.learning_rate = LinearSchedule(1e-3, 1e-5)
    save_model(agent, tmp_path / "a.npz")  # no ParameterNotSavedWarning (filterwarnings)
    loaded = load_model(tmp_path / "a.npz")
    assert loaded.learning_rate == LinearSchedule(1e-3, 1e-5)
    assert loaded.learning_rate(0.5) == pytest.approx(5.05e-4)
    # Another callable schedule cannot be stored: warned about and dropped.
    agent.learning_rate = lambda p: p * 1e-3
    with pytest.warns(ParameterNotSavedWarning, match="learning_rate of HSA2CAgent"):
        save_model(agent, tmp_path / "b.npz")
    assert load_model(tmp_path / "b.npz").learning_rate == 7e-4


def test_save_refuses_unfitted_and_foreign_estimators(tmp_path):
    from sklearn.decomposition import LatentDirichletAllocation

    with pytest.raises(ValueError, match="not fitted"):
        save_model(DPSVILatentDirichletAllocation(), tmp_path / "m.npz")
    with pytest.raises(ValueError, match="supports DPSVILatentDirichletAllocation"):
        save_model(LatentDirichletAllocation(), tmp_path / "m.npz")


def test_save_warns_about_and_drops_non_json_params(lda_fitted, tmp_path):
    import copy

    lda = copy.copy(lda_fitted[0])
    lda.random_state = np.random.RandomState(3)
    with pytest.warns(ParameterNotSavedWarning, match="random_state of DPSVILatent"):
        save_model(lda, tmp_path / "m.npz")
    assert load_model(tmp_path / "m.npz").random_state is None


# --------------------------------------------------------------------------- #
# What load_model refuses
# --------------------------------------------------------------------------- #
class _Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _forge(path, lda_path, **replace):
    entries = _entries(lda_path)
    entries.update(replace)
    with open(path, "wb") as fh:
        np.savez(fh, **entries)  # allow_pickle=True: object arrays get pickled
    return path


def test_object_array_is_refused_without_running_its_code(lda_fitted, tmp_path):
    good = save_model(lda_fitted[0], tmp_path / "good.npz")
    marker = tmp_path / "pwned"
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(str(marker))
    bad = _forge(tmp_path / "bad.npz", good, **{"attr/components_": evil})

    with pytest.raises(ValueError, match=r"bad\.npz: refused to load.*pickled"):
        load_model(bad)
    assert not marker.exists()
    # The payload is live: an unsafe np.load would have run it.
    with np.load(bad, allow_pickle=True) as npz:
        npz["attr/components_"]
    assert marker.exists()


def test_a_pickle_file_is_refused_without_running_it(tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ValueError, match=r"model\.npz: refused to load"):
        load_model(path)
    assert not marker.exists()


def test_only_the_two_estimator_classes_are_built(lda_fitted, tmp_path):
    good = save_model(lda_fitted[0], tmp_path / "good.npz")
    for name in ("LatentDirichletAllocation", "os.system", "Pipeline"):
        bad = _forge(tmp_path / "bad.npz", good, __class__=np.array(name))
        with pytest.raises(ValueError, match=f"refused to load class '{name}'"):
            load_model(bad)


def test_attribute_names_are_checked(lda_fitted, tmp_path):
    good = save_model(lda_fitted[0], tmp_path / "good.npz")
    manifest = json.loads(str(_entries(good)["__attrs__"]))
    manifest["_parameter_constraints"] = {"kind": "value", "value": {}}
    bad = _forge(tmp_path / "bad.npz", good, __attrs__=np.array(json.dumps(manifest)))
    with pytest.raises(ValueError, match="refused attribute name '_parameter_const"):
        load_model(bad)


def test_unknown_parameters_are_refused(lda_fitted, tmp_path):
    good = save_model(lda_fitted[0], tmp_path / "good.npz")
    params = json.loads(str(_entries(good)["__params__"]))
    params["values"]["callback"] = "os.system"
    bad = _forge(tmp_path / "bad.npz", good, __params__=np.array(json.dumps(params)))
    with pytest.raises(ValueError, match="callback are not parameters"):
        load_model(bad)


def test_other_files_are_refused_with_the_path_in_the_message(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(3))
    with pytest.raises(ValueError, match=r"a\.npy: not a dask-dpsgd model file"):
        load_model(tmp_path / "a.npy")
    np.savez(tmp_path / "b.npz", x=np.arange(3))
    with pytest.raises(ValueError, match=r"b\.npz: not a dask-dpsgd model file"):
        load_model(tmp_path / "b.npz")
    with zipfile.ZipFile(tmp_path / "c.npz", "w") as zf:
        zf.writestr("x.npy", b"garbage")
    with pytest.raises(ValueError, match=r"c\.npz"):
        load_model(tmp_path / "c.npz")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.npz")
