"""gitsync: a Git repository as the single source of truth for container-image caches."""

__version__ = "0.1.0"
