"""What this machine's cores deliver to perfectly parallel work, measured in the run.

A speed-up goal such as "1.8x on 2 cores" assumes the second core is a whole core. On a
shared virtual machine it may not be (a contended or hyper-threaded sibling): then no
code reaches the goal. :func:`ceiling` measures it with a compute-bound loop that has no
memory traffic and no synchronisation, alternating the layouts so load changes hit both:

* ``threads``: one process, ``prange`` over the cores vs one thread (the ceiling of the
  lock-free level inside a worker, e.g. LDA 1xP);
* ``processes``: that loop serial in as many processes as cores at once vs one alone,
  throughput ratio (the ceiling of the parameter-server level, e.g. 2x1).

Each is reported per pair and as the ratio of medians.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any

_LOOP = """
import numba, numpy as np, sys, time
@numba.njit(parallel=True, cache=False)
def work(n, reps):
    out = np.zeros(n)
    for i in numba.prange(n):
        s, x = 0.0, i * 1e-9
        for r in range(reps):
            s += np.exp(-x * r) * 1.0000001
        out[i] = s
    return out
work(10, 10)
"""


def _threads(reps: int, n: int) -> list[float]:
    import numba

    namespace: dict[str, Any] = {}
    exec(_LOOP, namespace)  # noqa: S102 - our own constant source, compiled once
    work = namespace["work"]
    previous = numba.get_num_threads()
    cores = min(os.cpu_count() or 1, numba.config.NUMBA_NUM_THREADS)
    ratios = []
    try:
        for _ in range(reps):
            times = {}
            for threads in (1, cores):
                numba.set_num_threads(threads)
                t = time.perf_counter()
                work(n, 20_000)
                times[threads] = time.perf_counter() - t
            ratios.append(times[1] / times[cores])
    finally:
        numba.set_num_threads(previous)
    return ratios


def _processes(reps: int, n: int) -> list[float]:
    cores = os.cpu_count() or 1
    code = (_LOOP + "numba.set_num_threads(1)\nt = time.perf_counter()\n"
            f"work({n}, 20_000)\nprint(time.perf_counter() - t)\n")

    def run(copies: int) -> float:
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                  text=True) for _ in range(copies)]
        times = [float(p.communicate()[0]) for p in procs]
        # Throughput: copies loops in the slowest copy's time.
        return copies / max(times)

    return [run(cores) / run(1) for _ in range(reps)]


def ceiling(reps: int = 7, n: int = 1000) -> dict[str, Any]:
    """Speed-up of perfectly parallel work on all cores over one, both levels."""
    out: dict[str, Any] = {"cores": os.cpu_count()}
    for name, fn in (("threads", _threads), ("processes", _processes)):
        ratios = fn(reps, n)
        out[name] = {"median": statistics.median(ratios), "pairs": ratios}
    return out


if __name__ == "__main__":
    print(ceiling())
