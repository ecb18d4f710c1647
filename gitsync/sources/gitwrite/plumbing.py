"""The repository gitsync writes in, through git plumbing only: objects, trees, commits, refs.

Everything here is local: no process it starts talks to a remote or gets a
credential (the network side is `remote`). The commit is built without a
checkout, in a temporary index (GIT_INDEX_FILE in a scratch folder) read from
the tip's tree: `hash-object -w` of the new texts, `update-index --index-info`,
`write-tree`, `commit-tree`, then `update-ref`. So a local repository's working
tree, index and checked-out branch stay exactly as they were, whatever state
they are in; and the guards that keep a person's work safe (a checked-out
branch is never moved, a branch with commits gitsync did not make is never
overwritten) sit beside the ref writes they guard.

Every process goes through the injected `run`, so the entry module decides how
git is run (and tests can watch every call).
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from gitsync.errors import GitSyncError
from gitsync.sources.base import SourceError, SourceUnavailable
from gitsync.sources.credentials import Scrubber
from gitsync.sources.gitcommand import SAFE_CONFIG, base_env, stderr_detail
from gitsync.sources.gitwrite.errors import ProtectedBranchError
from gitsync.sources.gitwrite.model import DEFAULT_IDENTITY, GitIdentity

log = logging.getLogger("gitsync.sources.git")

HEADS = "refs/heads/"


class Runner(Protocol):
    """How a git process is run: `gitsync.sources.gitcommand.run`'s signature."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None,
        env: Mapping[str, str],
        timeout: float,
        stdin: bytes | None = None,
    ) -> subprocess.CompletedProcess[bytes]: ...


@dataclass(frozen=True, slots=True)
class Commit:
    """The parts of a commit gitsync compares: its tree, parents and committer."""

    tree: str
    parents: tuple[str, ...]
    committer_email: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Repository:
    """One repository gitsync writes in: the clone cache of a URL, or a local repository."""

    cwd: Path
    local: bool  # a person's repository, worked in place (else gitsync's own clone cache)
    scrub: Scrubber  # every secret git might print, for messages
    timeout: float
    run: Runner

    @property
    def where(self) -> str:
        return str(self.cwd)

    def ensure_cache(self) -> None:
        if (self.cwd / "HEAD").is_file() and (self.cwd / "objects").is_dir():
            return
        try:
            self.cwd.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SourceError(
                f"cannot create the clone folder {self.cwd}: {exc.strerror}; "
                "the data dir must be writable"
            ) from exc
        self.git("init", "--quiet", "--bare")

    def refuse_checked_out(self, target: str) -> None:
        listing = self.git("worktree", "list", "--porcelain").decode("utf-8", "replace")
        worktree = ""
        for line in listing.splitlines():
            if line.startswith("worktree "):
                worktree = line.removeprefix("worktree ")
            elif line == f"branch {HEADS}{target}":
                raise ProtectedBranchError(
                    f"branch {target!r} is checked out in {worktree}: gitsync never moves a "
                    "checked-out branch; choose another --branch"
                )

    def tree_with(self, tip: str, files: Mapping[str, str | None]) -> str:
        """The tree of `tip` with `files` written or removed, built in a temporary index."""
        modes = self.modes(tip, list(files))
        with tempfile.TemporaryDirectory(prefix="gitsync-index-") as scratch:
            index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
            self.git("read-tree", tip, env=index)
            written = {path: text for path, text in files.items() if text is not None}
            blobs: dict[str, str] = {}
            if written:
                sources = []
                for number, (path, content) in enumerate(written.items()):
                    blob = Path(scratch) / f"blob-{number}"
                    blob.write_bytes(content.encode("utf-8"))
                    sources.append((path, blob))
                out = self.git(
                    "hash-object",
                    "-w",
                    "--no-filters",  # the exact bytes: CRLF stays CRLF
                    "--stdin-paths",
                    stdin="".join(f"{blob}\n" for _, blob in sources).encode(),
                )
                blobs = dict(zip(written, out.decode().split(), strict=True))
            zero = "0" * len(tip)
            records = []
            for path, text in files.items():
                if text is None:
                    records.append(f"0 {zero}\t{path}\0")
                else:
                    records.append(f"{modes.get(path, '100644')} {blobs[path]}\t{path}\0")
            self.git(
                "update-index", "-z", "--index-info", env=index, stdin="".join(records).encode()
            )
            return self.git("write-tree", env=index).decode().strip()

    def modes(self, tip: str, paths: list[str]) -> dict[str, str]:
        """The modes of `paths` in `tip`; a link, a submodule or a folder there is refused, and
        so is a path under a file (git would silently replace the file with a folder)."""
        if not paths:
            return {}
        parents = {str(parent) for path in paths for parent in PurePosixPath(path).parents}
        parents.discard(".")
        wanted = sorted(set(paths) | parents)
        out = self.git("ls-tree", "-z", "--full-tree", tip, "--", *wanted).decode("utf-8")
        modes: dict[str, str] = {}
        for entry in filter(None, out.split("\0")):
            meta, _, path = entry.partition("\t")
            mode, kind, _ = meta.split(" ", 2)
            if path in parents and kind != "tree":
                raise SourceError(
                    f"{path} is a file in the tracked branch, so nothing can be written under it"
                )
            if path in paths:
                if kind != "blob" or mode not in ("100644", "100755"):
                    what = {"tree": "a folder", "commit": "a submodule"}.get(kind, "a link")
                    raise SourceError(
                        f"{path} is {what} in the tracked branch; gitsync writes regular files only"
                    )
                modes[path] = mode
        return modes

    def read_commit(self, commit: str) -> Commit:
        text = self.git("cat-file", "commit", commit).decode("utf-8", "replace")
        header = text.partition("\n\n")[0]
        tree, parents, email = "", [], ""
        for line in header.splitlines():
            key, _, value = line.partition(" ")
            if key == "tree":
                tree = value
            elif key == "parent":
                parents.append(value)
            elif key == "committer":
                email = value.partition("<")[2].partition(">")[0]
        return Commit(tree=tree, parents=tuple(parents), committer_email=email)

    def commit_tree(self, tree: str, *, parent: str, message: str, author: GitIdentity) -> str:
        env = {
            "GIT_AUTHOR_NAME": author.name,
            "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": DEFAULT_IDENTITY.name,
            "GIT_COMMITTER_EMAIL": DEFAULT_IDENTITY.email,
        }
        text = self.scrub(message.strip()) + "\n"
        out = self.git(
            "commit-tree",
            "--no-gpg-sign",
            tree,
            "-p",
            parent,
            "-F",
            "-",
            env=env,
            stdin=text.encode(),
        )
        return out.decode().strip()

    def set_branch(self, target: str, commit: str, *, remote_tip: str | None, tracked: str) -> None:
        """Point refs/heads/<target> at `commit`, unless that would lose someone's commits."""
        ref = f"{HEADS}{target}"
        old = self.rev_parse_or_none(ref)
        if old == commit:
            return
        if old is not None and self.local and old != remote_tip:
            mine = self.read_commit(old).committer_email == DEFAULT_IDENTITY.email
            if not mine or target == tracked:
                raise ProtectedBranchError(
                    f"local branch {target!r} in {self.where} holds commit {old[:12]}, which "
                    "gitsync did not make; gitsync will not overwrite it: rename or delete "
                    "that branch, or choose another --branch"
                )
        # The old value guards against a concurrent writer between the read and the write.
        self.git("update-ref", "-m", "gitsync: publish", ref, commit, old or "0" * len(commit))

    def gc(self) -> None:
        if self.local:
            return  # a person's repository: their gc, not ours
        try:
            self.git("-c", "gc.autoDetach=false", "gc", "--auto", "--quiet")
        except GitSyncError as exc:
            log.warning("git gc in %s failed: %s", self.cwd, exc)

    def rev_parse(self, name: str) -> str:
        return self.git("rev-parse", "--verify", "--quiet", name).decode().strip()

    def rev_parse_or_none(self, name: str) -> str | None:
        try:
            return self.rev_parse(name) or None
        except SourceError:
            return None

    def git(
        self, *args: str, env: Mapping[str, str] | None = None, stdin: bytes | None = None
    ) -> bytes:
        """A local git command: no credentials, the scrubbed environment, the deadline."""
        argv = ["git", *SAFE_CONFIG, *args]
        operation = next(a for a in args if not a.startswith("-") and "=" not in a)
        try:
            done = self.run(
                argv,
                cwd=self.cwd,
                env={**base_env(), **(env or {})},
                timeout=self.timeout,
                stdin=stdin,
            )
        except subprocess.TimeoutExpired as exc:
            raise SourceUnavailable(
                f"git {operation} in {self.cwd} did not finish within {self.timeout:g} s"
            ) from exc
        except OSError as exc:
            raise SourceError(f"cannot run git in {self.cwd}: {self.scrub(str(exc))}") from exc
        if done.returncode != 0:
            raise SourceError(
                f"git {operation} in {self.cwd} failed: "
                f"{self.scrub(stderr_detail(done.stderr, done.returncode))}"
            )
        return done.stdout
