"""The observations store on a real SQLite file: aggregation, groups, retention, errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitsync.observations.model import (
    CacheUse,
    ImageEvidence,
    Lookup,
    LookupResult,
    LookupSource,
    StartGroup,
)
from gitsync.observations.store import (
    SCHEMA_VERSION,
    ObservationStore,
    ObservationStoreError,
)

HIT, PARTIAL, MISS = LookupResult.HIT, LookupResult.PARTIAL, LookupResult.MISS
NGINX = "docker.io/library/nginx:1.27"
REDIS = "docker.io/library/redis:7"
APP = "registry.example.com/team/app:1.5"
DAY = 86_400.0


def lookup(
    image: str,
    result: LookupResult,
    at: float,
    *,
    cache: str | None = None,
    seconds: float | None = None,
    group: str | None = None,
    image_bytes: int | None = None,
    source: LookupSource = LookupSource.POD,
) -> Lookup:
    return Lookup(
        image=image,
        result=result,
        at=at,
        source=source,
        cache=cache,
        seconds=seconds,
        group=group,
        image_bytes=image_bytes,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObservationStore]:
    with ObservationStore(tmp_path / "observations.db") as opened:
        yield opened


def test_evidence_aggregates_per_image_per_cache_and_counts_the_window(
    store: ObservationStore,
) -> None:
    store.add(
        [
            lookup(NGINX, HIT, 100, cache="web", seconds=2.0, group="p1", image_bytes=5_000),
            lookup(NGINX, HIT, 110, cache="web", group="p2"),  # untimed hit
            lookup(NGINX, HIT, 120, cache="edge", seconds=4.0, group="p3"),
            lookup(NGINX, MISS, 130, seconds=30.0, group="p4"),
            lookup(NGINX, MISS, 140, group="p4"),  # same pod again, untimed
            lookup(NGINX, PARTIAL, 150, cache="web", seconds=9.0),  # no group: a start of its own
            lookup(REDIS, MISS, 160, seconds=10.0),
            lookup(REDIS, MISS, 170, seconds=20.0),
            lookup(APP, HIT, 50, cache="web"),  # before the window
            lookup(APP, HIT, 500, cache="web"),  # after it
        ]
    )

    evidence = store.evidence(since=100, until=200)

    assert evidence.images == (
        ImageEvidence(
            image=NGINX,
            hits=3,
            partials=1,
            misses=2,
            pods=5,  # p1, p2, p3, p4 and the ungrouped partial
            miss_seconds=30.0,
            timed_misses=1,
            hit_seconds=6.0,
            timed_hits=2,
            first_at=100.0,
            last_at=150.0,
            caches=("edge", "web"),
            image_bytes=5_000,
        ),
        ImageEvidence(
            image=REDIS,
            misses=2,
            pods=2,
            miss_seconds=30.0,
            timed_misses=2,
            first_at=160.0,
            last_at=170.0,
        ),
    )
    assert evidence.images[0].mean_miss_seconds == 30.0
    assert evidence.images[0].mean_hit_seconds == 3.0
    assert dict(evidence.caches) == {
        "edge": CacheUse(cache="edge", hits=1, partials=0, last_hit_at=120.0),
        "web": CacheUse(cache="web", hits=2, partials=1, last_hit_at=110.0),
    }
    assert evidence.lookups == 8
    assert evidence.first_at == 50.0  # the oldest row kept, inside the window or not
    assert (evidence.since, evidence.until) == (100, 200)


def test_a_cache_with_only_partials_has_no_last_hit(store: ObservationStore) -> None:
    store.add([lookup(NGINX, PARTIAL, 100, cache="old")])
    assert store.evidence(since=0, until=1_000).caches == {
        "old": CacheUse(cache="old", hits=0, partials=1, last_hit_at=None)
    }


def test_start_groups_are_the_distinct_sets_of_images_started_together(
    store: ObservationStore,
) -> None:
    pods = {
        "pod-a": [NGINX, REDIS],
        "pod-b": [REDIS, NGINX],  # the same set, seen in another order
        "pod-c": [NGINX, REDIS, APP, NGINX],  # an image twice is still one member
        "pod-d": [APP],  # one image: nothing to keep together
    }
    store.add(
        [
            lookup(image, MISS, 100 + n, group=uid)
            for uid, images in pods.items()
            for n, image in enumerate(images)
        ]
    )

    evidence = store.evidence(since=0, until=1_000)

    assert evidence.groups == (
        StartGroup(images=frozenset({NGINX, REDIS}), count=2),
        StartGroup(images=frozenset({NGINX, REDIS, APP}), count=1),
    )
    assert {i.image: i.pods for i in evidence.images} == {APP: 2, NGINX: 3, REDIS: 3}


def test_a_group_that_grows_over_several_batches_and_a_reopen_is_one_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "observations.db"
    with ObservationStore(path) as store:
        store.add([lookup(NGINX, HIT, 100, cache="web", group="10.0.0.1#100000")])
        store.add([lookup(REDIS, MISS, 110, group="10.0.0.1#100000")])
    with ObservationStore(path) as store:  # nothing remembered: the group is read back
        store.add([lookup(NGINX, HIT, 120, cache="web", group="10.0.0.1#100000")])  # again
        store.add([lookup(APP, PARTIAL, 125, cache="web", group="10.0.0.1#100000")])
        store.add([lookup(REDIS, MISS, 130, group="10.0.0.1#130000")])  # another start
        evidence = store.evidence(since=0, until=1_000)
    assert evidence.groups == (StartGroup(images=frozenset({NGINX, REDIS, APP}), count=1),)
    assert {i.image: (i.pods, i.hits, i.misses) for i in evidence.images} == {
        APP: (1, 0, 0),
        NGINX: (1, 2, 0),  # two lookups of one start
        REDIS: (2, 0, 2),
    }
    # A group belongs to the window of its first lookup.
    assert store_groups(path, since=101, until=1_000) == ()


def store_groups(path: Path, *, since: float, until: float) -> tuple[StartGroup, ...]:
    with ObservationStore.open_readonly(path) as reader:
        return reader.evidence(since=since, until=until).groups


def test_the_latest_known_size_is_kept_and_an_unknown_one_does_not_erase_it(
    store: ObservationStore,
) -> None:
    store.add([lookup(NGINX, HIT, 1, cache="web", image_bytes=100)])
    store.add([lookup(NGINX, HIT, 2, cache="web", image_bytes=120)])
    store.add([lookup(NGINX, MISS, 3)])
    (image,) = store.evidence(since=0, until=10).images
    assert image.image_bytes == 120


def test_an_empty_store_and_an_empty_window(store: ObservationStore) -> None:
    empty = store.evidence(since=0, until=10)
    assert (empty.images, dict(empty.caches), empty.groups) == ((), {}, ())
    assert (empty.lookups, empty.first_at) == (0, None)
    store.add([lookup(NGINX, HIT, 100, cache="web")])
    elsewhere = store.evidence(since=0, until=10)
    assert (elsewhere.images, elsewhere.lookups, elsewhere.first_at) == ((), 0, 100.0)


def test_a_batch_is_stored_whole_or_not_at_all(store: ObservationStore) -> None:
    bad = Lookup(image=REDIS, result="sideways", at=2, source=LookupSource.POD)  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        store.add([lookup(NGINX, HIT, 1, cache="web"), bad])
    assert store.count() == 0
    store.add([lookup(NGINX, HIT, 1, cache="web")])  # ids handed out in the failed batch
    assert [i.image for i in store.evidence(since=0, until=10).images] == [NGINX]


# ------------------------------------------------------------------ retention


def test_prune_drops_lookups_older_than_the_retention(tmp_path: Path) -> None:
    now = 100 * DAY
    with ObservationStore(tmp_path / "o.db", retention_seconds=30 * DAY) as store:
        store.add(
            [
                lookup(NGINX, HIT, now - 31 * DAY, cache="old-cache"),
                lookup(REDIS, MISS, now - 30 * DAY - 1),
                lookup(REDIS, MISS, now - 29 * DAY),
                lookup(APP, HIT, now, cache="web"),
            ]
        )
        assert store.prune(now) == 2
        assert store.prune(now) == 0
        evidence = store.evidence(since=0, until=now)
        assert [i.image for i in evidence.images] == [REDIS, APP]
        assert evidence.first_at == now - 29 * DAY
        assert set(evidence.caches) == {"web"}
        # The image and cache no row names any more are gone from their tables too.
        db = sqlite3.connect(tmp_path / "o.db")
        try:
            refs = {row[0] for row in db.execute("SELECT ref FROM images")}
            names = {row[0] for row in db.execute("SELECT name FROM caches")}
        finally:
            db.close()
        assert (refs, names) == ({REDIS, APP}, {"web"})
        # Ids freed by the prune may be handed out again: names still come out right.
        store.add([lookup("docker.io/library/busybox:1", HIT, now, cache="new-cache")])
        again = store.evidence(since=0, until=now)
        assert [i.image for i in again.images] == ["docker.io/library/busybox:1", REDIS, APP]
        assert set(again.caches) == {"web", "new-cache"}


def test_prune_keeps_the_newest_rows_under_the_cap(tmp_path: Path) -> None:
    with ObservationStore(tmp_path / "o.db", max_rows=3) as store:
        # Written out of time order: the cap drops the oldest by time, not the first written.
        times = [50.0, 10.0, 40.0, 20.0, 30.0]
        store.add([lookup(f"docker.io/library/i{int(t)}:1", MISS, t) for t in times])
        assert store.prune(60.0) == 2
        assert store.count() == 3
        assert [i.first_at for i in store.evidence(since=0, until=100).images] == [30, 40, 50]


# ------------------------------------------------------------ opening the file


def test_a_read_only_open_of_a_missing_file_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "data" / "observations.db"
    with ObservationStore.open_readonly(path) as store:
        evidence = store.evidence(since=0, until=10)
        assert (evidence.images, evidence.lookups, evidence.first_at) == ((), 0, None)
    assert not path.exists()
    assert not path.parent.exists()


def test_a_read_only_open_reads_while_the_writer_is_open_and_cannot_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "observations.db"
    with ObservationStore(path) as writer:
        writer.add([lookup(NGINX, HIT, 1, cache="web")])
        with ObservationStore.open_readonly(path) as reader:
            assert reader.evidence(since=0, until=10).lookups == 1
            writer.add([lookup(NGINX, MISS, 2)])
            assert reader.evidence(since=0, until=10).lookups == 2
            with pytest.raises(ObservationStoreError, match="read-only"):
                reader.add([lookup(NGINX, MISS, 3)])


@pytest.mark.parametrize("readonly", [False, True], ids=["read-write", "read-only"])
def test_a_corrupt_file_is_a_clear_error(tmp_path: Path, readonly: bool) -> None:
    path = tmp_path / "observations.db"
    path.write_bytes(b"this is not an SQLite database, just some bytes" * 100)
    with pytest.raises(ObservationStoreError, match="not a readable observations database") as e:
        ObservationStore.open_readonly(path) if readonly else ObservationStore(path)
    assert str(path) in str(e.value)


def test_a_damaged_page_is_a_clear_error_when_read(tmp_path: Path) -> None:
    path = tmp_path / "observations.db"
    with ObservationStore(path) as store:
        store.add([lookup(f"docker.io/library/i{n}:1", MISS, n) for n in range(2_000)])
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page : 6 * page] = b"\xff" * (3 * page)  # table and index pages, not the header
    path.write_bytes(bytes(data))
    with (
        pytest.raises(ObservationStoreError, match="not a readable observations database"),
        ObservationStore.open_readonly(path) as reader,
    ):
        reader.evidence(since=0, until=10_000)


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "observations.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (text TEXT)")
    db.commit()
    db.close()
    with pytest.raises(ObservationStoreError, match="not gitsync's observations"):
        ObservationStore(path)
    with pytest.raises(ObservationStoreError, match="not gitsync's observations"):
        ObservationStore.open_readonly(path)


def test_a_newer_schema_is_refused_not_misread(tmp_path: Path) -> None:
    path = tmp_path / "observations.db"
    ObservationStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(ObservationStoreError, match="newer than this gitsync"):
        ObservationStore(path)


def test_the_file_is_in_wal_mode_with_its_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "observations.db"
    ObservationStore(path).close()
    ObservationStore(path).close()  # opening again changes nothing
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indices = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
    finally:
        db.close()
    assert {"lookups_at", "groups_sets"} <= indices
