"""Values from outside (etcd, a CNI request, a config file) as error messages quote them.

Clipped, so that a megabyte of junk never becomes a megabyte of log line or /readyz
body. Stdlib-only and import-free: the CNI plugin's fallback path uses it.
"""

from __future__ import annotations


def clipped(text: str, limit: int = 60) -> str:
    """`text`, cut to `limit` characters with its full length said."""
    return text if len(text) <= limit else f"{text[:limit - 3]}... ({len(text)} chars)"


def shown(value: object, limit: int = 60) -> str:
    """A value's repr, clipped."""
    return clipped(repr(value), limit)
