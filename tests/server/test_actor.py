"""``ParameterServer``'s reference contract, which lets a local caller skip copies.

A worker in the server's own process calls it by reference on the update path
(``LocalServer.BY_REFERENCE``): it hands its update over, reuses the update's buffers
once the server has replied (the LDA worker's statistics), and owns what the server
replies. That is only safe if the server never writes to an update it was handed,
keeps no reference to an ordinary push after replying, and never replies with an
array it keeps. Checked here for every rule, without a cluster.
"""

from __future__ import annotations

import asyncio
import copy

import numpy as np
import pytest

from dask_dpsgd._server.actor import ParameterServer
from dask_dpsgd._server.state import A2CRule, A2CUpdate, AddRule, SVIRule
from dask_dpsgd.engine._pusher import LocalServer


def _arrays(obj, seen=None):
    """Every ndarray reachable from ``obj`` (attributes, dicts, lists, tuples)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        items = list(obj)
    elif hasattr(obj, "__dict__"):
        items = list(vars(obj).values())
    else:
        return []
    return [a for item in items for a in _arrays(item, seen)]


def _svi():
    lam = np.random.default_rng(0).gamma(100.0, 0.01, (30, 4))
    kwargs = dict(lam=lam, eta=0.25, learning_offset=10.0, learning_decay=0.7,
                  total_samples=500.0)
    rng = np.random.default_rng(1)
    words = np.array([1, 4, 7, 20])

    def delta():
        return (words.copy(), rng.gamma(1.0, 1.0, (4, 4)), 5)

    return ParameterServer(SVIRule(**kwargs)), delta, words


def _a2c():
    kwargs = dict(theta=np.zeros(6), obs_dim=3, total_timesteps=10_000)
    rng = np.random.default_rng(2)

    def delta():
        return A2CUpdate(rng.normal(size=6), 40, np.array([[40.0, 12.0, 12.0]]),
                         (rng.normal(size=3), rng.gamma(1.0, 1.0, 3), 40.0))

    return ParameterServer(A2CRule(**kwargs)), delta, None


def _add():
    rng = np.random.default_rng(3)
    return (ParameterServer(AddRule(np.zeros(5))),
            lambda: rng.normal(size=5), None)


@pytest.mark.parametrize("make", [_svi, _a2c, _add], ids=["svi", "a2c", "add"])
def test_update_path_neither_writes_what_it_is_handed_nor_replies_with_its_own(make):
    server, delta, request = make()

    handed = []

    async def calls():
        replies = []
        for version in range(3):
            d = delta()
            before = copy.deepcopy(d)
            replies.append(await server.push_pull(d, version, 0, request))
            # The server did not write to the update it was handed.
            for got, sent in zip(_arrays(d), _arrays(before), strict=True):
                np.testing.assert_array_equal(got, sent)
            handed.extend(_arrays(d))
        d = delta()
        replies.append(await server.push(d, 3, 0))
        handed.extend(_arrays(d))
        replies.append(await server.push_part(delta(), 4, 0, (0, 1)))
        replies.append(await server.pull(request))
        replies.append(await server.pull_after(5, request))
        return replies

    replies = asyncio.run(calls())
    assert all(r[0] for r in replies[:5]), "every push was applied"
    held = _arrays(server)
    assert held, "the server's arrays were found"
    for reply in replies:
        for a in _arrays(reply):
            assert not any(np.shares_memory(a, h) for h in held)
    # After its reply, an ordinary push is not referenced: the caller may reuse it.
    assert handed
    for a in handed:
        assert not any(np.shares_memory(a, h) for h in held)


def test_by_reference_names_are_server_methods():
    # A misspelt name would silently fall back to copying (or a method renamed
    # would silently start being passed by reference without this contract).
    for name in LocalServer.BY_REFERENCE:
        assert asyncio.iscoroutinefunction(getattr(ParameterServer, name)), name
