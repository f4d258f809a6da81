"""One way in: :func:`connect` returns a :class:`Workspace` (voices, registry, realtime sessions).

Used identically by the CLI, the notebooks and the tests. With the ``local`` region (the
default) and no ``base_url``, the workspace starts an embedded :class:`~qvtools.server.LocalService`
under ``settings.data_dir / "service"`` and points every client at it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from .config import Settings
from .enrollment import Voice, VoiceClient
from .errors import ConfigError
from .registry import VoiceRegistry

__all__ = ["connect", "Workspace"]

log = logging.getLogger(__name__)

REGISTRY_NAME = "registry.sqlite3"


class Workspace:
    """Settings plus the clients built from them; close it (or use ``with``) to stop a local service."""

    def __init__(self, settings: Settings, service=None):
        self.settings = settings
        self.service = service
        self.voices = VoiceClient(settings)
        self.registry = VoiceRegistry(settings.data_dir / REGISTRY_NAME, self.voices)
        self._closed = False

    @property
    def is_local(self) -> bool:
        """True when talking to a local service (embedded or a ``qvtools serve`` at ``base_url``)."""
        return self.service is not None or not self.settings.is_cloud

    def describe(self) -> str:
        """One line: where requests go."""
        if self.service is not None:
            src = getattr(self.service.config, "latency_from", None)
            how = f"replayed from {Path(src).name}" if src else "simulated"
            return f"local service at {self.service.url} — latencies are {how}"
        if self.settings.base_url:
            return f"service at {self.settings.base_url} (local service — latencies are simulated)"
        return f"{self.settings.region} region ({self.settings.http_base}) — real DashScope service, billable"

    def wait_ready(self, timeout: float = 120.0) -> bool:
        """Wait (up to ``timeout`` s) until an embedded local service has loaded its speech engines,
        so a first turn's latency does not include the one-time model loading. True when ready;
        False otherwise (and at once without an embedded service)."""
        return self.service is not None and self.service.wait_speech_ready(timeout)

    def realtime(self, model: str, *, voice=None, **kw):
        """A :class:`~qvtools.realtime.session.RealtimeSession` on this workspace's settings, not yet
        connected: use it as a context manager (``with ws.realtime(model, voice=v) as rt:``) or call
        ``connect()``. ``kw`` are the session options (``instructions``, ``turn_detection``, ...).

        ``voice`` is a built-in voice name, a cloned voice name or a :class:`~qvtools.enrollment.Voice`.
        A cloned voice's ``target_model`` (the Voice's own, else looked up with :meth:`find_voice`)
        must match ``model``, so a mismatch raises :class:`~qvtools.errors.VoiceModelMismatch`
        before any connection (SEED §2.1, protocol reference §2.1: target_model "must equal the later realtime ?model=").
        """
        from .realtime.events import is_cloned_voice
        from .realtime.session import RealtimeSession

        if isinstance(voice, str) and is_cloned_voice(voice) and kw.get("voice_target_model") is None:
            voice = self.find_voice(voice)
        return RealtimeSession(self.settings, model, voice=voice, **kw)

    def find_voice(self, name: str) -> Voice:
        """The account's cloned voice called ``name`` (one ``list`` pass over ``self.voices``)."""
        for v in self.voices.list():
            if v.voice == name:
                return v
        raise ConfigError(f"voice {name!r} is not in this account; "
                          "see `qvtools voices list` for the voices you have")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.registry.close()
        self.voices.close()
        if self.service is not None:
            self.service.stop()

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Workspace({self.describe()})"


def connect(settings: Settings | None = None, *, service_config=None, **overrides) -> Workspace:
    """Open a workspace from ``settings`` (default :meth:`Settings.from_env`) with ``overrides`` applied.

    Local region without ``base_url``: starts a local service (data under
    ``settings.data_dir / "service"``) that accepts ``settings.api_key`` (or any key when unset), configured
    by ``service_config`` (a :class:`~qvtools.server.ServiceConfig`, e.g. ``ServiceConfig(latency_from=RUN_DIR)``
    to replay a measured run's latencies; None: the defaults). It is an error with any other region.
    """
    if settings is None:
        settings = Settings.from_env(**overrides)
    elif overrides:
        settings = replace(settings, **overrides)
    service = None
    if service_config is not None and not (settings.region == "local" and not settings.base_url):
        raise ConfigError("service_config configures the embedded local service (region local, no base_url); "
                          f"it does not apply to {settings.base_url or settings.region}")
    if settings.region == "local" and not settings.base_url:
        from .server import LocalService

        service = LocalService(data_dir=settings.data_dir / "service", api_key=settings.api_key,
                               config=service_config).start()
        settings = settings.with_base_url(service.url, api_key=service.api_key)
        settings = replace(settings, ws_url=service.ws_url)
    try:
        ws = Workspace(settings, service)
    except BaseException:
        if service is not None:
            service.stop()
        raise
    log.info("connected: %s", ws.describe())
    return ws
