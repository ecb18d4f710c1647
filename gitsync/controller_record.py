"""What the controller remembers between passes and restarts: one small JSON file.

The applied revision must survive restarts (an invalid commit after a restart
must still leave the last good revision in force), and `gitsync status`, the
HTTP API and the metrics read it from other processes. A JSON file replaced
atomically (temp file, fsync, rename) is enough: it is written once per pass,
is provider-independent, and a reader always sees a whole record.

A save the disk refuses (full, or failing) raises `RecordSaveError`, a
TemporaryError: the file keeps the last record that was saved, whole, and this
`RecordFile` keeps the newer one in memory and returns it from `load()` until a
later save gets it onto the disk, so a full disk costs this process nothing it
knew; only other processes (`gitsync status`) see the older record meanwhile.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from gitsync.errors import TemporaryError
from gitsync.model import Diagnostic

RECORD_FILE = "controller.json"


@dataclass(frozen=True, slots=True)
class ControllerRecord:
    """The controller's memory: revision in force, the newest revision seen, and the last error."""

    applied_revision: str | None = None
    newest_revision: str | None = None
    spec_valid: bool = True
    diagnostics_by_severity: dict[str, int] = field(default_factory=dict)
    diagnostics: tuple[str, ...] = ()  # rendered lines of the newest revision, for status
    kept_names: tuple[str, ...] = ()  # prune-disabled caches of the applied revision
    last_error: str | None = None
    last_reconcile_at: float | None = None
    last_success_at: float | None = None

    def with_diagnostics(
        self, diagnostics: tuple[Diagnostic, ...], lines: tuple[str, ...]
    ) -> ControllerRecord:
        counts: dict[str, int] = {}
        for d in diagnostics:
            counts[d.severity.value] = counts.get(d.severity.value, 0) + 1
        return replace(self, diagnostics_by_severity=counts, diagnostics=lines)


class RecordSaveError(TemporaryError):
    """The record could not be written (a full or failing disk); it is kept in memory."""


class RecordFile:
    """Load and save a `ControllerRecord` under a data dir; a missing file is a fresh record."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / RECORD_FILE
        self._unsaved: ControllerRecord | None = None  # newer than the file: its save failed

    def load(self) -> ControllerRecord:
        unsaved = self._unsaved
        if unsaved is not None:
            return unsaved
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return ControllerRecord()
        except (OSError, ValueError):
            # A torn or foreign file must not stop the controller; it is rebuilt on the next save.
            return ControllerRecord()
        known = set(ControllerRecord.__dataclass_fields__)
        values = {k: v for k, v in raw.items() if k in known}
        for key in ("diagnostics", "kept_names"):
            if key in values:
                values[key] = tuple(values[key])
        return ControllerRecord(**values)

    def save(self, record: ControllerRecord) -> None:
        """Replace the file atomically; raises RecordSaveError (keeping `record`) if it cannot."""
        try:
            self._write(record)
        except OSError as exc:
            self._unsaved = record
            raise RecordSaveError(
                f"cannot save the controller record to {self.path}: {exc.strerror or exc};"
                " it is kept in memory and saved again by the next pass"
            ) from exc
        self._unsaved = None

    def _write(self, record: ControllerRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".controller-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(asdict(record), out, indent=2, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
