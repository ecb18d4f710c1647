"""The OCI image model: media types, platforms, descriptors, manifests and platform choice.

Why apart from the client: these are the rules of the image format, not of the
wire. The registry client, the pull, the mirror, the export and the size
lookup all need them, and none of them should have to repeat a media type or
reach into the HTTP client for a dataclass. Everything here is pure (bytes and
JSON in, values or `ManifestError` out; `resolve_manifest` gets an index's child
through the `fetch` its caller passes, from the registry, the store or a memo),
so unit tests pin it down without a server.

Manifests come in OCI and Docker v2 flavours, each as a single-platform
manifest or a multi-platform index (a Docker "manifest list"); Docker schema 1
is recognised only to be refused. An index is narrowed to one platform
(default linux/amd64) the way containerd compares them: `x86_64` is `amd64`,
`aarch64` is `arm64`, an arm64 without a variant is `v8`, and without a wanted
variant the architecture's default one is preferred.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gitsync.errors import PermanentError
from gitsync.imageref import ImageRef
from gitsync.providers.local.blobs import (
    DigestMismatchError,
    InvalidDigestError,
    SizeMismatchError,
    compute_digest,
    parse_digest,
)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT_MANIFESTS = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
# Layer media types by their compression, matched by suffix: OCI's
# `...layer.v1.tar+gzip` and Docker's `...rootfs.diff.tar.gzip` alike.
LAYER_GZIP_SUFFIXES = ("+gzip", ".tar.gzip", ".tar.gz")
LAYER_ZSTD_SUFFIXES = ("+zstd",)
LAYER_TAR_SUFFIXES = (".tar", ".v1.tar", ".rootfs.diff.tar")


# -- errors --------------------------------------------------------------------
# RegistryError is the base of the client's errors too; it lives here because a
# manifest that cannot be read is one of the things a registry can answer.


class RegistryError(PermanentError):
    """A registry refused a request in a way retrying cannot fix."""

    def __init__(self, message: str, *, registry: str, repository: str | None = None) -> None:
        super().__init__(message)
        self.registry = registry
        self.repository = repository


class ManifestError(RegistryError):
    """A manifest is malformed, of an unsupported type, or lacks the wanted platform."""


class PlatformNotFoundError(ManifestError):
    """An index has no manifest for the requested platform."""


# -- data ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Platform:
    """os/architecture[/variant], compared the way containerd normalises them."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(
                f"invalid platform {text!r}: write os/arch[/variant], e.g. linux/arm64"
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    def normalized(self) -> Platform:
        arch = _ARCH_ALIASES.get(self.architecture, self.architecture)
        variant = self.variant
        if arch == "arm64" and variant in (None, "v8", "8"):
            variant = "v8"
        elif arch == "arm" and variant in (None, "7"):
            variant = "v7"
        elif arch == "amd64" and variant in (None, "v1"):
            variant = None
        return Platform(self.os.lower(), arch, variant)


_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm"}
DEFAULT_PLATFORM = Platform("linux", "amd64")


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A content descriptor from a manifest: what to fetch and how big it must be."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest or index exactly as the registry served it, with its verified digest."""

    media_type: str
    digest: str
    data: bytes

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    """An image reference narrowed to one platform's manifest, ready to fetch."""

    reference: ImageRef
    manifest: Manifest
    index: Manifest | None
    platform: Platform
    config: Descriptor
    layers: tuple[Descriptor, ...]


# -- parsing (pure) ----------------------------------------------------------------


def media_type_of(data: bytes, content_type: str | None, where: str, registry: str) -> str:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ManifestError(f"{where} is not JSON", registry=registry) from exc
    if not isinstance(document, dict):
        raise ManifestError(f"{where} is not a JSON object", registry=registry)
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    header = (content_type or "").split(";")[0].strip()
    if header in INDEX_TYPES | MANIFEST_TYPES:
        return header
    # OCI allows omitting mediaType; the shape says which one it is.
    if "manifests" in document:
        return OCI_INDEX
    if "layers" in document:
        return OCI_MANIFEST
    return header or "application/octet-stream"


def load_manifest(data: bytes, *, digest: str, registry: str = "") -> Manifest:
    """A Manifest from bytes kept earlier (e.g. in the blob store), its digest rechecked."""
    algorithm, _ = parse_digest(digest)
    actual = compute_digest(data, algorithm)
    if actual != digest:
        raise DigestMismatchError(digest=digest, actual=actual, where=f"stored manifest {digest}")
    media_type = media_type_of(data, None, f"manifest {digest}", registry)
    if media_type not in INDEX_TYPES | MANIFEST_TYPES:
        raise ManifestError(
            f"manifest {digest} has media type {media_type!r}; expected an OCI or Docker v2"
            " manifest or index",
            registry=registry,
        )
    return Manifest(media_type=media_type, digest=digest, data=data)


def served_manifest(
    data: bytes,
    *,
    ref: ImageRef,
    reference: str,
    content_type: str | None,
    announced_digest: str | None,
    where: str,
) -> Manifest:
    """A manifest or index as a registry served it for `reference`, checked.

    Refused: Docker schema 1 and any type that is not an OCI or Docker v2
    manifest or index. Asked by digest, the bytes must hash to it; asked by tag,
    to the `Docker-Content-Digest` the registry announced, when it gave one.
    """
    media_type = media_type_of(data, content_type, where, ref.registry)
    if media_type in DOCKER_SCHEMA1:
        raise ManifestError(
            f"{where} is a Docker schema 1 manifest, which is deprecated and unsupported;"
            " push the image again with a current client",
            registry=ref.registry,
            repository=ref.repository,
        )
    if media_type not in INDEX_TYPES | MANIFEST_TYPES:
        raise ManifestError(
            f"{where} has media type {media_type!r}; expected an OCI or Docker v2 manifest"
            " or index",
            registry=ref.registry,
            repository=ref.repository,
        )
    if reference.startswith(("sha256:", "sha512:")):
        algorithm, _ = parse_digest(reference)
        actual = compute_digest(data, algorithm)
        if actual != reference:
            raise DigestMismatchError(digest=reference, actual=actual, where=where)
        digest = reference
    else:
        digest = compute_digest(data)
        header = announced_digest
        if header and header.startswith("sha256:") and header != digest:
            raise DigestMismatchError(
                digest=header, actual=digest, where=f"{where} (Docker-Content-Digest)"
            )
    return Manifest(media_type=media_type, digest=digest, data=data)


def parse_descriptor(raw: Any, *, where: str, registry: str) -> Descriptor:
    """A descriptor object from a manifest, checked for digest and size."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: a descriptor is not an object", registry=registry)
    digest, size, media_type = raw.get("digest"), raw.get("size"), raw.get("mediaType", "")
    if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
        raise ManifestError(f"{where}: descriptor lacks a digest or size", registry=registry)
    try:
        parse_digest(digest)
    except InvalidDigestError as exc:
        raise ManifestError(f"{where}: {exc}", registry=registry) from exc
    platform = None
    plat = raw.get("platform")
    if isinstance(plat, dict) and plat.get("os") and plat.get("architecture"):
        platform = Platform(str(plat["os"]), str(plat["architecture"]), plat.get("variant") or None)
    return Descriptor(media_type=str(media_type), digest=digest, size=size, platform=platform)


def parse_image_manifest(
    manifest: Manifest, *, registry: str, where: str
) -> tuple[Descriptor, tuple[Descriptor, ...]]:
    """Config and layer descriptors of an image manifest."""
    document = json.loads(manifest.data)
    if document.get("schemaVersion") != 2:
        raise ManifestError(f"{where}: schemaVersion must be 2", registry=registry)
    config = parse_descriptor(document.get("config"), where=f"{where} config", registry=registry)
    layers_raw = document.get("layers")
    if not isinstance(layers_raw, list):
        raise ManifestError(f"{where}: 'layers' must be a list", registry=registry)
    layers = tuple(
        parse_descriptor(item, where=f"{where} layer {i}", registry=registry)
        for i, item in enumerate(layers_raw)
    )
    return config, layers


def select_platform(
    manifests: list[Descriptor], wanted: Platform, *, registry: str, where: str
) -> Descriptor:
    """The index entry for `wanted`; without a variant, prefer the arch's default one."""
    target = wanted.normalized()
    candidates = [
        d
        for d in manifests
        if d.platform is not None
        and d.platform.normalized().os == target.os
        and d.platform.normalized().architecture == target.architecture
    ]
    if wanted.variant is not None:
        candidates = [d for d in candidates if d.platform and d.platform.normalized() == target]
    else:
        preferred = [d for d in candidates if d.platform and d.platform.normalized() == target]
        candidates = preferred or candidates
    if not candidates:
        available = ", ".join(sorted({str(d.platform) for d in manifests if d.platform})) or "none"
        raise PlatformNotFoundError(
            f"{where} has no manifest for platform {wanted}; available: {available}",
            registry=registry,
        )
    return candidates[0]


def resolve_manifest(
    ref: ImageRef,
    top: Manifest,
    *,
    platform: Platform,
    fetch: Callable[[str], Manifest],
) -> ResolvedImage:
    """Narrow a manifest or index to `platform`'s image; `fetch` gets a child by digest.

    The caller decides where a child comes from (the registry, the store, a memo);
    the child must have the size its index entry announced, and be no index itself.
    """
    index: Manifest | None = None
    manifest = top
    if top.is_index:
        index = top
        document = json.loads(top.data)
        entries = document.get("manifests")
        if not isinstance(entries, list):
            raise ManifestError(
                f"index {ref} ({top.digest}) has no 'manifests' list",
                registry=ref.registry,
                repository=ref.repository,
            )
        descriptors = [
            parse_descriptor(e, where=f"index {ref}", registry=ref.registry) for e in entries
        ]
        chosen = select_platform(
            descriptors, platform, registry=ref.registry, where=f"index {ref} ({top.digest})"
        )
        manifest = fetch(chosen.digest)
        if len(manifest.data) != chosen.size:
            raise SizeMismatchError(
                digest=chosen.digest,
                expected=chosen.size,
                actual=len(manifest.data),
                where=f"manifest {ref.name}@{chosen.digest}",
            )
        if manifest.is_index:
            raise ManifestError(
                f"index {ref} points to another index for {platform}; nested indexes are"
                " not supported",
                registry=ref.registry,
                repository=ref.repository,
            )
    config, layers = parse_image_manifest(
        manifest, registry=ref.registry, where=f"manifest {ref.name}@{manifest.digest}"
    )
    return ResolvedImage(
        reference=ref,
        manifest=manifest,
        index=index,
        platform=platform,
        config=config,
        layers=layers,
    )
