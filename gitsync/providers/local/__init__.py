"""The local backend: real OCI pulls into a content-addressed store on this machine.

`registry` speaks the distribution API (auth, retries, manifests), `auth` turns
docker configs and pull secrets into credentials, `blobs` stores verified blobs
by digest, `pull` pulls a cache's images with dedupe and a size limit, and
`state` keeps caches, snapshots and events in SQLite.
"""
