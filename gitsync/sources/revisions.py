"""Reading one revision of a local repository in place, with GitPython.

For the one-shot commands: `head_revision` is the commit a work tree has checked
out, and `export_local_revision` writes the files of one revision into a folder
(`plan`/`apply --revision`). The revision is anything GitPython's rev-parse takes
(`repo.commit(rev)`), and the files come from a walk of `commit.tree` whose blobs
are read by one `git cat-file --batch`. Like git, GitPython reads objects where
the caller's GIT_OBJECT_DIRECTORY and GIT_ALTERNATE_OBJECT_DIRECTORIES point, so
`plan` in a pre-receive hook sees the pushed commit in its quarantine.

GitPython is imported on first use: the import runs `git version`, and fails
without git, which a plain folder of specs does not need (and `validate` never
loads it). Its exceptions become `SourceError` where they are caught, with git's
message and never the command line.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from gitsync.sources.base import Checkout, SourceError
from gitsync.sources.credentials import redact_url
from gitsync.sources.gitcommand import stderr_detail

if TYPE_CHECKING:
    import git

# The git source's logger: everything the git source logs goes under one name.
log = logging.getLogger("gitsync.sources.git")


def open_repo(path: Path) -> git.Repo:
    """GitPython's view of the repository that holds `path` (a work tree, a subfolder, a bare one).

    GitPython is imported here, on first use: importing it runs `git version`, and
    fails without git, which a plain folder of specs does not need.
    """
    try:
        import git  # noqa: PLC0415  # see the docstring
    except ImportError as exc:
        if exc.name in {"git", "gitdb", "smmap"}:
            raise SourceError(
                "GitPython is not installed: pip install 'gitpython>=3.1.40'"
            ) from exc
        raise SourceError("the git command is not installed or not on PATH") from exc
    try:
        return git.Repo(path, search_parent_directories=True)
    except git.exc.NoSuchPathError as exc:
        raise SourceError(f"repository {path} does not exist") from exc
    except git.exc.InvalidGitRepositoryError as exc:
        raise SourceError(
            f"{path} is not in a git repository: give a git work tree (or a folder in one), "
            "a bare repository or a URL"
        ) from exc


def gitpython_failure(exc: Exception, *, what: str) -> SourceError:
    """The SourceError for a git process GitPython ran that failed; no command line in it."""
    import git  # noqa: PLC0415  # loaded already: only open_repo's repositories get here

    if isinstance(exc, git.exc.GitCommandNotFound):
        return SourceError("the git command is not installed or not on PATH")
    if isinstance(exc, git.exc.GitCommandError):
        stderr = exc.stderr.removeprefix("\n  stderr: '").removesuffix("'")
        status = exc.status if isinstance(exc.status, int) else -1
        return SourceError(f"{what} failed: {redact_url(stderr_detail(stderr.encode(), status))}")
    return SourceError(f"{what} failed: {redact_url(str(exc))}")


def head_revision(repo: Path) -> str | None:
    """The commit checked out in a work tree, or None: not a git work tree, or no commit yet."""
    try:
        opened = open_repo(repo)
    except SourceError:
        return None
    import git  # noqa: PLC0415  # loaded by open_repo

    with opened:
        try:
            return opened.head.commit.hexsha
        except ValueError:  # an unborn branch: `git init` and no commit yet
            return None
        except (git.exc.GitError, git.exc.ODBError) as exc:  # a damaged repository
            log.debug("cannot read HEAD of %s: %s", repo, gitpython_failure(exc, what="git"))
            return None


def export_local_revision(*, local: Path, revision: str, dest: Path) -> Checkout:
    """The files of `revision` of the local repository holding `local`, written under `dest`.

    Given a folder inside a work tree, only that folder of the revision is
    written, as `git archive` does.
    """
    with open_repo(local) as opened:
        import git  # noqa: PLC0415  # loaded by open_repo, which turns its absence into a SourceError

        where = f"revision {revision!r} of {local}"
        try:
            commit = opened.commit(revision)
            tree = commit.tree  # reads the commit: a full id that names nothing fails here
        except (git.exc.BadName, git.exc.BadObject, ValueError) as exc:
            raise SourceError(
                f"{where} is not a commit: give a branch, a tag, a commit id (abbreviated too) "
                "or an expression such as HEAD~1"
            ) from exc
        except (git.exc.GitError, git.exc.ODBError) as exc:
            raise gitpython_failure(exc, what=f"reading {where}") from exc
        prefix = _folder_in_work_tree(local, opened.working_tree_dir)
        if prefix:
            try:
                found = tree / prefix
            except KeyError:
                found = None
            if found is None or found.type != "tree":
                raise SourceError(
                    f"folder {prefix!r} does not exist in revision {commit.hexsha[:12]} of "
                    f"{opened.working_tree_dir}; give the repository root or a folder that "
                    "the revision has"
                )
            tree = found
        try:
            write_tree(tree, dest)
        except (git.exc.GitError, git.exc.ODBError, ValueError) as exc:  # a damaged object
            raise gitpython_failure(exc, what=f"reading {where}") from exc
        except OSError as exc:
            raise SourceError(f"cannot write {where} into {dest}: {exc.strerror or exc}") from exc
        return Checkout(path=dest, revision=commit.hexsha)


def _folder_in_work_tree(folder: Path, work_tree: str | os.PathLike[str] | None) -> str:
    """`folder` relative to the work tree root, '' for the root itself or a bare repository."""
    if work_tree is None:
        return ""
    try:
        relative = folder.resolve().relative_to(Path(work_tree).resolve())
    except ValueError:  # GIT_WORK_TREE names another folder: take the whole tree, as git does
        return ""
    return "" if relative == Path() else relative.as_posix()


def write_tree(tree: git.Tree, dest: Path) -> None:
    """Write the files of a git tree under `dest`: blobs from the object database, no checkout.

    A git tree can be made by hand (`git mktree`) with names git would never check
    out; those are refused, so nothing lands outside `dest` or in a `.git` folder.
    Every file is created new (O_EXCL, O_NOFOLLOW), and symbolic links are made
    last, so no write goes through a link the tree itself holds.
    """
    links: list[tuple[Path, str]] = []
    pending = [(tree, dest)]
    while pending:
        current, folder = pending.pop()
        try:
            entries = list(current)
        except ValueError as exc:  # GitPython ≥ 3.2 checks the names as it parses a tree
            raise SourceError(f"refusing to write a path git never checks out: {exc}") from exc
        for entry in entries:
            name = entry.name
            if name in {"", ".", ".."} or "/" in name or "\0" in name or name.lower() == ".git":
                raise SourceError(f"refusing to write a path git never checks out: {entry.path!r}")
            target = folder / name
            if entry.type == "tree":
                target.mkdir()
                pending.append((entry, target))
            elif entry.type != "blob":  # a submodule: an empty folder, as in a checkout
                target.mkdir()
            elif stat.S_ISLNK(entry.mode):
                links.append((target, os.fsdecode(entry.data_stream.read())))
            else:
                mode = 0o777 if entry.mode & 0o111 else 0o666  # the umask applies, as in git
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                with os.fdopen(os.open(target, flags, mode), "wb") as file:
                    entry.stream_data(file)
    for target, link in links:
        os.symlink(link, target)
