"""The composition root: builds provider, reconciler, mirror, observers and daemon from settings.

Why one place: the commands (`gitsync.cli`) and the benchmarks need the same
program, put together the same way. The CLI parses flags into
`config.CommandSettings`, calls in here, and formats what comes back; nothing
below this module knows which backend was chosen or which flag said what.

What only some backends can do is asked of the provider through the
capability Protocols of `providers.base` (`HoldsImages`, `CollectsGarbage`,
`SuggestsCache`), never by naming a provider class.

Two modules: `providers` (the backend a command works on, the plan's size
check, the registry sizes of images) and `running` (`gitsync run`'s daemon and
everything that runs beside it). Heavy backends (the Kubernetes client, the
Tencent Cloud SDK, httpx, git) are imported inside the function that needs
them, so importing the wiring keeps `gitsync validate` fast.
"""

from __future__ import annotations

from gitsync.wiring.providers import (
    NO_CREDENTIALS,
    CredentialChain,
    image_sizes,
    image_store,
    kubernetes_snapshot_checks,
    mirror_for,
    observe,
    open_provider,
    reconciler,
    size_report,
    tencent_provider,
)
from gitsync.wiring.running import OBSERVATIONS_FILE, daemon, heartbeat, scrubber

__all__ = [
    "NO_CREDENTIALS",
    "OBSERVATIONS_FILE",
    "CredentialChain",
    "daemon",
    "heartbeat",
    "image_sizes",
    "image_store",
    "kubernetes_snapshot_checks",
    "mirror_for",
    "observe",
    "open_provider",
    "reconciler",
    "scrubber",
    "size_report",
    "tencent_provider",
]
