"""Layer rules (docs/design.rst, "Layers"), checked on the real import graph in fresh
interpreters."""

from __future__ import annotations

import subprocess
import sys

import pytest

FORBIDDEN = ("dask", "distributed", "sklearn", "gymnasium")


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("dask_dpsgd._kernels.lda", FORBIDDEN),
        ("dask_dpsgd._kernels.special", FORBIDDEN),
        ("dask_dpsgd._server.state", FORBIDDEN),
        ("dask_dpsgd._server.actor", FORBIDDEN),
        ("dask_dpsgd._orchestration.dpsvi", ("sklearn", "gymnasium")),
        ("dask_dpsgd.datasets", ("dask", "distributed", "numba", "gymnasium")),
    ],
)
def test_layer_does_not_import(module, forbidden):
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        f"print(' '.join(m for m in {forbidden!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"


def test_threading_layer_is_pinned_to_a_safe_one():
    code = ("import os; os.environ.pop('NUMBA_THREADING_LAYER', None); "
            "import dask_dpsgd._kernels, numba; print(numba.config.THREADING_LAYER)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "threadsafe"
