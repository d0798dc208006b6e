"""Sections of ``RESULTS.md`` for ``bench_lda_modes.py``: modes, staleness, bytes.

Also the cost model (:func:`cost_model`): from the serial runs' measured per-document
compute time, per-update wait on the parameter server and per-pass remainder, predict
the time of ``n`` passes for ``M`` workers x ``P`` threads on ``C`` cores, and compare it
with every measured point.
"""

# RESULTS.md is typeset: its multiplication signs, en dashes, minus signs and Greek
# letters are meant, not typos of x, - and a.
# ruff: noqa: RUF001, RUF002

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from _tables import machine_block, med, spread, table

SPEEDUP_TARGET = 1.8


def _layout_key(layout: str) -> tuple[int, int, int]:
    if layout == "sklearn":
        return (0, 0, 0)
    m, p = (int(v) for v in layout.split("x"))
    return (1, m * p, m)


def _mode(m: int, p: int) -> str:
    if m == 1:
        return "serial" if p == 1 else "hogwild"
    return "parameter-server" if p == 1 else "dpsgd"


def _command(doc: dict[str, Any]) -> str:
    return "\n".join(["```", doc["command"], "python benchmarks/summarize.py", "```"])


def _load_line(doc: dict[str, Any], runs: list[dict[str, Any]], cores: int) -> str:
    """The machine's load: before the experiment (the evidence of competition) and after
    each run (which counts the run's own processes: a 1-minute average decays slowly)."""
    loads = [r["load"] for r in runs if "load" in r]
    if not loads:
        return ""
    line = (f"- 1-minute load average after each run: median {med(loads):.2f}, range "
            f"{min(loads):.2f}–{max(loads):.2f} on {cores} cores (it includes the runs' "
            "own processes, so it says little about other load)")
    quiet = doc.get("quiet")
    if quiet is None:
        return line + "."
    line += (f"; before the experiment {quiet['load_after']:.2f} after waiting "
             f"{quiet['waited_s']:.0f} s")
    return line + ("." if quiet["quiet"] else
                   " — **the machine was not quiet when it started**.")


# ------------------------------------------------------------------ cost model


def cost_params(runs: list[dict[str, Any]], docs: int) -> dict[str, float]:
    """Per-document compute, per-update wait and per-pass remainder of serial runs."""
    serial = [r for r in runs if r.get("layout") == "1x1"]
    compute = sum(sum(r["compute_s"]) for r in serial)
    wait = sum(sum(r["wait_s"]) for r in serial)
    passes = sum(len(r["pass_s"]) for r in serial)
    total = sum(sum(r["pass_s"]) for r in serial)
    updates = sum(r["updates"] for r in serial)
    between = sum(r["time_s"] - sum(r["pass_s"]) for r in serial)
    return {"compute_per_doc_s": compute / (passes * docs),
            "wait_per_update_s": wait / updates,
            "other_per_pass_s": (total - compute - wait) / passes,
            "between_passes_s": between / passes,
            "updates_per_pass": updates / passes}


def cost_model(params: dict[str, float], m: int, p: int, cores: int, n_passes: int,
               docs: int, batch: int, warmup: int) -> float:
    """Predicted seconds of ``n_passes`` passes for ``m`` workers x ``p`` threads.

    ``compute`` = documents x per-document time / (m x p), slowed by
    ``m p / cores`` when the layout asks for more cores than there are; ``wait`` = each
    worker's ``U / m`` round trips to the server, one after another; plus the serial
    run's per-pass remainder and between-pass time. The first pass adds the synchronous
    warm-up: each of its first ``warmup`` updates is computed by all the workers
    together (a share each), so its compute is spread as in the rest of the pass, but
    its round trip to the server is not overlapped with other workers' (``(1 - 1/m)``
    of ``w`` per update is added).
    """
    over = max(1.0, m * p / cores)
    c = params["compute_per_doc_s"]
    w = params["wait_per_update_s"]
    updates = params["updates_per_pass"]
    per_pass = (docs * c / (m * p) * over + updates / m * w
                + params["other_per_pass_s"] + params["between_passes_s"])
    warm = min(warmup, updates) * w * (1 - 1 / m)
    return n_passes * per_pass + warm


def _save(fig: Any, path: Path) -> str:
    """Write ``fig`` next to the results file as PNG; its file name."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    png = path.with_suffix(".png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png.name


# --------------------------------------------------------------------- modes


# Relative slack when comparing with the target: 1 x 2 runs serial's algorithm, but its
# threads sum the statistics in another order, so its perplexity can differ from
# serial's in the last digits.
TARGET_RTOL = 1e-4


def _time_to_target(points: list[tuple[int, float, float]], target: float
                    ) -> tuple[float, int] | None:
    """First (time, passes) whose perplexity is at most ``target`` (to TARGET_RTOL)."""
    for n, t, perp in sorted(points):
        if perp <= target * (1 + TARGET_RTOL):
            return t, n
    return None


def _plot_modes(path: Path, curves: dict[str, list[tuple[float, float]]],
                target: float, speedups: dict[str, list[float]],
                layouts: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, pts in curves.items():
        ax1.plot([t for t, _ in pts], [q for _, q in pts], marker="o", ms=3,
                 label=name, ls="--" if name == "sklearn" else "-")
    ax1.axhline(target, color="grey", lw=0.8, ls=":", label="serial's final")
    ax1.set_xlabel("wall-clock time (s)")
    ax1.set_ylabel("held-out perplexity (median over seeds)")
    ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    ax1.set_title("perplexity vs time")
    cores_max = 1
    for kind, marker in (("cores (1×P)", "o"), ("workers (M×1)", "s"),
                         ("both (M×P)", "^")):
        xs, ys = [], []
        for lay in layouts:
            m, p = (int(v) for v in lay.split("x"))
            which = ("cores (1×P)" if m == 1 else "workers (M×1)" if p == 1
                     else "both (M×P)")
            if which == kind and speedups.get(lay):
                xs.append(m * p)
                ys.append(med(speedups[lay]))
                cores_max = max(cores_max, m * p)
        if xs:
            ax2.plot(xs, ys, marker=marker, ls="", label=kind, ms=7)
    ax2.plot([1, cores_max], [1, cores_max], color="grey", ls="--", label="ideal")
    ax2.axhline(SPEEDUP_TARGET, color="red", lw=0.8, ls=":", label="target 1.8×")
    ax2.set_xlabel("cores used (M × P)")
    ax2.set_ylabel("speed-up to serial's final perplexity")
    ax2.legend(fontsize=8)
    ax2.set_title("speed-up vs cores and workers")
    return _save(fig, path)


def render_modes(doc: dict[str, Any], path: Path) -> str:
    cfg, runs = doc["config"], doc["runs"]
    cores = doc["machine"]["cores"]
    corpus = doc["corpus"]
    by = defaultdict(list)  # (layout, seed) -> [(passes, time, perplexity)]
    for r in runs:
        by[(r["layout"], r["seed"])].append((r["passes"], r["time_s"], r["perplexity"]))
    layouts = sorted({r["layout"] for r in runs}, key=_layout_key)
    seeds = sorted({r["seed"] for r in runs})
    out = [
        f"Corpus: bundled NIPS, {corpus['train_docs']} training / {corpus['test_docs']} "
        f"held-out documents, {corpus['vocab']:,} words. K={cfg['n_components']}, "
        f"minibatch {cfg['batch_size']}, seeds {seeds}. Every DPSVI point is its own fit "
        f"from scratch with `max_iter = n` passes (n = 1 … {cfg['passes']} for serial, "
        f"… {cfg['passes'] + cfg['extra_passes']} for the others); its time is "
        "`history_[-1][\"time/elapsed_s\"]` (parameter-server start to the end of pass "
        "n, the work between passes included; shard placement and the final bound are "
        "not). scikit-learn: one `partial_fit` pass at a time, scored between passes "
        "(untimed). Target = the serial (1×1) run's held-out perplexity after "
        f"{cfg['passes']} passes, per seed; time to target = the first point at or below "
        f"it (to {TARGET_RTOL:g} relative: 1×2 runs the serial algorithm, but its threads "
        "sum in another order).", "",
        "Reproduce:", "", _command(doc), "", machine_block(doc),
        _load_line(doc, runs, cores), "",
    ]
    # perplexity and time per pass count
    max_n = max(r["passes"] for r in runs)
    rows = []
    curves: dict[str, list[tuple[float, float]]] = {}
    for lay in layouts:
        cells, pts = [], []
        for n in range(1, max_n + 1):
            got = [(t, q) for s in seeds for (nn, t, q) in by[(lay, s)] if nn == n]
            if not got:
                cells.append("")
                continue
            t, q = med([g[0] for g in got]), med([g[1] for g in got])
            pts.append((t, q))
            cells.append(f"{q:,.0f} @ {t:.2f}s")
        m = "sklearn" if lay == "sklearn" else f"{lay} ({_mode(*_split(lay))})"
        curves["sklearn" if lay == "sklearn" else lay] = pts
        rows.append([m, *cells])
    out += ["### Held-out perplexity after n passes (median perplexity @ median time)",
            "", table(["method", *[f"n={n}" for n in range(1, max_n + 1)]], rows), ""]
    # time to target and speed-ups
    speedups: dict[str, list[float]] = {}
    rows = []
    serial_tt = {}
    targets = {}
    for s in seeds:
        serial = [pt for pt in by[("1x1", s)] if pt[0] == cfg["passes"]]
        if serial:
            targets[s] = serial[0][2]
            serial_tt[s] = serial[0][1]
    for lay in layouts:
        times, passes, sp, missed = [], [], [], 0
        for s in seeds:
            if s not in targets:
                continue
            hit = _time_to_target(by[(lay, s)], targets[s])
            if hit is None:
                missed += 1
                continue
            times.append(hit[0])
            passes.append(hit[1])
            sp.append(serial_tt[s] / hit[0])
        speedups[lay] = sp
        rows.append([lay if lay == "sklearn" else f"{lay} ({_mode(*_split(lay))})",
                     spread(times, ".2f"), spread(passes, ".0f"), spread(sp, ".2f"),
                     f"{missed}/{len(targets)}"])
    out += ["### Time to the serial run's final perplexity", "",
            table(["method", "time (s)", "passes", "speed-up vs serial",
                   "seeds not reaching it"], rows), ""]
    best = max((lay for lay in layouts if lay not in ("sklearn", "1x1")
                and speedups.get(lay)), key=lambda lay: med(speedups[lay]),
               default=None)
    if best is not None:
        b = med(speedups[best])
        verdict = "**met**" if b >= SPEEDUP_TARGET else "**not met**"
        out += [f"Target (on {cores} cores, the best mode reaches the serial run's "
                f"held-out perplexity at least {SPEEDUP_TARGET}× sooner): {verdict} — "
                f"best {best} at {b:.2f}× (per seed {spread(speedups[best], '.2f')}).",
                ""]
    png = _plot_modes(path, curves, med(list(targets.values())) if targets else math.nan,
                      speedups, [lay for lay in layouts if lay != "sklearn"])
    out += [f"![perplexity vs time and speed-up](results/{png})", ""]
    out += _render_cost_model(doc, runs, cores)
    return "\n".join(out)


def _split(layout: str) -> tuple[int, int]:
    m, p = (int(v) for v in layout.split("x"))
    return m, p


def _render_cost_model(doc: dict[str, Any], runs: list[dict[str, Any]],
                       cores: int, warmup: int = 10) -> list[str]:
    cfg = doc["config"]
    dpsvi = [r for r in runs if r.get("method") == "dpsvi"]
    docs = doc["corpus"]["train_docs"]
    if not any(r["layout"] == "1x1" for r in dpsvi):
        return []
    params = cost_params(dpsvi, docs)
    rows = []
    errors = []
    for r in sorted(dpsvi, key=lambda r: (_layout_key(r["layout"]), r["passes"],
                                          r["seed"])):
        m, p = _split(r["layout"])
        pred = cost_model(params, m, p, cores, r["passes"], docs,
                          r.get("batch_size", cfg["batch_size"]), warmup)
        errors.append((r["layout"], r["passes"], pred, r["time_s"]))
    agg = defaultdict(list)
    for lay, n, pred, meas in errors:
        agg[(lay, n)].append((pred, meas))
    for (lay, n), vals in sorted(agg.items(), key=lambda kv: (_layout_key(kv[0][0]),
                                                              kv[0][1])):
        pred = med([v[0] for v in vals])
        meas = [v[1] for v in vals]
        rows.append([lay, str(n), f"{pred:.2f}", spread(meas, ".2f"),
                     f"{med(meas) / pred:.2f}"])
    ratios = [meas / pred for _, _, pred, meas in errors]
    return [
        "### Cost model: predicted vs measured time", "",
        "Measured on the serial (1×1) runs of this file: "
        f"{params['compute_per_doc_s'] * 1e3:.3f} ms of E-step compute per document, "
        f"{params['wait_per_update_s'] * 1e3:.2f} ms waiting on the parameter server per "
        f"update (push + pull of the minibatch's rows), "
        f"{params['other_per_pass_s']:.3f} s of other work per pass and "
        f"{params['between_passes_s']:.3f} s between passes, "
        f"{params['updates_per_pass']:.1f} updates per pass. Predicted time of n passes "
        f"for M workers × P threads on C = {cores} cores:", "",
        "    t(n) = n · [D·c/(M·P)·max(1, M·P/C) + (U/M)·w + o + b]"
        " + min(W, U)·w·(1 − 1/M)", "",
        "(D documents, c compute per document, U updates per pass, w wait per update, "
        "o and b the per-pass remainder and between-pass time, W = 10 synchronous "
        "warm-up updates, each computed by all M workers together but with its round "
        "trip not overlapped.) It assumes perfect scaling of the E-step over "
        "threads and workers up to the machine's cores, no contention on the server, "
        "and nothing else on the machine.", "",
        table(["layout", "passes", "predicted (s)", "measured (s)",
               "measured ÷ predicted"], rows), "",
        f"Over all {len(ratios)} measured points: measured ÷ predicted median "
        f"{med(ratios):.2f}, range {min(ratios):.2f}–{max(ratios):.2f}.", "",
    ]


# ------------------------------------------------------------------ staleness


def render_staleness(doc: dict[str, Any], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, runs = doc["config"], doc["runs"]
    cores = doc["machine"]["cores"]
    serial = {(r["seed"], r["batch_size"]): r["perplexity"] for r in runs
              if r["layout"] == "1x1"}
    groups = defaultdict(list)
    for r in runs:
        groups[(r["batch_size"], r["layout"])].append(r)
    rows = []
    plot = defaultdict(list)
    for (batch, lay), rs in sorted(groups.items(),
                                   key=lambda kv: (-kv[0][0], _layout_key(kv[0][1]))):
        m, p = _split(lay)
        T = med([r.get("steps", r["updates"]) for r in rs])  # SVI steps
        ratio = [r["perplexity"] / serial[(r["seed"], batch)] for r in rs
                 if (r["seed"], batch) in serial]
        within = m <= math.sqrt(T) and p <= T ** 0.25
        rows.append([str(batch), f"{lay} ({_mode(m, p)})", f"{T:.0f}",
                     f"{math.sqrt(T):.1f}", f"{T ** 0.25:.2f}",
                     "yes" if within else "**no**",
                     spread([r["staleness_mean"] for r in rs], ".2f"),
                     spread([r["staleness_max"] for r in rs], ".0f"),
                     spread(ratio, ".3f"), spread([r["time_s"] for r in rs], ".2f")])
        plot[batch].append((m * p, m, p, med([r["staleness_mean"] for r in rs]),
                            max(r["staleness_max"] for r in rs), med(ratio) if ratio
                            else math.nan, math.sqrt(T)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for batch, pts in plot.items():
        pts.sort()
        ax1.plot([pt[1] * pt[2] for pt in pts], [pt[3] for pt in pts], marker="o",
                 ls="", label=f"mean, batch {batch}")
        ax1.plot([pt[1] * pt[2] for pt in pts], [pt[4] for pt in pts], marker="x",
                 ls="", label=f"max, batch {batch}")
        ax1.axhline(pts[0][6], ls=":", lw=0.8, label=f"√T, batch {batch}")
        ax2.plot([pt[1] / pt[6] for pt in pts], [pt[5] for pt in pts], marker="o",
                 ls="", label=f"batch {batch}")
    ax1.set_xlabel("workers × threads")
    ax1.set_ylabel("staleness (updates)")
    ax1.legend(fontsize=7)
    ax2.axvline(1.0, color="grey", ls="--", lw=0.8, label="M = √T")
    ax2.set_xlabel("workers M ÷ √T")
    ax2.set_ylabel("held-out perplexity ÷ serial")
    ax2.legend(fontsize=7)
    png = _save(fig, path)
    seeds = sorted({r["seed"] for r in runs})
    return "\n".join([
        f"K={cfg['n_components']}, {cfg['staleness_passes']} passes per fit, seeds "
        f"{seeds}, on {cores} cores (layouts beyond {cores} cores oversubscribe them on "
        "purpose: their workers are slowed unevenly, which is what makes updates stale). "
        "T = updates applied in the fit; the paper's bounds for O(1/√T) convergence are "
        "workers ≤ T^(1/2) and cores per worker ≤ T^(1/4). Perplexity ÷ serial: the "
        "same seed and minibatch size run 1×1.", "",
        "Reproduce:", "", _command(doc), "", machine_block(doc),
        _load_line(doc, runs, cores), "",
        table(["minibatch", "layout", "T", "√T", "T^¼", "within bounds",
               "staleness mean", "staleness max", "perplexity ÷ serial", "time (s)"],
              rows, "llrrrlrrrr"), "",
        f"![staleness vs workers](results/{png})", ""])


# ----------------------------------------------------------------------- comm


def render_comm(doc: dict[str, Any], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, runs = doc["config"], doc["runs"]
    rows, xs, push, pull, dense = [], [], [], [], []
    for r in sorted(runs, key=lambda r: r["vocab"]):
        u = max(r.get("steps", r["updates"]), 1)  # per SVI step (all its shares)
        pu, pl = r["bytes_pushed"] / u / 1024, r["bytes_pulled"] / u / 1024
        de = r["dense_bytes_per_update"] / 1024
        split = r.get("split", 1)
        rows.append([f"{r['vocab']:,}" + (f" (split ×{split})" if split > 1 else ""),
                     f"{r['minibatch_words_mean']:,.0f}",
                     f"{pu:,.1f}", f"{pl:,.1f}", f"{de:,.1f}",
                     f"{(pu + pl) / (2 * de):.2f}"])
        xs.append(r["vocab"])
        push.append(pu)
        pull.append(pl)
        dense.append(de)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, push, marker="o", label="pushed per update")
    ax.plot(xs, pull, marker="s", label="pulled per update")
    ax.plot(xs, dense, ls="--", color="grey", label="dense K×V (one way)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("vocabulary size V")
    ax.set_ylabel("KiB")
    ax.legend(fontsize=8)
    png = _save(fig, path)
    return "\n".join([
        f"Layout {cfg['comm_layout']}, K={cfg['n_components']}, minibatch "
        f"{cfg['batch_size']}, {cfg['comm_passes']} passes with no synchronous "
        "warm-up (`warmup_updates=0`: its steps are one push per worker's share, whose "
        "words overlap); vocabulary = the V most "
        "frequent training words (documents left empty dropped); *split ×r*: the whole "
        "vocabulary with every word split into r words, each token going to one of its "
        "r copies at random (the same tokens over an r times larger vocabulary, as a "
        "bigger corpus would have). Bytes are what the "
        "parameter server counts per SVI step: the push (the minibatch's words, "
        "their K statistics) and the pull (those words' rows of λ and the K row sums).",
        "", "Reproduce:", "", _command(doc), "", machine_block(doc), "",
        table(["V", "distinct words / minibatch", "KiB pushed / update",
               "KiB pulled / update", "dense KiB (one way)", "sparse ÷ dense"], rows),
        "", f"![bytes per update vs vocabulary](results/{png})", ""])


RENDERERS = {
    "lda-modes": ("LDA: each level alone and combined (modes, speed-up, cost model)",
                  render_modes),
    "lda-staleness": ("LDA: staleness vs workers and cores, against the paper's bounds",
                      render_staleness),
    "lda-comm": ("LDA: bytes per update as the vocabulary grows", render_comm),
}
