"""Providers: where caches live (local store, Kubernetes objects, Tencent Cloud)."""
