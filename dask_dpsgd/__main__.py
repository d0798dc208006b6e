"""Command line: ``python -m dask_dpsgd {lda,a2c} ...`` (the main jobs) and options.

Every flag mirrors an estimator parameter (``--n-components`` <-> ``n_components``).
The parser is plain :mod:`argparse`, declared in :func:`build_parsers`; options of the
same kind (corpus, cluster, outputs) are grouped in ``--help``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from dask_dpsgd._utils._validation import PARALLELISM


class CLIError(Exception):
    """A user error (bad file, missing optional dependency): printed, exit status 1."""


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
def _cluster(args: argparse.Namespace) -> Iterator[None]:
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
def _slurm_client(jobqueue: Any, args: argparse.Namespace) -> Iterator[None]:
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
#: Options for a folder of text files only, passed to CountVectorizer.
FOLDER_OPTIONS = ("max_df", "min_df", "stop_words")


def corpus_format(path: str) -> str:
    """:func:`dask_dpsgd.datasets.corpus_format` (imported when used)."""
    from dask_dpsgd.datasets import corpus_format as fmt

    return fmt(path)


def _load_corpus(args: argparse.Namespace, defaults: dict[str, Any]
                 ) -> tuple[str, Any, Any]:
    """``(description, CSR counts, words or None)`` of ``--corpus``."""
    from dask_dpsgd.datasets import load_corpus
    from dask_dpsgd.datasets._base import check_corpus_options

    changed = [k for k in FOLDER_OPTIONS if getattr(args, k) != defaults[k]]
    try:
        kind = "nips" if args.corpus == "nips" else corpus_format(args.corpus)
        check_corpus_options(kind, args.vocab is not None, changed,
                             flag=lambda k: f"--{k.replace('_', '-')}")
        folder = {}
        if kind == "folder":
            folder = {k: getattr(args, k) for k in FOLDER_OPTIONS}
            if folder["stop_words"] == "none":
                folder["stop_words"] = None
        bunch = load_corpus(args.corpus, args.vocab, **folder)
    except (ValueError, OSError) as exc:
        raise CLIError(f"--corpus {args.corpus}: {exc}") from exc
    return bunch.description, bunch.data, bunch.feature_names


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
def _config(args: argparse.Namespace) -> dict[str, Any]:
    """The options a job ran with, for its JSON output."""
    return {k: v for k, v in vars(args).items() if k != "command"}


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
def run_a2c(args: argparse.Namespace) -> dict[str, object]:
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
               "config": _config(args)}
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(summary, fh, indent=1, default=float)
    return summary


def run_lda(args: argparse.Namespace, folder_defaults: dict[str, Any]
            ) -> dict[str, object]:
    """Fit DPSVI LDA on a corpus (the bundled NIPS papers, a UCI docword file, a Matrix
    Market file or a folder of text files); print topics and held-out perplexity."""
    import numpy as np

    from dask_dpsgd import DPSVILatentDirichletAllocation

    description, counts, vocab = _load_corpus(args, folder_defaults)
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
        from dask_dpsgd.plotting import plot_lda

        shows = plot_lda(lda, vocab, args.plot, top_words=args.top_words)
        plot = args.plot
        print(f"plot: {plot} (documents/s per pass; {shows})")
    model = _save(lda, args.save_model)
    summary = {"perplexity": perplexity, "bound": lda.bound_, "fit_seconds": seconds,
               "topics": topics, "history": lda.history_,
               "corpus": {"source": args.corpus, "n_documents": int(X.shape[0]),
                          "n_words": int(X.shape[1]), "n_train": int(X_train.shape[0]),
                          "n_test": int(X_test.shape[0])},
               "model": model, "plot": plot, "config": _config(args)}
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(summary, fh, indent=1, default=float)
    return summary


# --------------------------------------------------------------------------- #
# Parsing
# --------------------------------------------------------------------------- #
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


def _optional_float(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help texts with their defaults, and the description's paragraphs kept."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(super(_Formatter, self)._fill_text(p, width, indent)
                           for p in text.split("\n\n"))


def _layout_options(parser: argparse.ArgumentParser, what: str) -> None:
    """The engine's layout and seed (both subcommands)."""
    parser.add_argument("--n-workers", type=int, default=None, help=(
        "Dask workers (default: sized from this machine's cores, or all the "
        "cluster's)"))
    parser.add_argument("--threads-per-worker", type=int, default=None, help=(
        "Numba threads per worker (default: the worker's share of its host's cores)"))
    parser.add_argument("--parallelism", default="auto", choices=PARALLELISM, help=(
        "The engine's mode: serial (1 worker x 1 core), hogwild (1 worker x its "
        "cores), parameter-server (workers x 1 core), dpsgd (both), auto (sized to "
        "the cluster)."))
    parser.add_argument("--random-state", type=int, default=0, help=what)


def _cluster_options(parser: argparse.ArgumentParser) -> None:
    """Where the fit runs (both subcommands)."""
    group = parser.add_argument_group(
        "cluster (default: an embedded LocalCluster on this machine)")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("--scheduler-address", default=None, help=(
        "Address of a running Dask scheduler to use instead of the embedded "
        "cluster."))
    choice.add_argument("--slurm-jobs", type=int, default=None, help=(
        "Run on this many SLURM jobs of one Dask worker each (needs dask-jobqueue); "
        "the jobs are cancelled when the command ends."))
    group.add_argument("--slurm-cores", type=int, default=4, help=(
        "Cores booked per SLURM job, all for numba (NUMBA_NUM_THREADS)."))
    group.add_argument("--slurm-memory", default="8GB", help="Memory per SLURM job.")
    group.add_argument("--slurm-walltime", default="01:00:00",
                       help="Wall-time limit of each SLURM job.")
    group.add_argument("--slurm-queue", default=None, help=(
        "SLURM partition (default: dask-jobqueue's configuration)."))


def _lda_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m dask_dpsgd lda``."""
    parser.add_argument("--n-components", type=int, default=20,
                        help="Number of topics K.")
    parser.add_argument("--max-iter", type=int, default=5,
                        help="Passes over the training documents.")
    parser.add_argument("--batch-size", type=int, default=128, help=(
        "Documents per minibatch (per push to the parameter server)."))
    parser.add_argument("--evaluate-every", type=int, default=-1, help=(
        "Compute the training perplexity every this many passes (<= 0: never)."))
    _layout_options(parser, "Seed of the initial topics, of every worker's random "
                    "stream and of the held-out split.")
    parser.add_argument("--verbose", type=int, default=1, help="0: no progress bar.")
    corpus = parser.add_argument_group("corpus (default: the bundled NIPS papers)")
    corpus.add_argument("--corpus", default="nips", help=(
        "'nips' (bundled), or a path: a UCI docword file (docword.*.txt[.gz]), a "
        "Matrix Market file (.mtx[.gz], documents are rows) or a folder of UTF-8 "
        "*.txt files."))
    corpus.add_argument("--vocab", default=None, help=(
        "Vocabulary of a docword or Matrix Market corpus, one word per line."))
    corpus.add_argument("--test-size", type=float, default=0.1, help=(
        "Fraction of the documents held out for the perplexity (0: none; seeded by "
        "--random-state)."))
    corpus.add_argument("--max-df", type=_int_or_float, default=0.95, help=(
        "Text folder: ignore words in more than this fraction (float) or number "
        "(int) of documents."))
    corpus.add_argument("--min-df", type=_int_or_float, default=2, help=(
        "Text folder: ignore words in fewer than this number (int) or fraction "
        "(float) of documents."))
    corpus.add_argument("--stop-words", default="english", choices=("english", "none"),
                        help="Text folder: stop-word list removed before counting.")
    _cluster_options(parser)
    out = parser.add_argument_group("outputs")
    out.add_argument("--top-words", type=int, default=10,
                     help="Words printed per topic.")
    out.add_argument("--output", default=None, help=(
        "Write the fitted topics, perplexity and history to this JSON file."))
    out.add_argument("--save-model", default=None, help=(
        "Write the fitted model to this .npz file (plain arrays, no pickle; see "
        "dask_dpsgd.io.load_model)."))
    out.add_argument("--plot", default=None, help=(
        "Write a PNG of the documents/s per pass and the training perplexity (with "
        "--evaluate-every) or the top words of each topic."))


def _a2c_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m dask_dpsgd a2c``."""
    parser.add_argument("--env", default="CartPole-v1",
                        help="Gymnasium environment id.")
    parser.add_argument("--total-timesteps", type=int, default=200_000, help=(
        "Environment steps to train for, summed over workers."))
    parser.add_argument("--target-return", type=_optional_float, default=None, help=(
        "Stop once the mean return of the last 100 episodes reaches this."))
    parser.add_argument("--n-envs", type=int, default=8,
                        help="Environments per worker.")
    _layout_options(parser, "Seed of the initial parameters and of every worker's "
                    "random stream.")
    parser.add_argument("--n-eval-episodes", type=int, default=20, help=(
        "Deterministic evaluation episodes after training."))
    parser.add_argument("--verbose", type=int, default=1, help="0: no progress bar.")
    _cluster_options(parser)
    out = parser.add_argument_group("outputs")
    out.add_argument("--plot", default="hsa2c_learning_curve.png",
                     help="Where to write the learning-curve PNG.")
    out.add_argument("--output", default=None, help=(
        "Write the evaluation return, episode returns and history to this JSON "
        "file."))
    out.add_argument("--save-model", default=None, help=(
        "Write the fitted agent to this .npz file (plain arrays, no pickle; see "
        "dask_dpsgd.io.load_model)."))


SLURM_OPTIONS = ("slurm_cores", "slurm_memory", "slurm_walltime", "slurm_queue")


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Cross-option checks argparse cannot express; parser.error on failure."""
    if args.slurm_jobs is None:
        set_alone = [f"--{k.replace('_', '-')}" for k in SLURM_OPTIONS
                     if getattr(args, k) != parser.get_default(k)]
        if set_alone:
            parser.error(f"{', '.join(set_alone)} only appl"
                         f"{'ies' if len(set_alone) == 1 else 'y'} with --slurm-jobs")
    elif args.slurm_jobs < 1:
        parser.error(f"--slurm-jobs must be >= 1, got {args.slurm_jobs}")
    if args.command == "lda":
        if not 0 <= args.test_size < 1:
            parser.error(f"--test-size must be in [0, 1), got {args.test_size}")
        if args.vocab is not None and args.corpus == "nips":
            parser.error("--vocab applies to a docword or Matrix Market --corpus file, "
                         "not to the bundled NIPS corpus")


def build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The command line's parser and its subcommands' parsers (``lda``, ``a2c``).

    The documentation's CLI reference renders their ``--help`` texts at build time
    (``docs/_ext/cli_help.py``), so they are never copied by hand.
    """
    parser = argparse.ArgumentParser(
        prog="python -m dask_dpsgd",
        description="DPSGD on Dask: lock-free numba cores x asynchronous workers.")
    sub = parser.add_subparsers(dest="command", required=True)
    subs = {
        "lda": sub.add_parser("lda", help="LDA (DPSVI) on NIPS, a bag-of-words file "
                              "or a folder of texts", description=run_lda.__doc__,
                              formatter_class=_Formatter),
        "a2c": sub.add_parser("a2c", help="HSA2C actor-critic on a gymnasium "
                              "environment", description=run_a2c.__doc__,
                              formatter_class=_Formatter),
    }
    _lda_parser(subs["lda"])
    _a2c_parser(subs["a2c"])
    return parser, subs


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (:func:`build_parsers`)."""
    return build_parsers()[0]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dask_dpsgd`` and the ``dask-dpsgd`` script."""
    parser, subs = build_parsers()
    args = parser.parse_args(argv)
    sub_parser = subs[args.command]
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
        if args.command == "lda":
            run_lda(args, {k: sub_parser.get_default(k) for k in FOLDER_OPTIONS})
        else:
            run_a2c(args)
    except CLIError as exc:
        sub_parser.exit(1, f"{sub_parser.prog}: error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
