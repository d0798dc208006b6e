"""Save and load fitted estimators as plain ``.npz`` files: no pickle, no code.

:func:`save_model` writes a fitted :class:`~dask_dpsgd.DPSVILatentDirichletAllocation`
or :class:`~dask_dpsgd.HSA2CAgent` as a NumPy ``.npz`` archive holding only numeric
and string arrays:

* ``__format__`` / ``__version__``: the marker ``"dask-dpsgd-model"`` and the format
  version;
* ``__class__``: the estimator's class name (only the two classes above are ever
  rebuilt);
* ``__params__``: ``get_params()`` as a JSON string (tuples are restored);
* ``__attrs__``: a JSON manifest of the fitted attributes; scalars, strings, ``None``,
  tuples and lists/dicts of them (``history_``) are stored in it, numpy arrays as
  ``attr/<name>`` entries of the archive.

:func:`load_model` reads it back with ``numpy.load(path, allow_pickle=False)``, so a
crafted file holding pickled objects is refused before anything is unpickled, and
rebuilds the estimator from those plain values only.  The loaded estimator needs no
Dask cluster for ``transform``, ``perplexity``, ``score`` or ``predict``.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import zipfile
from typing import Any

import numpy as np

__all__ = ["ParameterNotSavedWarning", "load_model", "save_model"]

FORMAT = "dask-dpsgd-model"
FORMAT_VERSION = 1



class ParameterNotSavedWarning(UserWarning):
    """A parameter value has no JSON form; the loaded model uses its default."""


# Class name -> (module, private fitted attributes needed after loading).
_CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "DPSVILatentDirichletAllocation": ("dask_dpsgd.decomposition", ()),
    "HSA2CAgent": ("dask_dpsgd.rl", ("_action_low", "_action_high", "_discrete_start")),
}
# Public fitted attributes: a lower-case identifier ending in one underscore.
_FITTED_NAME = re.compile(r"^[a-z][a-z0-9_]*[a-z0-9]_$")
# Array dtypes that load without pickle and mean what they say.
_ARRAY_KINDS = "biufcU"
_ARRAY_PREFIX = "attr/"


# The key under which a parameter holding a dask_dpsgd.rl.LinearSchedule is stored.
_SCHEDULE = "__linear_schedule__"

def _estimator_class(name: str) -> tuple[type, tuple[str, ...]]:
    import importlib

    module, private = _CLASSES[name]
    return getattr(importlib.import_module(module), name), private


# --------------------------------------------------------------------------- #
# Encoding
# --------------------------------------------------------------------------- #
def _plain(value: Any) -> Any:
    """``value`` as JSON-ready Python data, or raise TypeError."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("dict with non-string keys")
        return {k: _plain(v) for k, v in value.items()}
    raise TypeError(f"{type(value).__name__} is not a plain value")


def _encode_attr(name: str, value: Any, arrays: dict[str, np.ndarray]) -> dict:
    """Manifest entry of one fitted attribute (arrays go to ``arrays``)."""
    if isinstance(value, np.ndarray):
        entry: dict[str, Any] = {"kind": "array"}
        if value.dtype == object:
            if not all(isinstance(v, str) for v in value.ravel()):
                raise TypeError("object array holding non-strings")
            value = value.astype(str)
            entry["object"] = True
        if value.dtype.kind not in _ARRAY_KINDS:
            raise TypeError(f"array of dtype {value.dtype}")
        arrays[_ARRAY_PREFIX + name] = value
        return entry
    if _is_space(value):
        from dask_dpsgd._utils._rl_plain import space_to_json

        return {"kind": "space", "value": space_to_json(value)}
    if isinstance(value, np.random.RandomState):
        algo, keys, pos, has_gauss, gauss = value.get_state()
        arrays[_ARRAY_PREFIX + name] = np.asarray(keys)
        return {"kind": "random_state", "value": [str(algo), int(pos), int(has_gauss),
                                                  float(gauss)]}
    kind = "tuple" if isinstance(value, tuple) else "value"
    return {"kind": kind, "value": _plain(value)}


def _is_space(value: Any) -> bool:
    """A gymnasium space (without importing gymnasium for LDA models)."""
    import sys

    gym = sys.modules.get("gymnasium")
    return gym is not None and isinstance(value, gym.spaces.Space)


def _json_array(obj: Any) -> np.ndarray:
    text = json.dumps(obj, allow_nan=True)
    return np.array(text)


def save_model(estimator: Any, path: str | os.PathLike) -> pathlib.Path:
    """Write a fitted estimator to ``path`` as a pickle-free ``.npz`` archive.

    Parameters
    ----------
    estimator : DPSVILatentDirichletAllocation or HSA2CAgent
        A fitted estimator.
    path : str or path-like
        Output file, written as given (no suffix is appended; ``.npz`` is customary).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        If the estimator is not one of the two supported classes, is not fitted, or
        holds a fitted attribute that has no plain-array representation.

    Notes
    -----
    An :class:`~dask_dpsgd.HSA2CAgent` whose ``env`` is a factory or an instance is
    saved with ``env=None`` (the file names what it was): pass the environment to
    :func:`load_model` (``env=``) to train or score the loaded agent; ``predict``
    needs only the stored spaces.

    Parameters whose values are not JSON-serialisable (for example a
    ``numpy.random.RandomState`` as ``random_state``) are left out and take their
    default when the model is loaded; a :class:`ParameterNotSavedWarning` names them.
    """
    import warnings

    from sklearn.utils.validation import check_is_fitted

    name = type(estimator).__name__
    if name not in _CLASSES:
        raise ValueError(f"save_model supports {', '.join(_CLASSES)}; got {name}")
    cls, private = _estimator_class(name)
    if type(estimator) is not cls:
        raise ValueError(f"save_model supports {', '.join(_CLASSES)}; got "
                         f"{type(estimator).__module__}.{name}")
    check_is_fitted(estimator)
    params = estimator.get_params(deep=False)
    env_note = None
    if name == "HSA2CAgent" and not isinstance(params["env"], str | None):
        # A factory or an instance would have to be pickled: the file stores what it
        # was, and load_model takes the environment back (env=), as SB3's load does.
        env_note = repr(params["env"])
        params["env"] = None
    plain_params: dict[str, Any] = {}
    tuple_params: list[str] = []
    dropped: list[str] = []
    schedule: tuple[type, ...] = ()
    if name == "HSA2CAgent":
        from dask_dpsgd._utils._rl_plain import LinearSchedule

        schedule = (LinearSchedule,)
    for key, value in params.items():
        if isinstance(value, schedule):
            # A learning-rate schedule of its rates, rebuilt by load_model.
            plain_params[key] = {_SCHEDULE: [value.initial, value.final]}
            continue
        try:
            plain_params[key] = _plain(value)
            json.dumps(plain_params[key])
        except (TypeError, ValueError):
            plain_params.pop(key, None)
            dropped.append(key)
            continue
        if isinstance(value, tuple):
            tuple_params.append(key)
    if dropped:
        warnings.warn(
            f"save_model: parameter(s) {', '.join(dropped)} of {name} are not "
            "JSON-serialisable and are not saved; the loaded model uses their defaults",
            ParameterNotSavedWarning, stacklevel=2)

    arrays: dict[str, np.ndarray] = {}
    manifest: dict[str, dict] = {}
    names = sorted(k for k in vars(estimator) if _FITTED_NAME.match(k))
    names += [k for k in private if hasattr(estimator, k)]
    for attr in names:
        try:
            manifest[attr] = _encode_attr(attr, getattr(estimator, attr), arrays)
        except TypeError as exc:
            raise ValueError(f"cannot save {name}.{attr}: {exc}; only numeric/string "
                             "arrays and plain values are stored") from exc

    path = pathlib.Path(path)
    contents = {
        "__format__": np.array(FORMAT),
        "__version__": np.array(FORMAT_VERSION),
        "__class__": np.array(name),
        "__params__": _json_array({"values": plain_params, "tuples": tuple_params,
                                   **({"env_not_saved": env_note} if env_note else {})}),
        "__attrs__": _json_array(manifest),
        **arrays,
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **contents)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# --------------------------------------------------------------------------- #
# Decoding
# --------------------------------------------------------------------------- #
def _scalar_str(arrays: dict[str, np.ndarray], key: str, where: str) -> str:
    arr = arrays.get(key)
    if arr is None or arr.ndim != 0 or arr.dtype.kind != "U":
        raise ValueError(f"{where}: not a dask-dpsgd model file (entry {key!r} missing "
                         "or not a string)")
    return str(arr[()])


def _json_entry(arrays: dict[str, np.ndarray], key: str, where: str) -> Any:
    try:
        return json.loads(_scalar_str(arrays, key, where))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: entry {key!r} is not valid JSON ({exc})") from exc


def _decode_attr(name: str, entry: Any, arrays: dict[str, np.ndarray],
                 where: str) -> Any:
    kind = entry.get("kind") if isinstance(entry, dict) else None
    if kind == "space":
        from dask_dpsgd._utils._rl_plain import space_from_json

        try:
            return space_from_json(entry.get("value"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: bad space for {name!r} ({exc})") from exc
    if kind in ("value", "tuple"):
        value = entry.get("value")
        return tuple(value) if kind == "tuple" and isinstance(value, list) else value
    if kind in ("array", "random_state"):
        arr = arrays.get(_ARRAY_PREFIX + name)
        if arr is None:
            raise ValueError(f"{where}: array of fitted attribute {name!r} is missing")
        if kind == "array":
            if arr.dtype.kind not in _ARRAY_KINDS:
                raise ValueError(f"{where}: fitted attribute {name!r} has dtype "
                                 f"{arr.dtype}, not a plain numeric/string dtype")
            return arr.astype(object) if entry.get("object") else arr
        state = entry.get("value")
        try:
            algo, pos, has_gauss, gauss = state
            rs = np.random.RandomState()
            rs.set_state((algo, arr, int(pos), int(has_gauss), float(gauss)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: bad random state for {name!r} ({exc})") from exc
        return rs
    raise ValueError(f"{where}: fitted attribute {name!r} has an unknown encoding "
                     f"{entry!r}")


def load_model(path: str | os.PathLike, env: Any = None) -> Any:
    """Load an estimator written by :func:`save_model`.

    The file is read with ``numpy.load(path, allow_pickle=False)``: an archive
    holding object (pickled) arrays is refused without unpickling anything, and
    only :class:`~dask_dpsgd.DPSVILatentDirichletAllocation` and
    :class:`~dask_dpsgd.HSA2CAgent` are ever constructed, from plain values.

    Parameters
    ----------
    path : str or path-like
        A ``.npz`` file written by :func:`save_model`.
    env : str, callable, gymnasium.Env or None, default=None
        An :class:`~dask_dpsgd.HSA2CAgent`'s environment, replacing the saved one (as
        stable-baselines3's ``load(path, env=...)``). An agent trained on a factory
        or an instance is saved without it: loaded without ``env`` it predicts, and
        ``learn``/``score`` ask for it.

    Returns
    -------
    DPSVILatentDirichletAllocation or HSA2CAgent
        The fitted estimator; ``transform``/``perplexity``/``score`` (LDA) and
        ``predict``/``score`` (agent) work without a Dask cluster.  The agent's
        ``score`` makes its environment from the saved gymnasium id.

    Raises
    ------
    ValueError
        If the file is not a dask-dpsgd model archive, holds pickled objects, names
        a class other than the two above, or has parameters/attributes the class
        does not know.
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = pathlib.Path(path)
    where = str(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{where}: not a dask-dpsgd model file (corrupt .npz archive: "
                         f"{exc})") from exc
    except ValueError as exc:  # pickled data, or not a NumPy file at all
        raise ValueError(
            f"{where}: refused to load: not a .npz archive of plain arrays ({exc}); "
            "model files are read without unpickling anything") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{where}: not a dask-dpsgd model file (a single .npy array, "
                         "not a .npz archive)")
    try:
        with loaded:
            arrays = {key: loaded[key] for key in loaded.files}
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{where}: not a dask-dpsgd model file (corrupt .npz archive: "
                         f"{exc})") from exc
    except ValueError as exc:
        raise ValueError(
            f"{where}: refused to load: the file holds pickled Python objects (object "
            "arrays); model files hold plain numeric/string arrays only and are read "
            f"without unpickling ({exc})") from exc
    if _scalar_str(arrays, "__format__", where) != FORMAT:
        raise ValueError(f"{where}: not a dask-dpsgd model file")
    version = arrays.get("__version__")
    if (version is None or version.ndim != 0 or version.dtype.kind not in "iu"
            or int(version) > FORMAT_VERSION):
        raise ValueError(f"{where}: unsupported model format version {version!r} (this "
                         f"dask-dpsgd reads versions up to {FORMAT_VERSION})")
    name = _scalar_str(arrays, "__class__", where)
    if name not in _CLASSES:
        raise ValueError(f"{where}: refused to load class {name!r}; model files may "
                         f"only hold {', '.join(_CLASSES)}")
    cls, private = _estimator_class(name)

    params_entry = _json_entry(arrays, "__params__", where)
    if not isinstance(params_entry, dict) or not isinstance(
            params_entry.get("values"), dict):
        raise ValueError(f"{where}: malformed parameters entry")
    params = dict(params_entry["values"])
    known = set(cls().get_params(deep=False))
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"{where}: parameter(s) {', '.join(unknown)} are not "
                         f"parameters of {name}")
    for key in params_entry.get("tuples", []):
        if key in params and isinstance(params[key], list):
            params[key] = tuple(params[key])
    for key, value in params.items():
        if isinstance(value, dict) and set(value) == {_SCHEDULE}:
            from dask_dpsgd._utils._rl_plain import LinearSchedule

            try:
                params[key] = LinearSchedule(*value[_SCHEDULE])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}: malformed schedule of {key}: {exc}") from exc
    if env is not None:
        if name != "HSA2CAgent":
            raise ValueError(f"{where}: env applies to an HSA2CAgent, not {name}")
        params["env"] = env
    estimator = cls(**params)

    manifest = _json_entry(arrays, "__attrs__", where)
    if not isinstance(manifest, dict) or not manifest:
        raise ValueError(f"{where}: the model holds no fitted attributes")
    for attr, entry in manifest.items():
        if not (_FITTED_NAME.match(attr) or attr in private):
            raise ValueError(f"{where}: refused attribute name {attr!r} (fitted "
                             "attributes end in '_')")
        setattr(estimator, attr, _decode_attr(attr, entry, arrays, where))
    return estimator
