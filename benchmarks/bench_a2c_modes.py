"""HSA2C's parallel modes against serial: return vs wall-clock time and speed-up.

Issue #4's A2C experiments, on whatever cluster the run is given:

* reward vs wall-clock time for HSA2C in each mode (1x1 serial, 1xP hogwild, Mx1
  parameter-server, MxP dpsgd) and for stable-baselines3's A2C;
* speed-up over serial vs cores and vs workers: time to solve of ``1x1`` ÷ that of each
  layout, per seed, with the ideal line (speed-up = M x P) in the plot.

The measurement is ``bench_a2c.py``'s (same runs, same clocks, same fresh interpreter
per run; see its docstring): this script only sets the experiment's defaults (CartPole,
three seeds, the layouts a 2-core machine can hold) and its own result kind, which
``summarize.py`` renders as the speed-up section. *Time to solve* is the wall-clock
time from the call of ``fit()`` (HSA2C; from ``learn()`` for stable-baselines3) until
the method stopped because the mean return of its last 100 training episodes reached
the threshold; it is the same clock as ``bench_a2c.py``'s ``time_s``.
Before the runs, the machine's ceiling for perfectly parallel work is measured
(``_ceiling.py``): the speed-up's verdict shows it beside the goal.

On a larger machine or cluster, pass the layouts it can hold, e.g.::

    PYTHONPATH=. python benchmarks/bench_a2c_modes.py --layouts 1x1 1x4 4x1 4x4
    PYTHONPATH=. python benchmarks/bench_a2c_modes.py --layouts 1x1 8x1 16x1 \\
        --scheduler-address tcp://10.0.0.5:8786   # e.g. a SLURMCluster's scheduler

Then ``python benchmarks/summarize.py``.
"""

# The docstring's multiplication and division signs are meant.
# ruff: noqa: RUF002

from __future__ import annotations

from dataclasses import dataclass

import _common
import bench_a2c

KIND = "a2c_modes"


@dataclass(frozen=True, slots=True)
class BenchA2CModesConfig(bench_a2c.BenchA2CConfig):
    """HSA2C's modes against serial (and SB3): return vs wall-clock, speed-up."""

    # Only the defaults change; each flag's help is the base class's field docstring.
    envs: tuple[str, ...] = ("CartPole-v1",)
    thresholds: tuple[float, ...] = (475.0,)
    seeds: int = 3
    eval_episodes: int = 5
    output: str = "benchmarks/results/a2c_modes.json"


if __name__ == "__main__":
    bench_a2c.main(_common.parse_config(BenchA2CModesConfig), kind=KIND)
