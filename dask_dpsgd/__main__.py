"""Command line: ``python -m dask_dpsgd {lda,a2c} ...`` (the main jobs) and options.

Every flag mirrors an estimator parameter (``--n-components`` <-> ``n_components``);
defaults are those of the dataclass below, whose field docstrings are the help texts.
Options of the same kind (corpus, cluster, outputs) are grouped in ``--help``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import itertools
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dask_dpsgd._utils._validation import PARALLELISM

CORPUS = "corpus"
CLUSTER = "cluster"
OUTPUT = "output"
_GROUP_TITLES = {
    CORPUS: "corpus (default: the bundled NIPS papers)",
    CLUSTER: "cluster (default: an embedded LocalCluster on this machine)",
    OUTPUT: "outputs",
}
# Options of which at most one may be given (argparse mutually exclusive group).
_EXCLUSIVE_CLUSTER = "cluster-choice"


def _opt(default: Any, *, group: str | None = None, choices: tuple[str, ...] = (),
         exclusive: str | None = None) -> Any:
    """A dataclass field with its ``--help`` group, choices and exclusivity."""
    return dataclasses.field(default=default, metadata={
        "group": group, "choices": choices, "exclusive": exclusive})


class CLIError(Exception):
    """A user error (bad file, missing optional dependency): printed, exit status 1."""


@dataclass(frozen=True)
class ClusterArgs:
    """Options choosing the Dask cluster, shared by every subcommand."""

    scheduler_address: str | None = _opt(None, group=CLUSTER,
                                         exclusive=_EXCLUSIVE_CLUSTER)
    """Address of a running Dask scheduler to use instead of the embedded cluster."""
    slurm_jobs: int | None = _opt(None, group=CLUSTER, exclusive=_EXCLUSIVE_CLUSTER)
    """Run on this many SLURM jobs of one Dask worker each (needs dask-jobqueue); the
    jobs are cancelled when the command ends."""
    slurm_cores: int = _opt(4, group=CLUSTER)
    """Cores booked per SLURM job, all for numba (NUMBA_NUM_THREADS)."""
    slurm_memory: str = _opt("8GB", group=CLUSTER)
    """Memory per SLURM job."""
    slurm_walltime: str = _opt("01:00:00", group=CLUSTER)
    """Wall-time limit of each SLURM job."""
    slurm_queue: str | None = _opt(None, group=CLUSTER)
    """SLURM partition (default: dask-jobqueue's configuration)."""


@dataclass(frozen=True)
class LDAArgs(ClusterArgs):
    """Options of ``python -m dask_dpsgd lda``."""

    n_components: int = 20
    """Number of topics K."""
    max_iter: int = 5
    """Passes over the training documents."""
    batch_size: int = 128
    """Documents per minibatch (per push to the parameter server)."""
    evaluate_every: int = -1
    """Compute the training perplexity every this many passes (<= 0: never)."""
    n_workers: int | None = None
    """Dask workers (default: sized from this machine's cores, or all the cluster's)."""
    threads_per_worker: int | None = None
    """Numba threads per worker (default: the worker's share of its host's cores)."""
    parallelism: str = _opt("auto", choices=PARALLELISM)
    """The engine's mode: serial (1 worker x 1 core), hogwild (1 worker x its cores),
    parameter-server (workers x 1 core), dpsgd (both), auto (sized to the cluster)."""
    random_state: int = 0
    """Seed of the initial topics, of every worker's random stream and of the
    held-out split."""
    corpus: str = _opt("nips", group=CORPUS)
    """'nips' (bundled), or a path: a UCI docword file (docword.*.txt[.gz]), a Matrix
    Market file (.mtx[.gz], documents are rows) or a folder of UTF-8 *.txt files."""
    vocab: str | None = _opt(None, group=CORPUS)
    """Vocabulary of a docword or Matrix Market corpus, one word per line."""
    test_size: float = _opt(0.1, group=CORPUS)
    """Fraction of the documents held out for the perplexity (0: none; seeded by
    --random-state)."""
    max_df: int | float = _opt(0.95, group=CORPUS)
    """Text folder: ignore words in more than this fraction (float) or number (int)
    of documents."""
    min_df: int | float = _opt(2, group=CORPUS)
    """Text folder: ignore words in fewer than this number (int) or fraction (float)
    of documents."""
    stop_words: str = _opt("english", group=CORPUS, choices=("english", "none"))
    """Text folder: stop-word list removed before counting."""
    top_words: int = _opt(10, group=OUTPUT)
    """Words printed per topic."""
    output: str | None = _opt(None, group=OUTPUT)
    """Write the fitted topics, perplexity and history to this JSON file."""
    save_model: str | None = _opt(None, group=OUTPUT)
    """Write the fitted model to this .npz file (plain arrays, no pickle; see
    dask_dpsgd.io.load_model)."""
    plot: str | None = _opt(None, group=OUTPUT)
    """Write a PNG of the documents/s per pass and the training perplexity (with
    --evaluate-every) or the top words of each topic."""
    verbose: int = 1
    """0: no progress bar."""


@dataclass(frozen=True)
class A2CArgs(ClusterArgs):
    """Options of ``python -m dask_dpsgd a2c``."""

    env: str = "CartPole-v1"
    """Gymnasium environment id."""
    total_timesteps: int = 200_000
    """Environment steps to train for, summed over workers."""
    target_return: float | None = None
    """Stop once the mean return of the last 100 episodes reaches this."""
    n_envs: int = 8
    """Environments per worker."""
    n_workers: int | None = None
    """Dask workers (default: sized from this machine's cores, or all the cluster's)."""
    threads_per_worker: int | None = None
    """Numba threads per worker (default: the worker's share of its host's cores)."""
    parallelism: str = _opt("auto", choices=PARALLELISM)
    """The engine's mode: serial (1 worker x 1 core), hogwild (1 worker x its cores),
    parameter-server (workers x 1 core), dpsgd (both), auto (sized to the cluster)."""
    random_state: int = 0
    """Seed of the initial parameters and of every worker's random stream."""
    n_eval_episodes: int = 20
    """Deterministic evaluation episodes after training."""
    plot: str = _opt("hsa2c_learning_curve.png", group=OUTPUT)
    """Where to write the learning-curve PNG."""
    output: str | None = _opt(None, group=OUTPUT)
    """Write the evaluation return, episode returns and history to this JSON file."""
    save_model: str | None = _opt(None, group=OUTPUT)
    """Write the fitted agent to this .npz file (plain arrays, no pickle; see
    dask_dpsgd.io.load_model)."""
    verbose: int = 1
    """0: no progress bar."""


# --------------------------------------------------------------------------- #
# Cluster
# --------------------------------------------------------------------------- #
def _require_jobqueue() -> Any:
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise CLIError(
            "--slurm-jobs needs dask-jobqueue, which is not installed: "
            "pip install dask-jobqueue") from exc
    return dask_jobqueue


def _print_dashboard(client: Any) -> None:
    """Print Dask's dashboard link and, next to it, the live training metrics page
    (Dask's pages cannot link to it: ``live_page_banner``)."""
    from dask_dpsgd.engine._live import live_page_banner, metrics_page_url

    link = client.dashboard_link
    print(live_page_banner(link, metrics_page_url(link)), flush=True)


@contextlib.contextmanager
def _cluster(args: ClusterArgs) -> Iterator[None]:
    """Make the chosen cluster's client the default one while the fit runs.

    The embedded cluster is the estimators' own default: nothing to do then.
    """
    import distributed

    if args.scheduler_address:
        with distributed.Client(args.scheduler_address) as client:
            _print_dashboard(client)
            yield
    elif args.slurm_jobs is not None:
        jobqueue = _require_jobqueue()
        with _sigterm_exits(), _slurm_client(jobqueue, args):
            yield
    else:
        yield


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """Turn SIGTERM into SystemExit, so the SLURM jobs are cancelled on the way out
    (Ctrl-C already unwinds through the context managers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _slurm_client(jobqueue: Any, args: ClusterArgs) -> Iterator[None]:
    """A SLURMCluster of ``--slurm-jobs`` single-worker jobs and its (default) client.

    Closing the cluster on the way out cancels the jobs.
    """
    import distributed

    cores = args.slurm_cores
    # One Dask thread per job; every booked core goes to numba (docs/design.rst,
    # "Slurm"): cores=1 for Dask, job_cpu=cores for SLURM, NUMBA_NUM_THREADS for numba.
    with jobqueue.SLURMCluster(
        cores=1, processes=1, job_cpu=cores, memory=args.slurm_memory,
        walltime=args.slurm_walltime, queue=args.slurm_queue,
        job_script_prologue=[f"export NUMBA_NUM_THREADS={cores}"],
    ) as cluster, distributed.Client(cluster) as client:
        _print_dashboard(client)
        cluster.scale(jobs=args.slurm_jobs)
        print(f"waiting for {args.slurm_jobs} SLURM job(s) to start their "
              "workers...", flush=True)
        t0 = time.perf_counter()
        client.wait_for_workers(args.slurm_jobs)
        print(f"{args.slurm_jobs} SLURM worker(s) up after "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        yield


# --------------------------------------------------------------------------- #
# Corpus
# --------------------------------------------------------------------------- #
_FOLDER_DEFAULTS = {f.name: f.default for f in dataclasses.fields(LDAArgs)
                    if f.name in ("max_df", "min_df", "stop_words")}


def _sniff_format(path: Path) -> str:
    """'mtx' or 'uci', from the file's first bytes (gzip or not), else CLIError."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
        opener = gzip.open if magic == b"\x1f\x8b" else open
        with opener(path, "rb") as fh:
            head = fh.read(1 << 16)
    except (OSError, EOFError) as exc:
        raise CLIError(f"--corpus {path}: cannot read it ({exc})") from exc
    name = path.name.lower()
    if head[:14].lower() == b"%%matrixmarket" or name.endswith((".mtx", ".mtx.gz")):
        return "mtx"
    lines = head.split(b"\n", 3)[:3]
    if (len(lines) == 3 and all(line.strip().isdigit() for line in lines)) or \
            name.startswith("docword."):
        return "uci"
    raise CLIError(
        f"--corpus {path}: cannot tell its format: expected a UCI docword file (three "
        "header lines D, W, NNZ), a Matrix Market file (%%MatrixMarket banner), or a "
        "folder of .txt files")


def _load_corpus(args: LDAArgs) -> tuple[str, Any, Any]:
    """``(description, CSR int64 counts, words or None)`` of ``--corpus``."""
    from dask_dpsgd.datasets import (
        load_matrix_market,
        load_nips,
        load_text_folder,
        load_uci_bow,
    )

    folder_opts = {k: getattr(args, k) for k in _FOLDER_DEFAULTS}
    if args.corpus == "nips":
        kind = "NIPS corpus"
    else:
        path = Path(args.corpus)
        if not path.exists():
            raise CLIError(f"--corpus {path}: no such file or directory (use 'nips' "
                           "for the bundled corpus)")
        kind = "folder" if path.is_dir() else _sniff_format(path)
    if args.vocab is not None and kind not in ("uci", "mtx"):
        raise CLIError("--vocab applies to a docword or Matrix Market corpus only"
                       + (" (the folder's vocabulary is built by CountVectorizer)"
                          if kind == "folder" else ""))
    if kind != "folder" and folder_opts != _FOLDER_DEFAULTS:
        changed = [f"--{k.replace('_', '-')}" for k, v in folder_opts.items()
                   if v != _FOLDER_DEFAULTS[k]]
        raise CLIError(f"{', '.join(changed)} appl{'ies' if len(changed) == 1 else 'y'}"
                       " to a folder of text files only")
    try:
        if kind == "NIPS corpus":
            bunch = load_nips()
            return kind, bunch.data, bunch.feature_names
        if kind == "folder":
            stop_words = None if args.stop_words == "none" else args.stop_words
            bunch = load_text_folder(path, max_df=args.max_df, min_df=args.min_df,
                                     stop_words=stop_words)
            return (f"{path}/ ({bunch.data.shape[0]} text files)", bunch.data,
                    bunch.feature_names)
        if kind == "mtx":
            bunch = load_matrix_market(path, args.vocab)
            return f"Matrix Market {path}", bunch.data, bunch.feature_names
        X, words = load_uci_bow(path, args.vocab)
        return f"UCI docword {path}", X, words
    except (ValueError, OSError) as exc:
        raise CLIError(f"--corpus {args.corpus}: {exc}") from exc


def _split(n_docs: int, test_size: float, seed: int) -> tuple[Any, Any]:
    """``(train, test)`` row indices: a seeded permutation, the first ``ceil(test_size
    * n_docs)`` rows held out.  For NIPS with the defaults (0.1, seed 0) this is the
    bundled baseline split ``load_nips().train_indices / test_indices``."""
    import numpy as np

    if test_size == 0:
        return np.arange(n_docs), np.arange(0)
    perm = np.random.RandomState(seed).permutation(n_docs)
    n_test = math.ceil(round(test_size * n_docs, 9))
    if n_test >= n_docs:
        raise CLIError(f"--test-size {test_size} holds out all {n_docs} documents; "
                       "nothing is left to train on")
    return perm[n_test:], perm[:n_test]


# --------------------------------------------------------------------------- #
# Outputs
# --------------------------------------------------------------------------- #
def _plot_lda(lda: Any, words: Any, path: str, top_words: int) -> str:
    """PNG of docs/s per pass, next to the training perplexity if it was evaluated
    or else a heat map of p(word | topic) over each topic's top words.

    Returns what the right-hand panel shows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = lda.history_
    passes = [r.get("pass", i + 1) for i, r in enumerate(hist)]
    speed = [r.get("time/docs_per_s", float("nan")) for r in hist]
    evaluated = [(p, r["train/perplexity"]) for p, r in zip(passes, hist, strict=True)
                 if "train/perplexity" in r]
    if evaluated:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    else:
        k = lda.components_.shape[0]
        per_topic = max(1, min(top_words, 40 // k))
        cols: list[int] = []
        for row in lda.components_:
            cols += [int(i) for i in row.argsort()[::-1][:per_topic] if i not in cols]
        fig, (ax1, ax2) = plt.subplots(
            1, 2, figsize=(5 + 0.22 * len(cols), 1.5 + max(3.0, 0.3 * k)),
            gridspec_kw={"width_ratios": [4, max(4.0, 0.22 * len(cols))]})
    ax1.bar(passes, speed, color="C0")
    ax1.set_xlabel("pass")
    ax1.set_ylabel("documents / s")
    threads = "/".join(str(t) for t in lda.threads_per_worker_)
    ax1.set_title(f"{lda.n_workers_} worker(s) x {threads} numba thread(s)")
    if evaluated:
        ax2.plot(*zip(*evaluated, strict=True), marker="o", color="C1")
        ax2.set_xlabel("pass")
        ax2.set_ylabel("training perplexity")
        ax2.set_title(f"DPSVI LDA, K={lda.n_components}")
        shows = "training perplexity"
    else:
        prob = lda.components_ / lda.components_.sum(axis=1, keepdims=True)
        image = ax2.imshow(prob[:, cols], aspect="auto", cmap="viridis",
                           interpolation="nearest")
        ax2.set_xticks(range(len(cols)))
        ax2.set_xticklabels([str(words[c]) for c in cols], rotation=90, fontsize=8)
        ax2.set_yticks(range(prob.shape[0]))
        ax2.set_ylabel("topic")
        ax2.set_title(f"top {per_topic} word(s) of each topic")
        fig.colorbar(image, ax=ax2, label="p(word | topic)")
        shows = "topic-word heat map of the top words"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return shows


def _save(estimator: Any, path: str | None) -> str | None:
    if not path:
        return None
    from dask_dpsgd.io import save_model

    save_model(estimator, path)
    print(f"model: {path}")
    return path


# --------------------------------------------------------------------------- #
# Jobs
# --------------------------------------------------------------------------- #
def run_a2c(args: A2CArgs) -> dict[str, object]:
    """Train HSA2C on a gymnasium environment; print the evaluation return; plot."""
    from dask_dpsgd import HSA2CAgent
    from dask_dpsgd.plotting import plot_learning_curve

    target = args.target_return
    agent = HSA2CAgent(args.env, total_timesteps=args.total_timesteps,
                       target_return=target, n_envs=args.n_envs,
                       n_workers=args.n_workers,
                       threads_per_worker=args.threads_per_worker,
                       parallelism=args.parallelism,
                       random_state=args.random_state, verbose=args.verbose)
    t0 = time.perf_counter()
    with _cluster(args):
        agent.fit()
    seconds = time.perf_counter() - t0
    score = agent.score(n_episodes=args.n_eval_episodes, random_state=args.random_state)
    last = agent.episode_returns_[-100:]
    print(f"\nTrained on {args.env} for {agent.num_timesteps_} steps in "
          f"{seconds:.1f} s ({agent.num_timesteps_ / seconds:.0f} steps/s) on "
          f"{agent.n_workers_} worker(s) x {agent.threads_per_worker_} numba "
          f"thread(s) ({agent.parallelism_}); {len(agent.episode_returns_)} episodes, "
          f"staleness mean "
          f"{agent.staleness_mean_:.2f} max {agent.staleness_max_}")
    print(f"mean return of the last {len(last)} training episodes: {last.mean():.1f}")
    print(f"evaluation return (deterministic, {args.n_eval_episodes} episodes): "
          f"{score:.1f}")
    png = plot_learning_curve(agent, args.plot, target=target)
    print(f"learning curve: {png}")
    model = _save(agent, args.save_model)
    summary = {"eval_return": score, "fit_seconds": seconds,
               "timesteps": agent.num_timesteps_,
               "episode_returns": agent.episode_returns_.tolist(),
               "history": agent.history_, "model": model,
               "config": dataclasses.asdict(args)}
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(summary, fh, indent=1, default=float)
    return summary


def run_lda(args: LDAArgs) -> dict[str, object]:
    """Fit DPSVI LDA on a corpus (the bundled NIPS papers, a UCI docword file, a Matrix
    Market file or a folder of text files); print topics and held-out perplexity."""
    import numpy as np

    from dask_dpsgd import DPSVILatentDirichletAllocation

    description, counts, vocab = _load_corpus(args)
    if vocab is None:
        vocab = np.array([f"#{i}" for i in range(counts.shape[1])])
    X = counts.astype("float64")
    train, test = _split(X.shape[0], args.test_size, args.random_state)
    X_train, X_test = X[train], X[test]
    print(f"{description}: {X_train.shape[0]} training / {X_test.shape[0]} held-out "
          f"documents, {X.shape[1]} words", flush=True)
    lda = DPSVILatentDirichletAllocation(
        n_components=args.n_components, max_iter=args.max_iter,
        batch_size=args.batch_size, evaluate_every=args.evaluate_every,
        n_workers=args.n_workers, threads_per_worker=args.threads_per_worker,
        parallelism=args.parallelism, random_state=args.random_state,
        verbose=args.verbose)
    t0 = time.perf_counter()
    with _cluster(args):
        lda.fit(X_train)
    seconds = time.perf_counter() - t0
    print(f"\nTrained {args.n_components} topics in {seconds:.1f} s on "
          f"{lda.n_workers_} worker(s) x {lda.threads_per_worker_} numba thread(s) "
          f"({lda.parallelism_}); "
          f"{lda.n_updates_applied_} updates, staleness mean "
          f"{lda.staleness_mean_:.2f} max {lda.staleness_max_}")
    topics = []
    for k, row in enumerate(lda.components_):
        words = [str(vocab[i]) for i in row.argsort()[::-1][:args.top_words]]
        topics.append(words)
        print(f"topic {k:3d}: {' '.join(words)}")
    perplexity = None
    if X_test.shape[0]:
        perplexity = lda.perplexity(X_test)
        print(f"\nheld-out perplexity: {perplexity:.1f}   (training bound_: "
              f"{lda.bound_:.1f})")
    else:
        print(f"\ntraining bound_ (perplexity): {lda.bound_:.1f}   (no held-out "
              "documents: --test-size 0)")
    plot = None
    if args.plot:
        shows = _plot_lda(lda, vocab, args.plot, args.top_words)
        plot = args.plot
        print(f"plot: {plot} (documents/s per pass; {shows})")
    model = _save(lda, args.save_model)
    summary = {"perplexity": perplexity, "bound": lda.bound_, "fit_seconds": seconds,
               "topics": topics, "history": lda.history_,
               "corpus": {"source": args.corpus, "n_documents": int(X.shape[0]),
                          "n_words": int(X.shape[1]), "n_train": int(X_train.shape[0]),
                          "n_test": int(X_test.shape[0])},
               "model": model, "plot": plot, "config": dataclasses.asdict(args)}
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(summary, fh, indent=1, default=float)
    return summary


# --------------------------------------------------------------------------- #
# Parsing
# --------------------------------------------------------------------------- #
def _field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under each dataclass field, base classes included (used as
    ``--help`` texts)."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in itertools.pairwise(body):
            if (isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant)):
                text = " ".join(str(nxt.value.value).split())
                docs[node.target.id] = text  # type: ignore[union-attr]
    return docs


def _int_or_float(text: str) -> int | float:
    """``"2"`` -> 2, ``"0.5"`` -> 0.5 (CountVectorizer's df semantics differ)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        msg = f"invalid int or float value: {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _arg_type(annotation: str) -> Any:
    if "int" in annotation and "float" in annotation:
        return _int_or_float
    if "str" in annotation:
        return str
    return float if "float" in annotation else int


def _add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    docs = _field_docs(cls)
    groups: dict[str, Any] = {}
    exclusive: dict[str, Any] = {}
    for group in (CORPUS, CLUSTER, OUTPUT):  # fixed order in --help
        if any(f.metadata.get("group") == group for f in dataclasses.fields(cls)):
            groups[group] = parser.add_argument_group(_GROUP_TITLES[group])
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        target = groups.get(meta.get("group"), parser)
        if meta.get("exclusive"):
            key = meta["exclusive"]
            if key not in exclusive:
                exclusive[key] = target.add_mutually_exclusive_group()
            target = exclusive[key]
        kwargs: dict[str, Any] = {"type": _arg_type(str(f.type)), "default": f.default,
                                  "help": f"{docs.get(f.name, '')} (default: "
                                          f"{f.default})"}
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        target.add_argument(flag, **kwargs)


def _check_args(parser: argparse.ArgumentParser, args: Any) -> None:
    """Cross-option checks argparse cannot express; parser.error on failure."""
    defaults = {f.name: f.default for f in dataclasses.fields(ClusterArgs)}
    if args.slurm_jobs is None:
        set_alone = [f"--{k.replace('_', '-')}" for k in defaults
                     if k.startswith("slurm_") and getattr(args, k) != defaults[k]]
        if set_alone:
            parser.error(f"{', '.join(set_alone)} only appl"
                         f"{'ies' if len(set_alone) == 1 else 'y'} with --slurm-jobs")
    elif args.slurm_jobs < 1:
        parser.error(f"--slurm-jobs must be >= 1, got {args.slurm_jobs}")
    if isinstance(args, LDAArgs):
        if not 0 <= args.test_size < 1:
            parser.error(f"--test-size must be in [0, 1), got {args.test_size}")
        if args.vocab is not None and args.corpus == "nips":
            parser.error("--vocab applies to a docword or Matrix Market --corpus file, "
                         "not to the bundled NIPS corpus")


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser, its subcommands ``lda`` and ``a2c`` included.

    The documentation's CLI reference renders its ``--help`` texts at build time
    (``docs/_ext/cli_help.py``), so they are never copied by hand.
    """
    parser = argparse.ArgumentParser(
        prog="python -m dask_dpsgd",
        description="DPSGD on Dask: lock-free numba cores x asynchronous workers.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_lda = sub.add_parser("lda", help="LDA (DPSVI) on NIPS, a bag-of-words file or "
                           "a folder of texts", description=run_lda.__doc__)
    _add_dataclass_args(p_lda, LDAArgs)
    p_a2c = sub.add_parser("a2c", help="HSA2C actor-critic on a gymnasium environment",
                           description=run_a2c.__doc__)
    _add_dataclass_args(p_a2c, A2CArgs)
    return parser


def _subcommand_parsers(parser: argparse.ArgumentParser
                        ) -> dict[str, argparse.ArgumentParser]:
    """``{name: parser}`` of the subcommands of a :func:`build_parser` parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dask_dpsgd`` and the ``dask-dpsgd`` script."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    sub_parser = _subcommand_parsers(parser)[ns.command]
    cls, run = (LDAArgs, run_lda) if ns.command == "lda" else (A2CArgs, run_a2c)
    fields = {f.name for f in dataclasses.fields(cls)}
    args = cls(**{k: v for k, v in vars(ns).items() if k in fields})
    _check_args(sub_parser, args)
    # The progress bar already shows the dashboard link; the log stays for warnings,
    # including distributed's (its INFO lines about the embedded cluster are noise).
    # distributed sets its loggers' levels when imported: import it first.
    import distributed  # noqa: F401

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    try:
        if args.slurm_jobs is not None:
            _require_jobqueue()  # fail before reading the corpus
        run(args)
    except CLIError as exc:
        sub_parser.exit(1, f"{sub_parser.prog}: error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
