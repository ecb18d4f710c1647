"""The local backend: real OCI pulls into a content-addressed store on this machine.

One concern a module, in layers that import only downward (an import-linter
contract in pyproject.toml holds them to it), from the top:

- `mirror` (the `/v2/` routing and the counting of lookups), then
  `mirrorview` (what it may serve now), `mirrorblobs` (its verified bytes),
  `export` (an OCI layout out of a snapshot) and `scrub` (re-hashing at a
  bounded rate): what uses the store besides the provider;
- `provider`: the `Provider` itself, when a cache is built and what its status
  says, expiry, recovery from a process that died; beside it `tags`, image
  policies against registry tags (bump-tag suggestions, for any provider);
- `builds` (one build: lease, credentials, pull, the committing transaction),
  `damage` (what a missing or damaged blob leads to), `garbage` (`gc`) and
  `imagesizes` (the sizes `plan` reports, for any provider);
- `failures` (recording a failed build, also on a full disk) and `checks`
  (the per-pass stat of every snapshot's blobs);
- `pull`: a cache's images into the store, deduplicated, within its size;
- `registry` (the distribution API: manifests and blobs, verified; tag lists,
  paginated) and `layers` (expanding and checking layers as they stream);
- `registryhttp`: how a request reaches a registry (scheme, auth, statuses);
- `registryretry` (when a request is sent again), `auth` (the Authorization
  header and registry tokens) and `leases` (what keeps a pull's blobs from gc);
- `state`, `statereads`, `stateleases`, `statedb`: the SQLite state store;
- `oci`: the image model (media types, platforms, manifests), pure;
- `blobs`: verified blobs by digest on disk.
"""
