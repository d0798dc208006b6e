"""The DPSGD engine: any SGD model, trained by lock-free cores inside each Dask worker
and asynchronous workers around a parameter server.

An algorithm (:class:`Algorithm`, Dask-free) says how to cut the data, what one worker
computes per update and how the server applies updates (:class:`UpdateRule`: the
shipped :class:`AddRule` and :class:`SVIRule`, or the user's own); :func:`fit` runs it
serially, Hogwild, with a parameter server, or both (DPSGD), on an embedded cluster or
the user's own (docs/byom.rst, "Bring your own model").
"""

from dask_dpsgd.algorithm import (
    AddRule,
    Algorithm,
    AlgorithmBase,
    Checkpoint,
    FitResult,
    FitStart,
    RecoveryEvent,
    ServerCounts,
    SVIRule,
    SyncPart,
    UpdateRule,
    WorkerContext,
    WorkerLoop,
    WorkerReport,
)
from dask_dpsgd.engine._cluster import close_embedded_cluster
from dask_dpsgd.engine._driver import fit
from dask_dpsgd.engine._local import run_in_process

__all__ = [
    "AddRule",
    "Algorithm",
    "AlgorithmBase",
    "Checkpoint",
    "FitResult",
    "FitStart",
    "RecoveryEvent",
    "SVIRule",
    "ServerCounts",
    "SyncPart",
    "UpdateRule",
    "WorkerContext",
    "WorkerLoop",
    "WorkerReport",
    "close_embedded_cluster",
    "fit",
    "run_in_process",
]
