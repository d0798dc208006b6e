"""Code written for stable-baselines3 runs on HSA2CAgent: predict's signature,
evaluate_policy, learn with continued training, callbacks, log keys and files."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from sklearn.base import clone

from dask_dpsgd import HSA2CAgent
from dask_dpsgd.io import load_model
from dask_dpsgd.rl import LinearSchedule
from dask_dpsgd.rl.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    StopTrainingOnRewardThreshold,
)

SB3_KEYS = ("rollout/ep_rew_mean", "rollout/ep_len_mean", "train/entropy_loss",
            "train/policy_loss", "train/value_loss", "train/explained_variance",
            "train/learning_rate", "time/fps", "time/total_timesteps")


def test_history_has_sb3_log_keys_and_progress_csv(client, tmp_path):
    agent = HSA2CAgent("CartPole-v1", total_timesteps=4_000, random_state=0,
                       poll_interval=0.05, log_path=tmp_path).fit()
    last = agent.history_[-1]
    for key in SB3_KEYS:
        assert key in last, key
    assert np.isfinite([last[k] for k in SB3_KEYS]).all(), last
    assert last["train/entropy_loss"] < 0  # SB3's: minus the policy's entropy
    assert last["rollout/ep_len_mean"] > 0
    with open(tmp_path / "progress.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(agent.history_)
    assert float(rows[-1]["time/total_timesteps"]) == agent.num_timesteps_
    for key in SB3_KEYS:
        assert key in rows[-1]


def test_predict_follows_sb3_signature(client):
    agent = HSA2CAgent("Pendulum-v1", total_timesteps=1_000, random_state=0).fit()
    obs = np.random.default_rng(0).uniform(-1, 1, (6, 3))
    actions, state = agent.predict(obs, state="kept", episode_start=np.ones(6, bool),
                                   deterministic=True)
    assert actions.shape == (6, 1) and state == "kept"
    assert np.all(np.abs(actions) <= 2.0)  # clipped to the Box
    sampled = np.stack([agent.predict(obs[0])[0] for _ in range(20)])
    assert sampled.std() > 0  # deterministic=False by default, as SB3's


def test_evaluate_policy_of_sb3_accepts_the_agent(client):
    pytest.importorskip("torch")
    evaluation = pytest.importorskip("stable_baselines3.common.evaluation")
    import gymnasium as gym
    from stable_baselines3.common.monitor import Monitor

    agent = HSA2CAgent("CartPole-v1", total_timesteps=2_000, random_state=0).fit()
    env = Monitor(gym.make("CartPole-v1"))
    mean, std = evaluation.evaluate_policy(agent, env, n_eval_episodes=3,
                                           deterministic=True)
    assert np.isfinite(mean) and mean >= 8


def test_continued_training_goes_on_from_the_last_fit(client):
    agent = HSA2CAgent("CartPole-v1", total_timesteps=3_000, random_state=0,
                       n_workers=1, threads_per_worker=1,
                       learning_rate=LinearSchedule(1e-3)).fit()
    first_steps = agent.num_timesteps_
    first_episodes = agent.episode_returns_.copy()
    first_params = agent.params_.copy()
    agent.learn(2_000, reset_num_timesteps=False)
    assert agent.num_timesteps_ >= first_steps + 2_000
    # The episode log goes on: the first fit's episodes come first, unchanged.
    np.testing.assert_array_equal(agent.episode_returns_[:len(first_episodes)],
                                  first_episodes)
    assert len(agent.episode_returns_) > len(first_episodes)
    # The schedule runs over all steps: the rate is below the first fit's last.
    assert agent.history_[-1]["train/learning_rate"] < 1e-3 * 0.5
    assert not np.array_equal(agent.params_, first_params)
    # reset_num_timesteps=True restarts the counters, not the parameters (as SB3's).
    before = agent.params_.copy()
    agent.learn(1_000)
    assert 1_000 <= agent.num_timesteps_ < first_steps
    assert agent.episode_timesteps_.max() <= agent.num_timesteps_
    fresh = HSA2CAgent("CartPole-v1", total_timesteps=1_000, random_state=1,
                       n_workers=1, threads_per_worker=1).fit()
    moved = np.linalg.norm(agent.params_ - before)
    assert moved < 0.5 * np.linalg.norm(fresh.params_ - before), moved
    # fit() is what starts from new parameters: as an unfitted clone's (1 x 1 is
    # deterministic).
    np.testing.assert_array_equal(agent.fit().params_, clone(agent).fit().params_)


def test_continuing_with_another_network_is_refused(client):
    agent = HSA2CAgent("CartPole-v1", total_timesteps=1_000, random_state=0).fit()
    agent.set_params(net_arch=dict(pi=[8], vf=[8]))
    with pytest.raises(ValueError, match="layouts differ"):
        agent.learn(1_000, reset_num_timesteps=False)
    with pytest.raises(ValueError, match="layouts differ"):
        agent.learn(1_000)
    agent.fit()  # new parameters for the new network
    with pytest.raises(ValueError, match="total_timesteps must be a positive int"):
        agent.learn(0)


def test_net_arch_dict_builds_separate_networks(client):
    agent = HSA2CAgent("CartPole-v1", net_arch=dict(pi=[16], vf=[8, 8]),
                       total_timesteps=1_000, random_state=0).fit()
    # policy 4->16->2, value 4->8->8->1
    assert agent.params_.shape == (4 * 16 + 16 + 16 * 2 + 2
                                   + 4 * 8 + 8 + 8 * 8 + 8 + 8 + 1,)
    for bad, match in ((dict(pi=[8]), "exactly the keys"),
                       (dict(pi=[8], vf=[0]), r"net_arch\['vf'\]"),
                       (dict(pi="8", vf=[8]), r"net_arch\['pi'\]")):
        with pytest.raises(ValueError, match=match):
            HSA2CAgent("CartPole-v1", net_arch=bad, total_timesteps=100).fit()


class _CountingCallback(BaseCallback):
    """The protocol a user implements: _on_step, returning False to stop."""

    def __init__(self, stop_after):
        super().__init__()
        self.stop_after = stop_after
        self.started = self.ended = False
        self.steps_seen = []

    def _on_training_start(self):
        self.started = True

    def _on_step(self):
        self.steps_seen.append(self.num_timesteps)
        assert self.model.params_.shape == self.model.layout_[4:5]
        self.logger_record["custom/calls"] = self.n_calls
        return self.num_timesteps < self.stop_after

    def _on_training_end(self):
        self.ended = True


def test_a_user_callback_sees_progress_and_stops_training(client):
    cb = _CountingCallback(stop_after=5_000)
    agent = HSA2CAgent("CartPole-v1", total_timesteps=500_000, random_state=0,
                       poll_interval=0.05)
    agent.learn(callback=cb)
    assert cb.started and cb.ended
    assert cb.steps_seen == sorted(cb.steps_seen) and len(cb.steps_seen) >= 2
    # Stopped long before the budget, soon after the callback said so.
    assert 5_000 <= agent.num_timesteps_ < 100_000
    assert any("custom/calls" in rec for rec in agent.history_)


def test_eval_checkpoint_and_stop_on_reward_callbacks(client, tmp_path):
    stop = StopTrainingOnRewardThreshold(reward_threshold=150, verbose=0)
    evaluation = EvalCallback("CartPole-v1", callback_on_new_best=stop,
                              n_eval_episodes=3, eval_freq=5_000,
                              best_model_save_path=tmp_path / "best")
    saving = CheckpointCallback(save_freq=10_000, save_path=tmp_path / "ckpt")
    agent = HSA2CAgent("CartPole-v1", total_timesteps=300_000, random_state=0,
                       learning_rate=3e-3, n_steps=8, poll_interval=0.05)
    agent.learn(callback=CallbackList([evaluation, saving]))
    assert evaluation.evaluations_timesteps, "no evaluation ran"
    assert evaluation.best_mean_reward >= 150  # stopped by the threshold ...
    assert agent.num_timesteps_ < 300_000  # ... before the budget
    assert any("eval/mean_reward" in rec for rec in agent.history_)
    best = load_model(tmp_path / "best" / "best_model.npz")
    assert best.score(n_episodes=3, random_state=0) == pytest.approx(
        evaluation.best_model.score(n_episodes=3, random_state=0))
    assert saving.saved and all(p.endswith("_steps.npz") for p in saving.saved)
    load_model(saving.saved[-1]).predict(np.zeros(4))
    with pytest.raises(TypeError, match="BaseCallback"):
        agent.learn(100, callback=print)


def _read_records(path):
    """TFRecord framing, checked with the masked CRC-32C of each part."""
    import struct

    from dask_dpsgd.rl._logs import crc32c

    def masked(data):
        crc = crc32c(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    data, out, i = path.read_bytes(), [], 0
    while i < len(data):
        header = data[i:i + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[i + 8:i + 12])[0] == masked(header)
        body = data[i + 12:i + 12 + length]
        assert struct.unpack("<I", data[i + 12 + length:i + 16 + length])[0] == masked(body)
        out.append(body)
        i += 16 + length
    return out


def _fields(buf):
    """Protocol-buffer fields of a message: (number, wire type, value)."""
    import struct

    def varint(j):
        shift = value = 0
        while True:
            byte = buf[j]
            value |= (byte & 0x7F) << shift
            j += 1
            if not byte & 0x80:
                return value, j
            shift += 7

    out, i = [], 0
    while i < len(buf):
        key, i = varint(i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(i)
        elif wire == 1:
            value, i = struct.unpack("<d", buf[i:i + 8])[0], i + 8
        elif wire == 5:
            value, i = struct.unpack("<f", buf[i:i + 4])[0], i + 4
        else:
            length, i = varint(i)
            value, i = buf[i:i + length], i + length
        out.append((number, wire, value))
    return out


def test_tensorboard_event_files(client, tmp_path):
    from dask_dpsgd.rl._logs import crc32c

    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    agent = HSA2CAgent("CartPole-v1", total_timesteps=3_000, random_state=0,
                       poll_interval=0.05, tensorboard_log=tmp_path)
    history = list(agent.fit().history_)
    agent.learn(1_000)
    runs = sorted(p.name for p in tmp_path.iterdir())
    assert runs == ["HSA2C_1", "HSA2C_2"]  # a run per call, as SB3's
    (events,) = (tmp_path / "HSA2C_1").glob("events.out.tfevents.*")
    records = [_fields(r) for r in _read_records(events)]
    assert (3, 2, b"brain.Event:2") in records[0]
    scalars = []
    for rec in records[1:]:
        step = next(v for n, w, v in rec if n == 2)
        summary = next(v for n, w, v in rec if n == 5)
        values = {}
        for _, _, value in _fields(summary):
            parts = {n: v for n, w, v in _fields(value)}
            values[parts[1].decode()] = parts[2]
        scalars.append((step, values))
    # One event per history record, at its step, with its finite numbers (float32).
    assert len(scalars) == len(history)
    for (step, values), rec in zip(scalars, history, strict=True):
        assert step == rec["time/total_timesteps"]
        for key in SB3_KEYS:
            if np.isfinite(rec[key]):
                assert values[key] == pytest.approx(rec[key], rel=1e-6), key
    assert all(key in scalars[-1][1] for key in SB3_KEYS)
    tensorboard = pytest.importorskip("tensorboard.backend.event_processing."
                                      "event_accumulator")
    acc = tensorboard.EventAccumulator(str(tmp_path / "HSA2C_1"))
    acc.Reload()
    assert "rollout/ep_rew_mean" in acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars("time/total_timesteps")] == [
        rec["time/total_timesteps"] for rec in history]
