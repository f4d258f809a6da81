"""The model catalog: one table of realtime model families and what each one is known to do.

Client, CLI, local service and notebooks import their per-model facts from here (never a copy):
default voice, the format strings the family echoes (``pcm`` vs ``pcm16``/``pcm24``), the input
transcription model, sample rates, audio token rates, whether cloned voices work, which built-in
voices work, sampling defaults and the name of the SIMULATED latency profile of the local service.

Sources (``../shared/reference/dashscope-protocol.md``): §4.1 model names, §4.2 defaults, §4.6 voices
and token rates, and §7 (observed traffic, which wins over the older sections): §7.1 ``session.created``
shapes per family, §7.8 models seen in 2026 ("accept any ``…-omni-…-realtime`` name"), §7.11 built-in
voices per family, §7.19 enrollment target models.

Names outside the table are accepted: :func:`family` returns a family with ``known=False`` whose
defaults are those of the newest documented generation (qwen3.5), and :func:`check_model` says why a
name looks unusual. The service decides; qvtools only warns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

__all__ = [
    "ModelFamily", "FAMILIES", "family", "base_model", "is_known_model", "is_realtime_model",
    "check_model", "DEFAULT_COMPARE_MODELS", "ENROLLMENT_TARGET_MODELS", "check_target_model",
    "OMNI_CLONE_PREFIX", "TTS_CLONE_PREFIX", "VOICE_KINDS", "voice_kind", "is_cloned_voice",
    "SAMPLE_RATES", "clone_realtime_model", "clone_usable_with", "VOICE_CLONE_MODES", "create_parameters",
    "DEFAULT_INPUT_SAMPLE_RATE", "DEFAULT_OUTPUT_SAMPLE_RATE", "DEFAULT_VAD_THRESHOLD", "DEFAULT_PREFIX_PADDING_MS",
    "DEFAULT_SILENCE_DURATION_MS",
]

#: ``audio.{input,output}.format.sample_rate`` values where the family can configure them (§4.2).
SAMPLE_RATES = (8000, 16000, 24000, 48000)
#: Audio rates of a session that sets none (§4.1: input PCM 16 kHz, output PCM 24 kHz); the one definition.
DEFAULT_INPUT_SAMPLE_RATE = 16000
DEFAULT_OUTPUT_SAMPLE_RATE = 24000
#: Server VAD defaults (§4.2): threshold 0.5, prefix padding 300 ms, silence 800 ms before speech_stopped.
DEFAULT_VAD_THRESHOLD = 0.5
DEFAULT_PREFIX_PADDING_MS = 300
DEFAULT_SILENCE_DURATION_MS = 800

_SAMPLING_QWEN35 = dict(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.0, presence_penalty=1.5)
_SAMPLING_QWEN3 = dict(temperature=0.9, top_p=1.0, top_k=50, repetition_penalty=1.05, presence_penalty=0.0)
_SAMPLING_TURBO = dict(temperature=1.0, top_p=0.01, top_k=20, repetition_penalty=1.05, presence_penalty=0.0)

# §4.6 lists these for qwen3.5; §7.11 found Cherry and Chelsie failing there and Cindy, Raymond, Harvey,
# Chloe working. The scan found ~55 names; the ones we can cite are listed.
_VOICES_QWEN35 = (
    "Tina", "Ethan", "Serena", "Cindy", "Raymond", "Harvey", "Chloe", "Maia", "Momo", "Ryan", "Jennifer",
    "Katerina", "Aiden", "Mia", "Liora Mira", "Theo Calm", "Joseph Chen",
    # dialect voices (§4.6)
    "Sunny", "Dylan", "Eric", "Peter", "Marcus", "Li", "Rocky", "Kiki",
)
# §4.6 qwen3-omni-flash list; §7.11: Tina fails there, the others work.
_VOICES_QWEN3 = (
    "Cherry", "Serena", "Ethan", "Chelsie", "Momo", "Vivian", "Moon", "Maia", "Kai", "Nofish", "Bella",
    "Jennifer", "Ryan", "Katerina", "Aiden", "Eldric Sage", "Mia", "Mochi", "Bellona",
)
_VOICES_TURBO = ("Chelsie", "Cherry", "Serena", "Ethan")


@dataclass(frozen=True)
class ModelFamily:
    """What one realtime model family is known (or, where ``guesses`` says so, assumed) to do.

    ``name`` is the base model name without ``-realtime`` (``qwen3.5-omni-plus``); ``generation`` groups
    families that share the §4.2 defaults (``qwen3.5``, ``qwen3``, ``qwen3.8``, ``turbo``);
    ``tier`` is ``plus``/``flash``/``turbo`` (the simulated latency profile of the local service).
    ``input_audio_format``/``output_audio_format`` are the strings ``session.created`` carries (§7.1).
    ``configurable_audio``: the family takes the ``audio.{input,output}.format`` object (§4.2: qwen3.5 only).
    ``cloned_voices``: True when a ``qwen-omni-vc-*`` voice enrolled for this model works, None when unknown.
    ``voices``: built-in voices known to work on this family; ``default_voice`` is the one a session starts
    with. ``audio_tokens_in_per_s``/``audio_tokens_out_per_s``: §4.6 token rates. ``guesses`` names the
    fields that are our inference rather than documented or observed. ``clone_parameters``: the
    ``parameters`` a voice-enrollment create for this family sends (§7.28: ``voice_clone_mode: normal``
    for qwen3.8, without which the clone is silently made in the older mode; none for qwen3.5).
    """

    name: str
    generation: str
    tier: str
    default_voice: str
    voices: tuple[str, ...]
    input_audio_format: str = "pcm"
    output_audio_format: str = "pcm"
    transcription_model: str = "qwen3-asr-flash-realtime"
    input_sample_rate: int = DEFAULT_INPUT_SAMPLE_RATE
    output_sample_rate: int = DEFAULT_OUTPUT_SAMPLE_RATE
    configurable_audio: bool = False
    semantic_vad: bool = False
    cloned_voices: bool | None = False
    audio_tokens_in_per_s: float = 12.5
    audio_tokens_out_per_s: float = 12.5
    sampling: dict = field(default_factory=dict)
    sampling_fixed: bool = False
    max_tokens: int = 16384
    smooth_output: bool = False
    known: bool = True
    clone_parameters: tuple[tuple[str, str], ...] = ()
    #: §7.27: False when the model is not in the model list of 2026 accounts (a warning, never a refusal).
    listed: bool = True
    #: §7.27: the family is reported to ignore typed (text) user turns.
    ignores_text_turns: bool = False
    source: str = ""
    guesses: tuple[str, ...] = ()

    @property
    def realtime_model(self) -> str:
        return self.name + "-realtime"

    @property
    def latency_profile(self) -> str:
        """Name of the SIMULATED latency profile of the local service (``qvtools.server.latency.PROFILES``)."""
        return self.tier

    @property
    def transcription_models(self) -> tuple[str, ...]:
        """Transcription model names the family accepts in ``input_audio_transcription.model``.

        §4.2: "The model cannot be changed; old examples show gummy-realtime-v1"; §7.2: qwen3.8 accepted
        and echoed an explicit ``qwen3-asr-flash-realtime``. Both names are accepted everywhere."""
        return tuple(dict.fromkeys((self.transcription_model, "qwen3-asr-flash-realtime", "gummy-realtime-v1")))


FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (
    ModelFamily(
        "qwen3.5-omni-plus", "qwen3.5", "plus", "Tina", _VOICES_QWEN35,
        configurable_audio=True, semantic_vad=True, cloned_voices=True,
        audio_tokens_in_per_s=7.0, audio_tokens_out_per_s=12.5, sampling=_SAMPLING_QWEN35,
        source="§4.2, §4.6, §7.1 (qwen3.5-omni-flash shape), §7.11"),
    ModelFamily(
        "qwen3.5-omni-flash", "qwen3.5", "flash", "Tina", _VOICES_QWEN35,
        configurable_audio=True, semantic_vad=True, cloned_voices=True,
        audio_tokens_in_per_s=7.0, audio_tokens_out_per_s=12.5, sampling=_SAMPLING_QWEN35,
        source="§4.2, §4.6, §7.1, §7.11"),
    ModelFamily(
        "qwen3-omni-flash", "qwen3", "flash", "Cherry", _VOICES_QWEN3,
        input_audio_format="pcm16", output_audio_format="pcm24", transcription_model="gummy-realtime-v1",
        audio_tokens_in_per_s=12.5, audio_tokens_out_per_s=12.5, sampling=_SAMPLING_QWEN3, smooth_output=True,
        ignores_text_turns=True, source="§4.2, §4.6, §7.1, §7.11, §7.27 (ignores text turns)"),
    ModelFamily(
        "qwen3.8-omni-flash", "qwen3.8", "flash", "Chelsie", _VOICES_QWEN3,
        input_audio_format="pcm16", output_audio_format="pcm24", transcription_model="gummy-realtime-v1",
        semantic_vad=True, cloned_voices=True, clone_parameters=(("voice_clone_mode", "normal"),),
        audio_tokens_in_per_s=12.5, audio_tokens_out_per_s=12.5, sampling=_SAMPLING_QWEN3,
        source="§7.1, §7.2, §7.4, §7.6, §7.8 (observed, September 2026); §7.22 and §7.28 (clones, "
               "voice_clone_mode)",
        guesses=("voices", "audio_tokens_in_per_s", "audio_tokens_out_per_s", "sampling")),
    ModelFamily(
        "qwen-omni-turbo", "turbo", "turbo", "Chelsie", _VOICES_TURBO,
        audio_tokens_in_per_s=25.0, audio_tokens_out_per_s=25.0, sampling=_SAMPLING_TURBO, sampling_fixed=True,
        max_tokens=2048, listed=False, source="§4.2, §4.6; §7.27: not listed for 2026 accounts"),
)}

#: The pair ``qvtools compare`` measures by default (the two documented enrollment targets, SEED §2.1).
DEFAULT_COMPARE_MODELS = ("qwen3.5-omni-plus-realtime", "qwen3.5-omni-flash-realtime")

#: Documented ``target_model`` values of a voice enrollment (SEED §2.1; §7.19 adds the non-realtime names;
#: §7.22/§7.28: Qwen's own harness and a third-party test enroll for qwen3.8-omni-flash-realtime).
ENROLLMENT_TARGET_MODELS = ("qwen3.5-omni-plus-realtime", "qwen3.5-omni-flash-realtime",
                            "qwen3.5-omni-plus", "qwen3.5-omni-flash", "qwen3.8-omni-flash-realtime")

#: ``parameters.voice_clone_mode`` values known (§7.28: "normal"; the older mode's name was not recorded).
VOICE_CLONE_MODES = ("normal",)


def create_parameters(target_model: str) -> dict:
    """The ``parameters`` object a voice-enrollment create for ``target_model`` sends (§7.28), from the
    family of the realtime model the clone serves: ``{"voice_clone_mode": "normal"}`` for qwen3.8, ``{}``
    (no ``parameters``) for qwen3.5 and names outside the catalog."""
    fam = FAMILIES.get(_family_key(clone_realtime_model(target_model or "")))
    return dict(fam.clone_parameters) if fam is not None else {}

_SUFFIX = re.compile(r"-(latest|\d{4}-\d{2}-\d{2}|\d{8})$")
#: §7.8: "code should accept any ``…-omni-…-realtime`` name".
_REALTIME = re.compile(r"^[a-z0-9][a-z0-9.]*-omni(-[a-z0-9.]+)*-realtime$")


def base_model(model: str) -> str:
    """The model name without a ``-latest`` or dated suffix (``-2026-03-15``, ``-20260315``)."""
    return _SUFFIX.sub("", str(model or "").strip())


def is_realtime_model(model: str) -> bool:
    """True for any ``…-omni-…-realtime`` name (dated snapshots and ``-latest`` included)."""
    return bool(_REALTIME.match(base_model(model)))


def _family_key(model: str) -> str:
    m = base_model(model)
    return m[: -len("-realtime")] if m.endswith("-realtime") else m


def is_known_model(model: str) -> bool:
    return _family_key(model) in FAMILIES and is_realtime_model(model)


def _tier(name: str) -> str:
    return "plus" if "-plus" in name else "turbo" if "turbo" in name else "flash"


def family(model: str) -> ModelFamily:
    """The :class:`ModelFamily` of a realtime model name; never raises.

    An unknown name gets the qwen3.5 defaults under its own name, ``known=False`` (every field is then a
    guess), and the latency tier read from the name (``plus``/``turbo``/else ``flash``)."""
    key = _family_key(model)
    fam = FAMILIES.get(key)
    if fam is not None:
        return fam
    tmpl = FAMILIES["qwen3.5-omni-plus" if _tier(key) == "plus" else "qwen3.5-omni-flash"]
    return replace(tmpl, name=key or "unknown", tier=_tier(key), known=False, cloned_voices=None,
                   source="not in the catalog: qwen3.5 defaults assumed",
                   guesses=("all fields",))


def check_model(model: str) -> list[str]:
    """Warnings for a realtime model name (empty for a catalog model). Nothing is refused here."""
    if not isinstance(model, str) or not model.strip():
        return ["the model name is empty"]
    if not is_realtime_model(model):
        return [f"{model!r} does not look like a Qwen-Omni-Realtime model (…-omni-…-realtime)"]
    if not is_known_model(model):
        return [f"{model!r} is not in the qvtools model catalog; qwen3.5 defaults are assumed "
                f"(known families: {', '.join(f.realtime_model for f in FAMILIES.values())})"]
    if not family(model).listed:
        return [f"{model!r} was not in the model list of a 2026 account (§7.27); the service may refuse it "
                f"(listed: {', '.join(f.realtime_model for f in FAMILIES.values() if f.listed)})"]
    return []


def check_target_model(model: str) -> list[str]:
    """Warnings for an enrollment ``target_model`` outside the documented set (the service decides)."""
    if not isinstance(model, str) or not model.strip():
        return ["target_model is empty"]
    if base_model(model) in ENROLLMENT_TARGET_MODELS:
        return []
    return [f"target_model {model!r} is not one of the documented enrollment targets "
            f"({', '.join(ENROLLMENT_TARGET_MODELS)}); the service may refuse it"]


def clone_realtime_model(target_model: str) -> str:
    """The realtime model a clone enrolled for ``target_model`` speaks on: §7.19 lets a create name the
    non-realtime ``qwen3.5-omni-plus``, whose clone serves ``qwen3.5-omni-plus-realtime``; dated and
    ``-latest`` suffixes are dropped (§5.6 [guess])."""
    base = base_model(target_model)
    return base if base.endswith("-realtime") else base + "-realtime"


def clone_usable_with(target_model, session_model) -> bool:
    """True when a clone enrolled for ``target_model`` may speak in a realtime session of ``session_model``
    (SEED §2.1: target_model "must equal the later realtime ?model=, otherwise synthesis fails"; §7.19)."""
    if not isinstance(target_model, str) or not isinstance(session_model, str):
        return False
    return clone_realtime_model(target_model) == clone_realtime_model(session_model)


#: Cloned-voice name prefixes (§2.1): ``qwen-omni-vc-<name>-voice-<stamp>-<hex>``; TTS clones (§7.9).
OMNI_CLONE_PREFIX = "qwen-omni-vc-"
TTS_CLONE_PREFIX = "qwen-tts-vc-"
VOICE_KINDS = ("omni", "tts", "unknown")


def is_cloned_voice(voice) -> bool:
    """True for an Omni cloned voice name (``qwen-omni-vc-…``, §2.1)."""
    return isinstance(voice, str) and voice.startswith(OMNI_CLONE_PREFIX)


def voice_kind(voice: str | None, target_model: str | None = None) -> str:
    """``omni``, ``tts`` or ``unknown`` for an enrollment list item (§7.9: the list mixes kinds).

    The name prefix decides; without a known prefix the target model does (``…-omni-…`` vs ``…tts…``)."""
    v = voice if isinstance(voice, str) else ""
    if v.startswith(OMNI_CLONE_PREFIX):
        return "omni"
    if v.startswith(TTS_CLONE_PREFIX):
        return "tts"
    tm = target_model if isinstance(target_model, str) else ""
    if "tts" in tm:
        return "tts"
    if "-omni" in tm:
        return "omni"
    return "unknown"
