"""Which updates move a pinned digest, and the Event recording it (providers.kubernetes.events).

Pure functions, so every case is a table row: the object's images before,
the spec's after, and the moves that follow (or none). The Event body is
checked field by field against what client-go's recorder writes; that the
API server admits it is tests/integration/test_refresh_kubernetes.py's part.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gitsync.providers.kubernetes.events import (
    DigestChange,
    digest_changed_event,
    digest_changes,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
APP = "registry.example.com/team/app:1"


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ([f"{APP}@{D1}"], [f"{APP}@{D2}"], [DigestChange(APP, D1, D2)]),
        ([APP], [f"{APP}@{D1}"], [DigestChange(APP, None, D1)]),  # pinned from the bare tag
        (["nginx"], [f"nginx:latest@{D1}"], [DigestChange("nginx:latest", None, D1)]),
        (["docker.io/library/nginx:1"], [f"nginx:1@{D1}"], [DigestChange("nginx:1", None, D1)]),
        ([f"{APP}@{D1}"], [f"{APP}@{D1}"], []),  # same pin
        ([f"{APP}@{D1}"], [APP], []),  # unpinned: nothing is known of the new content
        ([], [f"{APP}@{D1}"], []),  # an image new to the cache: not a move
        (["registry.example.com/team/app:2"], [f"{APP}@{D1}"], []),  # another tag
        ([f"registry.example.com/team/app@{D1}"], [f"registry.example.com/team/app@{D2}"], []),
        (["not an image"], [f"{APP}@{D1}"], []),
        (
            [f"{APP}@{D1}", "nginx:1"],
            [f"{APP}@{D2}", f"nginx:1@{D1}", f"{APP}@{D2}"],
            [DigestChange(APP, D1, D2), DigestChange("nginx:1", None, D1)],
        ),
    ],
)
def test_digest_changes(before: list[str], after: list[str], expected: list[DigestChange]) -> None:
    assert list(digest_changes(before, after)) == expected


def test_the_message_names_the_image_and_both_digests() -> None:
    assert DigestChange(APP, D1, D2).message == (
        f"{APP} moved upstream from {D1} to {D2}; the cache is rebuilt"
    )
    assert DigestChange(APP, None, D2).message == (
        f"{APP} moved upstream from the unpinned tag to {D2}; the cache is rebuilt"
    )


def test_the_event_is_the_one_client_go_records_for_a_cluster_scoped_object() -> None:
    written = {
        "apiVersion": "eks.cloud.tencent.com/v1",
        "kind": "ImageCache",
        "metadata": {
            "name": "web",
            "uid": "u-1",
            "resourceVersion": "42",
            "labels": {"app.kubernetes.io/managed-by": "gitsync", "gitsync.io/owner": "ci"},
        },
    }
    at = datetime(2026, 11, 22, 3, 0, 5, tzinfo=UTC)
    nanos = int(at.timestamp()) * 10**9 + 123
    event = digest_changed_event(written, DigestChange(APP, D1, D2), nanos=nanos)
    assert event == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"web.{nanos:x}", "namespace": "default"},
        "involvedObject": {
            "apiVersion": "eks.cloud.tencent.com/v1",
            "kind": "ImageCache",
            "name": "web",
            "uid": "u-1",
            "resourceVersion": "42",
        },
        "type": "Normal",
        "reason": "DigestChanged",
        "message": f"{APP} moved upstream from {D1} to {D2}; the cache is rebuilt",
        "source": {"component": "gitsync"},
        "firstTimestamp": "2026-11-22T03:00:05Z",
        "lastTimestamp": "2026-11-22T03:00:05Z",
        "count": 1,
        "reportingComponent": "gitsync",
        "reportingInstance": "ci",
    }
