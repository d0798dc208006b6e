"""Reinforcement learning agents trained by DPSGD."""

from dask_dpsgd.rl._a2c import LinearSchedule
from dask_dpsgd.rl._hsa2c import HSA2CAgent

__all__ = ["HSA2CAgent", "LinearSchedule"]
