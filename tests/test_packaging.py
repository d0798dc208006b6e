"""Packaging facts, each read off the files or the built distributions.

* The wheel and the sdist carry the licence (LICENSE, BSD-3-Clause) and the wheel the
  bundled NIPS corpus's own licence beside the data; the wheel ships ``py.typed``.
* The version is written once, as ``dask_dpsgd.__version__``, and the built metadata
  carries it.
* Every dependency floor of ``pyproject.toml`` is pinned to itself in
  ``.ci/floors.txt`` (the environment ``.ci/run`` runs the fast tests in) and declared
  the same in ``environment.yml``.
"""

from __future__ import annotations

import email.parser
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import dask_dpsgd

try:
    import tomllib
except ImportError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
NIPS_LICENSE = "dask_dpsgd/datasets/data/nips/LICENSE"
# conda-forge splits dask[distributed] into two packages and names build python-build.
CONDA_NAMES = {"dask": ["dask", "distributed"], "build": ["python-build"]}


# --------------------------------------------------------------------------- #
# Built distributions
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """The sdist and the wheel built from it, as ``python -m build`` builds them: in
    isolated environments (setuptools from the registry, as a user's build gets it)."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    with tarfile.open(sdist) as tar:
        sdist_names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    with zipfile.ZipFile(wheel) as whl:
        wheel_names = set(whl.namelist())
        (metadata,) = (n for n in wheel_names if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(whl.read(metadata).decode("utf-8"))
    return {"sdist": sdist_names, "wheel": wheel_names, "metadata": meta,
            "wheel_file": wheel.name}


@pytest.mark.slow
def test_licences_are_in_the_sdist_and_the_wheel(dists):
    assert "LICENSE" in dists["sdist"]
    assert NIPS_LICENSE in dists["sdist"]
    # The wheel: both in .dist-info/licenses/ (PEP 639), the data's also beside the data.
    licenses = {n.split(".dist-info/licenses/", 1)[1] for n in dists["wheel"]
                if ".dist-info/licenses/" in n}
    assert licenses == {"LICENSE", NIPS_LICENSE}
    assert NIPS_LICENSE in dists["wheel"]
    meta = dists["metadata"]
    assert meta["License-Expression"] == "BSD-3-Clause AND CC-BY-4.0"
    assert sorted(meta.get_all("License-File")) == sorted(["LICENSE", NIPS_LICENSE])
    assert "BSD 3-Clause License" in (ROOT / "LICENSE").read_text("utf-8")


@pytest.mark.slow
def test_the_wheel_is_typed_and_carries_its_data(dists):
    assert "dask_dpsgd/py.typed" in dists["wheel"]
    for data in ("dask_dpsgd/datasets/data/nips/docword.nips.txt.gz",
                 "dask_dpsgd/datasets/data/nips/vocab.nips.txt.gz",
                 "dask_dpsgd/datasets/descr/nips.rst"):
        assert data in dists["wheel"]


@pytest.mark.slow
def test_the_built_version_is_the_package_version(dists):
    assert dists["metadata"]["Version"] == dask_dpsgd.__version__
    assert dists["wheel_file"].startswith(f"dask_dpsgd-{dask_dpsgd.__version__}-")


def test_the_version_is_written_once():
    project = PYPROJECT["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "dask_dpsgd.__version__"
    # A literal, so that setuptools reads it without importing numba and Dask.
    init = (ROOT / "dask_dpsgd" / "__init__.py").read_text("utf-8")
    assert f'\n__version__ = "{dask_dpsgd.__version__}"\n' in init
    assert Version(dask_dpsgd.__version__)


# --------------------------------------------------------------------------- #
# Dependency floors
# --------------------------------------------------------------------------- #
def _floor(req: Requirement) -> Version:
    """The ``>=`` lower bound of a requirement (each dependency must have one)."""
    lows = [Version(s.version) for s in req.specifier if s.operator == ">="]
    assert len(lows) == 1, f"{req}: expected one '>=' floor"
    return lows[0]


def _declared(*extras: str) -> dict[str, tuple[Requirement, Version]]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]]
    return {canonicalize_name(r.name): (r, _floor(r)) for r in reqs}


def _floors_file() -> dict[str, tuple[Version, str]]:
    """``.ci/floors.txt``: name -> (pinned version, the line's comment)."""
    pins = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text("utf-8").splitlines():
        spec, _, comment = line.partition("#")
        if not spec.strip():
            continue
        req = Requirement(spec.strip())
        (s,) = req.specifier
        assert s.operator == "==", f"{line!r}: a floor is pinned with =="
        name = canonicalize_name(req.name)
        assert name not in pins, f"{name} pinned twice"
        pins[name] = (Version(s.version), comment.strip())
    return pins


def test_every_runtime_and_test_floor_is_pinned_to_itself():
    pins = _floors_file()
    for name, (req, floor) in _declared("test").items():
        assert name in pins, f"{req} has no pin in .ci/floors.txt"
        assert pins[name][0] == floor, f"{req}: .ci/floors.txt pins {pins[name][0]}"
    # dask[distributed] requires the distributed of dask's own version.
    assert pins["distributed"][0] == pins["dask"][0]


def test_every_other_pin_says_why_it_is_there():
    declared = _declared("test")
    for name, (version, comment) in _floors_file().items():
        if name not in declared:
            assert comment, f"{name}=={version} is no dependency: its line must say why"


def test_environment_yml_declares_the_same_floors():
    env = yaml.safe_load((ROOT / "environment.yml").read_text("utf-8"))
    conda = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str) and dep not in ("pip",):
            req = Requirement(dep)
            conda[canonicalize_name(req.name)] = (req, _floor(req))
    for name, (req, floor) in _declared("test", "docs").items():
        for conda_name in CONDA_NAMES.get(name, [name]):
            assert conda_name in conda, f"environment.yml lacks {conda_name} ({req})"
            assert conda[conda_name][1] == floor, (
                f"environment.yml: {conda[conda_name][0]}, pyproject.toml: {req}")
    python = Requirement(f"python{PYPROJECT['project']['requires-python']}")
    assert conda["python"][1] == _floor(python)
