"""Why flanneld is not ready: the text /readyz shows, from the daemon's state (pure).

The daemon's Readiness (flanneld.health) calls `not_ready_reason` at every /readyz;
the `*_reason` helpers turn a failed start-up step's exception into that text.
"""

from __future__ import annotations

from typing import Any


def not_ready_reason(phase: str | None, status: Any, reconcile_error: str | None) -> str | None:
    """Why we are not ready, or None.

    `phase` is the start-up step (None once started), `status` the subnet manager's
    status (None before there is a manager), `reconcile_error` why the last run failed."""
    if phase is not None:  # starting: the step, or what holds it up
        # Any etcd error (unreachable, refused credentials, out of subnets) says more
        # than the step it holds up; the manager clears it once the step succeeds.
        err = getattr(status, "last_error", None)
        return f"{phase}: {err}" if err else str(phase)
    return manager_problem(status) or reconcile_error


def manager_problem(status: Any) -> str | None:
    """Why the subnet manager's state makes us not ready, or None when it is fine."""
    if status is None:
        return None
    state = getattr(status, "state", "held")
    if state == "held":
        return None
    err = getattr(status, "last_error", None)
    state = str(state).replace("-", " ")  # "etcd-unreachable" -> "etcd unreachable"
    return f"{state}: {err}" if err else state


def is_connection_error(exc: BaseException) -> bool:
    try:
        from flanneld import etcd
    except ImportError:
        return isinstance(exc, ConnectionError)
    return isinstance(exc, etcd.EtcdUnavailable) or etcd.is_connection_error(exc)


def etcd_reason(exc: Exception) -> str:
    if is_connection_error(exc):
        return f"etcd unreachable: {exc or type(exc).__name__}"
    return f"{type(exc).__name__}: {exc}"


def config_reason(exc: Exception) -> str:
    """Why reading the network config failed."""
    from core.config import ConfigError

    if isinstance(exc, ConfigError):
        return f"bad network config: {exc}"
    return etcd_reason(exc)


def lease_reason(exc: Exception) -> str:
    """Why acquiring a lease failed (e.g. the network is out of subnets)."""
    return etcd_reason(exc) if is_connection_error(exc) else str(exc)
