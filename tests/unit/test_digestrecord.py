"""`gitsync.digestrecord`: the refresher's record, written by run, read by `gitsync status`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from gitsync.digestrecord import RESOLVED_FILE, ResolvedFile
from gitsync.digests import ResolvedDigest

AT = datetime(2026, 12, 5, 14, 0, tzinfo=UTC)


def test_a_saved_record_reads_back_and_an_unchanged_one_is_not_rewritten(tmp_path: Path) -> None:
    record = {
        "registry.example.com/app:1": ResolvedDigest(digest="sha256:" + "a" * 64, at=AT),
        "registry.example.com/db:2": ResolvedDigest(
            digest=None, at=None, error="503 from the registry", failed_at=AT
        ),
    }
    file = ResolvedFile(tmp_path)
    file.save(record)
    assert ResolvedFile(tmp_path).load() == record
    written = (tmp_path / RESOLVED_FILE).stat().st_mtime_ns
    (tmp_path / RESOLVED_FILE).write_text("{}")  # would be overwritten by a needless save
    file.save(dict(record))
    assert (tmp_path / RESOLVED_FILE).read_text() == "{}"
    assert written  # the first save wrote


def test_a_missing_torn_or_foreign_file_reads_as_nothing_resolved(tmp_path: Path) -> None:
    assert ResolvedFile(tmp_path).load() == {}
    (tmp_path / RESOLVED_FILE).write_text('{"registry.example.com/app:1": {"digest": ')
    assert ResolvedFile(tmp_path).load() == {}
    (tmp_path / RESOLVED_FILE).write_text('["not", "a", "record"]')
    assert ResolvedFile(tmp_path).load() == {}
