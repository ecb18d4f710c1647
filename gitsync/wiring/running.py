"""`gitsync run`'s daemon and what runs beside it, put together from the settings.

The loop (`gitsync.daemon`), and beside it: the `/v2/` mirror, the
observation store's writer and the savings estimate, the suggestions, the tag
refresher, the image-policy listing, the automation branch and, on
Kubernetes, the pod observer and the Lease. Each is built here and handed to
the daemon, which starts, pokes and stops them; none of them knows the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gitsync import __version__
from gitsync.config import CommandSettings
from gitsync.errors import ConfigError
from gitsync.providers.base import innermost

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gitsync.daemon import Daemon, Helper
    from gitsync.digestrecord import ResolvedFile
    from gitsync.digests import ResolvedDigest
    from gitsync.liveness import Heartbeat
    from gitsync.metrics import DaemonMetrics, ExpositionRegistry
    from gitsync.observations.model import Evidence
    from gitsync.policyloop import PolicyLoop
    from gitsync.providers.base import Provider
    from gitsync.providers.local.scrub import Scrubber
    from gitsync.suggester import SuggestionLoop

from gitsync.wiring.providers import image_sizes, mirror_for, reconciler

log = logging.getLogger("gitsync.wiring")


# ------------------------------------------------------------------ the daemon


def heartbeat(settings: CommandSettings) -> Heartbeat:
    """Resolves every setting of `run` (a typo fails before the data dir is locked) and
    returns the heartbeat that the provider's progress and the loop report into."""
    from gitsync.liveness import Heartbeat, default_timeout

    settings.source(default_repo="")
    loop = settings.daemon
    settings.git  # noqa: B018  # resolved now: an unreadable token file fails at start
    settings.automation  # noqa: B018  # likewise: a bad --refresh-interval or branch
    settings.observations  # noqa: B018  # likewise
    settings.webhook_secret  # noqa: B018  # likewise
    timeout = loop.liveness_timeout
    return Heartbeat(
        timeout_seconds=(
            timeout.total_seconds()
            if timeout is not None
            else default_timeout(loop.interval.total_seconds())
        )
    )


def scrubber(
    settings: CommandSettings, *, provider: Provider, metrics: DaemonMetrics
) -> Scrubber | None:
    """The local backend's scrub thread; None on another backend or with --scrub-interval 0."""
    from gitsync.providers.local.provider import LocalProvider
    from gitsync.providers.local.scrub import Scrubber

    loop = settings.daemon
    local = innermost(provider)
    if not isinstance(local, LocalProvider) or not loop.scrub_interval.total_seconds():
        return None
    return Scrubber(
        local,
        interval_seconds=loop.scrub_interval.total_seconds(),
        rate_bytes=loop.scrub_rate,
        on_bytes=metrics.scrub_bytes.inc,
    )


def daemon(
    settings: CommandSettings,
    *,
    provider: Provider,
    heartbeat: Heartbeat | None = None,
    registry: ExpositionRegistry | None = None,
) -> Daemon:
    """`gitsync run`'s daemon over `provider`: source, reconciler, metrics, HTTP, mirror and,
    on the kubernetes backend, the pod observer and the Lease."""
    from prometheus_client import disable_created_metrics

    from gitsync.daemon import Daemon
    from gitsync.metrics import DaemonMetrics, ExpositionRegistry
    from gitsync.sources import open_source
    from gitsync.sources.git import GitCredentials

    common, source, loop, git = (
        settings.common,
        settings.source(default_repo=""),
        settings.daemon,
        settings.git,
    )
    # *_created series double the body for nothing we alert on; untyped upstream.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    if registry is None:
        registry = ExpositionRegistry()
    built = Daemon(
        source=open_source(
            url=source.repo,
            ref=source.branch,
            path=source.path or None,
            cache_dir=common.data_dir / "source",
            credentials=GitCredentials(
                https_token=git.https_token,
                ssh_key_path=git.ssh_key_path,
                known_hosts_path=git.known_hosts_path,
            ),
        ),
        reconciler=reconciler(common, provider),
        registry=registry,
        metrics=DaemonMetrics(registry=registry, version=__version__),
        interval_seconds=loop.interval.total_seconds(),
        host=loop.host,
        port=loop.port,
        branch=source.branch,
        webhook_secret=settings.webhook_secret,
        version=__version__,
        heartbeat=heartbeat,
        mirror=mirror_for(provider),
        **_observation_parts(settings),
    )
    policies = _policy_loop(settings, daemon=built)
    suggestions = _suggestion_loop(settings, daemon=built, policies=policies)
    if suggestions is not None:
        built.http.suggestions = suggestions  # /api/v1/suggestions
        built.attach_helper(suggestions)
        policies.listen(suggestions.poke)
    _attach_refresh(settings, daemon=built, registry=registry)
    _attach_automation(
        settings, daemon=built, registry=registry, policies=policies, suggestions=suggestions
    )
    if common.provider == "kubernetes":
        _attach_kubernetes(built, settings)
    return built


def _attach_refresh(
    settings: CommandSettings, *, daemon: Daemon, registry: ExpositionRegistry
) -> None:
    """The tag refresher: caches annotated gitsync.io/refresh, or all under --refresh-interval,
    resolve their tags to digests and are rebuilt when one moves (gitsync.refresh)."""
    from gitsync.digestrecord import ResolvedFile
    from gitsync.metrics import RefreshMetrics
    from gitsync.providers.local.tagdigests import TagDigestResolver
    from gitsync.refresh import DigestRefresher

    common, interval = settings.common, settings.automation.refresh_interval
    resolver = TagDigestResolver(
        docker_config=common.docker_config,
        secrets_dir=common.secrets_dir,
        insecure_registries=(
            *common.insecure_registries,
            *settings.tencent.registry_http_endpoints,
        ),
    )
    refresher = DigestRefresher(
        resolve=resolver,
        desired=daemon.desired_caches,
        default_interval_seconds=interval.total_seconds() if interval is not None else None,
        observed=daemon.current_caches,
        owner=common.controller_id,
        metrics=RefreshMetrics(registry=registry),
        on_change=lambda: daemon.queue.put("refresh"),
    )
    daemon.reconciler.follow_tags(refresher.tag_digests)
    daemon.http.resolved = refresher.resolved
    daemon.attach_helper(_ClosedAfter(refresher, close=resolver.close))
    daemon.attach_helper(_SavedRecord(ResolvedFile(common.data_dir), refresher.resolved))


class _SavedRecord:
    """After each pass (a poke) and at the end, the refresher's record for `gitsync status`."""

    def __init__(
        self, file: ResolvedFile, resolved: Callable[[], Mapping[str, ResolvedDigest]]
    ) -> None:
        self._file = file
        self._resolved = resolved

    def start(self) -> None:
        return None  # nothing to write before the first pass

    def poke(self) -> None:
        self._file.save(self._resolved())

    def stop(self, timeout: float = 5.0) -> None:
        self._file.save(self._resolved())


class _ClosedAfter:
    """A helper whose resources (a registry client's connections) close once it stopped."""

    def __init__(self, helper: Helper, *, close: Callable[[], None]) -> None:
        self._helper = helper
        self._close = close

    def start(self) -> None:
        self._helper.start()

    def poke(self) -> None:
        self._helper.poke()

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self._helper.stop(timeout)
        finally:
            self._close()


OBSERVATIONS_FILE = "observations.db"  # under --data-dir; `gitsync suggest` reads it too


def _observation_parts(settings: CommandSettings) -> dict[str, Any]:
    """The observation store's writer and the savings estimate, seeded from what it holds."""
    import time

    from gitsync.observations.recorder import BatchRecorder
    from gitsync.observations.savings import SavingsEstimator
    from gitsync.observations.store import ObservationStore

    common, kept = settings.common, settings.observations
    path = common.data_dir / OBSERVATIONS_FILE
    now = time.time()
    with ObservationStore.open_readonly(path) as store:
        seen = store.evidence(since=now - kept.retention.total_seconds(), until=now)
    return {
        "recorder": BatchRecorder(
            lambda: ObservationStore(
                path,
                retention_seconds=kept.retention.total_seconds(),
                max_rows=kept.max_rows,
            )
        ),
        "savings": SavingsEstimator(
            pull_bytes_per_second=common.prices.pull_bytes_per_second, evidence=seen
        ),
    }


def _suggestion_loop(
    settings: CommandSettings, *, daemon: Daemon, policies: PolicyLoop
) -> SuggestionLoop | None:
    """/api/v1/suggestions and gitsync_suggestions, worked out every --suggest-interval."""
    from gitsync.observations.store import ObservationStore
    from gitsync.suggester import SuggestionLoop

    interval = settings.observations.suggest_interval.total_seconds()
    if not interval:
        return None
    path = settings.common.data_dir / OBSERVATIONS_FILE

    class _Reader:
        """Opens the store read-only per round: it may not exist until the first lookup."""

        def evidence(self, *, since: float, until: float) -> Evidence:
            with ObservationStore.open_readonly(path) as store:
                return store.evidence(since=since, until=until)

    return SuggestionLoop(
        store=_Reader(),
        desired=daemon.desired_caches,
        observed=daemon.current_caches,
        prices=settings.common.prices,
        interval_seconds=interval,
        on_counts=daemon.metrics.set_suggestions,
        sizes=lambda images: image_sizes(settings, images),
        policy_bumps=policies.latest,
    )


def _policy_loop(settings: CommandSettings, *, daemon: Daemon) -> PolicyLoop:
    """The image policies' bumps (`# gitsync:` markers), listed from the registries."""
    from gitsync.policyloop import PolicyLoop
    from gitsync.providers.local.tags import PolicyResolver

    common, interval = settings.common, settings.automation.refresh_interval
    resolver = PolicyResolver(
        docker_config=common.docker_config,
        secrets_dir=common.secrets_dir,
        insecure_registries=(
            *common.insecure_registries,
            *settings.tencent.registry_http_endpoints,
        ),
        prices=common.prices,
    )
    policies = PolicyLoop(
        resolve=resolver.suggestions,
        desired=daemon.desired_caches,
        default_interval_seconds=interval.total_seconds() if interval is not None else None,
    )
    daemon.attach_helper(_ClosedAfter(policies, close=resolver.close))
    return policies


def _attach_automation(
    settings: CommandSettings,
    *,
    daemon: Daemon,
    registry: ExpositionRegistry,
    policies: PolicyLoop,
    suggestions: SuggestionLoop | None,
) -> None:
    """--automation-branch: the pending bumps (and suggestions) as one commit on a branch."""
    from gitsync.automation import AUTOMATION_GIT_DIR, AutomationBranch
    from gitsync.metrics.automation import AutomationMetrics
    from gitsync.policyloop import policy_interval
    from gitsync.sources.git import GitCredentials

    automation, source, git = settings.automation, settings.source(default_repo=""), settings.git
    if not automation.branch:
        return
    default = automation.refresh_interval
    branch = AutomationBranch(
        repo=source.repo,
        tracked_branch=source.branch,
        branch=automation.branch,
        path=source.path,
        work_dir=settings.common.data_dir / AUTOMATION_GIT_DIR,
        bumps=policies.latest,
        suggestions=(
            suggestions.found if suggestions is not None and automation.with_suggestions else None
        ),
        credentials=GitCredentials(
            https_token=git.https_token,
            ssh_key_path=git.ssh_key_path,
            known_hosts_path=git.known_hosts_path,
        ),
        allow_push_to_tracked=automation.allow_push_to_tracked,
        # As often as the policies are listed; a poke (new bumps, a new revision) comes sooner.
        interval_seconds=policy_interval(
            (), default_seconds=default.total_seconds() if default is not None else None
        ),
        metrics=AutomationMetrics(registry=registry),
    )
    policies.listen(branch.poke)
    daemon.attach_helper(branch)


def _attach_kubernetes(daemon: Daemon, settings: CommandSettings) -> None:
    """The pod observer and, with --leader-elect, the Lease: the in-cluster extras of run."""
    from gitsync.leader import LeaderElector, default_identity
    from gitsync.observers.kubernetes import LookupReasons, PodLookupTracker, PodObserver
    from gitsync.providers.kubernetes import load_api_client

    kubernetes = settings.kubernetes
    api = load_api_client(kubeconfig=kubernetes.kubeconfig, context=kubernetes.context)
    defaults = LookupReasons()
    reasons = LookupReasons(
        hit=kubernetes.cache_hit_reasons or defaults.hit,
        partial=kubernetes.cache_partial_reasons or defaults.partial,
        miss=kubernetes.cache_miss_reasons or defaults.miss,
        pulling=kubernetes.image_pull_reasons or defaults.pulling,
    )

    def cache_name(cache_id: str) -> str | None:
        return next((c.name for c in daemon.current_caches() if c.cache_id == cache_id), None)

    tracker = PodLookupTracker(
        recorder=daemon.usage,
        reasons=reasons,
        resolve_cache=cache_name,
        observe=daemon.lookups.observe_all if daemon.lookups is not None else None,
    )
    daemon.attach_observer(
        PodObserver(api_client=api, tracker=tracker, namespaces=kubernetes.namespaces)
    )
    if kubernetes.leader_elect:
        if not kubernetes.leader_election_namespace:
            raise ConfigError("--leader-elect needs --leader-election-namespace (the pod's own)")
        daemon.attach_leader(
            LeaderElector(
                api_client=api,
                namespace=kubernetes.leader_election_namespace,
                name=kubernetes.leader_election_name,
                identity=kubernetes.leader_election_identity or default_identity(),
                on_started_leading=daemon.on_started_leading,
                on_stopped_leading=daemon.on_stopped_leading,
            )
        )
