"""The `kubernetes` backend: caches are `ImageCache` objects the in-cluster operator builds.

gitsync does not build anything here. The TKE image-cache operator (the
`imc-operator` add-on) watches `ImageCache` objects (`eks.cloud.tencent.com/v1`,
cluster-scoped, plural `imagecaches`, short name `imc`) and turns each into a
cloud image cache; gitsync keeps those objects equal to Git and reads back the
status the operator writes.

The object gitsync writes is the one in Git: `spec.images`,
`imageCacheSize`, `retentionDays`, `imagePullSecrets`, `securityGroupIds`,
and Git's labels and annotations (the EIP annotation
`eks.tke.cloud.tencent.com/eip-attributes` among them, as written) beside
gitsync's own two labels and `gitsync.io/prune`; `kubectl`'s
last-applied-configuration in Git is not copied.

One concern per module, each with its part of the rules in its docstring:

==============  ===============================================================
`provider`      `KubernetesProvider`: observe, create, update (and rebuild),
                delete; what it lists and what it refuses to touch
`writes`        server-side apply, and the create/merge-patch fallback
`ownership`     gitsync's labels, which fields are gitsync's (managedFields),
                the manifest and the merge-patch body (pure)
`mapping`       an object and its Events as the model's `ObservedCache`, the
                status table (pure)
`events`        the Events gitsync records itself: `DigestChanged` when an
                update moves a pinned digest (pure)
`client`        the API client, error translation, raw JSON calls, paged
                lists, the RBAC rules the calls need
`secrets`       `ClusterPullSecrets`: pull secrets from the cluster for the
                local backend
==============  ===============================================================

Only `client`, `writes`, `secrets` and `provider` import the `kubernetes`
package; `ownership`, `mapping` and `events` are data in, data out. This package
re-exports the names callers use, so `gitsync.providers.kubernetes.X` keeps
working wherever X now lives.
"""

from gitsync.model import MANAGED_BY_LABEL, OWNER_LABEL
from gitsync.providers.kubernetes.client import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_REQUEST_TIMEOUT,
    GROUP,
    PLURAL,
    PULL_SECRET_RBAC_RULES,
    RBAC_RULES,
    VERSION,
    ImageCacheApi,
    api_error_message,
    load_api_client,
    retry_after_seconds,
    translate,
)
from gitsync.providers.kubernetes.events import (
    DIGEST_CHANGED,
    EVENT_NAMESPACE,
    DigestChange,
    digest_changed_event,
    digest_changes,
)
from gitsync.providers.kubernetes.mapping import (
    MAX_EVENTS_PER_CACHE,
    event_from,
    map_status,
    observed_from,
    parse_time,
)
from gitsync.providers.kubernetes.ownership import (
    APPLIED_ANNOTATION,
    FIELD_MANAGER,
    LAST_APPLIED_ANNOTATION,
    MANAGED_BY_VALUE,
    MANAGED_SELECTOR,
    OWN_ANNOTATIONS,
    OWN_LABELS,
    FieldPath,
    Json,
    Written,
    check_owner_id,
    fields_v1_paths,
    manifest,
    owner_of,
    written_of,
)
from gitsync.providers.kubernetes.provider import KubernetesProvider
from gitsync.providers.kubernetes.secrets import ClusterPullSecrets
from gitsync.providers.kubernetes.writes import APPLY_PATCH, MERGE_PATCH, ImageCacheWriter

__all__ = [
    "APPLIED_ANNOTATION",
    "APPLY_PATCH",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_REQUEST_TIMEOUT",
    "DIGEST_CHANGED",
    "EVENT_NAMESPACE",
    "FIELD_MANAGER",
    "GROUP",
    "LAST_APPLIED_ANNOTATION",
    "MANAGED_BY_LABEL",
    "MANAGED_BY_VALUE",
    "MANAGED_SELECTOR",
    "MAX_EVENTS_PER_CACHE",
    "MERGE_PATCH",
    "OWNER_LABEL",
    "OWN_ANNOTATIONS",
    "OWN_LABELS",
    "PLURAL",
    "PULL_SECRET_RBAC_RULES",
    "RBAC_RULES",
    "VERSION",
    "ClusterPullSecrets",
    "DigestChange",
    "FieldPath",
    "ImageCacheApi",
    "ImageCacheWriter",
    "Json",
    "KubernetesProvider",
    "Written",
    "api_error_message",
    "check_owner_id",
    "digest_changed_event",
    "digest_changes",
    "event_from",
    "fields_v1_paths",
    "load_api_client",
    "manifest",
    "map_status",
    "observed_from",
    "owner_of",
    "parse_time",
    "retry_after_seconds",
    "translate",
    "written_of",
]
