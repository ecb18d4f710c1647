"""Trigger a pass when the files of a local folder source change.

For development: with `--repo ./specs` (a plain folder), saving a file should
reconcile within a second, without waiting for the poll timer. watchdog
reports each file system event; an editor's save is a burst of them (write a
temporary file, rename it, change attributes), so events are debounced: the
callback runs once the folder has been quiet for `debounce_seconds`, and at the
latest `max_delay_seconds` after the first event of a burst, so a folder that
never goes quiet (a build writing into it) still triggers.

Only events that change a file count: created, deleted, modified, moved, and
attribute changes (`touch`, chmod; reads cause none). Opening and closing a
file without writing are ignored, otherwise the pass reading the specs would
trigger the next pass forever. A folder's own "modified" event is ignored too
(its changed entry has an event of its own), and anything under `.git/`
is ignored: git touches its own files on every status or fetch.

The callback runs on this module's own thread, never on watchdog's, so a slow
callback delays only the next callback, not event collection. It should be
cheap (enqueue a trigger); an exception in it is logged and the watch goes on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from watchdog.events import (
    EVENT_TYPE_ATTRIB,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from gitsync.sources.base import SourceError

log = logging.getLogger(__name__)

_CONTENT_EVENTS = frozenset(
    {
        EVENT_TYPE_CREATED,
        EVENT_TYPE_DELETED,
        EVENT_TYPE_MODIFIED,
        EVENT_TYPE_MOVED,
        EVENT_TYPE_ATTRIB,
    }
)


class _Handler(FileSystemEventHandler):
    def __init__(self, root: Path, notify: Callable[[], None]) -> None:
        super().__init__()
        self._root = root
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _CONTENT_EVENTS:
            return
        if event.is_directory and event.event_type in {EVENT_TYPE_MODIFIED, EVENT_TYPE_ATTRIB}:
            # A folder is "modified" when an entry in it changes; that entry has its own
            # event, filtered below. Counting the folder's would count `.git/` appearing.
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(path and not self._in_git_dir(os.fsdecode(path)) for path in paths):
            self._notify()

    def _in_git_dir(self, path: str) -> bool:
        try:
            parts = Path(path).relative_to(self._root).parts
        except ValueError:  # outside the root (a move from elsewhere): judge by name
            parts = Path(path).parts
        return ".git" in parts


class FolderWatch:
    """Calls `on_change()` once per burst of content changes under `path`."""

    def __init__(
        self,
        path: Path,
        on_change: Callable[[], None],
        *,
        debounce_seconds: float = 0.5,
        max_delay_seconds: float = 5.0,
    ) -> None:
        if debounce_seconds <= 0 or max_delay_seconds < debounce_seconds:
            raise ValueError(
                f"debounce {debounce_seconds} s and max delay {max_delay_seconds} s: "
                "both must be positive, and the max delay at least the debounce"
            )
        self._root = Path(path).resolve()
        self._on_change = on_change
        self._debounce = debounce_seconds
        self._max_delay = max_delay_seconds
        self._cond = threading.Condition()
        self._first: float | None = None  # monotonic time of the burst's first event
        self._last = 0.0  # … and of its latest
        self._stopping = False
        self._observer: BaseObserver | None = None
        self._worker: threading.Thread | None = None

    def start(self) -> None:
        """Begin watching; raises SourceError if the folder cannot be watched."""
        if self._observer is not None:
            raise RuntimeError(f"the watch on {self._root} is already started")
        if not self._root.is_dir():
            raise SourceError(f"cannot watch {self._root}: it is not a folder")
        observer = Observer()
        observer.schedule(_Handler(self._root, self._notify), str(self._root), recursive=True)
        observer.daemon = True
        try:
            observer.start()
        except OSError as exc:
            # Most often the inotify watch limit (fs.inotify.max_user_watches).
            raise SourceError(
                f"cannot watch {self._root}: {exc.strerror or exc}; raise "
                "fs.inotify.max_user_watches or rely on the poll interval"
            ) from exc
        self._observer = observer
        self._worker = threading.Thread(
            target=self._run, name=f"gitsync-watch:{self._root.name}", daemon=True
        )
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching; a burst still waiting for quiet is dropped. Safe to call twice."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout)

    def __enter__(self) -> FolderWatch:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _notify(self) -> None:
        with self._cond:
            now = time.monotonic()
            if self._first is None:
                self._first = now
            self._last = now
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._first is None and not self._stopping:
                    self._cond.wait()
                # Wait for quiet, or for the max delay since the burst began.
                while not self._stopping and self._first is not None:
                    due = min(self._last + self._debounce, self._first + self._max_delay)
                    remaining = due - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._stopping:
                    return
                self._first = None  # events from now on start the next burst
            try:
                self._on_change()
            except Exception:
                log.exception("the change callback for %s failed; the watch goes on", self._root)
