"""What consumers actually pulled: lookups recorded by the mirror and the pod observer.

`model` holds the pure records; the store and the batching recorder keep them
in the data directory, bounded, for `gitsync suggest` and the daemon's
`/api/v1/suggestions`.
"""
