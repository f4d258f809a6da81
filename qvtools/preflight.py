"""Preflight: check a recording against the voice-enrollment audio rules, and prepare it.

:func:`check` returns a :class:`PreflightReport` with one :class:`Row` per documented
requirement (protocol reference §2.4, "Audio requirements", SEED):

==================  ==========================================================  ==========
row                 rule                                                        source
==================  ==========================================================  ==========
format              WAV (16-bit), MP3, M4A                                      §2.4
file_size           < 10 MB                                                     §2.4
data_url            data-URI item <= 10485760 bytes (base64 grows by 4/3)       §3 (400)
duration            max 60 s (fail); 10-20 s recommended (warn)                 §2.4
sample_rate         >= 24 kHz                                                   §2.4
channels            mono                                                        §2.4
continuous_speech   >= 3 s of continuous clear speech                           §2.4
pauses              other pauses <= 2 s                                         §2.4
snr                 no noise / background sound                                 §2.4
clipping            (house rule) clear speech, no clipped samples               --
loudness            (house rule) integrated loudness in a usable range          --
music               no music                                                    §2.4
singing             no singing                                                  §2.4
second_voice        no other voices                                             §2.4
transcript          (optional) speaking rate plausible for the given text       --
transcript_match    (optional) the text matches the speech (offline ASR; CER    §2.1, §3
                    zh/ja/ko, WER otherwise; the local service's own check)
==================  ==========================================================  ==========

The content detectors (snr, music, singing, second_voice) are heuristics. Their thresholds
were calibrated on the 20 clips of the shared speech test set (``tests/test_calibration.py``
prints the measured values); every row reports its measured value and the limit used, so
a borderline result can be judged by a person.

:func:`prepare` turns a recording into an enrollment-ready clip: mono, >= 24 kHz, silence
trimmed, the best 10-20 s window of speech (cut at pauses), long pauses shortened,
peak-safe loudness normalisation, 16-bit WAV.
"""

from __future__ import annotations

import html
import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from . import spec, vad
from .audio import AudioInfo, AudioSource, frame_energy_db, load, probe, resample, to_mono, wav_bytes
from .detectors import background_tonality as _background_tonality
from .detectors import held_note_ratio
from .detectors import speaker_spread as _speaker_spread
from .errors import InvalidAudio
from .metrics import FLOOR_DB, loudness_lufs, speech_snr

__all__ = [
    "Row",
    "PreflightReport",
    "PreparedClip",
    "check",
    "prepare",
    "STATUSES",
    "MAX_FILE_BYTES",
    "MAX_DATA_URL_BYTES",
    "MAX_DURATION_S",
    "RECOMMENDED_DURATION_S",
    "MIN_SAMPLE_RATE",
    "MIN_CONTINUOUS_SPEECH_S",
    "MAX_PAUSE_S",
    "CONTINUITY_GAP_S",
    "THRESHOLDS",
    "RULES",
]

log = logging.getLogger(__name__)

STATUSES = ("pass", "warn", "fail")
_RANK = {s: i for i, s in enumerate(STATUSES)}

# --- documented limits (protocol reference §2.4, SEED) ---------------------------------------
# Defined once in qvtools.spec (issue 12); re-exported here because reports and tests name them.
MAX_FILE_BYTES = spec.MAX_FILE_BYTES  # "Size < 10 MB"
MAX_DATA_URL_BYTES = spec.MAX_DATA_URL_BYTES  # "... max bytes per data-uri item : 10485760" (§3)
MAX_DURATION_S = spec.MAX_DURATION_S  # "max 60 s" (Audio.DurationLimitError)
RECOMMENDED_DURATION_S = spec.RECOMMENDED_DURATION_S  # "10-20 s recommended"
MIN_SAMPLE_RATE = spec.MIN_SAMPLE_RATE  # ">= 24 kHz" (Audio.AudioRateError)
MIN_CONTINUOUS_SPEECH_S = spec.MIN_CONTINUOUS_SPEECH_S  # ">= 3 s of continuous clear speech"
MAX_PAUSE_S = spec.MAX_PAUSE_S  # "Other pauses <= 2 s"
CONTINUITY_GAP_S = spec.CONTINUITY_GAP_S  # gaps shorter than this are bridged (house reading)

#: Heuristic thresholds of the content detectors. Calibrated on the shared speech test set
#: (12 clean clips, 8 defective ones; see tests/test_calibration.py for the measured table).
THRESHOLDS = {
    # estimated SNR (speech vs non-speech frame energy), dB; clean set min 18.4, noisy 7.4
    "snr_warn_db": 12.0,
    "snr_fail_db": 5.0,
    # fraction of samples at full scale
    "clipping_warn": 0.001,
    "clipping_fail": 0.01,
    # integrated loudness (BS.1770), LUFS
    "loudness_low_lufs": -35.0,
    "loudness_high_lufs": -8.0,
    # music: tonal-peak persistence of the background (non-speech frames), only judged when the
    # background is within 'music_gate_db' of the speech; gated clips: noisy 0.45, music 0.72,
    # singing 0.74 (ungated clean clips reach 0.51 on their near-silent background)
    "music_gate_db": 15.0,
    "music_tonality": 0.52,
    # singing: fraction of frames starting a held note ('singing_hold_s' fully voiced within 1
    # semitone) on a WORLD F0 track, 100-500 Hz (DIO; Harvest when the background is within
    # 'music_gate_db' of the speech). Measured: clean max 0.024 with DIO (zh_F SSB00050007,
    # Mandarin level tones; 0.033 if Harvest is forced on every clean clip), singing 0.085
    # (Harvest; DIO loses the voice under the band and gives 0.004). Threshold near their
    # geometric mean: singing 1.55x above it, clean clips >= 1.67x below it.
    "singing_hold_s": 0.4,
    "singing_held_ratio": 0.055,
    # second voice: 5th percentile of pairwise cosine similarity between d-vectors of 1.5 s
    # speech windows (at most 16, evenly spread; qvtools.speaker.embed_windows); measured: clean
    # min 0.521 (de_M thorsten), two speakers 0.282; threshold midway (0.12 margin either side)
    "second_voice_similarity": 0.40,
    # transcript: plausible speaking rate, words/s (space-separated scripts) or chars/s (CJK)
    "words_per_s": (1.0, 5.0),
    "chars_per_s": (2.0, 9.0),
}

_ADVICE_PREPARE = "convert with qvtools prepare"


@dataclass(frozen=True)
class Row:
    """One requirement: ``status`` in {"pass", "warn", "fail"}, the measured ``value``, the
    ``limit`` it was judged against, what to do (``advice``) and extra facts (``details``)."""

    name: str
    status: str
    value: object
    limit: str
    advice: str = ""
    details: str = ""

    def __post_init__(self):
        if self.status not in _RANK:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


@dataclass
class PreflightReport:
    """The result of :func:`check`. ``measures`` holds the raw numbers behind the rows."""

    rows: list[Row]
    info: AudioInfo
    measures: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    @property
    def status(self) -> str:
        """The worst status of all rows."""
        return max((r.status for r in self.rows), key=_RANK.__getitem__, default="pass")

    @property
    def ok(self) -> bool:
        """True when no row failed (warnings allowed)."""
        return not self.failed

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status == "fail"]

    @property
    def warnings(self) -> list[Row]:
        return [r for r in self.rows if r.status == "warn"]

    def to_dict(self) -> dict:
        return {"status": self.status, "ok": self.ok, "info": asdict(self.info),
                "rows": [asdict(r) for r in self.rows], "measures": dict(self.measures)}

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.rows],
                            columns=["name", "status", "value", "limit", "advice", "details"])

    def to_text(self) -> str:
        i = self.info
        head = (f"preflight: {self.status.upper()} -- {i.container}/{i.codec}, {i.sample_rate} Hz, "
                f"{i.channels} ch, {i.duration_s:.2f} s")
        lines = [head]
        w = max(len(r.name) for r in self.rows) if self.rows else 0
        for r in self.rows:
            line = f"  [{r.status:4}] {r.name:<{w}}  {_fmt(r.value)}  (limit {r.limit})"
            if r.advice:
                line += f" -> {r.advice}"
            lines.append(line)
            if r.details:
                lines.append(f"  {'':6} {'':<{w}}  {r.details}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        colors = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e"}
        cells = []
        for r in self.rows:
            c = colors[r.status]
            cells.append(
                "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (r.name,))
                + f'<td style="color:{c};font-weight:bold">{r.status}</td>'
                + "".join(f"<td>{html.escape(s)}</td>" for s in (_fmt(r.value), r.limit, r.advice, r.details))
                + "</tr>")
        i = self.info
        caption = html.escape(f"preflight: {self.status} -- {i.container}/{i.codec}, {i.sample_rate} Hz, "
                              f"{i.channels} ch, {i.duration_s:.2f} s")
        return ("<table><caption>" + caption + "</caption><thead><tr><th>check</th><th>status</th><th>value</th>"
                "<th>limit</th><th>advice</th><th>details</th></tr></thead><tbody>" + "".join(cells)
                + "</tbody></table>")


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.4g}"
    return str(v)


@dataclass
class PreparedClip:
    """An enrollment-ready clip made by :func:`prepare`."""

    samples: np.ndarray
    sample_rate: int
    wav: bytes
    report: PreflightReport
    notes: list[str]
    upsampled: bool
    window: tuple[float, float]  # (start_s, end_s) in the source recording

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


# ---------------------------------------------------------------------------------------------
# measurements (pure functions of mono float audio)


def _frame_energy_db(x16: np.ndarray, n_frames: int) -> np.ndarray:
    """Energy (dB) of the VAD's 32 ms frames, one per speech probability (qvtools.audio.frame_energy_db)."""
    return frame_energy_db(x16, vad.FRAME_SAMPLES, n_frames=n_frames)


def _held_note_ratio(x16: np.ndarray, loud_background: bool) -> tuple[float, float, str]:
    """:func:`qvtools.detectors.held_note_ratio` over ``THRESHOLDS["singing_hold_s"]`` windows."""
    return held_note_ratio(x16, loud_background, THRESHOLDS["singing_hold_s"])


def _pauses(segs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(a[1], b[0]) for a, b in zip(segs, segs[1:])]


# ---------------------------------------------------------------------------------------------
# check


def _format_row(info: AudioInfo, is_array: bool) -> Row:
    limit = "WAV 16-bit, MP3 or M4A"
    if is_array:
        return Row("format", "pass", "array", limit, "", "in-memory samples; upload them as 16-bit WAV")
    value = f"{info.container}/{info.codec}"
    c, codec = info.container, str(info.codec).upper()
    # "Format: WAV (16-bit), MP3, M4A" (§2.4)
    if c == "wav":
        if codec == "PCM_16":
            return Row("format", "pass", value, limit)
        return Row("format", "fail", value, limit, _ADVICE_PREPARE,
                   f"WAV must be 16-bit PCM; this one is {info.codec}")
    if c == "mp3":
        return Row("format", "pass", value, limit)
    if c in ("m4a", "mp4"):
        if codec.lower() == "aac" or "aac" in codec.lower():
            return Row("format", "pass", value, limit)
        return Row("format", "fail", value, limit, _ADVICE_PREPARE, f"M4A must hold AAC; this one holds {info.codec}")
    return Row("format", "fail", value, limit, _ADVICE_PREPARE, f"{c.upper()} is not accepted by the enrollment API")


@dataclass
class _Clip:
    """What every preflight rule reads: the decoded clip and its facts, computed once by :func:`check`.
    A rule may add facts later rules use (``snr``: the music and singing rules) and fills ``measures``."""

    info: AudioInfo
    x: np.ndarray  # as decoded (channels kept)
    sr: int
    is_array: bool
    mono: np.ndarray
    x16: np.ndarray  # mono at the VAD's rate
    probs: np.ndarray  # Silero speech probability per VAD frame
    segs: list  # speech segments (s)
    transcript: str | None = None
    language: str | None = None
    transcript_match: bool = True
    naturalness: bool = True
    snr: float = float("nan")
    measures: dict = field(default_factory=dict)


def check(src: AudioSource, *, transcript: str | None = None, language: str | None = None,
          transcript_match: bool = True, naturalness: bool = True) -> PreflightReport:
    """Check a recording against the enrollment audio rules (§2.4); never raises for a bad
    recording (that is what the report is for), only for one that cannot be decoded
    (:class:`~qvtools.errors.InvalidAudio`).

    ``src`` is a path, bytes, a binary file object or ``(samples, sample_rate)``.
    ``transcript`` (optional) adds a speaking-rate plausibility row and, unless ``transcript_match`` is
    False, a ``transcript_match`` row: the audio transcribed offline (in ``language`` when given, else
    detected) and compared with the text by :func:`qvtools.metrics.transcript_mismatch`, the comparison the
    local service makes for ``input.text`` (§2.1: a large mismatch gives ``Audio.PreprocessError``).
    ``naturalness`` adds an information row (never a warning: no enrollment rule) with the clip's DNSMOS
    (:mod:`qvtools.naturalness`): a noisy clip shows a low BAK, and the clone may copy what it hears.

    The rows come from the rule functions of :data:`RULES`, in that order; each takes the shared
    :class:`_Clip` and returns its row (None: the rule does not apply, e.g. no transcript given).
    """
    if language is not None:
        from .lang import base_language

        base_language(language)  # an unsupported code is a ConfigError before any work
    is_array = isinstance(src, tuple)
    data = None
    if not is_array:
        from .audio import read_bytes

        data = read_bytes(src)
        if not data:
            raise InvalidAudio("the audio is empty (0 bytes)")
        src_for_load = data
    else:
        src_for_load = src
    info = probe(src_for_load)
    x, sr = load(src_for_load)
    info = AudioInfo(info.container, info.codec, sr, 1 if x.ndim == 1 else x.shape[1], x.shape[0] / sr,
                     info.size_bytes)
    mono = to_mono(x)
    x16 = resample(mono, sr, vad.SAMPLE_RATE)
    probs = vad.speech_probabilities(x16, vad.SAMPLE_RATE)
    segs = vad.segments_from_probabilities(probs, info.duration_s)  # the defaults the service uses too
    clip = _Clip(info, x, sr, is_array, mono, x16, probs, segs, transcript, language, transcript_match, naturalness)
    rows = [row for rule in RULES for row in [rule(clip)] if row is not None]
    return PreflightReport(rows, info, clip.measures)


def _format_rule(c: _Clip) -> Row:
    return _format_row(c.info, c.is_array)


def _file_size_rule(c: _Clip) -> Row:
    # size: "< 10 MB" (§2.4); for arrays, the size of the 16-bit WAV they would be sent as
    info, x = c.info, c.x
    size = info.size_bytes if info.size_bytes is not None else 44 + x.shape[0] * info.channels * 2
    c.measures["size_bytes"] = size
    size_note = "" if info.size_bytes is not None else "as 16-bit WAV"
    if size < MAX_FILE_BYTES:
        return Row("file_size", "pass", size, f"< {MAX_FILE_BYTES} bytes (10 MB)", "", size_note)
    return Row("file_size", "fail", size, f"< {MAX_FILE_BYTES} bytes (10 MB)",
               "shorten the clip (10-20 s is enough) or " + _ADVICE_PREPARE, size_note)


def _data_url_rule(c: _Clip) -> Row:
    mime = c.info.mime or "audio/wav"
    url_len = len(f"data:{mime};base64,") + 4 * math.ceil(c.measures["size_bytes"] / 3)  # base64 grows by 4/3
    c.measures["data_url_bytes"] = url_len
    lim = f"<= {MAX_DATA_URL_BYTES} bytes (max bytes per data-uri item)"
    if url_len <= MAX_DATA_URL_BYTES:
        return Row("data_url", "pass", url_len, lim)
    return Row("data_url", "fail", url_len, lim, "shorten the clip or " + _ADVICE_PREPARE,
               "the base64 data URL is 4/3 of the file size")


def _duration_rule(c: _Clip) -> Row:
    # duration: max 60 s, 10-20 s recommended (§2.4)
    dur = c.info.duration_s
    lo, hi = RECOMMENDED_DURATION_S
    dlim = f"<= {MAX_DURATION_S:g} s; {lo:g}-{hi:g} s recommended"
    if dur > MAX_DURATION_S:
        return Row("duration", "fail", round(dur, 3), dlim, f"cut to {lo:g}-{hi:g} s, e.g. " + _ADVICE_PREPARE)
    if dur < lo or dur > hi:
        return Row("duration", "warn", round(dur, 3), dlim,
                   "record more speech" if dur < lo else f"cut to {lo:g}-{hi:g} s, e.g. " + _ADVICE_PREPARE)
    return Row("duration", "pass", round(dur, 3), dlim)


def _sample_rate_rule(c: _Clip) -> Row:
    # sample rate >= 24 kHz (§2.4, Audio.AudioRateError)
    rlim = f">= {MIN_SAMPLE_RATE} Hz"
    if c.sr >= MIN_SAMPLE_RATE:
        return Row("sample_rate", "pass", c.sr, rlim)
    return Row("sample_rate", "fail", c.sr, rlim,
               "re-record at 24 kHz or more; upsampling adds no detail "
               "(qvtools prepare --allow-upsample does it anyway, flagged)")


def _channels_rule(c: _Clip) -> Row:
    # channels: mono (§2.4)
    if c.info.channels == 1:
        return Row("channels", "pass", 1, "mono (1)")
    same = bool(np.allclose(c.x, c.x[:, :1], atol=1e-4))
    return Row("channels", "fail", c.info.channels, "mono (1)", "downmix to mono: " + _ADVICE_PREPARE,
               "all channels are identical (dual mono)" if same else "channels differ")


def _continuous_speech_rule(c: _Clip) -> Row:
    # --- content: VAD-based rows ---
    segs = c.segs
    c.measures["speech_segments"] = segs
    longest = vad.longest_continuous(segs)  # one implementation, shared with the service
    c.measures["longest_speech_s"] = longest
    clim = f">= {MIN_CONTINUOUS_SPEECH_S:g} s (gaps < {CONTINUITY_GAP_S:g} s bridged)"
    # ">= 3 s of continuous clear speech" (§2.4)
    if longest >= MIN_CONTINUOUS_SPEECH_S:
        return Row("continuous_speech", "pass", round(longest, 2), clim)
    return Row("continuous_speech", "fail", round(longest, 2), clim,
               "record at least 3 s of uninterrupted speech",
               "no speech found" if not segs else f"{len(segs)} speech segment(s), the longest {longest:.2f} s")


def _pauses_rule(c: _Clip) -> Row:
    # "Other pauses <= 2 s" (§2.4): pauses between speech; leading/trailing silence is trimmed by prepare
    segs, dur = c.segs, c.info.duration_s
    pauses = _pauses(segs)
    long_pauses = [(a, b) for a, b in pauses if b - a > MAX_PAUSE_S]
    max_pause = max((b - a for a, b in pauses), default=0.0)
    c.measures["max_pause_s"] = max_pause
    plim = f"<= {MAX_PAUSE_S:g} s"
    edge = []
    if segs and segs[0][0] > MAX_PAUSE_S:
        edge.append(f"leading silence {segs[0][0]:.2f} s")
    if segs and dur - segs[-1][1] > MAX_PAUSE_S:
        edge.append(f"trailing silence {dur - segs[-1][1]:.2f} s")
    if long_pauses:
        where = ", ".join(f"{a:.2f}-{b:.2f} s ({b - a:.2f} s)" for a, b in long_pauses)
        return Row("pauses", "fail", round(max_pause, 2), plim,
                   f"shorten the pauses at {where}: " + _ADVICE_PREPARE,
                   "; ".join([f"pauses over {MAX_PAUSE_S:g} s at {where}"] + edge))
    if edge:
        return Row("pauses", "warn", round(max_pause, 2), plim, "trim the silence: " + _ADVICE_PREPARE,
                   "; ".join(edge))
    return Row("pauses", "pass", round(max_pause, 2), plim)


def _snr_rule(c: _Clip) -> Row:
    # SNR: "no background sound ... no noise" (§2.4)
    energy = _frame_energy_db(c.x16, len(c.probs))
    snr, sp_db, bg_db = speech_snr(energy, c.probs)  # the one SNR (metrics), as the service
    c.snr = snr
    c.measures.update(snr_db=snr, speech_level_db=sp_db, background_level_db=bg_db)
    t = THRESHOLDS
    slim = f">= {t['snr_warn_db']:g} dB (fail < {t['snr_fail_db']:g} dB; calibrated)"
    sdet = f"speech frames {sp_db:.1f} dBFS, background {bg_db:.1f} dBFS" if math.isfinite(snr) else "no speech frames"
    if not math.isfinite(snr):
        return Row("snr", "warn", float("nan"), slim, "no speech detected", sdet)
    if snr < t["snr_fail_db"]:
        return Row("snr", "fail", round(snr, 1), slim, "record in a quiet room, close to the microphone", sdet)
    if snr < t["snr_warn_db"]:
        return Row("snr", "warn", round(snr, 1), slim,
                   "background noise is audible: record in a quiet room, close to the microphone", sdet)
    return Row("snr", "pass", round(snr, 1), slim, "", sdet)


def _clipping_rule(c: _Clip) -> Row:
    # clipping (house rule: clear speech)
    t, x = THRESHOLDS, c.x
    clip_ratio = float(np.mean(np.abs(x) >= 0.999)) if x.size else 0.0
    c.measures["clipping_ratio"] = clip_ratio
    climit = f"<= {t['clipping_warn']:.2%} of samples (fail > {t['clipping_fail']:.0%})"
    if clip_ratio > t["clipping_fail"]:
        return Row("clipping", "fail", clip_ratio, climit, "re-record with lower input gain")
    if clip_ratio > t["clipping_warn"]:
        return Row("clipping", "warn", clip_ratio, climit, "re-record with lower input gain")
    return Row("clipping", "pass", clip_ratio, climit)


def _loudness_rule(c: _Clip) -> Row:
    # loudness (BS.1770 via pyloudnorm; house range)
    t = THRESHOLDS
    lufs = loudness_lufs(c.mono, c.sr)  # the one loudness (metrics): silence -> FLOOR_DB
    c.measures["loudness_lufs"] = lufs
    llim = f"{t['loudness_low_lufs']:g} to {t['loudness_high_lufs']:g} LUFS"
    if not math.isfinite(lufs) or lufs < t["loudness_low_lufs"]:
        return Row("loudness", "warn", round(lufs, 1) if math.isfinite(lufs) else lufs, llim,
                   "too quiet: " + _ADVICE_PREPARE + " normalises loudness")
    if lufs > t["loudness_high_lufs"]:
        return Row("loudness", "warn", round(lufs, 1), llim, "very loud: " + _ADVICE_PREPARE)
    return Row("loudness", "pass", round(lufs, 1), llim)


def _loud_background(c: _Clip) -> bool:
    """The background is within the music gate of the speech level (needs the snr rule first)."""
    return math.isfinite(c.snr) and c.snr < THRESHOLDS["music_gate_db"]


def _music_rule(c: _Clip) -> Row:
    # music: "No music" (§2.4)
    t, snr = THRESHOLDS, c.snr
    tonality = _background_tonality(c.x16, c.probs)
    c.measures["background_tonality"] = tonality
    mlim = (f"tonality <= {t['music_tonality']:g} when background within {t['music_gate_db']:g} dB of speech "
            "(calibrated)")
    mdet = f"background tonal-peak persistence {_fmt(tonality)}, background {_fmt(snr)} dB below speech"
    if _loud_background(c) and math.isfinite(tonality) and tonality > t["music_tonality"]:
        return Row("music", "warn", round(tonality, 3), mlim, "background music likely: record without music", mdet)
    return Row("music", "pass", round(tonality, 3) if math.isfinite(tonality) else tonality, mlim, "", mdet)


def _singing_rule(c: _Clip) -> Row:
    # singing: "No singing" (§2.4)
    # the background is loud (or no speech was found): DIO would lose a voice over it, use Harvest
    t = THRESHOLDS
    held, voiced, tracker = _held_note_ratio(c.x16, loud_background=_loud_background(c) or not math.isfinite(c.snr))
    c.measures.update(held_note_ratio=held, voiced_ratio=voiced, pitch_tracker=tracker)
    glim = f"held-note ratio <= {t['singing_held_ratio']:g} (calibrated)"
    gdet = (f"{_fmt(held)} of the clip on held notes (>= {t['singing_hold_s'] * 1000:.0f} ms within 1 semitone, "
            f"WORLD {tracker or 'n/a'} F0); voiced {_fmt(voiced)}")
    if math.isfinite(held) and held > t["singing_held_ratio"]:
        return Row("singing", "warn", round(held, 3), glim, "singing likely: read the text in a speaking voice", gdet)
    return Row("singing", "pass", round(held, 3) if math.isfinite(held) else held, glim, "", gdet)


def _second_voice_rule(c: _Clip) -> Row:
    # second voice: "No ... other voices" (§2.4)
    t = THRESHOLDS
    spread, n_win = _speaker_spread(c.x16, c.probs)
    c.measures.update(speaker_similarity_p5=spread, speaker_windows=n_win)
    vlim = f"5th-percentile window similarity >= {t['second_voice_similarity']:g} (calibrated)"
    vdet = f"{n_win} speech windows of 1.5 s, d-vector cosine similarity p5 {_fmt(spread)}"
    if math.isfinite(spread) and spread < t["second_voice_similarity"]:
        return Row("second_voice", "warn", round(spread, 3), vlim,
                   "another voice is likely present: keep one speaker only", vdet)
    return Row("second_voice", "pass", round(spread, 3) if math.isfinite(spread) else spread, vlim, "",
               vdet if math.isfinite(spread) else "too little speech to compare windows")


def _naturalness_rule(c: _Clip) -> Row | None:
    return _naturalness_row(c.x16, c.measures) if c.naturalness else None


def _transcript_rule(c: _Clip) -> Row | None:
    return None if c.transcript is None else _transcript_row(c.transcript, sum(e - s for s, e in c.segs))


def _transcript_match_rule(c: _Clip) -> Row | None:
    if c.transcript is None or not c.transcript_match:
        return None
    return _transcript_match_row(c.x, c.sr, c.transcript, c.language)


#: The preflight rules in row order: each takes the shared :class:`_Clip` and returns its :class:`Row`
#: (or None when it does not apply). ``data_url`` reads the size ``file_size`` measured; ``music`` and
#: ``singing`` read the SNR of ``snr``.
RULES = (_format_rule, _file_size_rule, _data_url_rule, _duration_rule, _sample_rate_rule, _channels_rule,
         _continuous_speech_rule, _pauses_rule, _snr_rule, _clipping_rule, _loudness_rule, _music_rule,
         _singing_rule, _second_voice_rule, _naturalness_rule, _transcript_rule, _transcript_match_rule)


def _naturalness_row(x16: np.ndarray, measures: dict) -> Row:
    """Information only: DNSMOS P.835 / P.808 of the clip (qvtools.naturalness); status always "pass"."""
    from .naturalness import MODEL_NAME, dnsmos

    mos = dnsmos(x16, vad.SAMPLE_RATE)
    measures.update(mos)
    det = (f"SIG {mos['mos_sig']:.2f}, BAK {mos['mos_bak']:.2f}, OVRL {mos['mos_ovrl']:.2f}, "
           f"P.808 {mos['mos_p808']:.2f} ({MODEL_NAME}; 1-5; clean read speech measured OVRL 3.2-3.6)")
    advice = ("listeners would hear background noise (BAK below 3): the clone may copy it; record in a quieter "
              "room" if mos["mos_bak"] < 3.0 else "")
    return Row("naturalness", "pass", round(mos["mos_ovrl"], 2), "information only (DNSMOS OVRL; no enrollment "
               "rule)", advice, det)


def _transcript_row(text: str, speech_s: float) -> Row:
    text = text.strip()
    cjk = sum(1 for ch in text if "\u3040" <= ch <= "\u30ff" or "\u3400" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af")
    if cjk > len(text.split()):
        count, unit, (lo, hi) = cjk, "chars/s", THRESHOLDS["chars_per_s"]
    else:
        count, unit, (lo, hi) = len(text.split()), "words/s", THRESHOLDS["words_per_s"]
    lim = f"{lo:g}-{hi:g} {unit}"
    if speech_s <= 0 or count == 0:
        return Row("transcript", "warn", float("nan"), lim, "no speech or empty transcript",
                   f"{count} units, {speech_s:.2f} s of speech")
    rate = count / speech_s
    det = f"{count} {unit.split('/')[0]} over {speech_s:.2f} s of speech"
    if lo <= rate <= hi:
        return Row("transcript", "pass", round(rate, 2), lim, "", det)
    return Row("transcript", "warn", round(rate, 2), lim,
               "the transcript does not seem to match the audio (a mismatch gives Audio.PreprocessError)", det)


def _transcript_match_row(x: np.ndarray, sr: int, text: str, language: str | None) -> Row:
    """The enrollment text check (issue 10 item 4): the same function and threshold as the local service
    (:func:`qvtools.metrics.transcript_mismatch`, :data:`~qvtools.metrics.TRANSCRIPT_MISMATCH_THRESHOLD`).
    A mismatch is a warning: the service has the last word (its ASR is not ours)."""
    from .errors import ConfigError
    from .metrics import TRANSCRIPT_MISMATCH_THRESHOLD as limit
    from .metrics import transcript_mismatch

    lim = f"CER (zh/ja/ko) or WER <= {limit:g}"
    try:
        score, metric, asr_text = transcript_mismatch(x, sr, text, language)
    except ImportError as exc:
        return Row("transcript_match", "warn", float("nan"), lim,
                   "install the offline ASR to compare the transcript with the audio: pip install 'qvtools[eval]'",
                   f"not checked: {exc}")
    except ConfigError as exc:
        return Row("transcript_match", "warn", float("nan"), lim, "give the words spoken in the recording", str(exc))
    det = f"{metric.upper()} {score:.2f}; heard: {asr_text[:120]}"
    if score <= limit:
        return Row("transcript_match", "pass", round(score, 3), lim, "", det)
    return Row("transcript_match", "warn", round(score, 3), lim,
               "the text does not match the speech: the service answers Audio.PreprocessError for a large "
               "mismatch; send the exact transcript, or no text", det)


# ---------------------------------------------------------------------------------------------
# prepare


def _choose_window(segs: list[tuple[float, float]], lo: float, hi: float) -> tuple[float, float] | None:
    """The best [start, end] made of whole speech segments (cut only in pauses): duration in
    [lo, hi] with no pause > 2 s inside, most speech, then longest. None when nothing fits."""
    best, best_key = None, None
    for i in range(len(segs)):
        for j in range(i, len(segs)):
            if j > i and segs[j][0] - segs[j - 1][1] > MAX_PAUSE_S:
                break
            s, e = segs[i][0], segs[j][1]
            d = e - s
            if d > hi:
                break
            if d < lo:
                continue
            speech = sum(b - a for a, b in segs[i:j + 1])
            key = (round(speech, 2), d)
            if best_key is None or key > best_key:
                best, best_key = (s, e), key
    return best


def _fade(x: np.ndarray, sr: int, ms: float = 10.0) -> np.ndarray:
    n = min(len(x) // 2, int(sr * ms / 1000))
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def prepare(src: AudioSource, *, allow_upsample: bool = False, target_lufs: float = -23.0,
            max_peak_dbfs: float = -1.0, window_s: tuple[float, float] = (10, 20)) -> PreparedClip:
    """Make an enrollment-ready clip: mono, >= 24 kHz, leading/trailing silence trimmed, the
    best ``window_s`` stretch of speech when longer (cut in pauses, never mid-word), pauses
    over 2 s shortened to 1 s, loudness normalised to ``target_lufs`` without letting the peak
    exceed ``max_peak_dbfs``, encoded as 16-bit WAV; ``.report`` re-checks the result.

    A recording below 24 kHz raises :class:`~qvtools.errors.InvalidAudio` unless
    ``allow_upsample=True`` (then it is upsampled to 24 kHz, which adds no detail, and flagged
    in ``.notes`` and ``.upsampled``).
    """
    lo, hi = float(window_s[0]), float(window_s[1])
    if not 0 < lo <= hi:
        raise ValueError(f"window_s must be (min_s, max_s) with 0 < min <= max, got {window_s}")
    if hi > MAX_DURATION_S:
        raise ValueError(f"window_s max {hi} exceeds the {MAX_DURATION_S:g} s limit")
    x, sr = load(src)
    notes: list[str] = []
    if x.ndim == 2 and x.shape[1] > 1:
        notes.append(f"downmixed {x.shape[1]} channels to mono")
    x = to_mono(x).astype(np.float32)
    src_sr = sr
    upsampled = False
    # "Sample rate >= 24 kHz" (§2.4)
    if sr < MIN_SAMPLE_RATE:
        if not allow_upsample:
            raise InvalidAudio(
                f"sample rate {sr} Hz is below the required {MIN_SAMPLE_RATE} Hz; re-record at 24 kHz or more, "
                "or pass allow_upsample=True to upsample (adds no detail)")
        x = resample(x, sr, MIN_SAMPLE_RATE)
        sr = MIN_SAMPLE_RATE
        upsampled = True
        notes.append(f"UPSAMPLED from {src_sr} Hz to {sr} Hz (no new detail; better re-record at >= 24 kHz)")
    dur = len(x) / sr

    x16 = resample(x, sr, vad.SAMPLE_RATE)
    probs = vad.speech_probabilities(x16, vad.SAMPLE_RATE)
    segs = vad.segments_from_probabilities(probs, dur)  # the defaults the service uses too
    if not segs:
        raise InvalidAudio("no speech found in the recording; nothing to prepare")

    # trim leading/trailing silence, keeping a short margin
    start, end = max(0.0, segs[0][0] - 0.1), min(dur, segs[-1][1] + 0.15)
    if start > 0.05 or dur - end > 0.05:
        notes.append(f"trimmed silence: kept {start:.2f}-{end:.2f} s of {dur:.2f} s")
    window = (start, end)
    if end - start > hi:
        choice = _choose_window(segs, lo, hi)
        if choice is None:  # try finer cuts (shorter pauses between words)
            fine = vad.segments_from_probabilities(probs, dur, min_speech_ms=100, min_silence_ms=100, pad_ms=30)
            choice = _choose_window(fine, lo, hi)
            if choice is None:
                choice = _choose_window(fine, min(lo, MIN_CONTINUOUS_SPEECH_S), hi)  # at least the §2.4 minimum
        if choice is None:  # continuous speech longer than hi: cut at the least speech-like frame
            lim = int(min(len(probs), (start + hi) / vad.FRAME_S))
            first = int((start + lo) / vad.FRAME_S)
            k = first + int(np.argmin(probs[first:lim])) if lim > first else lim
            choice = (segs[0][0], k * vad.FRAME_S)
            notes.append("no pause found to cut at; cut at the quietest point instead")
        window = (max(0.0, choice[0] - 0.1), min(dur, choice[1] + 0.15))
        notes.append(f"picked the {window[1] - window[0]:.2f} s window {window[0]:.2f}-{window[1]:.2f} s "
                     f"(cut in pauses, {lo:g}-{hi:g} s wanted)")
    a, b = int(round(window[0] * sr)), int(round(window[1] * sr))
    y = x[a:b].copy()

    # shorten interior pauses over 2 s to 1 s ("Other pauses <= 2 s", §2.4)
    inner = [(s - window[0], e - window[0]) for s, e in segs if e > window[0] and s < window[1]]
    pieces, cursor = [], 0
    for (_, e1), (s2, _) in zip(inner, inner[1:]):
        if s2 - e1 > MAX_PAUSE_S:
            cut_a = int(round((e1 + 0.5) * sr))
            cut_b = int(round((s2 - 0.5) * sr))
            pieces.append(y[cursor:cut_a])
            cursor = cut_b
            notes.append(f"shortened a {s2 - e1:.2f} s pause at {e1 + window[0]:.2f} s to 1.00 s")
    if pieces:
        pieces.append(y[cursor:])
        y = np.concatenate(pieces)

    # peak-safe loudness normalisation (BS.1770 via pyloudnorm)
    lufs = loudness_lufs(y, sr)
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    max_peak = 10 ** (max_peak_dbfs / 20)
    if math.isfinite(lufs) and lufs > FLOOR_DB and peak > 0:  # FLOOR_DB: every block gated out, not measurable
        gain_db = target_lufs - lufs
        peak_db = 20 * math.log10(peak)
        if peak_db + gain_db > max_peak_dbfs:
            gain_db = max_peak_dbfs - peak_db
            notes.append(f"loudness {lufs:.1f} -> {lufs + gain_db:.1f} LUFS (limited by the {max_peak_dbfs:g} dBFS "
                         f"peak; target {target_lufs:g} LUFS)")
        else:
            notes.append(f"loudness {lufs:.1f} -> {target_lufs:.1f} LUFS")
        y = y * np.float32(10 ** (gain_db / 20))
    elif peak > max_peak:
        y = y * np.float32(max_peak / peak)
        notes.append(f"scaled the peak to {max_peak_dbfs:g} dBFS")
    y = _fade(np.clip(y, -1.0, 1.0).astype(np.float32), sr)
    wav = wav_bytes(y, sr)
    notes.append(f"encoded {len(y) / sr:.2f} s as 16-bit WAV, {sr} Hz mono ({len(wav)} bytes)")
    report = check(wav)
    for n in notes:
        log.debug("prepare: %s", n)
    return PreparedClip(samples=y, sample_rate=sr, wav=wav, report=report, notes=notes, upsampled=upsampled,
                        window=(round(window[0], 3), round(window[1], 3)))
