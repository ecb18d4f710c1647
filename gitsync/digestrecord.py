"""What the daemon's tag refresher last resolved, kept in the data dir for `gitsync status`.

Why a file: the refresher runs inside `gitsync run`, but `gitsync status` is a
separate process that must show, per image, the digest last resolved and when
(issue: drift and image policies). The daemon writes the refresher's record
after each pass (atomically: temporary file, fsync, rename) and the command
reads it. A missing, torn or foreign file reads as "nothing resolved": the
status then shows the held digests only, as it does without a refresher.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from gitsync.digests import ResolvedDigest

__all__ = ["RESOLVED_FILE", "ResolvedFile"]

RESOLVED_FILE = "resolved-digests.json"

log = logging.getLogger("gitsync.refresh")


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class ResolvedFile:
    """`<data-dir>/resolved-digests.json`: image → what its tag last resolved to."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / RESOLVED_FILE
        self._saved: Mapping[str, ResolvedDigest] | None = None

    def load(self) -> dict[str, ResolvedDigest]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(raw, dict):
            return {}
        found: dict[str, ResolvedDigest] = {}
        for image, entry in raw.items():
            if not isinstance(entry, dict):
                continue
            digest, error = entry.get("digest"), entry.get("error")
            found[str(image)] = ResolvedDigest(
                digest=digest if isinstance(digest, str) else None,
                at=_time(entry.get("at")),
                error=error if isinstance(error, str) else None,
                failed_at=_time(entry.get("failedAt")),
            )
        return found

    def save(self, resolved: Mapping[str, ResolvedDigest]) -> None:
        """Write `resolved` if it changed since the last save; a failing disk is logged."""
        if self._saved == resolved:
            return
        body = {
            image: {
                "digest": r.digest,
                "at": r.at.isoformat() if r.at else None,
                "error": r.error,
                "failedAt": r.failed_at.isoformat() if r.failed_at else None,
            }
            for image, r in sorted(resolved.items())
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".resolved-", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(body, out, indent=2)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.error(
                "cannot save %s: %s; gitsync status shows the held digests only", self.path, exc
            )
            return
        self._saved = dict(resolved)
