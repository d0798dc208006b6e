"""Worker-side probes the benchmarks pass to ``client.run``: CPU time, peak RSS, numba.

Dask worker processes (a user's cluster included) cannot import this folder, so the
module registers itself with ``cloudpickle.register_pickle_by_value`` when imported: its
functions travel by value, as they would from ``__main__``. They import what they need
inside, and nothing from the benchmarks.
"""

from __future__ import annotations

import sys
from typing import Any

import cloudpickle


def _worker_reset() -> dict[str, Any]:
    import os as _os
    import socket as _socket
    import time as _t

    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return {"cpu_s": _t.process_time(), "pid": _os.getpid(),
            "host": _socket.gethostname()}


def _worker_read() -> dict[str, float]:
    import time as _t

    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                peak = float(line.split()[1]) / 1024.0
    return {"cpu_s": _t.process_time(), "peak_rss_mib": peak}


def _worker_numba() -> dict[str, Any]:
    import os as _os

    import numba

    import dask_dpsgd

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run in this process
        layer = None
    return {"threading_layer": layer, "num_threads": numba.get_num_threads(),
            "dask_dpsgd": dask_dpsgd.__file__,
            "env": {k: v for k, v in _os.environ.items()
                    if k.endswith("_NUM_THREADS") or k.startswith("MALLOC_")}}


cloudpickle.register_pickle_by_value(sys.modules[__name__])
