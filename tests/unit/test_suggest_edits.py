"""`apply_suggestions`: each kind changes only the bytes it must, or nothing and says why.

"Only the bytes it must" is checked by diffing the old and new text line by
line (line ends included): the lines the diff removes and adds must be exactly
the ones the edit is about, so every other line, its comments, quoting and
CRLF, is byte-identical. The results are then loaded with gitsync's own
loader, and a written tree is run through `gitsync validate`.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gitsync.imageref import normalize, parse
from gitsync.model import SourceLocation
from gitsync.specs import load_repository
from gitsync.suggest.edits import EditResult, apply_suggestions
from gitsync.suggest.model import Suggestion, SuggestionEvidence, SuggestionKind
from gitsync.suggest.validation import validate_edited

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "cache-repo"
CORPUS = ROOT / "tests" / "data" / "specs" / "valid"


def suggestion(kind: SuggestionKind, cache: str, file: str | None, **fields: Any) -> Suggestion:
    return Suggestion(
        kind=kind,
        cache=cache,
        reason="test",
        evidence=SuggestionEvidence(misses=3),
        saved_seconds_per_day=1.0,
        monthly_cost=0.5,
        file=file,
        **fields,
    )


def bump(cache: str, file: str, old: str, new: str) -> Suggestion:
    return suggestion(
        SuggestionKind.BUMP_TAG,
        cache,
        file,
        from_images=(normalize(old),),
        to_images=(normalize(new),),
    )


def add(cache: str, file: str, *images: str) -> Suggestion:
    return suggestion(
        SuggestionKind.ADD_IMAGE, cache, file, images=tuple(normalize(i) for i in images)
    )


def resize(cache: str, file: str, old: int | None, new: int | None) -> Suggestion:
    return suggestion(SuggestionKind.RESIZE, cache, file, from_size_gib=old, to_size_gib=new)


def remove(cache: str, file: str) -> Suggestion:
    return suggestion(SuggestionKind.REMOVE_CACHE, cache, file)


def new_cache(cache: str, file: str | None, *images: str, size: int | None = 30) -> Suggestion:
    return suggestion(
        SuggestionKind.NEW_CACHE,
        cache,
        file,
        images=tuple(normalize(i) for i in images),
        to_size_gib=size,
    )


def diff(old: str, new: str) -> tuple[list[str], list[str]]:
    """(lines removed, lines added), line ends included; every other line is identical."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    removed: list[str] = []
    added: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            removed += a[i1:i2]
            added += b[j1:j2]
    assert "".join(a) == old
    assert "".join(b) == new
    return removed, added


def one(result: EditResult) -> str:
    """The one changed file's new text; every suggestion applied."""
    assert [o.detail for o in result.skipped] == []
    (text,) = result.changes.values()
    assert text is not None
    return text


def loads_clean(tmp_path: Path, files: dict[str, str]) -> None:
    """The texts, written as a tree, load with gitsync's loader without an error."""
    for name, text in files.items():
        target = tmp_path / "tree" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text.encode())
    result = load_repository([tmp_path / "tree"], root=tmp_path / "tree")
    assert result.errors == ()


WEB = """\
# Front-end caches. Reviewed by the web team.
apiVersion: eks.cloud.tencent.com/v1
kind: ImageCache
metadata:
  name: web   # the public site
spec:
  images:
    - nginx:1.27   # gitsync: semver=~1.27
    - 'caddy:2.8.4-alpine'
    - "docker.io/library/busybox:1.36.1"

    - ccr.ccs.tencentyun.com/team/api@sha256:{digest}
  imageCacheSize: 30  # GiB, measured
  retentionDays: 7
""".format(digest="0" * 63 + "1")


# ---------------------------------------------------------------- bump-tag


def test_bump_changes_only_the_tag_and_keeps_the_marker_and_the_spelling() -> None:
    result = apply_suggestions(
        {"web.yaml": WEB}, [bump("web", "web.yaml", "nginx:1.27", "nginx:1.28")]
    )

    assert diff(WEB, one(result)) == (
        ["    - nginx:1.27   # gitsync: semver=~1.27\n"],
        ["    - nginx:1.28   # gitsync: semver=~1.27\n"],
    )
    (outcome,) = result.outcomes
    assert outcome.applied
    assert outcome.path == "web.yaml"
    assert outcome.detail.startswith("web.yaml:8: ")


@pytest.mark.parametrize(
    ("old", "new", "line_before", "line_after"),
    [
        (
            "caddy:2.8.4-alpine",
            "caddy:2.9.0",
            "    - 'caddy:2.8.4-alpine'\n",
            "    - 'caddy:2.9.0'\n",
        ),
        (
            "busybox:1.36.1",
            "busybox:1.37.0",
            '    - "docker.io/library/busybox:1.36.1"\n',
            '    - "docker.io/library/busybox:1.37.0"\n',
        ),
        (
            "ccr.ccs.tencentyun.com/team/api@sha256:" + "0" * 63 + "1",
            "ccr.ccs.tencentyun.com/team/api:1.5.0",
            "    - ccr.ccs.tencentyun.com/team/api@sha256:" + "0" * 63 + "1\n",
            "    - ccr.ccs.tencentyun.com/team/api:1.5.0\n",
        ),
    ],
)
def test_bump_keeps_quoting_and_the_registry_as_written(
    old: str, new: str, line_before: str, line_after: str
) -> None:
    text = one(apply_suggestions({"web.yaml": WEB}, [bump("web", "web.yaml", old, new)]))
    assert diff(WEB, text) == ([line_before], [line_after])


def test_bump_of_a_crlf_file_keeps_every_line_end() -> None:
    crlf = WEB.replace("\n", "\r\n")
    text = one(
        apply_suggestions({"web.yaml": crlf}, [bump("web", "web.yaml", "nginx:1.27", "nginx:1.28")])
    )
    assert diff(crlf, text) == (
        ["    - nginx:1.27   # gitsync: semver=~1.27\r\n"],
        ["    - nginx:1.28   # gitsync: semver=~1.27\r\n"],
    )
    assert text.count("\r\n") == text.count("\n")


def test_bump_of_an_image_the_cache_no_longer_holds_changes_nothing() -> None:
    result = apply_suggestions(
        {"web.yaml": WEB}, [bump("web", "web.yaml", "redis:7.2", "redis:7.4")]
    )
    assert result.changes == {}
    (outcome,) = result.skipped
    assert outcome.detail == "web.yaml:7: cache web no longer holds docker.io/library/redis:7.2"


# ---------------------------------------------------------------- add-image


def test_add_to_a_block_list_follows_the_siblings() -> None:
    result = apply_suggestions(
        {"web.yaml": WEB}, [add("web", "web.yaml", "redis:7.4", "quay.io/org/tool:1")]
    )
    removed, added = diff(WEB, one(result))
    assert removed == []
    # Quoting is mixed here, so plain; familiar names, since the file writes them.
    assert added == ["    - redis:7.4\n", "    - quay.io/org/tool:1\n"]
    assert one(result).index("quay.io") > one(result).index("api@sha256")


def test_add_mirrors_indentless_dashes_wide_gaps_and_one_quoting_style() -> None:
    text = (
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n    name: deep\n"
        "spec:\n    images:\n    -   'docker.io/library/alpine:3.20'\n"
        "    -   'docker.io/library/debian:12'   # base\n    imageCacheSize: 20\n"
    )
    new = one(apply_suggestions({"c.yaml": text}, [add("deep", "c.yaml", "redis:7.4")]))
    # The file writes docker.io/ out in full, so the new image is too.
    assert diff(text, new) == ([], ["    -   'docker.io/library/redis:7.4'\n"])
    assert new.index("redis") < new.index("imageCacheSize")


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (
            "  images: [alpine:3.19, busybox:1.36]\n",
            "  images: [alpine:3.19, busybox:1.36, redis:7.4]\n",
        ),
        ("  images: [alpine:3.19]\n", "  images: [alpine:3.19, redis:7.4]\n"),
        (
            '  images: ["alpine:3.19",   "busybox:1.36"]\n',
            '  images: ["alpine:3.19",   "busybox:1.36",   "redis:7.4"]\n',
        ),
        ("  images: []\n", "  images: [redis:7.4]\n"),
    ],
)
def test_add_to_a_flow_list_goes_before_the_bracket(before: str, after: str) -> None:
    text = (
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata: {name: f}\n"
        f"spec:\n{before}  imageCacheSize: 20 # size\n"
    )
    new = one(apply_suggestions({"f.yaml": text}, [add("f", "f.yaml", "redis:7.4")]))
    assert diff(text, new) == ([before], [after])


def test_add_to_a_flow_list_over_several_lines_keeps_one_item_per_line() -> None:
    text = (
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata: {name: f}\nspec:\n"
        "  images: [\n    alpine:3.19,  # the base\n    busybox:1.36\n  ]\n"
    )
    new = one(apply_suggestions({"f.yaml": text}, [add("f", "f.yaml", "redis:7.4")]))
    assert diff(text, new) == (["    busybox:1.36\n"], ["    busybox:1.36,\n", "    redis:7.4\n"])


def test_add_at_the_end_of_a_file_without_a_final_newline() -> None:
    text = WEB.split("  imageCacheSize", maxsplit=1)[0].rstrip("\n")
    new = one(apply_suggestions({"web.yaml": text}, [add("web", "web.yaml", "redis:7.4")]))
    assert new == text + "\n    - redis:7.4"


def test_add_of_images_already_held_changes_nothing() -> None:
    result = apply_suggestions(
        {"web.yaml": WEB}, [add("web", "web.yaml", "docker.io/library/nginx:1.27")]
    )
    assert result.changes == {}
    assert result.skipped[0].detail.startswith("web.yaml:7: cache web already holds")


# ---------------------------------------------------------------- resize


def test_resize_replaces_the_number_and_keeps_its_comment() -> None:
    text = one(apply_suggestions({"web.yaml": WEB}, [resize("web", "web.yaml", 30, 45)]))
    assert diff(WEB, text) == (
        ["  imageCacheSize: 30  # GiB, measured\n"],
        ["  imageCacheSize: 45  # GiB, measured\n"],
    )


def test_resize_adds_the_key_after_the_images_when_it_is_absent() -> None:
    text = WEB.replace("  imageCacheSize: 30  # GiB, measured\n", "")
    new = one(apply_suggestions({"web.yaml": text}, [resize("web", "web.yaml", 20, 40)]))
    assert diff(text, new) == ([], ["  imageCacheSize: 40\n"])
    assert new.index("imageCacheSize: 40") < new.index("retentionDays")
    assert new.index("imageCacheSize: 40") > new.index("api@sha256")


def test_resize_adds_the_key_to_a_flow_spec() -> None:
    source = (CORPUS / "defaults.yml").read_text()
    new = one(apply_suggestions({"d.yml": source}, [resize("defaults-only", "d.yml", 20, 25)]))
    assert diff(source, new) == (
        ["spec: {images: [traefik:v3.0.0]}\n"],
        ["spec: {images: [traefik:v3.0.0], imageCacheSize: 25}\n"],
    )


def test_resize_reads_the_size_as_the_loader_does() -> None:
    source = (CORPUS / "anchors.yaml").read_text()
    new = one(apply_suggestions({"a.yaml": source}, [resize("anchored", "a.yaml", 32, 50)]))
    assert diff(source, new) == (["  imageCacheSize: 0x20\n"], ["  imageCacheSize: 50\n"])


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (20, 40, "web.yaml:13: imageCacheSize of cache web is now 30, not 20 as the suggestion"),
        (30, None, "cache web: no size proposed (registry down)"),
    ],
)
def test_resize_that_does_not_fit_the_file_changes_nothing(
    old: int, new: int | None, reason: str
) -> None:
    stale = suggestion(
        SuggestionKind.RESIZE,
        "web",
        "web.yaml",
        from_size_gib=old,
        to_size_gib=new,
        size_note="registry down",
    )
    result = apply_suggestions({"web.yaml": WEB}, [stale])
    assert result.changes == {}
    assert result.skipped[0].detail.startswith(reason)


# ---------------------------------------------------------------- remove-cache

THREE = """\
# yaml-language-server: $schema=../schemas/imagecache.schema.json
# Three caches for the shop.
apiVersion: eks.cloud.tencent.com/v1
kind: ImageCache
metadata:
  name: one
spec:
  images: [alpine:3.19]

# The second cache: checkout.
# Owned by the payments team.
---
apiVersion: eks.cloud.tencent.com/v1
kind: ImageCache
metadata:
  name: two
spec:
  images: [busybox:1.36]
  # - redis:7.2   (kept out for now)
---
# The third cache.
apiVersion: eks.cloud.tencent.com/v1
kind: ImageCache
metadata:
  name: three
spec:
  images: [debian:12]
"""


def test_remove_takes_the_document_its_separator_and_the_comment_block_above_it() -> None:
    result = apply_suggestions({"shop.yaml": THREE}, [remove("two", "shop.yaml")])
    removed, added = diff(THREE, one(result))
    assert added == []
    assert "".join(removed) == (
        "# The second cache: checkout.\n# Owned by the payments team.\n---\n"
        "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n  name: two\n"
        "spec:\n  images: [busybox:1.36]\n  # - redis:7.2   (kept out for now)\n"
    )
    assert result.outcomes[0].detail == "shop.yaml:12: cache two removed"


def test_remove_of_the_first_document_keeps_the_file_header() -> None:
    new = one(apply_suggestions({"shop.yaml": THREE}, [remove("one", "shop.yaml")]))
    assert new.startswith(
        "# yaml-language-server: $schema=../schemas/imagecache.schema.json\n"
        "# Three caches for the shop.\n# The second cache: checkout.\n"
    )
    removed, added = diff(THREE, new)
    assert added == []
    assert "  name: one\n" in removed
    assert len(removed) == 7


def test_remove_of_the_last_document_leaves_no_blank_tail() -> None:
    new = one(apply_suggestions({"shop.yaml": THREE}, [remove("three", "shop.yaml")]))
    assert new.endswith("  # - redis:7.2   (kept out for now)\n")
    assert THREE.startswith(new)


def test_a_comment_glued_to_the_previous_document_stays_with_it() -> None:
    glued = THREE.replace("\n# The second cache", "# The second cache")
    new = one(apply_suggestions({"shop.yaml": glued}, [remove("two", "shop.yaml")]))
    assert "# The second cache: checkout.\n# Owned by the payments team.\n---\n# The third" in new


def test_remove_of_the_only_document_deletes_the_file_and_an_empty_trailing_one_too() -> None:
    single = (EXAMPLES / "caches" / "cloud-doc-basic.yaml").read_text()
    for text in (single, single + "---\n"):
        result = apply_suggestions({"c.yaml": text}, [remove("imagecache-sample", "c.yaml")])
        assert result.changes == {"c.yaml": None}
        assert result.outcomes[0].detail.startswith("c.yaml: deleted")


def test_remove_from_a_crlf_file_and_with_an_end_marker() -> None:
    source = (CORPUS / "multi-doc.yaml").read_text().replace("\n", "\r\n")
    new = one(apply_suggestions({"m.yaml": source}, [remove("multi-three", "m.yaml")]))
    assert new.endswith("  imageCacheSize: 40\r\n")
    new = one(apply_suggestions({"m.yaml": source}, [remove("multi-two", "m.yaml")]))
    assert "multi-two" not in new
    assert new.endswith("...\r\n")
    two = (
        "---\r\napiVersion: eks.cloud.tencent.com/v1\r\nkind: ImageCache\r\nmetadata:\r\n"
        "  name: multi-two\r\nspec:\r\n  images: [alpine:3.19]\r\n  imageCacheSize: 40\r\n"
    )
    assert source.count(two) == 1
    assert new == source.replace(two, "")


def test_remove_of_a_list_item_is_left_to_a_person() -> None:
    source = (CORPUS / "kubectl" / "list.yaml").read_text()
    result = apply_suggestions({"l.yaml": source}, [remove("listed-two", "l.yaml")])
    assert result.changes == {}
    assert "is an item of a List document" in result.skipped[0].detail


# ---------------------------------------------------------------- new-cache


def test_new_cache_mirrors_the_repository_and_never_overwrites() -> None:
    style = {
        "caches/a.yaml": (
            "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n    name: a\n"
            "spec:\n    images:\n    - nginx:1.27\n    retentionDays: 14\n"
        ),
        "caches/b.yaml": (
            "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n    name: b\n"
            "spec:\n    images:\n    - redis:7.2\n    retentionDays: 14\n"
        ),
    }
    result = apply_suggestions(
        {},
        [new_cache("api", "caches/b.yaml", "ghcr.io/org/api:1.4", "docker.io/library/node:20")],
        style_from=style,
        existing_paths=["caches/b-2.yaml"],
    )
    assert result.changes == {
        "caches/b-3.yaml": (
            "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n    name: api\n"
            "spec:\n    images:\n    - ghcr.io/org/api:1.4\n    - node:20\n"
            "    imageCacheSize: 30\n    retentionDays: 14\n"
        )
    }
    assert result.outcomes[0].path == "caches/b-3.yaml"
    assert "caches/b.yaml exists" in result.outcomes[0].detail


def test_new_cache_in_an_empty_repository_uses_the_examples_layout() -> None:
    result = apply_suggestions({}, [new_cache("api", "api.yaml", "nginx:1.27", size=None)])
    assert result.changes == {
        "api.yaml": (
            "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata:\n  name: api\n"
            "spec:\n  images:\n    - nginx:1.27\n"
        )
    }


def test_new_cache_whose_name_is_taken_or_that_names_no_file_is_not_written() -> None:
    result = apply_suggestions(
        {"web.yaml": WEB},
        [new_cache("web", "other.yaml", "redis:7.4"), new_cache("x", None, "redis:7.4")],
    )
    assert result.changes == {}
    assert [o.detail for o in result.skipped] == [
        "web.yaml:2: a cache named web exists",
        "new cache x: the suggestion names no file",
    ]


# ---------------------------------------------------------------- what cannot be edited


def test_a_cache_that_is_gone_is_reported_with_its_file() -> None:
    result = apply_suggestions(
        {"web.yaml": WEB},
        [
            bump("renamed", "web.yaml", "nginx:1.27", "nginx:1.28"),
            bump("web", "missing.yaml", "nginx:1.27", "nginx:1.28"),
        ],
    )
    assert result.changes == {}
    assert [o.detail for o in result.skipped] == [
        "web.yaml: no ImageCache named 'renamed' (renamed, moved or removed since the "
        "suggestion was made?)",
        "missing.yaml: not read, so cache web cannot be edited there",
    ]


def test_the_file_of_a_location_is_used_when_the_suggestion_names_none() -> None:
    located = suggestion(
        SuggestionKind.RESIZE,
        "web",
        None,
        from_size_gib=30,
        to_size_gib=31,
        location=SourceLocation("web.yaml", 5, 9),
    )
    assert "imageCacheSize: 31  # GiB" in one(apply_suggestions({"web.yaml": WEB}, [located]))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\n"
            "metadata: {name: web, annotations: {a: &img 'nginx:1.27'}}\nspec:\n"
            "  images:\n    - *img\n",
            "f.yaml:3: an image of cache 'web' is not a plain scalar",
        ),
        (
            "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata: {name: web}\n"
            "spec:\n  images:\n    - &i nginx:1.27\n    - redis:7\n  x: [*i]\n",
            "f.yaml:6: an image of cache 'web' is not a plain scalar",
        ),
        (
            "apiVersion: eks.cloud.tencent.com/v1\nkind: ImageCache\nmetadata: {name: web}\n"
            "spec:\n  images:\n    - >-\n      nginx:1.27\n",
            "f.yaml:6: 'nginx:1.27' is written over several lines",
        ),
        ("a: [\n", "f.yaml:2: not valid YAML"),
        ("a: 1\rb: 2\n", "f.yaml:1: a line break other than LF or CRLF"),
    ],
)
def test_what_cannot_be_edited_safely_is_left_alone(text: str, reason: str) -> None:
    result = apply_suggestions(
        {"f.yaml": text}, [bump("web", "f.yaml", "nginx:1.27", "nginx:1.28")]
    )
    assert result.changes == {}
    assert result.skipped[0].detail.startswith(reason)


def test_suggestions_apply_in_turn_and_a_failed_one_changes_nothing() -> None:
    result = apply_suggestions(
        {"web.yaml": WEB, "shop.yaml": THREE},
        [
            bump("web", "web.yaml", "nginx:1.27", "nginx:1.28"),
            bump("web", "web.yaml", "nginx:1.28", "nginx:1.29"),
            add("web", "web.yaml", "redis:7.4"),
            resize("web", "web.yaml", 99, 100),  # stale: skipped
            remove("two", "shop.yaml"),
            add("two", "shop.yaml", "redis:7.4"),  # gone by then: skipped
        ],
    )
    assert [o.applied for o in result.outcomes] == [True, True, True, False, True, False]
    removed, added = diff(WEB, result.changes["web.yaml"] or "")
    assert removed == ["    - nginx:1.27   # gitsync: semver=~1.27\n"]
    assert added == ["    - nginx:1.29   # gitsync: semver=~1.27\n", "    - redis:7.4\n"]
    assert set(result.changes) == {"web.yaml", "shop.yaml"}


# ---------------------------------------------------------------- the whole corpus, validated


def _corpus_caches() -> list[tuple[str, str, str]]:
    loaded = load_repository([CORPUS, EXAMPLES], root=ROOT)
    return [
        (c.location.path, c.name, image)
        for c in loaded.caches
        if c.location is not None
        for image in c.images
    ]


def test_every_image_of_the_corpus_bumps_with_one_line_changed(tmp_path: Path) -> None:
    """Every layout the validator accepts: one line changes per bump, and it still loads."""
    bumped = 0
    for path, name, image in _corpus_caches():
        text = (ROOT / path).read_text()
        new_tag = "9.9.9-gitsync"
        target = f"{parse(image).name}:{new_tag}"
        result = apply_suggestions({path: text}, [bump(name, path, image, target)])
        if result.skipped:
            assert "is written as an alias" in result.skipped[0].detail, (path, image)
            continue
        removed, added = diff(text, one(result))
        assert len(removed) == len(added) == 1, (path, image)
        assert new_tag in added[0]
        assert removed[0].replace(removed[0].strip(), "") == added[0].replace(added[0].strip(), "")
        bumped += 1
        loads_clean(tmp_path / str(bumped), {path: one(result)})
    assert bumped >= 30


def _caches_of(tmp_path: Path, path: str, text: str | None) -> dict[str, tuple[Any, ...]]:
    """The caches a file holds, by name, as the loader reads them (it must load clean)."""
    folder = tmp_path / f"load-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    if text is not None:
        (folder / Path(path).name).write_bytes(text.encode())
    result = load_repository([folder], root=folder)
    assert result.errors == (), (path, result.errors)
    return {
        c.name: (tuple(normalize(i) for i in c.images), c.image_cache_size_gib, c.retention_days)
        for c in result.caches
    }


def test_every_cache_of_the_corpus_takes_each_kind(tmp_path: Path) -> None:
    """Add, resize and remove on every layout: exactly the intended change, and it loads."""
    by_file: dict[str, list[str]] = {}
    for path, name, _ in _corpus_caches():
        by_file.setdefault(path, [])
        if name not in by_file[path]:
            by_file[path].append(name)
    lists = 0
    for path, names in by_file.items():
        text = (ROOT / path).read_text()
        before = _caches_of(tmp_path, path, text)
        for name in names:
            images, size, days = before[name]
            added = apply_suggestions({path: text}, [add(name, path, "zot:2.1.0")])
            assert _caches_of(tmp_path, path, one(added))[name] == (
                (*images, "docker.io/library/zot:2.1.0"),
                size,
                days,
            )
            resized = apply_suggestions({path: text}, [resize(name, path, size, 77)])
            assert _caches_of(tmp_path, path, one(resized))[name] == (images, 77, days)
            removed = apply_suggestions({path: text}, [remove(name, path)])
            if removed.skipped:
                assert "is an item of a List document" in removed.skipped[0].detail
                lists += 1
                continue
            (after,) = removed.changes.values()
            assert _caches_of(tmp_path, path, after) == {
                n: c for n, c in before.items() if n != name
            }
    assert lists == 2  # kubectl/list.yaml's two items


def test_edited_examples_pass_gitsync_validate(tmp_path: Path) -> None:
    tree = tmp_path / "repo"
    shutil.copytree(EXAMPLES, tree)
    files = {p.relative_to(tree).as_posix(): p.read_text() for p in tree.rglob("*.yaml")}
    result = apply_suggestions(
        files,
        [
            bump(
                "web-frontend",
                "caches/teams/web.yaml",
                "nginx:1.27.2-alpine",
                "nginx:1.28.0-alpine",
            ),
            add("web-sidecars", "caches/teams/web.yaml", "redis:7.4.1-alpine"),
            resize("platform-base", "caches/platform/base-images.yaml", 20, 40),
            remove("imagecache-sample", "caches/cloud-doc-basic.yaml"),
            new_cache("checkout", "caches/teams/checkout.yaml", "ghcr.io/shop/checkout:2.0.1"),
        ],
        existing_paths=[p.relative_to(tree).as_posix() for p in tree.rglob("*")],
    )
    assert result.skipped == ()
    assert result.changes["caches/cloud-doc-basic.yaml"] is None
    checked = validate_edited(root=tree, changes=result.changes, paths=["caches"])
    assert checked.errors == ()
    assert {c.name for c in checked.caches} >= {"checkout", "web-frontend"}

    for name, text in result.changes.items():
        if text is None:
            (tree / name).unlink()
        else:
            (tree / name).write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "gitsync", "validate", "caches"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    web = (tree / "caches/teams/web.yaml").read_text()
    assert "# Two caches in one file" in web
    assert "nginx:1.28.0-alpine" in web


def test_validate_edited_reports_what_the_edit_broke(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(WEB)
    (tmp_path / "notes.txt").write_text("not copied")
    os.mkfifo(tmp_path / "pipe.yaml")  # copying it would block
    clash = WEB.replace("name: web ", "name: other ").replace("nginx:1.27", "nginx:1.28")
    checked = validate_edited(root=tmp_path, changes={"b.yaml": clash.replace("other", "web")})
    assert [d.rule for d in checked.errors] == ["duplicate-name"]
    assert checked.errors[0].location.path == "b.yaml"
    assert (tmp_path / "a.yaml").read_text() == WEB
    assert not (tmp_path / "b.yaml").exists()
