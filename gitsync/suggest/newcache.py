"""New caches for what is left unserved: which images share one, its name, its file, its size.

Images that start together share a cache (a pod uses one), so the leftovers
are grouped by the start groups that connect them; each group becomes one
`new-cache` suggestion with a DNS-1123 name that clashes with no cache and a
file in the directory that holds the most similar caches. Naming and placement
are their own concern because a reviewer sees them first in the diff, and a
clash would make the change invalid.
"""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict

from gitsync import pricing
from gitsync.imageref import ImageRef
from gitsync.model import DEFAULT_IMAGE_CACHE_SIZE_GIB, ActionKind, CacheSpec
from gitsync.suggest.context import _Context
from gitsync.suggest.model import Suggestion, SuggestionKind
from gitsync.suggest.sizes import _new_size
from gitsync.suggest.unserved import _Unserved
from gitsync.suggest.value import _evidence, _groups, _value
from gitsync.suggest.wording import _plural, _pulled, _short, _window

MAX_NAME_LENGTH = 63  # a DNS-1123 label, which is also a valid subdomain (metadata.name)
FALLBACK_NAME = "cache"

_NAME_RUN = re.compile(r"[^a-z0-9]+")


def _new_caches(ctx: _Context, leftover: list[_Unserved]) -> list[Suggestion]:
    by_image = {item.image: item for item in leftover}
    parent = {image: image for image in by_image}

    def find(image: str) -> str:
        while parent[image] != image:
            parent[image] = parent[parent[image]]
            image = parent[image]
        return image

    for group in ctx.evidence.groups:
        members = sorted(image for image in group.images if image in by_image)
        for other in members[1:]:
            a, b = find(members[0]), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    components: defaultdict[str, list[_Unserved]] = defaultdict(list)
    for image in sorted(by_image):
        components[find(image)].append(by_image[image])

    names = {cache.name for cache in ctx.caches} | set(ctx.copies)
    files = {cache.spec.location.path for cache in ctx.caches if cache.spec.location}
    result: list[Suggestion] = []
    for root in sorted(components):
        items = sorted(components[root], key=lambda u: (-u.count, u.image))
        name, file = _name_and_file(ctx, items, taken_names=names, taken_files=files)
        names.add(name)
        files.add(file)
        result.append(_new_cache(ctx, items, name=name, file=file))
    return result


def _new_cache(ctx: _Context, items: list[_Unserved], *, name: str, file: str) -> Suggestion:
    images = tuple(item.image for item in items)
    size, note = _new_size(ctx, name, images)
    spec = CacheSpec(
        name=name, images=images, image_cache_size_gib=size or DEFAULT_IMAGE_CACHE_SIZE_GIB
    )
    cost = pricing.action_cost(ActionKind.CREATE, desired=spec, observed=None, prices=ctx.prices)
    saved, timing = _value(ctx, images)
    pulls = sum(item.count for item in items)
    if len(items) == 1:
        (item,) = items
        what = f"{_short(item.image)} was pulled {_pulled(item.evidence)}"
        if item.image not in ctx.groups_of:
            why = "there is no start-group information for it, so it gets a cache of its own"
        else:
            why = (
                "no image it starts with is in a cache or missed often enough to join it,"
                " so it gets a cache of its own"
            )
    else:
        starts = sum(
            group.count
            for group in _groups(ctx, images)
            if sum(1 for image in group.images if image in images) > 1
        )
        what = (
            f"{len(items)} images ({', '.join(_short(i) for i in images)}) were pulled"
            f" {_plural(pulls, 'time')} with no cache holding them"
        )
        why = (
            f"they started together {_plural(starts, 'time')}, and a pod uses one cache,"
            " so they share one"
        )
    reason = f"In the last {_window(ctx)} {what}; {why}; a new cache {name} saves {timing(saved)}."
    return Suggestion(
        kind=SuggestionKind.NEW_CACHE,
        cache=name,
        reason=reason,
        evidence=_evidence(ctx, images),
        saved_seconds_per_day=saved,
        monthly_cost=cost.monthly,
        images=images,
        to_size_gib=size,
        size_note=note,
        file=file,
    )


def _name_and_file(
    ctx: _Context, items: list[_Unserved], *, taken_names: set[str], taken_files: set[str]
) -> tuple[str, str]:
    base = _dns_label(items[0].ref.repository.rsplit("/", 1)[-1])
    directory = _directory(ctx, [item.ref for item in items])
    suffix_number = 1
    while True:
        suffix = "" if suffix_number == 1 else f"-{suffix_number}"
        name = base[: MAX_NAME_LENGTH - len(suffix)].rstrip("-") + suffix
        file = posixpath.join(directory, f"{name}.yaml")
        if name not in taken_names and file not in taken_files:
            return name, file
        suffix_number += 1


def _dns_label(text: str) -> str:
    """A DNS-1123 label from a repository component: runs of other characters become '-'."""
    label = _NAME_RUN.sub("-", text.lower()).strip("-")[:MAX_NAME_LENGTH].rstrip("-")
    return label or FALLBACK_NAME


def _directory(ctx: _Context, refs: list[ImageRef]) -> str:
    """Where the repository keeps similar caches (the new-cache rule in the engine's docstring)."""
    if not ctx.files_in:
        return ""
    shared: dict[str, int] = {}  # directory -> leading components in common with a new image
    for ref in refs:
        parts = tuple(ref.name.split("/"))
        for length in range(1, len(parts) + 1):
            for directory in ctx.prefix_dirs.get(parts[:length], ()):
                shared[directory] = max(shared.get(directory, 0), length)
    files = ctx.files_in
    return min(files, key=lambda d: (-shared.get(d, 0), -len(files[d]), d))
