r"""TensorBoard event files for scalars, written directly (no TensorFlow, no protobuf import).

A run's scalars are all it logs to TensorBoard, and ``torch.utils.tensorboard`` costs about 0.17 s to import
(its protobuf modules), 2 % of the main job. The format is small enough to write by hand:

- **Records** (TensorFlow's TFRecord framing): the data's length as a little-endian ``uint64``, the masked
  CRC-32C of those 8 bytes (``uint32``), the data, the masked CRC-32C of the data. CRC-32C is the Castagnoli
  polynomial (reflected ``0x82F63B78``); the mask is :math:`((c \gg 15) | (c \ll 17)) + \mathtt{0xa282ead8}`
  modulo :math:`2^{32}`.
- **Data**: one ``Event`` protocol buffer per record (``tensorflow/core/util/event.proto``): ``wall_time``
  (field 1, double), ``step`` (2, int64), ``file_version`` (3, string, ``"brain.Event:2"`` in a file's first
  event), ``summary`` (5: a ``Summary`` of repeated ``Value`` (1), each a ``tag`` (1, string) and a
  ``simple_value`` (2, float)) and ``session_log`` (7: a ``SessionLog`` whose ``status`` (1) ``START = 1``
  after a restart tells TensorBoard to hide the events at and after its step, which is how a resumed run
  purges what the crashed one logged past its checkpoint).

``tests/test_tbevents.py`` reads these files back with TensorBoard's own reader.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from pathlib import Path

__all__ = ["EventWriter", "crc32c"]


def _table() -> list[int]:
    out = []
    for byte in range(256):
        c = byte
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        out.append(c)
    return out


_TABLE = _table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``; ``crc32c(b"123456789") == 0xE3069283``."""
    c = 0xFFFFFFFF
    for byte in data:
        c = _TABLE[(c ^ byte) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _masked(data: bytes) -> bytes:
    c = crc32c(data)
    return struct.pack("<I", (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # int64 on the wire: two's complement, 10 bytes when negative
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _field(number, 2, _varint(len(payload)) + payload)


def _event(step: int, *, summary: bytes | None = None, file_version: str | None = None,
           session_start: bool = False) -> bytes:
    out = _field(1, 1, struct.pack("<d", time.time())) + _field(2, 0, _varint(int(step)))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if summary is not None:
        out += _bytes_field(5, summary)
    if session_start:
        out += _bytes_field(7, _field(1, 0, _varint(1)))
    return out


def _scalar_summary(tag: str, value: float) -> bytes:
    return _bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5, struct.pack("<f", float(value))))


_COUNTER = itertools.count()


class EventWriter:
    """Scalars into a new event file under ``log_dir`` (``add_scalar``, ``flush``, ``close``, as
    ``torch.utils.tensorboard.SummaryWriter``). ``purge_step``: a resumed run; TensorBoard hides what earlier
    files of the folder logged at and after that step."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}."
                f"{next(_COUNTER)}")
        self._file = open(self.log_dir / name, "wb")
        self._write(_event(0 if purge_step is None else purge_step, file_version="brain.Event:2"))
        if purge_step is not None:
            self._write(_event(purge_step, session_start=True))
        self.flush()

    def _write(self, data: bytes) -> None:
        length = struct.pack("<Q", len(data))
        self._file.write(length + _masked(length) + data + _masked(data))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._write(_event(step, summary=_scalar_summary(tag, value)))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
