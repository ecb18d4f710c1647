"""Making an ImageCache hold a spec: server-side apply, or create and merge patch without it.

Server-side apply (`application/apply-patch+yaml`, field manager `gitsync`,
`force=true`: Git wins over `kubectl edit` and `kubectl label --overwrite`).
Apply owns exactly the fields gitsync sends, so a field that Git drops (a
label, an annotation, the prune annotation, the pull secrets) is removed by
the API server unless another manager owns it too, and fields other
managers set (a label added by `kubectl label`, an operator's annotation)
are kept.

An API server that cannot apply (415, or 400/404/405 naming the patch type:
very old servers, some proxies) is remembered, and writes fall back to POST
create and JSON merge patch, with the record and the nulls that
`ownership.merge_patch_body` adds. Back on server-side apply, a write that
finds fields gitsync holds only through such merge patches, or the record,
removes those Git no longer has, and the record, with one merge patch after
the apply.
"""

from __future__ import annotations

import logging

from kubernetes.client.exceptions import ApiException

from gitsync.model import CacheSpec
from gitsync.providers.kubernetes.client import (
    GROUP,
    PLURAL,
    VERSION,
    ImageCacheApi,
    api_error_message,
    is_status,
    translate,
)
from gitsync.providers.kubernetes.ownership import (
    FIELD_MANAGER,
    Json,
    Written,
    check_ours,
    check_reserved,
    manifest,
    merge_patch_body,
    written_of,
)

log = logging.getLogger("gitsync.providers.kubernetes")

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
# Status codes with which an API server says it does not know the apply patch type.
_NO_APPLY_STATUSES = (400, 404, 405, 415)


class ImageCacheWriter:
    """Writes specs to ImageCaches, remembering a server that cannot apply.

    `_can_apply` is read and set without a lock: it only ever goes from True
    to False, so threads racing cost one more refused apply, never a wrong write.
    """

    def __init__(self, api: ImageCacheApi) -> None:
        self._api = api
        self._can_apply = True

    def write(self, spec: CacheSpec, *, owner: str, current: Json | Written | None) -> Json:
        """Make the object hold `spec`; `current` is it as last read (None: absent).

        Server-side apply, then, only if the object still holds fields gitsync
        wrote by merge patch (the fallback, or an older gitsync) that Git no
        longer has, one merge patch removing them.
        """
        check_reserved(spec)
        if self._can_apply:
            body = manifest(spec, owner=owner)
            try:
                applied = self._api.call(
                    self._api.custom.patch_cluster_custom_object,
                    GROUP,
                    VERSION,
                    PLURAL,
                    spec.name,
                    body,
                    field_manager=FIELD_MANAGER,
                    force=True,
                    _content_type=APPLY_PATCH,
                )
            except ApiException as exc:
                if not (exc.status in _NO_APPLY_STATUSES and names_apply(exc)):
                    raise translate(exc, what=f"apply ImageCache {spec.name!r}") from exc
                self._can_apply = False
                log.warning(
                    "the API server cannot apply (HTTP %s: %s); using create and merge patch",
                    exc.status,
                    api_error_message(exc),
                )
            else:
                leftovers = written_of(applied).removals(body, applying=True)
                if leftovers is None:
                    return applied
                return self._merge_patch(spec.name, leftovers)
        return self._create_or_patch(spec, owner=owner, current=current)

    def _create_or_patch(
        self, spec: CacheSpec, *, owner: str, current: Json | Written | None
    ) -> Json:
        what = f"write ImageCache {spec.name!r}"
        if current is None:
            try:
                return self._api.call(
                    self._api.custom.create_cluster_custom_object,
                    GROUP,
                    VERSION,
                    PLURAL,
                    manifest(spec, owner=owner, record=True),
                    field_manager=FIELD_MANAGER,
                    # This generated method ignores _content_type; the server would default to
                    # JSON, but say so.
                    _headers={"Content-Type": "application/json"},
                )
            except ApiException as exc:
                if not is_status(exc, 409):
                    raise translate(exc, what=what) from exc
            # Created meanwhile: patch it only if it is ours.
            current = self._api.get(spec.name)
            if current is not None:
                check_ours(current, spec.name, owner=owner)
        before = current if isinstance(current, Written) else written_of(current or {})
        return self._merge_patch(spec.name, merge_patch_body(spec, owner=owner, before=before))

    def _merge_patch(self, name: str, body: Json) -> Json:
        try:
            return self._api.call(
                self._api.custom.patch_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
                name,
                body,
                field_manager=FIELD_MANAGER,
                _content_type=MERGE_PATCH,
            )
        except ApiException as exc:
            raise translate(exc, what=f"write ImageCache {name!r}") from exc


def names_apply(exc: ApiException) -> bool:
    """A 400/404/405 only means 'cannot apply' when it names the patch type; 415 always does."""
    if exc.status == 415:
        return True
    text = f"{exc.reason} {exc.body}".lower()
    return "apply" in text or "patch type" in text or "media type" in text
