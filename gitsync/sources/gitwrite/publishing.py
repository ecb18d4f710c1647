"""The order of a publish's steps, and what each outcome means.

List the remote's tips, fetch the tracked one (and the branch's, if it
exists), build the tree, then decide: a tree equal to the tracked tip's is
`empty` (no commit; with `delete_when_empty` the remote branch goes), a remote
branch that already holds this tree on this parent is `unchanged` (nothing is
pushed; the commit message is not compared, so evidence counts that moved do
not churn the branch), and anything else is one new commit on the tracked tip,
force-pushed with a lease (or fast-forwarded when the branch is the tracked
one, explicitly allowed). Apart from the plumbing and the network so that
these decisions read in one place, free of how git is called.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from gitsync.sources.base import SourceError
from gitsync.sources.gitwrite.model import GitIdentity, PublishResult
from gitsync.sources.gitwrite.plumbing import HEADS
from gitsync.sources.gitwrite.remote import Remote

log = logging.getLogger("gitsync.sources.git")


def publish_on(
    remote: Remote,
    *,
    tracked: str,
    target: str,
    files: Mapping[str, str | None],
    message: str,
    author: GitIdentity,
    allow_tracked: bool,
    delete_when_empty: bool,
) -> PublishResult:
    """Put `files` on `target` as one commit on `tracked`'s tip, through `remote`."""
    git = remote.repository
    local_ref = f"{HEADS}{target} in {git.where}"
    if git.local:
        git.refuse_checked_out(target)
    listed = remote.ls_remote(tracked, target)
    if tracked not in listed:
        raise SourceError(
            f"branch {tracked!r} is not on the remote {remote.display}: give the branch "
            "gitsync tracks (gitsync run --branch)"
        )
    remote_tip = listed.get(target)
    # (With allow_tracked the branch may be the tracked one: fetched once.)
    other = target if remote_tip is not None and target != tracked else None
    tracked_ref, branch_ref = remote.fetch(tracked, other)
    tip = git.rev_parse(f"{tracked_ref}^{{commit}}")
    tip_tree = git.rev_parse(f"{tip}^{{tree}}")
    tree = git.tree_with(tip, files)
    result = PublishResult(
        branch=target,
        commit=tip,
        tracked_commit=tip,
        pushed=False,
        unchanged=False,
        empty=True,
        deleted=False,
        remote=remote.display,
        local_ref=local_ref,
    )
    if tree == tip_tree:
        if delete_when_empty and remote_tip is not None and target != tracked:
            remote.push(target, new=None, lease=remote_tip, local_ref=local_ref, commit=tip)
            ref = f"{HEADS}{target}"
            if git.rev_parse_or_none(ref) == remote_tip:  # ours, as pushed: goes too
                git.git("update-ref", "-d", ref, remote_tip)
            return replace(result, pushed=True, deleted=True)
        return result
    if remote_tip is not None and branch_ref is not None:
        there = git.read_commit(remote_tip)
        if there.tree == tree and there.parents == (tip,):
            git.set_branch(target, remote_tip, remote_tip=remote_tip, tracked=tracked)
            return replace(result, commit=remote_tip, unchanged=True, empty=False)
    commit = git.commit_tree(tree, parent=tip, message=message, author=author)
    git.set_branch(target, commit, remote_tip=remote_tip, tracked=tracked)
    force = not (allow_tracked and target == tracked)
    remote.push(
        target,
        new=commit,
        lease=(remote_tip or "") if force else None,
        local_ref=local_ref,
        commit=commit,
    )
    git.gc()
    log.info("pushed %s (%s) to %s", target, commit[:12], remote.display)
    return replace(result, commit=commit, pushed=True, empty=False)
