"""The paper's claims on LDA: each level of DPSGD alone and combined, staleness, bytes.

Three experiments on one corpus (default: the bundled NIPS papers, 90/10 split), each
written to one JSON file that ``summarize.py`` turns into a section of
``benchmarks/RESULTS.md`` with its plots:

* ``modes``: held-out perplexity vs wall-clock time for every layout ``MxP``
  (``M`` workers x ``P`` numba threads; 1x1 is serial, 1xP Hogwild only, Mx1 parameter
  server only, MxP both) and scikit-learn's online LDA, and the speed-up of each layout
  to the serial run's final held-out perplexity. Before it, the run measures what the
  machine's cores deliver to perfectly parallel work (``_ceiling.py``), the ceiling
  any speed-up on it is judged against. Each point is its own fit from scratch
  with ``max_iter = n`` (the same seed), so every point is a real, complete run;
  its time is ``history_[-1]["time/elapsed_s"]`` (parameter server start to the end
  of pass ``n``: the passes and what runs between them; shard placement and the final
  training-set bound are left out and recorded as ``fit_wall_s``). scikit-learn's time
  is the sum of its ``partial_fit`` passes.
* ``staleness``: measured staleness (mean, max, histogram) for layouts with more
  workers and threads than the machine has cores, at two minibatch sizes (so two
  iteration counts ``T``), against the paper's bounds (workers <= T^(1/2),
  cores <= T^(1/4)), and the held-out perplexity relative to the serial run.
* ``comm``: bytes pushed and pulled per update as the vocabulary grows (the ``V`` most
  frequent words), against the dense ``K x V`` matrix a dense push/pull would move.

The script runs on the current Dask cluster: ``--scheduler-address`` (a big
``LocalCluster``, a dask-jobqueue ``SLURMCluster``'s scheduler, ...), else a
``LocalCluster`` on 127.0.0.1 per experiment with as many single-threaded Dask workers as
its largest layout and numba pools as large as its largest ``P``. Layouts choose workers
and threads explicitly (``n_workers`` / ``threads_per_worker``) and pass the matching
``parallelism``.

Run from the repository root::

    PYTHONPATH=. python benchmarks/bench_lda_modes.py
    python benchmarks/summarize.py
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _ceiling
import _common

KIND_MODES = "lda-modes"
KIND_STALENESS = "lda-staleness"
KIND_COMM = "lda-comm"
EXPERIMENTS = ("modes", "staleness", "comm")


@dataclass(frozen=True, slots=True)
class BenchLDAModesConfig:
    """DPSVI's modes, staleness and communication on a real corpus (issue #4)."""

    experiments: tuple[str, ...] = EXPERIMENTS
    """Which experiments to run (modes, staleness, comm)."""
    layouts: tuple[str, ...] = ("1x1", "1x2", "2x1")
    """modes: layouts MxP (M workers x P numba threads); 1x1 (serial) is always run."""
    n_components: int = 20
    """Topics K."""
    passes: int = 5
    """modes: the serial run's passes; its held-out perplexity after them is the target."""
    extra_passes: int = 2
    """modes: passes beyond ``passes`` the other layouts may take to reach the target."""
    repeats: int = 3
    """Seeds per setting (random_state, random_state + 1, ...)."""
    random_state: int = 0
    """First seed."""
    batch_size: int = 128
    """Documents per minibatch (modes, comm)."""
    staleness_layouts: tuple[str, ...] = ("1x1", "2x1", "4x1", "8x1", "1x2", "2x2",
                                          "4x2")
    """staleness: layouts, oversubscribing the machine on purpose."""
    staleness_batch_sizes: tuple[int, ...] = (128, 32)
    """staleness: minibatch sizes (fewer documents per update = more updates T)."""
    staleness_passes: int = 3
    """staleness: passes per fit."""
    staleness_repeats: int = 2
    """staleness: seeds per setting."""
    comm_vocab: tuple[int, ...] = (500, 2000, 5000, 0)
    """comm: vocabulary sizes (the most frequent words; 0 = all)."""
    comm_split: tuple[int, ...] = (4, 16)
    """comm: also the whole vocabulary with every word split into this many words
    (each token of word w goes to one of its copies at random, seeded): a corpus with
    the same tokens and a vocabulary this many times larger."""
    comm_layout: str = "2x1"
    """comm: layout."""
    comm_passes: int = 2
    """comm: passes per fit (without the synchronous warm-up)."""
    scheduler_address: str | None = None
    """Run on this Dask scheduler instead of starting LocalClusters."""
    max_load: float = 0.7
    """Wait until the 1-minute load average is at most this before each experiment."""
    max_load_wait: float = 300.0
    """Longest wait for the load to drop, in seconds (then run anyway, recorded)."""
    output_dir: str = "benchmarks/results"
    """Where lda_modes.json, lda_staleness.json and lda_comm.json are written."""


# --------------------------------------------------------------------- helpers


def parse_layout(text: str) -> tuple[int, int]:
    """``"MxP"`` -> ``(M, P)``."""
    try:
        m, p = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"layout {text!r} is not of the form MxP (e.g. 2x1)") from None
    if m < 1 or p < 1:
        raise SystemExit(f"layout {text!r}: workers and threads must be >= 1")
    return m, p


def mode_of(m: int, p: int) -> str:
    """The ``parallelism`` value of layout ``m x p``."""
    if m == 1:
        return "serial" if p == 1 else "hogwild"
    return "parameter-server" if p == 1 else "dpsgd"


def _corpus() -> tuple[Any, Any]:
    """Float64 CSR train/test matrices of the bundled NIPS corpus's 90/10 split."""
    import numpy as np
    import scipy.sparse as sp

    from dask_dpsgd.datasets import load_nips

    bunch = load_nips()
    X = sp.csr_matrix(bunch.data, dtype=np.float64)
    return X[bunch.train_indices], X[bunch.test_indices]


def _params(cfg: BenchLDAModesConfig, n_train: int, seed: int,
            **over: Any) -> dict[str, Any]:
    return {"n_components": cfg.n_components, "batch_size": cfg.batch_size,
            "total_samples": n_train, "random_state": seed, "evaluate_every": -1,
            **over}


def _fit_dpsvi(X_train: Any, X_test: Any, layout: tuple[int, int],
               params: dict[str, Any]) -> dict[str, Any]:
    """One DPSVI fit on the current client; its timings, accounting and quality."""
    from dask_dpsgd import DPSVILatentDirichletAllocation

    m, p = layout
    est = DPSVILatentDirichletAllocation(n_workers=m, threads_per_worker=p,
                                         parallelism=mode_of(m, p), **params)
    t0 = time.perf_counter()
    est.fit(X_train)
    wall = time.perf_counter() - t0
    h = est.history_
    return {
        "layout": f"{m}x{p}", "workers": m, "threads": p, "mode": est.parallelism_,
        "passes": est.n_iter_, "time_s": h[-1]["time/elapsed_s"], "fit_wall_s": wall,
        "pass_s": [r["time/pass_s"] for r in h],
        "compute_s": [r["time/compute_s"] for r in h],
        "wait_s": [r["time/wait_s"] for r in h],
        "perplexity": float(est.perplexity(X_test)),
        # updates: pushes applied (a warm-up step is one push per worker's share);
        # steps: SVI steps, the paper's T.
        "updates": est.n_updates_applied_, "steps": est.n_batch_iter_ - 1,
        "sent": est.n_pushes_sent_,
        "rejected": est.n_updates_rejected_,
        "staleness_mean": est.staleness_mean_, "staleness_max": est.staleness_max_,
        "staleness_histogram": est.staleness_histogram_.tolist(),
        "bytes_pushed": est.comm_bytes_pushed_, "bytes_pulled": est.comm_bytes_pulled_,
    }


class _Cluster:
    """The experiment's Dask cluster: the given scheduler, or a LocalCluster."""

    def __init__(self, cfg: BenchLDAModesConfig, layouts: list[tuple[int, int]]):
        import distributed

        self.local = None
        if cfg.scheduler_address:
            self.client = distributed.Client(cfg.scheduler_address)
        else:
            self.local = _common.start_local_cluster(max(m for m, _ in layouts),
                                                     max(p for _, p in layouts))
            self.client = distributed.Client(self.local)

    def __enter__(self) -> _Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        if self.local is not None:
            self.local.close()


def _quiet(cfg: BenchLDAModesConfig) -> dict[str, Any]:
    q = _common.wait_for_quiet(cfg.max_load, cfg.max_load_wait)
    print(f"[load] {q['load_before']:.2f} -> {q['load_after']:.2f} after "
          f"{q['waited_s']:.0f}s (quiet: {q['quiet']})", flush=True)
    return q


# ------------------------------------------------------------------ experiments


def _with_serial(texts: tuple[str, ...]) -> list[tuple[int, int]]:
    """The layouts of ``texts``, with 1x1 (the serial reference) first if missing."""
    layouts = [parse_layout(s) for s in texts]
    return layouts if (1, 1) in layouts else [(1, 1), *layouts]


@contextlib.contextmanager
def _experiment(cfg: BenchLDAModesConfig, X_train: Any, X_test: Any,
                layouts: list[tuple[int, int]]) -> Iterator[list[tuple[int, int]]]:
    """The cluster of an experiment, warmed up by excluded fits of every layout (they
    load the numba kernels into every worker)."""
    with _Cluster(cfg, layouts):
        for layout in layouts:
            _fit_dpsvi(X_train[:256], X_test, layout,
                       _params(cfg, 256, cfg.random_state, max_iter=1))
        yield layouts


def run_modes(cfg: BenchLDAModesConfig, X_train: Any, X_test: Any,
              save: Any) -> list[dict[str, Any]]:
    """Held-out perplexity after each pass count, per layout, and scikit-learn's."""
    from sklearn.decomposition import LatentDirichletAllocation

    runs: list[dict[str, Any]] = []
    with _experiment(cfg, X_train, X_test, _with_serial(cfg.layouts)) as layouts:
        for rep, seed in enumerate(_common.seeds(cfg.random_state, cfg.repeats)):
            # scikit-learn: one partial_fit per pass, scored between passes (untimed).
            sk = LatentDirichletAllocation(**_common.sklearn_equivalent(
                _params(cfg, X_train.shape[0], seed), n_jobs=1))
            elapsed = 0.0
            for n in range(1, cfg.passes + cfg.extra_passes + 1):
                t0 = time.perf_counter()
                sk.partial_fit(X_train)
                elapsed += time.perf_counter() - t0
                runs.append({"method": "sklearn", "layout": "sklearn", "seed": seed,
                             "rep": rep, "passes": n, "time_s": elapsed,
                             "perplexity": float(sk.perplexity(X_test)),
                             "load": _common.loadavg()[0]})
            order = layouts[rep % len(layouts):] + layouts[:rep % len(layouts)]
            for layout in order:
                last = cfg.passes + (0 if layout == (1, 1) else cfg.extra_passes)
                for n in range(1, last + 1):
                    r = _fit_dpsvi(X_train, X_test, layout,
                                   _params(cfg, X_train.shape[0], seed, max_iter=n))
                    r.update(method="dpsvi", seed=seed, rep=rep,
                             load=_common.loadavg()[0])
                    runs.append(r)
                    print(f"[modes seed {seed}] {r['layout']:>4s} passes {n}: "
                          f"{r['time_s']:6.2f}s perplexity {r['perplexity']:9.1f} "
                          f"staleness {r['staleness_mean']:.2f}", flush=True)
                save(runs)
    return runs


def run_staleness(cfg: BenchLDAModesConfig, X_train: Any, X_test: Any,
                  save: Any) -> list[dict[str, Any]]:
    """Staleness and quality for layouts beyond the machine, at two update counts."""
    runs: list[dict[str, Any]] = []
    with _experiment(cfg, X_train, X_test,
                     _with_serial(cfg.staleness_layouts)) as layouts:
        for rep, seed in enumerate(_common.seeds(cfg.random_state,
                                                 cfg.staleness_repeats)):
            for batch in cfg.staleness_batch_sizes:
                for layout in layouts:
                    r = _fit_dpsvi(X_train, X_test, layout,
                                   _params(cfg, X_train.shape[0], seed,
                                           batch_size=batch,
                                           max_iter=cfg.staleness_passes))
                    r.update(method="dpsvi", seed=seed, rep=rep, batch_size=batch,
                             load=_common.loadavg()[0])
                    runs.append(r)
                    print(f"[staleness seed {seed} batch {batch}] {r['layout']:>4s}: "
                          f"T={r['steps']} staleness mean {r['staleness_mean']:.2f} "
                          f"max {r['staleness_max']} perplexity "
                          f"{r['perplexity']:.1f}", flush=True)
                    save(runs)
    return runs


def split_words(X: Any, r: int, seed: int) -> Any:
    """Each token of word ``w`` becomes word ``w * r + j``, ``j`` uniform in ``[0, r)``."""
    import numpy as np
    import scipy.sparse as sp

    coo = X.tocoo()
    counts = coo.data.astype(np.int64)
    rows = np.repeat(coo.row, counts)
    cols = np.repeat(coo.col, counts) * r
    cols += np.random.default_rng(seed).integers(0, r, size=cols.shape[0])
    out = sp.csr_matrix((np.ones(cols.shape[0]), (rows, cols)),
                        shape=(X.shape[0], X.shape[1] * r))
    out.sum_duplicates()
    return out


def run_comm(cfg: BenchLDAModesConfig, X_train: Any, X_test: Any,
             save: Any) -> list[dict[str, Any]]:
    """Bytes per update as the vocabulary grows (the most frequent words kept)."""
    import numpy as np

    from dask_dpsgd._kernels.lda import minibatch_words

    layout = parse_layout(cfg.comm_layout)
    order = np.argsort(-np.asarray(X_train.sum(axis=0)).ravel(), kind="stable")
    runs: list[dict[str, Any]] = []
    with _experiment(cfg, X_train, X_test, [layout]):
        settings = [(v, 1) for v in cfg.comm_vocab] + [(0, r) for r in cfg.comm_split]
        for v, split in settings:
            keep = np.sort(order[:v] if v else order)
            Xtr, Xte = X_train[:, keep], X_test[:, keep]
            if split > 1:
                Xtr = split_words(Xtr, split, cfg.random_state)
                Xte = split_words(Xte, split, cfg.random_state + 1)
            nonempty = np.asarray(Xtr.sum(axis=1)).ravel() > 0
            Xtr = Xtr[nonempty]
            words = [len(minibatch_words(Xtr[a:a + cfg.batch_size].indices)[0])
                     for a in range(0, Xtr.shape[0], cfg.batch_size)]
            # No warm-up: its steps are one push per worker's share of a minibatch,
            # whose words overlap, so they move more bytes than the asynchronous
            # updates this experiment measures (the other experiments keep it).
            r = _fit_dpsvi(Xtr, Xte, layout,
                           _params(cfg, Xtr.shape[0], cfg.random_state,
                                   max_iter=cfg.comm_passes, warmup_updates=0))
            r.update(method="dpsvi", vocab=int(Xtr.shape[1]), split=split,
                     docs=int(Xtr.shape[0]),
                     minibatch_words_mean=float(np.mean(words)),
                     dense_bytes_per_update=8 * cfg.n_components * int(Xtr.shape[1]),
                     load=_common.loadavg()[0])
            runs.append(r)
            print(f"[comm] V={Xtr.shape[1]:6d}: "
                  f"{r['bytes_pushed'] / max(r['steps'], 1) / 1024:8.1f} KiB pushed "
                  f"+ {r['bytes_pulled'] / max(r['steps'], 1) / 1024:8.1f} KiB pulled"
                  f" per update (dense {r['dense_bytes_per_update'] / 1024:.1f} KiB)",
                  flush=True)
            save(runs)
    return runs


RUNNERS = {"modes": (KIND_MODES, "lda_modes.json", run_modes),
           "staleness": (KIND_STALENESS, "lda_staleness.json", run_staleness),
           "comm": (KIND_COMM, "lda_comm.json", run_comm)}


def main(cfg: BenchLDAModesConfig) -> list[Path]:
    unknown = set(cfg.experiments) - set(EXPERIMENTS)
    if unknown:
        raise SystemExit(f"unknown experiments {sorted(unknown)}; choose from "
                         f"{EXPERIMENTS}")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    X_train, X_test = _corpus()
    machine = _common.machine_facts()
    corpus = {"name": "nips", "train_docs": X_train.shape[0],
              "test_docs": X_test.shape[0], "vocab": X_train.shape[1]}
    # What the cores deliver to perfectly parallel work, for the speed-up's verdict.
    ceiling = _ceiling.ceiling() if "modes" in cfg.experiments else None
    written = []
    for name in cfg.experiments:
        kind, filename, runner = RUNNERS[name]
        path = Path(cfg.output_dir) / filename
        started = _common.now_iso()
        quiet = _quiet(cfg)
        t0 = time.perf_counter()

        def save(runs: list[dict[str, Any]], finished: str | None = None,
                 kind: str = kind, path: Path = path, started: str = started,
                 quiet: dict[str, Any] = quiet, t0: float = t0) -> Path:
            return _common.write_results(
                path, kind=kind, config=cfg, machine=machine, runs=runs,
                started=started, finished=finished, corpus=corpus, quiet=quiet,
                total_wall_s=time.perf_counter() - t0,
                **({"ceiling": ceiling} if kind == KIND_MODES else {}))

        runs = runner(cfg, X_train, X_test, save)
        written.append(save(runs, _common.now_iso()))
        print(f"wrote {path} ({time.perf_counter() - t0:.0f}s)", flush=True)
    return written


if __name__ == "__main__":
    main(_common.parse_config(BenchLDAModesConfig))
