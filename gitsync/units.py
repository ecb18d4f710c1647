"""Byte units, named once.

Why a module of one constant: cache sizes are GiB in the API and bytes in
image manifests, and pricing, sizing, the metrics and the local backend all
convert between them; one definition keeps them from drifting apart.
"""

from __future__ import annotations

from typing import Final

__all__ = ["GIB"]

GIB: Final = 1024**3
