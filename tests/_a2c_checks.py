"""Helpers shared by the A2C kernel tests: the kernel's loss and gradient in one call,
and stable-baselines3's A2C loss and gradient by torch autograd to compare them with."""

from __future__ import annotations

import numpy as np

from dask_dpsgd._kernels import nn

ENT_COEF = 0.01
VF_COEF = 0.5


def kernel_grad(fn, layout, lay, theta, obs, actions, adv, ret, n_chunks=2,
                ent_coef=ENT_COEF, vf_coef=VF_COEF):
    """``(loss, grad, losses)`` of the loss-gradient kernel ``fn``."""
    grad = np.empty_like(theta)
    losses = np.empty(3)
    slabs, work = nn.make_grad_workspace(layout, n_chunks)
    loss = fn(
        theta, lay, obs, actions, adv, ret, ent_coef, vf_coef, grad, losses, slabs,
        work,
    )
    return loss, grad, losses


def assert_grad_matches_sb3(policy, key_slices, layout, lay, theta, obs, t_actions,
                            actions, adv, ret):
    """SB3's ``A2C.train`` loss (verbatim) through ``policy``, backpropagated by torch,
    against :func:`nn.a2c_loss_grad`: the loss, its three logged terms, the gradient
    mapped onto ``theta`` by ``key_slices``."""
    import torch as th

    values, log_prob, entropy = policy.evaluate_actions(th.from_numpy(obs), t_actions)
    values = values.flatten()
    policy_loss = -(th.from_numpy(adv) * log_prob).mean()
    value_loss = th.nn.functional.mse_loss(th.from_numpy(ret), values)
    entropy_loss = -th.mean(entropy)
    loss = policy_loss + ENT_COEF * entropy_loss + VF_COEF * value_loss
    loss.backward()
    ref_grad = np.zeros_like(theta)
    for key, param in policy.named_parameters():
        ref_grad[key_slices[key]] = param.grad.numpy().ravel()

    k_loss, grad, losses = kernel_grad(
        nn.a2c_loss_grad, layout, lay, theta, obs, actions, adv, ret
    )
    np.testing.assert_allclose(k_loss, loss.item(), rtol=1e-12)
    np.testing.assert_allclose(
        losses, [policy_loss.item(), entropy_loss.item(), value_loss.item()], rtol=1e-12
    )
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)
