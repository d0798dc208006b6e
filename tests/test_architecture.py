"""Layer rules (docs/design.rst, "Layers"), checked on the real import graph in fresh
interpreters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

FORBIDDEN = ("dask", "distributed", "sklearn", "gymnasium")


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("dask_dpsgd._kernels.lda", FORBIDDEN),
        ("dask_dpsgd._kernels.special", FORBIDDEN),
        ("dask_dpsgd._kernels.nn", FORBIDDEN),
        ("dask_dpsgd._kernels.a2c", FORBIDDEN),
        ("dask_dpsgd._server.state", FORBIDDEN),
        ("dask_dpsgd._server.actor", FORBIDDEN),
        ("dask_dpsgd.algorithm", FORBIDDEN),
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


def test_import_contracts_hold():
    """The layers, the forbidden imports and the absence of cycles declared in
    pyproject.toml's ``[tool.importlinter]``, checked by import-linter on the whole
    import graph (direct and indirect imports)."""
    root = Path(__file__).resolve().parents[1]
    lint_imports = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint_imports), "--config", str(root / "pyproject.toml"),
                          "--no-cache"], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_engine_and_server_type_check():
    """mypy on the files ``[tool.mypy]`` names: the engine, the parameter server and
    the plug-in protocol."""
    root = Path(__file__).resolve().parents[1]
    mypy = Path(sys.executable).parent / "mypy"
    out = subprocess.run([str(mypy), "--config-file", str(root / "pyproject.toml"),
                          "--cache-dir", "/dev/null"], capture_output=True, text=True,
                         cwd=root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "Success: no issues found" in out.stdout


def _script_imports(path: Path, names: set[str]) -> set[str]:
    """The sibling scripts ``path`` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found & names - {path.stem}


def test_benchmark_scripts_import_each_other_without_cycles():
    """``benchmarks/`` is a folder of scripts importing each other by name (not a
    package import-linter can read): their import graph, function-level imports
    included, has no cycle."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    scripts = {p.stem: p for p in folder.glob("*.py")}
    graph = {name: _script_imports(p, set(scripts)) for name, p in scripts.items()}
    # The edges are read (a script importing a script, not only the helpers).
    assert graph["summarize"] >= {"_common"}
    assert graph["bench_a2c_modes"] >= {"_common", "bench_a2c"}
    # Depth-first search; a grey node met again closes a cycle.
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "grey"
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != "grey", "cycle: " + " -> ".join([*path, nxt])
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "black"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
