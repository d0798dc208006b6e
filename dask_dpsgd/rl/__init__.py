"""Reinforcement learning agents trained by DPSGD."""

from dask_dpsgd._utils._rl_plain import LinearSchedule
from dask_dpsgd.rl._hsa2c import HSA2CAgent

__all__ = ["HSA2CAgent", "LinearSchedule"]
