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
