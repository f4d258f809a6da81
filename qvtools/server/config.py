"""Configuration of the local service (:class:`ServiceConfig`).

A plain dataclass with defaults, so other parts of the service (the realtime half)
can add their own fields here without touching the enrollment code.

Limits (each enforced while the data streams in, never after buffering everything):

=============================  =========================  ====================================================
limit                          field (default)            over it
=============================  =========================  ====================================================
request body                   ``max_body_bytes``         400 ``InvalidParameter`` "Exceeded limit on max bytes
                               (10 MiB + 64 KiB)          per data-uri item"; read in 64 KiB chunks, refused
                                                          on the chunk that passes it (or on Content-Length)
data URL length                ``max_data_uri_bytes``     400 ``InvalidParameter`` (same message, §2.1 < 10 MB)
                               (10,485,760)
decoded audio duration         ``max_audio_s`` (60 s)     400 ``Audio.DurationLimitError``; checked on the
                                                          header, and decoding stops one sample past 60 s
concurrent realtime sessions   ``max_sessions_per_key``   HTTP 429 ``Throttling.RateQuota`` before the upgrade
per API key                    (8)
concurrent realtime sessions   ``max_sessions`` (16)      HTTP 429 ``Throttling.RateQuota`` before the upgrade
(all keys)
WebSocket message size         ``realtime_max_frame_      close 1009 (message too big)
                               bytes`` (16 MiB)
appended-audio buffer          ``realtime_max_buffer_s``  ``error`` event ``input_audio_buffer_limit_exceeded``,
                               (60 s)                     buffer dropped, session continues
idle session (no response      ``realtime_idle_timeout_   ``error`` event ``response_idle_timeout``, then
generated)                     s`` (300 s)                close 1007 with the same text (§7.12)
realtime free text             ``realtime_max_*_chars``   ``error`` event ``invalid_value``, ``param`` names the
                               instructions 32,768;       field (``session.instructions``, ``item.content[0].
                               item text 32,768; names    text``, ``event_id`` ...); the session continues
                               and ids 256; tools JSON
                               65,536
invalid text (lone surrogate   --                         ``error`` event ``invalid_value``, ``param`` names the
``\\ud800`` in any string)                                 field; the session continues
session length                 ``realtime_max_session_s`` ``error`` event ``session_expired``, close 1000
                               (7200 s)
=============================  =========================  ====================================================

Enrollment input bounds (issue 13; checked on the container header *before* decoding):

=============================  =========================  ====================================================
rule                           field (default)            over it
=============================  =========================  ====================================================
container matches the label    ``allowed_mime``           400 ``Audio.DecoderError`` "Decoder audio file failed:
(WAV/MP3/M4A, §2.4)            + ``audio.MIME_CONTAINERS``  … is FLAC, labelled audio/wav …" (also FLAC/OGG,
                                                          MP4 with a video track, compressed WAV)
channels                       ``max_channels`` (2)       400 ``Audio.DecoderError``
frames × channels              ``max_decoded_samples``    400 ``Audio.DecoderError``; decoding also stops there
                               (5,760,000)
stored audio                   ``store_sample_rate``      resampled down (never a 384 kHz blob)
                               (24 kHz)
``input.text``                 ``max_text_chars`` (4000)  400 ``InvalidParameter``
text vs audio (ASR)            ``enroll_text_check``      400 ``Audio.PreprocessError`` (or a degraded clone,
                               (refuse), ``enroll_text_   §7.9); 500 ``InternalError`` past the timeout
                               check_timeout_s`` (60 s)
creates decoding or queued     ``enroll_queue_limit`` (8) HTTP 429 ``Throttling.RateQuota``, ``Retry-After``
request head / idle            ``http_header_timeout_s``  connection closed
keep-alive                     (10 s)
pause inside a body            ``http_body_timeout_s``    408 ``RequestTimeOut``, connection closed
                               (30 s)
open connections               ``http_max_connections``   oldest stalled/idle connections closed
                               (512)
=============================  =========================  ====================================================

With these bounds one create holds at most about :data:`REQUEST_MEMORY_BUDGET_MB` MB (body, data URL,
encoded bytes, decoded float32 samples and the work copies), measured by
``tests/test_limits.py::test_memory_budget_per_create`` and ``benchmarks/bench_service_limits.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal, get_args, get_type_hints

from .. import spec
from ..asr import DETECTORS, WINDOWS
from ..catalog import ENROLLMENT_TARGET_MODELS
from .semantic_vad import REJECT_MODES

__all__ = ["ServiceConfig", "MAX_DATA_URI_BYTES", "REQUEST_MEMORY_BUDGET_MB"]

#: "Exceeded limit on max bytes per data-uri item : 10485760" (protocol reference §3, §2.1), from qvtools.spec.
MAX_DATA_URI_BYTES = spec.MAX_DATA_URL_BYTES
#: Peak memory growth one create may cause (MB), for the largest accepted upload or a hostile one
#: (README "Reliability"); the bounds above are chosen so that it holds.
REQUEST_MEMORY_BUDGET_MB = 128

# Realtime free-text limits (issue 13: no limit let twenty 15 MiB ``session.update`` events hold 1.4 GB).
# The cloud's own limits are undocumented; these are ours, generous for real prompts.
#: ``session.instructions`` and ``response.instructions`` (characters).
MAX_INSTRUCTIONS_CHARS = 32_768
#: Text of a ``conversation.item.create`` item (``input_text`` parts together, a ``function_call_output``).
MAX_TEXT_CHARS = 32_768
#: Names and ids: ``voice``, ``event_id``, item ``id``, ``call_id``, transcription model.
MAX_NAME_CHARS = 256
#: ``session.tools`` as compact JSON.
MAX_TOOLS_CHARS = 65_536
__all__ += ["MAX_INSTRUCTIONS_CHARS", "MAX_TEXT_CHARS", "MAX_NAME_CHARS", "MAX_TOOLS_CHARS"]

#: Values of :attr:`ServiceConfig.enroll_text_check`: what a create does when ``input.text`` does not match the audio.
TextCheckMode = Literal["refuse", "fallback", "off"]
TEXT_CHECK_MODES = get_args(TextCheckMode)
__all__ += ["TEXT_CHECK_MODES"]

#: Values of :attr:`ServiceConfig.realtime_language_detection` (issue 10/11: detect the language once per
#: session, or on every turn).
LanguageDetectionMode = Literal["first_turn", "every_turn"]
#: Values of :attr:`ServiceConfig.realtime_language_detector` (issue 22): the detectors :mod:`qvtools.asr` defines.
LanguageDetector = Literal[DETECTORS]
#: Values of :attr:`ServiceConfig.realtime_asr_window` (issue 22): Whisper's encoder windows :mod:`qvtools.asr` defines.
AsrWindow = Literal[WINDOWS]
LANGUAGE_DETECTION_MODES = get_args(LanguageDetectionMode)
__all__ += ["LANGUAGE_DETECTION_MODES"]
#: Values of :attr:`ServiceConfig.semantic_vad_reject` (issue 18): the modes :mod:`qvtools.server.semantic_vad` defines.
SemanticVadReject = Literal[REJECT_MODES]

# The other string switches of the realtime half (issue 19 item 3). Each is a ``Literal``; the first value is
# the observed cloud behaviour (§7) or the default, the rest earlier guesses kept as choices. All of them are
#: validated in one place (:meth:`ServiceConfig.__post_init__` -> :func:`check_switches`).
LatencyMode = Literal["simulated", "none"]
ReplyMode = Literal["conversation", "echo"]
CancelStatus = Literal["cancelled", "incomplete"]
VoiceErrorTiming = Literal["generation", "update"]
SessionKeys = Literal["observed", "full"]
ItemIds = Literal["server", "client"]
TranscriptionDelta = Literal["stash", "text"]
ManualUserItem = Literal["early", "commit"]
IdleClose = Literal["observed", "legacy"]

#: Named compatibility profiles: sets of switch values applied together with :meth:`ServiceConfig.with_profile`.
#: "observed" is the default (the cloud as observed in the protocol reference §7); "guesses" brings back every
#: behaviour §7 superseded (the earlier [guess]/[obs RELAY] sections §4.5, §5), for clients written against them.
COMPAT_PROFILES: dict[str, dict] = {
    "observed": {"realtime_response_done_on_cancel": True, "realtime_cancel_status": "cancelled",
                 "realtime_voice_error_timing": "generation", "realtime_dead_after_voice_error": True,
                 "realtime_session_keys": "observed", "realtime_item_ids": "server",
                 "realtime_transcription_delta": "stash", "realtime_manual_user_item": "early",
                 "realtime_idle_close": "observed"},
    "guesses": {"realtime_response_done_on_cancel": True, "realtime_cancel_status": "incomplete",
                "realtime_voice_error_timing": "update", "realtime_dead_after_voice_error": False,
                "realtime_session_keys": "full", "realtime_item_ids": "client",
                "realtime_transcription_delta": "text", "realtime_manual_user_item": "commit",
                "realtime_idle_close": "legacy"},
}
__all__ += ["COMPAT_PROFILES", "check_switches"]


@dataclass
class ServiceConfig:
    """Knobs of the local service. Defaults follow the documented limits (protocol reference §2.4)."""

    #: None: any non-empty ``Authorization: Bearer <key>`` is accepted (each key is its own voice scope).
    api_key: str | None = field(default=None, repr=False)  # never in a repr (a secret)
    #: "1,000 voices per account" (§2.4); exceeding it gives ``Throttling.AllocationQuota``.
    voice_quota: int = 1000
    #: Largest data URL accepted in ``input.audio.data`` (encoded length, §2.1 "< 10 MB").
    max_data_uri_bytes: int = MAX_DATA_URI_BYTES
    #: Largest request body read at all; the body is read in chunks and refused once past it.
    max_body_bytes: int = MAX_DATA_URI_BYTES + 64 * 1024
    #: "max 60 s" (§2.4).
    max_audio_s: float = spec.MAX_DURATION_S
    #: "Sample rate ≥ 24 kHz" (§2.4).
    min_sample_rate: int = spec.MIN_SAMPLE_RATE
    #: "≥ 3 s of continuous clear speech" (§2.4), measured with Silero VAD.
    min_continuous_speech_s: float = spec.MIN_CONTINUOUS_SPEECH_S
    #: MIME types accepted in the data URL (§2.1).
    allowed_mime: tuple = spec.ALLOWED_MIME

    # --- enrollment HTTP: input bounds, resources, target models, degraded clones (issue 13 items 2-4,
    # --- issue 9; qvtools/server/app.py, enrollment.py; README "Reliability") ---------------------------
    #: ``input.target_model`` values a create accepts (§2.1 + §7.19 non-realtime names); a dated or
    #: ``-latest`` form of one of them is accepted too. Anything else: 400 ``InvalidParameter``.
    enrollment_target_models: tuple = ENROLLMENT_TARGET_MODELS
    #: Most channels an upload may have (§2.4 says mono; stereo is downmixed). More: ``Audio.DecoderError``.
    max_channels: int = 2
    #: Cap on decoded samples (frames × channels), checked on the header before decoding and enforced while
    #: decoding: 60 s of 48 kHz stereo (the top MP3 rate), 23 MB as float32. Over it: ``Audio.DecoderError``.
    max_decoded_samples: int = 60 * 48000 * 2
    #: Rate the voice's audio is stored at (mono 16-bit WAV): a 384 kHz upload is kept as 24 kHz, so a
    #: stored blob is at most ``max_audio_s`` × 48 KB/s (2.9 MB).
    store_sample_rate: int = spec.MIN_SAMPLE_RATE  # 24 kHz (§2.4 "Sample rate ≥ 24 kHz")
    #: Seconds of speech (from the first speech onward) the voice profile is measured on (§2.4 recommends
    #: 10-20 s); bounds the analysis memory (pyworld spectra: ~110 MB for 60 s). None: the whole clip.
    analysis_max_s: float | None = 20.0
    #: Longest ``input.text`` (transcript) accepted, in characters; longer: 400 ``InvalidParameter``.
    max_text_chars: int = 4000
    #: Threads decoding/analysing enrollment audio (the ``http.ENROLL_EXECUTOR`` pool).
    enroll_workers: int = 2
    #: Creates running or waiting for those threads; one more is refused at once with HTTP 429
    #: ``Throttling.RateQuota`` and ``Retry-After: enroll_retry_after_s`` (§3 429 codes; §7.17 reports
    #: 10 requests/s for the cloud). Each waiting create holds its body (≤ 10 MB), so this bounds memory too.
    enroll_queue_limit: int = 8
    enroll_retry_after_s: int = 1
    #: Degraded clones (QC-VC ``output.fallback_mode``/``fallback_reason``, §2.1, §7.9): a create whose
    #: estimated SNR (:func:`qvtools.metrics.snr_db`, dB) is below this (12 dB: preflight's ``snr_warn_db``)
    #: succeeds with ``fallback_mode: true`` and ``fallback_reason`` below. None: never degraded.
    fallback_min_snr_db: float | None = 12.0
    fallback_reason: str = "no_valid_asr_segments"
    #: ``input.text`` check (§2.1 "The server compares it with the audio; a large mismatch gives
    #: ``Audio.PreprocessError``", §3; issue 10 item 4): the stored audio is transcribed with the offline ASR
    #: (:mod:`qvtools.asr`, in ``input.language`` when given, else detected) and scored against the text with
    #: :func:`qvtools.metrics.transcript_mismatch` (CER for zh/ja/ko, WER otherwise, normalised). A score
    #: above :data:`qvtools.metrics.TRANSCRIPT_MISMATCH_THRESHOLD` (0.55, calibrated on ../shared/data/speech,
    #: see there) is a mismatch. "refuse" (default, §2.1/§3): 400 ``Audio.PreprocessError``; "fallback" (§7.9:
    #: the cloud may instead clone in degraded mode): 200 with ``fallback_mode: true`` and
    #: ``fallback_reason`` = ``text_mismatch_reason``; "off": the text is stored, never compared. Without the
    #: ASR engines (``qvtools[eval]``) the check is skipped with a logged warning.
    enroll_text_check: TextCheckMode = "refuse"
    #: ``fallback_reason`` of a degraded clone made because of a text mismatch ("fallback" above). The cloud's
    #: value for this case is not documented (§2.1 lists ``no_merged_segments``, ``no_valid_asr_segments``,
    #: …): [guess].
    text_mismatch_reason: str = "no_valid_asr_segments"
    #: Longest the transcript check (ASR on the enrollment executor) may take, seconds; past it the create
    #: answers 500 ``InternalError`` (the work is not cut short, but its slot stays taken until it ends).
    enroll_text_check_timeout_s: float = 60.0
    #: Seconds a connection may take to send a complete request head (request line and headers); also
    #: how long an idle keep-alive connection, or one that never sends a byte, is kept (aiohttp's
    #: ``keepalive_timeout``). Then it is closed.
    http_header_timeout_s: float = 10.0
    #: Longest pause between two pieces of a request body; a body that stops arriving gets 408
    #: ``RequestTimeOut`` and the connection is closed. A slow upload that keeps moving is never cut.
    http_body_timeout_s: float = 30.0
    #: Open HTTP connections kept at most: beyond it, the oldest connections that have not sent a
    #: complete request (stalled, or idle keep-alive) are closed to make room, so stalled clients
    #: cannot exhaust file descriptors (a process limit of 1,024 is common). Active requests and
    #: realtime sessions are never closed for this.
    http_max_connections: int = 512

    # --- realtime (qvtools/server/realtime.py; protocol reference §4, §5 items 4-10) ---------------
    # Defaults follow the OBSERVED cloud behaviour (§7); every earlier guess is kept as a choice.
    #: False (default): any ``…-omni-…-realtime`` name is accepted (§7.8, ``catalog.is_realtime_model``);
    #: True: only the catalog's families (``catalog.is_known_model``). Other names get 404 ``ModelNotFound``.
    realtime_reject_unknown_model: bool = False
    #: "simulated" adds per-model delays (qvtools/server/latency.py: profiles shaped on §7.5/§7.6, SIMULATED
    #: numbers); "none" disables them. A response is sent at end of input + delay or when its work is done,
    #: whichever is later (the latency module's docs).
    realtime_latency: LatencyMode = "simulated"
    #: Multiplies every simulated or replayed delay (0 disables them).
    realtime_latency_scale: float = 1.0
    #: Per-profile field overrides, e.g. ``{"plus": {"first_audio_ms": 900}}``.
    realtime_latency_profiles: dict | None = None
    #: Replay a measured run's latencies instead of the simulated profiles: a run directory, its
    #: ``results.parquet`` or ``turns.jsonl`` (``qvtools serve --latency-from``). Each turn draws one completed
    #: row of the session's target model (seeded by the session ``seed`` and the turn index): its
    #: ``response_created_ms``, ``ttfa_created_ms`` and ``delivery_rtf``. Loaded at startup; a missing path, a
    #: file without those columns or without completed rows raises ``LatencySourceError``.
    latency_from: str | None = None
    #: A model the ``latency_from`` file has no rows for: False (default) refuses its sessions at the
    #: handshake (HTTP 400 naming the models the file has); True draws from all rows of the file.
    latency_from_pool: bool = False
    #: Reply text mode of the stand-in model: "conversation" or "echo".
    realtime_reply_mode: ReplyMode = "conversation"
    #: Languages a user turn is detected among when neither the session (the qvtools extension
    #: ``input_audio_transcription.language``) nor the voice's enrollment ``language`` names one
    #: (qvtools/server/turn_language.py; issue 10 item 1). Detection on short clips is unreliable and a
    #: short list helps: on the ../shared clips (1.5 s and 3 s from each, 28 detections, Whisper base) all
    #: 29 documented codes got 27 right (a noisy English clip came out Russian), these five (the responder's
    #: languages) 28/28, ("en", "zh") alone 24/28 (German and Spanish became English). ``None``: all
    #: 29 documented codes. One code is taken as every turn's language, without detection: ``("en",)`` is
    #: the English-only service of before. Detection costs a Whisper base encoder pass per turn (English
    #: turn of 2 s: 0.47 s given, 1.35 s detected, on the shared machine at load 5-7).
    realtime_language_candidates: tuple | None = ("zh", "en", "ja", "es", "de")
    #: When the language is detected (no session or voice language): "first_turn" detects it on a
    #: session's first turn with speech and then transcribes later turns in that language (tiny.en for
    #: English, no detection pass); "every_turn" detects on every turn, so a user who switches language
    #: mid-session is followed. The cloud's omni model follows switches; "first_turn" is the default
    #: because detection doubles a turn's CPU on this 2-core machine (benchmarks/bench_load.py, 1 session:
    #: 3.9 CPU s per turn detected every turn vs 1.4 with the language known, and processing p95 1.9 s vs
    #: 9 ms), which the latency and capacity figures of issue 11 cannot afford. A guess-free setting for a
    #: mixed-language study: name the language per session (the extension above) or use "every_turn".
    realtime_language_detection: LanguageDetectionMode = "first_turn"
    #: Whisper's encoder window for the user's turns (:data:`qvtools.asr.WINDOWS`, issue 22): "fit" (the
    #: utterance plus :data:`qvtools.asr.FIT_PAD_S`; detection and decoding share one encoder pass) or "full"
    #: (the published recipe, which the metrics keep). On the ../shared clips and packaged prompts
    #: (benchmarks/bench_asr_window.py, language given) "fit" costs 0.21 CPU s for a 3.3 s English prompt
    #: against 0.51, and 0.22 against 0.90 for a 2.3 s Mandarin one; English WER 0.060 against 0.034 (10 clips),
    #: Mandarin/German error unchanged; detection among the default candidates 71/71 right either way, at a
    #: median 0.26 CPU s against 1.2.
    realtime_asr_window: AsrWindow = "fit"
    #: How a turn's language is detected when it must be (:data:`qvtools.asr.DETECTORS`, issue 22 item 4):
    #: "whisper_base" (default) detects with Whisper base, from the same fitted encoder pass as the decode;
    #: "english_gate" decodes with Whisper tiny.en first and keeps it when tiny.en's own confidence passes
    #: :data:`qvtools.asr.ENGLISH_GATE` (calibrated for, and so always run in, the full 30 s window), sending only
    #: the turns it is unsure of on to Whisper base. With the full window the gate saves a detection pass (1.1 CPU
    #: s) on English turns; with "fit" Whisper base's whole detection costs less than the gate (median 0.26 CPU s
    #: against 0.45 on the ../shared cuts), and the gate, calibrated on the full window, does not carry over to
    #: the fitted one (benchmarks/calibrate_language_gate.py --window fit: a 24 s Mandarin clip taken as English).
    realtime_language_detector: LanguageDetector = "whisper_base"
    #: Seconds of a session's first utterance after which, when nobody named its language (session, voice,
    #: a single candidate) and no earlier turn found one, Whisper base detects the language of that much
    #: audio while the user is still speaking (a shorter utterance: all of it, once the silence after it
    #: begins; server VAD; issue 22 item 4, qvtools/server/rt_early.py). The reply's opener is then ready in
    #: that language at ``speech_stopped``, as for a named language, instead of waiting for the turn's whole
    #: transcription; the final ASR pass still detects on the whole utterance for its transcript and later
    #: turns. 1.5 s: on the first 1.5 s of ../shared/data/speech and the packaged prompts detection among
    #: the default candidates was 26/26 right (benchmarks/bench_asr_window.py --pads). 0: off.
    realtime_early_language_s: float = 1.5
    #: Milliseconds of audio per ``response.audio.delta`` (§5.8 [guess] 100-200 ms).
    realtime_audio_chunk_ms: int = 100
    #: Send ``response.done`` after ``response.cancel`` (§4.5 c [obs 2026]; the v2 SDK needs it). False: the
    #: older models' behaviour (no ``response.done``, [obs RELAY]).
    realtime_response_done_on_cancel: bool = True
    #: ``response.done`` status after a cancel: "cancelled" (observed, §7.6) or "incomplete" (earlier guess).
    realtime_cancel_status: CancelStatus = "cancelled"
    #: When an unusable voice (unknown clone, clone of another target model, a built-in the family does not
    #: offer, §7.11) is refused: "generation" (observed, §7.3: accepted at ``session.update``, a lone
    #: ``error`` at the next response trigger, no ``response.created``) or "update" (earlier guess).
    realtime_voice_error_timing: VoiceErrorTiming = "generation"
    #: After that generation-time voice error, leave further ``session.update`` events unanswered (§7.3:
    #: "a later session.update on that connection got no answer"; the client must reconnect).
    realtime_dead_after_voice_error: bool = True
    #: Key sets of the ``session`` echo: "observed" (§7.1 ``session.created``, §7.2 ``session.updated``: no
    #: ``turn_detection``, no ``audio`` object) or "full" (the whole effective configuration, earlier guess).
    realtime_session_keys: SessionKeys = "observed"
    #: Put the ``qvtools`` metadata field (``latency``, ``latency_source``, profile name, a note saying the
    #: latencies are SIMULATED or REPLAYED) into ``session.created``.
    realtime_metadata: bool = True
    #: Ids of ``conversation.item.create`` items: "server" (observed, §7.13: a client-chosen id is not kept)
    #: or "client" (keep the client's id, earlier guess).
    realtime_item_ids: ItemIds = "server"
    #: Shape of ``…input_audio_transcription.delta``: "stash" (observed, §7.14: ``text`` empty, ``stash`` the
    #: sentence so far) or "text" (the transcript in ``text``, earlier guess).
    realtime_transcription_delta: TranscriptionDelta = "stash"
    #: Manual mode (§7.4): "early" sends the user item's ``conversation.item.created`` at the first append
    #: of a turn and input-transcription deltas while audio is still appended; "commit" (earlier guess,
    #: §4.5 b) sends the item after ``committed`` and the transcription after it.
    realtime_manual_user_item: ManualUserItem = "early"
    #: Manual mode with "early": re-transcribe the buffer so far (Whisper, whole-utterance) after every this
    #: many seconds of newly appended audio and send the partial text as a delta (0: deltas only at commit).
    realtime_partial_transcription_s: float = 1.0
    #: Answer ``session.finish`` with an I140-style ``error`` instead of ``session.finished`` (§4.3 [obs I140]).
    realtime_finish_error: bool = False
    #: Idle close: after this many seconds without a generated response (and no response in progress), an
    #: ``error`` with code ``response_idle_timeout`` and then close 1007 with the same text (§7.12).
    realtime_idle_timeout_s: float = 300.0
    #: "observed" (§7.12, above) or "legacy" (seconds without any client frame; ``idle_timeout``, close 1000).
    realtime_idle_close: IdleClose = "observed"
    #: Hard cap on a session's length (§4.1 "At most 120 min").
    realtime_max_session_s: float = 7200.0
    #: Concurrent realtime sessions per API key; the handshake beyond it is refused *before the upgrade*
    #: with HTTP 429 ``Throttling.RateQuota`` (§3 429 codes) and ``Retry-After: 1``; the client raises
    #: ``APIError(429, "Throttling.RateQuota")`` (``retryable``). 0 disables the limit. The default is
    #: what this 2-core machine held with every session talking at once by the issue-11 criterion (every
    #: turn completed, processing speech_stopped -> first audio p95 <= max(2x one session's, 400 ms)):
    #: benchmarks/bench_load.py, 0.4 min per step, shared machine at load average 3.0-4.7 (2026-11-27):
    #: 16 sessions 64 turns/min, processing p95 6 ms, no errors (before issue 11: saturated at 4; 16
    #: sessions 46 turns/min, processing p95 15.7 s). Past ~4 sessions the CPU is the limit: the first audio
    #: (the cached opener) stays fast, but the rest of each reply waits its turn (playback stall p50 0.4 s at
    #: 4, 1.9 s at 8, 6.1 s at 16 sessions; 1.1-1.4 CPU s per turn).
    max_sessions_per_key: int = 16
    #: Concurrent realtime sessions over all keys (issue 13: any key is accepted, so a per-key cap alone
    #: does not bound the service). Refused like the per-key cap (HTTP 429 ``Throttling.RateQuota`` before
    #: the upgrade). Default: 16, the measured talking capacity (above) and the 16 concurrent sessions the
    #: latency work needs from one address; beyond it sessions only add queueing. 0 disables it.
    max_sessions: int = 16
    #: Free-text size limits of realtime events (the table above; constants MAX_* of this module). An event
    #: over one gets ``error`` ``invalid_value`` naming the field in ``param``; the session continues.
    realtime_max_instructions_chars: int = MAX_INSTRUCTIONS_CHARS
    realtime_max_text_chars: int = MAX_TEXT_CHARS
    realtime_max_name_chars: int = MAX_NAME_CHARS
    realtime_max_tools_chars: int = MAX_TOOLS_CHARS
    #: Cloned voices whose decoded profile the realtime half keeps in memory (LRU), so a ``session.update``
    #: or a response never re-reads the stored enrollment audio (issue 13).
    realtime_voice_cache_size: int = 64
    #: Largest WebSocket message accepted from a client (bytes). A bigger frame closes the socket with
    #: 1009 "message too big" (RFC 6455 §7.4.1); a 60 s PCM16 append at 24 kHz is ~3.9 MB of base64.
    realtime_max_frame_bytes: int = 16 * 1024 * 1024
    #: Most audio the ``input_audio_buffer`` holds (seconds at the input rate). An append past it is
    #: answered by an ``error`` event (code ``input_audio_buffer_limit_exceeded``), the buffer is dropped
    #: (as by ``input_audio_buffer.clear``) and the session continues. With server VAD, audio outside
    #: speech is trimmed to the prefix padding, so only one utterance (or one manual turn) counts.
    realtime_max_buffer_s: float = 60.0
    #: Load the speech engines (Whisper, Piper, the TTS source profile) in the background right after
    #: startup, so the first realtime turn is not ~3 s slower. Never delays readiness; False: load on first use.
    warm_speech: bool = True
    #: Languages besides English the warm-up also prepares (Whisper base, the language's TTS engine and its
    #: conversion source profile, e.g. ``("zh",)``). Empty by default: a Kokoro source profile takes ~10 s
    #: of synthesis on the shared 2-core machine, spent on the first turn in that language instead.
    warm_speech_languages: tuple = ()

    # --- fault injection (qvtools/server/faults.py; README "Fault injection"); all off by default ------
    #: Fault plans by target: an API key or ``"*"`` (every key) -> ``FaultPlan`` or a dict of its fields.
    faults: dict | None = None
    #: Route ``GET/POST /qvtools/faults`` (set plans on the running service over HTTP). Local service only.
    fault_control: bool = False
    #: Honour a client's ``session.update`` ``{"qvtools": {"faults": {...}}}`` for its own session.
    allow_client_faults: bool = False
    #: Longest a realtime send may block (a client that stops reading fills the socket buffers); then
    #: the connection is aborted and "slow reader" logged, instead of buffering for it without bound.
    realtime_send_timeout_s: float = 10.0

    # --- issue 18 (§7.23, §7.24): semantic VAD imitation; session endings are FaultPlan.end_session -------
    #: What the local semantic VAD rejects with the non-fatal §7.23 error (qvtools/server/semantic_vad.py,
    #: our own imitation): ``"empty_or_incomplete"`` (default), ``"empty"`` or ``"never"``.
    semantic_vad_reject: SemanticVadReject = "empty_or_incomplete"

    def __post_init__(self):
        check_switches(self)

    def with_profile(self, name: str) -> "ServiceConfig":
        """A copy with the switches of the compatibility profile ``name`` (:data:`COMPAT_PROFILES`)."""
        from ..errors import ConfigError

        if name not in COMPAT_PROFILES:
            raise ConfigError(f"unknown compatibility profile {name!r}; allowed: {', '.join(COMPAT_PROFILES)}")
        return replace(self, **COMPAT_PROFILES[name])


def check_switches(config: ServiceConfig) -> None:
    """The one validation of :class:`ServiceConfig`'s string switches: every field typed as a ``Literal`` must
    hold one of its values; otherwise :class:`~qvtools.errors.ConfigError` naming the field and the allowed
    values (a typo such as ``realtime_idle_close="Legacy"`` no longer silently picks the other branch)."""
    from ..errors import ConfigError

    for name, allowed in _switch_choices().items():
        value = getattr(config, name)
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


_CHOICES: dict[str, tuple] | None = None


def _switch_choices() -> dict[str, tuple]:
    """Field name -> allowed values, for every ``Literal``-typed field of :class:`ServiceConfig` (cached)."""
    global _CHOICES
    if _CHOICES is None:
        hints = get_type_hints(ServiceConfig)
        _CHOICES = {f.name: get_args(hints[f.name]) for f in fields(ServiceConfig)
                    if getattr(hints[f.name], "__origin__", None) is Literal}
    return _CHOICES
