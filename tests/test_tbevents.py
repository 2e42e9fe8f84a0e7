"""deepbsde.tbevents: event files that TensorBoard's own reader accepts, scalars and restarts included."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepbsde.tbevents import EventWriter, crc32c


def test_crc32c_check_value() -> None:
    # the standard check value of CRC-32C (Castagnoli), and the empty string
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_reads_the_scalars_back(tmp_path: Path) -> None:
    w = EventWriter(tmp_path)
    for step in (0, 10, 20):
        w.add_scalar("loss", 1.0 / (step + 1), step)
        w.add_scalar("metrics/u0", 0.25 * step - 1.5, step)
    w.close()
    got = _scalars(tmp_path)
    assert [s for s, _ in got["loss"]] == [0, 10, 20]
    assert [v for _, v in got["loss"]] == pytest.approx([1.0, 1 / 11, 1 / 21], rel=1e-7)  # stored as float32
    assert [v for _, v in got["metrics/u0"]] == [-1.5, 1.0, 3.5]


def test_a_restart_purges_what_the_crashed_run_logged_after_its_checkpoint(tmp_path: Path) -> None:
    first = EventWriter(tmp_path)
    for step in (0, 10, 20, 30):
        first.add_scalar("loss", float(step), step)
    first.close()
    resumed = EventWriter(tmp_path, purge_step=11)  # restored at step 10: steps 20 and 30 are stale
    for step in (20, 30):
        resumed.add_scalar("loss", -float(step), step)
    resumed.close()
    assert _scalars(tmp_path)["loss"] == [(0, 0.0), (10, 10.0), (20, -20.0), (30, -30.0)]


def test_a_corrupted_record_is_detected(tmp_path: Path) -> None:
    """TensorBoard's reader checks the CRCs: it reads both records of a sound file, and stops before a record
    whose data has a flipped byte (so the CRCs above are not merely ignored)."""
    from tensorboard.backend.event_processing import event_file_loader

    w = EventWriter(tmp_path)
    w.add_scalar("loss", 2.0, 5)
    w.close()
    (path,) = tmp_path.iterdir()

    def records() -> list[bytes]:
        return list(event_file_loader.RawEventFileLoader(str(path), detect_file_replacement=False).Load())

    assert len(records()) == 2
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # inside the last record's data
    path.write_bytes(bytes(data))
    assert len(records()) == 1
