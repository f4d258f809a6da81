"""``POST /api/v1/services/audio/tts/customization``: create / list / delete cloned voices.

Implements protocol reference §2 (request and response bodies), §3 (error shape and
codes) and §5 items 1–3. Where the documentation leaves the error code open (bad
``action``, ``preferred_name``, ``target_model``) it is ``400 InvalidParameter`` (§3 [guess]).
CPU-heavy work (decode, VAD, voice analysis) runs in the app's ``enroll_executor``, not on the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from datetime import datetime, timezone

from aiohttp import web

from ..config import ENROLLMENT_MODEL, TARGET_MODELS
from ..enrollment import LANGUAGES, NAME_PATTERN
from .app import ServiceError, authenticate, new_request_id, read_json
from .config import ServiceConfig
from .store import QuotaExceeded, VoiceRecord, VoiceStore

__all__ = ["handle_customization", "process_enrollment_audio", "voice_name", "EnrolledAudio"]

log = logging.getLogger(__name__)

_NAME_RE = re.compile(NAME_PATTERN)
_PAGE_MAX = 1_000_000  # page_index / page_size range 0–1,000,000 (§2.2)


def _param_error(name: str) -> ServiceError:
    return ServiceError(400, "InvalidParameter",
                        f"Required parameter({name}) missing or invalid, please check the request parameters.")


def voice_name(preferred_name: str, now: datetime | None = None) -> str:
    """``qwen-omni-vc-{name}-voice-{UTC yyyyMMddHHmmssSSS}-{4 hex}`` (§2.1, §5 item 3)."""
    now = now or datetime.now(timezone.utc)
    stamp = now.strftime("%Y%m%d%H%M%S") + f"{now.microsecond // 1000:03d}"
    return f"qwen-omni-vc-{preferred_name}-voice-{stamp}-{secrets.token_hex(2)}"


class EnrolledAudio:
    """What a create keeps of the upload: mono 16-bit WAV, content hash and voice profile."""

    def __init__(self, wav: bytes, sha256: str, profile: dict | None, duration_s: float, sample_rate: int):
        self.wav, self.sha256, self.profile = wav, sha256, profile
        self.duration_s, self.sample_rate = duration_s, sample_rate


def process_enrollment_audio(raw: bytes, config: ServiceConfig) -> EnrolledAudio:
    """Decode and check an upload against §2.4; raises :class:`ServiceError` with the documented code."""
    import numpy as np

    from .. import audio
    from ..errors import InvalidAudio

    decoder_error = ServiceError(400, "Audio.DecoderError", "Decoder audio file failed.")
    try:
        info = audio.probe(raw)
    except InvalidAudio:
        raise decoder_error from None
    # "max 60 s" (§2.4) -> Audio.DurationLimitError; checked on the header before decoding it all.
    if info.duration_s == info.duration_s and info.duration_s > config.max_audio_s:
        raise ServiceError(400, "Audio.DurationLimitError", "Audio duration exceeds maximum allowed limit.")
    # "Sample rate ≥ 24 kHz" (§2.4) -> Audio.AudioRateError.
    if info.sample_rate < config.min_sample_rate:
        raise ServiceError(400, "Audio.AudioRateError", "File sample rate unsupported.")
    try:
        # decoding stops one sample past max_audio_s: a header that understates the length cannot make
        # the service decode (and hold) more than that
        x, sr = audio.load(raw, mono=True, limit_s=config.max_audio_s)
    except InvalidAudio:
        raise decoder_error from None
    duration = len(x) / sr
    if duration > config.max_audio_s:
        raise ServiceError(400, "Audio.DurationLimitError", "Audio duration exceeds maximum allowed limit.")
    if sr < config.min_sample_rate:
        raise ServiceError(400, "Audio.AudioRateError", "File sample rate unsupported.")
    if not np.all(np.isfinite(x)) or float(np.sqrt(np.mean(np.square(x)))) < 1e-4:
        # silence -> Audio.PreprocessError (§3, §5 item 2)
        raise ServiceError(400, "Audio.PreprocessError", "Audio preprocess error.")
    from ..vad import speech_segments

    segments = speech_segments(x, sr)
    longest = max((end - start for start, end in segments), default=0.0)
    # "≥ 3 s of continuous clear speech" (§2.4) -> Audio.PreprocessError (§3 second message).
    if not segments:
        raise ServiceError(400, "Audio.PreprocessError", "Audio preprocess error.")
    if longest < config.min_continuous_speech_s:
        raise ServiceError(400, "Audio.PreprocessError", "No segments meet minimum duration requirement")
    from .voice import analyze

    profile = analyze(x, sr).to_dict()
    return EnrolledAudio(audio.wav_bytes(x, sr), hashlib.sha256(raw).hexdigest(), profile, duration, sr)


def _ok(output: dict | None, count: int, request_id: str) -> web.Response:
    body = {"output": output, "usage": {"count": count}, "request_id": request_id}
    if output is None:
        del body["output"]
    return web.json_response(body, headers={"x-request-id": request_id})


def _page_arg(inp: dict, name: str, default: int) -> int:
    value = inp.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _PAGE_MAX:
        raise _param_error(f"input.{name}")
    return value


def _now_strings() -> tuple[datetime, str]:
    now = datetime.now(timezone.utc)
    return now, now.strftime("%Y-%m-%d %H:%M:%S")


async def _create(request: web.Request, scope: str, inp: dict) -> web.Response:
    config: ServiceConfig = request.app["config"]
    store: VoiceStore = request.app["store"]
    target_model = inp.get("target_model")
    if not isinstance(target_model, str) or target_model not in TARGET_MODELS:
        raise _param_error("input.target_model")
    name = inp.get("preferred_name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise _param_error("input.preferred_name")
    language = inp.get("language")
    if language is not None and (not isinstance(language, str) or language not in LANGUAGES):
        raise _param_error("input.language")
    text = inp.get("text")
    if text is not None and not isinstance(text, str):
        raise _param_error("input.text")
    audio_obj = inp.get("audio")
    data = audio_obj.get("data") if isinstance(audio_obj, dict) else None
    if not isinstance(data, str) or not data:
        raise _param_error("input.audio.data")
    if data.startswith(("http://", "https://")):
        # §2.1 (b) allows a public URL; the local service is offline and cannot fetch it (§5 item 2).
        raise ServiceError(400, "InvalidParameter",
                           "Required parameter(input.audio.data) missing or invalid: the local service is offline "
                           "and cannot fetch http(s) URLs; send the audio as a data URL (data:audio/wav;base64,...).")
    # "keeping the encoded string < 10 MB" (§2.1)
    if len(data) >= config.max_data_uri_bytes:
        raise ServiceError(400, "InvalidParameter",
                           f"Exceeded limit on max bytes per data-uri item : {config.max_data_uri_bytes}")
    from ..audio import parse_data_url

    try:
        mime, raw = parse_data_url(data)
    except ValueError:
        raise _param_error("input.audio.data") from None
    if mime not in config.allowed_mime:
        raise _param_error("input.audio.data")
    # 1,000 voices per account (§2.4): checked before the expensive work, and again atomically on insert.
    if store.count(scope) >= config.voice_quota:
        raise _quota_error()
    loop = asyncio.get_running_loop()
    enrolled = await loop.run_in_executor(request.app["enroll_executor"], process_enrollment_audio, raw, config)
    now, stamp = _now_strings()
    record = VoiceRecord(voice=voice_name(name, now), target_model=target_model, language=language,
                         preferred_name=name, gmt_create=stamp, gmt_modified=stamp, last_used=None,
                         sha256=enrolled.sha256, profile=enrolled.profile, audio=enrolled.wav)
    try:
        await loop.run_in_executor(request.app["enroll_executor"], lambda: store.add(scope, record, quota=config.voice_quota))
    except QuotaExceeded:
        raise _quota_error() from None
    log.info("created voice %s (%s, %.1f s at %d Hz)", record.voice, target_model, enrolled.duration_s,
             enrolled.sample_rate)
    return _ok({"voice": record.voice, "target_model": target_model}, 1, new_request_id())


def _quota_error() -> ServiceError:
    return ServiceError(400, "Throttling.AllocationQuota",
                        "Maximum voice storage limit exceeded, please delete existing voices.")


async def _list(request: web.Request, scope: str, inp: dict) -> web.Response:
    page_index = _page_arg(inp, "page_index", 0)
    page_size = _page_arg(inp, "page_size", 10)
    store: VoiceStore = request.app["store"]
    loop = asyncio.get_running_loop()
    items, total = await loop.run_in_executor(request.app["enroll_executor"], store.list, scope, page_index, page_size)
    output = {"voice_list": [r.to_list_item() for r in items], "total_count": total,
              "page_index": page_index, "page_size": page_size}
    return _ok(output, 0, new_request_id())


async def _delete(request: web.Request, scope: str, inp: dict) -> web.Response:
    voice = inp.get("voice")
    if not isinstance(voice, str) or not voice:
        raise _param_error("input.voice")
    store: VoiceStore = request.app["store"]
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(request.app["enroll_executor"], store.delete, scope, voice):
        raise ServiceError(400, "BadRequest.VoiceNotFound", f"Voice '{voice}' not found.")  # §2.3, ERR
    log.info("deleted voice %s", voice)
    return _ok({"voice": voice}, 0, new_request_id())


_ACTIONS = {"create": _create, "list": _list, "delete": _delete}


async def handle_customization(request: web.Request) -> web.Response:
    """The enrollment endpoint (§2): auth, body, model and action dispatch."""
    scope = authenticate(request)
    body = await read_json(request)
    model = body.get("model")
    if model is None or model == "":
        raise _param_error("model")
    if model != ENROLLMENT_MODEL:
        raise ServiceError(400, "InvalidParameter", "Model not found")  # §3 InvalidParameter "Model not found"
    inp = body.get("input")
    if not isinstance(inp, dict):
        raise _param_error("input")
    # body["parameters"] (the SDK sends {}) is tolerated and ignored (§2 [sdk]).
    action = inp.get("action")
    handler = _ACTIONS.get(action) if isinstance(action, str) else None
    if handler is None:
        raise _param_error("input.action")
    faults = request.app.get("faults")  # injected faults (qvtools/server/faults.py), off by default
    if faults is not None:
        return await faults.enrollment(request, scope, action, handler(request, scope, inp))
    return await handler(request, scope, inp)
