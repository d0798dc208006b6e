"""Command line: ``python -m dask_dpsgd {lda,a2c} ...`` (the main jobs) and their options.

Every flag mirrors an estimator parameter (``--n-components`` <-> ``n_components``);
defaults are those of the dataclass below, whose field docstrings are the help texts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class LDAArgs:
    """Options of ``python -m dask_dpsgd lda``."""

    n_components: int = 20
    """Number of topics K."""
    max_iter: int = 5
    """Passes over the training documents."""
    batch_size: int = 128
    """Documents per minibatch (per push to the parameter server)."""
    n_workers: int | None = None
    """Dask workers (default: sized from this machine's cores)."""
    threads_per_worker: int | None = None
    """Numba threads per worker (default: the worker's share of its host's cores)."""
    random_state: int = 0
    """Seed of the initial topics and of every worker's random stream."""
    scheduler_address: str | None = None
    """Address of a running Dask scheduler to use instead of the embedded cluster."""
    top_words: int = 10
    """Words printed per topic."""
    output: str | None = None
    """Write the fitted topics, perplexity and history to this JSON file."""
    verbose: int = 1
    """0: no progress bar."""




@dataclass(frozen=True)
class A2CArgs:
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
    """Dask workers (default: sized from this machine's cores)."""
    threads_per_worker: int | None = None
    """Numba threads per worker (default: the worker's share of its host's cores)."""
    random_state: int = 0
    """Seed of the initial parameters and of every worker's random stream."""
    n_eval_episodes: int = 20
    """Deterministic evaluation episodes after training."""
    scheduler_address: str | None = None
    """Address of a running Dask scheduler to use instead of the embedded cluster."""
    plot: str = "hsa2c_learning_curve.png"
    """Where to write the learning-curve PNG."""
    output: str | None = None
    """Write the evaluation return, episode returns and history to this JSON file."""
    verbose: int = 1
    """0: no progress bar."""


def run_a2c(args: A2CArgs) -> dict[str, object]:
    """Train HSA2C on a gymnasium environment; print the evaluation return; plot."""
    import distributed

    from dask_dpsgd import HSA2CAgent
    from dask_dpsgd.plotting import plot_learning_curve

    target = args.target_return
    agent = HSA2CAgent(args.env, total_timesteps=args.total_timesteps,
                       target_return=target, n_envs=args.n_envs,
                       n_workers=args.n_workers,
                       threads_per_worker=args.threads_per_worker,
                       random_state=args.random_state, verbose=args.verbose)
    t0 = time.perf_counter()
    if args.scheduler_address:
        with distributed.Client(args.scheduler_address) as client:
            print(f"Dask dashboard: {client.dashboard_link}", flush=True)
            agent.fit()
    else:
        agent.fit()
    seconds = time.perf_counter() - t0
    score = agent.score(n_episodes=args.n_eval_episodes, random_state=args.random_state)
    last = agent.episode_returns_[-100:]
    print(f"\nTrained on {args.env} for {agent.num_timesteps_} steps in {seconds:.1f} s "
          f"({agent.num_timesteps_ / seconds:.0f} steps/s) on {agent.n_workers_} "
          f"worker(s) x {agent.threads_per_worker_} numba thread(s); "
          f"{len(agent.episode_returns_)} episodes, staleness mean "
          f"{agent.staleness_mean_:.2f} max {agent.staleness_max_}")
    print(f"mean return of the last {len(last)} training episodes: {last.mean():.1f}")
    print(f"evaluation return (deterministic, {args.n_eval_episodes} episodes): "
          f"{score:.1f}")
    png = plot_learning_curve(agent, args.plot, target=target)
    print(f"learning curve: {png}")
    summary = {"eval_return": score, "fit_seconds": seconds,
               "timesteps": agent.num_timesteps_,
               "episode_returns": agent.episode_returns_.tolist(),
               "history": agent.history_, "config": dataclasses.asdict(args)}
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(summary, fh, indent=1, default=float)
    return summary


def _field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under each dataclass field (used as ``--help`` texts)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, nxt in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)):
            docs[node.target.id] = str(nxt.value.value)  # type: ignore[union-attr]
    return docs


def _add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    docs = _field_docs(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        ann = str(f.type)
        typ = str if "str" in ann else float if "float" in ann else int
        parser.add_argument(flag, type=typ, default=f.default,
                            help=f"{docs.get(f.name, '')} (default: {f.default})")


def run_lda(args: LDAArgs) -> dict[str, object]:
    """Fit DPSVI LDA on the bundled NIPS corpus; print topics and held-out perplexity."""
    import distributed

    from dask_dpsgd import DPSVILatentDirichletAllocation
    from dask_dpsgd.datasets import load_nips

    corpus = load_nips()
    X = corpus.data.astype("float64")
    X_train, X_test = X[corpus.train_indices], X[corpus.test_indices]
    print(f"NIPS corpus: {X_train.shape[0]} training / {X_test.shape[0]} held-out "
          f"documents, {X.shape[1]} words", flush=True)
    lda = DPSVILatentDirichletAllocation(
        n_components=args.n_components, max_iter=args.max_iter,
        batch_size=args.batch_size, n_workers=args.n_workers,
        threads_per_worker=args.threads_per_worker, random_state=args.random_state,
        verbose=args.verbose)
    t0 = time.perf_counter()
    if args.scheduler_address:
        with distributed.Client(args.scheduler_address) as client:
            print(f"Dask dashboard: {client.dashboard_link}", flush=True)
            lda.fit(X_train)
    else:
        lda.fit(X_train)
    seconds = time.perf_counter() - t0
    perplexity = lda.perplexity(X_test)
    vocab = corpus.feature_names
    print(f"\nTrained {args.n_components} topics in {seconds:.1f} s on "
          f"{lda.n_workers_} worker(s) x {lda.threads_per_worker_} numba thread(s); "
          f"{lda.n_updates_applied_} updates, staleness mean "
          f"{lda.staleness_mean_:.2f} max {lda.staleness_max_}")
    topics = []
    for k, row in enumerate(lda.components_):
        words = [str(vocab[i]) for i in row.argsort()[::-1][:args.top_words]]
        topics.append(words)
        print(f"topic {k:3d}: {' '.join(words)}")
    print(f"\nheld-out perplexity: {perplexity:.1f}   (training bound_: {lda.bound_:.1f})")
    summary = {"perplexity": perplexity, "bound": lda.bound_, "fit_seconds": seconds,
               "topics": topics, "history": lda.history_,
               "config": dataclasses.asdict(args)}
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(summary, fh, indent=1, default=float)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dask_dpsgd`` and the ``dask-dpsgd`` script."""
    parser = argparse.ArgumentParser(
        prog="python -m dask_dpsgd",
        description="DPSGD on Dask: lock-free numba cores x asynchronous workers.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_lda = sub.add_parser("lda", help="LDA (DPSVI) on the bundled NIPS corpus",
                           description=run_lda.__doc__)
    _add_dataclass_args(p_lda, LDAArgs)
    p_a2c = sub.add_parser("a2c", help="HSA2C actor-critic on a gymnasium environment",
                           description=run_a2c.__doc__)
    _add_dataclass_args(p_a2c, A2CArgs)
    ns = parser.parse_args(argv)
    # The progress bar already shows the dashboard link; the log stays for warnings,
    # including distributed's (its INFO lines about the embedded cluster are noise here).
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    cls, run = (LDAArgs, run_lda) if ns.command == "lda" else (A2CArgs, run_a2c)
    fields = {f.name for f in dataclasses.fields(cls)}
    run(cls(**{k: v for k, v in vars(ns).items() if k in fields}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
