"""Pod observation: real cache hit rates and start-up times, from the cluster's Pods and Events.

`gitsync.observers.pods` holds the bookkeeping (which pods count, how a start
is classified hit, partial or miss, the per-image lookups, the bounds on
memory); this module feeds it from the API server.

Watching
--------
One thread per (resource, namespace) lists with pagination, then watches from
the list's `resourceVersion` with bookmarks; a stream the server ends is
resumed from the last version seen, `410 Gone` (as an ERROR event or an HTTP
status) is answered with a fresh list, and any other failure reconnects with
exponential backoff and jitter. The watched namespaces are all, or the ones
given.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import kubernetes.client
import urllib3
from kubernetes.client.exceptions import ApiException

from gitsync.backoff import equal_jitter
from gitsync.observers.pods import (
    USE_IMAGE_CACHE_ANNOTATION,
    LookupReasons,
    LookupRecorder,
    PodLookupTracker,
)

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_WATCH_TIMEOUT_SECONDS",
    "RBAC_RULES",
    "USE_IMAGE_CACHE_ANNOTATION",
    "LookupReasons",
    "LookupRecorder",
    "PodLookupTracker",
    "PodObserver",
]

log = logging.getLogger("gitsync.observers.kubernetes")

DEFAULT_WATCH_TIMEOUT_SECONDS = 300  # the server ends the stream; we resume from the last version
DEFAULT_PAGE_SIZE = 500

# What the code calls, for the RBAC test: (apiGroup, resource, verbs).
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "pods", ("list", "watch")),
    ("", "events", ("list", "watch")),
)


class _Gone(Exception):
    """The resourceVersion we hold is too old (410): list afresh."""


class PodObserver:
    """Feeds a `PodLookupTracker` from Pod and Event watches; `start()`, then `stop()`."""

    def __init__(
        self,
        *,
        api_client: kubernetes.client.ApiClient,
        tracker: PodLookupTracker,
        namespaces: Sequence[str] = (),
        watch_timeout_seconds: int = DEFAULT_WATCH_TIMEOUT_SECONDS,
        page_size: int = DEFAULT_PAGE_SIZE,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        sweep_interval: float = 1.0,
        connect_timeout: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        """`namespaces`: watch only these; empty watches every namespace (cluster-wide list)."""
        self.tracker = tracker
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._namespaces: tuple[str | None, ...] = tuple(namespaces) or (None,)
        self._watch_timeout = watch_timeout_seconds
        self._page_size = page_size
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._sweep_interval = sweep_interval
        # Read timeout longer than the server-side watch timeout: a silent stream is not an error.
        self._timeout = (connect_timeout, watch_timeout_seconds + 30.0)
        self._rng = rng or random.Random()  # noqa: S311  # jitter, not cryptography
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._responses: set[Any] = set()
        self._responses_lock = threading.Lock()
        self._events_synced: set[str | None] = set()
        self.relists = 0
        self.reconnects = 0

    def start(self) -> None:
        """Start watching (again, after `stop()`: the daemon observes only while it leads)."""
        if self._threads:
            return
        self._stop.clear()
        self._events_synced.clear()
        self.tracker.events_live = False
        for namespace in self._namespaces:
            for resource in ("pods", "events"):
                name = f"gitsync-watch-{resource}-{namespace or 'all'}"
                thread = threading.Thread(
                    target=self._loop, args=(resource, namespace), name=name, daemon=True
                )
                self._threads.append(thread)
        self._threads.append(
            threading.Thread(target=self._sweeper, name="gitsync-watch-sweep", daemon=True)
        )
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._responses_lock:
            responses = list(self._responses)
        for response in responses:
            _interrupt(response)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    # ------------------------------------------------------------------ loops

    def _sweeper(self) -> None:
        while not self._stop.wait(self._sweep_interval):
            self.tracker.sweep()

    def _loop(self, resource: str, namespace: str | None) -> None:
        version: str | None = None
        delay = self._backoff_initial
        where = f"{resource} in {namespace or 'all namespaces'}"
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._relist(resource, namespace)
                version = self._watch(resource, namespace, version)
                delay = self._backoff_initial
            except _Gone:
                log.info("watch of %s expired (410 Gone); listing afresh", where)
                version = None
            except Exception as exc:  # a watch thread must never die quietly
                if self._stop.is_set():
                    break
                self.reconnects += 1
                wait = equal_jitter(delay, rng=self._rng)
                expected = (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError)
                log.log(
                    logging.WARNING if isinstance(exc, expected) else logging.ERROR,
                    "watch of %s failed (%s); retrying in %.1f s",
                    where,
                    exc,
                    wait,
                    exc_info=not isinstance(exc, expected),
                )
                self._stop.wait(wait)
                delay = min(self._backoff_max, delay * 2)

    def _relist(self, resource: str, namespace: str | None) -> str:
        self.relists += 1
        token: str | None = None
        live: set[str] = set()
        while True:
            kwargs: dict[str, Any] = {"limit": self._page_size}
            if token:
                kwargs["_continue"] = token
            try:
                response = self._request(resource, namespace, watch=False, **kwargs)
            except ApiException as exc:
                if exc.status == 410:  # the continue token expired mid-list
                    raise _Gone from exc
                raise
            try:
                page = json.loads(response.data or b"{}")
            finally:
                response.release_conn()
            for item in page.get("items") or ():
                if resource == "pods":
                    self.tracker.pod("SYNC", item)
                    live.add(str((item.get("metadata") or {}).get("uid")))
                else:
                    self.tracker.event(item)
            metadata = page.get("metadata") or {}
            token = metadata.get("continue") or None
            if not token:
                break
        if resource == "pods":
            self.tracker.resync(live, namespace=namespace)
        else:
            self._events_synced.add(namespace)
            self.tracker.events_live = len(self._events_synced) == len(self._namespaces)
        return str(metadata.get("resourceVersion") or "")

    def _watch(self, resource: str, namespace: str | None, version: str) -> str:
        try:
            response = self._request(
                resource,
                namespace,
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=self._watch_timeout,
            )
        except ApiException as exc:
            if exc.status == 410:
                raise _Gone from exc
            raise
        with self._responses_lock:
            self._responses.add(response)
        try:
            for event in _json_lines(response):
                if self._stop.is_set():
                    break
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                if resource == "pods":
                    self.tracker.pod(str(kind), obj)
                else:
                    self.tracker.event(obj)
        finally:
            with self._responses_lock:
                self._responses.discard(response)
            response.release_conn()
        return version

    def _request(self, resource: str, namespace: str | None, *, watch: bool, **kwargs: Any) -> Any:
        kwargs.update(_preload_content=False, _request_timeout=self._timeout)
        if watch:
            kwargs["watch"] = True
        if resource == "pods":
            if namespace is None:
                return self._core.list_pod_for_all_namespaces(**kwargs)
            return self._core.list_namespaced_pod(namespace, **kwargs)
        kwargs["field_selector"] = "involvedObject.kind=Pod"
        if namespace is None:
            return self._core.list_event_for_all_namespaces(**kwargs)
        return self._core.list_namespaced_event(namespace, **kwargs)


def _json_lines(response: Any) -> Iterator[dict[str, Any]]:
    """Watch events, one JSON object per line, as they arrive."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk
        while True:
            line, newline, rest = buffer.partition(b"\n")
            if not newline:
                break
            buffer = rest
            if line.strip():
                yield json.loads(line)
    if buffer.strip():
        yield json.loads(buffer)


def _interrupt(response: Any) -> None:
    """Unblock a thread reading a watch stream (urllib3 >= 2.3 can shut a response down)."""
    shutdown = getattr(response, "shutdown", None)
    try:
        if callable(shutdown):
            shutdown()
        else:
            response.close()
    except (OSError, urllib3.exceptions.HTTPError):
        pass  # already closed: nothing to interrupt
