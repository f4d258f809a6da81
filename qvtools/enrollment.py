"""Client of the voice enrollment API (protocol reference §2): create, list, delete cloned voices.

:class:`VoiceClient` runs on one :class:`requests.Session`. Every API call (one POST and its
retries) has a TOTAL deadline of ``settings.timeout_s``: connect and read timeouts are cut to the
time left, the body is read in chunks against the deadline, and a watchdog shuts the socket down
when the deadline passes, so neither a silent server, a body (or header) dripped byte by byte nor a
long ``Retry-After`` keeps a call alive past it (issue 13). Answers are bounded in size
(:data:`MAX_RESPONSE_BYTES`); :func:`raise_for_response` / :func:`qvtools.errors.api_error_from_http`
are the one place where HTTP answers become exceptions, with server text redacted.

``list``/``delete`` are retried with exponential backoff (honouring ``Retry-After`` up to the
time left) on 429, 5xx and connection errors; ``create`` is billable and is never retried blindly:
a create that got no answer is reconciled with ``list`` and a voice is adopted only when it can
be told apart as ours (new since just before the request, not older than it, the only one).

The enrollment list mixes kinds (§7.9): Omni clones (``qwen-omni-vc-…``) and TTS clones
(``qwen-tts-vc-…``). :meth:`VoiceClient.purge` and :meth:`VoiceClient.count` touch Omni clones
only unless the caller asks for other kinds. The API key never appears in an exception or a log line.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator

from . import spec
from .catalog import VOICE_KINDS, check_target_model, create_parameters, voice_kind
from .config import ENROLLMENT_MODEL, Settings
from .errors import APIError, ConfigError, InvalidAudio, TransportError, api_error_from_http, redact

__all__ = ["Voice", "VoiceClient", "raise_for_response", "LANGUAGES", "DIALECTS", "NAME_PATTERN",
           "validate_create_args", "encode_for_upload", "OMNI_ONLY", "MAX_LIST_PAGES", "MAX_RESPONSE_BYTES",
           "FALLBACK_ADVICE"]

log = logging.getLogger(__name__)

# The §2.1 field rules live in qvtools.spec; these names stay importable from here (README, tests).
NAME_PATTERN = spec.NAME_PATTERN
_NAME_RE = spec.NAME_RE
LANGUAGE_CODES = spec.LANGUAGE_CODES
DIALECTS = spec.DIALECTS
LANGUAGES = spec.LANGUAGES

#: The kinds :meth:`VoiceClient.purge` and :meth:`VoiceClient.count` touch by default: Omni clones only.
#: The enrollment list also returns the account's TTS clones (§7.9), which must never be deleted unasked.
OMNI_ONLY = ("omni",)
#: Hard maximum of pages one ``list()`` walks (issue 13: a server that ignores ``page_index`` and omits
#: ``total_count`` must not page forever). At the default page size that is 100,000 voices, far above the
#: 1,000-voice quota (§2.4).
MAX_LIST_PAGES = 1000
#: Largest answer body read (bytes, after content decoding). A list page of 100 voices is ~25 kB.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: What a degraded clone means and what to do (``output.fallback_mode``, QC-VC §2.1 / §7.9).
FALLBACK_ADVICE = ("the service made it in degraded mode (poor audio or a transcript that does not match the "
                   "speech), so it may not sound like the speaker. Re-record 10-20 s of clean continuous speech "
                   "(qvtools check / qvtools prepare) or fix the transcript, then delete this voice and create "
                   "it again")

_MAX_DATA_URI = spec.MAX_DATA_URL_BYTES  # "Exceeded limit on max bytes per data-uri item : 10485760" (§3)
_CHUNK = 65536
#: Seconds after the deadline before the watchdog shuts a socket down (the per-read timeout, cut to the
#: time left, normally ends a silent wait first and names it a ReadTimeout).
_WATCHDOG_GRACE_S = 0.25
#: Tolerance when deciding whether a voice found after a lost create answer predates the request (the name
#: carries the service's stamp, §2.1). The request's start is moved onto the service's clock first, using
#: the HTTP ``Date`` header of its last answer (RFC 9110 §6.6.1, whole seconds), when there was one.
_CLOCK_SKEW_S = 2.0


@dataclass(frozen=True)
class Voice:
    """A cloned voice as the service reports it."""

    voice: str
    target_model: str | None = None
    gmt_create: str | None = None
    gmt_modified: str | None = None
    language: str | None = None
    #: ``output.fallback_mode`` of the create answer (QC-VC, §7.9): True when the clone was made in degraded
    #: mode (poor audio or a text mismatch); None when the service did not say (list items, older answers).
    fallback_mode: bool | None = None
    fallback_reason: str | None = None
    #: ``parameters.voice_clone_mode`` the create sent (§7.28; ``"normal"`` for qwen3.8 targets); None when
    #: none was sent or the voice was only listed (the service does not report it).
    clone_mode: str | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def kind(self) -> str:
        """``omni``, ``tts`` or ``unknown``: the enrollment list mixes Omni and TTS clones (§7.9)."""
        return voice_kind(self.voice, self.target_model)

    @classmethod
    def from_item(cls, item: dict) -> "Voice":
        """A voice from a list item or a create ``output`` (unexpected field types become None)."""
        if not isinstance(item, dict) or not isinstance(item.get("voice"), str) or not item["voice"]:
            raise APIError(200, "InvalidResponse", f"a voice entry without a voice name: {_preview(item)}")

        def text(name):
            value = item.get(name)
            return value if isinstance(value, str) else None

        fb = item.get("fallback_mode")
        return cls(voice=item["voice"], target_model=text("target_model"), gmt_create=text("gmt_create"),
                   gmt_modified=text("gmt_modified"), language=text("language"),
                   fallback_mode=fb if isinstance(fb, bool) else None, fallback_reason=text("fallback_reason"),
                   raw=dict(item))

    @property
    def preferred_name(self) -> str | None:
        """The ``preferred_name`` part of ``qwen-omni-vc-<name>-voice-<stamp>-<hex>`` (§2.1)."""
        m = re.match(r"^qwen-(?:omni|tts)-vc-(.+)-voice-\d{17}-[0-9a-f]{4}$", self.voice)
        return m.group(1) if m else None

    @property
    def created_utc(self) -> datetime | None:
        """The creation time encoded in the voice name (UTC, ms resolution)."""
        m = re.search(r"-voice-(\d{17})-[0-9a-f]{4}$", self.voice)
        if not m:
            return None
        try:
            return datetime.strptime(m.group(1)[:14], "%Y%m%d%H%M%S").replace(
                microsecond=int(m.group(1)[14:]) * 1000, tzinfo=timezone.utc)
        except ValueError:  # 17 digits that are no date
            return None

    def __str__(self) -> str:
        return self.voice


def _preview(obj, n: int = 80) -> str:
    try:
        text = json.dumps(obj)
    except (TypeError, ValueError):
        text = repr(obj)
    return redact(text[:n] + ("…" if len(text) > n else ""))


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return None


def _check_answer(status: int, body: bytes, headers, reason, secrets) -> dict:
    """The JSON object of a 200 answer, else :class:`APIError` from the one HTTP error mapper."""
    text = body.decode("utf-8", "replace")
    obj = _json_or_none(text) if status == 200 else None
    if status == 200 and isinstance(obj, dict):
        return obj
    raise api_error_from_http(status, text, headers, reason, secrets=secrets)


def raise_for_response(resp, *, secrets=()) -> dict:
    """The JSON body of a 200 answer (a :class:`requests.Response`), else :class:`APIError` built by the
    one HTTP error mapper (:func:`qvtools.errors.api_error_from_http`: code, message, request_id,
    Retry-After, redacted)."""
    return _check_answer(resp.status_code, resp.content or b"", resp.headers, resp.reason, secrets)


def validate_create_args(target_model: str, preferred_name: str, language: str | None = None) -> None:
    """The documented field rules of §2.1, checked before anything is uploaded.

    A ``target_model`` outside :data:`qvtools.catalog.ENROLLMENT_TARGET_MODELS` is logged as a warning, not
    refused: model lists change (§7.8, §7.19) and the service decides."""
    if not isinstance(target_model, str) or not target_model.strip():
        raise ConfigError(f"target_model must be a model name, got {target_model!r}")
    for warning in check_target_model(target_model):
        log.warning("%s", warning)
    if not isinstance(preferred_name, str) or not _NAME_RE.fullmatch(preferred_name):
        raise ConfigError(f"preferred_name {preferred_name!r} is invalid: use 1-16 letters, digits or '_'")
    if language is not None and language not in LANGUAGES:
        raise ConfigError(f"language {language!r} is not supported; use a code such as 'en' or 'zh' "
                          f"({', '.join(LANGUAGE_CODES)}) or a dialect ({', '.join(DIALECTS)})")


def _create_parameters(target_model: str, parameters) -> dict:
    """The create's ``parameters``: the caller's (checked) or the catalog's for the target (§7.28)."""
    if parameters is None:
        return create_parameters(target_model)
    if not isinstance(parameters, dict) or not all(isinstance(k, str) for k in parameters):
        raise ConfigError(f"parameters must be a dict with string keys, got {parameters!r}")
    mode = parameters.get("voice_clone_mode")
    if "voice_clone_mode" in parameters and (not isinstance(mode, str) or not mode.strip()):
        raise ConfigError(f"parameters['voice_clone_mode'] must be a non-empty string, got {mode!r}")
    return dict(parameters)


def encode_for_upload(src) -> str:
    """A data URL for ``input.audio.data`` (§2.1).

    WAV (16-bit), MP3 and M4A are sent as they are with their MIME type; other
    containers, non-16-bit WAV and in-memory arrays are re-encoded as 16-bit WAV.
    """
    from . import audio

    info = audio.probe(src)
    data = audio.read_bytes(src)
    mime = info.mime
    if data is None or mime is None or (info.container == "wav" and info.codec != "PCM_16"):
        x, sr = audio.load(src)
        data, mime = audio.wav_bytes(x, sr), "audio/wav"
    url = audio.data_url(data, mime)
    if len(url) >= _MAX_DATA_URI:
        raise InvalidAudio(f"the encoded audio is {len(url) / 1e6:.1f} MB; the limit is 10 MB (§2.1): "
                           "trim it to 10-20 s or send MP3")
    return url


def _kind_set(kinds, all_kinds: bool) -> frozenset:
    """The voice kinds a call may touch: ``all_kinds`` or the listed ones (default Omni only)."""
    if all_kinds:
        return frozenset(VOICE_KINDS)
    if isinstance(kinds, str):
        kinds = (kinds,)
    try:
        chosen = tuple(kinds)
    except TypeError:
        chosen = ()
    bad = [k for k in chosen if k not in VOICE_KINDS]
    if bad or not chosen:
        raise ConfigError(f"kinds must name one or more of {', '.join(VOICE_KINDS)}, got {kinds!r}")
    return frozenset(chosen)


def _matches(v: Voice, prefix: str) -> bool:
    return v.voice.startswith(prefix) or (v.preferred_name or "").startswith(prefix)


# -- deadline machinery -----------------------------------------------------------------------------
class _Deadline:
    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.end = time.monotonic() + self.seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()


_local = threading.local()


class _Watchdog:
    """Shuts the socket of the current request down when the call's deadline passes.

    A per-read timeout cannot bound a peer that sends one byte just before each read would time out
    (headers or body dripped): this thread-safe guard, armed by a timer, wakes the blocked read instead."""

    def __init__(self):
        self._lock = threading.Lock()
        self._conn = None
        self.fired = False
        self._done = False

    def attach(self, conn) -> None:
        with self._lock:
            self._conn = conn
            if self.fired and not self._done:
                _shutdown(conn)

    def fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            if self._conn is not None:
                _shutdown(self._conn)

    def finish(self) -> None:
        with self._lock:
            self._done = True


def _shutdown(conn) -> None:
    sock = getattr(conn, "sock", None)
    if sock is None:
        return
    try:  # the plain-socket shutdown, also for an SSLSocket (its own would drop the TLS state under a reader)
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def _guarded(conn_cls):
    class Guarded(conn_cls):
        def request(self, *args, **kwargs):
            guard = getattr(_local, "watchdog", None)
            if guard is not None:
                guard.attach(self)
            return super().request(*args, **kwargs)

        def getresponse(self, *args, **kwargs):
            guard = getattr(_local, "watchdog", None)
            if guard is not None:  # again: the socket may have been made after the deadline fired
                guard.attach(self)
            return super().getresponse(*args, **kwargs)

    Guarded.__name__ = Guarded.__qualname__ = "Deadline" + conn_cls.__name__
    return Guarded


@functools.lru_cache(maxsize=1)
def _deadline_adapter_class():
    """A requests ``HTTPAdapter`` whose connections register with the calling thread's watchdog."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class _Pool(HTTPConnectionPool):
        ConnectionCls = _guarded(HTTPConnection)

    class _TLSPool(HTTPSConnectionPool):
        ConnectionCls = _guarded(HTTPSConnection)

    class DeadlineAdapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}

    return DeadlineAdapter


class VoiceClient:
    """Create, list and delete cloned voices on one ``requests.Session``.

    Every API call ends within ``settings.timeout_s`` (plus a fraction of a second to close a socket):
    retries, backoff and ``Retry-After`` waits included. ``list()`` makes one call per page. The watchdog
    that cuts a dripped answer short works on the client's own connection pools; through an HTTP proxy
    (``HTTPS_PROXY``) a dripped body is still cut at the deadline, dripped headers only by the per-read timeout.
    """

    def __init__(self, settings: Settings, *, session=None, max_retries: int = 3, backoff_s: float = 0.5,
                 max_backoff_s: float = 8.0):
        import requests

        self.settings = settings
        self.url = settings.enrollment_url
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self._session = session or requests.Session()
        adapter = _deadline_adapter_class()()
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update({"Content-Type": "application/json", **settings.auth_headers()})
        #: Service clock minus this machine's clock (seconds), from the last answer's ``Date`` header.
        self.server_clock_offset_s: float | None = None

    def __repr__(self) -> str:
        return f"VoiceClient({self.url!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transport -----------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        return redact(text, self.settings.api_key)

    def _post_once(self, payload: dict, deadline: _Deadline) -> dict:
        """One POST bounded by ``deadline``: the JSON object of a 200 answer, else APIError/TransportError."""
        import http.client

        import requests
        import urllib3

        action = payload["input"]["action"]
        remaining = deadline.remaining()
        if remaining <= 0:
            raise TransportError(f"enrollment {action}: the call's {deadline.seconds:g} s deadline (timeout_s) "
                                 "passed before an answer came")
        watchdog = _Watchdog()
        timer = threading.Timer(remaining + _WATCHDOG_GRACE_S, watchdog.fire)
        timer.daemon = True
        _local.watchdog = watchdog
        timer.start()
        resp = None
        complete = False
        try:
            t = max(0.001, min(self.settings.timeout_s, remaining))
            sent = time.time()
            resp = self._session.post(self.url, json=payload, timeout=(t, t), stream=True)
            self._note_server_date(resp.headers.get("Date"), sent, time.time())
            body = self._read_body(resp, deadline, action)
            complete = True
        except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                OSError) as exc:
            if watchdog.fired or deadline.remaining() <= 0:
                raise TransportError(f"enrollment {action}: no complete answer from {self.url} within the "
                                     f"call's {deadline.seconds:g} s deadline (timeout_s); "
                                     f"{type(exc).__name__}") from None
            raise TransportError(self._redact(f"no answer from {self.url}: {type(exc).__name__}: {exc}")) from None
        finally:
            watchdog.finish()
            timer.cancel()
            _local.watchdog = None
            if resp is not None:
                if complete:
                    resp.raw.release_conn()
                else:
                    resp.close()
        return _check_answer(resp.status_code, body, resp.headers, resp.reason, (self.settings.api_key,))

    def _note_server_date(self, value, sent: float, received: float) -> None:
        from email.utils import parsedate_to_datetime

        try:
            date = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        if date.tzinfo is None:  # not the GMT form HTTP requires: no clock to compare with
            return
        server = date.timestamp() + 0.5  # whole seconds: the middle of that second
        self.server_clock_offset_s = server - (sent + received) / 2

    def _read_body(self, resp, deadline: _Deadline, action: str) -> bytes:
        """The body, read in chunks against the deadline and capped at :data:`MAX_RESPONSE_BYTES`."""
        length = resp.headers.get("Content-Length", "")
        if resp.status_code == 200 and length.isdigit() and int(length) > MAX_RESPONSE_BYTES:
            raise APIError(200, "ResponseTooLarge", f"the {action} answer announces {int(length)} bytes; "
                           f"qvtools reads at most {MAX_RESPONSE_BYTES}")
        raw = resp.raw
        read = getattr(raw, "read1", None) or raw.read
        buf = bytearray()
        while True:
            if deadline.remaining() <= 0:
                raise TimeoutError("deadline passed while reading the body")
            chunk = read(_CHUNK, decode_content=True)
            if not chunk:
                return bytes(buf)
            buf += chunk
            if len(buf) > MAX_RESPONSE_BYTES:
                if resp.status_code == 200:
                    raise APIError(200, "ResponseTooLarge", f"the {action} answer is larger than "
                                   f"{MAX_RESPONSE_BYTES} bytes; qvtools stopped reading it")
                return bytes(buf[:MAX_RESPONSE_BYTES])  # an error page: its start says enough

    def _call(self, inp: dict, *, retry: bool = True, on_final_error=None, parameters: dict | None = None) -> dict:
        """One API call with its total deadline (``settings.timeout_s``); idempotent calls retry with
        exponential backoff on 429/5xx/connection errors, honouring ``Retry-After`` (capped, §3) only
        while it fits in the time left."""
        deadline = _Deadline(self.settings.timeout_s)
        payload = {"model": ENROLLMENT_MODEL, "input": inp}
        if parameters:
            payload["parameters"] = parameters  # §7.28: top level, beside "input"
        action = inp["action"]
        attempt = 0
        while True:
            try:
                return self._post_once(payload, deadline)
            except (APIError, TransportError) as exc:
                retryable = retry and (isinstance(exc, TransportError) or exc.retryable)
                if not retryable or attempt >= self.max_retries:
                    if attempt and on_final_error is not None and isinstance(exc, APIError):
                        result = on_final_error(exc)
                        if result is not None:
                            return result
                    raise
                delay = min(self.max_backoff_s, self.backoff_s * (2 ** attempt))
                retry_after = getattr(exc, "retry_after", None)
                if retry_after is not None:
                    delay = max(delay, retry_after)
                left = deadline.remaining()
                if delay >= left:
                    log.warning("enrollment %s failed (%s); not retried: waiting %.1f s would pass the call's "
                                "%g s deadline (timeout_s)", action, self._redact(str(exc)), delay,
                                deadline.seconds)
                    raise
                log.warning("enrollment %s failed (%s); retry %d/%d in %.1f s", action, self._redact(str(exc)),
                            attempt + 1, self.max_retries, delay)
                time.sleep(delay)
                attempt += 1

    # -- API -----------------------------------------------------------------------------------
    def create(self, audio, target_model: str, preferred_name: str, *, language: str | None = None,
               text: str | None = None, force: bool = False, parameters: dict | None = None) -> Voice:
        """Enroll a voice from a recording (path, bytes, file object or ``(samples, rate)``).

        ``parameters`` is the create's top-level ``parameters`` object; None (default) sends what the
        catalog says for the target's family (:func:`qvtools.catalog.create_parameters`: ``voice_clone_mode:
        normal`` for qwen3.8, without which the service silently makes an older-mode clone, §7.28; nothing
        for qwen3.5); ``{}`` sends none. The service accepts duplicate ``preferred_name`` values (§7.28):
        each create makes a new voice, whatever the name.

        Checked locally first: the field rules (§2.1) and the preflight (§2.4); a failing
        preflight raises :class:`InvalidAudio` carrying ``.report`` unless ``force=True``.
        A clone made in degraded mode comes back with ``fallback_mode=True`` (and a logged warning).
        """
        validate_create_args(target_model, preferred_name, language)
        parameters = _create_parameters(target_model, parameters)
        from .preflight import check

        # transcript_match (an offline ASR pass) is left to the service, which compares text and audio itself
        # (§2.1) and answers a mismatch with Audio.PreprocessError -> APIError; `qvtools check --text` runs it.
        # The DNSMOS row is information only (it never fails a clip) and cost ~85 % of the check's CPU (3 of
        # 3.5 CPU s on a 15 s clip): a create, which only needs the verdict, skips it; `qvtools check` shows it.
        report = check(audio, transcript=text, language=language, transcript_match=False, naturalness=False)
        if not report.ok:
            if not force:
                failed = "; ".join(f"{r.name} {r.value} (limit {r.limit})" for r in report.failed)
                raise InvalidAudio(f"the recording fails the enrollment preflight: {failed}. Fix it (qvtools "
                                   "prepare) or pass force=True; .report has every row", report)
            log.warning("preflight failed (%s); uploading anyway because force=True", report.status)
        inp = {"action": "create", "target_model": target_model, "preferred_name": preferred_name,
               "audio": {"data": encode_for_upload(audio)}}
        if text is not None:
            inp["text"] = text
        if language is not None:
            inp["language"] = language
        # The voices of this name before the request: a voice found after a lost answer is adopted only when
        # it is new (issue 13). Failing here is safe: nothing was sent yet.
        before = {v.voice for v in self.list() if v.preferred_name == preferred_name}
        started = datetime.now(timezone.utc)
        try:
            body = self._call(inp, retry=False, parameters=parameters)
        except TransportError as exc:
            found = self._reconcile_create(preferred_name, target_model, started, before, exc)
            return replace(found, clone_mode=parameters.get("voice_clone_mode"))
        out = body.get("output")
        if not isinstance(out, dict) or not isinstance(out.get("voice"), str) or not out["voice"]:
            raise APIError(200, "InvalidResponse", "the create answer has no output.voice: "
                           f"{_preview(body)}", body.get("request_id") if isinstance(body.get("request_id"),
                                                                                   str) else None)
        voice = replace(Voice.from_item({"target_model": target_model, "language": language, **out}), raw=body,
                        clone_mode=parameters.get("voice_clone_mode"))
        log.info("created voice %s for %s", voice.voice, voice.target_model)
        if voice.fallback_mode:
            log.warning("voice %s is a degraded clone (fallback_mode, reason %s): %s", voice.voice,
                        voice.fallback_reason or "not given", FALLBACK_ADVICE)
        return voice

    def _reconcile_create(self, name: str, target_model: str, started: datetime, before: set,
                          exc: TransportError) -> Voice:
        """A create without an answer may or may not have made a voice: look for it, never re-create.

        Adopted only when exactly one voice of this ``preferred_name`` and ``target_model`` is new since
        just before the request and its stamp does not predate the request; otherwise nothing is adopted
        and nothing is deleted (another client may own the candidates). What this cannot tell apart: our
        create never happened while another client made exactly one voice of the same name and model in the
        same seconds; ``preferred_name`` is the user's, so no per-request marker is added to it."""
        try:
            same = [v for v in self.list() if v.preferred_name == name and v.target_model == target_model]
        except (APIError, TransportError) as lexc:
            raise TransportError(f"create of {name!r} got no answer ({exc}) and the check with list failed "
                                 f"({lexc}); the voice may exist: check `qvtools voices list` before creating "
                                 "again") from None
        offset = self.server_clock_offset_s or 0.0
        since = started + timedelta(seconds=offset - _CLOCK_SKEW_S)
        fresh = [v for v in same if v.voice not in before and v.created_utc is not None and v.created_utc >= since]
        others = [v for v in same if v not in fresh]
        if len(fresh) == 1:
            log.warning("create got no answer (%s) but voice %s appeared since the request; using it", exc,
                        fresh[0].voice)
            return fresh[0]
        if len(fresh) > 1:
            raise TransportError(
                f"create of {name!r} got no answer ({exc}) and {len(fresh)} voices of that name for {target_model} "
                f"appeared since the request: {', '.join(v.voice for v in fresh)}. qvtools cannot tell which one "
                "is yours (another client may have made the others), so none was adopted and nothing was "
                "deleted: check `qvtools voices list` and delete the extra ones yourself") from None
        if others:
            raise TransportError(
                f"create of {name!r} got no answer ({exc}) and no new voice was found afterwards; voice(s) of "
                f"that name that predate the request exist ({', '.join(v.voice for v in others)}) and were not "
                "adopted; nothing was deleted. Check `qvtools voices list` before creating again") from None
        raise TransportError(f"create of {name!r} got no answer and the voice was not found afterwards ({exc}); "
                             "it may still appear: check `qvtools voices list` before creating again") from None

    def list(self, page_size: int = 100) -> Iterator[Voice]:
        """Every voice of the account (all kinds, §7.9), newest first, fetched page by page (§2.2).

        Paging stops at the last page (fewer items than ``page_size``, or ``total_count`` reached); a page
        holding only voices already seen (a server that ignores ``page_index``) or more than
        :data:`MAX_LIST_PAGES` pages raise :class:`APIError` (code ``InvalidResponse``). A voice seen on an
        earlier page is not yielded twice (creates while paging shift the list)."""
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 1_000_000:
            raise ConfigError(f"page_size must be an integer in 1..1000000, got {page_size!r}")
        seen: set[str] = set()
        for page_index in range(MAX_LIST_PAGES):
            body = self._call({"action": "list", "page_index": page_index, "page_size": page_size})
            out = body.get("output")
            out = out if isinstance(out, dict) else {}
            items = out.get("voice_list")
            if items is None:
                items = []
            if not isinstance(items, list):
                raise APIError(200, "InvalidResponse", f"list page {page_index}: output.voice_list is not a list: "
                               f"{_preview(items)}")
            voices = [Voice.from_item(item) for item in items]
            new = [v for v in voices if v.voice not in seen]
            if voices and not new:
                raise APIError(200, "InvalidResponse", f"list page {page_index} repeats voices already listed "
                               "(the service seems to ignore page_index); stopped paging")
            for v in new:
                seen.add(v.voice)
                yield v
            total = out.get("total_count")
            total = total if isinstance(total, int) and not isinstance(total, bool) else None
            if len(items) < page_size or (total is not None and len(seen) >= total):
                return
        raise APIError(200, "InvalidResponse", f"list did not end after {MAX_LIST_PAGES} pages of {page_size}; "
                       "stopped paging (raise page_size if the account really holds that many voices)")

    def select(self, prefix: str, *, kinds: Iterable[str] = OMNI_ONLY, all_kinds: bool = False) -> list[Voice]:
        """The voices whose name (or ``preferred_name``) starts with ``prefix`` and whose kind is one of
        ``kinds`` (default Omni clones only; ``all_kinds=True`` for every kind): what :meth:`purge` deletes."""
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError("a non-empty prefix is needed (refusing to select every voice)")
        wanted = _kind_set(kinds, all_kinds)
        return [v for v in self.list() if _matches(v, prefix) and v.kind in wanted]

    def count(self, *, kinds: Iterable[str] = OMNI_ONLY, all_kinds: bool = False) -> int:
        """How many voices of ``kinds`` the account holds (default Omni clones: the 1,000 quota of §2.4;
        the list also returns TTS clones, §7.9)."""
        wanted = _kind_set(kinds, all_kinds)
        if wanted == frozenset(VOICE_KINDS):
            body = self._call({"action": "list", "page_index": 0, "page_size": 1})
            out = body.get("output")
            total = out.get("total_count") if isinstance(out, dict) else None
            if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
                return total
        return sum(1 for v in self.list() if v.kind in wanted)

    def delete(self, voice) -> None:
        """Delete a voice (frees a quota slot, §2.3). Unknown voice: ``APIError`` ``BadRequest.VoiceNotFound``."""
        name = voice.voice if isinstance(voice, Voice) else str(voice)
        if not name:
            raise ConfigError("delete needs a voice name")

        def already_gone(exc: APIError):
            # A retried delete whose first attempt went through answers VoiceNotFound: that is success.
            return {} if exc.code == "BadRequest.VoiceNotFound" else None

        self._call({"action": "delete", "voice": name}, on_final_error=already_gone)
        log.info("deleted voice %s", name)

    def purge(self, prefix: str, *, kinds: Iterable[str] = OMNI_ONLY, all_kinds: bool = False,
              voices: Iterable | None = None) -> list[str]:
        """Delete the voices :meth:`select` finds (Omni clones only unless ``kinds``/``all_kinds`` say
        otherwise); the names deleted. ``voices``: delete only these (e.g. the ones shown to a user for
        confirmation), each still checked against ``prefix`` and ``kinds``."""
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError("purge needs a non-empty prefix (refusing to delete every voice)")
        wanted = _kind_set(kinds, all_kinds)
        if voices is None:
            matching = [v for v in self.list() if _matches(v, prefix)]
            chosen = [v for v in matching if v.kind in wanted]
            kept = len(matching) - len(chosen)
            if kept:
                log.info("purge %r: keeping %d matching voice(s) of other kinds (%s); pass kinds= to include them",
                         prefix, kept, ", ".join(sorted({v.kind for v in matching if v.kind not in wanted})))
        else:
            chosen = [v if isinstance(v, Voice) else Voice(voice=str(v)) for v in voices]
            chosen = [v for v in chosen if _matches(v, prefix) and v.kind in wanted]
        deleted = []
        for v in chosen:
            try:
                self.delete(v.voice)
            except APIError as exc:
                if exc.code != "BadRequest.VoiceNotFound":
                    raise
            deleted.append(v.voice)
        return deleted
