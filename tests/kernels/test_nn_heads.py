"""Tests of the multi-categorical and gSDE policy heads of ``dask_dpsgd._kernels.nn``.

References: ``tests/_naive_a2c.py`` (plain NumPy) with central finite differences,
and, where importable, torch autograd and stable-baselines3's own distributions
(``MultiCategoricalDistribution``, ``StateDependentNoiseDistribution``) and
``ActorCriticPolicy``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dask_dpsgd._kernels import nn
from tests import _naive_a2c as naive
from tests._a2c_checks import (
    ENT_COEF,
    VF_COEF,
    assert_grad_matches_sb3,
    kernel_grad,
)

OBS_DIM = 3
GROUPS = (3, 2, 4)  # MultiDiscrete([3, 2, 4])
BINARY = (2, 2, 2)  # MultiBinary(3)
BOX_DIM = 2

HEADS = {
    "multidiscrete": {"action_groups": GROUPS},
    "multibinary": {"action_groups": BINARY},
    "sde": {"sde": True},
}


def _layout(head, activation="tanh", hidden=(5, 4), hidden_vf=(6,), box_dim=BOX_DIM):
    kw = HEADS.get(head, {})
    if head == "sde" or head == "box":
        return nn.make_layout(
            OBS_DIM, box_dim, hidden, True, activation=activation,
            hidden_vf=hidden_vf, **kw,
        )
    if head == "discrete":
        return nn.make_layout(
            OBS_DIM, 3, hidden, False, activation=activation, hidden_vf=hidden_vf
        )
    groups = kw["action_groups"]
    return nn.make_layout(
        OBS_DIM, sum(groups), hidden, False, activation=activation,
        hidden_vf=hidden_vf, action_groups=groups,
    )


def _actions(layout, rng, n):
    head = layout[nn.L_CONTINUOUS]
    if head == nn.HEAD_MULTI_CATEGORICAL:
        return np.stack(
            [rng.integers(0, g, n) for g in nn.group_sizes(layout)], axis=1
        ).astype(np.float64)
    if head == nn.HEAD_CATEGORICAL:
        return rng.integers(0, layout[nn.L_N_OUT], (n, 1)).astype(np.float64)
    return rng.standard_normal((n, layout[nn.L_N_OUT]))


def _problem(head, activation="tanh", n=9, seed=0, **kw):
    """A small random network, batch and targets (weights perturbed off the init)."""
    rng = np.random.default_rng(seed)
    layout = _layout(head, activation, **kw)
    theta = nn.init_params(layout, rng, log_std_init=-0.3)
    theta += 0.3 * rng.standard_normal(theta.shape)
    obs = rng.standard_normal((n, OBS_DIM))
    actions = _actions(layout, rng, n)
    adv = rng.standard_normal(n)
    ret = rng.standard_normal(n)
    return layout, np.asarray(layout, np.int64), theta, obs, actions, adv, ret


def _naive_loss(layout, theta0, obs, actions, adv, ret):
    """Reference loss of ``theta`` alone; gSDE's latent in ``sigma`` fixed at theta0.

    SB3 detaches the latent in the gSDE variance (``learn_features=False``), so the
    finite differences must not see ``sigma`` move with the hidden layers.
    """
    fixed = None
    if layout[nn.L_CONTINUOUS] == nn.HEAD_SDE:
        fixed = naive.policy_latent(theta0, layout, obs)

    def loss(theta):
        return naive.a2c_loss(
            theta, layout, obs, actions, adv, ret, ENT_COEF, VF_COEF, fixed
        )[0]

    return loss


# ----------------------------------------------------------------------------- layout


def test_existing_layouts_unchanged():
    # Hard-coded from the build before action_groups/sde existed: checkpoints
    # fingerprint the layout.
    assert nn.make_layout(3, 2, (4,), False) == (
        3, 2, 0, 0, 47, -1, 2, 2, 4, 304, 1, 16, 0, 12, 3, 4, 0, 16, 24, 4, 2, 4,
        26, 38, 3, 4, 6, 42, 46, 4, 1, 10,
    )
    assert nn.make_layout(3, 2, (4,), True, activation="relu", hidden_vf=()) == (
        3, 2, 1, 1, 32, 30, 2, 1, 4, 240, 2, 16, 0, 12, 3, 4, 0, 16, 24, 4, 2, 4,
        26, 29, 3, 1, 6,
    )
    for cont in (False, True):
        assert nn.make_layout(4, 2, (64, 64), cont) == nn.make_layout(
            4, 2, (64, 64), cont, action_groups=None, sde=False
        )
    assert nn.noise_cols(nn.make_layout(4, 2, (8,), False)) == 1
    assert nn.noise_cols(nn.make_layout(4, 3, (8,), True)) == 3


@pytest.mark.parametrize("groups", [GROUPS, BINARY, (5,), (1, 3)])
def test_multi_categorical_layout(groups):
    layout = nn.make_layout(OBS_DIM, sum(groups), (5,), action_groups=groups)
    assert all(type(v) is int for v in layout)
    assert layout[nn.L_CONTINUOUS] == nn.HEAD_MULTI_CATEGORICAL == 2
    assert layout[nn.L_ACTION_COLS] == len(groups) == nn.noise_cols(layout)
    assert layout[nn.L_LOG_STD] == -1
    assert layout[-len(groups):] == groups
    assert nn.group_sizes(layout) == groups
    n_records = layout[nn.L_N_PI] + layout[nn.L_N_VF]
    assert len(layout) == nn.HEADER + nn.REC * n_records + len(groups)
    # Same parameters as a Categorical with sum(groups) logits.
    if sum(groups) >= 2:
        flat = nn.make_layout(OBS_DIM, sum(groups), (5,))
        assert nn.n_params(layout) == nn.n_params(flat)
        assert nn.param_slices(layout) == nn.param_slices(flat)
        # Only the head code, action_cols and the appended sizes differ.
        assert layout[3:10] == flat[3:10]
        assert layout[11 : nn.HEADER + nn.REC * n_records] == flat[11:]
    assert nn.group_sizes(nn.make_layout(OBS_DIM, 3, (5,))) == ()


@pytest.mark.parametrize(("hidden", "latent"), [((5, 4), 4), ((), OBS_DIM)])
def test_sde_layout_and_init(hidden, latent):
    layout = nn.make_layout(OBS_DIM, BOX_DIM, hidden, True, sde=True)
    box = nn.make_layout(OBS_DIM, BOX_DIM, hidden, True)
    assert layout[nn.L_CONTINUOUS] == nn.HEAD_SDE == 3
    assert layout[nn.L_ACTION_COLS] == BOX_DIM
    assert nn.sde_latent_dim(layout) == latent
    assert nn.noise_cols(layout) == latent * BOX_DIM
    assert nn.n_params(layout) == nn.n_params(box) - BOX_DIM + latent * BOX_DIM
    assert layout[nn.L_LOG_STD] == box[nn.L_LOG_STD]
    name, sl, shape = nn.param_slices(layout)[-1]
    assert (name, shape) == ("log_std", (latent, BOX_DIM))
    assert sl == slice(layout[nn.L_LOG_STD], nn.n_params(layout))
    stops = [s.stop for _, s, _ in nn.param_slices(layout)]
    starts = [s.start for _, s, _ in nn.param_slices(layout)]
    assert starts == [0, *stops[:-1]]
    theta = nn.init_params(layout, np.random.default_rng(0), log_std_init=-2.0)
    np.testing.assert_array_equal(theta[sl], -2.0)  # th.ones(latent, dim) * init
    assert nn.group_sizes(layout) == ()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_act_outputs": 8, "action_groups": GROUPS}, r"sum\(action_groups\)=9"),
        ({"n_act_outputs": 2, "continuous": False, "sde": True}, "continuous=True"),
        (
            {"n_act_outputs": 9, "continuous": True, "action_groups": GROUPS},
            "continuous=False",
        ),
        ({"n_act_outputs": 3, "action_groups": (3, 0)}, "positive ints"),
        ({"n_act_outputs": 1, "action_groups": (-1, 2)}, "positive ints"),
        ({"n_act_outputs": 3, "action_groups": ()}, "non-empty"),
        ({"n_act_outputs": 3, "action_groups": (1.5, 1.5)}, "positive ints"),
        ({"n_act_outputs": 2, "action_groups": (True, 1)}, "positive ints"),
    ],
    ids=["sum", "sde-discrete", "groups-box", "zero", "negative", "empty", "float",
         "bool"],
)
def test_make_layout_rejects_bad_heads(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nn.make_layout(OBS_DIM, hidden=(4,), **kwargs)


def test_sample_exploration_is_std_times_normals():
    layout, _, theta, *_ = _problem("sde")
    lat, dim = nn.sde_latent_dim(layout), BOX_DIM
    e = nn.sample_exploration(theta, layout, np.random.default_rng(7), 6)
    assert e.shape == (6, lat * dim) and e.dtype == np.float64
    assert e.flags.c_contiguous
    log_std = theta[nn.param_slices(layout)[-1][1]]
    z = np.random.default_rng(7).standard_normal((6, lat, dim))
    np.testing.assert_array_equal(e, (np.exp(log_std.reshape(lat, dim)) * z).reshape(6, -1))
    big = nn.sample_exploration(theta, layout, np.random.default_rng(8), 20000)
    np.testing.assert_allclose(big.std(axis=0), np.exp(log_std), rtol=0.05)
    with pytest.raises(ValueError, match="gSDE"):
        nn.sample_exploration(theta, _layout("box"), np.random.default_rng(0), 2)


# ------------------------------------------------------------------------- gradients

GRAD_CASES = [(h, a) for h in HEADS for a in ("tanh", "relu")]
GRAD_IDS = [f"{h}-{a}" for h, a in GRAD_CASES]


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize(("head", "activation"), GRAD_CASES, ids=GRAD_IDS)
def test_gradient_matches_finite_differences(head, activation, parallel):
    layout, lay, theta, obs, actions, adv, ret = _problem(head, activation, n=23)
    fn = nn.select_a2c_loss_grad(parallel)
    loss, grad, losses = kernel_grad(fn, layout, lay, theta, obs, actions, adv, ret)
    h0 = naive.policy_latent(theta, layout, obs) if head == "sde" else None
    ref = naive.a2c_loss(
        theta, layout, obs, actions, adv, ret, ENT_COEF, VF_COEF, h0
    )
    np.testing.assert_allclose(loss, ref[0], rtol=1e-12)
    np.testing.assert_allclose(losses, ref[1:], rtol=1e-12, atol=1e-15)
    fd = naive.finite_difference_grad(
        _naive_loss(layout, theta, obs, actions, adv, ret), theta
    )
    # Rounding in the differences scales with the loss: gSDE-relu has a sample whose
    # latent is all zero, so sigma = sqrt(1e-6) and the loss is ~1e4.
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-8 * max(1.0, abs(loss)))
    for name, sl, _ in nn.param_slices(layout):
        assert np.abs(grad[sl]).max() > 1e-6, name


@pytest.mark.parametrize("head", ["sde", "multidiscrete"])
def test_gradient_without_hidden_layers(head):
    # gSDE's latent is then the observation itself.
    layout, lay, theta, obs, actions, adv, ret = _problem(
        head, hidden=(), hidden_vf=(), n=7
    )
    _, grad, _ = kernel_grad(nn.a2c_loss_grad, layout, lay, theta, obs, actions,
                              adv, ret)
    fd = naive.finite_difference_grad(
        _naive_loss(layout, theta, obs, actions, adv, ret), theta
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-8)


def test_sde_latent_is_detached_in_sigma():
    """Finite differences through sigma's latent give another gradient (not vacuous)."""
    layout, lay, theta, obs, actions, adv, ret = _problem("sde", n=11)
    _, grad, _ = kernel_grad(nn.a2c_loss_grad, layout, lay, theta, obs, actions,
                              adv, ret)

    def attached(t):
        return naive.a2c_loss(t, layout, obs, actions, adv, ret, ENT_COEF, VF_COEF)[0]

    fd = naive.finite_difference_grad(attached, theta)
    hidden = nn.param_slices(layout)[0][1]  # pi.0.weight
    assert np.abs(grad[hidden] - fd[hidden]).max() > 1e-4


@pytest.mark.parametrize("head", list(HEADS))
def test_serial_equals_parallel(head):
    layout, lay, theta, obs, actions, adv, ret = _problem(head, "relu", n=37)
    args = (layout, lay, theta, obs, actions, adv, ret)
    for n_chunks in (1, 2, 5, 64):
        ls, gs, xs = kernel_grad(nn.a2c_loss_grad, *args, n_chunks=n_chunks)
        lp, gp, xp = kernel_grad(nn.a2c_loss_grad_parallel, *args, n_chunks=n_chunks)
        assert ls == lp
        np.testing.assert_array_equal(gs, gp)
        np.testing.assert_array_equal(xs, xp)
    _, g1, _ = kernel_grad(nn.a2c_loss_grad, *args, n_chunks=1)
    _, g5, _ = kernel_grad(nn.a2c_loss_grad_parallel, *args, n_chunks=5)
    np.testing.assert_allclose(g5, g1, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("head", ["sde", "multidiscrete"])
def test_undecorated_kernel_runs_as_python(head):
    layout, lay, theta, obs, actions, adv, ret = _problem(head, n=4)
    lj, gj, _ = kernel_grad(nn.a2c_loss_grad, layout, lay, theta, obs, actions, adv,
                             ret)
    lp, gp, _ = kernel_grad(nn._a2c_loss_grad, layout, lay, theta, obs, actions,
                             adv, ret)
    np.testing.assert_allclose(lp, lj, rtol=1e-12)
    np.testing.assert_allclose(gp, gj, rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------- sampling


def test_multi_categorical_sampling_inverse_cdf_and_frequencies():
    layout, lay, theta, _, *_ = _problem("multidiscrete")
    rng = np.random.default_rng(3)
    n = 20000
    obs = np.repeat(rng.standard_normal((1, OBS_DIM)), n, axis=0)
    head = {name: sl for name, sl, _ in nn.param_slices(layout)}
    theta[head["action_net.weight"]] *= 30.0  # far from uniform
    logits = naive.forward(theta, layout, obs[:1])[0][0]
    u = rng.random((n, len(GROUPS)))
    out = np.empty((n, len(GROUPS)))
    values, log_probs = np.empty(n), np.empty(n)
    nn.policy_act_value(theta, lay, obs, False, u, out, values, log_probs)
    off = 0
    for g, n_g in enumerate(GROUPS):
        z = logits[off : off + n_g]
        p = np.exp(z - z.max())
        p /= p.sum()
        expected = np.minimum(np.searchsorted(np.cumsum(p), u[:, g], side="right"),
                              n_g - 1)
        np.testing.assert_array_equal(out[:, g], expected)
        freq = np.bincount(out[:, g].astype(np.int64), minlength=n_g) / n
        np.testing.assert_allclose(freq, p, atol=4 * np.sqrt(0.25 / n))
        off += n_g
    ref_lp, _, ref_v = naive.log_prob_entropy(theta, layout, obs[:50], out[:50])
    np.testing.assert_allclose(log_probs[:50], ref_lp, rtol=1e-12)
    np.testing.assert_allclose(values[:50], ref_v, rtol=1e-12)
    only = np.empty_like(out)
    nn.policy_act(theta, lay, obs, False, u, only)
    np.testing.assert_array_equal(only, out)
    # Deterministic: arg max per group.
    nn.policy_act(theta, lay, obs[:5], True, u[:5], only[:5])
    det = [np.argmax(logits[o : o + g]) for o, g in zip(np.cumsum((0,) + GROUPS[:-1]),
                                                         GROUPS, strict=True)]
    np.testing.assert_array_equal(only[:5], np.tile(det, (5, 1)))


@pytest.mark.parametrize("hidden", [(5, 4), ()], ids=["hidden", "no-hidden"])
def test_sde_action_is_mu_plus_latent_exploration(hidden):
    layout, lay, theta, obs, *_ = _problem("sde", "relu", hidden=hidden, n=21)
    n, lat = len(obs), nn.sde_latent_dim(layout)
    e = nn.sample_exploration(theta, layout, np.random.default_rng(4), n)
    out, values, log_probs = np.empty((n, BOX_DIM)), np.empty(n), np.empty(n)
    nn.policy_act_value(theta, lay, obs, False, e, out, values, log_probs)
    mu, ref_values = naive.forward(theta, layout, obs)
    h = naive.policy_latent(theta, layout, obs)
    noise = np.einsum("nj,njk->nk", h, e.reshape(n, lat, BOX_DIM))
    np.testing.assert_allclose(out, mu + noise, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(values, ref_values, rtol=1e-12)
    ref_lp, _, _ = naive.log_prob_entropy(theta, layout, obs, out)
    np.testing.assert_allclose(log_probs, ref_lp, rtol=1e-12)
    only = np.empty_like(out)
    nn.policy_act(theta, lay, obs, False, e, only)
    np.testing.assert_array_equal(only, out)
    # Deterministic: the mean, bit for bit the stochastic action with E = 0.
    det = np.empty_like(out)
    nn.policy_act(theta, lay, obs, True, e, det)
    np.testing.assert_allclose(det, mu, rtol=1e-12, atol=1e-14)
    nn.policy_act(theta, lay, obs, False, np.zeros_like(e), only)
    np.testing.assert_array_equal(det, only)
    # Exactly mu + h @ E: one nonzero entry of E moves one coordinate by h_j E_jk.
    one = np.zeros_like(e)
    one[:, 1 * BOX_DIM + 1] = 2.0
    nn.policy_act(theta, lay, obs, False, one, only)
    np.testing.assert_array_equal(only[:, 0], det[:, 0])
    np.testing.assert_allclose(only[:, 1] - det[:, 1], 2.0 * h[:, 1], rtol=1e-9,
                               atol=1e-14)


@pytest.mark.parametrize("head", ["sde", "multidiscrete", "discrete", "box"])
def test_policy_act_rejects_short_noise(head):
    layout, lay, theta, obs, *_ = _problem(head, n=4)
    out = np.empty((4, layout[nn.L_ACTION_COLS]))
    short = np.zeros((4, nn.noise_cols(layout) - 1))
    with pytest.raises(ValueError, match="noise"):
        nn.policy_act(theta, lay, obs, False, short, out)
    nn.policy_act(theta, lay, obs, True, short, out)  # ignored when deterministic


# ---------------------------------------------------------------- torch and SB3 parity


def _torch_policy(th, theta_t, layout, obs_t):
    """``(latent, head output)`` of the policy net, from a flat torch ``theta``."""
    act = th.tanh if layout[nn.L_ACTIVATION] == nn.TANH else th.relu
    params = {name: theta_t[sl].reshape(shape)
              for name, sl, shape in nn.param_slices(layout)}
    h = obs_t
    n_hidden = layout[nn.L_N_PI] - 1
    for li in range(n_hidden):
        h = act(h @ params[f"pi.{li}.weight"].T + params[f"pi.{li}.bias"])
    out = h @ params["action_net.weight"].T + params["action_net.bias"]
    return h, out, params


HEAD_CASES = ["box1", "boxN", "sde1", "sdeN", "multidiscrete", "multibinary"]


def _head_case(case):
    if case.startswith("box") or case.startswith("sde"):
        dim = 1 if case.endswith("1") else 3
        return _problem("sde" if case.startswith("sde") else "box", box_dim=dim, n=5)
    return _problem(case, n=5)


@pytest.mark.parametrize("case", HEAD_CASES)
def test_log_prob_entropy_and_grads_match_torch(case):
    """Per sample: log pi, H and their gradients w.r.t. the head and all of theta.

    The kernel's A2C loss of one sample with ``A = 1`` and no other term is ``-log
    pi(a|s)``, with ``ent_coef = 1`` and ``A = 0`` it is ``-H``; its gradient of
    ``action_net.bias`` is the gradient w.r.t. the head output.
    """
    th = pytest.importorskip("torch")
    layout, lay, theta, obs, actions, _, _ = _head_case(case)
    kind = layout[nn.L_CONTINUOUS]
    if kind == nn.HEAD_SDE:
        pytest.importorskip("stable_baselines3")
        from stable_baselines3.common.distributions import (
            StateDependentNoiseDistribution,
        )
    names = {name: sl for name, sl, _ in nn.param_slices(layout)}
    one, zero = np.ones(1), np.zeros(1)
    for i in range(len(obs)):
        theta_t = th.tensor(theta, requires_grad=True)
        h, out, params = _torch_policy(th, theta_t, layout, th.from_numpy(obs[i : i + 1]))
        out.retain_grad()
        a_t = th.from_numpy(actions[i : i + 1])
        if kind == nn.HEAD_GAUSSIAN:
            dist = th.distributions.Normal(out, th.exp(params["log_std"]))
            logp, ent = dist.log_prob(a_t).sum(), dist.entropy().sum()
        elif kind == nn.HEAD_SDE:
            dist = StateDependentNoiseDistribution(layout[nn.L_N_OUT])
            dist.proba_distribution(out, params["log_std"], h)
            logp, ent = dist.log_prob(a_t).sum(), dist.entropy().sum()
        else:
            logp = ent = 0.0
            for g, z in enumerate(th.split(out, list(nn.group_sizes(layout)), dim=1)):
                cat = th.distributions.Categorical(logits=z)
                logp = logp + cat.log_prob(a_t[:, g].long()).sum()
                ent = ent + cat.entropy().sum()
        for value, adv, ent_coef, idx in ((logp, one, 0.0, 0), (ent, zero, 1.0, 1)):
            theta_t.grad = None
            out.grad = None
            value.backward(retain_graph=True)
            _, grad, losses = kernel_grad(
                nn.a2c_loss_grad, layout, lay, theta, obs[i : i + 1],
                actions[i : i + 1], adv, zero, n_chunks=1, ent_coef=ent_coef,
                vf_coef=0.0,
            )
            np.testing.assert_allclose(-losses[idx], value.item(), rtol=1e-12)
            ref = theta_t.grad.numpy()
            np.testing.assert_allclose(-grad, ref, rtol=1e-9, atol=1e-13)
            # out.grad is None when the value does not depend on the head (entropy
            # of a Gaussian).
            d_out = np.zeros(out.shape[1]) if out.grad is None else out.grad.numpy()[0]
            np.testing.assert_allclose(
                -grad[names["action_net.bias"]], d_out, rtol=1e-9, atol=1e-13
            )
            if "log_std" in names:
                assert np.abs(ref[names["log_std"]]).max() > 1e-6


def test_multibinary_as_two_way_categoricals_is_bernoulli():
    """Groups of 2 with logits (z0, z1) are SB3's Bernoulli with logit z1 - z0."""
    th = pytest.importorskip("torch")
    layout, lay, theta, obs, actions, _, _ = _problem("multibinary", n=4)
    names = {name: sl for name, sl, _ in nn.param_slices(layout)}
    logits = naive.forward(theta, layout, obs)[0]
    for i in range(len(obs)):
        z = th.tensor(logits[i].reshape(-1, 2))
        l_t = (z[:, 1] - z[:, 0]).clone().requires_grad_(True)
        bern = th.distributions.Bernoulli(logits=l_t)
        logp = bern.log_prob(th.from_numpy(actions[i])).sum()
        logp.backward()
        _, grad, losses = kernel_grad(
            nn.a2c_loss_grad, layout, lay, theta, obs[i : i + 1], actions[i : i + 1],
            np.ones(1), np.zeros(1), n_chunks=1, ent_coef=0.0, vf_coef=0.0,
        )
        np.testing.assert_allclose(-losses[0], logp.item(), rtol=1e-12)
        dz = -grad[names["action_net.bias"]].reshape(-1, 2)
        np.testing.assert_allclose(dz[:, 1], l_t.grad.numpy(), rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(dz[:, 0], -l_t.grad.numpy(), rtol=1e-9, atol=1e-14)
        ent = bern.entropy().sum().item()
        _, _, losses = kernel_grad(
            nn.a2c_loss_grad, layout, lay, theta, obs[i : i + 1], actions[i : i + 1],
            np.zeros(1), np.zeros(1), n_chunks=1, ent_coef=1.0, vf_coef=0.0,
        )
        np.testing.assert_allclose(-losses[1], ent, rtol=1e-12)


def test_sde_sample_matches_sb3_get_noise():
    th = pytest.importorskip("torch")
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.distributions import StateDependentNoiseDistribution

    layout, lay, theta, obs, *_ = _problem("sde", n=6, box_dim=3)
    n, lat = len(obs), nn.sde_latent_dim(layout)
    e = nn.sample_exploration(theta, layout, np.random.default_rng(9), n)
    out = np.empty((n, 3))
    nn.policy_act(theta, lay, obs, False, e, out)
    with th.no_grad():
        h, mu, params = _torch_policy(th, th.tensor(theta), layout, th.from_numpy(obs))
        dist = StateDependentNoiseDistribution(3)
        dist.exploration_matrices = th.from_numpy(e.reshape(n, lat, 3))
        dist.exploration_mat = dist.exploration_matrices[0]
        dist.proba_distribution(mu, params["log_std"], h)
        np.testing.assert_allclose(out, dist.sample().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(
            out, dist.get_actions(deterministic=False).numpy(), rtol=1e-12, atol=1e-14
        )
    nn.policy_act(theta, lay, obs, True, e, out)
    np.testing.assert_allclose(out, dist.mode().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("head", ["multidiscrete", "sde"])
def test_matches_sb3_policy_autograd(head):
    """Same parameters in SB3's ActorCriticPolicy: values, log-probs, A2C gradient."""
    th = pytest.importorskip("torch")
    pytest.importorskip("stable_baselines3")
    from gymnasium import spaces
    from stable_baselines3.common.policies import ActorCriticPolicy

    layout, lay, theta, obs, actions, adv, ret = _problem(head, "tanh", n=11)
    obs_space = spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float64)
    if head == "sde":
        act_space = spaces.Box(-1.0, 1.0, (BOX_DIM,), np.float64)
    else:
        act_space = spaces.MultiDiscrete(list(GROUPS))
    policy = ActorCriticPolicy(
        obs_space,
        act_space,
        lambda _: 1e-3,
        net_arch={"pi": [5, 4], "vf": [6]},
        activation_fn=th.nn.Tanh,
        use_sde=head == "sde",
    ).double()
    state, key_slices = {}, {}
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
    policy.extract_features = lambda obs, *args, **kwargs: obs  # stay in float64

    t_actions = th.from_numpy(actions)
    if head != "sde":
        t_actions = t_actions.long()
    assert_grad_matches_sb3(policy, key_slices, layout, lay, theta, obs, t_actions,
                            actions, adv, ret)

    noise = np.zeros((len(obs), nn.noise_cols(layout)))
    out_a = np.empty((len(obs), layout[nn.L_ACTION_COLS]))
    out_v, out_lp = np.empty(len(obs)), np.empty(len(obs))
    nn.policy_act_value(theta, lay, obs, True, noise, out_a, out_v, out_lp)
    with th.no_grad():
        det_actions, det_values, det_lp = policy(th.from_numpy(obs), deterministic=True)
    np.testing.assert_allclose(out_a, det_actions.numpy().reshape(out_a.shape),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out_v, det_values.numpy().ravel(), rtol=1e-12)
    np.testing.assert_allclose(out_lp, det_lp.numpy(), rtol=1e-12)
    assert math.isfinite(out_lp.sum())
