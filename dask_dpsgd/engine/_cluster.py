"""Where a fit runs: client resolution, the embedded cluster and the thread budget.

One way to get a cluster (docs/design.rst, "Client resolution"): the current default
client if there is one
(a ``with Client(...)`` block, a dask-jobqueue ``SLURMCluster`` client, ...), else an
embedded ``LocalCluster`` on 127.0.0.1 sized from this machine's cores, started by the
first fit that needs it and reused by the process's later fits (closed at exit or by
:func:`close_embedded_cluster`).

Thread budget (docs/design.rst, "Thread budget"): Dask threads x numba threads must not
exceed a worker's
cores. Our tasks run one per worker; each sets ``numba.set_num_threads`` (thread-local)
to that worker's budget.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import distributed
import joblib

from dask_dpsgd._utils._validation import PARALLELISM, effective_mode
from dask_dpsgd.engine._live import metrics_page_url

logger = logging.getLogger(__name__)

# Upper bound on cores per worker when the embedded cluster is sized automatically. The
# paper's bound cores <= T^(1/4) is comfortably met by 4 for any run of more than 256
# updates.
AUTO_CORES_PER_WORKER = 4


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """One Dask worker used by a fit and the numba threads its tasks may use."""

    address: str
    threads: int


@dataclass(frozen=True, slots=True)
class ClusterHandle:
    """The client and workers of one fit.

    Attributes
    ----------
    client : distributed.Client
    owned : bool
        True on the embedded cluster (started by a fit, shared by this process's later
        fits; :func:`embedded_client`).
    slots : tuple of WorkerSlot
        Workers used, in a fixed order (worker 0 holds the parameter server).
    dashboard_link : str or None
    lost_at_start : tuple of str
        Workers chosen for the fit that left the cluster while it was sized (the fit
        reports each as a recovery that discarded nothing).
    """

    client: distributed.Client
    owned: bool
    slots: tuple[WorkerSlot, ...]
    dashboard_link: str | None
    lost_at_start: tuple[str, ...] = ()

    @property
    def threads(self) -> tuple[int, ...]:
        """Numba threads of each worker, in the order of ``slots``."""
        return tuple(s.threads for s in self.slots)


def machine_cores() -> int:
    """Cores this process may use: its CPU affinity (as SLURM sets it) and, inside a
    container, the cgroup CPU quota (``docker --cpus``, Kubernetes limits), which the
    affinity mask does not show; ``joblib.cpu_count`` reads both (and honours
    ``LOKY_MAX_CPU_COUNT``)."""
    return max(1, joblib.cpu_count(only_physical_cores=False))


def _inside_worker() -> bool:
    """Whether this code runs in a Dask task (docs/design.rst, "Client resolution")."""
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


def current_workers(client: Any) -> list[str]:
    """Addresses of the cluster's workers, asked of the scheduler now.

    Not ``client.scheduler_info()``: it returns the client's shared cached identity,
    which a periodic refresh overwrites with a totals-only copy whose ``workers`` is
    empty; read at the wrong moment, every worker looks gone (seen in CI).
    """
    return sorted(client.sync(client.scheduler.identity, n_workers=-1)["workers"])


def _worker_probe(dask_worker: distributed.Worker) -> dict[str, object]:
    """Facts a worker reports about its own cores and numba (``client.run`` on it)."""
    import numba

    from dask_dpsgd._kernels import sync_numba_config

    sync_numba_config()

    return {
        "host": dask_worker.ip,
        "pid": os.getpid(),
        "cores": machine_cores(),
        "numba_max_threads": int(numba.config.NUMBA_NUM_THREADS),
        "numba_env": os.environ.get("NUMBA_NUM_THREADS"),
    }


def _auto_threads(cores: int) -> int:
    """Threads per worker for ``cores`` cores: the divisor of ``cores`` nearest ``cores**(1/3)``.

    The paper's bounds (cores <= T^(1/4), workers <= T^(1/2)) let workers grow as the
    square of the cores per worker; ``P = C^(1/3)``, ``M = C / P`` keeps ``P^2 ~ M``.
    2 cores: 2 workers x 1; 4: 2 x 2; 8: 4 x 2; 16: 8 x 2; 64: 16 x 4.
    """
    target = cores ** (1.0 / 3.0)
    divisors = [d for d in range(1, min(cores, AUTO_CORES_PER_WORKER) + 1)
                if cores % d == 0]
    return min(divisors, key=lambda d: (abs(d - target), d))


def default_layout(n_workers: int | None, threads_per_worker: int | None,
                   cores: int) -> tuple[int, int]:
    """Workers and threads for an embedded cluster on a machine with ``cores`` cores.

    Parameters
    ----------
    n_workers, threads_per_worker : int or None
        The user's choice; ``None`` is filled in so that their product is ``cores``
        (both ``None``: see :func:`_auto_threads`).
    cores : int

    Returns
    -------
    (n_workers, threads_per_worker)
    """
    if threads_per_worker is None:
        if n_workers is None:
            threads_per_worker = _auto_threads(cores)
        else:
            return n_workers, max(1, cores // n_workers)
    if n_workers is None:
        n_workers = max(1, cores // threads_per_worker)
    return n_workers, threads_per_worker


def mode_layout(parallelism: str, n_workers: int | None,
                threads_per_worker: int | None) -> tuple[int | None, int | None]:
    """Apply a ``parallelism`` mode to the user's ``n_workers`` / ``threads_per_worker``.

    Parameters
    ----------
    parallelism : {"auto", "serial", "hogwild", "parameter-server", "dpsgd"}
        ``"serial"``: 1 worker x 1 core. ``"hogwild"``: 1 worker x all its cores (or
        ``threads_per_worker``). ``"parameter-server"``: all workers (or ``n_workers``)
        x 1 core. ``"dpsgd"``: several workers x several cores each. ``"auto"``: the
        user's ``n_workers`` / ``threads_per_worker`` as given, the rest sized to the
        cluster (DPSGD where the cluster allows it).
    n_workers, threads_per_worker : int or None
        The user's explicit choices; a choice the mode contradicts is an error.

    Returns
    -------
    (n_workers, threads_per_worker)
        Either may be ``None`` (sized from the cluster by :func:`resolve_cluster`).
    """
    if parallelism not in PARALLELISM:
        raise ValueError(f"parallelism={parallelism!r} is not one of {PARALLELISM}")

    # What each parameter counts, singular and plural, for the messages.
    nouns = {"n_workers": ("worker", "workers"),
             "threads_per_worker": ("thread per worker", "threads per worker")}

    def fixed(name: str, given: int | None, value: int) -> int:
        if given is not None and given != value:
            noun = nouns[name][0 if value == 1 else 1]
            raise ValueError(
                f"parallelism={parallelism!r} runs {value} {noun}, but {name}={given} "
                f"was given; drop {name} or choose another parallelism (one of "
                f"{PARALLELISM})")
        return value

    def several(name: str, given: int | None) -> int | None:
        if given == 1:
            raise ValueError(
                f"parallelism={parallelism!r} needs more than one {nouns[name][0]}, but "
                f"{name}=1 was given; use parallelism="
                f"{'hogwild' if name == 'n_workers' else 'parameter-server'!r} for that")
        return given

    if parallelism == "serial":
        return fixed("n_workers", n_workers, 1), fixed("threads_per_worker",
                                                       threads_per_worker, 1)
    if parallelism == "hogwild":
        return (fixed("n_workers", n_workers, 1),
                several("threads_per_worker", threads_per_worker))
    if parallelism == "parameter-server":
        return (several("n_workers", n_workers),
                fixed("threads_per_worker", threads_per_worker, 1))
    if parallelism == "dpsgd":
        return (several("n_workers", n_workers),
                several("threads_per_worker", threads_per_worker))
    return n_workers, threads_per_worker


def apply_n_jobs(threads: int, n_jobs: int | None) -> int:
    """Numba threads of a worker whose budget is ``threads``, under ``n_jobs``.

    scikit-learn's ``n_jobs`` with joblib's arithmetic, applied to each worker's
    budget ``n_cpus = threads`` (its share of its host's cores, or its
    ``NUMBA_NUM_THREADS``): ``None`` keeps the budget; a positive value caps it; a
    negative one gives ``n_cpus + 1 + n_jobs`` threads (``-1``: all, ``-2``: all but
    one), at least 1, as ``joblib.effective_n_jobs`` does. The caller refuses 0.
    """
    if n_jobs is None:
        return threads
    if n_jobs > 0:
        return min(threads, n_jobs)
    return max(1, threads + 1 + n_jobs)


def _budget(probes: dict[str, dict[str, Any]], addresses: list[str],
            threads_per_worker: int | None, cap: int | None = None
            ) -> tuple[WorkerSlot, ...]:
    """Numba threads for each chosen worker so that no host is oversubscribed."""
    per_host = Counter(probes[a]["host"] for a in addresses)
    slots = []
    for a in addresses:
        p = probes[a]
        max_threads = int(p["numba_max_threads"])
        if threads_per_worker is not None:
            if threads_per_worker > max_threads:
                raise ValueError(
                    f"threads_per_worker={threads_per_worker} but worker {a} can run at "
                    f"most {max_threads} numba threads (its NUMBA_NUM_THREADS); start the "
                    "workers with a larger NUMBA_NUM_THREADS or ask for fewer threads"
                )
            threads = threads_per_worker
        elif p["numba_env"]:
            # The operator sized numba for this worker (SLURM job_script_prologue,
            # LocalCluster env=): trust the value asked for. numba's pool may already be
            # larger (a user script re-imported in the spawned worker imports numba
            # before the nanny's env applies), so read the variable, not the pool size.
            threads = max(1, min(max_threads, int(str(p["numba_env"]))))
        else:
            # Share the host's cores between the workers of this fit on it.
            threads = max(1, min(max_threads, int(p["cores"]) // per_host[p["host"]]))
        if threads_per_worker is None:
            threads = apply_n_jobs(threads, cap)
        slots.append(WorkerSlot(a, threads))
    return tuple(slots)


@contextlib.contextmanager
def resolve_cluster(n_workers: int | None, threads_per_worker: int | None,
                    *, parallelism: str = "auto", thread_cap: int | None = None,
                    verbose: int = 0) -> Iterator[ClusterHandle]:
    """Yield the cluster a fit runs on: the default client's, or the embedded one.

    Parameters
    ----------
    n_workers : int or None
        Workers to use. With a default client: the first ``n_workers`` of its workers
        (``None``: all). Embedded: the number of worker processes (``None``: sized from
        the machine, see :func:`default_layout`).
    threads_per_worker : int or None
        Numba threads per worker; ``None`` budgets them from each worker's cores.
    parallelism : str
        The engine's mode (:func:`mode_layout`); a mode other than ``"auto"`` that the
        cluster cannot give (``"dpsgd"`` on a 2-core machine, ``"parameter-server"`` on a
        1-worker cluster, ...) is an error, never silently another mode.
    thread_cap : int or None
        scikit-learn's ``n_jobs``, applied to each worker's budgeted threads by
        :func:`apply_n_jobs` (not to an explicit ``threads_per_worker``).
    verbose : int
        Log the dashboard link at INFO when > 0.

    Yields
    ------
    ClusterHandle
    """
    n_workers, threads_per_worker = mode_layout(parallelism, n_workers,
                                                threads_per_worker)
    if _inside_worker():
        # Fitting inside a Dask task (dask-ml's Incremental calls partial_fit in one):
        # use that task's cluster, seceded from the worker's thread pool so that the
        # fit's own tasks can run on this worker too. (A worker may also hold a default
        # client of its own; using it without seceding would deadlock a 1-thread
        # worker.)
        with distributed.worker_client() as client:
            yield _check_mode(parallelism, _handle(client, False, n_workers,
                                                   threads_per_worker, thread_cap))
        return
    try:
        client = distributed.default_client()
    except ValueError:
        client = None
    if client is not None:
        yield _check_mode(parallelism, _handle(client, False, n_workers,
                                               threads_per_worker, thread_cap))
        return

    cores = machine_cores()
    if parallelism == "dpsgd" and n_workers is None and threads_per_worker is None:
        threads_per_worker = max(2, _auto_threads(cores))
    m, p = default_layout(n_workers, threads_per_worker, cores)
    if threads_per_worker is None:
        p = apply_n_jobs(p, thread_cap)
    with embedded_client(m, p) as client, client.as_current():
        handle = _check_mode(parallelism, _handle(client, True, m, p, None))
        if verbose:
            logger.info("dask-dpsgd embedded cluster: %d worker(s) x %d core(s); "
                        "dashboard %s; live training metrics %s", m, p,
                        handle.dashboard_link, metrics_page_url(handle.dashboard_link))
        yield handle


@dataclass(slots=True)
class _Embedded:
    """The process's embedded cluster, what it was started for and its fits running."""

    key: tuple[int, int, int, bool]  # (pid, workers, numba threads each, processes)
    cluster: distributed.LocalCluster
    client: distributed.Client
    users: int = 0


_embedded: _Embedded | None = None
_embedded_lock = threading.Lock()


def _start(key: tuple[int, int, int, bool]) -> _Embedded:
    """A ``LocalCluster`` of ``key``'s layout on 127.0.0.1, and its client."""
    _, n_workers, threads, processes = key
    cluster_kwargs: dict[str, Any] = dict(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=processes,
        host="127.0.0.1",
        # Threads-only clusters default to inproc://, which refuses a host.
        protocol="tcp://",
        dashboard_address="127.0.0.1:0",
        # Workers' own nanny-level restarts would lose the parameter server silently.
        silence_logs=logging.ERROR,
    )
    if processes:
        # Size numba's pool in each worker process before numba is imported there
        # (docs/design.rst, "Thread budget").
        cluster_kwargs["env"] = {"NUMBA_NUM_THREADS": str(threads)}
    cluster = distributed.LocalCluster(**cluster_kwargs)
    try:
        client = distributed.Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise
    return _Embedded(key, cluster, client)


@contextlib.contextmanager
def embedded_client(n_workers: int, threads: int) -> Iterator[distributed.Client]:
    """The client of this process's embedded ``LocalCluster`` of ``n_workers`` worker
    processes (``NUMBA_NUM_THREADS=threads`` each), for the duration of one fit.

    One embedded cluster per process, started on first use and reused by later fits.
    A fit asking for another layout, or finding the cluster short of workers or
    closed, closes it and starts the one it needs, unless another fit is running on
    it: then the fit gets a cluster of its own, closed when it ends. It is never stored
    in an estimator (clone and pickle stay clean), is closed at interpreter exit, and
    by :func:`close_embedded_cluster`. A forked child does not use its parent's.
    """
    global _embedded
    # A daemon process (a multiprocessing pool's worker) cannot start processes.
    processes = not multiprocessing.current_process().daemon
    key = (os.getpid(), n_workers, threads, processes)
    own = None
    with _embedded_lock:
        emb = _embedded
        if emb is not None and emb.key[0] != key[0]:
            _embedded = emb = None  # inherited through fork: the parent's cluster
        if emb is not None and emb.users == 0 and (
                emb.key != key or not _usable(emb, n_workers)):
            _close(emb)
            _embedded = emb = None
        if emb is None:
            _embedded = emb = _start(key)
        if emb.key == key:
            emb.users += 1
        else:  # in use by a fit of another layout
            own = _start(key)
    try:
        yield (own or emb).client
    finally:
        if own is not None:
            _close(own)
        else:
            with _embedded_lock:
                emb.users -= 1


def _usable(emb: _Embedded, n_workers: int) -> bool:
    """The embedded cluster is running with all of its workers."""
    try:
        return (emb.client.status == "running"
                and len(current_workers(emb.client)) == n_workers)
    except Exception:  # noqa: BLE001 - a broken cluster is replaced, whatever broke
        return False


def _close(emb: _Embedded) -> None:
    for part in (emb.client, emb.cluster):
        with contextlib.suppress(Exception):
            part.close()


def close_embedded_cluster() -> bool:
    """Close this process's embedded Dask cluster, if a fit started one.

    Fits without a Dask client share one embedded ``LocalCluster`` per process; it is
    closed at interpreter exit. Call this to free its worker processes earlier (not
    while a fit runs on it); the next such fit starts a new one.

    Returns
    -------
    bool
        Whether there was one to close.
    """
    global _embedded
    with _embedded_lock:
        emb, _embedded = _embedded, None
    if emb is None or emb.key[0] != os.getpid():
        return False
    _close(emb)
    return True


atexit.register(close_embedded_cluster)


def _check_mode(parallelism: str, handle: ClusterHandle) -> ClusterHandle:
    """Refuse to run a mode other than the one asked for."""
    got = effective_mode(handle.threads)
    if parallelism not in ("auto", got):
        layout = " + ".join(str(s.threads) for s in handle.slots)
        raise ValueError(
            f"parallelism={parallelism!r} cannot run here: the cluster gives "
            f"{len(handle.slots)} worker(s) with {layout} numba thread(s), which is "
            f"{got!r}. Give the cluster more workers/cores (or set n_workers / "
            "threads_per_worker), or use parallelism='auto'")
    return handle


def _handle(client: distributed.Client, owned: bool, n_workers: int | None,
            threads_per_worker: int | None, cap: int | None = None) -> ClusterHandle:
    workers = current_workers(client)
    if not workers:
        raise RuntimeError(
            "the Dask client has no workers; start some (cluster.scale(...)) or wait for "
            "them (client.wait_for_workers(n)) before fitting"
        )
    if n_workers is not None:
        if n_workers > len(workers):
            raise ValueError(
                f"n_workers={n_workers} but the Dask cluster has only {len(workers)} "
                "worker(s)"
            )
        workers = workers[:n_workers]
    probes = client.run(_worker_probe, workers=workers, on_error="return")
    failed = [a for a in workers if isinstance(probes.get(a), BaseException)]
    lost = lost_workers(client, failed) if failed else []
    if [a for a in failed if a not in lost]:
        # A live worker that cannot run the probe (it cannot import numba, ...).
        raise next(probes[a] for a in failed if a not in lost)
    workers = [a for a in workers if a not in lost]
    if not workers:
        raise RuntimeError(f"every worker of the fit was lost while it started: "
                           f"{', '.join(lost)}")
    slots = _budget(probes, workers, threads_per_worker, cap)
    try:
        link = client.dashboard_link
    except Exception:  # no dashboard (bokeh missing or disabled)
        link = None
    return ClusterHandle(client, owned, slots, link, tuple(lost))


class WorkerLostError(RuntimeError):
    """A worker of the fit left the cluster (killed, pre-empted, walltime) mid-round."""

    def __init__(self, addresses: list[str]) -> None:
        super().__init__(f"Dask worker(s) lost during the fit: {', '.join(addresses)}")
        self.addresses = addresses
        # Server updates applied after the last checkpoint. Raised outside a segment
        # (placing shards, starting a server) the loss discards none; serving.serving
        # sets both for losses inside one.
        self.updates_lost = 0
        self.updates_lost_exact = True


def lost_workers(client: Any, addresses: list[str]) -> list[str]:
    """Which of ``addresses`` are no longer workers of the client's cluster."""
    alive = set(current_workers(client))
    return [a for a in addresses if a not in alive]
