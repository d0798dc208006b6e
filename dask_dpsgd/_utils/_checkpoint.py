"""Checkpoint files: plain arrays in ``.npz``, written atomically, read without pickle.

A checkpoint from an untrusted source cannot run code: it is read with
``numpy.load(allow_pickle=False)``, which refuses object arrays, and its metadata is
JSON text.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def save_checkpoint(path: str | os.PathLike, arrays: dict[str, np.ndarray],
                    meta: dict[str, Any]) -> None:
    """Write ``arrays`` and JSON ``meta`` to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, __meta__=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray],
                                                      dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    ValueError
        When the file is not such a checkpoint (naming the file and the problem).
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable dask-dpsgd checkpoint: {exc}") from exc
    if "__meta__" not in arrays:
        raise ValueError(f"{path} is not a dask-dpsgd checkpoint (no metadata)")
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: checkpoint metadata is not valid JSON") from exc
    return arrays, meta


def check_fingerprint(path: str | os.PathLike, meta: dict[str, Any],
                      fingerprint: dict[str, Any]) -> None:
    """Refuse a checkpoint written by a fit whose settings differ from this one's.

    Parameters
    ----------
    path : path-like
        The checkpoint (named in the error).
    meta : dict
        Its metadata (:func:`load_checkpoint`); ``meta["fingerprint"]`` is compared.
    fingerprint : dict
        This fit's settings, JSON-compatible values.

    Raises
    ------
    ValueError
        Naming every setting that differs, with both values.
    """
    # Compare as JSON sees them (tuples come back as lists).
    ours = json.loads(json.dumps(fingerprint))
    theirs = meta.get("fingerprint", {})
    diff = sorted(k for k in ours if theirs.get(k) != ours[k])
    if diff:
        raise ValueError(
            f"checkpoint {path} was written for a different fit ("
            + ", ".join(f"{k}: {theirs.get(k)!r} there, {ours[k]!r} here" for k in diff)
            + "); delete it or point checkpoint_path elsewhere")


def checkpoint_root_seed(meta: dict[str, Any]) -> int:
    """The root seed (``random_state`` resolved) a checkpoint's fit drew from.

    Format 2 stores it as ``"root_seed"``; format 1 named it ``"entropy"``
    (:class:`numpy.random.SeedSequence`'s word for it).
    """
    return int(meta["root_seed"] if "root_seed" in meta else meta["entropy"])
