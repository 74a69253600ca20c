"""The durable outbox across a crash: what a killed process leaves, the next one finishes."""

from pathlib import Path

from endpoint_forensics.sinks.outbox import Outbox, PendingFile


def _acknowledged(tmp_path: Path, unit: str) -> PendingFile:
    """A unit of one upload, committed, whose upload the remote side acknowledged (removed),
    the process killed before the unit was logged sent."""
    staged = Outbox(tmp_path).stage(unit, "EPF_Devices_CL")
    staged.add(b"[]", 0)
    (upload,) = staged.commit()
    upload.path.unlink()
    return upload


def test_a_unit_sent_but_not_logged_before_a_kill_is_finished_by_the_next_start(
    tmp_path: Path,
) -> None:
    # Found by `make chaos` (kill): the sender removes an acknowledged upload, then logs its
    # unit sent and removes the unit's folder. Killed between the two, the folder stayed in
    # pending/ for good, empty, and every later run left it behind.
    _acknowledged(tmp_path, "t1/run-1/machines/page-1")

    again = Outbox(tmp_path)
    assert list((tmp_path / "pending").iterdir()) == []
    assert again.has("t1/run-1/machines/page-1")  # delivered: never enqueued twice
    assert "t1/run-1/machines/page-1" in (tmp_path / "sent.log").read_text()
    assert again.counts() == (0, 0)


def test_a_unit_with_uploads_left_waits_for_the_sender(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    staged = outbox.stage("t1/run-1/machines/page-2", "EPF_Devices_CL")
    staged.add(b"[{}]", 1)
    staged.add(b"[{}]", 1)
    first, _ = staged.commit()
    first.path.unlink()

    again = Outbox(tmp_path)
    assert again.counts() == (1, 1)
    assert [p.unit for p in again.pending()] == ["t1/run-1/machines/page-2"]


def test_a_sent_units_folder_half_removed_before_a_kill_is_removed_by_the_next_start(
    tmp_path: Path,
) -> None:
    upload = _acknowledged(tmp_path, "t1/run-1/machines/page-3")
    (upload.path.parent / "unit").unlink()  # the removal of the sent unit's folder, cut short

    Outbox(tmp_path)  # was: FileNotFoundError at start, every run
    assert list((tmp_path / "pending").iterdir()) == []
