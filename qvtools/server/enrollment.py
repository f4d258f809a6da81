"""``POST /api/v1/services/audio/tts/customization``: create / list / delete cloned voices.

Implements protocol reference §2 (request and response bodies), §3 (error shape and
codes) and §5 items 1–3. Where the documentation leaves the error code open (bad
``action``, ``preferred_name``, ``target_model``) it is ``400 InvalidParameter`` (§3 [guess]).
CPU-heavy work (decode, VAD, voice analysis, the ``input.text`` ASR check) runs on the app's ``ENROLL_EXECUTOR``
pool, not on the loop. ``input.language`` is validated against :data:`qvtools.spec.LANGUAGES` (§2.1), stored on
the voice and used to transcribe the audio for the ``input.text`` check (``ServiceConfig.enroll_text_check``).
§ numbers refer to ``../shared/reference/dashscope-protocol.md``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from datetime import datetime, timezone

from aiohttp import web

from ..catalog import OMNI_CLONE_PREFIX, VOICE_CLONE_MODES, create_parameters
from ..config import ENROLLMENT_MODEL
from ..spec import LANGUAGES, NAME_PATTERN
from .faults import FAULTS
from .http import CONFIG, ENROLL_EXECUTOR, STORE, STORE_EXECUTOR, ServiceError, authenticate, new_request_id, read_json
from .config import ServiceConfig
from .store import QuotaExceeded, VoiceRecord, VoiceStore, accepts_target_model

__all__ = ["handle_customization", "process_enrollment_audio", "process_enrollment_upload", "check_upload_header",
           "voice_name", "EnrolledAudio", "DecodeSlots", "ENROLL_SLOTS", "TextCheck", "check_enrollment_text"]

log = logging.getLogger(__name__)

_NAME_RE = re.compile(NAME_PATTERN)
_PAGE_MAX = 1_000_000  # page_index / page_size range 0–1,000,000 (§2.2)


def _param_error(name: str) -> ServiceError:
    return ServiceError(400, "InvalidParameter",
                        f"Required parameter({name}) missing or invalid, please check the request parameters.")


def voice_name(preferred_name: str, now: datetime | None = None) -> str:
    """``qwen-omni-vc-{name}-voice-{UTC yyyyMMddHHmmssSSS}-{4 hex}`` (§2.1, §5 item 3); the name keeps the
    case and ``_`` of ``preferred_name`` (§7.19: ``qwen-omni-vc-Beton-voice-…``, ``qwen-omni-vc-mehdi_ar-…``)."""
    now = now or datetime.now(timezone.utc)
    stamp = now.strftime("%Y%m%d%H%M%S") + f"{now.microsecond // 1000:03d}"
    return f"{OMNI_CLONE_PREFIX}{preferred_name}-voice-{stamp}-{secrets.token_hex(2)}"


def _printable(text: str, limit: int = 64) -> str:
    """``text`` with lone surrogates escaped and cut to ``limit`` characters (for an error message)."""
    out = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return out if len(out) <= limit else out[:limit] + "…"


class EnrolledAudio:
    """What a create keeps of the upload: mono 16-bit WAV (at ``ServiceConfig.store_sample_rate``),
    content hash, voice profile, and whether the clone is degraded (``fallback_reason`` or None)."""

    def __init__(self, wav: bytes, sha256: str, profile: dict | None, duration_s: float, sample_rate: int,
                 fallback_reason: str | None = None, snr_db: float | None = None):
        self.wav, self.sha256, self.profile = wav, sha256, profile
        self.duration_s, self.sample_rate = duration_s, sample_rate
        self.fallback_reason, self.snr_db = fallback_reason, snr_db

    @property
    def fallback_mode(self) -> bool:
        return self.fallback_reason is not None


_DECODER_FAILED = "Decoder audio file failed."  # §3 Audio.DecoderError
_CONTAINER_NAMES = {"wav": "WAV", "mp3": "MP3", "m4a": "MP4/M4A", "flac": "FLAC", "ogg": "OGG", "aac": "raw AAC (ADTS)",
                    "aiff": "AIFF", "caf": "CAF", "mpeg": "MPEG layer I/II", None: "not a known audio format"}
_FORMATS_HINT = "send WAV (16-bit PCM), MP3 or M4A labelled audio/wav, audio/mpeg or audio/mp4 (SEED §2.4)"


def _decoder_error(detail: str | None = None) -> ServiceError:
    """400 ``Audio.DecoderError`` (§3): the documented message, then what exactly was wrong."""
    return ServiceError(400, "Audio.DecoderError", _DECODER_FAILED if not detail else f"{_DECODER_FAILED[:-1]}: {detail}")


def _duration_error() -> ServiceError:
    return ServiceError(400, "Audio.DurationLimitError", "Audio duration exceeds maximum allowed limit.")


def _rate_error() -> ServiceError:
    return ServiceError(400, "Audio.AudioRateError", "File sample rate unsupported.")


def check_upload_header(raw: bytes, config: ServiceConfig, mime: str | None = None):
    """The container header checked against §2.4 and the service bounds, *before* anything is decoded.

    The content (sniffed from its magic bytes, never from the label) must be the container ``mime`` names
    (``audio.MIME_CONTAINERS``; any allowed one when ``mime`` is None): FLAC/OGG/ADTS under any label, an MP4
    with a video track and compressed WAV codecs are refused, as are more than ``max_channels`` channels and
    more than ``max_decoded_samples`` frames × channels. Returns the :class:`~qvtools.audio.AudioInfo`.
    """
    from .. import audio
    from ..errors import InvalidAudio

    container = audio.sniff_container(raw)
    expected = audio.MIME_CONTAINERS.get(mime, ()) if mime is not None else tuple(
        c for m in config.allowed_mime for c in audio.MIME_CONTAINERS.get(m, ()))
    if container not in expected:
        label = f"the data URL says {mime}" if mime is not None else "it is not an accepted format"
        raise _decoder_error(f"the content is {_CONTAINER_NAMES.get(container, container)}, but {label}; "
                             f"{_FORMATS_HINT}.")
    try:
        info = audio.probe(raw)  # header only (sf.info / PyAV's container header)
    except InvalidAudio:
        raise _decoder_error() from None
    if info.container not in expected:  # e.g. an ID3 tag in front of FLAC: the decoder has the last word
        raise _decoder_error(f"the content is {_CONTAINER_NAMES.get(info.container, info.container)}; {_FORMATS_HINT}.")
    if container == "wav" and info.codec not in audio.WAV_SUBTYPES:
        raise _decoder_error(f"WAV with {info.codec} coding is not supported; {_FORMATS_HINT}.")
    if info.video_streams:
        raise _decoder_error("the file holds a video track; send the audio alone (M4A, MP3 or WAV).")
    if not 1 <= info.channels <= config.max_channels:
        raise _decoder_error(f"the audio has {info.channels} channels; at most {config.max_channels} are accepted "
                             "(mono recommended, SEED §2.4).")
    if info.sample_rate <= 0:
        raise _decoder_error()
    # "max 60 s" (§2.4) -> Audio.DurationLimitError; "Sample rate ≥ 24 kHz" (§2.4) -> Audio.AudioRateError.
    if info.duration_s == info.duration_s and info.duration_s > config.max_audio_s:
        raise _duration_error()
    if info.sample_rate < config.min_sample_rate:
        raise _rate_error()
    if info.frames * info.channels > config.max_decoded_samples:
        raise _decoder_error(f"{info.duration_s:.1f} s at {info.sample_rate} Hz × {info.channels} channel(s) decodes "
                             f"to more than {config.max_decoded_samples} samples; resample to 48 kHz or less.")
    return info


def process_enrollment_audio(raw: bytes, config: ServiceConfig, mime: str | None = None) -> EnrolledAudio:
    """Check and decode an upload against §2.4 within the service's bounds; raises :class:`ServiceError`
    with the documented code. Memory: the decoded float32 samples never exceed ``max_decoded_samples``."""
    import numpy as np

    from .. import audio
    from ..errors import InvalidAudio
    from ..metrics import snr_db

    info = check_upload_header(raw, config, mime)
    rate, channels = info.sample_rate, info.channels
    # decoding stops one sample past max_audio_s, or past the sample cap: a header that understates the
    # length (or the channels) cannot make the service decode (and hold) more than that
    limit_s = min(float(config.max_audio_s), config.max_decoded_samples / (channels * rate))
    try:
        x, sr = audio.load(raw, mono=True, limit_s=limit_s)
    except InvalidAudio:
        raise _decoder_error() from None
    if sr < config.min_sample_rate:
        raise _rate_error()
    if len(x) > config.max_audio_s * sr:
        raise _duration_error()
    if len(x) > limit_s * sr:
        raise _decoder_error(f"the audio decodes to more than {config.max_decoded_samples} samples.")
    duration = len(x) / sr
    sha = hashlib.sha256(raw).hexdigest()
    if not np.all(np.isfinite(x)) or float(np.sqrt(np.mean(np.square(x)))) < 1e-4:
        # silence -> Audio.PreprocessError (§3, §5 item 2)
        raise ServiceError(400, "Audio.PreprocessError", "Audio preprocess error.")
    # keep (and analyse) what is needed: mono at store_sample_rate, never a 384 kHz blob
    store_sr = min(sr, int(config.store_sample_rate))
    if sr != store_sr:
        x = audio.resample(x, sr, store_sr)
    from ..vad import longest_continuous, speech_segments

    segments = speech_segments(x, store_sr)
    longest = longest_continuous(segments)  # gaps < spec.CONTINUITY_GAP_S bridged, as qvtools check (issue 12)
    # "≥ 3 s of continuous clear speech" (§2.4) -> Audio.PreprocessError (§3 second message).
    if not segments:
        raise ServiceError(400, "Audio.PreprocessError", "Audio preprocess error.")
    if longest < config.min_continuous_speech_s:
        raise ServiceError(400, "Audio.PreprocessError", "No segments meet minimum duration requirement")
    # "no background sound" (§2.4): a noisy clip is cloned in degraded mode (QC-VC fallback_mode, §7.9)
    snr = float(snr_db(x, store_sr))
    fallback = None
    if config.fallback_min_snr_db is not None and snr < float(config.fallback_min_snr_db):
        fallback = config.fallback_reason
    from .voice import analyze

    # the profile is measured on at most analysis_max_s from the first speech (§2.4 recommends 10-20 s):
    # a 60 s clip cost +110 MB and ~8 s of analysis, 20 s a third of that
    first = int(segments[0][0] * store_sr)
    span = x[first:first + int(config.analysis_max_s * store_sr)] if config.analysis_max_s else x
    try:
        profile = analyze(span, store_sr).to_dict()
    except InvalidAudio:  # no voiced speech to measure -> Audio.PreprocessError (§3)
        raise ServiceError(400, "Audio.PreprocessError", "Audio preprocess error.") from None
    return EnrolledAudio(audio.wav_bytes(x, store_sr), sha, profile, duration, sr, fallback, snr)


class TextCheck:
    """Outcome of :func:`check_enrollment_text`: ``score`` (``metric`` = "cer" or "wer"), the ASR text, or
    ``skipped`` with the reason (no ASR engines), or ``bad_text`` (nothing left to compare after normalisation)."""

    def __init__(self, score: float | None = None, metric: str | None = None, asr_text: str = "",
                 skipped: str | None = None, bad_text: bool = False):
        self.score, self.metric, self.asr_text, self.skipped = score, metric, asr_text, skipped
        self.bad_text = bad_text

    @property
    def mismatch(self) -> bool:
        from ..metrics import TRANSCRIPT_MISMATCH_THRESHOLD

        return self.score is not None and self.score > TRANSCRIPT_MISMATCH_THRESHOLD


def check_enrollment_text(wav: bytes, text: str, language: str | None) -> TextCheck:
    """Compare ``input.text`` with what the stored enrollment audio says (§2.1; issue 10 item 4).

    The audio is transcribed offline (:func:`qvtools.metrics.transcript_mismatch`: Whisper in ``language``
    when given, else detected; CER for zh/ja/ko, WER otherwise, normalised). Runs on the enrollment
    executor, never on the event loop. Missing ASR engines give ``skipped`` (logged), not an error."""
    from ..audio import load
    from ..errors import ConfigError
    from ..metrics import transcript_mismatch

    x, sr = load(wav, mono=True)
    try:
        score, metric, asr_text = transcript_mismatch(x, sr, text, language)
    except ImportError as exc:
        log.warning("enrollment text not compared with the audio: %s", exc)
        return TextCheck(skipped=f"ASR engines not installed ({exc})")
    except ConfigError as exc:  # the text normalises to nothing (only punctuation)
        return TextCheck(skipped=str(exc), bad_text=True)
    return TextCheck(score, metric, asr_text)


def _apply_text_check(enrolled: EnrolledAudio, result: TextCheck, config: ServiceConfig) -> EnrolledAudio:
    """Refuse (400 ``Audio.PreprocessError``, §3 "text mismatch") or degrade (§7.9) a mismatching create."""
    from ..metrics import TRANSCRIPT_MISMATCH_THRESHOLD

    if result.bad_text:
        raise _param_error("input.text")
    if result.skipped is not None:
        return enrolled
    log.info("enrollment text check: %s %.2f (threshold %.2f)", result.metric, result.score,
             TRANSCRIPT_MISMATCH_THRESHOLD)
    if not result.mismatch:
        return enrolled
    if config.enroll_text_check == "fallback":
        if enrolled.fallback_reason is None:
            enrolled.fallback_reason = config.text_mismatch_reason
        return enrolled
    # §3: 400 Audio.PreprocessError "Audio preprocess error." (text mismatch); the rest says why
    raise ServiceError(400, "Audio.PreprocessError",
                       f"Audio preprocess error. The text does not match the speech in the audio "
                       f"({result.metric.upper()} {result.score:.2f}, more than {TRANSCRIPT_MISMATCH_THRESHOLD:g} "
                       "allowed); send the exact transcript of the recording, or no text.")


def process_enrollment_upload(data: str, config: ServiceConfig) -> EnrolledAudio:
    """A ``data:<mime>;base64,…`` URL to :class:`EnrolledAudio` (runs on the enrollment executor, so the
    base64 decoding of up to 10 MB does not hold the event loop)."""
    from ..audio import parse_data_url

    try:
        mime, raw = parse_data_url(data)
    except ValueError:
        raise _param_error("input.audio.data") from None
    if mime not in config.allowed_mime:
        raise _param_error("input.audio.data")
    return process_enrollment_audio(raw, config, mime)


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


def _valid_text(value) -> bool:
    """A str that can be encoded as UTF-8 (JSON's ``"\\ud800"`` escape makes lone surrogates, which SQLite,
    logs and answers cannot carry; issue 13)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _data_url_mime(data: str) -> str | None:
    """The lower-cased MIME type of a ``data:<mime>;base64,`` head, read without touching the payload."""
    comma = data.find(",", 0, 256)
    head = data[:comma] if comma > 0 else ""
    if not head.startswith("data:") or not head.endswith(";base64"):
        return None
    return head[len("data:"):-len(";base64")].strip().lower()


class DecodeSlots:
    """Creates running or waiting on the enrollment executor, at most ``limit`` (issue 13: a burst must
    get a quick 429 rather than a queue every client times out in)."""

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.active = 0

    def acquire(self) -> bool:
        if self.limit > 0 and self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1


ENROLL_SLOTS = web.AppKey("enroll_slots", DecodeSlots)  # the app's bound on queued creates (issue 13)


def _throttled(config: ServiceConfig) -> ServiceError:
    # §3: 429 Throttling.RateQuota "Requests rate limit exceeded, try again later."
    return ServiceError(429, "Throttling.RateQuota", "Requests rate limit exceeded, try again later.",
                        headers={"Retry-After": str(int(config.enroll_retry_after_s))})


async def _create(request: web.Request, scope: str, inp: dict, *, clone_mode: str | None = None) -> web.Response:
    config: ServiceConfig = request.app[CONFIG]
    store: VoiceStore = request.app[STORE]
    target_model = inp.get("target_model")
    if not _valid_text(target_model) or not accepts_target_model(target_model, config.enrollment_target_models):
        raise _param_error("input.target_model")
    name = inp.get("preferred_name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ServiceError(400, "InvalidParameter", "preferred_name is invalid")  # §7.19 (observed text)
    language = inp.get("language")
    if language is not None and (not isinstance(language, str) or language not in LANGUAGES):
        raise _param_error("input.language")
    text = inp.get("text")
    if text is not None and (not _valid_text(text) or len(text) > config.max_text_chars):
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
    if _data_url_mime(data) not in config.allowed_mime:
        raise _param_error("input.audio.data")
    # 1,000 voices per account (§2.4): checked before the expensive work, and again atomically on insert.
    loop = asyncio.get_running_loop()
    store_pool = request.app[STORE_EXECUTOR]
    if await loop.run_in_executor(store_pool, store.count, scope) >= config.voice_quota:
        raise _quota_error()
    slots = request.app[ENROLL_SLOTS]
    if not slots.acquire():
        raise _throttled(config)
    pool = request.app[ENROLL_EXECUTOR]
    work = None
    try:
        enrolled = await loop.run_in_executor(pool, process_enrollment_upload, data, config)
        del data, audio_obj, inp["audio"]  # the 10 MB data URL is not needed any more
        if text is not None and text.strip() and config.enroll_text_check != "off":
            # §2.1 "The server compares it with the audio": ASR on the executor, bounded in time
            work = loop.run_in_executor(pool, check_enrollment_text, enrolled.wav, text, language)
            try:
                result = await asyncio.wait_for(asyncio.shield(work), config.enroll_text_check_timeout_s)
            except asyncio.TimeoutError:
                log.warning("enrollment transcript check took longer than %.0f s", config.enroll_text_check_timeout_s)
                raise ServiceError(500, "InternalError", "An internal error has occured, try again later or contact "
                                   f"service support. (the transcript check took longer than "
                                   f"{config.enroll_text_check_timeout_s:g} s)") from None
            enrolled = _apply_text_check(enrolled, result, config)
    finally:
        if work is not None and not work.done():
            # timed out or the client went away: a thread cannot be cut short, so its slot stays taken
            # until it really ends (and its outcome is collected, never left unretrieved)
            work.add_done_callback(lambda f: (slots.release(), f.cancelled() or f.exception()))
        else:
            slots.release()
    now, stamp = _now_strings()
    record = VoiceRecord(voice=voice_name(name, now), target_model=target_model, language=language,
                         preferred_name=name, gmt_create=stamp, gmt_modified=stamp, last_used=None,
                         sha256=enrolled.sha256, profile=enrolled.profile, audio=enrolled.wav)
    try:
        await loop.run_in_executor(store_pool, lambda: store.add(scope, record, quota=config.voice_quota))
    except QuotaExceeded:
        raise _quota_error() from None
    log.info("created voice %s (%s, %.1f s at %d Hz, SNR %.0f dB%s, voice_clone_mode %s)", record.voice,
             target_model, enrolled.duration_s, enrolled.sample_rate, enrolled.snr_db,
             f", degraded: {enrolled.fallback_reason}" if enrolled.fallback_mode else "", clone_mode)
    if clone_mode is None and create_parameters(target_model).get("voice_clone_mode"):
        # §7.28: no error -- the cloud silently makes the clone in the older mode; the local service says so
        log.warning("voice %s for %s was created without parameters.voice_clone_mode: the real service makes "
                    "such a clone in the older mode without an error (§7.28)", record.voice, target_model)
    # QC-VC extra fields (§2.1, §7.9): fallback_mode/fallback_reason on every create answer
    output = {"voice": record.voice, "target_model": target_model, "fallback_mode": enrolled.fallback_mode}
    if enrolled.fallback_mode:
        output["fallback_reason"] = enrolled.fallback_reason
    return _ok(output, 1, new_request_id())


def _quota_error() -> ServiceError:
    return ServiceError(400, "Throttling.AllocationQuota",
                        "Maximum voice storage limit exceeded, please delete existing voices.")


async def _list(request: web.Request, scope: str, inp: dict) -> web.Response:
    page_index = _page_arg(inp, "page_index", 0)
    page_size = _page_arg(inp, "page_size", 10)
    store: VoiceStore = request.app[STORE]
    loop = asyncio.get_running_loop()
    # the store's own pool, never behind decode work (issue 13: list waited 1.8 s during 12 creates)
    items, total = await loop.run_in_executor(request.app[STORE_EXECUTOR], store.list, scope, page_index, page_size)
    output = {"voice_list": [r.to_list_item() for r in items], "total_count": total,
              "page_index": page_index, "page_size": page_size}
    return _ok(output, 0, new_request_id())


async def _delete(request: web.Request, scope: str, inp: dict) -> web.Response:
    voice = inp.get("voice")
    if not isinstance(voice, str) or not voice:
        raise _param_error("input.voice")
    if not _valid_text(voice) or len(voice) > 256:  # no stored name is like it (issue 13: was a 500)
        raise ServiceError(400, "BadRequest.VoiceNotFound", f"Voice '{_printable(voice)}' not found.")
    store: VoiceStore = request.app[STORE]
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(request.app[STORE_EXECUTOR], store.delete, scope, voice):
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
    # body["parameters"]: the SDK sends {} (§2 [sdk]); a create may carry voice_clone_mode (§7.28)
    clone_mode = _clone_mode(body.get("parameters"))
    action = inp.get("action")
    handler = _ACTIONS.get(action) if isinstance(action, str) else None
    if handler is None:
        raise _param_error("input.action")
    faults = request.app.get(FAULTS)  # injected faults (qvtools/server/faults.py), off by default
    work = handler(request, scope, inp, clone_mode=clone_mode) if action == "create" \
        else handler(request, scope, inp)
    if faults is not None:
        return await faults.enrollment(request, scope, action, work)
    return await work


def _clone_mode(parameters) -> str | None:
    """``parameters.voice_clone_mode`` (§7.28), checked: a string of :data:`qvtools.catalog.VOICE_CLONE_MODES`.
    Other ``parameters`` keys are tolerated, as the SDK's ``{}`` is."""
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise _param_error("parameters")
    mode = parameters.get("voice_clone_mode")
    if mode is None and "voice_clone_mode" not in parameters:
        return None
    if not isinstance(mode, str) or mode not in VOICE_CLONE_MODES:
        raise ServiceError(400, "InvalidParameter", "Required parameter(parameters.voice_clone_mode) missing or "
                           f"invalid, please check the request parameters (known: {', '.join(VOICE_CLONE_MODES)}).")
    return mode
