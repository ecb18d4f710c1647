"""The controller record file: atomic saves, and a save the disk refuses loses nothing."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from gitsync.controller_record import ControllerRecord, RecordFile, RecordSaveError
from gitsync.errors import TemporaryError


def test_a_saved_record_loads_back_and_a_missing_file_is_a_fresh_record(tmp_path: Path) -> None:
    records = RecordFile(tmp_path)
    assert records.load() == ControllerRecord()
    record = ControllerRecord(applied_revision="abc", kept_names=("web",))
    records.save(record)
    assert RecordFile(tmp_path).load() == record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["controller.json"]


def test_a_save_the_disk_refuses_keeps_the_record_in_memory_until_a_save_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = RecordFile(tmp_path)
    first = ControllerRecord(applied_revision="first")
    records.save(first)
    second = ControllerRecord(applied_revision="second", last_error="x")

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RecordSaveError, match="No space left on device") as caught:
        records.save(second)
    assert isinstance(caught.value, TemporaryError)
    monkeypatch.undo()

    assert records.load() == second  # this process lost nothing it knew
    assert RecordFile(tmp_path).load() == first  # the file still holds a whole record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["controller.json"]  # no temp file

    third = ControllerRecord(applied_revision="third")
    records.save(third)
    assert records.load() == third
    saved = json.loads((tmp_path / "controller.json").read_text(encoding="utf-8"))
    assert saved["applied_revision"] == "third"
