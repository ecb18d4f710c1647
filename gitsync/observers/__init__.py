"""Observers: how caches are really used, measured from the platform (pod starts, hits, misses)."""
