"""Dask orchestration: the only layer that imports ``dask``/``distributed``.

It holds no arithmetic beyond bookkeeping: workers call kernels from
:mod:`dask_dpsgd._kernels`, the parameter server is :mod:`dask_dpsgd._server`.
"""
