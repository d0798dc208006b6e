"""Plots of fitted models (matplotlib, imported lazily, file output only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_learning_curve(agent: Any, path: str | Path, *, window: int = 100,
                        target: float | None = None) -> Path:
    """Write the episode returns of a fitted :class:`~dask_dpsgd.HSA2CAgent` as a PNG.

    Parameters
    ----------
    agent : HSA2CAgent
        Fitted agent (uses ``episode_timesteps_`` and ``episode_returns_``).
    path : str or Path
        Output file.
    window : int, default=100
        Episodes in the moving average.
    target : float, default=None
        Draw a horizontal line at this return.

    Returns
    -------
    Path
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.asarray(agent.episode_timesteps_)
    returns = np.asarray(agent.episode_returns_)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, returns, ".", ms=2, alpha=0.3, label="episode return")
    if len(returns) >= 1:
        w = min(window, len(returns))
        smooth = np.convolve(returns, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], smooth, lw=2, label=f"mean of last {w} episodes")
    if target is not None:
        ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:g}")
    ax.set_xlabel("environment steps (all workers)")
    ax.set_ylabel("return")
    env = agent.env if isinstance(agent.env, str) else getattr(agent.env, "__name__", "env")
    threads = "/".join(str(t) for t in agent.threads_per_worker_)
    ax.set_title(f"HSA2C on {env}: {agent.n_workers_} worker(s) x {threads} numba "
                 "thread(s)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_lda(lda: Any, feature_names: Any, path: str | Path, *, top_words: int = 10
             ) -> str:
    """Write a fitted :class:`~dask_dpsgd.DPSVILatentDirichletAllocation` as a PNG.

    Left: documents per second of each pass (``history_``). Right: the training
    perplexity per pass when it was evaluated (``evaluate_every``), else a heat map of
    ``p(word | topic)`` over each topic's top words.

    Parameters
    ----------
    lda : DPSVILatentDirichletAllocation
        Fitted.
    feature_names : array-like of str
        The words (``get_feature_names_out`` of the vectorizer, a loader's
        ``feature_names``).
    path : str or path-like
        The PNG to write.
    top_words : int, default=10
        Words per topic in the heat map (fewer when many topics share 40 columns).

    Returns
    -------
    str
        What the right-hand panel shows.
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
        ax2.set_xticklabels([str(feature_names[c]) for c in cols], rotation=90,
                            fontsize=8)
        ax2.set_yticks(range(prob.shape[0]))
        ax2.set_ylabel("topic")
        ax2.set_title(f"top {per_topic} word(s) of each topic")
        fig.colorbar(image, ax=ax2, label="p(word | topic)")
        shows = "topic-word heat map of the top words"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return shows
