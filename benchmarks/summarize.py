"""Render ``benchmarks/RESULTS.md`` from the JSON files in ``benchmarks/results/``.

One section per results file, rendered by the function registered for the file's
``"kind"`` in :data:`RENDERERS` (a file of an unknown kind gets a generic section): the
command that reproduces it, the conditions it ran under, then tables (and figures)
built from the JSON by column specs: a header and a function from a table row (a
:class:`Row` of runs) to its cell. A section ends with the hand-written notes between
its ``<!-- notes:<name> -->`` markers, carried over from the previous RESULTS.md;
nothing else in it is written by hand. How a benchmark measures is in its script's
docstring.

Usage, from the repository root::

    python benchmarks/summarize.py [--results-dir benchmarks/results]
        [--output benchmarks/RESULTS.md]
"""

# RESULTS.md is typeset: its multiplication signs, en dashes, minus signs and Greek
# letters are meant, not typos of x, - and a.
# ruff: noqa: RUF001, RUF002

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common

Doc = dict[str, Any]
Run = dict[str, Any]
Get = str | Callable[[Run], float]
Col = tuple[str, Callable[[Any], str]]  # header, row -> cell
Check = tuple[str, Callable[[Any], str], Callable[[Any], bool]]  # header, cell, met?
Call = tuple[str, tuple[Any, ...], dict[str, Any]]  # a call on matplotlib axes

# ------------------------------------------------------------------ template


def med(values: Iterable[float]) -> float:
    v = list(values)
    return statistics.median(v) if v else math.nan


def spread(values: Iterable[float], fmt: str) -> str:
    """``median [min–max]`` of the values that are not NaN (the median alone when min
    and max read the same, ``–`` when there are none)."""
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return "–"
    lo, hi = format(min(v), fmt), format(max(v), fmt)
    return format(med(v), fmt) if lo == hi else f"{format(med(v), fmt)} [{lo}–{hi}]"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str = "l"
          ) -> str:
    """A markdown table, ``align``ed ``l`` or ``r`` per column (right past its end)."""
    seps = [":---" if a == "l" else "---:" for a in align.ljust(len(header), "r")]
    return "\n".join("| " + " | ".join(r) + " |" for r in [header, seps, *rows])


def columns(cols: Sequence[Col], rows: Iterable[Any], align: str = "l") -> str:
    """A table with a line per row of ``rows`` and a cell per column of ``cols``."""
    return table([h for h, _ in cols], [[c(r) for _, c in cols] for r in rows], align)


def facts(rows: Iterable[tuple[str, str]],
          header: Sequence[str] = ("condition", "value")) -> str:
    """A key/value table of the rows whose value is not empty."""
    return table(header, [[k, v] for k, v in rows if v], "ll")


@dataclass(frozen=True)
class Row:
    """A table line: the runs of ``key``, and its reference's runs by seed."""

    key: tuple[Any, ...]
    runs: list[Run]
    ref: dict[int, Run]
    is_ref: bool


def rows(runs: list[Run], key: Callable[[Run], tuple[Any, ...]],
         ref: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None,
         order: Callable[[tuple[Any, ...]], Any] | None = None) -> list[Row]:
    """``runs`` grouped by ``key``, in ``order`` of the keys; a row's ratios are taken
    against the runs of the key ``ref(key)``, seed by seed."""
    by: dict[tuple[Any, ...], list[Run]] = {}
    for r in runs:
        by.setdefault(key(r), []).append(r)
    refs = {k: ref(k) if ref else None for k in by}
    return [Row(k, by[k], {r["seed"]: r for r in by.get(refs[k], [])}, k == refs[k])
            for k in sorted(by, key=order)]


def one(runs: Iterable[Run], key: Callable[[Run], tuple[Any, ...]]) -> list[Row]:
    """A row per run."""
    return [Row(key(r), [r], {}, False) for r in runs]


def _get(f: Get) -> Callable[[Run], float]:
    return f if callable(f) else (lambda r: r.get(f, math.nan))


def per_seed(row: Row, f: Get, inverse: bool = False, solved: bool = False
             ) -> list[float]:
    """``f`` of each run ÷ ``f`` of the reference's run of its seed (``inverse``: the
    other way round; ``solved``: only seeds both solved)."""
    g, out = _get(f), []
    for r in row.runs:
        s = row.ref.get(r["seed"])
        if s is not None and (not solved or (r["solved"] and s["solved"])):
            out.append(g(s) / g(r) if inverse else g(r) / g(s))
    return out


def col(header: str, f: Get, fmt: str, solved: bool = False) -> Col:
    """Median [min–max] of ``f`` over a row's runs (``solved``: over the solved ones,
    the others counted beside)."""
    def cell(row: Row) -> str:
        rs = [r for r in row.runs if not solved or r["solved"]]
        n = len(row.runs) - len(rs)
        return spread(map(_get(f), rs), fmt) + (f" ({n} unsolved)" if n else "")
    return header, cell


def ratio(header: str, f: Get, fmt: str, inverse: bool = False, solved: bool = False
          ) -> Col:
    """Median [min–max] of the per-seed ratios to the reference (``1`` on its row)."""
    def cell(row: Row) -> str:
        v, n = per_seed(row, f, inverse, solved), len(row.runs)
        return "1" if row.is_ref else spread(v, fmt) + (
            f" ({len(v)} of {n} seeds)" if len(v) < n else "")
    return header, cell


def key(header: str, i: int, fmt: str = "{}") -> Col:
    return header, lambda row: fmt.format(row.key[i])


def agg(header: str, f: Get, fn: Callable[..., Any] = max) -> Col:
    return header, lambda row: format(fn(map(_get(f), row.runs)), ",")


def goal(what: str, f: Callable[[Any], float], op: str, target: float,
         fmt: str = ".2f") -> Check:
    """A target on ``f(row)`` (a median): its column ``what (goal ≥ target×)``."""
    def ok(row: Any) -> bool:
        v = f(row)
        return not math.isnan(v) and (v >= target if op == "≥" else v <= target)
    return (f"{what} (goal {op} {target:g}×)",
            lambda row: "–" if math.isnan(f(row)) else format(f(row), fmt) + "×", ok)


def verdict(checks: list[Check]) -> list[Col]:
    """The columns of ``checks``, then whether all of them are met."""
    return [(h, cell) for h, cell, _ in checks] + [
        ("met?", lambda row: "yes" if all(ok(row) for *_, ok in checks) else "**no**")]


def call(name: str, *args: Any, **kwargs: Any) -> Call:
    return name, args, kwargs


def errorbars(pts: Sequence[tuple[float, Sequence[float]]], **kwargs: Any) -> Call:
    """Error bars at each ``x`` of ``pts``: the median of its values, whiskers to their
    min and max."""
    ys = [med(v) for _, v in pts]
    err = [[y - min(v) for y, (_, v) in zip(ys, pts, strict=True)],
           [max(v) - y for y, (_, v) in zip(ys, pts, strict=True)]]
    return call("errorbar", [x for x, _ in pts], ys, yerr=err, capsize=3, **kwargs)


def figure(path: Path, alt: str, panels: Sequence[Sequence[Call]]) -> str:
    """Draw a panel per list of axes calls into the PNG ``path``; the markdown line that
    shows it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8),
                             squeeze=False)
    for ax, calls in zip(axes[0], panels, strict=True):
        for name, args, kwargs in calls:
            getattr(ax, name)(*args, **kwargs)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"![{alt}](results/{path.name})\n"


# ------------------------------------------------------- common to sections


def _index(seq: list[Any], x: Any) -> int:
    return seq.index(x) if x in seq else len(seq)


def _seeds(seeds: list[int]) -> str:
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _mxp(layout: str) -> tuple[int, int]:
    m, p = (int(v) for v in layout.split("x"))
    return m, p


def ceiling_cols(doc: Doc, layout: Callable[[Any], str],
                 speedup: Callable[[Any], float]) -> list[Col]:
    """The machine's ceiling for a row's layout (``_ceiling.py``: perfectly parallel
    work; threads for ``1xP``, processes otherwise) and the speed-up as a share of it."""
    c = doc.get("ceiling")
    if not c:
        return []

    def level(row: Any) -> dict[str, Any]:
        return c["threads" if _mxp(layout(row))[0] == 1 else "processes"]
    return [("machine's ceiling (perfectly parallel loop)", lambda row: spread(
                level(row)["pairs"], ".2f") + "×"),
            ("speed-up ÷ ceiling", lambda row: format(
                speedup(row) / statistics.median(level(row)["pairs"]), ".2f"))]


def _named(layout: str) -> str:
    """``MxP (mode)``; other methods as they are."""
    if "x" not in layout:
        return layout
    m, p = _mxp(layout)
    mode = (("serial", "hogwild") if m == 1 else ("parameter-server", "dpsgd"))[p > 1]
    return f"{layout} ({mode})"


def head(doc: Doc, runs: list[Run], *extra: tuple[str, str]) -> list[str]:
    """The command that reproduces a file, then the conditions it ran under."""
    cfg, m, snap = doc.get("config", {}), doc["machine"], doc.get("snapshot")
    minutes = f" ({doc['total_wall_s'] / 60:.1f} min)" if "total_wall_s" in doc else ""
    dirty = " (uncommitted changes to tracked files)" if m.get("git_dirty") else ""
    out = [("machine", f"{m['cores']} cores ({m.get('cpu_model')}), "
                       f"{m.get('memory_gib')} GiB RAM, {m['platform']}, "
                       f"Python {m['python']}"),
           ("versions", ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)),
           ("repository", f"`{(m.get('git_commit') or 'unknown')[:12]}`{dirty}"),
           ("run", f"{doc['started']} → {doc.get('finished') or 'unfinished'}"
                   + minutes),
           ("environment of every measured process",
            ", ".join(f"`{k}={v}`" for k, v in m.get("child_env", {}).items()))]
    if snap:
        what = "last commit" if snap["source"] == "head" else "working tree"
        commit = (snap.get("commit") or "?")[:12]
        out.append(("code measured", f"the {what} `{commit}`, "
                    "copied to a temporary directory (source digest "
                    f"`{snap['digest']}`)"))
    dig = doc.get("worktree_digest", {})
    if dig.get("end") and dig["end"] != dig["start"]:
        out.append(("`dask_dpsgd/` edited during the run",
                    "yes (not the copy measured)"))
    for when, loads in (("at each run's start", [r["loadavg_before"][0] for r in runs
                                                 if "loadavg_before" in r]),
                        ("after each run", [r["load"] for r in runs if "load" in r])):
        if loads:
            out.append((f"1-minute load average {when}", f"{spread(loads, '.2f')} on "
                        f"{m['cores']} cores (counting the benchmark's own processes)"))
    if q := doc.get("quiet"):
        out.append(("load before the first run", f"{q['load_after']:.2f} after "
                    f"waiting {q['waited_s']:.0f} s"
                    + ("" if q["quiet"] else " (**not quiet**)")))
    if waits := doc.get("load_waits"):
        noisy = ", ".join(w["phase"] for w in waits if not w["quiet"])
        out.append((f"waits for the load to drop to ≤ {cfg.get('max_load')}",
                    f"{sum(w['waited_s'] for w in waits):.0f} s in all; " + (
                        f"started above it: {noisy}" if noisy
                        else "no phase started above it")))
    out += [(f"{what} (excluded from the timings)", f"{spread(v, '.2f')} s per run")
            for what, k in (("cluster start", "cluster_start_s"),
                            ("SB3 model and environment construction", "construct_s"))
            if (v := [r[k] for r in runs if k in r])]
    seeds = _seeds(sorted({r["seed"] for r in runs if "seed" in r}))
    out += [*extra, ("config", (f"seeds {seeds}; " if seeds else "") + ", ".join(
        f"`{k}={v if isinstance(v, str) else json.dumps(v)}`" for k, v in cfg.items()
        if v is not None and k not in ("output", "output_dir")))]
    return ["Reproduce (from the repository root):", "", "```", doc.get("command", ""),
            "python benchmarks/summarize.py", "```", "", facts(out), ""]


def ratio_panel(rs: list[Row], title: str, target: float,
                values: Callable[[Row], list[float]], label: str = "{}") -> list[Call]:
    """``values`` of each row (median, whiskers min–max) grouped by the first part of
    its key, a series per method (the second part)."""
    groups = list(dict.fromkeys(r.key[0] for r in rs))
    methods = list(dict.fromkeys(r.key[1] for r in rs))
    return [*(errorbars([(groups.index(r.key[0]) + 0.8 * (i + 0.5) / len(methods) - 0.4,
                          values(r)) for r in rs if r.key[1] == m and values(r)],
                        fmt="o", label=m) for i, m in enumerate(methods)),
            call("axhline", 1.0, color="black", lw=0.8),
            call("axhline", target, color="red", ls="--", lw=0.8,
                 label=f"target {target:g}"),
            call("set_xticks", range(len(groups)), [label.format(g) for g in groups]),
            call("set_title", title, fontsize=10)]


def speedup_panel(points: list[tuple[str, list[float]]], target: float, title: str
                  ) -> list[Call]:
    """Speed-ups of layouts ``MxP`` against their cores, a series per family."""
    top = max((math.prod(_mxp(lay)) for lay, _ in points), default=1)
    out = [call("plot", [1, top], [1, top], color="gray", lw=0.8,
                label="ideal (= cores)"),
           call("axhline", target, color="red", ls="--", lw=0.8,
                label=f"target {target:g}×")]
    for name, keep in (("workers (M×1)", lambda m, p: p == 1),
                       ("threads (1×P)", lambda m, p: m == 1),
                       ("both (M×P)", lambda m, p: m > 1 and p > 1)):
        pts = sorted((math.prod(_mxp(lay)), v) for lay, v in points
                     if keep(*_mxp(lay)) and v)
        if any(x > 1 for x, _ in pts):
            out.append(errorbars(pts, fmt="o-", label=name))
    if top > 4:
        out += [call("set_xscale", "log", base=2), call("set_yscale", "log", base=2)]
    return [*out, call("set", xlabel="cores used (workers × threads)",
                       ylabel="speed-up over serial", title=title)]


# ----------------------------------------------------------------------- LDA

def _pass_time(r: Run) -> Run:
    """A DPSVI run with its pass time split (per worker, %), MiB moved per pass and
    fit overhead."""
    if "dpsvi" not in r:
        return r
    d, hist = r["dpsvi"], r["dpsvi"]["history"]
    total = sum(h["time/pass_s"] for h in hist)
    c, w = (sum(h[k] for h in hist) / d["n_workers_"]
            for k in ("time/compute_s", "time/wait_s"))
    return {**r, "compute%": 100 * c / total, "wait%": 100 * w / total,
            "other%": 100 * (total - c - w) / total, "overhead_s": r["fit_s"] - total,
            "mib": (d["comm_bytes_pushed_"] + d["comm_bytes_pulled_"])
            / 2**20 / len(hist)}


def render_lda(doc: Doc, path: Path) -> str:
    """Section for ``bench_lda.py``: DPSVI against scikit-learn and gensim."""
    cfg, runs = doc["config"], [_pass_time(r) for r in doc["runs"]]
    rs = rows(runs, lambda r: (r["n_components"], r["method"]),
              lambda k: (k[0], "sklearn"),
              lambda k: (k[0], _index(cfg["methods"], k[1])))
    km = [key("K", 0, "K={}"), key("method", 1, "`{}`")]
    dpsvi = [r for r in rs if "dpsvi" in r.runs[0]]
    others = [r for r in rs if not r.is_ref]

    def docs(r: Row) -> list[float]:
        return per_seed(r, "docs_per_s")

    def perp(r: Row) -> list[float]:
        return per_seed(r, "perplexity")
    return "\n".join([
        *head(doc, runs, ("corpus", f"NIPS, {runs[0]['n_train']} training / "
                                    f"{runs[0]['n_test']} held-out documents")),
        "### Speed, quality, memory", "",
        columns([*km, col("docs/s", "docs_per_s", ",.0f"),
                 ratio("docs/s ÷ sklearn", "docs_per_s", ".2f"),
                 col("held-out perplexity", "perplexity", ",.0f"),
                 ratio("perplexity ÷ sklearn", "perplexity", ".3f"),
                 ratio("doc-part perplexity ÷ sklearn", "perplexity_doc_part", ".3f"),
                 col("fit wall (s)", "fit_s", ".2f"),
                 col("CPU cores busy", "cpu_util", ".2f"),
                 col("peak memory (MiB)", "peak_pss_mib", ",.0f")], rs, "ll"), "",
        figure(path.with_suffix(".png"), "ratios to scikit-learn", [
            ratio_panel(others, "docs/s ÷ scikit-learn", 5.0, docs, "K={}"),
            ratio_panel(others, "held-out perplexity ÷ scikit-learn", 1.02, perp,
                        "K={}")]),
        "### Against the target", "",
        columns([*km, *verdict([
            goal("docs/s ÷ sklearn", lambda r: med(docs(r)), "≥", 5.0),
            goal("perplexity ÷ sklearn", lambda r: med(perp(r)), "≤", 1.02, ".3f")])],
            dpsvi, "ll"), "",
        "### Docs/s per pass (median over seeds; gensim reports no per-pass time)", "",
        columns([*km, *((f"pass {i + 1}", lambda row, i=i: format(med(
            r["pass_docs_per_s"][i] for r in row.runs), ",.0f"))
            for i in range(cfg["max_iter"]))], [r for r in rs if r.key[1] != "gensim"],
            "ll"), "",
        "### Where DPSVI's pass time goes (per worker, % of the pass wall time)", "",
        columns([*km, col("E-step compute %", "compute%", ".0f"),
                 col("waiting on the server %", "wait%", ".0f"),
                 col("other %", "other%", ".0f"),
                 col("staleness mean", lambda r: r["dpsvi"]["staleness_mean_"], ".2f"),
                 agg("staleness max", lambda r: r["dpsvi"]["staleness_max_"]),
                 col("MiB pushed+pulled / pass", "mib", ".0f"),
                 col("fit overhead: fit wall − passes (s)", "overhead_s", ".2f")],
                dpsvi, "ll")])


# ----------------------------------------------------------------------- A2C

A2C_KEY = [key("env", 0), key("method", 1, "`{}`")]
ALL_SOLVED: Check = (
    "solved (goal: all)", lambda row: f"{sum(r['solved'] for r in row.runs)}/"
                                      f"{len(row.runs)}",
    lambda row: all(r["solved"] for r in row.runs))
SOLVED: Col = ("solved", ALL_SOLVED[1])
ENVS: Col = ("envs", lambda row: ", ".join(sorted({str(r["total_envs"])
                                                   for r in row.runs})))
TIME = col("time to solve (s)", "time_s", ".2f", solved=True)
STEPS = col("env steps at stop", "steps", ",.0f", solved=True)
CROSS = col("crossing step", "crossing_step", ",.0f", solved=True)
RATE = col("env steps/s", "steps_per_s", ",.0f")
BUSY = col("CPU cores busy", "cpu_util", ".2f")


def _speedups(row: Row) -> list[float]:
    return per_seed(row, "time_s", inverse=True, solved=True)


def _steps(row: Row) -> list[float]:
    return per_seed(row, "steps", solved=True)


A2C_CHECKS = [goal("speed-up vs SB3", lambda r: med(_speedups(r)), "≥", 5.0),
              goal("env steps ÷ SB3", lambda r: med(_steps(r)), "≤", 1.5), ALL_SOLVED]


def _a2c_rows(runs: list[Run], cfg: dict[str, Any], ref: str) -> list[Row]:
    methods = ["sb3", *(f"hsa2c-{lay}" for lay in cfg["layouts"])]
    return rows(runs, lambda r: (r["env_id"], r["method"]), lambda k: (k[0], ref),
                lambda k: (_index(cfg["envs"], k[0]), _index(methods, k[1])))


def render_a2c(doc: Doc, path: Path) -> str:
    """Section for ``bench_a2c.py``: HSA2C against stable-baselines3."""
    runs = doc["runs"]
    rs = _a2c_rows(runs, doc["config"], "sb3")
    hs = [r for r in rs if not r.is_ref]

    def h(k: str) -> Callable[[Run], float]:
        return lambda r: r["hsa2c"][k]
    return "\n".join([
        *head(doc, runs), "### Time and env steps to solve", "",
        columns([*A2C_KEY, ENVS, SOLVED, TIME,
                 ratio("speed-up vs SB3 (SB3 time ÷ time)", "time_s", ".1f", True,
                       True),
                 STEPS, ratio("env steps ÷ SB3", "steps", ".2f", solved=True), CROSS,
                 ratio("crossing step ÷ SB3", "crossing_step", ".2f", solved=True)],
                rs, "lll"), "",
        "### Throughput, quality, memory", "",
        columns([*A2C_KEY, RATE, ratio("steps/s ÷ SB3", "steps_per_s", ".1f"),
                 col("eval return (final policy)", "eval_mean", ".1f"), BUSY,
                 col("peak memory (MiB)", "peak_pss_mib", ",.0f")], rs, "ll"), "",
        figure(path.with_suffix(".png"), "ratios to stable-baselines3", [
            ratio_panel(hs, "time to solve: SB3 ÷ method (speed-up)", 5.0, _speedups),
            ratio_panel(hs, "env steps to solve: method ÷ SB3", 1.5, _steps)]),
        "### Against the target", "",
        columns([*A2C_KEY, *verdict(A2C_CHECKS)], hs, "ll"), "",
        "### HSA2C details", "",
        columns([*A2C_KEY, col("fit overhead (s)", "fit_overhead_s", ".2f"),
                 col("steps after crossing", lambda r: r["steps"] - r["crossing_step"],
                     ",.0f", solved=True),
                 col("updates", h("n_updates_"), ",.0f"),
                 col("pushes", h("n_pushes_sent_"), ",.0f"),
                 col("staleness mean", h("staleness_mean_"), ".2f"),
                 agg("staleness max", h("staleness_max_")),
                 agg("rejected", h("n_updates_rejected_"), sum)],
                [r for r in hs if "hsa2c" in r.runs[0]], "ll")])


def a2c_pools(docs: list[tuple[Path, Doc]]) -> list[tuple[list[Path], list[Run]]]:
    """Groups of ``bench_a2c.py`` results that measured the same code on distinct seeds.

    Two files pool when their snapshots have the same source digest; runs of an
    (environment, method, seed) already pooled from an earlier file are not counted
    twice (the earlier file's run is kept). Only groups of two or more files.
    """
    groups: dict[str, list[tuple[Path, Doc]]] = {}
    for p, doc in docs:
        digest = (doc.get("snapshot") or {}).get("digest")
        if doc["kind"] == "a2c" and digest:
            groups.setdefault(digest, []).append((p, doc))
    pools = []
    for members in (m for m in groups.values() if len(m) > 1):
        runs: dict[tuple[str, str, int], Run] = {}
        for _, doc in members:
            for r in doc["runs"]:
                runs.setdefault((r["env_id"], r["method"], r["seed"]), r)
        pools.append(([p for p, _ in members], list(runs.values())))
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


def render_a2c_pool(paths: list[Path], docs: dict[Path, Doc], runs: list[Run]) -> str:
    """Section pooling the seeds of several ``bench_a2c.py`` runs of the same code."""
    snap, cfg = docs[paths[0]]["snapshot"], docs[paths[0]]["config"]
    rs = _a2c_rows(runs, cfg, "sb3")
    files = [{r.key: r for r in _a2c_rows(docs[p]["runs"], cfg, "sb3")} for p in paths]

    def hs(header: str, cell: Callable[[Row], str]) -> Col:
        return header, lambda row: (
            "–" if row.is_ref or not _speedups(row) else cell(row))
    return "\n".join([
        facts([("sources", ", ".join(f"`benchmarks/results/{p.name}`" for p in paths)),
               ("code measured", f"`{(snap.get('commit') or '?')[:12]}` (source digest "
                                 f"`{snap['digest']}`), same harness")]), "",
        columns([*A2C_KEY, ("seeds", lambda row: str(len(row.runs))), SOLVED, TIME,
                 ratio("speed-up vs SB3", "time_s", ".1f", True, True),
                 hs("95% bootstrap interval of the median speed-up", lambda row:
                    "{:.1f}–{:.1f}".format(*median_interval(_speedups(row)))),
                 hs("seeds ≥ 5×", lambda row: f"{sum(v >= 5 for v in _speedups(row))} "
                                              f"of {len(_speedups(row))}"),
                 hs("median speed-up per file", lambda row: " / ".join(
                     f"{med(_speedups(f[row.key])):.1f}×" for f in files
                     if row.key in f)),
                 STEPS, ratio("env steps ÷ SB3", "steps", ".2f", solved=True), RATE,
                 ratio("steps/s ÷ SB3", "steps_per_s", ".2f")], rs, "ll"), "",
        "### Against the target", "",
        columns([*A2C_KEY, *verdict(A2C_CHECKS)], [r for r in rs if not r.is_ref],
                "ll")])


def render_a2c_loop(doc: Doc, path: Path) -> str:
    """Section for ``bench_a2c_loop.py``: a serial worker's time per env step."""
    rs = rows(doc["runs"], lambda r: (r["env_id"],),
              order=lambda k: _index(doc["config"]["envs"], k[0]))

    def of(f: Callable[[float, float], float], fmt: str) -> Callable[[Row], str]:
        return lambda row: format(f(*(med(r[k] for r in row.runs)
                                      for k in ("worker_total", "worker_env"))), fmt)
    parts = {"bare env": "bare_env", "`gym.make` env": "wrapped_env",
             "`SyncVectorEnv`": "sync_vector_env",
             "`BoxSyncVectorEnv`": "box_sync_vector_env",
             "vector entry point": "vector_entry_point",
             "worker: total": "worker_total",
             "in env.step": "worker_env", "in kernels": "worker_kernels",
             "rest": "worker_rest"}
    return "\n".join([
        *head(doc, doc["runs"]), "Microseconds per environment step (one copy stepped "
        "once), median of the repeats:", "",
        columns([key("env", 0), *(col(h, k, ".1f") for h, k in parts.items()),
                 ("HSA2C's own share: (total − env.step) ÷ total",
                  of(lambda t, e: 1 - e / t, ".0%")),
                 ("ceiling if HSA2C's own work were free: total ÷ env.step",
                  of(lambda t, e: t / e, ".2f"))], rs)])


def _curves(rs: list[Row], env: str, threshold: float) -> list[Call]:
    """Mean return of the last 100 episodes against wall-clock time, a line per run."""
    out = [call("plot", [p[0] for p in c],
                [math.nan if p[2] is None else p[2] for p in c], drawstyle="steps-post",
                color=f"C{i}", lw=0.8, alpha=0.6,
                label=f"{row.key[1]} ({r.get('mode', 'anchor')})"
                if r is row.runs[0] else None)
           for i, row in enumerate(r for r in rs if r.key[0] == env)
           for r in row.runs if (c := r.get("wall_curve"))]
    return [*out, call("axhline", threshold, color="red", ls="--", lw=0.8,
                       label=f"solved ({threshold:g})"),
            call("set", xlabel="wall-clock time (s)", title=env,
                 ylabel="mean return, last 100 episodes")]


def render_a2c_modes(doc: Doc, path: Path) -> str:
    """Section for ``bench_a2c_modes.py``: HSA2C's modes against serial HSA2C."""
    cfg, runs, cores = doc["config"], doc["runs"], doc["machine"]["cores"]
    rs = _a2c_rows(runs, cfg, "hsa2c-1x1")
    hs = [r for r in rs if "layout" in r.runs[0]]
    envs = [e for e in cfg["envs"] if any(r.key[0] == e for r in rs)]
    best = [max(c, key=lambda r: med(_speedups(r))) for e in envs if (c := [
        r for r in hs if r.key[0] == e and not r.is_ref and _speedups(r)])]
    over = [r.key[1] for r in hs if r.runs[0]["cores"] > cores
            and not cfg.get("scheduler_address")]
    threshold = dict(zip(cfg["envs"], cfg["thresholds"], strict=True))
    stem = path.with_suffix("")

    def split(row: Row) -> str:
        if "layout" not in row.runs[0] or _mxp(row.runs[0]["layout"])[1] == 1:
            return "–"
        return "yes" if all(r["threads_split_gradient"] for r in row.runs) else "no"
    return "\n".join([
        *head(doc, runs, ("gradient split over a worker's threads from "
                          "(`PARALLEL_MIN_BATCH`)", ", ".join(
                              f"{n} samples per update" for n in
                              {r["parallel_min_batch"] for r in runs
                               if "parallel_min_batch" in r})),
              ("layouts beyond the machine's cores (oversubscribed)", ", ".join(over))),
        "### Time to solve and speed-up over serial", "",
        columns([*A2C_KEY, ("mode", lambda row: row.runs[0].get("mode", "–")),
                 ("cores", lambda row: str(row.runs[0].get("cores", 1))), ENVS,
                 ("threads split the gradient", split), SOLVED, TIME,
                 ratio("speed-up over serial", "time_s", ".2f", True, True),
                 ("speed-up ÷ cores", lambda row: "1" if row.is_ref else spread(
                     [v / row.runs[0]["cores"] for v in _speedups(row)], ".2f")
                  if "cores" in row.runs[0] else "–"),
                 CROSS, RATE, BUSY], rs, "lll"), "",
        figure(stem.with_name(stem.name + "_curves.png"),
               "mean return vs wall-clock time",
               [_curves(rs, e, threshold[e]) for e in envs]),
        figure(stem.with_name(stem.name + "_speedup.png"),
               "speed-up over serial vs cores",
               [speedup_panel([(r.runs[0]["layout"], _speedups(r)) for r in hs
                               if r.key[0] == e], 1.5, e)
                + [errorbars([(1, _speedups(r))], fmt="*", color="tab:gray", ms=9,
                             label="SB3 A2C (1 thread)")
                   for r in rs if r.key == (e, "sb3") and _speedups(r)] for e in envs]),
        "### Against the target: the best mode solves ≥ 1.5× sooner than serial", "",
        columns([key("env", 0), key("best mode", 1, "`{}`"), *verdict(
            [goal("speed-up over serial", lambda r: med(_speedups(r)), "≥", 1.5),
             ALL_SOLVED]), *ceiling_cols(doc, lambda r: r.runs[0]["layout"],
                                         lambda r: med(_speedups(r)))], best, "ll")])


def render_faults(doc: Doc, path: Path) -> str:
    """Section for ``bench_faults.py``: what every disturbed fit survived."""
    def lost(r: Run) -> str:  # ≥: a lower bound (the server's own worker died)
        if not r.get("recoveries"):
            return "0"
        exact = r.get("updates_lost_exact", True)
        return ("" if exact else "≥") + str(r["updates_lost"])

    def run(f: Callable[[Run], Any]) -> Callable[[Row], str]:
        return lambda row: str(f(row.runs[0]))
    return "\n".join([
        *head(doc, doc["runs"]),
        "Every run; the first of a kill or pause scenario is the undisturbed reference "
        "of the quality ratio:", "",
        columns([key("scenario", 0), key("seed", 1), key("fault", 2),
                 ("completed", run(lambda r: "yes" if r["completed"]
                                   else f"no: {r['error']}")),
                 ("recoveries", run(lambda r: r.get("recoveries", 0))),
                 ("updates lost (≥: at least)", run(lost)),
                 ("pushes sent = applied + rejected", run(
                     lambda r: "{:,} = {:,} + {:,}".format(*(r.get(k, 0) for k in (
                         "pushes_sent", "applied", "rejected")))
                     + (" ✓" if r.get("accounting_ok") else " ✗"))),
                 ("max_staleness used / max seen", run(
                     lambda r: f"{r.get('max_staleness', '–')} / "
                               f"{r.get('staleness_max', '–')}")),
                 col("quality", "quality", ".1f"),
                 col("quality ÷ undisturbed", "quality_ratio", ".3f"),
                 col("fit s", "wall_s", ".1f")],
                one(doc["runs"], lambda r: (r["scenario"], r["seed"],
                                            r["fault"] or "none")), "lrll")])


# ------------------------------------------------ LDA modes, staleness, bytes

def _layout_key(layout: str) -> tuple[int, int]:
    return (0, 0) if "x" not in layout else (math.prod(_mxp(layout)), _mxp(layout)[0])


def cost_params(runs: list[Run], docs: int) -> dict[str, float]:
    """Per-document compute, per-update wait and per-pass remainder of serial runs."""
    serial = [r for r in runs if r.get("layout") == "1x1"]
    compute, wait, total = (sum(sum(r[k]) for r in serial)
                            for k in ("compute_s", "wait_s", "pass_s"))
    passes = sum(len(r["pass_s"]) for r in serial)
    updates = sum(r["updates"] for r in serial)
    return {"c": compute / (passes * docs), "w": wait / updates,
            "o": (total - compute - wait) / passes, "U": updates / passes,
            "b": sum(r["time_s"] - sum(r["pass_s"]) for r in serial) / passes}


def cost_model(prm: dict[str, float], m: int, p: int, cores: int, n_passes: int,
               docs: int, warmup: int = 10) -> float:
    """Predicted seconds of ``n_passes`` passes for ``m`` workers x ``p`` threads: the
    E-step split perfectly over the cores, each worker's ``U / m`` round trips to the
    server, serial's per-pass remainder; pass 1's ``warmup`` synchronous updates are
    computed by all workers together, their round trips not overlapped."""
    per_pass = (docs * prm["c"] / (m * p) * max(1.0, m * p / cores)
                + prm["U"] / m * prm["w"] + prm["o"] + prm["b"])
    return n_passes * per_pass + min(warmup, prm["U"]) * prm["w"] * (1 - 1 / m)


def _cost_section(doc: Doc, runs: list[Run]) -> list[str]:
    dpsvi = [r for r in runs if r.get("method") == "dpsvi"]
    if not any(r["layout"] == "1x1" for r in dpsvi):
        return []
    docs, cores = doc["corpus"]["train_docs"], doc["machine"]["cores"]
    prm = cost_params(dpsvi, docs)

    def pred(r: Run) -> float:
        return cost_model(prm, *_mxp(r["layout"]), cores, r["passes"], docs)
    return [
        "### Cost model: predicted vs measured time", "",
        "    t(n) = n · [D·c/(M·P)·max(1, M·P/C) + (U/M)·w + o + b]"
        " + min(W, U)·w·(1 − 1/M)", "",
        facts([("D: training documents", f"{docs:,}"), ("C: cores", str(cores)),
               ("c: E-step compute per document", f"{prm['c'] * 1e3:.3f} ms"),
               ("w: wait on the server per update", f"{prm['w'] * 1e3:.2f} ms"),
               ("o: other work per pass", f"{prm['o']:.3f} s"),
               ("b: between passes", f"{prm['b']:.3f} s"),
               ("U: updates per pass", f"{prm['U']:.1f}"), ("W: warm-up updates", "10"),
               (f"measured ÷ predicted, all {len(dpsvi)} points",
                spread([r["time_s"] / pred(r) for r in dpsvi], ".2f"))],
              ("parameter (c, w, o, b, U: the serial runs')", "value")), "",
        columns([key("layout", 0), key("passes", 1),
                 ("predicted (s)", lambda row: f"{pred(row.runs[0]):.2f}"),
                 col("measured (s)", "time_s", ".2f"),
                 ("measured ÷ predicted", lambda row: format(
                     med(r["time_s"] for r in row.runs) / pred(row.runs[0]), ".2f"))],
                rows(dpsvi, lambda r: (r["layout"], r["passes"]),
                     order=lambda k: (_layout_key(k[0]), k[1])))]


def render_lda_modes(doc: Doc, path: Path) -> str:
    """Section for ``bench_lda_modes.py``'s modes: time to serial's final perplexity."""
    cfg, runs = doc["config"], doc["runs"]
    layouts = sorted({r["layout"] for r in runs}, key=_layout_key)
    n_max = max(r["passes"] for r in runs)
    pts: dict[tuple[str, int], list[tuple[int, float, float]]] = {}
    for r in runs:
        pts.setdefault((r["layout"], r["seed"]), []).append(
            (r["passes"], r["time_s"], r["perplexity"]))

    def after(lay: str, n: int) -> tuple[float, float] | None:
        got = [(t, q) for (lo, _), ps in pts.items() if lo == lay
               for m, t, q in ps if m == n]
        return (med(t for t, _ in got), med(q for _, q in got)) if got else None
    # Serial's final (time, perplexity) per seed; each layout's first point at or below
    # it (to 1e-4 relative: 1x2's threads sum in another order than serial).
    final = {s: (t, q) for (lay, s), ps in pts.items() if lay == "1x1"
             for n, t, q in ps if n == cfg["passes"]}
    hits = {lay: [next(((t, n) for n, t, q in sorted(pts.get((lay, s), []))
                        if q <= final[s][1] * (1 + 1e-4)), None) for s in final]
            for lay in layouts}
    speedups = {lay: [final[s][0] / h[0] for s, h in zip(final, hits[lay], strict=True)
                      if h] for lay in layouts}
    best = sorted((lay for lay in layouts if lay not in ("sklearn", "1x1")
                   and speedups[lay]), key=lambda lay: med(speedups[lay]))[-1:]
    curves = [call("plot", *zip(*c, strict=True), marker="o", ms=3, label=lay,
                   ls="--" if lay == "sklearn" else "-") for lay in layouts
              if (c := [a for n in range(n_max) if (a := after(lay, n + 1))])]

    def hit(i: int, fmt: str) -> Callable[[str], str]:
        return lambda lay: spread([h[i] for h in hits[lay] if h], fmt)
    return "\n".join([
        *head(doc, runs, ("corpus", "{name}, {train_docs} training / {test_docs} "
                          "held-out documents, {vocab:,} words".format(
                              **doc["corpus"]))),
        "### Held-out perplexity after n passes (median perplexity @ median time)", "",
        columns([("method", _named), *((f"n={n}", lambda lay, n=n: "" if (
            a := after(lay, n)) is None else f"{a[1]:,.0f} @ {a[0]:.2f}s")
            for n in range(1, n_max + 1))], layouts), "",
        "### Time to the serial run's final perplexity", "",
        columns([("method", _named), ("time (s)", hit(0, ".2f")),
                 ("passes", hit(1, ".0f")),
                 ("speed-up vs serial", lambda lay: spread(speedups[lay], ".2f")),
                 ("seeds not reaching it",
                  lambda lay: f"{hits[lay].count(None)}/{len(final)}")], layouts), "",
        f"### Against the target: on {doc['machine']['cores']} cores, the best mode "
        "reaches serial's final perplexity ≥ 1.8× sooner", "",
        columns([("best mode", _named), *verdict([goal(
            "speed-up vs serial", lambda lay: med(speedups[lay]), "≥", 1.8)]),
            *ceiling_cols(doc, str, lambda lay: med(speedups[lay]))], best),
        "",
        figure(path.with_suffix(".png"), "perplexity vs time and speed-up", [
            [*curves, call("axhline", med(q for _, q in final.values()), color="grey",
                           lw=0.8, ls=":", label="serial's final"),
             call("set_yscale", "log"),
             call("set", xlabel="wall-clock time (s)", title="perplexity vs time",
                  ylabel="held-out perplexity (median over seeds)")],
            speedup_panel([(lay, speedups[lay]) for lay in layouts if lay != "sklearn"],
                          1.8, "speed-up to serial's final perplexity")]),
        *_cost_section(doc, runs)])


def render_lda_staleness(doc: Doc, path: Path) -> str:
    """Section for ``bench_lda_modes.py``'s staleness, against the paper's bounds."""
    rs = rows(doc["runs"], lambda r: (r["batch_size"], r["layout"]),
              lambda k: (k[0], "1x1"), lambda k: (-k[0], _layout_key(k[1])))

    def steps(row: Row) -> float:  # T: SVI steps applied in the fit
        return med(r.get("steps", r["updates"]) for r in row.runs)

    def within(row: Row) -> str:
        m, p = _mxp(row.key[1])
        return "yes" if m <= steps(row) ** 0.5 and p <= steps(row) ** 0.25 else "**no**"
    p1, p2 = [], []
    for b in dict.fromkeys(r.key[0] for r in rs):
        br = [r for r in rs if r.key[0] == b]
        x = [math.prod(_mxp(r.key[1])) for r in br]
        p1 += [call("plot", x, [med(q["staleness_mean"] for q in r.runs) for r in br],
                    "o", label=f"mean, batch {b}"),
               call("plot", x, [max(q["staleness_max"] for q in r.runs) for r in br],
                    "x", label=f"max, batch {b}"),
               call("axhline", steps(br[0]) ** 0.5, ls=":", lw=0.8,
                    label=f"√T, batch {b}")]
        p2.append(call("plot", [_mxp(r.key[1])[0] / steps(r) ** 0.5 for r in br],
                       [med(per_seed(r, "perplexity")) for r in br], "o",
                       label=f"batch {b}"))
    return "\n".join([
        *head(doc, doc["runs"]),
        columns([key("minibatch", 0), ("layout", lambda row: _named(row.key[1])),
                 ("T", lambda row: f"{steps(row):.0f}"),
                 ("√T", lambda row: f"{steps(row) ** 0.5:.1f}"),
                 ("T^¼", lambda row: f"{steps(row) ** 0.25:.2f}"),
                 ("within bounds: M ≤ √T, P ≤ T^¼", within),
                 col("staleness mean", "staleness_mean", ".2f"),
                 col("staleness max", "staleness_max", ".0f"),
                 ratio("perplexity ÷ serial", "perplexity", ".3f"),
                 col("time (s)", "time_s", ".2f")], rs, "llrrrl"), "",
        figure(path.with_suffix(".png"), "staleness vs workers", [
            [*p1, call("set", xlabel="workers × threads",
                       ylabel="staleness (updates)")],
            [*p2, call("axvline", 1.0, color="grey", ls="--", lw=0.8, label="M = √T"),
             call("set", xlabel="workers M ÷ √T",
                  ylabel="held-out perplexity ÷ serial")]])])


def render_lda_comm(doc: Doc, path: Path) -> str:
    """Section for ``bench_lda_modes.py``'s bytes per update as the vocabulary grows."""
    runs = sorted(doc["runs"], key=lambda r: r["vocab"])

    def kib(k: str) -> Callable[[Run], float]:  # per SVI step (all its shares)
        return lambda r: r[k] / max(r.get("steps", r["updates"]), 1) / 1024

    def dense(r: Run) -> float:
        return r["dense_bytes_per_update"] / 1024
    push, pull, v = kib("bytes_pushed"), kib("bytes_pulled"), [r["vocab"] for r in runs]
    return "\n".join([
        *head(doc, runs),
        columns([("V", lambda row: f"{row.key[0]:,}" + (
                     f" (split ×{row.runs[0]['split']})"
                     if row.runs[0].get("split", 1) > 1 else "")),
                 col("distinct words / minibatch", "minibatch_words_mean", ",.0f"),
                 col("KiB pushed / update", push, ",.1f"),
                 col("KiB pulled / update", pull, ",.1f"),
                 col("dense KiB (one way)", dense, ",.1f"),
                 col("sparse ÷ dense", lambda r: (push(r) + pull(r)) / (2 * dense(r)),
                     ".2f")], one(runs, lambda r: (r["vocab"],))), "",
        figure(path.with_suffix(".png"), "bytes per update vs vocabulary", [[
            *(call("plot", v, list(map(f, runs)), label=label, **kw)
              for f, label, kw in (
                (push, "pushed per update", {"marker": "o"}),
                (pull, "pulled per update", {"marker": "s"}),
                (dense, "dense K×V (one way)", {"ls": "--", "color": "grey"}))),
            call("set_xscale", "log"), call("set_yscale", "log"),
            call("set", xlabel="vocabulary size V", ylabel="KiB")]])])


def render_nmf(doc: Doc, path: Path) -> str:
    """Section for ``bench_nmf.py``: the NMF plug-in against scikit-learn's
    MiniBatchNMF."""
    runs, cfg = doc["runs"], doc["config"]
    ref = {r["seed"]: r for r in runs if r["method"] == "sklearn"}
    rs = rows([r for r in runs if r["passes"] == cfg["passes"]
               or r["method"] == "sklearn"], lambda r: (r["method"],),
              lambda k: ("sklearn",),
              lambda k: _index(["sklearn", *cfg["layouts"]], k[0]))

    def reach(row: Row) -> list[tuple[int, float]]:
        """Per seed: the fewest passes that reach scikit-learn's final loss, and the
        speed-up there."""
        hits = [min(((r["passes"], sk["time_s"] / r["time_s"]) for r in runs
                     if r["method"] == row.key[0] and r["seed"] == s
                     and r["loss"] <= sk["loss"]), default=None)
                for s, sk in ref.items()]
        return [h for h in hits if h]

    def to_final(i: int, what: str, fmt: str) -> Col:
        def cell(row: Row) -> str:
            n = len(reach(row))
            return "–" if row.is_ref else spread([x[i] for x in reach(row)], fmt) + (
                f" ({n}/{len(ref)} seeds)" if n < len(ref) else "")
        return f"{what} to scikit-learn's final loss", cell
    return "\n".join([
        *head(doc, runs, ("corpus", "NIPS counts, {:,} documents × {:,} words".format(
            *doc["corpus_shape"]))),
        columns([key("method", 0),
                 col(f"time of {cfg['passes']} passes (s)", "time_s", ".2f"),
                 ratio("speed-up vs scikit-learn", "time_s", ".2f", inverse=True),
                 ratio("loss ÷ scikit-learn's", "loss", ".3f"),
                 to_final(0, "passes", ".0f"), to_final(1, "speed-up", ".1f")], rs)])


def render_pendulum(doc: Doc, path: Path) -> str:
    """Section for ``bench_pendulum.py``: time and steps to an eval return of -200."""
    cfg = doc["config"]
    runs = [{**r, "solved": r["solve_s"] is not None} for r in doc["runs"]]
    methods = [*(f"sb3-{v}" for v in cfg["sb3"]),
               *(f"hsa2c-{lay}" + ("" if v == "plain" else f"-{v}")
                 for v in cfg.get("hsa2c", ["plain"]) for lay in cfg["layouts"])]
    rs = rows(runs, lambda r: (r["method"],), lambda k: ("sb3-zoo",),
              lambda k: _index(methods, k[0]))  # ratios against SB3 zoo, per seed
    ours = [r for r in rs if r.key[0].startswith("hsa2c")]

    def bound(row: Row, f: str, total: float) -> list[float]:
        """Per seed HSA2C solved: SB3 zoo's solve time or steps ÷ HSA2C's (steps: the
        other way round); where SB3 zoo never solved, its whole run stands in (a bound
        in SB3's favour)."""
        out = []
        for r in row.runs:
            s = row.ref.get(r["seed"])
            if s is None or not r["solved"]:
                continue
            theirs = s[f] if s["solved"] else (s["wall_s"] if f == "solve_s" else total)
            out.append(theirs / r[f] if f == "solve_s" else r[f] / theirs)
        return out
    speedup = ("speed-up vs SB3 zoo (its whole run where it never solved)",
               lambda row: "1" if row.is_ref else spread(
                   bound(row, "solve_s", 0), ".1f"))
    steps = ("steps ÷ SB3 zoo's (its budget where it never solved)",
             lambda row: "1" if row.is_ref else spread(
                 bound(row, "solve_steps", cfg["total_timesteps"]), ".2f"))
    colours = dict(zip(methods, ["tab:gray", "tab:brown", "tab:blue", "tab:orange",
                                 "tab:green", "tab:red", "tab:purple"], strict=False))

    def panel(x: int, label: str) -> list[Call]:
        calls = [call("plot", [c[x] for c in r["curve"]], [c[2] for c in r["curve"]],
                      color=colours.get(r["method"]), lw=0.9, alpha=0.7,
                      label=r["method"] if r["seed"] == 0 else None) for r in runs]
        return [*calls, call("axhline", cfg["threshold"], color="k", lw=0.8, ls=":"),
                call("set", xlabel=label, ylabel="eval return (10 episodes)",
                     title=f"Pendulum-v1, seeds 0–{cfg['seeds'] - 1}")]
    threshold = f"{cfg['threshold']:g}"
    return "\n".join([
        *head(doc, runs),
        columns([key("method", 0), SOLVED,
                 col(f"time to {threshold} (s)", "solve_s", ".1f", True),
                 col(f"steps to {threshold}", "solve_steps", ",.0f", True),
                 speedup, steps,
                 col("final eval", "final_eval", ".0f"),
                 col(f"wall of {cfg['total_timesteps']:,} steps (s)", "wall_s", ".1f")],
                rs), "",
        figure(path.with_suffix(".png"), "eval return vs wall-clock time and steps",
               [panel(0, "wall-clock seconds since training began"),
                panel(1, "environment steps")]),
        "### Against the target", "",
        columns([key("method", 0), *verdict([
            ALL_SOLVED,
            goal("speed-up vs SB3 zoo", lambda row: med(bound(row, "solve_s", 0)),
                 "≥", 5),
            goal("steps ÷ SB3 zoo's", lambda row: med(bound(
                row, "solve_steps", cfg["total_timesteps"])), "≤", 1.5)])],
                ours)])


def _return_at(run: Run, t: float) -> float:
    """The eval return of a run's last policy copy at or before wall time ``t``."""
    seen = [c[2] for c in run["curve"] if c[0] <= t + 1e-9]
    return seen[-1] if seen else math.nan


def render_mujoco(doc: Doc, path: Path) -> str:
    """Section for ``bench_mujoco.py``: eval return at equal wall time."""
    cfg, runs = doc["config"], doc["runs"]
    methods = [m for m in cfg["methods"] if any(r["method"] == m for r in runs)]
    marks = [t for t in (cfg["budget_s"] / 3, 2 * cfg["budget_s"] / 3, cfg["budget_s"])]
    lines = [*head(doc, runs)]
    verdicts = []
    for env in cfg["envs"]:
        env_runs = [r for r in runs if r["env"] == env]
        if not env_runs:
            continue
        body = []
        for m in methods:
            mine = [r for r in env_runs if r["method"] == m]
            body.append([m, _seeds([r["seed"] for r in mine]),
                         *(spread([_return_at(r, t) for r in mine], ".0f")
                           for t in marks),
                         spread([r["steps"] for r in mine], ",.0f")])
        lines += [f"**{env}**", "",
                  table(["method", "seeds", *(f"eval return at {t / 60:.0f} min"
                                               for t in marks),
                         f"steps in {cfg['budget_s'] / 60:.0f} min"], body), ""]
        seeds = sorted({r["seed"] for r in env_runs})
        for seed in seeds:
            by = {r["method"]: r for r in env_runs if r["seed"] == seed}
            if "hsa2c" not in by or not any(m in by for m in ("sb3-a2c", "sb3-ppo")):
                continue
            ok = all(_return_at(by["hsa2c"], t) >= max(
                _return_at(by[m], t) for m in ("sb3-a2c", "sb3-ppo") if m in by)
                for t in marks)
            verdicts.append([env, str(seed), ", ".join(
                m for m in ("sb3-a2c", "sb3-ppo") if m in by), "yes" if ok else "**no**"])
    colours = {"hsa2c": "tab:blue", "sb3-a2c": "tab:gray", "sb3-ppo": "tab:brown"}
    panels = [[*(call("plot", [c[0] / 60 for c in r["curve"]],
                      [c[2] for c in r["curve"]], color=colours.get(r["method"]),
                      lw=0.9, label=r["method"] if r["seed"] == min(
                          x["seed"] for x in runs if x["env"] == env) else None)
                 for r in runs if r["env"] == env),
               call("set", xlabel="wall-clock minutes of training",
                    ylabel=f"eval return ({cfg['eval_episodes']} episodes)", title=env)]
              for env in cfg["envs"] if any(r["env"] == env for r in runs)]
    lines += [figure(path.with_suffix(".png"), "eval return vs wall-clock minutes",
                     panels),
              "### Against the target", "",
              table(["env", "seed", "against", "HSA2C ≥ the better at every mark?"],
                    verdicts), ""]
    return "\n".join(lines)


def render_partial_fit(doc: Doc, path: Path) -> str:
    """Section for ``bench_partial_fit.py``: per-call cost of a partial_fit stream."""
    cfg, runs = doc["config"], doc["runs"]
    ref = {r["seed"]: r for r in runs if r["method"] == "sklearn"}
    body = []
    for m in ("dpsvi-kept", "dpsvi-fresh", "sklearn"):
        mine = [r for r in runs if r["method"] == m]
        if not mine:
            continue
        later = [med(r["call_s"][1:]) for r in mine]
        per_sk = [med(r["call_s"][1:]) / med(ref[r["seed"]]["call_s"][1:])
                  for r in mine if r["seed"] in ref]
        body.append([m, _seeds([r["seed"] for r in mine]), str(mine[0]["calls"]),
                     spread([r["call_s"][0] for r in mine], ".3f"),
                     spread(later, ".4f"), spread(per_sk, ".2f"),
                     spread([r["total_s"] for r in mine], ".1f"),
                     spread([r["perplexity"] for r in mine], ".0f")])
    return "\n".join([
        *head(doc, runs),
        table(["method", "seeds", "calls", "first call (s)", "later calls, median (s)",
               "later calls ÷ scikit-learn's", "whole stream (s)",
               "held-out perplexity after the stream"], body), "",
        f"Minibatches of {cfg['batch_size']} NIPS training documents, "
        f"K={cfg['n_components']}; the first call of a DPSVI stream starts the "
        "embedded cluster. The issue sets no goal for this measurement.", ""])


def render_generic(doc: Doc, path: Path) -> str:
    """Fallback for result kinds without a renderer: command, conditions, config."""
    return "\n".join([f"No renderer is registered for kind `{doc.get('kind')}` in "
                      "`benchmarks/summarize.py`; "
                      f"{len(doc.get('runs', []))} raw runs.", "",
                      *head(doc, doc.get("runs", []))])


# ---------------------------------------------------------------------- main

RENDERERS: dict[str, tuple[str, Callable[[Doc, Path], str]]] = {
    "lda": ("LDA: DPSVI vs scikit-learn and gensim on NIPS", render_lda),
    "a2c": ("A2C: HSA2C vs stable-baselines3 on CartPole and Acrobot", render_a2c),
    "a2c_loop": ("A2C: where a serial worker's time per environment step goes",
                 render_a2c_loop),
    "a2c_modes": ("A2C: HSA2C's modes against serial, return vs wall-clock and "
                  "speed-up", render_a2c_modes),
    "faults": ("Fault and load tests", render_faults),
    "partial_fit": ("LDA: a partial_fit stream without a client, per-call cost",
                    render_partial_fit),
    "mujoco": ("A2C: MuJoCo, return at equal wall time, HSA2C vs SB3 A2C and PPO",
               render_mujoco),
    "lda-modes": ("LDA: each level alone and combined (modes, speed-up, cost model)",
                  render_lda_modes),
    "lda-staleness": ("LDA: staleness vs workers and cores, against the paper's bounds",
                      render_lda_staleness),
    "lda-comm": ("LDA: bytes per update as the vocabulary grows", render_lda_comm),
    "nmf": ("Bring your own model: NMF on the engine vs scikit-learn's MiniBatchNMF",
            render_nmf),
    "pendulum": ("A2C: Pendulum-v1, time to solve, HSA2C vs SB3's rl-zoo A2C",
                 render_pendulum),
}
POOLED_TITLE = "A2C: HSA2C vs stable-baselines3, every seed of the same code pooled"
NOTES_RE = re.compile(r"<!-- notes:(?P<name>[\w.-]+) -->\n(?P<body>.*?)"
                      r"<!-- /notes:(?P=name) -->", re.S)


def main(results_dir: Path, output: Path) -> Path:
    notes = {}
    if output.exists():
        notes = {m["name"]: m["body"] for m in NOTES_RE.finditer(output.read_text())}
    docs = [(p, doc) for p in sorted(results_dir.glob("*.json"))
            if "kind" in (doc := json.loads(p.read_text())) and "runs" in doc]
    docs.sort(key=lambda pd: (_index(list(RENDERERS), pd[1]["kind"]), pd[0].name))
    kinds = [doc["kind"] for _, doc in docs]
    sections = []  # (title, anchor, notes name, body)
    for p, doc in docs:
        title, render = RENDERERS.get(doc["kind"], (doc["kind"], render_generic))
        if kinds.count(doc["kind"]) > 1:  # one heading per question
            title += f" ({_run_label(doc)})"
        sections.append((title, _anchor(p), p.stem, f"Source: `benchmarks/results/"
                         f"{p.name}`.\n\n{render(doc, p)}"))
    pools = a2c_pools(docs)
    if pools:  # each pooled A2C section follows the last file of its kind
        at = max(i for i, k in enumerate(kinds) if k == "a2c") + 1
        names = [f"a2c_vs_sb3_pooled_{i}" if i else "a2c_vs_sb3_pooled"
                 for i in range(len(pools))]
        sections[at:at] = [(POOLED_TITLE, name.replace("_", "-"), name,
                            render_a2c_pool(paths, dict(docs), runs))
                           for name, (paths, runs) in zip(names, pools, strict=True)]
    parts = [
        "# Benchmark results", "",
        "Generated by `python benchmarks/summarize.py` from the JSON files in "
        "`benchmarks/results/`, one section per file; how a benchmark measures is in "
        "its script's docstring. Edit only the *Notes* blocks: everything else is "
        "overwritten on the next run. `MxP` = M Dask workers × P numba threads. Cells "
        "are median [min–max] over seeds (the median alone when min and max agree); "
        "ratios are per seed against the section's reference method (`1` on its own "
        "row).", "",
        *(f"- [{title}](#{anchor})" for title, anchor, _, _ in sections), ""]
    for title, anchor, name, body in sections:
        parts += [f"## {title}", f"<a id=\"{anchor}\"></a>", "", body.rstrip(), "",
                  "### Notes: what it shows", "",
                  f"<!-- notes:{name} -->\n"
                  + notes.get(name, "_No notes yet._\n") + f"<!-- /notes:{name} -->",
                  ""]
    output.write_text("\n".join(parts).rstrip() + "\n")
    return output


def _run_label(doc: Doc) -> str:
    """What tells a result file apart from others of its kind: environments, seeds."""
    seeds = sorted({r["seed"] for r in doc.get("runs", []) if "seed" in r})
    label = "; ".join(x for x in (", ".join(doc.get("config", {}).get("envs", [])),
                                  seeds and f"seeds {_seeds(seeds)}") if x)
    return label or doc.get("started", "")


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
