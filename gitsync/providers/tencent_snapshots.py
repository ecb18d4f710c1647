"""Moved to `gitsync.providers.tencentcloud.snapshots`; this name stays only for gitsync.cli.

The CBS snapshot lookup now lives in the Tencent Cloud package beside the
transport it calls through. gitsync/cli.py still imports it from here; once it
imports `gitsync.providers.tencentcloud.snapshots`, this module goes.
"""

from __future__ import annotations

from gitsync.providers.tencentcloud.snapshots import CbsSnapshotLookup

__all__ = ["CbsSnapshotLookup"]
