"""The Tencent Cloud backend: image caches managed directly through the TKE API.

This is the path for teams that do not run the in-cluster operator. It speaks
the `tke.v20180525` image-cache actions through `tencentcloud-sdk-python-tke`
(extra `tencent`) and translates them into the `Provider` protocol. It is
tested against a local emulator of the API (`tests/tke_emulator.py`), which
checks TC3-HMAC-SHA256 signatures, not against a cloud account.

Why it is built the way it is
-----------------------------
* **Errors are read from the body, never from the SDK alone.** The SDK looks
  for an error only when `Content-Type` is exactly `application/json` (or
  `text/plain`); any other type, say `application/json; charset=utf-8` from a
  gateway, makes it deserialise the error envelope into an empty response
  model, and an empty `DescribeImageCaches` would look like "no caches" and
  plan a create for every spec. So every call goes through `client.call` (the
  SDK's generic signed POST) and the raw body is checked here: a JSON object
  with `Response.RequestId`, no `Response.Error`, and the fields the action
  must return. Anything else is an error.
* **Calls per pass are bounded.** `observe` is `DescribeImageCaches` pages of
  50 and nothing else (1,000 caches: 20 calls). A create, an update and a
  delete are one call each; concurrent deletes are coalesced into one
  `DeleteImageCaches` call. Transient failures are retried inside the call a
  few times with exponential backoff and jitter, so a 30% throttled API still
  converges; the reconciler's own per-cache backoff takes over after that.
* **A create is retried only when it certainly did not happen.** Throttling
  (`RequestLimitExceeded`) rejects a request before it runs, so it is retried.
  After a timeout, an `InternalError` or an unreadable answer the cache may
  exist; the provider then looks it up by name (one filtered describe) and
  returns it if it is there, instead of creating a second one.
* **Ownership is a tag.** `CreateImageCache` takes `Tags`; gitsync writes
  `gitsync.io/owner` (the controller id), `gitsync.io/prune` (`enabled` or
  `disabled`), `gitsync.io/pull-secrets` (the spec's `imagePullSecrets`,
  space-separated, `-` for none), `gitsync.io/security-groups` (the spec's
  `securityGroupIds`, in order, `-` for none) and `gitsync.io/eip` (`none`,
  or `auto` and the EIP attributes as `Key=value`). The API returns none of
  credentials' origin, security groups or EIP settings, so without the tags
  every pass would see a difference. All are written on every create and
  update, so they are right whether `UpdateImageCache` replaces the tag set
  or merges into it; a cache made before a tag existed reads as "none". A
  cache without the owner tag gets `owner=None` and is never changed;
  `update` and `delete` refuse one too.
* **What the spec maps to.** `securityGroupIds` is `SecurityGroupIds` on
  create and update; without it, `--security-group-id` is sent (the flag is a
  default, like `--vpc-id`, so changing it changes no existing cache). The
  annotation `eks.tke.cloud.tencent.com/eip-attributes` is `AutoCreateEip:
  true` plus `AutoCreateEipAttribute` with the fields it sets; the cloud's
  ImageCache documentation names no annotation for an existing EIP, so
  `ExistedEipId` is never sent. Labels and other annotations have no place in
  the API and are not kept (`TENCENTCLOUD_FIELDS`).
* **Rebuilds.** The reconciler calls `update` for UPDATE and RECREATE alike.
  In place (`UpdateImageCache`) keeps the old snapshot serving while the new
  one builds, so that is the default, also for UpdateFailed. A cache is
  replaced instead (create the new one, then delete the old) when in-place
  cannot be trusted to help: it is Failed (or in a status gitsync does not
  know), it is expired or within half its retention period of expiring (the
  cloud counts retention from creation, and gitsync does not rely on an update
  renewing it; the planner's renewal window is at most half the retention),
  or the spec shrinks `imageCacheSize` (cloud disks grow, never shrink), or
  the EIP settings change (`UpdateImageCache` has no EIP fields; the planner
  plans those as RECREATE, since `TENCENTCLOUD_FIELDS` says so), or a
  snapshot check found its CBS snapshot gone or damaged. If
  the delete of the old cache fails after the new one exists, the next pass
  sees two owned caches of one name and the planner deletes the older.
* **Snapshots are checked.** The CBS snapshot behind each Ready cache is
  looked up with DescribeSnapshots by `snapshots.CbsSnapshotLookup` (here),
  wrapped around this provider by `gitsync.providers.snapshots.SnapshotChecked`;
  both APIs are called through `TencentCloudAPI`, so CBS calls get the same
  credentials, retries, strict reading and secret hygiene as the TKE ones.
* **Credentials never leak.** The secret id and key live only in the SDK's
  credential object; messages built from API text are scrubbed of them; the
  SDK's own logger, which dumps whole requests (the `Authorization` header,
  request bodies with registry passwords) at DEBUG, is filtered to WARNING and
  above. Registry passwords come from pull secrets and go only into request
  bodies.

Times from the API are ISO 8601 (`2026-11-22T03:00:00Z`, `…+08:00`); a time
without an offset (`2026-11-22 11:00:00`, the format of older Tencent APIs) is
read as China Standard Time (UTC+8), the zone Tencent's console and APIs use,
unless `naive_time_offset_hours` says otherwise.

The package, one concern per module; a module imports only those listed
before it (`provider` and `snapshots` not each other; an import-linter
contract checks it):

* `errors` - the API's error codes and their classification into the
  `gitsync.errors` tree (pure).
* `settings` - `TencentCloudSettings` (region, endpoints incl. `cbs_host`,
  retry figures) and the credentials: `load_credentials_file` and
  `resolve_credentials`, the order in which gitsync looks for them (pure).
* `mapping` - spec to request parameters and `ImageCache` to `ObservedCache`:
  tags, EIP, registry credentials, status, times, when to replace (pure).
* `transport` - `TencentCloudAPI`: signed calls, retries with backoff,
  envelope checks, secret scrubbing; shared by TKE and CBS.
* `provider` - `TencentCloudProvider`, the `Provider` over TKE.
* `snapshots` - `CbsSnapshotLookup`, DescribeSnapshots for the snapshot checks
  (not imported here: it needs the CBS SDK, which a TKE-only setup may lack).

Only this package imports the SDK (`tencentcloud`; an import-linter contract
says so), and only `transport`, `provider` and `snapshots` do. Nothing imports
the package until a command calls a Tencent Cloud API (the tencentcloud
backend, or the snapshot checks on the kubernetes backend), so `gitsync
validate` and the local backend never load the SDK. Importing any module here
runs this file, which loads the TKE SDK: a missing SDK shows as an ImportError
at that one place, which the CLI reports as "pip install 'gitsync[tencent]'".
"""

from __future__ import annotations

from gitsync.providers.tencentcloud.errors import (
    TencentCloudAPIError,
    TencentCloudAuthError,
    TencentCloudInvalidParameterError,
    TencentCloudNotFoundError,
    TencentCloudResponseError,
    TencentCloudTransientError,
    classify_error,
)
from gitsync.providers.tencentcloud.mapping import (
    EIP_TAG,
    OWNER_TAG,
    PRUNE_TAG,
    PULL_SECRETS_TAG,
    SECURITY_GROUPS_TAG,
    TENCENTCLOUD_FIELDS,
    eip_params,
    observed_from_api,
    ownership_tags,
    parse_api_time,
    registry_credentials,
)
from gitsync.providers.tencentcloud.provider import PAGE_SIZE, TencentCloudProvider
from gitsync.providers.tencentcloud.settings import (
    TencentCloudCredentials,
    TencentCloudSettings,
    load_credentials_file,
    resolve_credentials,
)
from gitsync.providers.tencentcloud.transport import TencentCloudAPI

__all__ = [
    "EIP_TAG",
    "OWNER_TAG",
    "PAGE_SIZE",
    "PRUNE_TAG",
    "PULL_SECRETS_TAG",
    "SECURITY_GROUPS_TAG",
    "TENCENTCLOUD_FIELDS",
    "TencentCloudAPI",
    "TencentCloudAPIError",
    "TencentCloudAuthError",
    "TencentCloudCredentials",
    "TencentCloudInvalidParameterError",
    "TencentCloudNotFoundError",
    "TencentCloudProvider",
    "TencentCloudResponseError",
    "TencentCloudSettings",
    "TencentCloudTransientError",
    "classify_error",
    "eip_params",
    "load_credentials_file",
    "observed_from_api",
    "ownership_tags",
    "parse_api_time",
    "registry_credentials",
    "resolve_credentials",
]
