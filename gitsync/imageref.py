"""Container image references, parsed and normalised the way docker does it.

Specs name images the way people type them (`nginx`, `team/api:1`,
`registry.example.com:5000/x@sha256:...`), but planning, matching and the
providers must agree on when two spellings mean the same image. So every
reference goes through one parser that follows the distribution reference
grammar (github.com/distribution/reference, reference.go and normalize.go) and
produces one canonical string: `nginx` and `docker.io/library/nginx:latest` are
the same image, `nginx:1.27` and `Nginx:1.27` are not both valid.

Where this module departs from docker, it is on purpose:

* digests follow the OCI image-spec: the algorithm is lower-case, the encoded
  part lower-case hex, exactly 64 characters for sha256, 96 for sha384 and 128
  for sha512. Other algorithms pass with at least 32 hex characters, as the
  grammar allows, although docker itself knows only those three;
* the 255-character limit applies to the whole normalised name, registry
  included (as older docker/distribution releases did), not only the path;
* a first component is a registry only if it contains '.' or ':' or is
  `localhost`; newer docker also treats an upper-case first component as a
  host, which turns a typo like `Team/api` into a registry called `Team`;
* `familiar()` keeps `docker.io/` where docker's short form would read back
  with a different registry (`docker.io/a.b/c` is not `a.b/c`).

Registry hosts are kept as written (docker does not fold their case), and
`index.docker.io` is folded into `docker.io`, as docker does.

`parse` is on the hot path of `gitsync validate`, so the valid case costs a
few string splits and four pre-compiled `fullmatch` calls, with results kept in
an LRU cache; working out *why* a reference is invalid happens only on failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NoReturn

from gitsync.errors import ImageRefError

__all__ = [
    "DEFAULT_REGISTRY",
    "DEFAULT_TAG",
    "MAX_NAME_LENGTH",
    "MAX_TAG_LENGTH",
    "ImageRef",
    "normalize",
    "parse",
    "same_repository",
]

DEFAULT_REGISTRY = "docker.io"
LEGACY_DEFAULT_REGISTRY = "index.docker.io"  # docker's old "Docker Index" host, same registry
OFFICIAL_PREFIX = "library/"  # Docker Hub's namespace for single-component names
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255  # registry/repository, as docker/distribution limits it
MAX_TAG_LENGTH = 128

# Regexes are compiled once at import and used with fullmatch(), which (unlike
# `^...$`) does not accept a trailing newline.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"  # one '.', one or two '_', any number of '-'
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"

# The whole path in one pass: '/' behaves as one more separator between alphanumeric
# runs. Possessive quantifiers (3.11+) never backtrack; the grammar never needs to.
_PATH_RE = re.compile(r"[a-z0-9]++(?:(?:[./]|__?|-++)[a-z0-9]++)*+")
_PATH_COMPONENT_RE = re.compile(_PATH_COMPONENT)
_REGISTRY_RE = re.compile(rf"{_HOST}(?::[0-9]+)?")
_HOST_RE = re.compile(_HOST)
# \w would also match non-ASCII letters in Python; the grammar means ASCII.
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_ALGORITHM_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*")
_HEX_RE = re.compile(r"[a-f0-9]+")
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
_BAD_PATH_CHAR_RE = re.compile(r"[^a-z0-9._/-]")
_SEPARATOR_RUN_RE = re.compile(r"[._-]+")
_SEPARATOR_RE = re.compile(_SEPARATOR)

# Registered algorithms have a fixed length; go-digest refuses anything else.
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_MIN_DIGEST_HEX_LENGTH = 32  # distribution's floor for unregistered algorithms: 128 bits

_FORM = "[registry[:port]/]repository[:tag][@algorithm:hex], e.g. 'nginx:1.27'"
_PATH_RULE = (
    "repository components are lower-case letters and digits, separated by one '.', "
    "one or two '_', or any number of '-', and joined by single '/'"
)


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A parsed, normalised image reference.

    Build one with `parse`; the constructor does not validate, so that parsing
    does not check everything twice. Two refs compare equal when they name the
    same content: `explicit_tag` records only how the tag was written, so
    `parse("nginx") == parse("nginx:latest")`.
    """

    registry: str
    repository: str
    tag: str | None
    digest: str | None
    explicit_tag: bool = field(compare=False)

    @property
    def name(self) -> str:
        """Registry and repository, e.g. "docker.io/library/nginx"."""
        return f"{self.registry}/{self.repository}"

    @property
    def mutable(self) -> bool:
        """True when the content may move under us: no digest, and `latest` or no tag written."""
        return self.digest is None and (self.tag == DEFAULT_TAG or not self.explicit_tag)

    @property
    def reference(self) -> str:
        """What a registry's manifest GET takes: the digest if there is one, else the tag."""
        if self.digest is not None:
            return self.digest
        return self.tag if self.tag is not None else DEFAULT_TAG

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            text = f"{text}:{self.tag}"
        if self.digest is not None:
            text = f"{text}@{self.digest}"
        return text

    def familiar(self) -> str:
        """Docker's short form: Docker Hub and `library/` dropped, a defaulted tag left out.

        Unlike docker, "docker.io/" stays when the short form would read back with
        its first component as a registry, so `parse(ref.familiar()) == ref` always.
        """
        text = f"{self.registry}/{self.repository}"
        if self.registry == DEFAULT_REGISTRY:
            path = self.repository
            # Only "library/x" shortens: "library/a/b" would read back as "docker.io/a/b".
            if path.startswith(OFFICIAL_PREFIX) and "/" not in path[len(OFFICIAL_PREFIX) :]:
                path = path[len(OFFICIAL_PREFIX) :]
            # Unlike docker, keep "docker.io/" when dropping it would turn the first
            # component into a registry ("docker.io/a.b/c" is not "a.b/c").
            first, slash, _ = path.partition("/")
            if not slash or not ("." in first or first == "localhost"):
                text = path
        if self.tag is not None and self.explicit_tag:
            text = f"{text}:{self.tag}"
        if self.digest is not None:
            text = f"{text}@{self.digest}"
        return text


def parse(reference: str) -> ImageRef:
    """Parse and normalise `reference`; raise ImageRefError saying what would be valid."""
    return _parse_cached(reference)


def normalize(reference: str) -> str:
    """The fully qualified form, e.g. "nginx" -> "docker.io/library/nginx:latest"."""
    return str(_parse_cached(reference))


def same_repository(a: ImageRef, b: ImageRef) -> bool:
    """True when both refs live in the same repository, whatever their tags and digests."""
    return a.registry == b.registry and a.repository == b.repository


# Specs repeat the same few images many times; failures are not cached (lru_cache
# does not store exceptions), which is fine because they are rare.
@lru_cache(maxsize=16384)
def _parse_cached(reference: str) -> ImageRef:
    return _parse(reference)


def _parse(reference: str) -> ImageRef:
    if not reference:
        _fail(reference, f"it is empty; write {_FORM}")
    if len(reference) == 64 and _IDENTIFIER_RE.fullmatch(reference):
        _fail(
            reference,
            "a 64-character hex string is an image ID, not a repository name; "
            "write repository@sha256:<hex> to pin content",
        )

    name_and_tag, at, digest_text = reference.partition("@")
    digest: str | None = None
    if at:
        digest = _check_digest(reference, digest_text)

    # A ':' after the last '/' starts the tag; one before it belongs to a registry port.
    colon = name_and_tag.rfind(":")
    tag: str | None = None
    name = name_and_tag
    if colon > name_and_tag.rfind("/"):
        name, tag = name_and_tag[:colon], name_and_tag[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            _fail(reference, _tag_problem(tag))

    registry, path = _split_name(reference, name)
    if len(registry) + 1 + len(path) > MAX_NAME_LENGTH:
        _fail(
            reference,
            f"name {registry}/{path} is {len(registry) + 1 + len(path)} characters; "
            f"registry/repository must be at most {MAX_NAME_LENGTH}",
        )

    explicit_tag = tag is not None
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return ImageRef(
        registry=registry, repository=path, tag=tag, digest=digest, explicit_tag=explicit_tag
    )


def _split_name(reference: str, name: str) -> tuple[str, str]:
    """Registry and normalised repository path of `name`, by docker's rule for the first part."""
    first, slash, rest = name.partition("/")
    registry_written = bool(slash) and ("." in first or ":" in first or first == "localhost")
    if registry_written:
        registry, path = first, rest
        if not _REGISTRY_RE.fullmatch(registry):
            _fail(reference, _registry_problem(registry))
        if registry == LEGACY_DEFAULT_REGISTRY:
            registry = DEFAULT_REGISTRY
    else:
        registry, path = DEFAULT_REGISTRY, name
    if not _PATH_RE.fullmatch(path):
        _fail(reference, _path_problem(path, registry_written=registry_written))
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return registry, path


def _fail(reference: str, reason: str) -> NoReturn:
    """Raise, preferring a reason that names a mistake of the whole string."""
    if "://" in reference:
        reason = (
            "a URL scheme is not part of an image reference; drop it and write "
            "e.g. 'registry.example.com/team/api:1'"
        )
    else:
        for index, char in enumerate(reference):
            if char.isspace():
                reason = (
                    f"whitespace {char!r} at position {index}; remove it, a reference is {_FORM}"
                )
                break
    raise ImageRefError(reference, reason)


def _check_digest(reference: str, text: str) -> str:
    algorithm, colon, encoded = text.partition(":")
    expected = _DIGEST_HEX_LENGTHS.get(algorithm)
    # Fast path: a registered algorithm with exactly its hex length.
    if expected is not None and len(encoded) == expected and _HEX_RE.fullmatch(encoded):
        return text
    if not text:
        _fail(reference, "'@' must be followed by a digest such as sha256:<64 lower-case hex>")
    if "@" in text:
        _fail(reference, "more than one '@'; only one digest may follow the name")
    if not colon:
        _fail(reference, f"digest {text!r} must be algorithm:hex, e.g. sha256:<64 lower-case hex>")
    if not _ALGORITHM_RE.fullmatch(algorithm):
        _fail(
            reference,
            f"digest algorithm {algorithm!r} is invalid; it is lower-case letters and digits "
            "joined by '.', '+', '_' or '-', e.g. 'sha256'",
        )
    if encoded and not _HEX_RE.fullmatch(encoded):
        if _HEX_RE.fullmatch(encoded.lower()):
            _fail(reference, f"{algorithm} digest must be lower-case hex")
        _fail(reference, f"{algorithm} digest must be hex characters [0-9a-f] only")
    if expected is not None:
        _fail(
            reference,
            f"{algorithm} digest needs exactly {expected} lower-case hex characters, "
            f"got {len(encoded)}",
        )
    if len(encoded) < _MIN_DIGEST_HEX_LENGTH:
        _fail(
            reference,
            f"{algorithm} digest needs at least {_MIN_DIGEST_HEX_LENGTH} lower-case hex "
            f"characters, got {len(encoded)}",
        )
    return text


def _tag_problem(tag: str) -> str:
    rule = (
        f"a tag is 1-{MAX_TAG_LENGTH} characters of [A-Za-z0-9_.-] "
        "and does not start with '.' or '-'"
    )
    if not tag:
        return f"tag after ':' is empty; write e.g. 'nginx:1.27' or drop the ':' ({rule})"
    if len(tag) > MAX_TAG_LENGTH:
        return f"tag is {len(tag)} characters, too long; {rule}"
    return f"tag {tag!r} is invalid; {rule}"


def _registry_problem(registry: str) -> str:
    host, colon, port = registry, "", ""
    if registry.startswith("["):
        end = registry.find("]")
        if end != -1:
            host, colon, port = (
                registry[: end + 1],
                registry[end + 1 : end + 2],
                registry[end + 2 :],
            )
    elif registry.count(":") == 1:
        host, colon, port = registry.partition(":")
    elif registry.count(":") > 1:
        return (
            f"registry {registry!r} has more than one ':'; a port is written once "
            "('host:5000') and an IPv6 address needs brackets, e.g. '[::1]:5000'"
        )
    if colon and not port.isdecimal():
        return f"registry {registry!r} has port {port!r}; a port is digits, e.g. 'localhost:5000'"
    if colon and not port.isascii():
        return f"registry {registry!r} has port {port!r}; a port is ASCII digits 0-9"
    if not _HOST_RE.fullmatch(host):
        return (
            f"registry host {host!r} is invalid; a host is dot-separated labels of "
            "[A-Za-z0-9-] that do not start or end with '-', or an IPv6 address in "
            "brackets like '[::1]'"
        )
    return f"registry {registry!r} is not host[:port]"


def _path_problem(path: str, *, registry_written: bool) -> str:
    if not path:
        if registry_written:
            return (
                "repository path after the registry is empty; "
                "write e.g. 'registry.example.com/team/app'"
            )
        return f"repository name is missing; write {_FORM}"
    shape = (
        (path.startswith("/"), "a leading '/'"),
        (path.endswith("/"), "a trailing '/'"),
        ("//" in path, "an empty component ('//')"),
    )
    for broken, what in shape:
        if broken:
            return f"repository {path!r} has {what}; {_PATH_RULE}"
    lowered = path.lower()
    if lowered != path and _PATH_RE.fullmatch(lowered):
        hint = ""
        first = path.partition("/")[0]
        if "/" in path and first.lower() != first:
            hint = (
                f"; if {first!r} is a registry, a registry host must contain '.' or ':port' "
                "or be 'localhost'"
            )
        return f"repository name must be lowercase: {path!r} (use {lowered!r}){hint}"
    for component in path.split("/"):
        if not _PATH_COMPONENT_RE.fullmatch(component):
            return _component_problem(component)
    return f"repository {path!r} is invalid; {_PATH_RULE}"  # pragma: no cover - named above


def _component_problem(component: str) -> str:
    bad = _BAD_PATH_CHAR_RE.search(component)
    if bad is not None:
        return (
            f"repository component {component!r} has invalid character {bad.group()!r}; "
            f"{_PATH_RULE}"
        )
    if component[0] in "._-" or component[-1] in "._-":
        return (
            f"repository component {component!r} must start and end with a lower-case "
            f"letter or digit; {_PATH_RULE}"
        )
    runs = _SEPARATOR_RUN_RE.findall(component)
    wrong = next((run for run in runs if not _SEPARATOR_RE.fullmatch(run)), component)
    return f"repository component {component!r} has invalid separator {wrong!r}; {_PATH_RULE}"
