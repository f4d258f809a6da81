"""The realtime handshake as plain code: model and session-cap checks before the WebSocket upgrade.

:func:`check_handshake` answers with a :class:`Refusal` (the HTTP error to send instead of upgrading) or
None (go ahead); :func:`admit` / :func:`release` keep the per-key session counts the caps are checked
against. Auth (the 401) comes first, from :func:`qvtools.server.http.authenticate`. No socket, no request:
tests drive it with literal dicts (``tests/test_rt_handshake.py``). § numbers refer to
``../shared/reference/dashscope-protocol.md``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .. import catalog

__all__ = ["Refusal", "check_handshake", "model_accepted", "admit", "release"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """An HTTP answer instead of the upgrade, in the §3 error shape."""

    status: int
    code: str
    message: str
    headers: dict | None = None


def model_accepted(model: str, config) -> bool:
    """§7.8: any ``…-omni-…-realtime`` name; only the catalog's families when configured so (§5.4 [guess])."""
    if not model:
        return False
    if config.realtime_reject_unknown_model:
        return catalog.is_known_model(model)
    return catalog.is_realtime_model(model)


def check_handshake(model: str, key: str, config, active: dict, latency=None) -> Refusal | None:
    """Refuse an unknown model (404 ``ModelNotFound``, §5.4 [guess]), a model the replayed latency file has no
    rows for (400 ``InvalidParameter``, ``ServiceConfig.latency_from``: a local-service setting, never a cloud
    answer) or a session past the per-key or the global cap (429 ``Throttling.RateQuota`` +
    ``Retry-After: 1``, §3); None: upgrade.

    ``active`` maps API key -> open sessions (see :func:`admit`); ``latency`` is the service's
    :class:`~qvtools.server.latency.LatencySource` (None: not checked)."""
    if not model_accepted(model, config):
        return Refusal(404, "ModelNotFound", "Model can not be found.")
    problem = latency.problem(model) if latency is not None else None
    if problem is not None:
        log.info("realtime handshake refused: %s", problem)
        return Refusal(400, "InvalidParameter", f"qvtools local service: {problem}.")
    limit = int(config.max_sessions_per_key or 0)
    total_limit = int(config.max_sessions or 0)
    if limit > 0 and active.get(key, 0) >= limit:
        # ServiceConfig.max_sessions_per_key: refused before the upgrade with a §3 429 code, never a crash
        log.info("realtime handshake refused: %d concurrent sessions for this key", limit)
        return Refusal(429, "Throttling.RateQuota",
                       f"Requests rate limit exceeded, try again later: at most {limit} concurrent realtime "
                       "sessions per API key.", {"Retry-After": "1"})
    if total_limit > 0 and sum(active.values()) >= total_limit:
        # ServiceConfig.max_sessions: the global cap, answered like the per-key one (issue 13)
        log.info("realtime handshake refused: %d concurrent sessions on the service", total_limit)
        return Refusal(429, "Throttling.RateQuota",
                       f"Requests rate limit exceeded, try again later: at most {total_limit} concurrent "
                       "realtime sessions on this service.", {"Retry-After": "1"})
    return None


def admit(active: dict, key: str) -> None:
    """Count a session of ``key`` (before any await, so racing handshakes count too)."""
    active[key] = active.get(key, 0) + 1


def release(active: dict, key: str) -> None:
    """Uncount a session of ``key`` (its socket is gone)."""
    active[key] -= 1
    if active[key] <= 0:
        del active[key]
