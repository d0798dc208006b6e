"""Training logs of :class:`~dask_dpsgd.HSA2CAgent` as stable-baselines3 writes them:
``progress.csv`` and TensorBoard event files, written as the history records arrive.

The TensorBoard writer needs neither TensorFlow nor ``tensorboard``: an event file is
a TFRecord file (each record: its length as a little-endian uint64, the length's
masked CRC-32C, the bytes, their masked CRC-32C) of ``Event`` protocol buffers
(``tensorflow/core/util/event.proto``: ``wall_time`` 1, ``step`` 2, ``file_version``
3, ``summary`` 5; a ``Summary`` holds ``Value`` messages of ``tag`` 1 and
``simple_value`` 2), the few fields written here encoded by hand.
"""

from __future__ import annotations

import csv
import math
import os
import socket
import struct
import time
from typing import Any

__all__ = ["CSVLog", "TensorBoardLog", "crc32c"]


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as TFRecord files use."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # int64 as protobuf encodes it
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, *, file_version: str | None = None,
           scalars: dict[str, float] | None = None) -> bytes:
    """One serialised ``Event``."""
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time)
    out += _varint(2 << 3 | 0) + _varint(int(step))
    if file_version is not None:
        out += _field_bytes(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _field_bytes(1, _field_bytes(1, tag.encode())
                         + _varint(2 << 3 | 5) + struct.pack("<f", value))
            for tag, value in scalars.items())
        out += _field_bytes(5, summary)
    return out


class TensorBoardLog:
    """TensorBoard scalars of every numeric history key, at ``time/total_timesteps``.

    Each ``learn``/``fit`` writes a new run folder ``<folder>/HSA2C_<n>`` (``n`` one
    more than the highest there), as stable-baselines3's ``tensorboard_log`` does;
    ``tensorboard --logdir <folder>`` shows them.

    Parameters
    ----------
    folder : str or path-like
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        taken = [int(name.split("_")[-1]) for name in os.listdir(folder)
                 if name.startswith("HSA2C_") and name.split("_")[-1].isdigit()]
        self.run_dir = os.path.join(folder, f"HSA2C_{max(taken, default=0) + 1}")
        os.makedirs(self.run_dir)
        now = time.time()
        self.path = os.path.join(self.run_dir, f"events.out.tfevents.{int(now)}."
                                               f"{socket.gethostname()}")
        self._fh = open(self.path, "wb")  # noqa: SIM115 - kept open while training
        self._write(_event(now, 0, file_version="brain.Event:2"))

    def _write(self, event: bytes) -> None:
        header = struct.pack("<Q", len(event))
        self._fh.write(header + struct.pack("<I", _masked_crc(header)) + event
                       + struct.pack("<I", _masked_crc(event)))
        self._fh.flush()

    def write(self, record: dict[str, Any]) -> None:
        """The record's finite numbers as scalars (booleans and strings skipped)."""
        scalars = {k: float(v) for k, v in record.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)
                   and math.isfinite(v)}
        self._write(_event(time.time(), int(record.get("time/total_timesteps", 0)),
                           scalars=scalars))

    def close(self) -> None:
        """Close the event file."""
        self._fh.close()


class CSVLog:
    """``progress.csv`` in a folder: one row per history record, columns the union of
    the records' keys (the file is rewritten when a record brings a new key, as
    stable-baselines3's ``CSVOutputFormat`` does).

    Parameters
    ----------
    folder : str or path-like
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, "progress.csv")
        self.keys: list[str] = []
        self.rows: list[dict[str, Any]] = []
        self._write(rewrite=True)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        self.rows.append(dict(record))
        new = [k for k in record if k not in self.keys]
        self.keys += new
        self._write(rewrite=bool(new))

    def _write(self, rewrite: bool) -> None:
        with open(self.path, "w" if rewrite else "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.keys, restval="")
            if rewrite:
                if self.keys:
                    writer.writeheader()
                writer.writerows(self.rows)
            else:
                writer.writerow(self.rows[-1])

    def close(self) -> None:
        """Nothing to close (each write opens the file)."""
