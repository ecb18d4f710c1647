"""The container image installs from requirements/image.lock, and that lock agrees with pyproject.

The Dockerfile cannot be built here (no container engine in CI), so what makes the image
reproducible is checked on the files: every Python package comes from the lock, pinned
exactly and with hashes; gitsync itself is installed without resolving anything; and the lock
pins every runtime dependency of pyproject.toml (and of the extras the image uses, and the
build backend) at a version that pyproject allows. A dependency added to pyproject.toml
without refreshing the lock fails here, not in a cluster.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "image.lock"
IMAGE_EXTRAS = ("tencent", "zstd")  # what the controller image runs with
# The image's platform: python:3.11-slim on Linux.
IMAGE_MARKERS = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def _lock_entries() -> dict[str, tuple[Version, list[str]]]:
    """Each pinned package of the lock: its version and its hashes."""
    text = re.sub(r"\\\n", " ", LOCK.read_text(encoding="utf-8"))
    entries: dict[str, tuple[Version, list[str]]] = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        name, equals, version = words[0].partition("==")
        assert equals, f"{LOCK.name}: {words[0]!r} is not pinned with =="
        hashes = [w.removeprefix("--hash=") for w in words[1:] if w.startswith("--hash=")]
        entries[canonicalize_name(name)] = (Version(version), hashes)
    return entries


def _dockerfile_runs() -> list[str]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("RUN ")]


def _image_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = [
        *project["build-system"]["requires"],
        *project["project"]["dependencies"],
        *(r for extra in IMAGE_EXTRAS for r in project["project"]["optional-dependencies"][extra]),
    ]
    found = [Requirement(r) for r in wanted]
    return [r for r in found if r.marker is None or r.marker.evaluate(IMAGE_MARKERS)]


def test_the_dockerfile_installs_the_lock_then_gitsync_without_its_dependencies() -> None:
    runs = [r for r in _dockerfile_runs() if "pip install" in r]
    assert len(runs) == 2, f"expected two pip installs (the lock, then gitsync), got {runs}"
    lock, own = (_first_command(run) for run in runs)
    assert lock[:2] == ["pip", "install"]
    assert "--require-hashes" in lock
    assert lock[lock.index("-r") + 1] == "requirements/image.lock"
    assert own[:2] == ["pip", "install"]
    assert "--no-deps" in own
    assert "--no-build-isolation" in own  # the build backend comes from the lock too
    assert own[-1] == "."
    assert "&& pip check" in runs[1], "the build must fail when the lock misses a dependency"


def _first_command(run: str) -> list[str]:
    words = shlex.split(run)
    return words[: words.index("&&")] if "&&" in words else words


def test_every_lock_entry_is_pinned_with_hashes() -> None:
    entries = _lock_entries()
    assert len(entries) >= 10
    for name, (_, hashes) in entries.items():
        assert hashes, f"{name} has no --hash in {LOCK.name}"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name


def test_the_lock_pins_every_dependency_of_the_image_at_an_allowed_version() -> None:
    entries = _lock_entries()
    assert "gitsync" not in entries, "gitsync itself is installed from the source, not the lock"
    for requirement in _image_requirements():
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{requirement} is not in {LOCK.name}: refresh the lock"
        version, _ = entries[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{LOCK.name} pins {name}=={version}, but pyproject.toml asks for {requirement}"
        )


def test_the_lock_was_compiled_for_the_extras_the_image_uses() -> None:
    lines = [line.lstrip("# ") for line in LOCK.read_text(encoding="utf-8").splitlines()]
    commands = [line for line in lines if line.startswith("pip-compile ")]
    assert len(commands) == 1, f"{LOCK.name} must say the pip-compile command that made it"
    command = shlex.split(commands[0])
    extras = sorted(w.removeprefix("--extra=") for w in command if w.startswith("--extra="))
    assert extras == sorted(IMAGE_EXTRAS)
    assert "--generate-hashes" in command
    assert command[-1] == "pyproject.toml"
