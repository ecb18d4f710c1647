"""The `gitsync` command line: subcommands, their flags and help (each flag also reads
GITSYNC_<FLAG> and the --config file; see `gitsync.config`)."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any

from gitsync import __version__

if TYPE_CHECKING:
    pass


def _add_common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("common options (each also reads GITSYNC_<FLAG>)")
    group.add_argument(
        "--provider",
        choices=("local", "kubernetes", "tencentcloud"),
        help="where caches live (default: local)",
    )
    group.add_argument("--data-dir", help="state and blobs (default: $XDG_DATA_HOME/gitsync)")
    group.add_argument("--config", help="YAML file of settings keyed by flag name")
    group.add_argument(
        "--controller-id", help="ownership tag of caches this controller manages (default: gitsync)"
    )


def _add_policy(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("safety")
    group.add_argument(
        "--max-delete-ratio",
        help="refuse plans deleting more than this share of owned caches (default: 0.5)",
    )
    group.add_argument(
        "--allow-mass-delete",
        action="store_true",
        default=None,
        help="apply plans that the mass-delete guard would refuse",
    )
    group.add_argument(
        "--renew-before",
        help="recreate a cache this long before it expires, e.g. 1d (default: never)",
    )


def _add_local(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("local backend")
    group.add_argument("--platform", help="platform picked from multi-arch images (linux/amd64)")
    group.add_argument(
        "--secrets-dir",
        help="folder of dockerconfigjson Secrets for imagePullSecrets: NAMESPACE/NAME.yaml",
    )
    group.add_argument("--docker-config", help="docker config.json with registry logins")
    group.add_argument(
        "--insecure-registry",
        action="append",
        metavar="HOST[:PORT]",
        help="allow plain HTTP to this registry (loopback registries always may)",
    )


def _add_kubernetes(parser: argparse.ArgumentParser, *, daemon: bool) -> None:
    group = parser.add_argument_group("kubernetes backend (in-cluster config by default)")
    group.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or in-cluster)")
    group.add_argument("--context", help="kubeconfig context")
    if not daemon:
        return
    group.add_argument("--namespaces", help="pods to observe, comma-separated (default: all)")
    group.add_argument(
        "--leader-elect", help="true: only the holder of a Lease reconciles (for replicas)"
    )
    group.add_argument("--leader-election-namespace", help="namespace of the Lease")
    group.add_argument("--leader-election-name", help="name of the Lease (gitsync-leader)")
    group.add_argument("--leader-election-identity", help="this replica's name (pod name)")
    group.add_argument("--cache-hit-reasons", help="pod event reasons meaning a cache hit")
    group.add_argument("--cache-partial-reasons", help="event reasons meaning a partial hit")
    group.add_argument("--cache-miss-reasons", help="event reasons meaning a miss")
    group.add_argument("--image-pull-reasons", help="event reasons meaning an image pull")


def _add_tencent(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "tencentcloud backend (credentials: TENCENTCLOUD_SECRET_ID/KEY or a credentials file)"
    )
    group.add_argument("--region", help="TKE region, e.g. ap-guangzhou")
    group.add_argument("--vpc-id", help="VPC of the instance that builds a cache")
    group.add_argument("--subnet-id", help="subnet of the instance that builds a cache")
    group.add_argument("--security-group-id", action="append", help="repeatable")
    group.add_argument(
        "--registry-http-endpoint", action="append", help="registries spoken to over plain HTTP"
    )
    group.add_argument(
        "--registry-skip-verify", action="append", help="registries whose TLS is not verified"
    )
    group.add_argument("--tencentcloud-endpoint", help="API endpoint HOST[:PORT] (private or test)")
    group.add_argument("--tencentcloud-scheme", choices=("http", "https"), default=None)
    group.add_argument("--tencentcloud-credentials-file", help="the SDK's INI credentials file")
    group.add_argument("--tencentcloud-profile", help="profile in that file (default: default)")
    group.add_argument(
        "--tencentcloud-cbs-endpoint",
        help="CBS API endpoint HOST[:PORT] for the snapshot checks (default: cbs.… beside a"
        " tke.… --tencentcloud-endpoint, else that endpoint, else cbs.tencentcloudapi.com)",
    )
    checks = parser.add_argument_group(
        "snapshot checks (tencentcloud; kubernetes given --region and Tencent Cloud credentials)"
    )
    checks.add_argument(
        "--snapshot-check-interval",
        help="look up the snapshot behind each Ready cache at most this often, e.g. 30m;"
        " 0 turns the checks off (default: 1h)",
    )


def _add_repo(parser: argparse.ArgumentParser, *, default_note: str) -> None:
    parser.add_argument("--repo", help=f"repository folder or URL ({default_note})")
    parser.add_argument("--path", help="only this folder of the repository")


_DEBUG_HELP = "on an unexpected error, show the traceback (also GITSYNC_DEBUG=1)"


class _Parser(argparse.ArgumentParser):
    """argparse, but `--interval -5s` hands `-5s` to the flag, whose check explains it.

    argparse takes only plain negative numbers (`-5`, `-0.5`) as values; `-5s`
    would be an unknown option and `--interval` would "expect one argument".
    No gitsync option starts with a dash and a digit, so nothing is shadowed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?[0-9]")


def _add_git_auth(parser: argparse.ArgumentParser) -> None:
    """How `run` and `suggest --push` authenticate to the repository."""
    parser.add_argument("--git-token-file", help="HTTPS token for the repository")
    parser.add_argument("--git-ssh-key", help="SSH private key for the repository")
    parser.add_argument(
        "--git-known-hosts", help="known_hosts file; host keys are checked strictly"
    )


def _add_observations(run: argparse.ArgumentParser) -> None:
    """`run`'s record of lookups, which `gitsync suggest` and /api/v1/suggestions read,
    and what it does about moving tags and image policies."""
    _add_automation(run)
    run.add_argument(
        "--observation-retention",
        help="keep the lookups pods and the mirror made this long, e.g. 14d (default: 30d)",
    )
    run.add_argument(
        "--observation-max-rows",
        help="keep at most this many lookups, the oldest dropped first (default: 2000000)",
    )
    run.add_argument(
        "--suggest-interval",
        help="work out /api/v1/suggestions this often, e.g. 5m (default: 10m; 0: off)",
    )


def _add_automation(run: argparse.ArgumentParser) -> None:
    """`run`'s refresh of moving tags and its automation branch."""
    run.add_argument(
        "--refresh-interval",
        help="resolve every cache's tags to digests this often and rebuild a cache whose tag"
        " moved, e.g. 6h (default: off; a cache's gitsync.io/refresh annotation wins)",
    )
    run.add_argument(
        "--automation-branch",
        help="keep this branch equal to the tracked branch plus the pending image-policy"
        " bumps, as one commit (default: none)",
    )
    run.add_argument(
        "--automation-suggestions",
        action="store_true",
        default=None,
        help="also put gitsync suggest's suggestions on --automation-branch",
    )
    run.add_argument(
        "--allow-push-to-tracked",
        action="store_true",
        default=None,
        help="let --automation-branch be the tracked branch itself (full automation)",
    )


def _add_suggest(commands: Any) -> argparse.ArgumentParser:
    """`gitsync suggest`'s own flags (the common ones are added with the others)."""
    suggest: argparse.ArgumentParser = commands.add_parser(
        "suggest",
        help="propose cache changes from what pods pulled (add, bump, remove, resize)",
        description=(
            "Read the lookups gitsync run recorded (in --data-dir) and the repository, and "
            "propose, ranked by value, the cache changes that follow the workloads: images "
            "that miss, newer tags pods run, caches nobody uses, sizes that no longer fit. "
            "--write edits the working tree; --push --branch NAME commits the edits on NAME "
            "and pushes it for review (never to the tracked branch)."
        ),
    )
    _add_repo(suggest, default_note="default: .")
    suggest.add_argument(
        "--since", help="the window of lookups to read, e.g. 7d, 36h (default: 7d)"
    )
    suggest.add_argument(
        "--min-misses", help="propose an image once it missed this many times (default: 3)"
    )
    suggest.add_argument("--format", choices=("text", "json", "markdown", "diff"), default=None)
    suggest.add_argument(
        "--write", action="store_true", default=None, help="edit the files in the working tree"
    )
    suggest.add_argument(
        "--no-size-check",
        action="store_true",
        default=None,
        help="read no manifests: new caches get no imageCacheSize (said so), no resize",
    )
    suggest.add_argument(
        "--push",
        action="store_true",
        default=None,
        help="commit the edits on --branch and push it to the repository's remote",
    )
    suggest.add_argument(
        "--branch",
        dest="push_branch",
        help="the branch --push writes (rewritten each time; never the tracked branch)",
    )
    suggest.add_argument(
        "--tracked-branch",
        help="the branch gitsync run follows, which the suggestions build on (default: the"
        " branch setting, else main)",
    )
    _add_git_auth(suggest)
    return suggest


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gitsync",
        description="A Git repository as the single source of truth for container-image caches.",
    )
    parser.add_argument("--version", action="version", version=f"gitsync {__version__}")
    parser.add_argument("--debug", action="store_true", default=False, help=_DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    validate = commands.add_parser(
        "validate",
        help="validate ImageCache files (exit 0 valid, 1 invalid, 2 usage)",
        description="Validate ImageCache YAML files or directories (default: .).",
    )
    validate.add_argument("paths", nargs="*", metavar="PATH", help="files or directories")
    validate.add_argument("--format", choices=("text", "json", "github"), default=None)

    plan = commands.add_parser(
        "plan",
        help="show what apply would change, its cost, and whether the images fit",
        description=(
            "Compare a revision of the cache repository with the provider's caches. The "
            "caches the plan builds are checked against their imageCacheSize, from the "
            "registries' manifests (exit 1 when one cannot fit)."
        ),
    )
    _add_repo(plan, default_note="default: .")
    plan.add_argument("--revision", help="commit, branch or tag (default: the working tree)")
    plan.add_argument("--format", choices=("text", "markdown", "json"), default=None)
    plan.add_argument(
        "--detailed-exitcode",
        action="store_true",
        default=None,
        help="exit 0 when nothing changes, 2 when something would (1 still wins)",
    )
    plan.add_argument(
        "--no-size-check",
        action="store_true",
        default=None,
        help="do not read the images' manifests to check that they fit imageCacheSize",
    )

    apply = commands.add_parser(
        "apply",
        help="one reconcile pass, then exit (0 applied, 1 failed)",
        description=(
            "Bring the provider's caches to a revision of the repository, once. On the "
            "kubernetes and tencentcloud backends the caches build after apply returns: "
            "exit 0 means every change was accepted; --wait waits until they are Ready."
        ),
    )
    _add_repo(apply, default_note="default: .")
    apply.add_argument("--revision", help="commit, branch or tag (default: the working tree)")
    apply.add_argument(
        "--wait",
        action="store_true",
        default=None,
        help="wait until every cache of the revision is Ready; exit 1 if one fails or at --timeout",
    )
    apply.add_argument("--timeout", help="how long --wait waits, e.g. 90s, 1h30m (default: 10m)")

    run = commands.add_parser(
        "run",
        help="the daemon: keep the caches equal to Git",
        description="Fetch, validate, plan and apply on every interval, webhook or change.",
    )
    _add_repo(run, default_note="required")
    run.add_argument("--branch", help="branch, tag or commit to follow (default: main)")
    run.add_argument("--interval", help="poll interval, e.g. 60s, 5m (default: 60s)")
    run.add_argument("--listen", help="HTTP address (default: 127.0.0.1:9108)")
    run.add_argument(
        "--liveness-timeout",
        help="/healthz fails when one pass runs longer than this, e.g. 10m "
        "(default: the larger of 3 intervals and 5m)",
    )
    run.add_argument("--webhook-secret-file", help="enables /hooks/*: the shared secret")
    run.add_argument(
        "--scrub-interval",
        help="local backend: re-hash every served blob this often, e.g. 24h (default: 24h; 0: off)",
    )
    run.add_argument(
        "--scrub-rate",
        help="local backend: bytes per second the scrub reads, e.g. 50M, 1G (default: 50M)",
    )
    _add_git_auth(run)
    run.add_argument("--log-level", help="debug, info, warning, error (default: info)")
    run.add_argument("--log-format", choices=("auto", "json", "text"), default=None)

    _add_observations(run)  # and the refresh and automation flags
    suggest = _add_suggest(commands)

    status = commands.add_parser("status", help="caches, status, expiry, revision, last error")
    status.add_argument("--format", choices=("text", "json"), default=None)

    match = commands.add_parser(
        "match", help="which cache a pod with these images would use (0 match, 3 none)"
    )
    match.add_argument("images", nargs="+", metavar="IMAGE")
    match.add_argument("--cache", help="manual match: a cache name or imc-… id")
    match.add_argument("--format", choices=("text", "json"), default=None)

    export = commands.add_parser("export", help="write a cache's images as an OCI image layout")
    export.add_argument("name", metavar="NAME", help="cache name or imc-… id")
    export.add_argument("--dest", help="oci:DIR")
    export.add_argument(
        "--link",
        action="store_true",
        default=None,
        help="hard-link blobs when DIR is on the data dir's file system",
    )

    gc = commands.add_parser(
        "gc", help="drop blobs no snapshot references and no running pull holds (local backend)"
    )
    gc.add_argument(
        "--grace", help="also keep blobs written or reused less than this ago, e.g. 1h (default: 0)"
    )

    for sub in (validate, plan, apply, run, suggest, status, match, export, gc):
        # Also after the command; SUPPRESS keeps the subcommand from resetting a global --debug.
        sub.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
        )
    for sub in (plan, apply, run, suggest, status, gc, match, export):
        _add_common(sub)
    for sub in (plan, apply, run):
        _add_policy(sub)
    for sub in (plan, apply, run, suggest, status, gc, export):
        _add_local(sub)  # plan: the size check reads manifests with these registry settings
    for sub in (plan, apply, run, suggest, status, match):
        _add_tencent(sub)
        _add_kubernetes(sub, daemon=sub is run)
    return parser
