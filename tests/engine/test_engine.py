"""Orchestration on a real LocalCluster: thread budget, pusher, parameter-server actor."""

from __future__ import annotations

import os
import subprocess
import sys

import joblib
import numpy as np
import pytest

from dask_dpsgd._server.actor import ParameterServer
from dask_dpsgd._server.state import AddRule
from dask_dpsgd._utils._validation import effective_mode
from dask_dpsgd.decomposition._svi import WarmPart, warmup_schedule
from dask_dpsgd.engine._cluster import (
    _budget,
    default_layout,
    machine_cores,
    mode_layout,
    resolve_cluster,
)
from dask_dpsgd.engine._pusher import LocalServer, Pusher, reach


@pytest.mark.parametrize(
    ("args", "expected"),
    [((None, None, 2), (2, 1)), ((None, None, 4), (2, 2)), ((None, None, 8), (4, 2)),
     ((None, None, 16), (8, 2)), ((None, None, 64), (16, 4)), ((None, None, 3), (3, 1)),
     ((2, None, 2), (2, 1)), ((None, 2, 2), (1, 2)), ((3, 1, 2), (3, 1)),
     ((None, None, 1), (1, 1))],
)
def test_default_layout(args, expected):
    assert default_layout(*args) == expected


@pytest.mark.parametrize(
    ("mode", "given", "expected"),
    [("auto", (None, None), (None, None)), ("auto", (3, 2), (3, 2)),
     ("serial", (None, None), (1, 1)), ("serial", (1, 1), (1, 1)),
     ("hogwild", (None, None), (1, None)), ("hogwild", (None, 4), (1, 4)),
     ("parameter-server", (None, None), (None, 1)), ("parameter-server", (3, None), (3, 1)),
     ("dpsgd", (None, None), (None, None)), ("dpsgd", (2, 2), (2, 2))],
)
def test_mode_layout(mode, given, expected):
    assert mode_layout(mode, *given) == expected


@pytest.mark.parametrize(
    ("mode", "given", "match"),
    [("serial", (2, None), "runs 1 worker, but n_workers=2"),
     ("serial", (None, 2), "runs 1 thread per worker, but threads_per_worker=2"),
     ("hogwild", (2, None), "n_workers=2"),
     ("hogwild", (None, 1), "threads_per_worker=1 was given; use parallelism='parameter"),
     ("parameter-server", (1, None), "n_workers=1 was given; use parallelism='hogwild'"),
     ("parameter-server", (None, 2), "threads_per_worker=2"),
     ("dpsgd", (1, 2), "needs more than one worker, but n_workers=1"),
     ("dpsgd", (2, 1), "needs more than one thread per worker, but threads_per_worker=1"),
     ("fast", (None, None), "parallelism='fast' is not one of")],
)
def test_mode_layout_refuses_contradictions(mode, given, match):
    with pytest.raises(ValueError, match=match):
        mode_layout(mode, *given)


@pytest.mark.parametrize(
    ("threads", "mode"),
    [((1,), "serial"), ((2,), "hogwild"), ((1, 1, 1), "parameter-server"),
     ((2, 1), "dpsgd"), ((2, 2), "dpsgd")],
)
def test_effective_mode(threads, mode):
    assert effective_mode(threads) == mode


def test_resolve_applies_the_mode_to_the_client(client):
    """Each mode on the 2-worker x 2-thread test cluster; impossible ones are refused."""
    layouts = {}
    for mode in ("serial", "hogwild", "parameter-server", "auto"):
        with resolve_cluster(None, None, parallelism=mode) as handle:
            layouts[mode] = [s.threads for s in handle.slots]
    assert layouts == {"serial": [1], "hogwild": [2], "parameter-server": [1, 1],
                       "auto": [2, 2]}
    with resolve_cluster(None, None, parallelism="dpsgd") as handle:
        assert effective_mode(handle.threads) == "dpsgd"
    # n_jobs=1 (thread_cap) leaves one thread per worker: not the lock-free level.
    with pytest.raises(ValueError, match="'hogwild' cannot run here.*'serial'"), \
            resolve_cluster(None, None, parallelism="hogwild", thread_cap=1):
        pass


def _probe(host, cores, max_threads, env=None):
    return {"host": host, "cores": cores, "numba_max_threads": max_threads,
            "numba_env": env, "pid": 0}


def test_budget_shares_a_hosts_cores_and_respects_numba_env():
    probes = {"a": _probe("h1", 4, 4), "b": _probe("h1", 4, 4), "c": _probe("h2", 8, 3, "3"),
              # env says 1 but numba's pool was sized before the env applied
              "d": _probe("h3", 2, 2, "1")}
    slots = _budget(probes, ["a", "b", "c", "d"], None)
    assert [s.threads for s in slots] == [2, 2, 3, 1]
    with pytest.raises(ValueError, match="at most 4 numba threads"):
        _budget(probes, ["a"], 5)


def test_resolve_uses_default_client(client):
    with resolve_cluster(None, None) as handle:
        assert handle.client is client
        assert not handle.owned
        assert len(handle.slots) == 2
        # 2 workers on one 2-core host with numba pools of 2 (env set by the fixture).
        assert [s.threads for s in handle.slots] == [2, 2]
    with resolve_cluster(1, None) as handle:
        assert len(handle.slots) == 1
    with pytest.raises(ValueError, match="only 2 worker"), resolve_cluster(3, None):
        pass


def _push_many(server, worker, n, lag, local):
    """Push n deltas through a Pusher; return sent, applied and reply versions."""
    if local:
        server = reach(server)
    pusher = Pusher(server, worker, lag)
    replies = []
    version = server.pull().result()[0]
    for i in range(n):
        reply = pusher.send(np.full(4, float(i)), version, request="all")
        if reply is not None:
            replies.append(reply)
            version = reply[1]
    last = pusher.flush()
    if last is not None:
        replies.append(last)
    return pusher.n_sent, pusher.n_applied, [r[1] for r in replies]


def _add_server(client, address):
    """An "add" parameter server (4 zeros) pinned to the worker at ``address``."""
    return client.submit(ParameterServer, AddRule(np.zeros(4)), actor=True,
                         workers=[address], pure=False).result()


@pytest.mark.parametrize("local", [False, True], ids=["proxies", "reach"])
@pytest.mark.parametrize("lag", [0, 1])
def test_pusher_applies_every_push_in_order(client, lag, local):
    # With reach(), the worker holding the actor calls it directly while the other
    # goes through the network: both streams still apply once each, in order.
    workers = sorted(client.scheduler_info()["workers"])
    server = _add_server(client, workers[0])
    futs = [client.submit(_push_many, server, w, 50, lag, local, workers=[a],
                          pure=False)
            for w, a in enumerate(workers)]
    results = client.gather(futs)
    stats = server.stats().result()
    assert stats.n_received == stats.n_applied == 100
    assert sum(r[0] for r in results) == 100
    for sent, applied, versions in results:
        assert sent == applied == 50
        # Replies from one worker come back in send order: versions strictly increase.
        assert all(b > a for a, b in zip(versions, versions[1:], strict=False))
    # sum of 0..49 from each of two workers
    _, theta = server.pull().result()
    np.testing.assert_allclose(theta, 2 * sum(range(50)))


def _reach_kind(server):
    return type(reach(server)).__name__


def test_reach_calls_directly_only_in_the_actors_process(client):
    workers = sorted(client.scheduler_info()["workers"])
    server = _add_server(client, workers[1])
    kinds = [client.submit(_reach_kind, server, workers=[a], pure=False).result()
             for a in workers]
    assert kinds == ["Actor", "LocalServer"]
    # On the driver (not a worker) nothing changes.
    assert reach(server) is server


def _mutate_after_the_call(server):
    """Change the array a direct call returned; report what the server holds."""
    local = reach(server)
    assert isinstance(local, LocalServer)
    version, theta = local.pull().result()
    theta += 100.0  # the reply is the caller's own array
    reply = Pusher(local, 0, 1).send(np.ones(4), version)  # handed over: not touched
    Pusher(local, 0, 0).flush()
    return reply, local.pull().result()[1]


def test_direct_calls_share_no_array_with_the_server(client):
    workers = sorted(client.scheduler_info()["workers"])
    server = _add_server(client, workers[0])
    reply, theta = client.submit(_mutate_after_the_call, server, workers=[workers[0]],
                                 pure=False).result()
    assert reply is None  # lag 1: the first send returns no reply yet
    # The server's state advanced by exactly the delta, and the caller's += on the
    # pulled array did not reach it (tests/server/test_actor.py checks every rule).
    np.testing.assert_array_equal(theta, np.ones(4))
    np.testing.assert_array_equal(server.pull().result()[1], np.ones(4))


def _push_bad(server, local):
    Pusher(reach(server) if local else server, 0, 0).send(np.ones(4), 10**6)


@pytest.mark.parametrize("local", [False, True], ids=["proxy", "reach"])
def test_server_error_surfaces_in_worker_task(client, local):
    workers = sorted(client.scheduler_info()["workers"])
    server = _add_server(client, workers[0])
    with pytest.raises(ValueError, match="base_version=1000000"):
        client.submit(_push_bad, server, local, workers=[workers[0]],
                      pure=False).result()


def test_warmup_schedule_one_worker_is_its_first_minibatches():
    sched = warmup_schedule([10], 4, 2)
    assert sched == [(WarmPart(0, (0, 4), 0, 0, 1), WarmPart(1, (4, 8), 1, 1, 1))]
    # Longer than the pass: every minibatch, the short last one included.
    assert [p.rows for p in warmup_schedule([10], 4, 99)[0]] == [(0, 4), (4, 8), (8, 10)]
    assert warmup_schedule([10], 4, 0) == [()]


def test_warmup_schedule_splits_each_update_over_the_workers():
    # 3 workers with 14, 12, 12 rows (minibatches of 4; the first worker's last has 2).
    sched = warmup_schedule([14, 12, 12], 4, 7)
    # ceil(7 / 3) = 3 minibatches per worker, each cut in 3 shares: 9 updates.
    assert [len(s) for s in sched] == [9, 9, 9]
    by_slot: dict[int, list[tuple[int, WarmPart]]] = {}
    for w, shares in enumerate(sched):
        assert [p.slot for p in shares] == sorted(p.slot for p in shares)
        for p in shares:
            by_slot.setdefault(p.slot, []).append((w, p))
    assert sorted(by_slot) == list(range(9))
    received = 0
    for g in range(9):
        shares = by_slot[g]
        # Every worker takes part, with a third of the same minibatch of its shard.
        assert sorted(w for w, _ in shares) == [0, 1, 2]
        assert {p.batch for _, p in shares} == {g // 3}
        assert all(p.n_parts == 3 and p.after == received for _, p in shares)
        # A minibatch of 4 rows is cut 1 + 1 + 2: update j has share j of each
        # worker's minibatch (about a minibatch's worth; 3 + 3 + 6 rows here).
        assert sum(p.rows[1] - p.rows[0] for _, p in shares) == [3, 3, 6][g % 3]
        received += len(shares)
    # The shares of a worker cover its minibatches exactly, in order.
    assert [p.rows for p in sched[0][:3]] == [(0, 1), (1, 2), (2, 4)]


def test_warmup_schedule_short_shards_give_fewer_shares():
    # The second worker has no rows: the first one's minibatches are not cut, each
    # is one update, as with one worker.
    sched = warmup_schedule([5, 0], 4, 3)
    assert sched[1] == ()
    assert [(p.batch, p.rows, p.slot, p.n_parts, p.after) for p in sched[0]] == [
        (0, (0, 4), 0, 1, 0), (1, (4, 5), 1, 1, 1)]
    # Both have a second minibatch, the second worker's of 1 row: too small to cut
    # in 2, so those two minibatches are updates 2 and 3, one worker's each.
    sched = warmup_schedule([9, 5], 4, 4)
    assert [(p.batch, p.rows, p.slot, p.n_parts, p.after) for p in sched[0]] == [
        (0, (0, 2), 0, 2, 0), (0, (2, 4), 1, 2, 2), (1, (4, 8), 2, 1, 4)]
    assert [(p.batch, p.rows, p.slot, p.n_parts, p.after) for p in sched[1]] == [
        (0, (0, 2), 0, 2, 0), (0, (2, 4), 1, 2, 2), (1, (4, 5), 3, 1, 5)]


def _span_names(dask_scheduler):
    return sorted({"/".join(s.name) for s in dask_scheduler.extensions["spans"].spans.values()})


def test_fits_show_up_as_named_spans_and_task_prefixes(client):
    from dask_dpsgd import DPSVILatentDirichletAllocation, HSA2CAgent
    from dask_dpsgd.datasets import load_nips

    DPSVILatentDirichletAllocation(n_components=3, max_iter=1, random_state=0).fit(
        load_nips().data[:40])
    HSA2CAgent("CartPole-v1", total_timesteps=500, random_state=0).fit()
    names = client.run_on_scheduler(_span_names)
    assert "dpsvi-fit" in names and "hsa2c-fit" in names
    prefixes = client.run_on_scheduler(
        lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert any(p.startswith("dpsvi-pass") for p in prefixes)
    assert any(p.startswith("hsa2c-segment") for p in prefixes)


def test_machine_cores_honours_the_cpu_limits_joblib_reads():
    """The embedded cluster is sized by ``joblib.cpu_count``: CPU affinity, a container's
    cgroup quota and ``LOKY_MAX_CPU_COUNT`` all cap it (checked in fresh interpreters,
    where the variable is read)."""
    code = ("from dask_dpsgd.engine._cluster import machine_cores, "
            "default_layout; c = machine_cores(); print(c, *default_layout(None, None, c))")
    env = {**os.environ, "LOKY_MAX_CPU_COUNT": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["1", "1", "1"]
    assert machine_cores() == joblib.cpu_count(only_physical_cores=False) >= 1
