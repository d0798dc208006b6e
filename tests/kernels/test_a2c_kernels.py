"""Tests of the HSA2C kernels ``dask_dpsgd._kernels.nn`` and ``._kernels.a2c``.

References: ``tests/_naive_a2c.py`` (plain NumPy), central finite differences, small
hand-computed rollouts, and, where importable, torch autograd / ``torch.optim`` and
stable-baselines3's own policy, rollout buffer and running statistics.
"""

from __future__ import annotations

import ast
import math
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest

from dask_dpsgd._kernels import a2c, nn
from tests import _naive_a2c as naive
from tests._a2c_checks import (
    ENT_COEF,
    VF_COEF,
    assert_grad_matches_sb3,
    kernel_grad,
)

OBS_DIM = 3
N_ACT = 3

# The network's forward pass with both heads' raw outputs (logits or means, values),
# for the tests only: the library's kernels act (policy_act_value) or value
# (predict_values) instead.
_mlp_forward = nn._mlp_forward_jit


def _policy_value_forward_py(theta, layout, obs, out_pi, out_values):
    """Policy head outputs and values for a batch of observations.

    Parameters
    ----------
    theta : ndarray of float64, shape (n_params,)
        Parameters ``v``.
    layout : ndarray of int64
        ``np.asarray(make_layout(...), np.int64)``.
    obs : ndarray of float64, shape (n, obs_dim)
        Observations ``s``.
    out_pi : ndarray of float64, shape (n, n_act_outputs)
        Written: logits (Discrete) or Gaussian means ``mu(s)`` (Box); the Gaussian's
        ``log_std`` is ``theta[layout[5]:layout[5] + n_act_outputs]``.
    out_values : ndarray of float64, shape (n,)
        Written: ``V(s)``.

    Notes
    -----
    Equivalent to ``out_pi = pi_net(obs)``, ``out_values = vf_net(obs)[:, 0]`` with
    ``pi_net = Linear o act o ... o act o Linear`` (see ``tests/_naive_a2c.py``).
    """
    w = np.empty(layout[nn.L_WORK_SIZE])
    x = obs.reshape(-1)
    n = obs.shape[0]
    blk = layout[nn.L_BLOCK]
    n_pi = layout[nn.L_N_PI]
    k_out = layout[nn.L_N_OUT]
    obs_dim = layout[nn.L_OBS_DIM]
    for i0 in range(0, n, blk):
        m = min(blk, n - i0)
        head = _mlp_forward(theta, layout, 0, n_pi, x, i0 * obs_dim, m, w)
        for s in range(m):
            for k in range(k_out):
                out_pi[i0 + s, k] = w[head + s * k_out + k]
        vhead = _mlp_forward(
            theta, layout, n_pi, layout[nn.L_N_VF], x, i0 * obs_dim, m, w
        )
        for s in range(m):
            out_values[i0 + s] = w[vhead + s]


policy_value_forward = numba.njit(cache=True, nogil=True)(_policy_value_forward_py)



def _problem(continuous, activation, n=9, seed=0, hidden=(5, 4), hidden_vf=(6,)):
    """A small random network, batch and targets (weights perturbed off the init)."""
    rng = np.random.default_rng(seed)
    layout = nn.make_layout(
        OBS_DIM, N_ACT, hidden, continuous, activation=activation, hidden_vf=hidden_vf
    )
    theta = nn.init_params(layout, rng, log_std_init=-0.3)
    theta += 0.3 * rng.standard_normal(theta.shape)
    obs = rng.standard_normal((n, OBS_DIM))
    if continuous:
        actions = rng.standard_normal((n, N_ACT))
    else:
        actions = rng.integers(0, N_ACT, (n, 1)).astype(np.float64)
    adv = rng.standard_normal(n)
    ret = rng.standard_normal(n)
    return layout, np.asarray(layout, np.int64), theta, obs, actions, adv, ret


def _naive_loss(layout, obs, actions, adv, ret):
    """The reference loss as a function of ``theta`` alone (for finite differences)."""

    def loss(theta):
        return naive.a2c_loss(theta, layout, obs, actions, adv, ret, ENT_COEF, VF_COEF)[
            0
        ]

    return loss


CASES = [(c, a) for c in (False, True) for a in ("tanh", "relu")]
CASE_IDS = [f"{'box' if c else 'discrete'}-{a}" for c, a in CASES]


def test_layout_sb3_default_size_and_pickle():
    # SB3 A2C MlpPolicy on CartPole-v1: pi 4-64-64-2, vf 4-64-64-1 -> 9155 parameters.
    layout = nn.make_layout(4, 2, (64, 64), False)
    assert nn.n_params(layout) == (4 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2) + (
        4 * 64 + 64 + 64 * 64 + 64 + 64 + 1
    )
    assert all(type(v) is int for v in layout)
    assert pickle.loads(pickle.dumps(layout)) == layout
    names = [name for name, _, _ in nn.param_slices(layout)]
    assert names[-2:] == ["value_net.weight", "value_net.bias"]
    box = nn.make_layout(4, 2, (64, 64), True)
    assert nn.n_params(box) == nn.n_params(layout) + 2
    assert nn.param_slices(box)[-1][0] == "log_std"
    # Slices tile theta exactly once, in order.
    stops = [sl.stop for _, sl, _ in nn.param_slices(box)]
    starts = [sl.start for _, sl, _ in nn.param_slices(box)]
    assert starts == [0, *stops[:-1]]
    assert stops[-1] == nn.n_params(box)


def test_layout_rejects_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        nn.make_layout(4, 2, (8,), False, activation="gelu")
    with pytest.raises(ValueError, match="n_act_outputs"):
        nn.make_layout(4, 1, (8,), False)


@pytest.mark.parametrize("continuous", [False, True])
def test_init_params_orthogonal_like_sb3(continuous):
    layout = nn.make_layout(4, 2, (64, 32), continuous)
    theta = nn.init_params(layout, np.random.default_rng(1), log_std_init=0.0)
    again = nn.init_params(layout, np.random.default_rng(1))
    np.testing.assert_array_equal(theta, again)
    for name, sl, shape in nn.param_slices(layout):
        block = theta[sl].reshape(shape)
        if name.endswith(".bias") or name == "log_std":
            np.testing.assert_array_equal(block, 0.0)
            continue
        gain = {"action_net": 0.01, "value_net": 1.0}.get(
            name.split(".")[0], math.sqrt(2)
        )
        small = block @ block.T if shape[0] <= shape[1] else block.T @ block
        np.testing.assert_allclose(small, gain**2 * np.eye(min(shape)), atol=1e-12)


def test_init_params_without_ortho_init_is_torch_linear_default():
    """PyTorch's nn.Linear: weights and biases uniform in +-1/sqrt(fan_in)."""
    layout = nn.make_layout(4, 2, (64, 32), True)
    theta = nn.init_params(layout, np.random.default_rng(1), log_std_init=-0.5,
                           ortho_init=False)
    fan_in = 0
    for name, sl, shape in nn.param_slices(layout):
        block = theta[sl]
        if name == "log_std":
            np.testing.assert_array_equal(block, -0.5)
            continue
        if name.endswith(".weight"):
            fan_in = shape[1]  # a bias follows its weight, with the same fan-in
        bound = 1 / math.sqrt(fan_in)
        assert np.abs(block).max() <= bound
        # Spread over the whole interval (not orthogonal, not zero): std of U(-b, b).
        if block.size >= 32:
            assert block.std() == pytest.approx(bound / math.sqrt(3), rel=0.3)
        else:
            assert (block != 0).all()
    th = pytest.importorskip("torch")  # the same bound as torch's own layer
    lin = th.nn.Linear(32, 7)
    assert lin.weight.abs().max().item() <= 1 / math.sqrt(32)


@pytest.mark.parametrize(("continuous", "activation"), CASES, ids=CASE_IDS)
def test_forward_matches_naive(continuous, activation):
    layout, lay, theta, obs, *_ = _problem(continuous, activation)
    pi = np.empty((len(obs), N_ACT))
    values = np.empty(len(obs))
    policy_value_forward(theta, lay, obs, pi, values)
    ref_pi, ref_values = naive.forward(theta, layout, obs)
    np.testing.assert_allclose(pi, ref_pi, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(values, ref_values, rtol=1e-12, atol=1e-14)
    only_values = np.empty(len(obs))
    nn.predict_values(theta, lay, obs, only_values)
    np.testing.assert_array_equal(only_values, values)


def test_linear_heads_without_hidden_layers():
    layout, lay, theta, obs, actions, adv, ret = _problem(
        False, "tanh", hidden=(), hidden_vf=()
    )
    pi = np.empty((len(obs), N_ACT))
    values = np.empty(len(obs))
    policy_value_forward(theta, lay, obs, pi, values)
    np.testing.assert_allclose(pi, naive.forward(theta, layout, obs)[0], rtol=1e-12)
    _, grad, _ = kernel_grad(
        nn.a2c_loss_grad, layout, lay, theta, obs, actions, adv, ret
    )
    fd = naive.finite_difference_grad(
        _naive_loss(layout, obs, actions, adv, ret), theta
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-8)


def test_kernels_demand_c_contiguous_float64():
    _, lay, theta, obs, *_ = _problem(False, "tanh")
    values = np.empty(len(obs))
    with pytest.raises(TypeError):
        nn.predict_values(theta, lay, np.asfortranarray(obs), values)
    with pytest.raises(TypeError):
        nn.predict_values(theta, lay, obs.astype(np.float32), values)
    # Explicit signatures: nothing was compiled beyond the declared one.
    assert len(nn.predict_values.signatures) == 1


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize(("continuous", "activation"), CASES, ids=CASE_IDS)
def test_gradient_matches_finite_differences(continuous, activation, parallel):
    # n=23 in 2 chunks: blocks of 11 and 12 samples exercise the 4-sample unrolled
    # loops and their remainders; widths 5, 4, 6 do the same for 4-row unrolling.
    layout, lay, theta, obs, actions, adv, ret = _problem(continuous, activation, n=23)
    fn = nn.select_a2c_loss_grad(parallel)
    loss, grad, losses = kernel_grad(
        fn, layout, lay, theta, obs, actions, adv, ret, n_chunks=2
    )
    ref = naive.a2c_loss(theta, layout, obs, actions, adv, ret, ENT_COEF, VF_COEF)
    np.testing.assert_allclose(loss, ref[0], rtol=1e-12)
    np.testing.assert_allclose(losses, ref[1:], rtol=1e-12, atol=1e-15)
    fd = naive.finite_difference_grad(
        _naive_loss(layout, obs, actions, adv, ret), theta
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-8)
    # Not vacuous: every layer receives gradient.
    for name, sl, _ in nn.param_slices(layout):
        assert np.abs(grad[sl]).max() > 1e-6, name


@pytest.mark.parametrize(("continuous", "activation"), CASES, ids=CASE_IDS)
def test_serial_equals_parallel(continuous, activation):
    layout, lay, theta, obs, actions, adv, ret = _problem(continuous, activation, n=37)
    args = (layout, lay, theta, obs, actions, adv, ret)
    for n_chunks in (1, 2, 5, 64):  # 64 > n: empty chunks are fine
        ls, gs, xs = kernel_grad(nn.a2c_loss_grad, *args, n_chunks=n_chunks)
        lp, gp, xp = kernel_grad(nn.a2c_loss_grad_parallel, *args, n_chunks=n_chunks)
        # Same chunking -> same summation order -> bit-identical.
        assert ls == lp
        np.testing.assert_array_equal(gs, gp)
        np.testing.assert_array_equal(xs, xp)
    _, g1, _ = kernel_grad(nn.a2c_loss_grad, *args, n_chunks=1)
    _, g5, _ = kernel_grad(nn.a2c_loss_grad_parallel, *args, n_chunks=5)
    np.testing.assert_allclose(g5, g1, rtol=1e-12, atol=1e-15)


def test_parallel_variant_is_really_parallel():
    # Regression: numba's cache does not key entries on parallel=True, so a serial and
    # a parallel dispatcher of one function shared the serial code, and the threading
    # layer was never started. A fresh process is needed (the layer is per process);
    # nn.py is loaded on its own, under its real name so the warm cache is reused,
    # so that nothing else in the package can start the layer.
    code = textwrap.dedent(
        f"""
        import importlib.util, numba, numpy as np
        spec = importlib.util.spec_from_file_location(
            "dask_dpsgd._kernels.nn", {nn.__file__!r})
        nn = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(nn)
        layout = nn.make_layout(4, 2, (8,), False)
        lay = np.asarray(layout, np.int64)
        theta = nn.init_params(layout, np.random.default_rng(0))
        obs, act, v = np.zeros((10, 4)), np.zeros((10, 1)), np.zeros(10)
        g, lo = np.empty_like(theta), np.empty(3)
        slabs, work = nn.make_grad_workspace(layout, 2)
        nn.a2c_loss_grad_parallel(theta, lay, obs, act, v, v, 0.0, 0.5, g, lo, slabs,
                                  work)
        print(numba.threading_layer())  # raises ValueError if no thread was started
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert nn.a2c_loss_grad_parallel.py_func is not nn.a2c_loss_grad.py_func


def test_undecorated_kernel_runs_as_python():
    layout, lay, theta, obs, actions, adv, ret = _problem(True, "tanh", n=4)
    lj, gj, _ = kernel_grad(
        nn.a2c_loss_grad, layout, lay, theta, obs, actions, adv, ret
    )
    lp, gp, _ = kernel_grad(
        nn._a2c_loss_grad, layout, lay, theta, obs, actions, adv, ret
    )
    np.testing.assert_allclose(lp, lj, rtol=1e-12)
    np.testing.assert_allclose(gp, gj, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("continuous", [False, True])
def test_matches_sb3_policy_autograd(continuous):
    """Same parameters in SB3's ActorCriticPolicy: values, log-probs, A2C gradient."""
    th = pytest.importorskip("torch")
    pytest.importorskip("stable_baselines3")
    from gymnasium import spaces
    from stable_baselines3.common.policies import ActorCriticPolicy

    layout, lay, theta, obs, actions, adv, ret = _problem(continuous, "tanh", n=11)
    obs_space = spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float64)
    act_space = (
        spaces.Box(-1.0, 1.0, (N_ACT,), np.float64)
        if continuous
        else spaces.Discrete(N_ACT)
    )
    policy = ActorCriticPolicy(
        obs_space,
        act_space,
        lambda _: 1e-3,
        net_arch={"pi": [5, 4], "vf": [6]},
        activation_fn=th.nn.Tanh,
    ).double()
    # Map our names onto SB3's: hidden layer l is module 2*l of the Sequential.
    state = {}
    key_slices = {}
    for name, sl, shape in nn.param_slices(layout):
        net, *rest = name.split(".")
        if net in ("pi", "vf"):
            sb3_net = "policy_net" if net == "pi" else "value_net"
            key = f"mlp_extractor.{sb3_net}.{2 * int(rest[0])}.{rest[1]}"
        else:
            key = name
        state[key] = th.from_numpy(theta[sl].reshape(shape).copy())
        key_slices[key] = sl
    assert set(state) == {k for k, _ in policy.named_parameters()}
    policy.load_state_dict(state, strict=True)
    # SB3's preprocess_obs casts Box observations to float32; skip it (the features
    # extractor is a Flatten of a 1-D observation) to compare in float64.
    policy.extract_features = lambda obs, *args, **kwargs: obs

    t_actions = th.from_numpy(actions)
    if not continuous:
        t_actions = t_actions.long().flatten()
    assert_grad_matches_sb3(policy, key_slices, layout, lay, theta, obs, t_actions,
                            actions, adv, ret)

    noise = np.zeros((len(obs), 1 if not continuous else N_ACT))
    out_a = np.empty_like(noise)
    out_v = np.empty(len(obs))
    out_lp = np.empty(len(obs))
    nn.policy_act_value(theta, lay, obs, True, noise, out_a, out_v, out_lp)
    with th.no_grad():
        det_actions, det_values, det_lp = policy(th.from_numpy(obs), deterministic=True)
    np.testing.assert_allclose(out_a.reshape(det_actions.shape), det_actions.numpy())
    np.testing.assert_allclose(out_v, det_values.numpy().ravel(), rtol=1e-12)
    np.testing.assert_allclose(out_lp, det_lp.numpy(), rtol=1e-12)


def test_tanh_matches_numpy():
    x = np.concatenate(
        [
            np.linspace(-25.0, 25.0, 200_001),
            np.random.default_rng(6).standard_normal(100_000) * 3,
            [0.0, -0.0, 1e-300, -1e-300, 0.625, -0.625, 0.62499999999, 1e3, -np.inf],
            [np.inf, 700.0, -700.0],
        ]
    )
    out = x.copy()
    nn._activate_jit(out, nn.TANH)
    ref = np.tanh(x)
    np.testing.assert_allclose(out, ref, rtol=1e-15, atol=0)
    assert np.signbit(out[x == 0]).tolist() == np.signbit(x[x == 0]).tolist()
    nan = np.array([np.nan, 1.0])
    nn._activate_jit(nan, nn.TANH)
    assert np.isnan(nan[0])
    assert nn._tanh(0.3) == pytest.approx(math.tanh(0.3), rel=5e-16)


def test_policy_act_discrete_inverse_cdf_and_frequencies():
    layout, lay, theta, _, *_ = _problem(False, "tanh")
    rng = np.random.default_rng(3)
    n = 20000
    obs = np.repeat(rng.standard_normal((1, OBS_DIM)), n, axis=0)
    # Sharpen the head so the categorical is far from uniform.
    head = dict((name, sl) for name, sl, _ in nn.param_slices(layout))
    theta[head["action_net.weight"]] *= 30.0
    logits, _ = naive.forward(theta, layout, obs[:1])
    p = np.exp(logits[0] - logits[0].max())
    p /= p.sum()
    u = rng.random((n, 1))
    out = np.empty((n, 1))
    nn.policy_act(theta, lay, obs, False, u, out)
    expected = np.minimum(
        np.searchsorted(np.cumsum(p), u[:, 0], side="right"), N_ACT - 1
    )
    np.testing.assert_array_equal(out[:, 0], expected)
    freq = np.bincount(out[:, 0].astype(np.int64), minlength=N_ACT) / n
    np.testing.assert_allclose(freq, p, atol=4 * np.sqrt(0.25 / n))
    nn.policy_act(theta, lay, obs[:5], True, u[:5], out[:5])
    np.testing.assert_array_equal(out[:5, 0], np.argmax(logits[0]))


def test_policy_act_continuous_and_log_probs():
    layout, lay, theta, obs, *_ = _problem(True, "relu")
    rng = np.random.default_rng(4)
    eps = rng.standard_normal((len(obs), N_ACT))
    out = np.empty_like(eps)
    values = np.empty(len(obs))
    log_probs = np.empty(len(obs))
    nn.policy_act_value(theta, lay, obs, False, eps, out, values, log_probs)
    mean, ref_values = naive.forward(theta, layout, obs)
    log_std = naive.unpack(theta, layout)[2]
    np.testing.assert_allclose(out, mean + np.exp(log_std) * eps, rtol=1e-12)
    ref_lp, _, _ = naive.log_prob_entropy(theta, layout, obs, out)
    np.testing.assert_allclose(log_probs, ref_lp, rtol=1e-12)
    np.testing.assert_allclose(values, ref_values, rtol=1e-12)
    only = np.empty_like(out)
    nn.policy_act(theta, lay, obs, False, eps, only)
    np.testing.assert_array_equal(only, out)
    nn.policy_act(theta, lay, obs, True, eps, only)
    np.testing.assert_allclose(only, mean, rtol=1e-12)


def test_policy_act_value_discrete_log_probs():
    layout, lay, theta, obs, *_ = _problem(False, "relu")
    u = np.random.default_rng(5).random((len(obs), 1))
    out = np.empty((len(obs), 1))
    values = np.empty(len(obs))
    log_probs = np.empty(len(obs))
    nn.policy_act_value(theta, lay, obs, False, u, out, values, log_probs)
    ref_lp, _, ref_values = naive.log_prob_entropy(theta, layout, obs, out)
    np.testing.assert_allclose(log_probs, ref_lp, rtol=1e-12)
    np.testing.assert_allclose(values, ref_values, rtol=1e-12)


def _returns(
    rewards, values, terminated, truncated, last_values, trunc_values, gamma, gae_lambda
):
    adv = np.empty_like(rewards)
    ret = np.empty_like(rewards)
    a2c.compute_returns_and_advantages(
        rewards,
        values,
        terminated,
        truncated,
        last_values,
        trunc_values,
        gamma,
        gae_lambda,
        adv,
        ret,
    )
    return adv, ret


def _col(*xs, dtype=np.float64):
    return np.array(xs, dtype=dtype).reshape(-1, 1)


@pytest.mark.parametrize(
    ("terminated", "truncated", "expected"),
    [
        # No episode end: R_2 = 3 + .5*4 = 5, R_1 = 2 + .5*5, R_0 = 1 + .5*4.5.
        ((0, 0, 0), (0, 0, 0), (3.25, 4.5, 5.0)),
        # Termination at t=1: no bootstrap, R_1 = 2, R_0 = 1 + .5*2.
        ((0, 1, 0), (0, 0, 0), (2.0, 2.0, 5.0)),
        # Truncation at t=1: bootstrap with V(final_obs) = 10, R_1 = 2 + .5*10.
        ((0, 0, 0), (0, 1, 0), (4.5, 7.0, 5.0)),
        # Both flags: termination wins.
        ((0, 1, 0), (0, 1, 0), (2.0, 2.0, 5.0)),
        # Truncation at the last step uses V(final_obs), not last_values.
        ((0, 0, 0), (0, 0, 1), (1 + 0.5 * 2 + 0.25 * 8, 2 + 0.5 * 8, 8.0)),
        # Termination at the last step ignores last_values.
        ((0, 0, 1), (0, 0, 0), (1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0)),
    ],
    ids=[
        "none",
        "terminated",
        "truncated",
        "both",
        "truncated-last",
        "terminated-last",
    ],
)
def test_returns_hand_computed(terminated, truncated, expected):
    rewards = _col(1.0, 2.0, 3.0)
    values = _col(0.5, -1.0, 2.0)
    trunc_values = _col(-99.0, 10.0, 10.0)
    adv, ret = _returns(
        rewards,
        values,
        _col(*terminated, dtype=bool),
        _col(*truncated, dtype=bool),
        np.array([4.0]),
        trunc_values,
        0.5,
        1.0,
    )
    np.testing.assert_allclose(ret[:, 0], expected, rtol=1e-15)
    np.testing.assert_allclose(adv, ret - values, rtol=1e-15)


def test_returns_gae_lambda_zero_is_td0():
    rewards = _col(1.0, 2.0, 3.0)
    values = _col(0.5, -1.0, 2.0)
    no = _col(0, 0, 0, dtype=bool)
    adv, _ = _returns(
        rewards, values, no, no, np.array([4.0]), np.zeros((3, 1)), 0.5, 0.0
    )
    np.testing.assert_allclose(adv[:, 0], [1 - 0.5 - 0.5, 2 + 1 + 1, 3 + 2 - 2])


def _random_rollout(seed, n_steps=16, n_envs=5):
    rng = np.random.default_rng(seed)
    rewards = rng.standard_normal((n_steps, n_envs))
    values = rng.standard_normal((n_steps, n_envs))
    terminated = rng.random((n_steps, n_envs)) < 0.15
    truncated = rng.random((n_steps, n_envs)) < 0.15
    last_values = rng.standard_normal(n_envs)
    trunc_values = rng.standard_normal((n_steps, n_envs))
    return rewards, values, terminated, truncated, last_values, trunc_values


@pytest.mark.parametrize("gae_lambda", [0.0, 0.5, 0.95, 1.0])
def test_returns_match_sb3_formulation(gae_lambda):
    for seed in range(5):
        args = _random_rollout(seed)
        adv, ret = _returns(*args, 0.99, gae_lambda)
        ref_adv, ref_ret = naive.returns_advantages_sb3(*args, 0.99, gae_lambda)
        np.testing.assert_allclose(adv, ref_adv, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ret, ref_ret, rtol=1e-12, atol=1e-12)


def test_gae_lambda_one_is_nstep_return():
    for seed in range(5):
        rewards, values, term, trunc, last, tv = _random_rollout(seed)
        _, ret = _returns(rewards, values, term, trunc, last, tv, 0.99, 1.0)
        ref = naive.nstep_returns(rewards, term, trunc, last, tv, 0.99)
        np.testing.assert_allclose(ret, ref, rtol=1e-12, atol=1e-12)


def test_returns_match_sb3_rollout_buffer():
    """SB3's own RolloutBuffer (no truncation: SB3 handles it in collect_rollouts)."""
    th = pytest.importorskip("torch")
    pytest.importorskip("stable_baselines3")
    from gymnasium import spaces
    from stable_baselines3.common.buffers import RolloutBuffer

    rewards, values, terminated, _, last_values, _ = _random_rollout(7, 12, 3)
    no_trunc = np.zeros_like(terminated)
    buf = RolloutBuffer(
        12,
        spaces.Box(-1, 1, (1,)),
        spaces.Discrete(2),
        "cpu",
        gamma=0.9,
        gae_lambda=0.8,
        n_envs=3,
    )
    starts = np.ones(3, dtype=np.float32)
    for t in range(12):
        buf.add(
            np.zeros((3, 1)),
            np.zeros((3, 1)),
            rewards[t],
            starts,
            th.from_numpy(values[t]),
            th.zeros(3),
        )
        starts = terminated[t].astype(np.float32)
    buf.compute_returns_and_advantage(th.from_numpy(last_values), terminated[-1])
    adv, ret = _returns(
        rewards,
        values,
        terminated,
        no_trunc,
        last_values,
        np.zeros_like(rewards),
        0.9,
        0.8,
    )
    # SB3 stores float32.
    np.testing.assert_allclose(adv, buf.advantages, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, buf.returns, rtol=1e-5, atol=1e-5)


def test_clip_grad_norm_by_hand():
    g = np.array([3.0, 4.0])
    scale = a2c.clip_grad_norm(g, 0.5)
    assert scale == pytest.approx(0.5 / (5.0 + 1e-6), rel=1e-15)
    np.testing.assert_allclose(g, np.array([3.0, 4.0]) * scale, rtol=1e-15)
    small = np.array([0.1, -0.2])
    assert a2c.clip_grad_norm(small, 0.5) == 1.0
    np.testing.assert_array_equal(small, [0.1, -0.2])
    assert a2c._grad_norm(np.array([3.0, 4.0])) == 5.0


def test_clip_grad_norm_matches_torch():
    th = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    for max_norm in (0.5, 100.0):
        g = rng.standard_normal(50)
        t = th.zeros(50, dtype=th.float64, requires_grad=True)
        t.grad = th.from_numpy(g.copy())
        th.nn.utils.clip_grad_norm_([t], max_norm)
        a2c.clip_grad_norm(g, max_norm)
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-14)


def _grads(seed, n_params=40, n_steps=6):
    return np.random.default_rng(seed).standard_normal((n_steps, n_params))


def test_rmsprop_step_by_hand():
    grads = _grads(9)
    params = np.linspace(-1, 1, grads.shape[1])
    ref = params.copy()
    sq = np.zeros_like(params)
    ref_sq = np.zeros_like(params)
    delta = np.empty_like(params)
    for g in grads:
        before = params.copy()
        a2c.rmsprop_step(params, g, sq, 7e-4, 0.99, 1e-5, delta)
        ref_sq = 0.99 * ref_sq + 0.01 * g**2
        ref -= 7e-4 * g / (np.sqrt(ref_sq) + 1e-5)
        np.testing.assert_allclose(delta, params - before, rtol=1e-9, atol=1e-18)
    np.testing.assert_allclose(params, ref, rtol=1e-13)
    np.testing.assert_allclose(sq, ref_sq, rtol=1e-13)


def test_bias_corrected_rmsprop_by_hand():
    grads = _grads(11)
    params = np.linspace(-1, 1, grads.shape[1])
    ref = params.copy()
    sq = np.zeros_like(params)
    ref_sq = np.zeros_like(params)
    delta = np.empty_like(params)
    for k, g in enumerate(grads, start=1):
        lr, eps = a2c.rmsprop_bias_correction(7e-4, 1e-5, 0.99, k)
        a2c.rmsprop_step(params, g, sq, lr, 0.99, eps, delta)
        ref_sq = 0.99 * ref_sq + 0.01 * g**2
        ref -= 7e-4 * g / (np.sqrt(ref_sq / (1 - 0.99**k)) + 1e-5)
        if k == 1:  # a steady-size step (lr per coordinate), not 10x one
            np.testing.assert_allclose(np.abs(delta), 7e-4, rtol=1e-3)
    np.testing.assert_allclose(params, ref, rtol=1e-12)


def test_adam_step_by_hand():
    grads = _grads(10)
    params = np.linspace(-1, 1, grads.shape[1])
    ref = params.copy()
    m = np.zeros_like(params)
    v = np.zeros_like(params)
    rm = np.zeros_like(params)
    rv = np.zeros_like(params)
    delta = np.empty_like(params)
    for step, g in enumerate(grads, start=1):
        a2c.adam_step(params, g, m, v, step, 1e-3, 0.9, 0.999, 1e-8, delta)
        rm = 0.9 * rm + 0.1 * g
        rv = 0.999 * rv + 0.001 * g**2
        mhat = rm / (1 - 0.9**step)
        vhat = rv / (1 - 0.999**step)
        ref -= 1e-3 * mhat / (np.sqrt(vhat) + 1e-8)
    np.testing.assert_allclose(params, ref, rtol=1e-12)


def test_rmsprop_and_adam_match_torch_optim():
    th = pytest.importorskip("torch")
    grads = _grads(11)
    x0 = np.linspace(-1, 1, grads.shape[1])
    t_rms = th.tensor(x0, requires_grad=True)
    t_adam = th.tensor(x0, requires_grad=True)
    opt_rms = th.optim.RMSprop([t_rms], lr=7e-4, alpha=0.99, eps=1e-5, weight_decay=0)
    opt_adam = th.optim.Adam([t_adam], lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    p_rms, p_adam = x0.copy(), x0.copy()
    sq = np.zeros_like(x0)
    m = np.zeros_like(x0)
    v = np.zeros_like(x0)
    delta = np.empty_like(x0)
    for step, g in enumerate(grads, start=1):
        for t, opt in ((t_rms, opt_rms), (t_adam, opt_adam)):
            t.grad = th.from_numpy(g.copy())
            opt.step()
        a2c.rmsprop_step(p_rms, g, sq, 7e-4, 0.99, 1e-5, delta)
        a2c.adam_step(p_adam, g, m, v, step, 1e-3, 0.9, 0.999, 1e-8, delta)
        np.testing.assert_allclose(p_rms, t_rms.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(p_adam, t_adam.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        sq, opt_rms.state[t_rms]["square_avg"].numpy(), rtol=1e-12
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_running_mean_std_matches_concatenated_batches(dtype):
    rng = np.random.default_rng(12)
    batches = [
        (rng.standard_normal((n, 4)) * [1, 10, 0.1, 3] + [0, 5, -2, 1e3]).astype(dtype)
        for n in (1, 7, 32, 5)
    ]
    mean = np.zeros(4)
    var = np.ones(4)
    count = 0.0
    for b in batches:
        count = a2c.running_mean_std_update(mean, var, count, b)
    allb = np.concatenate(batches).astype(np.float64)
    assert count == len(allb)
    np.testing.assert_allclose(mean, allb.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(var, allb.var(axis=0), rtol=1e-10)


def test_running_mean_std_merge_of_halves():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((50, 3)) * 2 + 1
    m1, v1 = np.zeros(3), np.ones(3)
    m2, v2 = np.zeros(3), np.ones(3)
    c1 = a2c.running_mean_std_update(m1, v1, 0.0, x[:20])
    c2 = a2c.running_mean_std_update(m2, v2, 0.0, x[20:])
    c = a2c.running_mean_std_merge(m1, v1, c1, m2, v2, c2)
    assert c == 50
    np.testing.assert_allclose(m1, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(v1, x.var(axis=0), rtol=1e-12)


def test_running_mean_std_matches_sb3():
    pytest.importorskip("torch")
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    rng = np.random.default_rng(14)
    rms = RunningMeanStd(shape=(4,))  # epsilon count 1e-4, var 1
    mean, var, count = np.zeros(4), np.ones(4), 1e-4
    for _ in range(5):
        b = rng.standard_normal((8, 4)) * 3 + 2
        rms.update(b)
        count = a2c.running_mean_std_update(mean, var, count, b)
    np.testing.assert_allclose(mean, rms.mean, rtol=1e-12)
    np.testing.assert_allclose(var, rms.var, rtol=1e-12)
    assert count == pytest.approx(rms.count, rel=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize_obs_clips_at_10(dtype):
    rng = np.random.default_rng(15)
    obs = (rng.standard_normal((20, 4)) * [1, 100, 1, 1]).astype(dtype)
    mean = np.array([0.0, 1.0, -1.0, 2.0])
    var = np.array([1.0, 4.0, 0.01, 0.0])
    out = np.empty(obs.shape)
    a2c.normalize_obs(obs, mean, var, 10.0, 1e-8, out)
    ref = np.clip((obs.astype(np.float64) - mean) / np.sqrt(var + 1e-8), -10.0, 10.0)
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    assert np.abs(out).max() == 10.0


def _record_step_numpy(t, obs, rew, term, trunc, next_step_mode, rewards, terminated,
                       truncated, valid, prev_done, ep_ret, ep_len, done):
    """``a2c.record_step`` in NumPy one-liners (the worker's code before the kernel)."""
    if not np.isfinite(rew).all():
        return -1
    if not np.isfinite(obs).all():
        return -2
    rewards[t], terminated[t], truncated[t] = rew, term, trunc
    done[:] = term | trunc
    if next_step_mode:
        valid[t] = ~prev_done
        done &= valid[t]
        prev_done[:] = term | trunc
    ep_ret += np.where(valid[t], rew, 0.0)
    ep_len += valid[t]
    return int(done.sum())


@pytest.mark.parametrize("next_step_mode", [False, True], ids=["same-step", "next-step"])
def test_record_step_matches_numpy_over_a_rollout(next_step_mode):
    rng = np.random.default_rng(16)
    n_steps, n_envs, obs_dim = 5, 6, 3
    states = []
    for _ in range(2):
        states.append({
            "rewards": np.zeros((n_steps, n_envs)),
            "terminated": np.zeros((n_steps, n_envs), np.bool_),
            "truncated": np.zeros((n_steps, n_envs), np.bool_),
            "valid": np.ones((n_steps, n_envs), np.bool_),
            "prev_done": np.zeros(n_envs, np.bool_),
            "ep_ret": np.zeros(n_envs),
            "ep_len": np.zeros(n_envs, np.int64),
            "done": np.zeros(n_envs, np.bool_),
        })
    counts = []
    for t in range(n_steps):
        obs = rng.standard_normal((n_envs, obs_dim))
        rew = rng.standard_normal(n_envs)
        term = rng.random(n_envs) < 0.3
        trunc = rng.random(n_envs) < 0.3
        got = [fn(t, obs, rew, term, trunc, next_step_mode, **st)
               for fn, st in zip((a2c.record_step, _record_step_numpy), states,
                                 strict=True)]
        assert got[0] == got[1]
        counts.append(got[0])
        for key in states[0]:
            np.testing.assert_array_equal(states[0][key], states[1][key], err_msg=key)
    assert sum(counts) > 0  # episodes did end in the rollout
    if next_step_mode:
        assert not states[0]["valid"].all()  # some reset transitions were left out


@pytest.mark.parametrize(("bad", "code"), [("reward", -1), ("obs", -2)])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_record_step_reports_non_finite_values(bad, code, value):
    obs = np.zeros((3, 2))
    rew = np.ones(3)
    if bad == "reward":
        rew[2] = value
    else:
        obs[1, 1] = value
    flags = np.zeros(3, np.bool_)
    rows = np.zeros((1, 3))
    assert a2c.record_step(0, obs, rew, flags, flags, False, rows,
                           np.zeros((1, 3), np.bool_), np.zeros((1, 3), np.bool_),
                           np.ones((1, 3), np.bool_), flags.copy(), np.zeros(3),
                           np.zeros(3, np.int64), flags.copy()) == code
    assert not rows.any()  # nothing booked from a step with a bad value


@pytest.mark.parametrize("module", [nn, a2c], ids=["nn", "a2c"])
def test_kernel_modules_import_only_numpy_numba_math(module):
    # Static check of the module's own imports (docs/design.rst, "Layers"); importing
    # the package would also run dask_dpsgd/__init__.py, which is not the kernels'
    # doing.
    tree = ast.parse(Path(module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    allowed = {"__future__", "math", "numba", "numpy"}
    assert {m for m in imported if not m.startswith("dask_dpsgd._kernels")} <= allowed
