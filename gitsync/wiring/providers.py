"""The backends and the plan: the provider a command works on, its mirror, its sizes.

Heavy backends (the Kubernetes client, the Tencent Cloud SDK, httpx) are
imported inside the function that needs them, so importing the wiring keeps
`gitsync validate` fast. What only some backends can do is asked of the
provider through the capability Protocols of `providers.base` (`HoldsImages`,
`CollectsGarbage`, `SuggestsCache`), never by naming a provider class.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from gitsync import __version__
from gitsync.config import CommandSettings, Settings
from gitsync.errors import ConfigError
from gitsync.model import ActionKind, ObservedState, Plan
from gitsync.providers.base import HoldsImages, innermost

if TYPE_CHECKING:
    from datetime import timedelta

    from gitsync.daemon import MirrorFactory
    from gitsync.providers.base import Provider
    from gitsync.providers.local.provider import LocalProvider
    from gitsync.reconciler import Reconciler
    from gitsync.sizing import ImageOutcome, SizeReport

log = logging.getLogger("gitsync.wiring")


class CredentialChain(Protocol):
    """Where Tencent Cloud credentials come from (the chain lives with the CLI for now)."""

    @property
    def explicit(self) -> bool:
        """Given on purpose: the environment or --tencentcloud-credentials-file, not the
        ~/.tencentcloud/credentials a cluster user may hold for other reasons."""
        ...

    def __call__(self, tc: Any, *, default_file: bool) -> Any:
        """The SDK's credentials (`tc` is the provider module), or None when none are given;
        `default_file` also reads ~/.tencentcloud/credentials."""
        ...


class _NoCredentials:
    """No Tencent Cloud credentials at all (the benchmarks, a local-only caller)."""

    explicit = False

    def __call__(self, tc: Any, *, default_file: bool) -> Any:
        return None


NO_CREDENTIALS: CredentialChain = _NoCredentials()


# ------------------------------------------------------------------ providers


def open_provider(
    settings: CommandSettings,
    *,
    credentials: CredentialChain = NO_CREDENTIALS,
    writable: bool,
    on_progress: Callable[[Any], None] | None = None,
) -> Provider:
    """The chosen backend; heavy SDKs load only here, when that backend is chosen.

    `on_progress` hears of every step of a local pull.
    """
    common = settings.common
    if common.provider == "local":
        from gitsync.providers.local.provider import LocalProvider  # lazy

        return LocalProvider(
            data_dir=common.data_dir,
            platform=common.platform,
            secrets_dir=common.secrets_dir,
            docker_config=common.docker_config,
            insecure_registries=common.insecure_registries,
            writable=writable,
            on_progress=on_progress,
        )
    if common.provider == "tencentcloud":
        return tencent_provider(settings, credentials=credentials)
    if common.provider == "kubernetes":
        from gitsync.providers.kubernetes import KubernetesProvider  # lazy

        kubernetes = settings.kubernetes
        provider = KubernetesProvider.from_config(
            kubeconfig=kubernetes.kubeconfig, context=kubernetes.context
        )
        return kubernetes_snapshot_checks(provider, settings=settings, credentials=credentials)
    raise ConfigError(
        f"--provider {common.provider}: this backend is not available yet in gitsync "
        f"{__version__}; use --provider local or tencentcloud"
    )


def observe(settings: CommandSettings, *, credentials: CredentialChain) -> ObservedState:
    """The provider's caches now, for commands that only read them (plan, status)."""
    common = settings.common
    if common.provider == "local":
        from gitsync.providers.local.provider import STATE_FILE  # lazy

        if not (common.data_dir / STATE_FILE).exists():
            return ObservedState(caches=())  # nothing was ever created here; create nothing
    provider = open_provider(settings, credentials=credentials, writable=False)
    try:
        return provider.observe()
    finally:
        provider.close()


def _tencent_module() -> Any:
    try:
        from gitsync.providers import tencentcloud  # heavy SDK, lazy
    except ImportError as exc:
        raise ConfigError(
            "--provider tencentcloud needs the Tencent Cloud SDK: pip install 'gitsync[tencent]'"
        ) from exc
    return tencentcloud


def tencent_provider(settings: CommandSettings, *, credentials: CredentialChain) -> Provider:
    """TKE's ImageCache API, with the snapshot checks unless --snapshot-check-interval is 0."""
    tc = _tencent_module()
    tencent = settings.tencent
    if not tencent.region:
        raise ConfigError("--provider tencentcloud needs --region (e.g. ap-guangzhou)")
    found = credentials(tc, default_file=True)
    if found is None:
        raise ConfigError(
            "--provider tencentcloud needs credentials: set TENCENTCLOUD_SECRET_ID and "
            "TENCENTCLOUD_SECRET_KEY, or --tencentcloud-credentials-file"
        )
    interval = settings.snapshot_check_interval
    tc_settings = tc.TencentCloudSettings(
        region=tencent.region,
        vpc_id=tencent.vpc_id,
        subnet_id=tencent.subnet_id,
        security_group_ids=tencent.security_group_ids,
        registry_http_endpoints=tencent.registry_http_endpoints,
        registry_skip_verify=tencent.registry_skip_verify,
        endpoint=tencent.endpoint,
        scheme=tencent.scheme,
        cbs_endpoint=tencent.cbs_endpoint,
        secrets_dir=settings.common.secrets_dir,
    )
    provider: Provider = tc.TencentCloudProvider(settings=tc_settings, credentials=found)
    if not interval:
        return provider
    return _snapshot_checked(
        provider, tc_settings=tc_settings, credentials=found, interval=interval
    )


def kubernetes_snapshot_checks(
    provider: Provider, *, settings: CommandSettings, credentials: CredentialChain
) -> Provider:
    """The operator's caches are TKE caches too: check their CBS snapshots when gitsync can.

    On when gitsync is given both a region (--region or TENCENTCLOUD_REGION) and
    explicit credentials (TENCENTCLOUD_SECRET_ID and _KEY, or
    --tencentcloud-credentials-file; not ~/.tencentcloud/credentials, which a
    cluster user may hold for other reasons), unless --snapshot-check-interval is
    0; it then needs the Tencent Cloud SDK. Given only one of the two, the checks
    stay off with a warning. Closes `provider` when the settings are wrong.
    """
    try:
        interval = settings.snapshot_check_interval
        tencent = settings.tencent
        region, explicit = tencent.region, credentials.explicit
        if not interval or not (region or explicit):
            return provider
        if not (region and explicit):
            log.warning(
                "snapshot checks are off: on the kubernetes backend they need both --region"
                " and Tencent Cloud credentials (TENCENTCLOUD_SECRET_ID/KEY or"
                " --tencentcloud-credentials-file); %s is missing",
                "the region" if not region else "the credentials",
            )
            return provider
        try:
            tc = _tencent_module()
        except ConfigError as exc:
            raise ConfigError(
                "snapshot checks on the kubernetes backend (--region and Tencent Cloud"
                " credentials are set) need the Tencent Cloud SDK: pip install"
                " 'gitsync[tencent]', or --snapshot-check-interval 0"
            ) from exc
        found = credentials(tc, default_file=False)
        tc_settings = tc.TencentCloudSettings(
            region=region,
            endpoint=tencent.endpoint,
            scheme=tencent.scheme,
            cbs_endpoint=tencent.cbs_endpoint,
        )
    except BaseException:
        provider.close()
        raise
    return _snapshot_checked(
        provider, tc_settings=tc_settings, credentials=found, interval=interval
    )


def _snapshot_checked(
    provider: Provider, *, tc_settings: Any, credentials: Any, interval: timedelta
) -> Provider:
    """`provider` with the CBS snapshot behind each Ready cache looked up (providers.snapshots).

    Closes `provider` when the checks cannot be set up, so the caller has nothing to undo.
    """
    from gitsync.providers.snapshots import SnapshotChecked

    try:
        try:
            from gitsync.providers.tencentcloud.snapshots import CbsSnapshotLookup  # heavy SDK
        except ImportError as exc:
            raise ConfigError(
                "snapshot checks need the Tencent Cloud CBS SDK (tencentcloud-sdk-python-cbs):"
                " pip install 'gitsync[tencent]', or turn them off with"
                " --snapshot-check-interval 0"
            ) from exc
        lookup = CbsSnapshotLookup(settings=tc_settings, credentials=credentials)
    except BaseException:
        provider.close()
        raise
    return SnapshotChecked(provider, lookup=lookup, interval_seconds=interval.total_seconds())


def image_store(provider: Provider) -> LocalProvider | None:
    """The provider's local image content (the `/v2/` mirror's and `export`'s), if it has any."""
    inner = innermost(provider)
    if not isinstance(inner, HoldsImages):
        return None
    # providers.local's mirror and export are typed with the one store that exists.
    return cast("LocalProvider", inner)


def mirror_for(provider: Provider) -> MirrorFactory | None:
    """The daemon's read-only `/v2/` registry over cached images, when the provider holds them."""
    store = image_store(provider)
    if store is None:
        return None
    from gitsync.providers.local.mirror import Mirror  # lazy

    return lambda on_lookup, on_observation: (
        Mirror(store, on_lookup=on_lookup, on_observation=on_observation).handle
    )


# ------------------------------------------------------------------ planning and reconciling


def reconciler(settings: Settings, provider: Provider) -> Reconciler:
    from gitsync.controller_record import RecordFile
    from gitsync.reconciler import ReconcilePolicy, Reconciler

    return Reconciler(
        provider=provider,
        records=RecordFile(settings.data_dir),
        policy=ReconcilePolicy(
            controller_id=settings.controller_id,
            max_delete_ratio=settings.max_delete_ratio,
            allow_mass_delete=settings.allow_mass_delete,
            renew_before=settings.renew_before,
        ),
        prices=settings.prices,
    )


def size_report(settings: CommandSettings, the_plan: Plan) -> SizeReport:
    """Check the caches the plan builds against their imageCacheSize (see `gitsync.sizing`).

    Unchanged caches are not checked: nothing is built for them. The manifests
    are read with the registry settings of the local backend (docker config,
    --secrets-dir, --insecure-registry, --platform) whatever the provider, plus
    the tencentcloud backend's --registry-http-endpoint registries.
    """
    from gitsync import sizing

    if not settings.size_check:
        return sizing.SizeReport(off="--no-size-check")
    builds = (ActionKind.CREATE, ActionKind.UPDATE, ActionKind.RECREATE)
    specs = [a.desired for a in the_plan.actions if a.kind in builds and a.desired is not None]
    if not specs:
        return sizing.SizeReport()
    from gitsync.providers.local.imagesizes import ImageSizeResolver
    from gitsync.providers.local.provider import STORE_DIR

    common = settings.common
    with ImageSizeResolver(
        store_root=common.data_dir / STORE_DIR,
        platform=common.platform,
        docker_config=common.docker_config,
        secrets_dir=common.secrets_dir,
        insecure_registries=(
            *common.insecure_registries,
            *settings.tencent.registry_http_endpoints,
        ),
    ) as resolver:
        facts = resolver.facts(specs)
    return sizing.SizeReport(
        caches=tuple(sizing.check_cache(spec, facts[spec.name]) for spec in specs)
    )


def image_sizes(
    settings: CommandSettings, images: Sequence[str], *, pull_secrets: Sequence[str] = ()
) -> dict[str, ImageOutcome]:
    """What the registries (and the local store) say about `images`, by canonical reference.

    For the suggestions' new caches and sizes: read with the same registry
    settings as plan's size check. An unreachable registry gives an
    `Unresolved` with the reason, never an exception.
    """
    from gitsync import imageref
    from gitsync.model import CacheSpec
    from gitsync.providers.local.imagesizes import ImageSizeResolver
    from gitsync.providers.local.provider import STORE_DIR

    if not images:
        return {}
    common = settings.common
    probe = CacheSpec(
        name="suggested", images=tuple(images), image_pull_secrets=tuple(pull_secrets)
    )
    with ImageSizeResolver(
        store_root=common.data_dir / STORE_DIR,
        platform=common.platform,
        docker_config=common.docker_config,
        secrets_dir=common.secrets_dir,
        insecure_registries=(
            *common.insecure_registries,
            *settings.tencent.registry_http_endpoints,
        ),
    ) as resolver:
        found = resolver.facts([probe])["suggested"]
    return {imageref.normalize(image): outcome for image, outcome in found.items()}
