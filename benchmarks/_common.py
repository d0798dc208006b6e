"""Shared helpers of the scripts in ``benchmarks/`` (docs/design.rst, "Benchmarks" and
"Configuration and command lines").

* :func:`parse_config` turns a frozen dataclass of defaults into an ``argparse`` CLI
  whose flags are the field names with dashes (``n_components`` -> ``--n-components``);
  the help text of each flag is the docstring written under its field, as in CleanRL's
  ``Args``.
* :func:`run_isolated` runs one measurement in a fresh interpreter (the calling script
  re-executed in worker mode) so that peak memory is that of one run, not of the whole
  session: ``tracemalloc`` misses numba's and BLAS's allocations and the memory of Dask
  worker processes, so peak resident memory is read from the kernel instead
  (:func:`peak_rss_mib`, reset by :func:`reset_peak_rss`).
* :func:`machine_facts` and :func:`write_results` record what a result depends on:
  cores, memory, library versions, the commit, the command line and the resolved
  config; :func:`snapshot_package` freezes the code under test.
* :func:`sklearn_equivalent` / :func:`gensim_equivalent` map the parameters of
  :class:`dask_dpsgd.DPSVILatentDirichletAllocation` to the anchors' parameters (as
  scikit-learn's ``get_equivalent_estimator`` does for its gradient-boosting
  benchmarks).
* :func:`sb3_a2c_equivalent` does the same for :class:`dask_dpsgd.HSA2CAgent` and
  stable-baselines3's ``A2C``; :func:`wait_for_quiet` holds a measurement phase back
  until the shared machine's load has dropped.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime as _dt
import importlib
import inspect
import itertools
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
import types
import typing
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO_DIR = BENCH_DIR.parent

# Flag that puts a benchmark script into "run one measurement" mode (see run_isolated).
WORKER_FLAG = "--_worker"

# The environment this interpreter started with. Starting a distributed.LocalCluster
# rewrites os.environ of the starting process (OMP/MKL/OPENBLAS_NUM_THREADS=1,
# MALLOC_TRIM_THRESHOLD_=65536, PYTHONHASHSEED: its nanny "pre-spawn-environ"), and
# children would inherit that: single-threaded BLAS and aggressive heap trimming for
# scikit-learn and gensim. Every isolated run gets this snapshot instead.
PRISTINE_ENV = dict(os.environ)
# Environment variables that change speed or memory, recorded with the results.
RECORDED_ENV_PREFIXES = ("OMP_", "MKL_", "OPENBLAS_", "NUMBA_", "MALLOC_", "PYTHONHASH",
                         "PYTHONPATH")

VERSIONED = ("numpy", "scipy", "numba", "dask", "distributed", "sklearn", "gensim",
             "matplotlib")


# --------------------------------------------------------------------------- CLI


def _field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under the fields of a dataclass, keyed by field name.

    CleanRL style: a string literal on the line after ``name: type = default``. A
    subclass that only changes defaults inherits its bases' docstrings.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):  # bases first, object left out
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # no source (frozen app, REPL)
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in itertools.pairwise(body):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def parse_config(cls: type, argv: list[str] | None = None) -> Any:
    """Parse command-line flags into an instance of the frozen dataclass ``cls``.

    Parameters
    ----------
    cls : type
        A dataclass whose fields have defaults. Tuple-typed fields take one or more
        values (``--n-components 20 100``); bool fields get ``--x`` / ``--no-x``;
        ``metadata={"aliases": ("--other",)}`` adds alternative flag names.
    argv : list of str or None
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    instance of cls
    """
    docs = _field_docs(cls)
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(
        description=(inspect.getdoc(cls) or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(cls):
        flags = ["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        hint = hints[f.name]
        kwargs: dict[str, Any] = {"default": f.default, "dest": f.name,
                                  "help": docs.get(f.name, "")}
        origin = typing.get_origin(hint)
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is tuple:
            kwargs["nargs"] = "+"
            kwargs["type"] = typing.get_args(hint)[0]
        elif origin in (typing.Union, types.UnionType):
            inner = next(a for a in typing.get_args(hint) if a is not type(None))
            kwargs["type"] = lambda s, t=inner: None if s.lower() == "none" else t(s)
        else:
            kwargs["type"] = hint
        parser.add_argument(*flags, **kwargs)
    ns = parser.parse_args(argv)
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
        if typing.get_origin(hints[f.name]) is tuple:
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def seeds(random_state: int, repeats: int) -> list[int]:
    """Seeds of the repetitions: ``random_state, random_state + 1, ...``."""
    return [random_state + i for i in range(repeats)]


# ------------------------------------------------------------------------ memory


def _status_kib(key: str, pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    raise KeyError(key)


def rss_mib() -> float:
    """Current resident set size of this process (``VmRSS``), MiB."""
    return _status_kib("VmRSS") / 1024.0


def peak_rss_mib() -> float:
    """Peak resident set size of this process since start or the last reset, MiB.

    ``VmHWM`` counts every page the process touched, whoever allocated it (numba, BLAS,
    Python), unlike ``tracemalloc``.
    """
    return _status_kib("VmHWM") / 1024.0


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (``echo 5 > /proc/self/clear_refs``).

    Linux >= 4.0.

    Returns
    -------
    bool
        False when the kernel refuses (the peak is then the peak since start).
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def children_peak_rss_mib() -> float:
    """Largest peak RSS among this process's terminated, waited-for children, MiB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def cpu_seconds() -> float:
    """User + system CPU time of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def pss_mib(pid: int | str = "self") -> float:
    """Proportional set size of a process (``Pss`` of ``smaps_rollup``), MiB; 0 if gone.

    PSS splits each shared page among the processes mapping it, so summing it over a
    parent and its forked or spawned helpers does not count shared pages twice (the sum
    of their ``VmHWM`` does).
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return float(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    """Ids of the live descendants of ``pid`` (``/proc/<pid>/task/*/children``)."""
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        for t in tasks:
            try:
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            for k in map(int, kids):
                out.append(k)
                stack.append(k)
    return out


class PeakPss:
    """Peak of the summed PSS of a set of processes, sampled by a background thread.

    Parameters
    ----------
    extra_pids : list of int
        Processes to include besides this one (e.g. Dask worker processes).
    include_children : bool
        Also include this process's live descendants (e.g. gensim's worker pool),
        looked up at every sample.
    interval : float
        Seconds between samples (``smaps_rollup`` of a 400 MiB process takes ~0.1 ms).

    Attributes
    ----------
    peak_mib : float
        Largest sum seen (also sampled once on entry and once on exit).
    n_samples : int
    """

    def __init__(self, extra_pids: list[int] | None = None, *,
                 include_children: bool = False, interval: float = 0.05) -> None:
        import threading

        self.extra_pids = list(extra_pids or [])
        self.include_children = include_children
        self.interval = interval
        self.peak_mib = 0.0
        self.n_samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> float:
        pids = [os.getpid(), *self.extra_pids]
        if self.include_children:
            pids += descendants(os.getpid())
        total = sum(pss_mib(p) for p in pids)
        self.peak_mib = max(self.peak_mib, total)
        self.n_samples += 1
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakPss:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages (other users' work competes for the cores)."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# ------------------------------------------------------------- isolated runs


def start_local_cluster(m: int, p: int) -> Any:
    """A LocalCluster on 127.0.0.1 of ``m`` single-threaded workers, ``p`` numba threads each."""
    import logging

    import distributed

    return distributed.LocalCluster(
        n_workers=m, threads_per_worker=1, processes=True, host="127.0.0.1",
        # A free port: a fixed one (8787) may be taken by someone else's cluster.
        dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR,
        env={"NUMBA_NUM_THREADS": str(p)})


class RunCluster:
    """The cluster one measured run uses: a fresh LocalCluster, or the user's.

    With no ``scheduler_address`` a LocalCluster of the layout is started on entry and
    closed on exit, so that no other layout's idle processes (schedulers, nannies and
    workers with their heartbeats and profilers) share the machine during the run:
    measured here, two idle LocalClusters beside a 2 x 1 HSA2C fit took ~11% of its
    CartPole throughput, a cost the one-core layouts hardly pay (they leave a core
    free). The run's own process warms the workers up (an excluded short fit) before it
    measures. With a ``scheduler_address`` (a big shared cluster, a SLURMCluster) every
    run uses it and nothing is started or closed.

    Attributes
    ----------
    address : str
        Scheduler address for the run.
    start_s : float
        Seconds the cluster took to start (0 for the user's).
    """

    def __init__(self, m: int, p: int, scheduler_address: str | None = None) -> None:
        self.m, self.p = m, p
        self.scheduler_address = scheduler_address
        self.cluster: Any = None
        self.address = scheduler_address or ""
        self.start_s = 0.0

    def __enter__(self) -> RunCluster:
        if self.scheduler_address is None:
            t0 = time.perf_counter()
            self.cluster = start_local_cluster(self.m, self.p)
            self.address = self.cluster.scheduler_address
            self.start_s = time.perf_counter() - t0
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None


def run_isolated(script: str | Path, task: dict[str, Any], *,
                 timeout: float | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh Python process and return its result.

    The child is ``python <script> --_worker <task.json> <out.json>``; the script
    must hand such invocations to :func:`worker_main`. A fresh process per run means
    its peak RSS belongs to that run alone, and JIT caches, allocator state and imported
    modules cannot leak from one method into the next.

    Parameters
    ----------
    script : path
        The benchmark script (normally ``__file__`` of the caller).
    task : dict
        JSON-serialisable description of the run.
    timeout : float or None
        Seconds before the child is killed.

    Returns
    -------
    dict
        The child's result, plus ``"child_wall_s"`` (including interpreter start-up)
        and ``"loadavg_before"`` / ``"loadavg_after"``.
    """
    with tempfile.TemporaryDirectory(prefix="dpsgd-bench-") as tmp:
        task_path = Path(tmp) / "task.json"
        out_path = Path(tmp) / "out.json"
        task_path.write_text(json.dumps(task))
        before = loadavg()
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(script), WORKER_FLAG, str(task_path), str(out_path)],
            capture_output=True, text=True, timeout=timeout, check=False,
            env=PRISTINE_ENV)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out_path.exists():
            raise RuntimeError(
                f"benchmark child failed (exit {proc.returncode}) for task {task}:\n"
                f"{proc.stderr[-4000:]}")
        result = json.loads(out_path.read_text())
    result["child_wall_s"] = wall
    result["loadavg_before"] = before
    result["loadavg_after"] = loadavg()
    return result


def worker_main(run: typing.Callable[[dict[str, Any]], dict[str, Any]]) -> bool:
    """If this process is a :func:`run_isolated` child, run its task and return True.

    Call at the top of the script's ``if __name__ == "__main__":`` block.
    """
    if len(sys.argv) != 4 or sys.argv[1] != WORKER_FLAG:
        return False
    task = json.loads(Path(sys.argv[2]).read_text())
    result = run(task)
    Path(sys.argv[3]).write_text(json.dumps(result))
    return True


# -------------------------------------------------------------------- facts/JSON


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_DIR), *args], capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def recorded_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Speed- and memory-relevant variables of ``env`` (default: the pristine one)."""
    env = PRISTINE_ENV if env is None else env
    return {k: v for k, v in sorted(env.items()) if k.startswith(RECORDED_ENV_PREFIXES)}


def source_digest(root: str | Path) -> str:
    """SHA-256 over the ``*.py`` files under ``root`` (names and contents).

    Recorded at the start and the end of a benchmark: other people may edit the package
    while it runs.
    """
    import hashlib

    h = hashlib.sha256()
    for p in sorted(Path(root).rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def snapshot_package(source: str,
                     name: str = "dask_dpsgd") -> tuple[Path, dict[str, Any]]:
    """Freeze the code under test in a temporary directory and import it from there.

    Other people edit and commit ``dask_dpsgd/`` while a benchmark runs; Dask workers
    started at the beginning would keep the old modules while each new run's driver
    imports the new ones (a changed task signature then fails, a changed kernel silently
    mixes versions). The snapshot is put first on ``sys.path`` and on the
    ``PYTHONPATH`` of every process started afterwards (Dask workers, isolated runs).

    Parameters
    ----------
    source : {"head", "worktree"}
        ``"head"``: the last commit (``git archive HEAD``), a coherent, citable state;
        ``"worktree"``: the files as they are now, uncommitted edits included.
    name : str
        Package directory, relative to the repository root.

    Returns
    -------
    root : Path
        Directory holding ``<name>/`` (delete it when done).
    facts : dict
        ``source``, ``commit``, ``digest`` of the snapshot.
    """
    import shutil

    root = Path(tempfile.mkdtemp(prefix="dpsgd-bench-src-"))
    if source == "head":
        archive = subprocess.run(["git", "-C", str(REPO_DIR), "archive", "HEAD", name],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    elif source == "worktree":
        shutil.copytree(REPO_DIR / name, root / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        raise ValueError(f"source must be 'head' or 'worktree', got {source!r}")
    sys.path.insert(0, str(root))
    for env in (os.environ, PRISTINE_ENV):
        rest = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(root) + (os.pathsep + rest if rest else "")
    return root, {"source": source, "commit": _git("rev-parse", "HEAD"),
                  "digest": source_digest(root / name)}


def machine_facts() -> dict[str, Any]:
    """Cores, memory, CPU model, OS, Python and library versions, and the commit."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(float(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = importlib.import_module(name).__version__
        except ImportError:
            versions[name] = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cores": cores,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": mem_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "child_env": recorded_env(),
        "loadavg_at_start": loadavg(),
    }


def command_line() -> str:
    """The command that reproduces this run, from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_s = str(script.relative_to(REPO_DIR))
    except ValueError:
        script_s = str(script)
    return " ".join(["PYTHONPATH=. python", shlex.quote(script_s),
                     *map(shlex.quote, sys.argv[1:])])


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_results(path: str | Path, *, kind: str, config: Any, machine: dict[str, Any],
                  runs: list[dict[str, Any]], started: str, finished: str | None = None,
                  **extra: Any) -> Path:
    """Write one benchmark's raw runs, resolved config and machine facts as JSON.

    Parameters
    ----------
    path : path
        Output file (overwritten; written atomically).
    kind : str
        What ``summarize.py`` renders this file with (e.g. ``"lda"``).
    config : dataclass instance
        The resolved configuration.
    machine : dict
        :func:`machine_facts`.
    runs : list of dict
        One record per (method, setting, seed).
    started, finished : str
        ISO timestamps (``finished=None``: the run is still in progress).
    **extra
        Any further top-level entries (warm-up timings, ...).

    Returns
    -------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "kind": kind,
        "command": command_line(),
        "config": dataclasses.asdict(config),
        "machine": machine,
        "started": started,
        "finished": finished,
        **extra,
        "runs": runs,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
    tmp.replace(path)
    return path


class Results:
    """A results file rewritten after every run: the machine's facts, the config, the
    runs so far (:func:`write_results`); ``save(finished=True)`` stamps the end.

    Parameters
    ----------
    config : dataclass instance
        The resolved configuration; its ``output`` is the file.
    kind : str
        What ``summarize.py`` renders the file with.
    runs : list of dict, optional
        Runs already measured (a resumed benchmark).
    """

    def __init__(self, config: Any, kind: str,
                 runs: list[dict[str, Any]] | None = None) -> None:
        self.config, self.kind = config, kind
        self.machine = machine_facts()
        self.started = now_iso()
        self.runs: list[dict[str, Any]] = list(runs or [])

    def save(self, finished: bool = False) -> Path:
        """Write the file."""
        return write_results(self.config.output, kind=self.kind, config=self.config,
                             machine=self.machine, runs=self.runs, started=self.started,
                             finished=now_iso() if finished else None)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


# ------------------------------------------------------------ equivalent params

# DPSVILatentDirichletAllocation parameters with no counterpart in the anchors: they
# only say where and how the same algorithm is distributed.
_DISTRIBUTION_ONLY = ("n_workers", "threads_per_worker", "parallelism", "prefetch",
                      "max_staleness",
                      "client")
_SKLEARN_SHARED = ("n_components", "doc_topic_prior", "topic_word_prior",
                   "learning_method", "learning_decay", "learning_offset", "max_iter",
                   "batch_size", "evaluate_every", "total_samples", "perp_tol",
                   "mean_change_tol", "max_doc_update_iter", "n_jobs", "verbose",
                   "random_state")


def sklearn_equivalent(params: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of scikit-learn's ``LatentDirichletAllocation`` for ``params``.

    The DPSVI estimator kept every scikit-learn parameter name (docs/design.rst,
    "Estimator API"), so the
    mapping is the identity on shared names; the distribution knobs (``n_workers``,
    ``threads_per_worker``, ``prefetch``, ``max_staleness``) are dropped and
    ``learning_method`` is forced to ``"online"``.

    Parameters
    ----------
    params : dict
        ``DPSVILatentDirichletAllocation`` parameters (any subset).
    **overrides
        Applied last (e.g. ``n_jobs=1``).

    Returns
    -------
    dict
    """
    unknown = set(params) - set(_SKLEARN_SHARED) - set(_DISTRIBUTION_ONLY)
    if unknown:
        raise ValueError(f"no scikit-learn equivalent for {sorted(unknown)}")
    out = {k: v for k, v in params.items() if k in _SKLEARN_SHARED}
    out["learning_method"] = "online"
    out.update(overrides)
    return out


def gensim_equivalent(params: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of gensim's ``LdaModel``/``LdaMulticore`` for ``params``.

    ``alpha``/``eta`` are the symmetric priors (``1/K`` when None), ``chunksize`` the
    minibatch, ``passes`` the passes, ``iterations``/``gamma_threshold`` the E-step's
    cap and mean-absolute-change tolerance (the same criterion as scikit-learn's).
    Step size: gensim's ``rho = (offset + pass + i) ** -decay`` for its ``i``-th update
    (0-based) vs scikit-learn's ``(learning_offset + t) ** -learning_decay`` for
    ``t = 1, 2, ...``; ``offset = learning_offset + 1`` makes the two equal in the first
    pass (gensim then adds the pass index, a small difference). ``eval_every=None``:
    gensim otherwise evaluates a perplexity every 10 updates inside the timed fit.

    Parameters
    ----------
    params : dict
        ``DPSVILatentDirichletAllocation`` parameters.
    **overrides
        Applied last (e.g. ``workers=1``).

    Returns
    -------
    dict
    """
    k = params["n_components"]
    alpha = params.get("doc_topic_prior")
    eta = params.get("topic_word_prior")
    out = {
        "num_topics": k,
        "alpha": 1.0 / k if alpha is None else float(alpha),
        "eta": 1.0 / k if eta is None else float(eta),
        "chunksize": params.get("batch_size", 128),
        "passes": params.get("max_iter", 10),
        "decay": params.get("learning_decay", 0.7),
        "offset": params.get("learning_offset", 10.0) + 1.0,
        "iterations": params.get("max_doc_update_iter", 100),
        "gamma_threshold": params.get("mean_change_tol", 1e-3),
        "eval_every": None,
        "random_state": params.get("random_state"),
    }
    out.update(overrides)
    return out


# HSA2CAgent parameters with no counterpart in stable-baselines3's A2C: they only say
# where and how the same algorithm is distributed.
_HSA2C_DISTRIBUTION_ONLY = ("push_every", "prefetch", "n_workers", "threads_per_worker",
                            "max_staleness", "verbose")
_SB3_A2C_SHARED = ("learning_rate", "n_steps", "gamma", "gae_lambda", "ent_coef",
                   "vf_coef", "max_grad_norm", "rms_prop_eps", "use_rms_prop",
                   "normalize_advantage")


def sb3_a2c_equivalent(params: dict[str, Any]) -> dict[str, Any]:
    """stable-baselines3 ``A2C`` set-up equivalent to ``HSA2CAgent(**params)``.

    ``HSA2CAgent`` kept A2C's parameter names and defaults, so the optimiser and loss
    parameters map one to one. The networks go to ``policy_kwargs`` (separate policy
    and value MLPs of ``net_arch``, as ``MlpPolicy``'s ``dict(pi=..., vf=...)``),
    ``n_envs`` to ``make_vec_env``, ``normalize_observations``/``clip_obs`` to a
    ``VecNormalize(norm_reward=False)`` wrapper, ``random_state`` to ``seed``, and
    ``total_timesteps`` to ``learn()``. With one worker, ``n_envs`` is the same batch;
    with ``m`` workers HSA2C runs ``m * n_envs`` environments in all.

    Parameters
    ----------
    params : dict
        ``HSA2CAgent`` parameters (any subset; missing ones take its defaults).

    Returns
    -------
    dict
        ``a2c`` (keyword arguments of ``A2C`` besides policy, env, seed and device),
        ``policy_kwargs`` (``activation_fn`` as its name, ``"tanh"`` or ``"relu"``),
        ``n_envs``, ``vec_normalize`` (None or ``VecNormalize`` keyword arguments),
        ``total_timesteps``, ``seed`` and ``env_id``.
    """
    from dask_dpsgd import HSA2CAgent

    full = {**HSA2CAgent().get_params(), **params}
    unknown = (set(params) - set(_SB3_A2C_SHARED) - set(_HSA2C_DISTRIBUTION_ONLY)
               - {"env", "net_arch", "activation", "log_std_init", "n_envs",
                  "normalize_observations", "clip_obs", "total_timesteps",
                  "target_return", "env_kwargs", "random_state"})
    if unknown:
        raise ValueError(f"no stable-baselines3 equivalent for {sorted(unknown)}")
    if not isinstance(full["env"], str) or full["env_kwargs"]:
        raise ValueError("the equivalent set-up needs a plain gymnasium id as env")
    arch = [int(h) for h in full["net_arch"]]
    return {
        "env_id": full["env"],
        "a2c": {k: full[k] for k in _SB3_A2C_SHARED},
        "policy_kwargs": {"net_arch": {"pi": arch, "vf": arch},
                          "activation_fn": full["activation"],
                          "log_std_init": float(full["log_std_init"])},
        "n_envs": int(full["n_envs"]),
        "vec_normalize": ({"norm_obs": True, "norm_reward": False,
                           "clip_obs": float(full["clip_obs"])}
                          if full["normalize_observations"] else None),
        "total_timesteps": int(full["total_timesteps"]),
        "seed": full["random_state"],
    }


def wait_for_quiet(max_load: float, max_wait_s: float,
                   poll_s: float = 10.0) -> dict[str, Any]:
    """Sleep until the 1-minute load average is at most ``max_load``, or give up.

    Other people's work on a shared machine competes for the cores; a measurement phase
    starts only once the load has dropped (or after ``max_wait_s``, recorded as such).

    Returns
    -------
    dict
        ``load_before``, ``load_after`` (1-minute averages), ``waited_s`` and ``quiet``
        (whether the load was at most ``max_load`` when the wait ended).
    """
    first = loadavg()[0]
    t0 = time.perf_counter()
    load = first
    while load > max_load and time.perf_counter() - t0 < max_wait_s:
        time.sleep(min(poll_s, max(0.0, max_wait_s - (time.perf_counter() - t0))))
        load = loadavg()[0]
    return {"load_before": first, "load_after": load,
            "waited_s": time.perf_counter() - t0, "quiet": load <= max_load}
