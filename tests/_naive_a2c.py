"""Slow plain-NumPy reference implementations of the HSA2C kernels.

Written for clarity, with batched matrix products and SB3's own formulations (not the
kernels' per-sample loops), so a shared mistake is unlikely. The layout is parsed from
its documented integer format directly, not through ``dask_dpsgd._kernels.nn``.
"""

from __future__ import annotations

import math

import numpy as np

HEADER = 12
REC = 5


def unpack(theta, layout):
    """Split ``theta`` into per-layer ``(W, b)`` lists, ``log_std`` and flags.

    Returns
    -------
    pi_layers, vf_layers : list of (ndarray (n_out, n_in), ndarray (n_out,))
    log_std : ndarray (n_act_outputs,), ndarray (latent_dim, n_act_outputs) (gSDE) or
        None (categorical heads)
    activation : str
    """
    lay = [int(v) for v in layout]
    n_pi, n_vf = lay[6], lay[7]
    layers = []
    for li in range(n_pi + n_vf):
        w_off, b_off, n_in, n_out, _ = lay[HEADER + REC * li : HEADER + REC * (li + 1)]
        layers.append(
            (
                theta[w_off : w_off + n_out * n_in].reshape(n_out, n_in),
                theta[b_off : b_off + n_out],
            )
        )
    log_std = None
    if lay[2] == 1:
        log_std = theta[lay[5] : lay[5] + lay[1]]
    elif lay[2] == 3:
        latent_dim = layers[n_pi - 1][0].shape[1]  # input width of action_net
        log_std = theta[lay[5] : lay[5] + latent_dim * lay[1]].reshape(
            latent_dim, lay[1]
        )
    activation = {0: "tanh", 1: "relu"}[lay[3]]
    return layers[:n_pi], layers[n_pi:], log_std, activation


def group_sizes(layout):
    """Group sizes of a multi-categorical layout: the ints after the layer records."""
    lay = [int(v) for v in layout]
    return lay[HEADER + REC * (lay[6] + lay[7]) :]


def mlp(layers, x, activation):
    """``Linear o act o ... o act o Linear`` on a batch ``x`` of shape (n, n_in)."""
    return mlp_with_latent(layers, x, activation)[1]


def mlp_with_latent(layers, x, activation):
    """``(h, out)``: the last layer's input ``h`` (``x`` if one layer) and the output."""
    act = np.tanh if activation == "tanh" else (lambda z: np.maximum(z, 0.0))
    h = x
    for li, (W, b) in enumerate(layers):
        if li == len(layers) - 1:
            return h, h @ W.T + b
        h = act(h @ W.T + b)
    raise ValueError("no layers")


def forward(theta, layout, obs):
    """Policy head output (logits or Gaussian mean) and ``V(s)`` for a batch."""
    pi_layers, vf_layers, _, activation = unpack(theta, layout)
    return mlp(pi_layers, obs, activation), mlp(vf_layers, obs, activation)[:, 0]


def policy_latent(theta, layout, obs):
    """gSDE latent ``h(s)``: the policy net's last hidden activations (or ``obs``)."""
    pi_layers, _, _, activation = unpack(theta, layout)
    return mlp_with_latent(pi_layers, obs, activation)[0]


def _categorical(logits, a):
    """Log-prob of integer actions ``a`` and entropy, rows of ``logits``."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp_all = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    logp = logp_all[np.arange(len(a)), a]
    ent = -(np.exp(logp_all) * logp_all).sum(axis=1)
    return logp, ent


def log_prob_entropy(theta, layout, obs, actions, sde_latent=None):
    """``log pi(a|s)``, ``H(pi(.|s))`` and ``V(s)`` (SB3 ``evaluate_actions``).

    ``sde_latent``: gSDE only, the latent ``h`` to use in ``sigma`` instead of the one
    computed from ``theta`` (pass the latent at fixed parameters to reproduce SB3's
    ``latent_sde.detach()`` under finite differences).
    """
    pi_out, values = forward(theta, layout, obs)
    _, _, log_std, _ = unpack(theta, layout)
    head = int(layout[2])
    if head == 0:
        logp, ent = _categorical(pi_out, actions[:, 0].astype(np.int64))
    elif head == 2:
        # SB3 MultiCategoricalDistribution: independent Categoricals, summed.
        logp = np.zeros(len(obs))
        ent = np.zeros(len(obs))
        off = 0
        for g, n_g in enumerate(group_sizes(layout)):
            lp, en = _categorical(
                pi_out[:, off : off + n_g], actions[:, g].astype(np.int64)
            )
            logp += lp
            ent += en
            off += n_g
    elif head == 1:
        std = np.exp(log_std)
        logp = (
            -((actions - pi_out) ** 2) / (2 * std**2)
            - log_std
            - 0.5 * math.log(2 * math.pi)
        ).sum(axis=1)
        ent = np.full(len(obs), (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum())
    else:
        # SB3 StateDependentNoiseDistribution.proba_distribution (full_std,
        # learn_features=False): variance = latent**2 @ std**2, sigma = sqrt(. + eps).
        h = policy_latent(theta, layout, obs) if sde_latent is None else sde_latent
        sigma = np.sqrt((h**2) @ np.exp(log_std) ** 2 + 1e-6)
        logp = (
            -((actions - pi_out) ** 2) / (2 * sigma**2)
            - np.log(sigma)
            - 0.5 * math.log(2 * math.pi)
        ).sum(axis=1)
        ent = (0.5 + 0.5 * math.log(2 * math.pi) + np.log(sigma)).sum(axis=1)
    return logp, ent, values


def a2c_loss(
    theta, layout, obs, actions, advantages, returns, ent_coef, vf_coef,
    sde_latent=None,
):
    """SB3 ``A2C.train`` loss: ``(loss, policy_loss, entropy_loss, value_loss)``."""
    logp, ent, values = log_prob_entropy(theta, layout, obs, actions, sde_latent)
    policy_loss = -(advantages * logp).mean()
    value_loss = ((returns - values) ** 2).mean()
    entropy_loss = -ent.mean()
    loss = policy_loss + ent_coef * entropy_loss + vf_coef * value_loss
    return loss, policy_loss, entropy_loss, value_loss


def finite_difference_grad(f, theta, eps=1e-6):
    """Central differences ``(f(theta + eps e_j) - f(theta - eps e_j)) / (2 eps)``."""
    g = np.empty_like(theta)
    t = theta.copy()
    for j in range(len(theta)):
        t[j] = theta[j] + eps
        fp = f(t)
        t[j] = theta[j] - eps
        fm = f(t)
        t[j] = theta[j]
        g[j] = (fp - fm) / (2 * eps)
    return g


def returns_advantages_sb3(
    rewards,
    values,
    terminated,
    truncated,
    last_values,
    truncation_values,
    gamma,
    gae_lambda,
):
    """SB3's formulation: bootstrap folded into the reward, then ``RolloutBuffer`` GAE.

    ``OnPolicyAlgorithm.collect_rollouts`` adds ``gamma * V(terminal_observation)`` to
    the reward of a step that was truncated and not terminated (SB3 issue #633), then
    treats every done as terminal; ``compute_returns_and_advantage`` is copied from
    ``stable_baselines3/common/buffers.py`` with ``episode_starts[t + 1] = dones[t]``.
    """
    n_steps = rewards.shape[0]
    rewards = rewards.copy()
    boot = truncated & ~terminated
    rewards[boot] += gamma * truncation_values[boot]
    dones = (terminated | truncated).astype(np.float64)
    advantages = np.zeros_like(rewards)
    last_gae_lam = 0.0
    for step in reversed(range(n_steps)):
        if step == n_steps - 1:
            next_non_terminal = 1.0 - dones[step]
            next_values = last_values
        else:
            next_non_terminal = 1.0 - dones[step]  # = 1 - episode_starts[step + 1]
            next_values = values[step + 1]
        delta = rewards[step] + gamma * next_values * next_non_terminal - values[step]
        last_gae_lam = delta + gamma * gae_lambda * next_non_terminal * last_gae_lam
        advantages[step] = last_gae_lam
    return advantages, advantages + values


def nstep_returns(
    rewards, terminated, truncated, last_values, truncation_values, gamma
):
    """Explicit n-step returns (the ``gae_lambda = 1`` case), one sum per ``(t, env)``.

    ``R_t = sum_{k=t}^{e-1} gamma**(k-t) r_k + gamma**(e-t) * B`` where ``e - 1`` is the
    first step at or after ``t`` that ends the episode (or the last step), and ``B`` is
    0 after a termination, ``V(final_observation)`` after a truncation and
    ``last_values`` when the rollout ends mid-episode.
    """
    n_steps, n_envs = rewards.shape
    out = np.zeros_like(rewards)
    for env in range(n_envs):
        for t in range(n_steps):
            total = 0.0
            disc = 1.0
            boot = last_values[env]
            for k in range(t, n_steps):
                total += disc * rewards[k, env]
                disc *= gamma
                if terminated[k, env]:
                    boot = 0.0
                    break
                if truncated[k, env]:
                    boot = truncation_values[k, env]
                    break
            out[t, env] = total + disc * boot
    return out
