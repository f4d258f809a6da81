"""The offline local service: the enrollment HTTP API and the realtime WebSocket on 127.0.0.1.

:class:`LocalService` runs the aiohttp app (:func:`qvtools.server.app.create_app`) on its own
thread and event loop; readiness is awaited through a :class:`threading.Event`, never a sleep.
:func:`serve_forever` is the ``qvtools serve`` entry point. Only this package imports aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from ..errors import MissingExtra

try:  # the local service needs the "local" extra; without it, say so instead of a bare ModuleNotFoundError
    import aiohttp  # noqa: F401
except ModuleNotFoundError as _exc:
    raise MissingExtra(f"the local service needs the 'local' extra (missing module {_exc.name!r}): "
                       "pip install 'qvtools[local]'", name=_exc.name) from None

from ..config import LOCAL_API_KEY
from ..errors import QVError
from .app import ServiceRunner, create_app
from .config import ServiceConfig
from .faults import FAULTS
from .http import STORE, TRACE
from .realtime import REALTIME
from .trace import ServerTrace

__all__ = ["LocalService", "ServiceConfig", "ServerTrace", "create_app", "serve_forever"]

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0


class LocalService:
    """The local service on a background thread; a context manager.

    ``api_key=None`` accepts any non-empty Bearer key (``.api_key`` is then
    :data:`qvtools.config.LOCAL_API_KEY`); a given key is the only one accepted.
    ``data_dir=None`` uses a temporary directory removed on :meth:`stop`.
    """

    def __init__(self, data_dir=None, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 config: ServiceConfig | None = None):
        config = config or ServiceConfig()
        if api_key is not None:
            if not api_key:
                raise QVError("api_key must be a non-empty string (or None to accept any key)")
            config = replace(config, api_key=api_key)
        self.config = config
        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="qvtools-service-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.host = host
        self._port = int(port)
        self.api_key = config.api_key or LOCAL_API_KEY
        self.app = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self.port: int | None = None

    def __repr__(self) -> str:
        state = f"{self.url}" if self.port else "not started"
        return f"LocalService({state}, data_dir={str(self.data_dir)!r})"

    @property
    def url(self) -> str:
        self._require_started()
        return f"http://{self._url_host}:{self.port}"

    @property
    def ws_url(self) -> str:
        self._require_started()
        return f"ws://{self._url_host}:{self.port}"

    @property
    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def trace(self) -> ServerTrace:
        self._require_started()
        return self.app[TRACE]

    @property
    def faults(self):
        """The :class:`~qvtools.server.faults.FaultInjector` (plans and the log of faults fired)."""
        self._require_started()
        return self.app[FAULTS]

    def set_faults(self, target: str, plan) -> None:
        """Install a :class:`~qvtools.server.faults.FaultPlan` (or a dict of its fields; None removes it)
        for ``target``: ``"*"`` (every key), an API key, or an open realtime session id (``sess_...``).
        Thread-safe; a session takes the key/``"*"`` plan when it opens."""
        try:
            self.faults.set(target, plan)
        except (TypeError, ValueError) as exc:
            raise QVError(f"cannot set faults: {exc}") from None

    def clear_faults(self) -> None:
        """Remove every fault plan."""
        self.faults.clear()

    @property
    def store(self):
        """The :class:`~qvtools.server.store.VoiceStore` (opened on startup)."""
        self._require_started()
        return self.app[STORE]

    @property
    def speech(self):
        """The :class:`~qvtools.server.speech.SpeechPipeline`, or None while no turn or warm-up created it."""
        self._require_started()
        return self.app[REALTIME].speech

    @property
    def connections(self) -> int:
        """HTTP connections open right now (realtime sessions included); read on the service's loop."""
        self._require_started()
        fut = asyncio.run_coroutine_threadsafe(self._count_connections(), self._loop)
        return fut.result(timeout=_STOP_TIMEOUT_S)

    async def _count_connections(self) -> int:
        return self._runner.connections if self._runner is not None else 0

    def wait_speech_ready(self, timeout: float = 120.0) -> bool:
        """Wait until the background warm-up (``ServiceConfig.warm_speech``) has loaded the speech engines.

        True when they are loaded; False after ``timeout``, or at once when warm-up is off or failed
        (the engines then load on the first realtime turn).
        """
        self._require_started()
        speech = self.app[REALTIME].speech
        if speech is None or not self.config.warm_speech:
            return False
        deadline = time.monotonic() + float(timeout)
        while not speech.wait_ready(min(0.5, max(0.0, deadline - time.monotonic()))):
            if speech.warm_error is not None or time.monotonic() >= deadline or self._thread is None:
                return False
        return True

    def _require_started(self) -> None:
        if self.port is None:
            raise QVError("the local service is not running; call start() or use it as a context manager")

    def start(self, timeout: float = _START_TIMEOUT_S) -> "LocalService":
        if self._thread is not None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name=f"qvtools-service-{id(self):x}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise QVError(f"the local service did not start within {timeout:.0f} s")
        if self._error is not None:
            self._thread.join(_STOP_TIMEOUT_S)
            self._thread = None
            if isinstance(self._error, QVError):  # a specific, actionable error (e.g. LatencySourceError)
                raise self._error
            raise QVError(f"the local service failed to start: {self._error}") from self._error
        log.info("local service listening on %s (data in %s)", self.url, self.data_dir)
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # reported to start() through the event
            self._error = exc
            self._ready.set()
            loop.run_until_complete(self._cleanup())
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._cleanup())
            # handler tasks of connections a client left half-open: cancel and await them, so closing
            # the loop never destroys a pending task
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
            self._stopped.set()

    async def _startup(self) -> None:
        from aiohttp import web

        self.app = create_app(self.config, self.data_dir)
        # read timeouts, a connection cap and aiohttp's own errors in the §3 shape (issue 13)
        self._runner = ServiceRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # (host, port[, flow, scope]) of the bound socket

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def stop(self) -> None:
        """Stop serving, close the store, join the thread (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is not None and self._loop is not None and thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            thread.join(_STOP_TIMEOUT_S)
            if thread.is_alive():
                log.warning("the local service thread did not stop within %.0f s", _STOP_TIMEOUT_S)
        if self._tmp is not None and (thread is None or not thread.is_alive()):
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "LocalService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_forever(host: str = "127.0.0.1", port: int = 0, data_dir=None, api_key: str | None = None,
                  config: ServiceConfig | None = None, on_ready=None) -> None:
    """Run the service until SIGINT/SIGTERM; ``on_ready(service)`` is called once it listens."""
    done = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: done.set())
    try:
        with LocalService(data_dir=data_dir, api_key=api_key, host=host, port=port, config=config) as svc:
            if on_ready is not None:
                on_ready(svc)
            while not done.wait(0.5):  # wake up periodically so signals are handled promptly
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
