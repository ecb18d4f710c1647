"""Image reference grammar: docker's normalisation, the reasons for rejection, and properties."""

# The tables below keep one case per line so they read as a table; wrapped, each case
# would spread over ten lines and the table would be unreadable.
# ruff: noqa: E501

from __future__ import annotations

from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gitsync.errors import ImageRefError, PermanentError
from gitsync.imageref import ImageRef, normalize, parse, same_repository

HEX64 = "0123456789abcdef" * 4
HEX96 = "0123456789abcdef" * 6
HEX128 = "0123456789abcdef" * 8
D256 = f"sha256:{HEX64}"
D384 = f"sha384:{HEX96}"
D512 = f"sha512:{HEX128}"
HUB = "docker.io"


class Valid(NamedTuple):
    written: str
    normalised: str
    registry: str
    repository: str
    tag: str | None
    digest: str | None
    explicit_tag: bool
    familiar: str


VALID_ROWS = [
    ("nginx", "docker.io/library/nginx:latest", HUB, "library/nginx", "latest", None, False, "nginx"),
    ("nginx:1.27", "docker.io/library/nginx:1.27", HUB, "library/nginx", "1.27", None, True, "nginx:1.27"),
    ("nginx:latest", "docker.io/library/nginx:latest", HUB, "library/nginx", "latest", None, True, "nginx:latest"),
    ("library/nginx:1.27", "docker.io/library/nginx:1.27", HUB, "library/nginx", "1.27", None, True, "nginx:1.27"),
    ("docker.io/nginx", "docker.io/library/nginx:latest", HUB, "library/nginx", "latest", None, False, "nginx"),
    ("docker.io/library/nginx:1.27", "docker.io/library/nginx:1.27", HUB, "library/nginx", "1.27", None, True, "nginx:1.27"),
    ("index.docker.io/nginx:1.27", "docker.io/library/nginx:1.27", HUB, "library/nginx", "1.27", None, True, "nginx:1.27"),
    ("index.docker.io/team/api", "docker.io/team/api:latest", HUB, "team/api", "latest", None, False, "team/api"),
    ("team/api:1", "docker.io/team/api:1", HUB, "team/api", "1", None, True, "team/api:1"),
    ("team/sub/api:v2.0.1", "docker.io/team/sub/api:v2.0.1", HUB, "team/sub/api", "v2.0.1", None, True, "team/sub/api:v2.0.1"),
    # only "library/<one component>" is shortened, as docker does
    ("docker.io/library/a/b", "docker.io/library/a/b:latest", HUB, "library/a/b", "latest", None, False, "library/a/b"),
    ("ghcr.io/x/y:1", "ghcr.io/x/y:1", "ghcr.io", "x/y", "1", None, True, "ghcr.io/x/y:1"),
    # the short form keeps docker.io/ where dropping it would make the first part a registry
    ("docker.io/a.b/c:1", "docker.io/a.b/c:1", HUB, "a.b/c", "1", None, True, "docker.io/a.b/c:1"),
    ("docker.io/localhost/c", "docker.io/localhost/c:latest", HUB, "localhost/c", "latest", None, False, "docker.io/localhost/c"),
    # library/ is only added on Docker Hub
    ("ghcr.io/app", "ghcr.io/app:latest", "ghcr.io", "app", "latest", None, False, "ghcr.io/app"),
    ("registry.example.com:5000/team/api:1.0", "registry.example.com:5000/team/api:1.0", "registry.example.com:5000", "team/api", "1.0", None, True, "registry.example.com:5000/team/api:1.0"),
    ("localhost/foo", "localhost/foo:latest", "localhost", "foo", "latest", None, False, "localhost/foo"),
    ("localhost:5000/foo/bar:dev", "localhost:5000/foo/bar:dev", "localhost:5000", "foo/bar", "dev", None, True, "localhost:5000/foo/bar:dev"),
    ("127.0.0.1:5000/foo:1", "127.0.0.1:5000/foo:1", "127.0.0.1:5000", "foo", "1", None, True, "127.0.0.1:5000/foo:1"),
    ("192.168.1.10/app", "192.168.1.10/app:latest", "192.168.1.10", "app", "latest", None, False, "192.168.1.10/app"),
    ("[::1]:5000/foo:bar", "[::1]:5000/foo:bar", "[::1]:5000", "foo", "bar", None, True, "[::1]:5000/foo:bar"),
    ("[::1]/foo", "[::1]/foo:latest", "[::1]", "foo", "latest", None, False, "[::1]/foo"),
    (f"[2001:db8::1]:443/team/api@{D256}", f"[2001:db8::1]:443/team/api@{D256}", "[2001:db8::1]:443", "team/api", None, D256, False, f"[2001:db8::1]:443/team/api@{D256}"),
    # the host keeps its case, as docker keeps it
    ("Registry.Example.COM/app:1", "Registry.Example.COM/app:1", "Registry.Example.COM", "app", "1", None, True, "Registry.Example.COM/app:1"),
    ("my-registry.local:8443/a_b/c__d/e-f/g--h:1.0", "my-registry.local:8443/a_b/c__d/e-f/g--h:1.0", "my-registry.local:8443", "a_b/c__d/e-f/g--h", "1.0", None, True, "my-registry.local:8443/a_b/c__d/e-f/g--h:1.0"),
    (f"nginx@{D256}", f"docker.io/library/nginx@{D256}", HUB, "library/nginx", None, D256, False, f"nginx@{D256}"),
    (f"nginx:1.27@{D256}", f"docker.io/library/nginx:1.27@{D256}", HUB, "library/nginx", "1.27", D256, True, f"nginx:1.27@{D256}"),
    (f"nginx:latest@{D256}", f"docker.io/library/nginx:latest@{D256}", HUB, "library/nginx", "latest", D256, True, f"nginx:latest@{D256}"),
    (f"ghcr.io/x/y@{D512}", f"ghcr.io/x/y@{D512}", "ghcr.io", "x/y", None, D512, False, f"ghcr.io/x/y@{D512}"),
    (f"app@{D384}", f"docker.io/library/app@{D384}", HUB, "library/app", None, D384, False, f"app@{D384}"),
    (f"registry.example.com/team/api:1@{D256}", f"registry.example.com/team/api:1@{D256}", "registry.example.com", "team/api", "1", D256, True, f"registry.example.com/team/api:1@{D256}"),
    ("quay.io/prometheus/node-exporter:v1.8.2", "quay.io/prometheus/node-exporter:v1.8.2", "quay.io", "prometheus/node-exporter", "v1.8.2", None, True, "quay.io/prometheus/node-exporter:v1.8.2"),
    ("gcr.io/distroless/static-debian12:nonroot", "gcr.io/distroless/static-debian12:nonroot", "gcr.io", "distroless/static-debian12", "nonroot", None, True, "gcr.io/distroless/static-debian12:nonroot"),
    ("mcr.microsoft.com/dotnet/aspnet:8.0-alpine", "mcr.microsoft.com/dotnet/aspnet:8.0-alpine", "mcr.microsoft.com", "dotnet/aspnet", "8.0-alpine", None, True, "mcr.microsoft.com/dotnet/aspnet:8.0-alpine"),
    ("public.ecr.aws/docker/library/busybox:1.36.1-musl", "public.ecr.aws/docker/library/busybox:1.36.1-musl", "public.ecr.aws", "docker/library/busybox", "1.36.1-musl", None, True, "public.ecr.aws/docker/library/busybox:1.36.1-musl"),
    ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9", "registry.k8s.io", "pause", "3.9", None, True, "registry.k8s.io/pause:3.9"),
    ("busybox:1.36.1-musl", "docker.io/library/busybox:1.36.1-musl", HUB, "library/busybox", "1.36.1-musl", None, True, "busybox:1.36.1-musl"),
    ("alpine:3.20", "docker.io/library/alpine:3.20", HUB, "library/alpine", "3.20", None, True, "alpine:3.20"),
    ("nginx:1.27.2-alpine3.20", "docker.io/library/nginx:1.27.2-alpine3.20", HUB, "library/nginx", "1.27.2-alpine3.20", None, True, "nginx:1.27.2-alpine3.20"),
    ("nginx:RC1", "docker.io/library/nginx:RC1", HUB, "library/nginx", "RC1", None, True, "nginx:RC1"),
    ("nginx:_private", "docker.io/library/nginx:_private", HUB, "library/nginx", "_private", None, True, "nginx:_private"),
    ("nginx:" + "a" * 128, "docker.io/library/nginx:" + "a" * 128, HUB, "library/nginx", "a" * 128, None, True, "nginx:" + "a" * 128),
    ("a0/b1_c2.d3", "docker.io/a0/b1_c2.d3:latest", HUB, "a0/b1_c2.d3", "latest", None, False, "a0/b1_c2.d3"),
    ("a-----b/c", "docker.io/a-----b/c:latest", HUB, "a-----b/c", "latest", None, False, "a-----b/c"),
    # without a '/', a dotted or colon-ed first part is a repository and a tag (docker's rule)
    ("foo.bar", "docker.io/library/foo.bar:latest", HUB, "library/foo.bar", "latest", None, False, "foo.bar"),
    ("localhost:5000", "docker.io/library/localhost:5000", HUB, "library/localhost", "5000", None, True, "localhost:5000"),
    ("localhost", "docker.io/library/localhost:latest", HUB, "library/localhost", "latest", None, False, "localhost"),
    # a 64-hex tag is fine; only a bare 64-hex name is refused
    (f"sha256:{HEX64}", f"docker.io/library/sha256:{HEX64}", HUB, "library/sha256", HEX64, None, True, f"sha256:{HEX64}"),
    # exactly 255 characters of registry/repository
    ("r.io/" + "a" * 250, "r.io/" + "a" * 250 + ":latest", "r.io", "a" * 250, "latest", None, False, "r.io/" + "a" * 250),
]  # fmt: skip


VALID = [Valid(*row) for row in VALID_ROWS]


@pytest.mark.parametrize("case", VALID, ids=[case.written[:60] for case in VALID])
def test_valid_reference_is_parsed_and_normalised(case: Valid) -> None:
    ref = parse(case.written)

    fields = (ref.registry, ref.repository, ref.tag, ref.digest, ref.explicit_tag)
    assert fields == (case.registry, case.repository, case.tag, case.digest, case.explicit_tag)
    assert str(ref) == case.normalised
    assert normalize(case.written) == case.normalised
    assert ref.name == f"{case.registry}/{case.repository}"
    assert ref.familiar() == case.familiar


@pytest.mark.parametrize("written", [c.written for c in VALID], ids=[c.written[:60] for c in VALID])
def test_normalised_and_familiar_forms_read_back_as_the_same_image(written: str) -> None:
    ref = parse(written)

    assert parse(str(ref)) == ref
    assert normalize(str(ref)) == str(ref)
    again = parse(ref.familiar())
    assert again == ref
    assert again.explicit_tag == ref.explicit_tag


RULE_OF_PATHS = "lower-case letters and digits"

# (written, words the reason must contain)
INVALID = [
    ("", ["empty", "repository[:tag]"]),
    (" ", ["whitespace ' ' at position 0"]),
    ("nginx ", ["whitespace ' ' at position 5"]),
    (" nginx:1.27", ["whitespace ' ' at position 0"]),
    ("nginx:1.27\n", ["whitespace '\\n' at position 10"]),
    ("nginx\t:1", ["whitespace '\\t'"]),
    ("Nginx", ["repository name must be lowercase: 'Nginx'", "'nginx'"]),
    ("team/API", ["repository name must be lowercase: 'team/API'"]),
    ("Team/api", ["must be lowercase", "registry host must contain '.' or ':port'"]),
    ("registry.example.com/Team/api", ["repository name must be lowercase: 'Team/api'"]),
    ("nginx:", ["tag after ':' is empty"]),
    ("nginx:" + "a" * 129, ["129 characters", "1-128"]),
    ("nginx:-1", ["tag '-1' is invalid", "does not start with '.' or '-'"]),
    ("nginx:.x", ["tag '.x' is invalid"]),
    ("nginx:1.0+build", ["tag '1.0+build' is invalid", "[A-Za-z0-9_.-]"]),
    ("nginx:ü", ["tag 'ü' is invalid"]),
    ("nginx@", ["'@' must be followed by a digest"]),
    ("nginx@sha256", ["must be algorithm:hex"]),
    ("nginx@sha256:abc", ["exactly 64", "got 3"]),
    ("nginx@sha256:" + "A" * 64, ["lower-case hex"]),
    ("nginx@SHA256:" + HEX64, ["digest algorithm 'SHA256' is invalid"]),
    ("nginx@sha256:" + "g" * 64, ["[0-9a-f]"]),
    ("nginx@sha512:" + HEX64, ["exactly 128", "got 64"]),
    ("nginx@md5:abcd", ["at least 32", "got 4"]),
    (f"nginx@sha384:{HEX64}", ["exactly 96", "got 64"]),
    ("nginx@blake3:", ["at least 32", "got 0"]),
    ("nginx@sha256:" + HEX64 + "@" + D256, ["more than one '@'"]),
    ("nginx@:" + HEX64, ["digest algorithm '' is invalid"]),
    ("a//b", ["'//'"]),
    ("/nginx", ["leading '/'"]),
    ("nginx/", ["trailing '/'"]),
    ("registry.example.com/", ["path after the registry is empty"]),
    ("registry.example.com//team", ["leading '/'"]),
    ("-nginx", ["must start and end with a lower-case letter or digit"]),
    ("team/nginx-", ["'nginx-' must start and end"]),
    ("a___b", ["invalid separator '___'", RULE_OF_PATHS]),
    ("a..b", ["invalid separator '..'"]),
    ("a._b", ["invalid separator '._'"]),
    ("ngínx", ["invalid character 'í'"]),
    ("team/a+b", ["invalid character '+'"]),
    (HEX64, ["image ID", "@sha256:"]),
    ("https://registry.example.com/team/api:1", ["URL scheme"]),
    ("http://localhost:5000/x", ["URL scheme"]),
    ("::1/foo", ["IPv6 address needs brackets", "[::1]:5000"]),
    ("localhost:/foo", ["port ''", "a port is digits"]),
    ("registry.example.com:http/foo", ["port 'http'"]),
    ("-registry.com/foo", ["registry host '-registry.com' is invalid"]),
    ("reg_istry.com/x", ["registry host 'reg_istry.com' is invalid"]),
    ("[fe80::1%eth0]:5000/x", ["registry host '[fe80::1%eth0]' is invalid"]),
    (":1.27", ["repository name is missing"]),
    ("@" + D256, ["repository name is missing"]),
    ("r.io/" + "a" * 251, ["256 characters", "at most 255"]),
    ("a" * 250, ["docker.io/library/", "268 characters"]),
]


@pytest.mark.parametrize(("written", "words"), INVALID, ids=[c[0][:50] for c in INVALID])
def test_invalid_reference_is_refused_with_a_reason(written: str, words: list[str]) -> None:
    with pytest.raises(ImageRefError) as caught:
        parse(written)

    for word in words:
        assert word in caught.value.reason
    assert caught.value.reference == written
    assert repr(written) in str(caught.value)


def test_image_ref_error_is_a_permanent_value_error() -> None:
    with pytest.raises(ImageRefError) as caught:
        normalize("Nginx")

    assert isinstance(caught.value, PermanentError)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("written", "mutable", "reference"),
    [
        ("nginx", True, "latest"),
        ("nginx:latest", True, "latest"),
        ("nginx:1.27", False, "1.27"),
        (f"nginx@{D256}", False, D256),
        (f"nginx:latest@{D256}", False, D256),
        (f"nginx:1.27@{D256}", False, D256),
        ("localhost:5000/app:dev", False, "dev"),
    ],
)
def test_mutable_and_manifest_reference(written: str, mutable: bool, reference: str) -> None:
    ref = parse(written)

    assert ref.mutable is mutable
    assert ref.reference == reference


def test_defaulted_and_written_latest_are_the_same_image() -> None:
    spellings = ["nginx", "nginx:latest", "library/nginx", "docker.io/library/nginx:latest"]
    refs = [parse(s) for s in spellings]

    assert len(set(refs)) == 1
    assert [r.explicit_tag for r in refs] == [False, True, False, True]
    assert parse("nginx") != parse("nginx:1.27")
    assert parse(f"nginx@{D256}") != parse(f"nginx:1.27@{D256}")


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("nginx", "docker.io/library/nginx:1.27", True),
        ("nginx:1.27", f"index.docker.io/library/nginx@{D256}", True),
        ("nginx", "team/nginx", False),
        ("nginx", "ghcr.io/library/nginx", False),
        ("localhost:5000/app", "localhost:5001/app", False),
        ("localhost/app:1", "localhost/app:2", True),
        ("Registry.example.com/app", "registry.example.com/app", False),
    ],
)
def test_same_repository(a: str, b: str, same: bool) -> None:
    assert same_repository(parse(a), parse(b)) is same
    assert same_repository(parse(b), parse(a)) is same


def test_image_ref_is_frozen_and_hashable() -> None:
    ref = parse("nginx:1.27")

    with pytest.raises(AttributeError):
        ref.tag = "1.28"  # type: ignore[misc]
    assert {ref: "x"}[parse("docker.io/library/nginx:1.27")] == "x"
    assert isinstance(ref, ImageRef)


# --- properties -------------------------------------------------------------

_ALNUM = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)


def _component(separators: list[str]) -> st.SearchStrategy[str]:
    @st.composite
    def build(draw: st.DrawFn) -> str:
        parts = [draw(_ALNUM)]
        for _ in range(draw(st.integers(0, 2))):
            parts += [draw(st.sampled_from(separators)), draw(_ALNUM)]
        return "".join(parts)

    return build()


_ANY_SEPARATOR = [".", "_", "__", "-", "--", "---"]
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# Built from plain text strategies rather than from_regex, which is several times slower.
_LABEL = st.one_of(
    st.text(_LETTERS, min_size=1, max_size=1),
    st.tuples(
        st.text(_LETTERS, min_size=1, max_size=1),
        st.text(_LETTERS + "-", max_size=5),
        st.text(_LETTERS, min_size=1, max_size=1),
    ).map("".join),
)
_HOSTS = st.one_of(
    st.just("localhost"),
    st.just("docker.io"),
    st.just("index.docker.io"),
    st.lists(_LABEL, min_size=2, max_size=4).map(".".join),
    st.binary(min_size=4, max_size=4).map(lambda b: ".".join(map(str, b))),
    st.sampled_from(["[::1]", "[2001:db8::1]", "[fe80::a:b]"]),
)
_PORTS = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
_TAGS = st.tuples(
    st.text(_LETTERS + "_", min_size=1, max_size=1), st.text(_LETTERS + "_.-", max_size=30)
).map("".join)
_DIGESTS = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda b: f"sha256:{b.hex()}"),
    st.binary(min_size=64, max_size=64).map(lambda b: f"sha512:{b.hex()}"),
)


@st.composite
def valid_references(draw: st.DrawFn) -> str:
    """References that are valid by construction, in every shape the grammar allows."""
    registry = draw(st.one_of(st.just(""), st.tuples(_HOSTS, _PORTS).map("".join)))
    if registry:
        registry += "/"
    # Without a registry, a '.' in the first of several components would make it a host.
    first = draw(_component(_ANY_SEPARATOR if registry else ["_", "__", "-"]))
    rest = draw(st.lists(_component(_ANY_SEPARATOR), max_size=3))
    text = registry + "/".join([first, *rest])
    if draw(st.booleans()):
        text += ":" + draw(_TAGS)
    if draw(st.booleans()):
        text += "@" + draw(_DIGESTS)
    return text


@settings(database=None, max_examples=200)
@given(valid_references())
def test_normalize_is_idempotent_for_valid_references(written: str) -> None:
    ref = parse(written)
    once = normalize(written)

    assert normalize(once) == once
    assert parse(once) == ref
    assert parse(ref.familiar()) == ref


_REFERENCE_ALPHABET = "abzAZ09:/@._-[]+% \nsha256\u00e9\uff21"  # with non-ASCII look-alikes


@settings(database=None, max_examples=300)
@given(st.one_of(st.text(), st.text(_REFERENCE_ALPHABET, max_size=40)))
def test_parse_raises_only_image_ref_error(text: str) -> None:
    reason = ""
    try:
        ref = parse(text)
    except ImageRefError as exc:
        reason = exc.reason
    else:
        once = str(ref)
        assert normalize(once) == once
    # A refusal always explains itself; an acceptance always normalises stably.
    assert reason or ref
