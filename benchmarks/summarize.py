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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common

# --------------------------------------------------------------------- numbers


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float], fmt: str) -> str:
    """``median [min–max]`` of ``values`` formatted with ``fmt``."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return format(values[0], fmt)
    return (f"{format(med(values), fmt)} [{format(min(values), fmt)}–"
            f"{format(max(values), fmt)}]")


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    seps = [":---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(seps) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def machine_block(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    v = ", ".join(f"{k} {val}" for k, val in m["versions"].items() if val)
    dirty = (" (the working tree had uncommitted changes to tracked files)"
             if m.get("git_dirty") else "")
    env = ", ".join(f"`{k}={val}`" for k, val in m.get("child_env", {}).items())
    lines = [
        f"- Machine: {m['cores']} cores ({m.get('cpu_model')}), "
        f"{m.get('memory_gib')} GiB RAM, {m['platform']}, Python {m['python']}.",
        f"- Versions: {v}.",
        f"- Repository at `{(m.get('git_commit') or 'unknown')[:12]}`{dirty}.",
        f"- Run: {doc['started']} → {doc.get('finished') or 'unfinished'}"
        + (f" ({doc['total_wall_s'] / 60:.1f} min)" if "total_wall_s" in doc else "")
        + ".",
    ]
    if env:
        lines.append(f"- Environment of every measured process: {env}.")
    return "\n".join(lines)


# ----------------------------------------------------------------- LDA section

LDA_METHOD_TEXT = {
    "sklearn": "scikit-learn `LatentDirichletAllocation(learning_method=\"online\", "
               "n_jobs=1)`, one `partial_fit` per pass over the training set",
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


def _plot_lda(path: Path, cells: dict[tuple[int, str], _Cell], ks: list[int],
              methods: list[str]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    others = [m for m in methods if m != "sklearn"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    width = 0.8 / max(1, len(others))
    for i, m in enumerate(others):
        for ax, attr in zip(axes, ("docs_ratio", "perp_ratio"), strict=True):
            xs, ys, lo, hi = [], [], [], []
            for j, k in enumerate(ks):
                vals = getattr(cells[(k, m)], attr) if (k, m) in cells else []
                if vals:
                    xs.append(j + (i - (len(others) - 1) / 2) * width)
                    ys.append(med(vals))
                    lo.append(med(vals) - min(vals))
                    hi.append(max(vals) - med(vals))
            ax.bar(xs, ys, width, yerr=[lo, hi], label=m, capsize=3)
    for ax, title, target in ((axes[0], "docs/s ÷ scikit-learn", DOCS_TARGET),
                              (axes[1], "held-out perplexity ÷ scikit-learn",
                               PERP_TARGET)):
        ax.set_xticks(range(len(ks)), [f"K={k}" for k in ks])
        ax.axhline(1.0, color="black", lw=0.8)
        ax.axhline(target, color="red", ls="--", lw=0.8, label=f"target {target:g}")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
        "fresh interpreter. The DPSVI clusters (one per layout) are started once, "
        "warmed up by an excluded fit, and reused by every repetition.",
        "",
        "Reproduce (from the repository root):",
        "",
        "```",
        doc["command"],
        "python benchmarks/summarize.py",
        "```",
        "",
        machine_block(doc),
    ]
    loads = [r["loadavg_before"][0] for r in runs]
    if loads:
        cores = doc["machine"]["cores"]
        out.append(
            f"- 1-minute load average when each run started: median {med(loads):.2f}, "
            f"range {min(loads):.2f}–{max(loads):.2f} on {cores} cores"
            + (" — **other processes were competing for the cores**; the runs are "
               "interleaved so that every method met the same conditions, but absolute "
               "rates are lower than on an idle machine." if med(loads) > 1.2 else ".")
        )
    snap = doc.get("snapshot")
    if snap:
        what = ("the last commit" if snap["source"] == "head"
                else "the working tree, uncommitted edits included")
        out.append(f"- Code measured: {what} (`{(snap.get('commit') or '?')[:12]}`), "
                   "copied to a temporary directory at the start so that edits made "
                   "during the run could not reach the workers (source digest "
                   f"`{snap['digest']}`).")
    dig = doc.get("worktree_digest", {})
    if dig.get("end") and dig["end"] != dig["start"]:
        out.append("- The repository's `dask_dpsgd/` changed while the benchmark ran "
                   "(not the measured snapshot).")
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
                "minibatch's words, the E-step kernel, the sum of the per-thread "
                "slabs), *waiting* = blocked on push/pull replies from the parameter "
                "server (`time/wait_s`), *other* = the rest (task start, the first "
                "pull, in pass 1 the synchronous warm-up's waits for its turn "
                "(`pull_after`, the first `warmup_updates` minibatches), and with 2 "
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


def _a2c_cells(runs: list[dict[str, Any]]) -> dict[tuple[str, str], _A2CCell]:
    ref = {(r["env_id"], r["seed"]): r for r in runs if r["method"] == "sb3"}
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
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    others = [m for m in methods if m != "sb3"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    width = 0.8 / max(1, len(others))
    for i, m in enumerate(others):
        for ax, attr in zip(axes, ("speedup", "steps_ratio"), strict=True):
            xs, ys, lo, hi = [], [], [], []
            for j, env in enumerate(envs):
                vals = getattr(cells[(env, m)], attr) if (env, m) in cells else []
                if vals:
                    xs.append(j + (i - (len(others) - 1) / 2) * width)
                    ys.append(med(vals))
                    lo.append(med(vals) - min(vals))
                    hi.append(max(vals) - med(vals))
            ax.bar(xs, ys, width, yerr=[lo, hi], label=m, capsize=3)
    for ax, title, target in (
            (axes[0], "time to solve: SB3 ÷ method (speed-up)", A2C_SPEED_TARGET),
            (axes[1], "env steps to solve: method ÷ SB3", A2C_STEPS_TARGET)):
        ax.set_xticks(range(len(envs)), envs)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.axhline(target, color="red", ls="--", lw=0.8, label=f"target {target:g}")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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


def render_a2c(doc: dict[str, Any], path: Path) -> str:
    """Section for ``bench_a2c.py`` results."""
    cfg = doc["config"]
    runs = [r for r in doc["runs"] if not r.get("warmup")]
    envs = [e for e in cfg["envs"] if any(r["env_id"] == e for r in runs)]
    thresholds = dict(zip(cfg["envs"], cfg["thresholds"], strict=True))
    methods = _a2c_method_order({r["method"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    cells = _a2c_cells(runs)
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
        "fresh interpreter; the HSA2C clusters (one per layout) are started once, "
        "warmed up by excluded short fits on each environment, and reused.",
        "",
        "Reproduce (from the repository root):",
        "",
        "```",
        doc["command"],
        "python benchmarks/summarize.py",
        "```",
        "",
        machine_block(doc),
    ]
    loads = [r["loadavg_before"][0] for r in runs]
    if loads:
        cores = doc["machine"]["cores"]
        out.append(
            f"- 1-minute load average when each run started: median {med(loads):.2f}, "
            f"range {min(loads):.2f}–{max(loads):.2f} on {cores} cores"
            + (" — **other processes were competing for the cores**." if
               med(loads) > 1.2 else "."))
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
    snap = doc.get("snapshot")
    if snap:
        what = ("the last commit" if snap["source"] == "head"
                else "the working tree, uncommitted edits included")
        out.append(f"- Code measured: {what} (`{(snap.get('commit') or '?')[:12]}`), "
                   "copied to a temporary directory at the start (source digest "
                   f"`{snap['digest']}`).")
    dig = doc.get("worktree_digest", {})
    if dig.get("end") and dig["end"] != dig["start"]:
        out.append("- The repository's `dask_dpsgd/` changed while the benchmark ran "
                   "(not the measured snapshot).")
    out += ["", "### Time and env steps to solve", ""]
    rows = []
    for env in envs:
        for m in methods:
            c = cells.get((env, m))
            if c is None:
                continue
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
    rows = []
    for env in envs:
        for m in methods:
            c = cells.get((env, m))
            if c is None:
                continue
            rows.append([
                env, f"`{m}`", spread(c.rate, ",.0f"),
                "1 (reference)" if m == "sb3" else spread(c.rate_ratio, ".1f"),
                spread(c.eval_mean, ".1f"), spread(c.cpu_util, ".2f"),
                spread(c.pss, ",.0f")])
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


RENDERERS: dict[str, tuple[str, Callable[[dict[str, Any], Path], str]]] = {
    "lda": ("LDA: DPSVI vs scikit-learn and gensim on NIPS", render_lda),
    "a2c": ("A2C: HSA2C vs stable-baselines3 on CartPole and Acrobot", render_a2c),
    "faults": ("Fault and load tests", render_faults),
}

NOTES_RE = re.compile(r"<!-- notes:(?P<name>[\w.-]+) -->\n(?P<body>.*?)"
                      r"<!-- /notes:(?P=name) -->", re.S)


def main(results_dir: Path, output: Path) -> Path:
    notes = {}
    if output.exists():
        notes = {m["name"]: m["body"] for m in NOTES_RE.finditer(output.read_text())}
    docs = []
    for p in sorted(results_dir.glob("*.json")):
        doc = json.loads(p.read_text())
        if "kind" in doc and "runs" in doc:
            docs.append((p, doc))
    docs.sort(key=lambda pd: (list(RENDERERS).index(pd[1]["kind"])
                              if pd[1]["kind"] in RENDERERS else len(RENDERERS),
                              pd[0].name))
    parts = [
        "# Benchmark results",
        "",
        "Generated by `python benchmarks/summarize.py` from the JSON files in "
        "`benchmarks/results/` (one section per file). Edit only the *Notes* blocks; "
        "everything else is overwritten on the next run.",
        "",
    ]
    parts += [f"- [{RENDERERS.get(d['kind'], (d['kind'],))[0]}](#{_anchor(p)})"
              for p, d in docs]
    parts.append("")
    for p, doc in docs:
        title, render = RENDERERS.get(doc["kind"], (doc["kind"], render_generic))
        name = p.stem
        body = notes.get(name, "_No notes yet._\n")
        parts += [
            f"## {title}",
            f"<a id=\"{_anchor(p)}\"></a>",
            "",
            f"Source: `benchmarks/results/{p.name}`.",
            "",
            render(doc, p),
            "",
            "### Notes: what it shows",
            "",
            f"<!-- notes:{name} -->\n{body}<!-- /notes:{name} -->",
            "",
        ]
    output.write_text("\n".join(parts).rstrip() + "\n")
    return output


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
