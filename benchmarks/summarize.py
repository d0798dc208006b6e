"""Render ``benchmarks/RESULTS.md`` from the JSON files in ``benchmarks/results/``.

One section per results file, rendered by the function registered for the file's
``"kind"`` in :data:`RENDERERS` (a new benchmark adds its renderer there; files of an
unknown kind get a generic section). Every number in RESULTS.md comes from the JSON, so
the file is regenerated, never edited, except for the hand-written notes between the
``<!-- notes:<name> -->`` markers of each section, which are carried over.

Usage, from the repository root::

    python benchmarks/summarize.py [--results-dir benchmarks/results]
        [--output benchmarks/RESULTS.md]
"""

# RESULTS.md is typeset: its multiplication signs, en dashes, minus signs and Greek
# letters are meant, not typos of x, - and a.
# ruff: noqa: RUF001, RUF002

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
import bench_nmf
import summarize_modes
from _tables import machine_block, med, spread, table

# --------------------------------------------------------------------- numbers


def _reproduce(doc: dict[str, Any]) -> list[str]:
    """The command that reproduces a results file, then the machine it ran on."""
    return ["Reproduce (from the repository root):", "", "```", doc["command"],
            "python benchmarks/summarize.py", "```", "", machine_block(doc)]


def _cluster_sentence(runs: list[dict[str, Any]], name: str, warm: str) -> str:
    """How the runs of ``name`` (DPSVI, HSA2C) got their Dask cluster."""
    fresh = [r for r in runs if "cluster_start_s" in r]
    if fresh:
        return (f"Every {name} run gets a fresh LocalCluster of its layout, started "
                "before the run and closed after it, so no other layout's idle "
                f"processes share the machine; {warm} (excluded) in the run's own "
                "process before it is measured; cluster start "
                f"{spread([r['cluster_start_s'] for r in fresh], '.1f')} s per run, "
                "excluded.")
    return (f"The {name} clusters (one per layout, or the given scheduler's) are "
            f"started once, warmed up by {warm} (excluded), and reused by every run.")


def _load_line(doc: dict[str, Any], runs: list[dict[str, Any]],
               busy_tail: str) -> list[str]:
    """The load average the runs started at.

    Runs follow each other within seconds, so a run's starting load counts the runs
    before it (the 1-minute average decays over minutes): it is reported, but it is not
    evidence of other processes; the quiet waits (``load_waits``) are. ``busy_tail``
    ends the line when the median is high.
    """
    loads = [r["loadavg_before"][0] for r in runs]
    if not loads:
        return []
    return [f"- 1-minute load average when each run started: median {med(loads):.2f}, "
            f"range {min(loads):.2f}–{max(loads):.2f} on {doc['machine']['cores']} "
            "cores" + (" (it counts the previous runs' own processes: the average decays "
                       "over minutes)" + busy_tail if med(loads) > 1.2 else ".")]


def _code_lines(doc: dict[str, Any], why: str) -> list[str]:
    """Which code was measured (the snapshot) and whether the package changed meanwhile."""
    out = []
    snap = doc.get("snapshot")
    if snap:
        what = ("the last commit" if snap["source"] == "head"
                else "the working tree, uncommitted edits included")
        out.append(f"- Code measured: {what} (`{(snap.get('commit') or '?')[:12]}`), "
                   f"copied to a temporary directory at the start{why} (source digest "
                   f"`{snap['digest']}`).")
    dig = doc.get("worktree_digest", {})
    if dig.get("end") and dig["end"] != dig["start"]:
        out.append("- The repository's `dask_dpsgd/` changed while the benchmark ran "
                   "(not the measured snapshot).")
    return out


# ----------------------------------------------------------------- LDA section

LDA_METHOD_TEXT = {
    "sklearn": "scikit-learn `LatentDirichletAllocation(learning_method=\"online\", "
               "n_jobs=1)`, one `partial_fit` per pass over the training set",
    "dpsvi-1x1": "DPSVI, 1 Dask worker × 1 numba thread (the per-core reference: one "
                 "core against scikit-learn's one)",
    "dpsvi-1x2": "DPSVI, 1 Dask worker × 2 numba threads",
    "dpsvi-2x1": "DPSVI, 2 Dask workers × 1 numba thread",
    "gensim": "gensim `LdaMulticore(workers=1)` (one E-step process + the M-step in "
              "the main process)",
}
DOCS_TARGET = 5.0
PERP_TARGET = 1.02


@dataclass(frozen=True)
class _Cell:
    docs: list[float]
    docs_ratio: list[float]
    perp: list[float]
    perp_ratio: list[float]
    doc_perp_ratio: list[float]
    fit_s: list[float]
    pss: list[float]
    rss: list[float]
    cpu_util: list[float]


def _lda_cells(runs: list[dict[str, Any]]) -> dict[tuple[int, str], _Cell]:
    by = {(r["n_components"], r["method"], r["seed"]): r for r in runs}
    keys = sorted({(r["n_components"], r["method"]) for r in runs})
    cells = {}
    for k, m in keys:
        rs = sorted((r for r in runs if r["n_components"] == k and r["method"] == m),
                    key=lambda r: r["seed"])
        dr, pr, dpr = [], [], []
        for r in rs:
            ref = by.get((k, "sklearn", r["seed"]))
            if ref is not None:
                dr.append(r["docs_per_s"] / ref["docs_per_s"])
                pr.append(r["perplexity"] / ref["perplexity"])
                dpr.append(r["perplexity_doc_part"] / ref["perplexity_doc_part"])
        cells[(k, m)] = _Cell(
            docs=[r["docs_per_s"] for r in rs], docs_ratio=dr,
            perp=[r["perplexity"] for r in rs], perp_ratio=pr, doc_perp_ratio=dpr,
            fit_s=[r["fit_s"] for r in rs],
            pss=[r["peak_pss_mib"] for r in rs],
            rss=[r["peak_rss_mib"] for r in rs],
            cpu_util=[r["cpu_util"] for r in rs])
    return cells


def _method_order(methods: list[str]) -> list[str]:
    known = [m for m in LDA_METHOD_TEXT if m in methods]
    return known + sorted(set(methods) - set(known))


def _dpsvi_breakdown(runs: list[dict[str, Any]], k: int, m: str) -> list[str] | None:
    rs = [r for r in runs
          if r["n_components"] == k and r["method"] == m and "dpsvi" in r]
    if not rs:
        return None
    comp, wait, other, stale, mb, over, first, rest = [], [], [], [], [], [], [], []
    for r in rs:
        hist = r["dpsvi"]["history"]
        nw = r["dpsvi"]["n_workers_"]
        pass_total = sum(h["time/pass_s"] for h in hist)
        c = sum(h["time/compute_s"] for h in hist) / nw
        w = sum(h["time/wait_s"] for h in hist) / nw
        comp.append(100 * c / pass_total)
        wait.append(100 * w / pass_total)
        other.append(100 * (pass_total - c - w) / pass_total)
        stale.append(r["dpsvi"]["staleness_mean_"])
        moved = r["dpsvi"]["comm_bytes_pushed_"] + r["dpsvi"]["comm_bytes_pulled_"]
        mb.append(moved / 2**20 / len(hist))
        over.append(r["fit_s"] - pass_total)
        first.append(hist[0]["time/docs_per_s"])
        if len(hist) > 1:
            rest.append(statistics.mean(h["time/docs_per_s"] for h in hist[1:]))
    return [f"K={k}", m, spread(comp, ".0f"), spread(wait, ".0f"), spread(other, ".0f"),
            spread(stale, ".2f"),
            str(max(r["dpsvi"]["staleness_max_"] for r in rs)),
            spread(mb, ".0f"), spread(over, ".2f")]


def _verdict(cells: dict[tuple[int, str], _Cell], ks: list[int],
             methods: list[str]) -> list[str]:
    out = []
    for k in ks:
        for m in methods:
            if m == "sklearn" or (k, m) not in cells:
                continue
            c = cells[(k, m)]
            if not c.docs_ratio:
                continue
            d, p = med(c.docs_ratio), med(c.perp_ratio)
            d_ok = d >= DOCS_TARGET
            p_ok = p <= PERP_TARGET
            target = ""
            if m.startswith("dpsvi"):
                both = "met" if d_ok and p_ok else "**not met**"
                target = (f" Target (≥ {DOCS_TARGET:g}× docs/s at ≤ {PERP_TARGET}× "
                          f"perplexity): {both}")
                if not d_ok:
                    target += f" (speed-up {d:.2f}×, {DOCS_TARGET / d:.1f}× short)"
                if not p_ok:
                    target += f" (perplexity {p:.3f}× sklearn's)"
                target += "."
            out.append(
                f"- K={k}, {m}: {d:.2f}× scikit-learn's docs/s (per-seed "
                f"{min(c.docs_ratio):.2f}–{max(c.docs_ratio):.2f}), held-out "
                f"perplexity {p:.3f}× ({min(c.perp_ratio):.3f}–"
                f"{max(c.perp_ratio):.3f}).{target}")
    return out


def _plot_ratio_bars(path: Path, cells: dict[tuple[Any, str], Any],
                     groups: list[tuple[Any, str]], methods: list[str],
                     panels: list[tuple[str, str, float]]) -> Path | None:
    """Two panels of bars (median, whiskers min–max over seeds) per group and method.

    ``groups`` are the cells' first keys with their tick labels; ``panels`` give each
    panel's cell attribute, title and target line. None without matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(9, 3.4))
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        for ax, (attr, _, _) in zip(axes, panels, strict=True):
            xs, ys, lo, hi = [], [], [], []
            for j, (g, _) in enumerate(groups):
                vals = getattr(cells[(g, m)], attr) if (g, m) in cells else []
                if vals:
                    xs.append(j + (i - (len(methods) - 1) / 2) * width)
                    ys.append(med(vals))
                    lo.append(med(vals) - min(vals))
                    hi.append(max(vals) - med(vals))
            ax.bar(xs, ys, width, yerr=[lo, hi], label=m, capsize=3)
    for ax, (_, title, target) in zip(axes, panels, strict=True):
        ax.set_xticks(range(len(groups)), [label for _, label in groups])
        ax.axhline(1.0, color="black", lw=0.8)
        ax.axhline(target, color="red", ls="--", lw=0.8, label=f"target {target:g}")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_lda(path: Path, cells: dict[tuple[int, str], _Cell], ks: list[int],
              methods: list[str]) -> Path | None:
    return _plot_ratio_bars(
        path, cells, [(k, f"K={k}") for k in ks], [m for m in methods if m != "sklearn"],
        [("docs_ratio", "docs/s ÷ scikit-learn", DOCS_TARGET),
         ("perp_ratio", "held-out perplexity ÷ scikit-learn", PERP_TARGET)])


def render_lda(doc: dict[str, Any], path: Path) -> str:
    """Section for ``bench_lda.py`` results."""
    cfg = doc["config"]
    runs = [r for r in doc["runs"] if not r.get("warmup")]
    ks = sorted({r["n_components"] for r in runs})
    methods = _method_order(sorted({r["method"] for r in runs}))
    seeds = sorted({r["seed"] for r in runs})
    cells = _lda_cells(runs)
    n_train = runs[0]["n_train"] if runs else "?"
    n_test = runs[0]["n_test"] if runs else "?"
    out = [
        f"Corpus: bundled NIPS (`load_nips()`), its 90/10 split: {n_train} training / "
        f"{n_test} held-out documents, 12,375 words. "
        f"K ∈ {{{', '.join(map(str, ks))}}}, "
        f"{cfg['max_iter']} passes per fit, minibatch {cfg['batch_size']}, "
        f"κ={cfg['learning_decay']}, τ₀={cfg['learning_offset']}, "
        f"E-step ≤ {cfg['max_doc_update_iter']} iterations / tol "
        f"{cfg['mean_change_tol']}, α = η = 1/K; seeds {seeds} "
        f"({len(seeds)} repetitions, interleaved: seed loop outer, then K, then the "
        "methods in an order rotated per seed).",
        "",
        "Methods:",
        "",
        *[f"- `{m}`: {LDA_METHOD_TEXT.get(m, m)}." for m in methods],
        "",
        "Measured: **docs/s** = mean over the passes of the per-pass rate (DPSVI: "
        "`history_[i][\"time/docs_per_s\"]`; scikit-learn: each timed `partial_fit`; "
        "gensim has no per-pass hook: passes × documents / fit time, its process-pool "
        "start included). **Held-out perplexity** = scikit-learn's "
        "`perplexity(X_test)` "
        "for every method (gensim's λ is loaded into a scikit-learn estimator to be "
        "scored). **Peak memory** = peak PSS summed over every process of the run "
        "(driver, Dask workers or gensim's pool; sampled every 50 ms), each run in a "
        "fresh interpreter. " + _cluster_sentence(
            [r for r in runs if r["method"].startswith("dpsvi")], "DPSVI",
            "a one-pass fit"),
        "",
        *_reproduce(doc),
    ]
    out += _load_line(doc, runs, "; the runs are interleaved so that every method met "
                      "the same conditions.")
    out += _code_lines(doc, " so that edits made during the run could not reach the "
                       "workers")
    out += ["", "### Speed, quality, memory", ""]
    rows = []
    for k in ks:
        for m in methods:
            c = cells.get((k, m))
            if c is None:
                continue
            rows.append([
                f"K={k}", f"`{m}`", spread(c.docs, ",.0f"),
                "1 (reference)" if m == "sklearn" else spread(c.docs_ratio, ".2f"),
                spread(c.perp, ",.0f"),
                "1 (reference)" if m == "sklearn" else spread(c.perp_ratio, ".3f"),
                "1" if m == "sklearn" else spread(c.doc_perp_ratio, ".3f"),
                spread(c.fit_s, ".2f"), spread(c.cpu_util, ".2f"),
                spread(c.pss, ",.0f"),
            ])
    out.append(table(
        ["K", "method", "docs/s", "docs/s ÷ sklearn", "held-out perplexity",
         "perplexity ÷ sklearn", "doc-part perplexity ÷ sklearn", "fit wall (s)",
         "CPU cores busy", "peak memory (MiB)"], rows, "ll" + "r" * 8))
    out += [
        "",
        "Cells: median [min–max] over seeds; ratios are per seed (same K, same seed) "
        "against scikit-learn, then median [min–max]. *Doc-part perplexity* leaves "
        "out the topic-word term `E[log p(β|η) − log q(β|λ)]` of scikit-learn's bound, "
        "which does not shrink with the size of the test set and dominates the 150 "
        "held-out documents at K=100. *Fit wall*: scikit-learn = the timed passes; "
        "DPSVI = `fit()` (passes + shard placement + parameter-server start + the "
        "final "
        "training-set bound that `fit` computes, as scikit-learn's `fit` does); "
        "gensim = the `LdaMulticore(...)` call. *CPU cores busy* = CPU seconds of all "
        "the run's "
        "processes ÷ fit wall.",
        "",
    ]
    png = path.with_suffix(".png")
    if _plot_lda(png, cells, ks, methods):
        out += [f"![ratios to scikit-learn](results/{png.name})", ""]
    out += ["### Against the target", "", *_verdict(cells, ks, methods), ""]

    # Per-pass rates: where does the time go, and does the first pass pay a price?
    n_pass = cfg["max_iter"]
    out += ["### Docs/s per pass (median over seeds)", ""]
    rows = []
    for k in ks:
        for m in methods:
            rs = [r for r in runs if r["n_components"] == k and r["method"] == m]
            if not rs or m == "gensim":
                continue
            per = [med([r["pass_docs_per_s"][i] for r in rs
                        if i < len(r["pass_docs_per_s"])]) for i in range(n_pass)]
            rows.append([f"K={k}", f"`{m}`", *[f"{v:,.0f}" for v in per]])
    out += [table(["K", "method", *[f"pass {i + 1}" for i in range(n_pass)]], rows,
                  "ll" + "r" * n_pass), "",
            "(gensim is left out: it reports no per-pass time.)", ""]
    rows = [row for k in ks for m in methods
            if m.startswith("dpsvi") and (row := _dpsvi_breakdown(runs, k, m))]
    if rows:
        out += ["### Where DPSVI's pass time goes", "",
                table(["K", "layout", "E-step compute %", "waiting on the server %",
                       "other %", "staleness mean", "staleness max",
                       "MiB pushed+pulled / pass", "fit overhead (s)"], rows,
                      "ll" + "r" * 7), "",
                "Per worker, as a share of the pass wall time: *compute* = the "
                "minibatch E-steps (`time/compute_s`: `exp(E[log β])` of the "
                "minibatch's words, the E-step kernel: documents, then the statistics "
                "word by word), *waiting* = blocked on push/pull replies from the parameter "
                "server (`time/wait_s`), *other* = the rest (task start, the first "
                "pull, in pass 1 the synchronous warm-up's waits for the other workers' "
                "shares of each of its updates (`pull_after`, the first "
                "`warmup_updates` SVI steps), and with 2 "
                "workers the wait for the slower one at the end-of-pass barrier). "
                "*Fit overhead* = `fit()` wall minus the passes.", ""]
    warm = doc.get("warmups", [])
    if warm:
        starts = doc.get("cluster_start_s", {})
        bits = [f"`{w['method']}` cluster start "
                f"{starts.get(w['method'], float('nan')):.1f} s, warm-up fit (1 pass, "
                f"K={w['n_components']}) {w['fit_s']:.2f} s at "
                f"{w['docs_per_s']:,.0f} docs/s" for w in warm]
        out += ["Excluded from the tables: " + "; ".join(bits) + ".", ""]
    return "\n".join(out)


# ------------------------------------------------------------------ A2C section

A2C_METHOD_TEXT = {
    "sb3": "stable-baselines3 `A2C(\"MlpPolicy\", make_vec_env(env_id, n_envs=8, "
           "seed=seed), seed=seed, device=\"cpu\")`, defaults, "
           "`torch.set_num_threads(1)`; 8 environments",
    "hsa2c-1x1": "`HSA2CAgent`, 1 Dask worker × 1 numba thread; 8 environments",
    "hsa2c-1x2": "`HSA2CAgent`, 1 Dask worker × 2 numba threads; 8 environments",
    "hsa2c-2x1": "`HSA2CAgent`, 2 Dask workers × 1 numba thread; `n_envs` is per "
                 "worker, so **16 environments** in all",
}
A2C_SPEED_TARGET = 5.0
A2C_STEPS_TARGET = 1.5


@dataclass(frozen=True)
class _A2CCell:
    n: int
    solved: int
    time_solved: list[float]
    time_all: list[float]
    speedup: list[float]
    steps: list[float]
    steps_ratio: list[float]
    cross: list[float]
    cross_ratio: list[float]
    rate: list[float]
    rate_ratio: list[float]
    eval_mean: list[float]
    cpu_util: list[float]
    pss: list[float]
    envs: list[int]


def _a2c_cells(runs: list[dict[str, Any]],
               reference: str = "sb3") -> dict[tuple[str, str], _A2CCell]:
    """Per (env, method) spreads; ratios per seed against ``reference``'s run."""
    ref = {(r["env_id"], r["seed"]): r for r in runs if r["method"] == reference}
    cells = {}
    for env, m in sorted({(r["env_id"], r["method"]) for r in runs}):
        rs = sorted((r for r in runs if r["env_id"] == env and r["method"] == m),
                    key=lambda r: r["seed"])
        sp, sr, cr, rr = [], [], [], []
        for r in rs:
            s = ref.get((env, r["seed"]))
            if s is None:
                continue
            rr.append(r["steps_per_s"] / s["steps_per_s"])
            if r["solved"] and s["solved"]:
                sp.append(s["time_s"] / r["time_s"])
                sr.append(r["steps"] / s["steps"])
                cr.append(r["crossing_step"] / s["crossing_step"])
        solved = [r for r in rs if r["solved"]]
        cells[(env, m)] = _A2CCell(
            n=len(rs), solved=len(solved),
            time_solved=[r["time_s"] for r in solved],
            time_all=[r["time_s"] if r["solved"] else float("inf") for r in rs],
            speedup=sp, steps=[r["steps"] for r in solved], steps_ratio=sr,
            cross=[r["crossing_step"] for r in solved], cross_ratio=cr,
            rate=[r["steps_per_s"] for r in rs], rate_ratio=rr,
            eval_mean=[r["eval_mean"] for r in rs],
            cpu_util=[r["cpu_util"] for r in rs],
            pss=[r["peak_pss_mib"] for r in rs],
            envs=sorted({r["total_envs"] for r in rs}))
    return cells


def _a2c_method_order(methods: set[str]) -> list[str]:
    known = [m for m in A2C_METHOD_TEXT if m in methods]
    return known + sorted(methods - set(known))


def _cells_in_order(cells: dict[tuple[str, str], _A2CCell], envs: list[str],
                    methods: list[str]) -> Iterator[tuple[str, str, _A2CCell]]:
    """``(env, method, cell)`` for every measured pair, environment by environment."""
    for env in envs:
        for m in methods:
            c = cells.get((env, m))
            if c is not None:
                yield env, m, c


def _solved_spread(c: _A2CCell, values: list[float], fmt: str) -> str:
    """Spread over the solved runs, flagged when some runs did not solve."""
    if not values:
        return "unsolved"
    out = spread(values, fmt)
    if c.solved < c.n:
        out += f" ({c.n - c.solved} unsolved)"
    return out


def _ratio_cell(values: list[float], fmt: str, c: _A2CCell) -> str:
    if not values:
        return "n/a"
    out = spread(values, fmt)
    if len(values) < c.n:
        out += f" ({len(values)} of {c.n} seeds)"
    return out


def _plot_a2c(path: Path, cells: dict[tuple[str, str], _A2CCell], envs: list[str],
              methods: list[str]) -> Path | None:
    return _plot_ratio_bars(
        path, cells, [(env, env) for env in envs], [m for m in methods if m != "sb3"],
        [("speedup", "time to solve: SB3 ÷ method (speed-up)", A2C_SPEED_TARGET),
         ("steps_ratio", "env steps to solve: method ÷ SB3", A2C_STEPS_TARGET)])


def _a2c_verdict(cells: dict[tuple[str, str], _A2CCell], envs: list[str],
                 methods: list[str]) -> list[str]:
    out = []
    for env in envs:
        s = cells.get((env, "sb3"))
        if s is not None:
            out.append(f"- {env}, sb3: solved {s.solved}/{s.n}; time to solve "
                       f"{_solved_spread(s, s.time_solved, '.1f')} s, "
                       f"{_solved_spread(s, s.steps, ',.0f')} env steps, "
                       f"{spread(s.rate, ',.0f')} steps/s.")
        for m in methods:
            c = cells.get((env, m))
            if m == "sb3" or c is None:
                continue
            if not c.speedup:
                out.append(f"- {env}, {m}: solved {c.solved}/{c.n}; no seed where both "
                           "it and SB3 solved. Target **not met**.")
                continue
            sp, st = med(c.speedup), med(c.steps_ratio)
            ok = (sp >= A2C_SPEED_TARGET and st <= A2C_STEPS_TARGET
                  and c.solved == c.n)
            why = []
            if sp < A2C_SPEED_TARGET:
                why.append(f"speed-up {sp:.2f}×, {A2C_SPEED_TARGET / sp:.1f}× short")
            if st > A2C_STEPS_TARGET:
                why.append(f"{st:.2f}× SB3's env steps")
            if c.solved < c.n:
                why.append(f"{c.n - c.solved} seed(s) unsolved")
            out.append(
                f"- {env}, {m}: {sp:.1f}× faster to solve than SB3 (per-seed "
                f"{min(c.speedup):.1f}–{max(c.speedup):.1f}×), {st:.2f}× its env steps "
                f"({min(c.steps_ratio):.2f}–{max(c.steps_ratio):.2f}), solved "
                f"{c.solved}/{c.n}. Target (≥ {A2C_SPEED_TARGET:g}× faster with ≤ "
                f"{A2C_STEPS_TARGET:g}× the env steps): "
                + ("met." if ok else "**not met** (" + "; ".join(why) + ")."))
    return out


def _a2c_run_facts(doc: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    """Bullet lines on the conditions of an A2C run: load, waits, code measured."""
    cfg = doc["config"]
    out: list[str] = []
    out += _load_line(doc, runs, ".")
    waits = doc.get("load_waits", [])
    if waits:
        total = sum(w["waited_s"] for w in waits)
        noisy = [w["phase"] for w in waits if not w["quiet"]]
        out.append(
            f"- Each phase (start, then each seed) waited for the 1-minute load to "
            f"drop to ≤ {cfg['max_load']} (at most {cfg['max_load_wait']:.0f} s "
            f"before the first run, "
            f"{cfg.get('seed_load_wait', cfg['max_load_wait']):.0f} s before each "
            "later seed): "
            f"{total:.0f} s of waiting in all"
            + (f"; started anyway above it: {', '.join(noisy)}." if noisy else
               "; every phase started below it."))
    out += _code_lines(doc, "")
    if cfg.get("scheduler_address"):
        out.append(f"- HSA2C ran on the existing cluster at `{cfg['scheduler_address']}` "
                   "(the first M of its workers for layout MxP); peak memory counts the "
                   "PSS only of the workers on the driver's host.")
    return out


def _a2c_setup(doc: dict[str, Any], order: Callable[[set[str]], list[str]],
               reference: str) -> tuple[Any, ...]:
    """``cfg, runs, envs, thresholds, methods, seeds, cells`` of an A2C results file.

    Warm-up runs left out; ``methods`` in ``order``; ratios against ``reference``.
    """
    cfg = doc["config"]
    runs = [r for r in doc["runs"] if not r.get("warmup")]
    envs = [e for e in cfg["envs"] if any(r["env_id"] == e for r in runs)]
    thresholds = dict(zip(cfg["envs"], cfg["thresholds"], strict=True))
    methods = order({r["method"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    return (cfg, runs, envs, thresholds, methods, seeds,
            _a2c_cells(runs, reference=reference))


def render_a2c(doc: dict[str, Any], path: Path) -> str:
    """Section for ``bench_a2c.py`` results."""
    cfg, runs, envs, thresholds, methods, seeds, cells = _a2c_setup(
        doc, _a2c_method_order, "sb3")
    out = [
        "Environments and thresholds: "
        + ", ".join(f"{e} (solved when the mean return of the last 100 training "
                    f"episodes reaches {thresholds[e]:g})" for e in envs)
        + f". Budget cap {cfg['max_timesteps']:,} env steps per run (a run that has "
        f"not solved by then counts as unsolved and is shown as such). Seeds {seeds} "
        f"({len(seeds)} per environment, interleaved: seed loop outer, then the "
        "environment, then the methods in an order rotated per seed). "
        "Hyper-parameters: stable-baselines3's A2C defaults for both (learning rate "
        "7e-4, `n_steps=5`, γ=0.99, λ=1, RMSProp ε=1e-5, `max_grad_norm=0.5`, "
        "`vf_coef=0.5`, no entropy bonus, separate 64-64 tanh policy and value MLPs), "
        "mapped by `_common.sb3_a2c_equivalent`; HSA2C's own defaults `push_every=10`, "
        "`prefetch=True`.",
        "",
        "Methods:",
        "",
        *[f"- `{m}`: {A2C_METHOD_TEXT.get(m, m)}." for m in methods],
        "",
        "Measured: **time to solve** = SB3: `learn()` wall until its callback stops "
        "it at the step that completes the crossing (model and environment "
        "construction not included, listed below); HSA2C: the whole `fit()` wall, "
        "which includes environment inspection, the parameter-server start, the "
        "steps taken after the crossing until every worker sees the stop flag, and "
        "collecting the results. **Env steps** = at the stop (SB3: `num_timesteps`, "
        "equal to the crossing step; HSA2C: `num_timesteps_`); *crossing step* = "
        "the logged step of the episode at which the last-100 mean first reached the "
        "threshold (HSA2C: from `episode_timesteps_`/`episode_returns_`, in the "
        "server's arrival order). **Steps/s** = env steps ÷ time to solve. "
        f"**Eval return** = mean over {cfg['eval_episodes']} deterministic episodes "
        "of the final policy (not timed). **Peak memory** = peak PSS summed over the "
        "run's processes (driver, and the Dask workers for HSA2C). Each run is a "
        "fresh interpreter. " + _cluster_sentence(
            [r for r in runs if r["method"].startswith("hsa2c")], "HSA2C",
            "a 4,000-step fit"),
        "",
        *_reproduce(doc),
        *_a2c_run_facts(doc, runs),
    ]
    out += ["", "### Time and env steps to solve", ""]
    rows = []
    for env, m, c in _cells_in_order(cells, envs, methods):
        is_ref = m == "sb3"
        rows.append([
            env, f"`{m}`", str(c.envs[0]) if len(c.envs) == 1 else str(c.envs),
            f"{c.solved}/{c.n}",
            _solved_spread(c, c.time_solved, ".2f"),
            "1 (reference)" if is_ref else _ratio_cell(c.speedup, ".1f", c),
            _solved_spread(c, c.steps, ",.0f"),
            "1 (reference)" if is_ref else _ratio_cell(c.steps_ratio, ".2f", c),
            _solved_spread(c, c.cross, ",.0f"),
            "1" if is_ref else _ratio_cell(c.cross_ratio, ".2f", c),
        ])
    out.append(table(
        ["env", "method", "envs", "solved", "time to solve (s)",
         "speed-up vs SB3 (SB3 time ÷ time)", "env steps at stop",
         "env steps ÷ SB3", "crossing step", "crossing step ÷ SB3"],
        rows, "lll" + "r" * 7))
    out += [
        "",
        "Cells: median [min–max] over the solved seeds (unsolved seeds counted "
        "beside them). Ratios are per seed (same environment, same seed number) "
        "against SB3 over the seeds where both solved, then median [min–max]; the "
        "two libraries draw different random streams from the same seed, so the "
        "pairing is by seed number, not by trajectory.",
        "",
        "### Throughput, quality, memory",
        "",
    ]
    rows = [[env, f"`{m}`", spread(c.rate, ",.0f"),
             "1 (reference)" if m == "sb3" else spread(c.rate_ratio, ".1f"),
             spread(c.eval_mean, ".1f"), spread(c.cpu_util, ".2f"), spread(c.pss, ",.0f")]
            for env, m, c in _cells_in_order(cells, envs, methods)]
    out.append(table(["env", "method", "env steps/s", "steps/s ÷ SB3",
                      "eval return (final policy)", "CPU cores busy",
                      "peak memory (MiB)"], rows, "ll" + "r" * 5))
    out += [
        "",
        "*Env steps/s* = env steps at the stop ÷ time to solve (all seeds, solved or "
        "not). *CPU cores busy* = CPU seconds of all the run's processes ÷ that "
        "time. *Eval return*: median [min–max] over seeds of the per-run mean.",
        "",
    ]
    png = path.with_suffix(".png")
    if _plot_a2c(png, cells, envs, methods):
        out += [f"![ratios to stable-baselines3](results/{png.name})", ""]
    out += ["### Against the target", "",
            "Target (issue): at least 5× faster than SB3 to solve, median over seeds, "
            "with no more than 1.5× its env steps.", "",
            *_a2c_verdict(cells, envs, methods), ""]
    rows = []
    for env in envs:
        for m in methods:
            rs = [r for r in runs if r["env_id"] == env and r["method"] == m
                  and "hsa2c" in r]
            if not rs:
                continue
            h = [r["hsa2c"] for r in rs]
            rows.append([
                env, f"`{m}`", spread([r["fit_overhead_s"] for r in rs], ".2f"),
                spread([r["steps"] - r["crossing_step"] for r in rs if r["solved"]],
                       ",.0f"),
                spread([x["n_updates_"] for x in h], ",.0f"),
                spread([x["n_pushes_sent_"] for x in h], ",.0f"),
                spread([x["staleness_mean_"] for x in h], ".2f"),
                str(max(x["staleness_max_"] for x in h)),
                str(sum(x["n_updates_rejected_"] for x in h))])
    if rows:
        out += ["### HSA2C details", "",
                table(["env", "layout", "fit overhead (s)", "steps after crossing",
                       "updates", "pushes", "staleness mean", "staleness max",
                       "rejected"], rows, "ll" + "r" * 7), "",
                "*Fit overhead* = `fit()` wall minus the training loop's last "
                "`history_` time (environment inspection, cluster probe, "
                "parameter-server start, final stats and snapshot). *Steps after "
                "crossing* = env steps at the stop minus the crossing step (pushes "
                "in flight and the stop flag's round trip). With `prefetch=True` a "
                "push is answered one push later, so staleness is ≈ 1 even with one "
                "worker.", ""]
    sb = [r for r in runs if r["method"] == "sb3"]
    bits = []
    if sb:
        bits.append("SB3 model + environment construction "
                    f"{spread([r['construct_s'] for r in sb], '.2f')} s per run")
    starts = doc.get("cluster_start_s", {})
    for w in doc.get("warmups", []):
        bits.append(f"`{w['method']}` {w['env_id']} warm-up fit "
                    f"({w['max_timesteps']:,} steps) {w['time_s']:.2f} s")
    bits += [f"`{k}` cluster start {v:.1f} s" for k, v in starts.items()]
    if bits:
        out += ["Excluded from the tables: " + "; ".join(bits) + ".", ""]
    return "\n".join(out)


# ------------------------------------------------------ A2C modes (issue #4)

MODES_REFERENCE = "hsa2c-1x1"
MODES_TARGET = 1.5  # best mode solves at least this many times sooner than serial
MODE_COLOURS = {"serial": "black", "hogwild": "tab:orange",
                "parameter-server": "tab:blue", "dpsgd": "tab:purple", "sb3": "tab:gray"}


def _layout_of(method: str) -> tuple[int, int] | None:
    if not method.startswith("hsa2c-"):
        return None
    m, p = method[len("hsa2c-"):].split("x")
    return int(m), int(p)


def _mode_label(method: str) -> str:
    lp = _layout_of(method)
    if lp is None:
        return method
    m, p = lp
    if m == 1:
        return "serial" if p == 1 else "hogwild"
    return "parameter-server" if p == 1 else "dpsgd"


def _modes_order(methods: set[str]) -> list[str]:
    hs = sorted((m for m in methods if _layout_of(m)),
                key=lambda m: (_layout_of(m)[0] * _layout_of(m)[1], _layout_of(m)))
    return (["sb3"] if "sb3" in methods else []) + hs + sorted(
        methods - set(hs) - {"sb3"})


def _step_value(curve: list[list[Any]], grid: Any) -> Any:
    """The curve's last value at or before each grid time; NaN before and after it."""
    import numpy as np

    pts = [(t, r) for t, _, r in curve if r is not None]
    out = np.full(len(grid), np.nan)
    if not pts:
        return out
    ts = np.array([t for t, _ in pts])
    rs = np.array([r for _, r in pts])
    idx = np.searchsorted(ts, grid, side="right") - 1
    inside = (idx >= 0) & (grid <= curve[-1][0])
    out[inside] = rs[idx[inside]]
    return out


def _env_figure(envs: list[str]) -> tuple[Any, Any] | None:
    """A headless figure with one panel per environment; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(envs), figsize=(5.2 * len(envs), 3.6),
                             squeeze=False)
    return fig, axes[0]


def _save_figure(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_modes_curves(path: Path, runs: list[dict[str, Any]], envs: list[str],
                       methods: list[str], thresholds: dict[str, float]) -> Path | None:
    import numpy as np

    made = _env_figure(envs)
    if made is None:
        return None
    fig, axes = made
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    for ax, env in zip(axes, envs, strict=True):
        for i, m in enumerate(methods):
            rs = [r for r in runs if r["env_id"] == env and r["method"] == m
                  and r.get("wall_curve")]
            if not rs:
                continue
            colour = cmap(i % 10)
            label = f"{m} ({_mode_label(m)})"
            # Median over seeds only while every seed is still running (a run stops
            # when it solves, so a later median would be of the slow seeds only).
            end = min(r["wall_curve"][-1][0] for r in rs)
            grid = np.linspace(0.0, end, 200)
            vals = np.array([_step_value(r["wall_curve"], grid) for r in rs])
            ok = ~np.isnan(vals).any(axis=0)
            if ok.any():
                ax.plot(grid[ok], np.median(vals[:, ok], axis=0), color=colour, lw=2,
                        label=label)
                label = None
            for r in rs:
                c = r["wall_curve"]
                ax.step([p[0] for p in c], [np.nan if p[2] is None else p[2] for p in c],
                        where="post", color=colour, lw=0.6, alpha=0.45, label=label)
                label = None
                if r["solved"]:
                    ax.plot([r["time_s"]], [thresholds[env]], "x", color=colour, ms=5)
        ax.axhline(thresholds[env], color="red", ls="--", lw=0.8,
                   label=f"solved ({thresholds[env]:g})")
        ax.set_xlabel("wall-clock time (s)")
        ax.set_ylabel("mean return, last 100 episodes")
        ax.set_title(env, fontsize=10)
        ax.legend(fontsize=7)
    return _save_figure(fig, path)


def _plot_modes_speedup(path: Path, cells: dict[tuple[str, str], _A2CCell],
                        envs: list[str], methods: list[str]) -> Path | None:
    made = _env_figure(envs)
    if made is None:
        return None
    fig, axes = made
    layouts = [m for m in methods if _layout_of(m)]
    top = max(a * b for a, b in map(_layout_of, layouts))
    # Families: more workers at one thread, more threads in one worker, the rest.
    families = (("workers (M×1)", lambda m, p: p == 1, "tab:blue", "o-"),
                ("threads (1×P)", lambda m, p: m == 1, "tab:orange", "s-"),
                ("dpsgd (M×P)", lambda m, p: m > 1 and p > 1, "tab:purple", "D"))
    for ax, env in zip(axes, envs, strict=True):
        ax.plot([1, top], [1, top], color="gray", lw=0.8, label="ideal (= cores)")
        ax.axhline(MODES_TARGET, color="red", ls="--", lw=0.8,
                   label=f"target {MODES_TARGET:g}×")
        for name, keep, colour, style in families:
            pts = []
            for m in layouts:
                a, b = _layout_of(m)
                c = cells.get((env, m))
                if keep(a, b) and c is not None and c.speedup:
                    pts.append((a * b, med(c.speedup), min(c.speedup), max(c.speedup),
                                m))
            if not pts or (len(pts) == 1 and pts[0][0] == 1 and name != families[0][0]):
                continue
            pts.sort()
            xs = [x for x, *_ in pts]
            ys = [y for _, y, *_ in pts]
            err = [[y - lo for _, y, lo, _, _ in pts], [hi - y for _, y, _, hi, _ in pts]]
            ax.errorbar(xs, ys, yerr=err, fmt=style, color=colour, capsize=3,
                        label=name, ms=5)
            for x, y, *_, m in pts:
                ax.annotate(m[len("hsa2c-"):], (x, y), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)
        s = cells.get((env, "sb3"))
        if s is not None and s.speedup:
            ax.plot([1], [med(s.speedup)], "*", color="tab:gray", ms=9,
                    label="SB3 A2C (1 thread)")
        ax.set_xlabel("cores used by the fit (workers × threads)")
        ax.set_ylabel("speed-up: serial time to solve ÷ time")
        if top > 4:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
        ticks = sorted({a * b for a, b in map(_layout_of, layouts)})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_title(env, fontsize=10)
        ax.legend(fontsize=7)
    return _save_figure(fig, path)


def _modes_verdict(cells: dict[tuple[str, str], _A2CCell], envs: list[str],
                   methods: list[str], cores: int, local: bool,
                   idle: list[str]) -> list[str]:
    out = []
    for env in envs:
        ref = cells.get((env, MODES_REFERENCE))
        cands = [(med(c.speedup), m, c) for m in methods
                 if m not in ("sb3", MODES_REFERENCE)
                 and (c := cells.get((env, m))) is not None and c.speedup]
        if ref is None or not ref.solved:
            out.append(f"- {env}: serial (`{MODES_REFERENCE}`) did not solve any seed; "
                       "no speed-up can be measured. Target **not met**.")
            continue
        if not cands:
            out.append(f"- {env}: no parallel layout solved a seed that serial solved. "
                       "Target **not met**.")
            continue
        sp, best, c = max(cands, key=lambda t: t[0])
        ok = sp >= MODES_TARGET and c.solved == c.n
        why = []
        if sp < MODES_TARGET:
            why.append(f"{sp:.2f}×, {MODES_TARGET / sp:.2f}× short")
        if c.solved < c.n:
            why.append(f"{c.n - c.solved} seed(s) unsolved")
        a, b = _layout_of(best)
        over = (f" The layout uses {a * b} cores on a {cores}-core machine (plus the "
                "driver, the scheduler and the parameter server, which share them)."
                if local else "")
        out.append(
            f"- {env}: best mode `{best}` ({_mode_label(best)}) solved {sp:.2f}× sooner "
            f"than serial (per seed {min(c.speedup):.2f}–{max(c.speedup):.2f}×, "
            f"{len(c.speedup)} paired seed(s); serial "
            f"{_solved_spread(ref, ref.time_solved, '.2f')} s, `{best}` "
            f"{_solved_spread(c, c.time_solved, '.2f')} s). Target (≥ "
            f"{MODES_TARGET:g}× sooner than serial): "
            + ("met." if ok else "**not met** (" + "; ".join(why) + ").") + over
            + (" Its threads did not split the gradient (see above): it computes what "
               "the same workers with one thread each compute, so its gain over that "
               "layout is run-to-run variation, not threads." if best in idle else ""))
    return out


def render_a2c_modes(doc: dict[str, Any], path: Path) -> str:
    """Section for ``bench_a2c_modes.py`` results (HSA2C's modes against serial)."""
    cfg, runs, envs, thresholds, methods, seeds, cells = _a2c_setup(
        doc, _modes_order, MODES_REFERENCE)
    cores = doc["machine"]["cores"]
    local = not cfg.get("scheduler_address")

    def what(m: str) -> str:
        n = max(r["total_envs"] for r in runs if r["method"] == m)
        if m == "sb3":
            return (f"stable-baselines3 `A2C`, {n} environments, one torch thread (the "
                    "anchor)")
        a, b = _layout_of(m)
        return (f"`HSA2CAgent(n_workers={a}, threads_per_worker={b}, "
                f"parallelism=\"{_mode_label(m)}\")`: {a} Dask worker(s) × {b} numba "
                f"thread(s), {n} environments ({n // a} per worker)")

    out = [
        "Issue #4's A2C experiments: mean training return against wall-clock time for "
        "HSA2C in each of its modes and for stable-baselines3, and the speed-up of each "
        "layout over serial HSA2C (1×1) in time to solve. "
        "Environments and thresholds: "
        + ", ".join(f"{e} (solved when the mean return of the last 100 training "
                    f"episodes reaches {thresholds[e]:g})" for e in envs)
        + f"; budget cap {cfg['max_timesteps']:,} env steps per run; seeds {seeds} "
        "(interleaved: seed loop outer, methods in an order rotated per seed). "
        "Hyper-parameters: stable-baselines3's A2C defaults for every method (see the "
        "SB3 comparison's section). "
        + ("Weak scaling: `n_envs` environments per worker, so more workers run more "
           "environments." if cfg.get("total_envs") is None else
           f"Strong scaling: {cfg['total_envs']} environments in all for every "
           "method, split over the workers."),
        "",
        "Methods:",
        "",
        *[f"- `{m}` ({_mode_label(m)}): {what(m)}." for m in methods],
        "",
        "Clocks. **Time to solve** = wall-clock seconds from the call of HSA2C's "
        "`fit()` (SB3: `learn()`) until the method stopped because the mean return of "
        "its last 100 training episodes reached the threshold (HSA2C's parameter "
        "server checks it at every push and the workers stop at their next push; SB3's "
        "callback stops at the step that completes the crossing). HSA2C's time "
        "includes the environment inspection, the cluster probe, the parameter-server "
        "start, the steps taken after the crossing until every worker has seen the "
        "stop, and collecting the results; it excludes the cluster's start and warm-up "
        "and interpreter start-up. SB3's excludes "
        "its model and environment construction. **Speed-up** = serial's time to solve "
        "÷ the layout's, per seed (same seed number), then median [min–max] over the "
        "seeds both solved. The **curves** are the mean return of the last ≤ 100 "
        "episodes sampled about every 0.5 s: HSA2C's `history_` records (time since "
        "`run_hsa2c` started, a few ms after `fit()` was called), SB3's callback (time "
        "since `learn()` started); thin lines are seeds (× = the stop), the thick line "
        "the median over seeds while every seed was still running.",
        "",
        *_reproduce(doc),
        *_a2c_run_facts(doc, runs),
    ]
    if local:
        over = [m for m in methods if _layout_of(m)
                and _layout_of(m)[0] * _layout_of(m)[1] > cores]
        if over:
            out.append(f"- Layouts with more cores than the machine's {cores}: "
                       + ", ".join(f"`{m}`" for m in over)
                       + " (oversubscribed; their speed-up says nothing about "
                       "scaling).")
    out += ["", "### Time to solve and speed-up over serial", ""]
    rows = []
    for env, m in [(e, m) for e in envs for m in methods if (e, m) in cells]:
        c = cells[(env, m)]
        lp = _layout_of(m)
        is_ref = m == MODES_REFERENCE
        sp = "1 (reference)" if is_ref else _ratio_cell(c.speedup, ".2f", c)
        eff = ("" if not lp or not c.speedup
               else spread([x / (lp[0] * lp[1]) for x in c.speedup], ".2f"))
        rows.append([
            env, f"`{m}`", _mode_label(m),
            "1 (torch)" if lp is None else str(lp[0] * lp[1]),
            str(c.envs[0]) if len(c.envs) == 1 else str(c.envs),
            f"{c.solved}/{c.n}", _solved_spread(c, c.time_solved, ".2f"), sp,
            "1" if is_ref else eff, _solved_spread(c, c.cross, ",.0f"),
            spread(c.rate, ",.0f"), spread(c.cpu_util, ".2f")])
    out.append(table(
        ["env", "method", "mode", "cores", "envs", "solved", "time to solve (s)",
         "speed-up over serial", "speed-up ÷ cores", "crossing step", "env steps/s",
         "CPU cores busy"], rows, "lll" + "r" * 9))
    out += [
        "",
        "Cells: median [min–max] over seeds (time to solve and crossing step over the "
        "solved seeds; unsolved ones counted beside them). *Speed-up ÷ cores* = "
        "parallel efficiency (1 = ideal). *Crossing step* = env steps when the "
        "last-100 mean first reached the threshold; more environments per update "
        "(more workers) usually need more steps, so speed-up < throughput ratio. "
        "*Env steps/s* = env steps at the stop ÷ time to solve. *CPU cores busy* = "
        "CPU seconds of all the run's processes (driver and workers) ÷ that time.",
        "",
    ]
    idle_runs = [r for r in runs
                 if _layout_of(r["method"]) and _layout_of(r["method"])[1] > 1
                 and r.get("threads_split_gradient") is False]
    idle = sorted({r["method"] for r in idle_runs})
    if idle:
        floor = idle_runs[0]["parallel_min_batch"]
        out += ["**Threads left idle:** in " + ", ".join(f"`{m}`" for m in idle)
                + " the numba threads did not split the gradient: an update's batch "
                "(`n_steps` × `n_envs` per worker) is below HSA2C's threshold for "
                f"splitting it (`PARALLEL_MIN_BATCH`, {floor} samples), so each worker "
                "ran the serial kernel with one thread. Those layouts compute what the "
                "same layout with one thread per worker computes; their speed-up "
                "measures overhead and noise, not threads.", ""]
    stem = path.with_suffix("")
    curves = _plot_modes_curves(stem.with_name(stem.name + "_curves.png"), runs, envs,
                                methods, thresholds)
    if curves:
        out += [f"![mean return vs wall-clock time](results/{curves.name})", ""]
    speed = _plot_modes_speedup(stem.with_name(stem.name + "_speedup.png"), cells,
                                envs, methods)
    if speed:
        out += [f"![speed-up over serial vs cores](results/{speed.name})", ""]
    out += ["### Against the target", "",
            f"Target (issue #4): on CartPole the best mode solves at least "
            f"{MODES_TARGET:g}× sooner than serial (median over seeds).", "",
            *_modes_verdict(cells, envs, methods, cores, local, idle), ""]
    return "\n".join(out)


# ------------------------------------------------------------ faults section

FAULT_SCENARIO_TEXT = {
    "lda-kill": "LDA, 2 workers, one killed (SIGKILL) at a random moment",
    "a2c-kill": "A2C, 2 workers, one killed (SIGKILL) at a random moment",
    "lda-load": "LDA, 8 workers on 2 cores",
    "a2c-load": "A2C, 8 workers on 2 cores",
    "lda-pause": "LDA, 8 workers, one paused (SIGSTOP) mid-fit",
    "a2c-pause": "A2C, 8 workers, one paused (SIGSTOP) mid-fit",
}


def _lost_cell(runs: list[dict[str, Any]]) -> str:
    """Updates lost per run; ``≥`` marks a lower bound (the server's worker died)."""
    cells = [("" if r.get("updates_lost_exact", True) else "≥") + str(r["updates_lost"])
             for r in runs if r.get("completed") and r.get("recoveries")]
    return ", ".join(cells) if cells else "–"


def render_faults(doc: dict[str, Any], path: Path) -> str:
    """Faults injected, fits completed, updates lost and the update accounting."""
    cfg = doc["config"]
    runs = doc["runs"]
    scenarios = list(dict.fromkeys(r["scenario"] for r in runs))
    out = [
        "Every scenario runs on real Dask worker processes (`LocalCluster`, 1 core "
        "each). Kill scenarios first fit undisturbed on the same cluster (the "
        "reference of the quality ratio), then kill the parameter server's worker "
        "(odd repeats: the other worker) at a moment drawn from a seeded RNG. Load and "
        "pause scenarios use the default `max_staleness=\"auto\"`. Quality: LDA held-out "
        "perplexity (ratio < 1 is better), A2C mean return of the last 100 training "
        "episodes (ratio > 1 is better). Updates lost: applied by the server after the "
        "last checkpoint and discarded by the recovery; `≥` marks a lower bound (the "
        "server's own worker died, so its count at the loss is the last one the driver "
        "read). Counters after a recovery: LDA's cover every completed pass; A2C's "
        "cover the segment run after the last recovery (the workers' own counts of "
        "the cut segment die with their tasks).",
        "",
        "```", doc.get("command", ""), "```", "",
        machine_block(doc), "",
    ]
    rows = []
    for sc in scenarios:
        rs = [r for r in runs if r["scenario"] == sc]
        faulted = [r for r in rs if r["faults_injected"] or sc.endswith("-load")]
        done = [r for r in faulted if r["completed"]]
        sent = sum(r.get("pushes_sent", 0) for r in done)
        applied = sum(r.get("applied", 0) for r in done)
        rejected = sum(r.get("rejected", 0) for r in done)
        ok = all(r.get("accounting_ok") for r in done)
        ratios = [r["quality_ratio"] for r in done if "quality_ratio" in r]
        quality = [r["quality"] for r in done if "quality" in r]
        rows.append([
            FAULT_SCENARIO_TEXT.get(sc, sc),
            str(sum(r["faults_injected"] for r in faulted)),
            f"{len(done)}/{len(faulted)}",
            str(sum(r.get("recoveries", 0) for r in done)),
            _lost_cell(done),
            f"{sent:,} = {applied:,} + {rejected:,}" + (" ✓" if ok else " ✗"),
            spread(ratios, ".3f") if ratios else spread(quality, ".1f"),
            spread([r["wall_s"] for r in done], ".1f"),
        ])
    out.append(table(
        ["scenario", "faults injected", "fits completed", "recoveries",
         "updates lost (per recovery)", "pushes sent = applied + rejected",
         "quality vs undisturbed (value if none)", "fit s"], rows,
        "lrrrrrrr"))
    out += ["", "Every run (the first of a kill or pause scenario is its undisturbed "
            "reference):", ""]
    detail = []
    for r in runs:
        detail.append([
            r["scenario"], str(r["seed"]), r["fault"] or "none",
            "yes" if r["completed"] else f"no: {r['error']}",
            str(r.get("recoveries", "–")),
            _lost_cell([r]) if r.get("recoveries") else "0",
            f"{r.get('pushes_sent', 0):,} = {r.get('applied', 0):,} + "
            f"{r.get('rejected', 0):,}",
            f"{r.get('max_staleness')} / {r.get('staleness_max')}",
            format(r["quality"], ".1f") if "quality" in r else "–",
            format(r["wall_s"], ".1f"),
        ])
    out.append(table(
        ["scenario", "seed", "fault", "completed", "recoveries", "updates lost",
         "sent = applied + rejected", "max_staleness used / max seen", "quality",
         "fit s"], detail, "lrllrrrrrr"))
    out += ["", f"Config: {cfg['repeats']} disturbed fit(s) per scenario, "
            f"{cfg['lda_passes']} LDA passes and up to {cfg['a2c_timesteps']:,} A2C "
            f"steps (stop at a mean return of 475) when killing; "
            f"{cfg['crowd_workers']} workers, {cfg['load_passes']} LDA passes and "
            f"{cfg['load_timesteps']:,} A2C steps under load; "
            f"{cfg['pause_seconds']:g} s pauses."]
    return "\n".join(out)


# ------------------------------------------------------------------- generic

def render_generic(doc: dict[str, Any], path: Path) -> str:
    """Fallback for result kinds without a renderer: command, machine, config."""
    return "\n".join([
        f"{len(doc.get('runs', []))} raw runs; no renderer is registered for kind "
        f"`{doc.get('kind')}` in `benchmarks/summarize.py`.", "",
        "```", doc.get("command", ""), "```", "", machine_block(doc), "",
        "Config: `" + json.dumps(doc.get("config", {})) + "`"])


def render_a2c_loop(doc: dict[str, Any], path: Path) -> str:
    """Section for ``bench_a2c_loop.py``: a serial worker's time per environment step."""
    cfg, runs = doc["config"], doc["runs"]
    envs = list(dict.fromkeys(r["env_id"] for r in runs))

    def cell(env: str, key: str) -> float | None:
        vals = [r[key] for r in runs if r["env_id"] == env and key in r]
        return med(vals) if vals else None

    def us(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f}"

    rows = []
    for env in envs:
        total, in_env = cell(env, "worker_total"), cell(env, "worker_env")
        rows.append([
            env, *(us(cell(env, k)) for k in (
                "bare_env", "wrapped_env", "sync_vector_env", "box_sync_vector_env",
                "vector_entry_point", "worker_total", "worker_env", "worker_kernels",
                "worker_rest")),
            f"{(total - in_env) / total:.0%}", f"{total / in_env:.2f}×"])
    return "\n".join([
        f"Microseconds per environment step (one copy stepped once), median of "
        f"{cfg['repeats']} interleaved repeats. Environment loops: {cfg['env_steps']:,} "
        f"steps with fixed random actions, {cfg['n_envs']} copies per vector. Worker "
        f"loop: HSA2C's `_train_worker` (stable-baselines3's A2C defaults, one numba "
        f"thread, {cfg['n_envs']} environments) for {cfg['worker_steps']:,} steps in one "
        "process, the parameter server called in memory on a background event loop as "
        "inside a Dask worker; *in env.step* is the vector environment HSA2C uses "
        "(`BoxSyncVectorEnv`, or gymnasium's numpy-vectorised implementation where one "
        "is registered) under the learning policy, resets included; *in kernels* the "
        "numba calls (policy, values, returns, gradient, clipping, optimiser); *rest* "
        "the loop's Python.", "",
        *_reproduce(doc), *_code_lines(doc, ""), "",
        table(["env", "bare env", "`gym.make` env", "`SyncVectorEnv`",
               "`BoxSyncVectorEnv`", "vector entry point", "worker: total",
               "in env.step", "in kernels", "rest", "HSA2C's own share",
               "ceiling if HSA2C's own work were free"], rows, "l" + "r" * 11), "",
        "*HSA2C's own share* = (total − in env.step) ÷ total. *Ceiling* = total ÷ in "
        "env.step: the most a serial worker's throughput could grow if everything but "
        "the environment took no time."])


RENDERERS: dict[str, tuple[str, Callable[[dict[str, Any], Path], str]]] = {
    "lda": ("LDA: DPSVI vs scikit-learn and gensim on NIPS", render_lda),
    "a2c": ("A2C: HSA2C vs stable-baselines3 on CartPole and Acrobot", render_a2c),
    "a2c_loop": ("A2C: where a serial worker's time per environment step goes",
                 render_a2c_loop),
    "a2c_modes": ("A2C: HSA2C's modes against serial, return vs wall-clock and speed-up",
                  render_a2c_modes),
    "faults": ("Fault and load tests", render_faults),
}

NOTES_RE = re.compile(r"<!-- notes:(?P<name>[\w.-]+) -->\n(?P<body>.*?)"
                      r"<!-- /notes:(?P=name) -->", re.S)


def _renderers() -> dict[str, tuple[str, Callable[[dict[str, Any], Path], str]]]:
    """:data:`RENDERERS` plus those of the other ``summarize_*`` modules."""
    return {**RENDERERS, **summarize_modes.RENDERERS, **bench_nmf.RENDERERS}


POOLED_TITLE = "A2C: HSA2C vs stable-baselines3, every seed of the same code pooled"


def a2c_pools(docs: list[tuple[Path, dict[str, Any]]]
              ) -> list[tuple[list[Path], list[dict[str, Any]]]]:
    """Groups of ``bench_a2c.py`` results that measured the same code on distinct seeds.

    Two files pool when their snapshots have the same source digest; runs of an
    (environment, method, seed) already pooled from an earlier file are not counted
    twice (the earlier file's run is kept). Only groups of two or more files.
    """
    groups: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for p, doc in docs:
        digest = (doc.get("snapshot") or {}).get("digest")
        if doc["kind"] == "a2c" and digest:
            groups.setdefault(digest, []).append((p, doc))
    pools = []
    for members in groups.values():
        if len(members) < 2:
            continue
        seen: set[tuple[str, str, int]] = set()
        runs = []
        for _, doc in members:
            for r in doc["runs"]:
                key = (r["env_id"], r["method"], r["seed"])
                if key not in seen:
                    seen.add(key)
                    runs.append(r)
        pools.append(([p for p, _ in members], runs))
    return pools


def median_interval(values: list[float], level: float = 0.95,
                    resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median (fixed seed: the same every run)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = np.asarray(values, dtype=np.float64)
    meds = np.median(rng.choice(x, size=(resamples, x.size), replace=True), axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(meds, tail)), float(np.quantile(meds, 1.0 - tail))


def render_a2c_pool(paths: list[Path], docs: dict[Path, dict[str, Any]],
                    runs: list[dict[str, Any]]) -> str:
    """Section pooling the seeds of several ``bench_a2c.py`` runs of the same code."""
    first = docs[paths[0]]
    envs = sorted({r["env_id"] for r in runs}, key=lambda e: (e != "CartPole-v1", e))
    methods = _a2c_method_order({r["method"] for r in runs})
    cells = _a2c_cells(runs)
    out = [
        "Sources: " + ", ".join(f"`benchmarks/results/{p.name}`" for p in paths)
        + f": every run of the same code (source digest "
        f"`{first['snapshot']['digest']}`, commit "
        f"`{(first['snapshot'].get('commit') or '?')[:12]}`), same harness; the "
        "files hold distinct seeds, pooled here into one median per environment and "
        "method (each file's own section gives its ten-seed figures).",
        "",
    ]
    file_cells = [_a2c_cells(docs[p]["runs"]) for p in paths]
    rows = []
    for env, m, c in _cells_in_order(cells, envs, [m for m in methods if m != "sb3"]):
        per_file = [f"{med(fc[(env, m)].speedup):.1f}×" for fc in file_cells
                    if (env, m) in fc and fc[(env, m)].speedup]
        lo, hi = median_interval(c.speedup)
        rows.append([
            env, f"`{m}`", str(c.n), f"{c.solved}/{c.n}",
            _ratio_cell(c.speedup, ".1f", c), f"{lo:.1f}–{hi:.1f}",
            f"{sum(v >= A2C_SPEED_TARGET for v in c.speedup)} of {len(c.speedup)}",
            " / ".join(per_file),
            _ratio_cell(c.steps_ratio, ".2f", c), spread(c.rate_ratio, ".2f")])
    out.append(table(["env", "method", "seeds", "solved", "speed-up vs SB3",
                      "95% interval of the median speed-up",
                      f"seeds ≥ {A2C_SPEED_TARGET:g}×", "median per file",
                      "env steps ÷ SB3", "steps/s ÷ SB3"], rows, "ll" + "r" * 8))
    out += ["", "Cells: median [min–max] of the per-seed ratios (as in each file's "
            "section). *95% interval*: percentile bootstrap of the median over the "
            "seeds (10,000 resamples, fixed seed), i.e. how far the median could move "
            "on another draw of as many seeds.", "", "### Against the target", "",
            *_a2c_verdict(cells, envs, methods), ""]
    return "\n".join(out)


def main(results_dir: Path, output: Path) -> Path:
    renderers = _renderers()
    notes = {}
    if output.exists():
        notes = {m["name"]: m["body"] for m in NOTES_RE.finditer(output.read_text())}
    docs = []
    for p in sorted(results_dir.glob("*.json")):
        doc = json.loads(p.read_text())
        if "kind" in doc and "runs" in doc:
            docs.append((p, doc))
    docs.sort(key=lambda pd: (list(renderers).index(pd[1]["kind"])
                              if pd[1]["kind"] in renderers else len(renderers),
                              pd[0].name))
    parts = [
        "# Benchmark results",
        "",
        "Generated by `python benchmarks/summarize.py` from the JSON files in "
        "`benchmarks/results/` (one section per file). Edit only the *Notes* blocks; "
        "everything else is overwritten on the next run.",
        "",
    ]
    # (title, anchor, notes name, rendered body); each pooled A2C section follows the
    # last file of its kind.
    sections: list[tuple[str, str, str, str]] = []
    kinds = [doc["kind"] for _, doc in docs]
    for p, doc in docs:
        title, render = renderers.get(doc["kind"], (doc["kind"], render_generic))
        if kinds.count(doc["kind"]) > 1:
            # One heading per question: files of one kind differ in what they ran.
            title += f" ({_run_label(doc)})"
        sections.append((title, _anchor(p), p.stem,
                         f"Source: `benchmarks/results/{p.name}`.\n\n" + render(doc, p)))
    pools = a2c_pools(docs)
    if pools:
        by_path = dict(docs)
        at = max(i for i, (_, d) in enumerate(docs) if d["kind"] == "a2c") + 1
        sections[at:at] = [
            (POOLED_TITLE, name.replace("_", "-"), name,
             render_a2c_pool(paths, by_path, runs))
            for name, (paths, runs) in zip(
                [f"a2c_vs_sb3_pooled_{i}" if i else "a2c_vs_sb3_pooled"
                 for i in range(len(pools))], pools, strict=True)]
    parts += [f"- [{title}](#{anchor})" for title, anchor, _, _ in sections]
    parts.append("")
    for title, anchor, name, body in sections:
        parts += [
            f"## {title}",
            f"<a id=\"{anchor}\"></a>",
            "",
            body,
            "",
            "### Notes: what it shows",
            "",
            f"<!-- notes:{name} -->\n{notes.get(name, '_No notes yet._' + chr(10))}"
            f"<!-- /notes:{name} -->",
            "",
        ]
    output.write_text("\n".join(parts).rstrip() + "\n")
    return output


def _run_label(doc: dict[str, Any]) -> str:
    """What tells a result file apart from others of its kind: its environments and
    seeds."""
    cfg = doc.get("config", {})
    parts = []
    if cfg.get("envs"):
        parts.append(", ".join(cfg["envs"]))
    seeds = sorted({r["seed"] for r in doc.get("runs", []) if "seed" in r})
    if seeds:
        parts.append(f"seeds {seeds[0]}–{seeds[-1]}" if len(seeds) > 1
                     else f"seed {seeds[0]}")
    return "; ".join(parts) or doc.get("started", "")


def _anchor(path: Path) -> str:
    return re.sub(r"[^a-z0-9-]", "-", path.stem.lower())


@dataclass(frozen=True, slots=True)
class SummarizeConfig:
    """Render benchmarks/RESULTS.md from benchmarks/results/*.json."""

    results_dir: str = str(_common.RESULTS_DIR)
    """Directory of the JSON results."""
    output: str = str(_common.BENCH_DIR / "RESULTS.md")
    """Markdown file to write."""


if __name__ == "__main__":
    cfg = _common.parse_config(SummarizeConfig)
    print(f"wrote {main(Path(cfg.results_dir), Path(cfg.output))}")
