"""The `Provider` protocol: the one interface between the reconciler and where caches live.

A provider does I/O and nothing else: it translates its backend (an on-disk
store, Kubernetes objects, the TKE API) into `ObservedCache` records and carries
out single actions. Deciding *what* to do is the planner's job.

Every call is idempotent or checked, so a crash at any point converges on the
next pass without duplicates: `create` first records an owned cache by name,
then builds it; `observe` reports an interrupted build as failed, and the
planner rebuilds it.

Errors follow `gitsync.errors`: `TemporaryError` (retry with backoff) or
`PermanentError` (report; retrying the same spec fails the same way). A failing
cache never blocks the others: calls are per cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Protocol, runtime_checkable

from gitsync.model import (
    EIP_FIELD,
    SPEC_FIELDS,
    CacheSpec,
    ObservedCache,
    ObservedState,
    ProviderFields,
)

# What each backend keeps of a spec and can change in place (see `ProviderFields`).
# Every provider declares it as its `fields` and returns it in each `ObservedState`.
#
# The local store keeps the classic fields only: labels, annotations and security
# groups mean nothing to a pull on this machine, so a change of them alone is no
# change there (nothing to rebuild).
LOCAL_FIELDS: Final = ProviderFields()
# The operator takes the whole object: every field, changed in place. The EIP
# annotation is compared as one of the annotations, as written. The object's status has
# no digests: a moved tag is followed by pinning it in spec.images, which the operator
# rebuilds for (see `gitsync.digests`).
KUBERNETES_FIELDS: Final = ProviderFields(
    kept=SPEC_FIELDS - {EIP_FIELD}, updatable=SPEC_FIELDS - {EIP_FIELD}, pins_digests=True
)


@runtime_checkable
class Provider(Protocol):
    """Where caches live. Implementations: local, kubernetes, tencentcloud.

    Each also has a `fields: ProviderFields` attribute, returned in every
    `ObservedState` it observes, so the planner compares only what the
    provider keeps and recreates what it cannot change in place.
    """

    name: str

    def observe(self) -> ObservedState:
        """Every cache the backend holds, owned or not, with status and events."""
        ...

    def create(self, spec: CacheSpec, *, owner: str) -> ObservedCache:
        """Build a new cache for `spec`, marked as owned by `owner`."""
        ...

    def update(self, spec: CacheSpec, current: ObservedCache) -> ObservedCache:
        """Change an owned cache to `spec`; while it rebuilds the old content still serves."""
        ...

    def delete(self, current: ObservedCache) -> None:
        """Remove an owned cache; deleting one that is already gone is not an error."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


@runtime_checkable
class LocalView(Protocol):
    """Providers whose current caches can be read without remote calls (the local store).

    The daemon's status API and metrics use it to show changes made between passes
    (a pull through the mirror updating last-matched, say); other providers are
    shown as of their last observation.
    """

    def current(self) -> tuple[ObservedCache, ...]:
        """The caches as stored right now; cheap enough to call on every scrape."""
        ...

    def touch_matched(self, cache_id: str) -> None:
        """Record that a consumer just used this cache."""
        ...


# ------------------------------------------------------------------ capabilities
#
# What only some backends can do. The wiring and the commands ask
# `isinstance(innermost(provider), Capability)` instead of naming a provider
# class, so a backend that gains a capability needs no change outside itself.


@runtime_checkable
class HoldsImages(Protocol):
    """Providers that keep the images' content on this machine (the local store).

    The daemon serves it as a read-only `/v2/` registry mirror and `gitsync
    export` copies it out; both live in `providers.local`, which knows the
    store's layout (`blobs`, `state`, `leases`).
    """

    @property
    def blobs(self) -> Any: ...

    @property
    def state(self) -> Any: ...


class GcSummary(Protocol):
    """What a garbage collection did, as `gitsync gc` reports it."""

    @property
    def removed_blobs(self) -> int: ...

    @property
    def freed_bytes(self) -> int: ...

    @property
    def kept_blobs(self) -> int: ...

    @property
    def leased_blobs(self) -> int: ...

    @property
    def removed_temp_files(self) -> int: ...

    @property
    def dropped_leases(self) -> int: ...


@runtime_checkable
class CollectsGarbage(Protocol):
    """Providers that keep blobs of their own, which outlive the caches that used them."""

    def gc(self, *, grace_seconds: float = 0.0) -> GcSummary:
        """Drop what no snapshot references and no running pull holds."""
        ...


@runtime_checkable
class SuggestsCache(Protocol):
    """Providers whose backend picks a cache for a pod itself (TKE's GetMostSuitableImageCache)."""

    def most_suitable(self, images: Sequence[str]) -> tuple[str | None, str]:
        """(cache id or None, a reason a human reads) for a pod with `images`."""
        ...


@runtime_checkable
class Wrapper(Protocol):
    """A provider that adds to another and forwards the rest (`snapshots.SnapshotChecked`)."""

    @property
    def provider(self) -> Provider:
        """The wrapped provider."""
        ...


def innermost(provider: Provider) -> Provider:
    """The provider under any wrappers: the one whose capabilities count.

    A wrapper forwards what it does not override through `__getattr__`, but
    from Python 3.12 on `isinstance` against a Protocol looks attributes up
    statically and would not see them; unwrapping works on every version.
    """
    while isinstance(provider, Wrapper):
        provider = provider.provider
    return provider
