"""Client of the voice enrollment API (protocol reference §2): create, list, delete cloned voices.

:class:`VoiceClient` runs on one :class:`requests.Session`; every request has a timeout.
:func:`raise_for_response` is the one place where HTTP answers become exceptions
(:class:`~qvtools.errors.APIError`). ``list``/``delete`` are retried with exponential backoff
(honouring ``Retry-After``) on 429, 5xx and connection errors; ``create`` is billable and is
never retried blindly: a create that got no answer is reconciled with ``list`` or raised as
:class:`~qvtools.errors.TransportError`. The API key never appears in an exception or a log line.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterator

from .catalog import voice_kind
from .config import ENROLLMENT_MODEL, TARGET_MODELS, Settings, redact
from .errors import APIError, ConfigError, InvalidAudio, TransportError, api_error_from_http

__all__ = ["Voice", "VoiceClient", "raise_for_response", "LANGUAGES", "DIALECTS", "NAME_PATTERN",
           "validate_create_args", "encode_for_upload"]

log = logging.getLogger(__name__)

#: ``preferred_name``: letters, digits, ``_``, ≤ 16 chars (§2.1 [guess] regex).
NAME_PATTERN = r"^[A-Za-z0-9_]{1,16}$"
_NAME_RE = re.compile(NAME_PATTERN)
#: The 29 language codes of ``input.language`` (§2.1).
LANGUAGE_CODES = ("zh", "en", "de", "it", "pt", "es", "ja", "ko", "fr", "ru", "th", "id", "ar", "cs", "da", "nl",
                  "fi", "he", "hi", "is", "ms", "no", "fa", "pl", "sv", "tl", "tr", "ur", "vi")
#: The Chinese dialects accepted as ``input.language`` (§2.1).
DIALECTS = ("Dongbei", "Shannxi", "Sichuan", "Henan", "Changsha", "Tianjin", "Hangzhou", "Liaoning", "Shenyang",
            "Anshan")
LANGUAGES = frozenset(LANGUAGE_CODES + DIALECTS)

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_DATA_URI = 10_485_760  # "Exceeded limit on max bytes per data-uri item : 10485760" (§3)


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
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def kind(self) -> str:
        """``omni``, ``tts`` or ``unknown``: the enrollment list mixes Omni and TTS clones (§7.9)."""
        return voice_kind(self.voice, self.target_model)

    @classmethod
    def from_item(cls, item: dict) -> "Voice":
        fb = item.get("fallback_mode")
        return cls(voice=item["voice"], target_model=item.get("target_model"), gmt_create=item.get("gmt_create"),
                   gmt_modified=item.get("gmt_modified"), language=item.get("language"),
                   fallback_mode=fb if isinstance(fb, bool) else None,
                   fallback_reason=item.get("fallback_reason") if isinstance(item.get("fallback_reason"), str)
                   else None, raw=dict(item))

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
        return datetime.strptime(m.group(1)[:14], "%Y%m%d%H%M%S").replace(
            microsecond=int(m.group(1)[14:]) * 1000, tzinfo=timezone.utc)

    def __str__(self) -> str:
        return self.voice


def raise_for_response(resp, *, secrets=()) -> dict:
    """The JSON body of a 200 answer, else :class:`APIError` built by the one HTTP error mapper
    (:func:`qvtools.errors.api_error_from_http`: code, message, request_id, Retry-After, redacted)."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code == 200 and isinstance(body, dict):
        return body
    raise api_error_from_http(resp.status_code, resp.text, resp.headers, resp.reason, secrets=secrets)


def validate_create_args(target_model: str, preferred_name: str, language: str | None = None) -> None:
    """The documented field rules of §2.1, checked before anything is uploaded."""
    if target_model not in TARGET_MODELS:
        raise ConfigError(f"target_model {target_model!r} cannot hold a cloned voice; use one of "
                          f"{', '.join(TARGET_MODELS)}")
    if not isinstance(preferred_name, str) or not _NAME_RE.fullmatch(preferred_name):
        raise ConfigError(f"preferred_name {preferred_name!r} is invalid: use 1-16 letters, digits or '_'")
    if language is not None and language not in LANGUAGES:
        raise ConfigError(f"language {language!r} is not supported; use a code such as 'en' or 'zh' "
                          f"({', '.join(LANGUAGE_CODES)}) or a dialect ({', '.join(DIALECTS)})")


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


class VoiceClient:
    """Create, list and delete cloned voices on one ``requests.Session``."""

    def __init__(self, settings: Settings, *, session=None, max_retries: int = 3, backoff_s: float = 0.5,
                 max_backoff_s: float = 8.0):
        import requests

        self.settings = settings
        self.url = settings.enrollment_url
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self._session = session or requests.Session()
        self._session.headers.update({"Content-Type": "application/json", **settings.auth_headers()})

    def __repr__(self) -> str:
        return f"VoiceClient({self.url!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transport -----------------------------------------------------------------------------
    def _post_once(self, payload: dict) -> dict:
        import requests

        try:
            resp = self._session.post(self.url, json=payload, timeout=self.settings.timeout_s)
        except requests.RequestException as exc:
            raise TransportError(self._redact(f"no answer from {self.url}: {type(exc).__name__}: {exc}")) from None
        return raise_for_response(resp, secrets=(self.settings.api_key,))

    def _redact(self, text: str) -> str:
        return redact(text, self.settings.api_key)

    def _post_retrying(self, payload: dict, *, on_retry_status=None) -> dict:
        """POST with exponential backoff on 429/5xx/connection errors (idempotent calls only)."""
        attempt = 0
        while True:
            try:
                return self._post_once(payload)
            except (APIError, TransportError) as exc:
                retryable = isinstance(exc, TransportError) or exc.retryable
                if not retryable or attempt >= self.max_retries:
                    if attempt and on_retry_status is not None and isinstance(exc, APIError):
                        result = on_retry_status(exc)
                        if result is not None:
                            return result
                    raise
                delay = min(self.max_backoff_s, self.backoff_s * (2 ** attempt))
                retry_after = getattr(exc, "retry_after", None)
                if retry_after is not None:
                    delay = max(delay, retry_after)
                log.warning("enrollment %s failed (%s); retry %d/%d in %.1f s", payload["input"]["action"],
                            exc, attempt + 1, self.max_retries, delay)
                time.sleep(delay)
                attempt += 1

    def _payload(self, inp: dict) -> dict:
        return {"model": ENROLLMENT_MODEL, "input": inp}

    # -- API -----------------------------------------------------------------------------------
    def create(self, audio, target_model: str, preferred_name: str, *, language: str | None = None,
               text: str | None = None, force: bool = False) -> Voice:
        """Enroll a voice from a recording (path, bytes, file object or ``(samples, rate)``).

        Checked locally first: the field rules (§2.1) and the preflight (§2.4); a failing
        preflight raises :class:`InvalidAudio` carrying ``.report`` unless ``force=True``.
        """
        validate_create_args(target_model, preferred_name, language)
        from .preflight import check

        report = check(audio, transcript=text)
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
        started = datetime.now(timezone.utc)
        try:
            body = self._post_once(self._payload(inp))
        except TransportError as exc:
            return self._reconcile_create(preferred_name, target_model, started, exc)
        out = body.get("output") or {}
        if "voice" not in out:
            raise APIError(200, "Unknown", "the create answer has no output.voice", body.get("request_id"))
        voice = Voice(voice=out["voice"], target_model=out.get("target_model", target_model), language=language,
                      raw=body)
        log.info("created voice %s for %s", voice.voice, voice.target_model)
        return voice

    def _reconcile_create(self, name: str, target_model: str, started: datetime, exc: TransportError) -> Voice:
        """A create without an answer may or may not have made a voice: look for it, never re-create."""
        since = started - timedelta(seconds=2)
        try:
            found = [v for v in self.list() if v.preferred_name == name and v.target_model == target_model
                     and (v.created_utc is None or v.created_utc >= since)]
        except (APIError, TransportError):
            found = []
        if len(found) == 1:
            log.warning("create got no answer (%s) but voice %s exists; using it", exc, found[0].voice)
            return found[0]
        raise TransportError(f"create of {name!r} got no answer and the voice was not found afterwards ({exc}); "
                             "it may still appear: check `qvtools voices list` before creating again") from None

    def list(self, page_size: int = 100) -> Iterator[Voice]:
        """Every voice of the account, newest first, fetched page by page (§2.2)."""
        if not isinstance(page_size, int) or not 1 <= page_size <= 1_000_000:
            raise ConfigError(f"page_size must be an integer in 1..1000000, got {page_size!r}")
        page_index = 0
        seen = 0
        while True:
            body = self._post_retrying(self._payload(
                {"action": "list", "page_index": page_index, "page_size": page_size}))
            out = body.get("output") or {}
            items = out.get("voice_list") or []
            for item in items:
                yield Voice.from_item(item)
            seen += len(items)
            total = out.get("total_count")
            if len(items) < page_size or (total is not None and seen >= int(total)):
                return
            page_index += 1

    def count(self) -> int:
        """How many voices the account holds (out of the 1,000 quota, §2.4)."""
        body = self._post_retrying(self._payload({"action": "list", "page_index": 0, "page_size": 1}))
        total = (body.get("output") or {}).get("total_count")
        if total is not None:
            return int(total)
        return sum(1 for _ in self.list())

    def delete(self, voice) -> None:
        """Delete a voice (frees a quota slot, §2.3). Unknown voice: ``APIError`` ``BadRequest.VoiceNotFound``."""
        name = voice.voice if isinstance(voice, Voice) else str(voice)
        if not name:
            raise ConfigError("delete needs a voice name")

        def already_gone(exc: APIError):
            # A retried delete whose first attempt went through answers VoiceNotFound: that is success.
            return {} if exc.code == "BadRequest.VoiceNotFound" else None

        self._post_retrying(self._payload({"action": "delete", "voice": name}), on_retry_status=already_gone)
        log.info("deleted voice %s", name)

    def purge(self, prefix: str) -> list[str]:
        """Delete every voice whose name starts with ``prefix`` (or whose preferred_name does); the names deleted."""
        if not prefix:
            raise ConfigError("purge needs a non-empty prefix (refusing to delete every voice)")
        names = [v.voice for v in self.list()
                 if v.voice.startswith(prefix) or (v.preferred_name or "").startswith(prefix)]
        deleted = []
        for name in names:
            try:
                self.delete(name)
            except APIError as exc:
                if exc.code != "BadRequest.VoiceNotFound":
                    raise
            deleted.append(name)
        return deleted
