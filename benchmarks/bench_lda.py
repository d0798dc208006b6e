"""DPSVI LDA vs scikit-learn's online LDA and gensim's LdaMulticore on the NIPS corpus.

Same run, same 90/10 split (``load_nips().train_indices`` / ``test_indices``), same
hyper-parameters (mapped by ``_common.sklearn_equivalent`` / ``gensim_equivalent``),
equal passes, several seeds, interleaved (seed loop outer, ``K`` and methods inner, the
method order rotated per seed). Three axes (docs/design.rst, "Benchmarks"):

* speed: documents per second of training, the mean of the per-pass rates (scikit-learn:
  each ``partial_fit`` over the training set timed alone; DPSVI: ``history_[i]
  ["time/docs_per_s"]``; gensim, which has no per-pass hook: passes x documents / fit
  time). Whole-fit wall time is recorded too (``fit_s``: scikit-learn's timed passes;
  DPSVI's ``fit()``, i.e. the passes, shard placement, the parameter-server start and
  the final training-set bound, as scikit-learn's ``fit`` computes it; gensim's
  ``LdaMulticore(...)`` call), and *CPU cores busy* = CPU seconds of all the run's
  processes / that wall time. A DPSVI worker's pass time splits into E-step compute
  (``time/compute_s``), waiting on the parameter server (``time/wait_s``) and the rest
  (task start, the first pull, pass 1's synchronous warm-up, the end-of-pass barrier).
* quality: held-out perplexity of the 150 test documents after ``--max-iter`` passes,
  always by scikit-learn's formula (``.perplexity``; gensim's topics are loaded into a
  scikit-learn estimator to be scored). The *doc-part* perplexity leaves out the
  topic-word term ``E[log p(beta|eta) - log q(beta|lambda)]`` of the bound, which does
  not shrink with the test set and dominates 150 documents at large ``K``.
* memory: peak PSS summed over every process of the run (driver, Dask workers or
  gensim's pool), sampled every 50 ms (``_common.PeakPss``); every (method, K, seed)
  runs in a fresh interpreter.

Every DPSVI run gets a fresh ``LocalCluster`` of its layout, started before the run and
closed after it (``_common.RunCluster``: no other layout's idle cluster shares the
machine) and warmed up by an excluded one-pass fit in the run's own process (it loads
the numba kernels into the workers): cluster start-up is not the algorithm's speed.

Run from the repository root::

    PYTHONPATH=. python benchmarks/bench_lda.py
    python benchmarks/summarize.py
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
from _probes import _worker_numba, _worker_read, _worker_reset

KIND = "lda"
# dpsvi-1x1 is the per-core reference: DPSVI's kernels against scikit-learn's on one
# core each, measured in the same run (what the 2-core layouts start from).
LAYOUTS = {"dpsvi-1x1": (1, 1), "dpsvi-1x2": (1, 2), "dpsvi-2x1": (2, 1)}
METHODS = ("sklearn", "dpsvi-1x1", "dpsvi-1x2", "dpsvi-2x1", "gensim")


@dataclass(frozen=True, slots=True)
class BenchLDAConfig:
    """DPSVI LDA vs scikit-learn and gensim on NIPS: docs/s, perplexity, memory."""

    n_components: tuple[int, ...] = (20, 100)
    """Numbers of topics K to benchmark."""
    max_iter: int = field(default=5, metadata={"aliases": ("--passes",)})
    """Passes over the training set per fit (equal for every method)."""
    repeats: int = 3
    """Repetitions (seeds random_state, random_state + 1, ...)."""
    random_state: int = 0
    """First seed."""
    batch_size: int = 128
    """Documents per minibatch (gensim: chunksize)."""
    learning_decay: float = 0.7
    """kappa of the step size (gensim: decay)."""
    learning_offset: float = 10.0
    """tau_0 of the step size (gensim: offset = tau_0 + 1, see gensim_equivalent)."""
    mean_change_tol: float = 1e-3
    """E-step tolerance (gensim: gamma_threshold)."""
    max_doc_update_iter: int = 100
    """E-step iteration cap (gensim: iterations)."""
    prefetch: bool = False
    """DPSVI: overlap each worker's next E-step with its previous push."""
    methods: tuple[str, ...] = METHODS
    """Methods to run, among sklearn, dpsvi-1x1, dpsvi-1x2, dpsvi-2x1, gensim."""
    gensim_workers: int = 1
    """LdaMulticore worker processes (its main process also does the M-step)."""
    package_source: str = "head"
    """Code measured: head (the last commit, frozen in a temporary copy) or worktree
    (a copy of the files as they are, uncommitted edits included)."""
    output: str = "benchmarks/results/lda_vs_sklearn_gensim.json"
    """JSON file the raw runs are written to (overwritten)."""


# --------------------------------------------------------------------- helpers


def _load_split() -> tuple[Any, Any, Any]:
    """Float64 CSR train/test matrices of the 90/10 NIPS split and the vocabulary."""
    import numpy as np
    import scipy.sparse as sp

    from dask_dpsgd.datasets import load_nips

    bunch = load_nips()
    X = sp.csr_matrix(bunch.data, dtype=np.float64)
    return X[bunch.train_indices], X[bunch.test_indices], bunch.feature_names


def _estimator_params(task: dict[str, Any], n_train: int) -> dict[str, Any]:
    """``DPSVILatentDirichletAllocation`` parameters of a run (the common reference)."""
    return {
        "n_components": task["n_components"],
        "learning_decay": task["learning_decay"],
        "learning_offset": task["learning_offset"],
        "batch_size": task["batch_size"],
        "max_iter": task["max_iter"],
        "mean_change_tol": task["mean_change_tol"],
        "max_doc_update_iter": task["max_doc_update_iter"],
        "evaluate_every": -1,
        # What fit() uses as D; partial_fit (scikit-learn's timed loop) needs it said.
        "total_samples": n_train,
        "random_state": task["seed"],
    }


def _score(components: Any, alpha: float, eta: float, params: dict[str, Any],
           X_test: Any) -> dict[str, float]:
    """Held-out perplexity of topics ``components`` by scikit-learn's own formula.

    Also returns the perplexity of the document part of the bound alone: scikit-learn's
    bound adds the topic-word term ``E[log p(beta|eta) - log q(beta|lambda)]``, which
    does not shrink with the test set and dominates 150 documents at large K.
    """
    import numpy as np
    from sklearn.decomposition import LatentDirichletAllocation
    from sklearn.decomposition._lda import _dirichlet_expectation_2d
    from sklearn.utils import check_random_state

    lam = np.ascontiguousarray(components, dtype=np.float64)
    lda = LatentDirichletAllocation(**_common.sklearn_equivalent(params, n_jobs=1))
    lda.components_ = lam
    lda.exp_dirichlet_component_ = np.exp(_dirichlet_expectation_2d(lam))
    lda.doc_topic_prior_ = float(alpha)
    lda.topic_word_prior_ = float(eta)
    lda.n_features_in_ = lam.shape[1]
    lda.n_batch_iter_ = 1
    lda.n_iter_ = 0
    lda.random_state_ = check_random_state(0)
    perp = float(lda.perplexity(X_test))
    return {"perplexity_sklearn_scored": perp,
            "topic_word_term": _topic_word_term(lam, eta)}


def _topic_word_term(lam: Any, eta: float) -> float:
    """``E[log p(beta|eta) - log q(beta|lambda)]``, from scikit-learn's bound."""
    import numpy as np
    from scipy.special import gammaln, psi

    elog = psi(lam) - psi(lam.sum(axis=1))[:, None]
    return float(np.sum((eta - lam) * elog) + np.sum(gammaln(lam) - gammaln(eta))
                 + np.sum(gammaln(eta * lam.shape[1]) - gammaln(lam.sum(axis=1))))


def _doc_part_perplexity(perplexity: float, topic_word_term: float,
                         tokens: float) -> float:
    """``exp(-(bound - topic_word_term) / tokens)`` from ``exp(-bound / tokens)``."""
    import math

    bound = -math.log(perplexity) * tokens
    return math.exp(-(bound - topic_word_term) / tokens)


# ----------------------------------------------------------------- one run each


def _run_sklearn(task: dict[str, Any], X_train: Any, X_test: Any) -> dict[str, Any]:
    from sklearn.decomposition import LatentDirichletAllocation

    params = _estimator_params(task, X_train.shape[0])
    est = LatentDirichletAllocation(**_common.sklearn_equivalent(params, n_jobs=1))
    pass_s = []
    cpu0 = _common.cpu_seconds()
    with _common.PeakPss() as pss:
        for _ in range(task["max_iter"]):
            t0 = time.perf_counter()
            est.partial_fit(X_train)
            pass_s.append(time.perf_counter() - t0)
    cpu = _common.cpu_seconds() - cpu0
    peak = _common.peak_rss_mib()
    n = X_train.shape[0]
    return {
        "pass_s": pass_s,
        "pass_docs_per_s": [n / s for s in pass_s],
        "fit_s": sum(pass_s),
        "cpu_s": cpu,
        "peak_rss_mib": peak,
        "peak_rss_parts": {"driver": peak},
        "peak_pss_mib": pss.peak_mib,
        "pss_samples": pss.n_samples,
        "perplexity": float(est.perplexity(X_test)),
        "components": est.components_,
        "alpha": est.doc_topic_prior_,
        "eta": est.topic_word_prior_,
        "params": params,
    }


def _run_dpsvi(task: dict[str, Any], X_train: Any, X_test: Any) -> dict[str, Any]:
    import distributed

    from dask_dpsgd import DPSVILatentDirichletAllocation

    m, p = LAYOUTS[task["method"]]
    params = _estimator_params(task, X_train.shape[0])
    params.pop("total_samples")  # fit() uses the number of documents
    est = DPSVILatentDirichletAllocation(**params, n_workers=m, threads_per_worker=p,
                                         prefetch=task["prefetch"])
    with distributed.Client(task["scheduler"], set_as_default=True) as client:
        if len(client.scheduler_info(n_workers=-1)["workers"]) != m:
            raise RuntimeError(f"{task['method']}: cluster does not have {m} workers")
        if task.get("warm_first"):
            # A fresh cluster (_common.RunCluster): load the kernels into its workers
            # first, excluded, as the start-of-benchmark warm-up did for the first one.
            DPSVILatentDirichletAllocation(**{**params, "max_iter": 1}, n_workers=m,
                                           threads_per_worker=p,
                                           prefetch=task["prefetch"]).fit(X_train[:256])
        before = client.run(_worker_reset)
        cpu0 = _common.cpu_seconds()
        with _common.PeakPss([b["pid"] for b in before.values()]) as pss:
            t0 = time.perf_counter()
            est.fit(X_train)
            fit_s = time.perf_counter() - t0
        cpu = _common.cpu_seconds() - cpu0
        after = client.run(_worker_read)
    driver_peak = _common.peak_rss_mib()
    worker_peaks = {a: after[a]["peak_rss_mib"] for a in sorted(after)}
    worker_cpu = sum(after[a]["cpu_s"] - before[a]["cpu_s"] for a in after)
    hist = est.history_
    return {
        "pass_s": [h["time/pass_s"] for h in hist],
        "pass_docs_per_s": [h["time/docs_per_s"] for h in hist],
        "fit_s": fit_s,
        "cpu_s": cpu + worker_cpu,
        "peak_rss_mib": driver_peak + sum(worker_peaks.values()),
        "peak_rss_parts": {"driver": driver_peak, **{f"worker{i}": v for i, v in
                                                    enumerate(worker_peaks.values())}},
        "peak_pss_mib": pss.peak_mib,
        "pss_samples": pss.n_samples,
        "perplexity": float(est.perplexity(X_test)),
        "components": est.components_,
        "alpha": est.doc_topic_prior_,
        "eta": est.topic_word_prior_,
        "params": {**params, "n_workers": m, "threads_per_worker": p,
                   "prefetch": task["prefetch"]},
        "dpsvi": {
            "history": hist,
            "n_workers_": est.n_workers_,
            "threads_per_worker_": est.threads_per_worker_,
            "n_pushes_sent_": est.n_pushes_sent_,
            "n_updates_applied_": est.n_updates_applied_,
            "n_updates_rejected_": est.n_updates_rejected_,
            "staleness_mean_": est.staleness_mean_,
            "staleness_max_": est.staleness_max_,
            "staleness_histogram_": est.staleness_histogram_.tolist(),
            "comm_bytes_pushed_": est.comm_bytes_pushed_,
            "comm_bytes_pulled_": est.comm_bytes_pulled_,
            "train_perplexity": est.bound_,
        },
    }


def _run_gensim(task: dict[str, Any], X_train: Any, X_test: Any,
                vocab: Any) -> dict[str, Any]:
    import numpy as np
    from gensim.matutils import Sparse2Corpus
    from gensim.models import LdaMulticore

    params = _estimator_params(task, X_train.shape[0])
    # A list of (id, count) documents, built outside the timed fit (gensim streams any
    # iterable; a list is its fastest input).
    corpus = list(Sparse2Corpus(X_train, documents_columns=False))
    id2word = dict(enumerate(vocab))
    kwargs = _common.gensim_equivalent(params, workers=task["gensim_workers"])
    _common.reset_peak_rss()
    cpu0 = _common.cpu_seconds()
    with _common.PeakPss(include_children=True) as pss:
        t0 = time.perf_counter()
        lda = LdaMulticore(corpus=corpus, id2word=id2word, **kwargs)
        fit_s = time.perf_counter() - t0
    cpu = _common.cpu_seconds() - cpu0
    own = _common.peak_rss_mib()
    kids = _common.children_peak_rss_mib()
    n = X_train.shape[0]
    docs_per_s = task["max_iter"] * n / fit_s
    lam = lda.state.get_lambda().astype(np.float64)
    alpha = float(np.mean(lda.alpha))
    eta = float(np.mean(lda.eta))
    return {
        # No per-pass hook in LdaMulticore: every pass gets the fit's mean rate.
        "pass_s": [fit_s / task["max_iter"]] * task["max_iter"],
        "pass_docs_per_s": [docs_per_s] * task["max_iter"],
        "fit_s": fit_s,
        "cpu_s": cpu,
        "peak_rss_mib": own + kids,
        "peak_rss_parts": {"driver": own, "gensim_worker": kids},
        "peak_pss_mib": pss.peak_mib,
        "pss_samples": pss.n_samples,
        "perplexity": None,  # filled by the scikit-learn scoring below
        "components": lam,
        "alpha": alpha,
        "eta": eta,
        "params": params,
        "gensim": {k: v for k, v in kwargs.items()},
    }


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Child-process entry: one (method, K, seed) run; returns its JSON record."""
    import numpy as np

    logging.getLogger("gensim").setLevel(logging.WARNING)
    X_train, X_test, vocab = _load_split()
    if task.get("n_docs"):
        X_train = X_train[: task["n_docs"]]
    rss_loaded = _common.rss_mib()
    _common.reset_peak_rss()
    method = task["method"]
    if method == "sklearn":
        out = _run_sklearn(task, X_train, X_test)
    elif method in LAYOUTS:
        out = _run_dpsvi(task, X_train, X_test)
    elif method == "gensim":
        out = _run_gensim(task, X_train, X_test, vocab)
    else:
        raise ValueError(f"unknown method {method!r}")
    lam = out.pop("components")
    alpha, eta = out.pop("alpha"), out.pop("eta")
    scored = _score(lam, alpha, eta, out["params"], X_test)
    if out["perplexity"] is None:
        out["perplexity"] = scored["perplexity_sklearn_scored"]
    tokens = float(X_test.sum())
    rates = out["pass_docs_per_s"]
    import dask_dpsgd

    return {
        "method": method,
        "dask_dpsgd": dask_dpsgd.__file__,
        "n_components": task["n_components"],
        "seed": task["seed"],
        "rep": task["rep"],
        "order": task["order"],
        "warmup": bool(task.get("warmup")),
        "n_train": int(X_train.shape[0]),
        "n_test": int(X_test.shape[0]),
        "test_tokens": tokens,
        "docs_per_s": float(np.mean(rates)),
        **out,
        **scored,
        "perplexity_doc_part": _doc_part_perplexity(out["perplexity"],
                                                    scored["topic_word_term"], tokens),
        "cpu_util": out["cpu_s"] / out["fit_s"],
        "rss_after_load_mib": rss_loaded,
    }


# ------------------------------------------------------------------------ driver


def main(cfg: BenchLDAConfig) -> Path:
    import distributed

    unknown = set(cfg.methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    import shutil

    logging.getLogger("distributed").setLevel(logging.WARNING)
    # Freeze the code under test before any process imports it.
    snap_root, snapshot = _common.snapshot_package(cfg.package_source)
    machine = _common.machine_facts()
    package = Path(__file__).resolve().parents[1] / "dask_dpsgd"
    digest_start = _common.source_digest(package)
    started = _common.now_iso()
    base = {k: v for k, v in dataclasses.asdict(cfg).items()
            if k not in ("n_components", "methods", "output", "repeats")}
    cluster_start: dict[str, float] = {}
    warmups: list[dict[str, Any]] = []
    worker_numba: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    t_start = time.perf_counter()

    def save(finished: str | None = None) -> Path:
        # The working tree's digest (the measured code is the snapshot, which cannot
        # change): tells whether the repository moved on during the run.
        digests = {"start": digest_start}
        if finished:
            digests["end"] = _common.source_digest(package)
        return _common.write_results(
            cfg.output, kind=KIND, config=cfg, machine=machine, runs=runs,
            started=started, finished=finished, warmups=warmups,
            cluster_start_s=cluster_start,
            worker_numba=worker_numba, worktree_digest=digests, snapshot=snapshot,
            total_wall_s=time.perf_counter() - t_start)

    try:
        for method in cfg.methods:
            if method not in LAYOUTS:
                continue
            # Warm-up fit, excluded: compiles or loads the numba kernels (cache=True).
            # Each measured run then gets a fresh cluster of its own
            # (_common.RunCluster), warmed up again inside the run's process.
            with _common.RunCluster(*LAYOUTS[method]) as rc:
                cluster_start[method] = rc.start_s
                task = {**base, "method": method, "n_components": cfg.n_components[0],
                        "max_iter": 1, "seed": cfg.random_state, "rep": -1,
                        "order": -1, "scheduler": rc.address, "warmup": True}
                w = _common.run_isolated(__file__, task, timeout=600)
                warmups.append(w)
                with distributed.Client(rc.address, set_as_default=False) as probe:
                    worker_numba[method] = list(probe.run(_worker_numba).values())
            print(f"[warm-up] {method}: fit {w['fit_s']:.2f}s "
                  f"(child {w['child_wall_s']:.1f}s)", flush=True)
        seeds = _common.seeds(cfg.random_state, cfg.repeats)
        for rep, seed in enumerate(seeds):
            order = list(cfg.methods[rep % len(cfg.methods):]
                         + cfg.methods[:rep % len(cfg.methods)])
            for k in cfg.n_components:
                for i, method in enumerate(order):
                    task = {**base, "method": method, "n_components": k, "seed": seed,
                            "rep": rep, "order": i}
                    if method in LAYOUTS:
                        with _common.RunCluster(*LAYOUTS[method]) as rc:
                            task["scheduler"] = rc.address
                            task["warm_first"] = True
                            r = _common.run_isolated(__file__, task, timeout=900)
                        r["cluster_start_s"] = rc.start_s
                    else:
                        r = _common.run_isolated(__file__, task, timeout=900)
                    runs.append(r)
                    print(f"[rep {rep} seed {seed}] K={k:<4d} {method:10s} "
                          f"{r['docs_per_s']:8.0f} docs/s  fit {r['fit_s']:6.2f}s  "
                          f"perplexity {r['perplexity']:12.1f}  "
                          f"PSS {r['peak_pss_mib']:6.0f} MiB  "
                          f"load {r['loadavg_before'][0]:.2f}", flush=True)
                    save()
    finally:
        shutil.rmtree(snap_root, ignore_errors=True)
    path = save(_common.now_iso())
    print(f"wrote {path} in {time.perf_counter() - t_start:.0f}s", flush=True)
    return path


if __name__ == "__main__":
    if not _common.worker_main(run_one):
        main(_common.parse_config(BenchLDAConfig))
