"""Microphone widgets, kernel side (issue 14): the browser's messages are played through the same
handlers (``_on_msg``) the anywidget front end reaches, at 48 kHz, against the real local service.
The browser itself is exercised in tests/test_mic_browser.py."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("anywidget")

from qvtools import audio as qaudio  # noqa: E402
from qvtools import preflight  # noqa: E402
from qvtools.errors import ConfigError, InvalidAudio  # noqa: E402
from qvtools.mic import ClockSync, LiveTalk, LiveTurn, Recorder, TransportStats  # noqa: E402

CLIP = "clean/en_F_ljspeech_LJ001-0001.wav"


def clip_48k(speech_data):
    rows = {r["path"]: r for r in csv.DictReader(open(speech_data / "manifest.csv", encoding="utf-8"))}
    x, sr = qaudio.load(speech_data / CLIP, mono=True)
    return qaudio.resample(x, sr, 48000).astype(np.float32), 48000, rows[CLIP]["transcript"]


def test_clock_sync_recovers_a_skewed_browser_clock():
    clock = ClockSync()
    skew = -5000.0  # browser clock 5 s behind the kernel
    for b_send, up, down in ((1000.0, 3.0, 9.0), (2000.0, 1.0, 1.2), (3000.0, 7.0, 2.0)):
        k = b_send - skew + up
        clock.add(b_send, k, k + skew + down)
    assert clock.rtt_ms == pytest.approx(2.2) and clock.error_ms == pytest.approx(1.1)
    assert abs(clock.offset_ms - (-skew)) <= clock.rtt_ms / 2  # NTP bound: half the best round trip
    stats = TransportStats()
    for i in range(20):
        b = 10_000.0 + 85 * i
        stats.add(b, b - skew + 12.0, clock)  # true transport delay 12 ms
    s = stats.summary()
    assert s["n"] == 20 and abs(s["p50_ms"] - 12.0) < 1.2 and abs(s["p95_ms"] - 12.0) < 1.2
    with pytest.raises(ValueError, match="rtt"):
        clock.add(10.0, 5.0, 9.0)


def test_transport_summary_empty():
    assert TransportStats().summary() == {"n": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}


def test_recorder_rejects_a_cap_above_60_s():
    with pytest.raises(ConfigError, match="60"):
        Recorder(max_seconds=61)


def test_recorder_48k_clip_passes_preflight_without_resampling(speech_data, tmp_path):
    x, sr, _ = clip_48k(speech_data)
    rec = Recorder()
    with pytest.raises(InvalidAudio, match="no recording"):
        rec.recording
    seen = []
    rec.on_recorded(seen.append)
    rec.feed(x, sr)
    got, rate = rec.recording
    assert rate == 48000 and got.size == x.size and seen == [rec]
    assert np.array_equal(got, x)  # float32 buffers arrive unchanged
    assert rec.report.ok, rec.report.to_text()
    assert rec.report["sample_rate"].status == "pass"
    assert not any("resampl" in (r.advice + r.details).lower() for r in rec.report.rows)
    assert "qv-preflight" in rec.report_html and "<table>" in rec.report_html
    prepared = preflight.prepare(rec.recording)
    assert not prepared.upsampled and not any("resampl" in n.lower() or "upsampl" in n.lower() for n in prepared.notes)
    path = rec.save(tmp_path / "mine.wav")
    info = qaudio.probe(path.read_bytes())
    assert (info.container, str(info.codec).upper(), info.sample_rate) == ("wav", "PCM_16", 48000)
    assert "transport microphone -&gt; kernel" in rec.status_html


def test_recorder_enforces_the_cap_and_clock_messages():
    rec = Recorder(max_seconds=1.0, run_preflight=False)
    rec._on_msg(rec, {"type": "clock", "b_send": 100.0, "k": 5105.0, "b_recv": 110.0}, [])
    assert rec.clock.offset_ms == pytest.approx(5000.0)
    rec.feed(np.full(48000 * 2, 0.1, np.float32), 48000)  # a page that overran its cap
    assert rec.recording[0].size == 48000
    rec._on_msg(rec, {"type": "start", "rate": 48000}, [])
    rec._on_msg(rec, {"type": "chunk", "t": 1.0, "rate": 48000}, [])  # no buffer: a clear message
    assert "without its audio buffer" in rec.status_html


def test_recorder_empty_recording_says_so():
    rec = Recorder(run_preflight=False)
    rec.feed(np.zeros(0, np.float32), 48000)
    assert "nothing was recorded" in rec.status_html
    with pytest.raises(InvalidAudio):
        rec.recording


@pytest.mark.slow
@pytest.mark.parametrize("push_to_talk", [False, True], ids=["server_vad", "push_to_talk"])
def test_live_turn_through_the_session(speech_data, push_to_talk):
    from realtime_support import FLASH, settings_for, shared_service

    from qvtools.metrics import wer
    from qvtools.realtime.session import RealtimeSession

    x, sr, words = clip_48k(speech_data)
    rt = RealtimeSession(settings_for(shared_service()), FLASH, voice="Ethan",
                         turn_detection=None if push_to_talk else "server_vad")
    talk = LiveTalk(rt)
    try:
        sent = []
        talk.send = lambda content, buffers=None: sent.append((content, buffers))  # what the page would get
        talk.feed(x, sr)
        assert talk.wait_idle(120)
        assert len(talk.turns) == 1
        live = talk.turns[0]
        assert isinstance(live, LiveTurn) and live.mode == ("push_to_talk" if push_to_talk else "server_vad")
        turn = live.turn
        assert turn is rt.turns[-1]  # the session's own Turn
        assert turn.status == "completed", turn.error
        for mark in ("first_audio_sent", "speech_end_sent", "response_created", "first_audio_delta", "response_done"):
            assert mark in turn.marks
        assert wer(words, turn.user_transcript or "", language="en") < 0.35, turn.user_transcript
        assert turn.latency()["ttfa_ms"] is not None
        assert live.transport["n"] == -(-x.size // 4096) and live.transport["p50_ms"] >= 0
        row = live.row()
        assert row["transport_p50_ms"] == live.transport["p50_ms"] and "ttfa_ms" in row
        played = [b for c, b in sent if c.get("type") == "play"]
        assert played and sum(len(b[0]) for b in played) // 2 == turn.audio.size
    finally:
        talk.close()
        rt.close()


class _CloudSettings:
    is_cloud = True


class _FakeVoices:
    """Stands in for the billed cloud's voice API: records the calls, creates nothing anywhere."""

    def __init__(self):
        self.created = []

    def list(self):
        return []

    def create(self, audio, target_model, preferred_name, language=None):
        self.created.append((audio, target_model, preferred_name))
        return {"voice": f"qwen-tts-vc-{preferred_name}-x", "target_model": target_model}


class _CloudWorkspace:
    settings = _CloudSettings()

    def __init__(self):
        self.voices = _FakeVoices()


def test_voice_manager_records_then_creates_after_billing_confirmation(speech_data):
    from qvtools.widgets import VoiceManager

    x, sr, _ = clip_48k(speech_data)
    ws = _CloudWorkspace()
    vm = VoiceManager(ws)
    assert vm.create() is None and "upload or record" in vm.status.value
    vm.recorder.feed(x, sr)  # record -> preflight shown in the manager, Create enabled
    assert vm.report is not None and vm.report.ok and not vm.create_button.disabled
    assert "<table" in vm.preflight.value and vm.name.value == "recording"
    assert vm.create() is None and ws.voices.created == []  # first click: the billing notice only
    assert "billed" in vm.status.value and "Confirm" in vm.create_button.description
    voice = vm.create()
    assert voice["voice"].startswith("qwen-tts-vc-recording") and len(ws.voices.created) == 1
    wav, _, name = ws.voices.created[0]
    info = qaudio.probe(wav)
    assert name == "recording" and info.container == "wav" and info.sample_rate >= 24000  # prepared clip
    assert vm.create_button.description == "Create voice"


def test_live_talk_reports_an_unreachable_service_and_keeps_listening():
    import socket

    from qvtools.config import Settings
    from qvtools.realtime.session import RealtimeSession

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rt = RealtimeSession(Settings(region="local", base_url=f"http://127.0.0.1:{port}", api_key="sk-local-test",
                                  timeout_s=5), "qwen3.5-omni-flash-realtime", voice="Ethan")
    talk = LiveTalk(rt)
    try:
        talk.feed(np.zeros(4800, np.float32), 48000)
        assert talk.wait_idle(30)
        assert "live turn failed" in talk.status_html and "sk-local-test" not in talk.status_html
        assert talk.turns == [] and talk._worker.is_alive()  # the next Start can try again
    finally:
        talk.close()


# ------------------------------------------------------------------------------ issue 23: bounded, total handlers

def test_the_cap_is_enforced_while_recording_and_later_chunks_are_dropped_with_a_notice():
    rec = Recorder(max_seconds=1.0, run_preflight=False)
    rec._on_msg(rec, {"type": "start", "rate": 48000}, [])
    block = np.full(4096, 0.1, np.float32)
    for i in range(60):  # ~5 s of audio sent to a 1 s recorder
        rec._on_msg(rec, {"type": "chunk", "t": 1.0, "rate": 48000}, [block.tobytes()])
    assert sum(p.size for p in rec._parts) == 48000  # kept while recording, not cut at stop
    assert any("cap was reached" in d for d in rec.dropped) and "cap was reached" in rec.status_html
    rec._on_msg(rec, {"type": "stop"}, [])
    rec._on_msg(rec, {"type": "chunk", "t": 2.0, "rate": 48000}, [block.tobytes()])  # after stop
    assert rec.recording[0].size == 48000 and "after stop" in rec.dropped[-1]


def test_one_huge_chunk_a_rate_change_and_non_finite_samples_are_refused():
    rec = Recorder(max_seconds=5.0, run_preflight=False)
    rec._on_msg(rec, {"type": "start", "rate": 48000}, [])
    rec._on_msg(rec, {"type": "chunk", "t": 1.0}, [np.zeros(48000 * 3, np.float32).tobytes()])
    assert "longer than 2 s" in rec.status_html and rec._n == 0
    rec._on_msg(rec, {"type": "chunk", "t": 1.0, "rate": 16000}, [np.zeros(1600, np.float32).tobytes()])
    assert "rate changed mid-recording" in rec.status_html and rec._n == 0
    bad = np.zeros(4096, np.float32)
    bad[7] = np.nan
    rec._on_msg(rec, {"type": "chunk", "t": 1.0}, [bad.tobytes()])
    assert "NaN or infinite" in rec.status_html and rec._n == 0
    for content in ({"type": "start", "rate": None}, {"type": "start", "rate": [48000]},
                    {"type": "start", "rate": float("inf")}, {"type": "start", "rate": True},
                    {"type": "chunk", "t": None}, {"type": "clock", "b_send": 10**400, "k": 1, "b_recv": 2}):
        rec._on_msg(rec, content, [np.zeros(8, np.float32).tobytes()])  # never raises
    assert rec.rate == 48000  # the refused starts changed nothing


def test_microphone_handlers_are_total_over_arbitrary_messages():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                               lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                            max_size=4),
                               max_leaves=10)
    kinds = st.sampled_from(["ping", "clock", "start", "chunk", "stop", "error", "other"])
    messages = st.fixed_dictionaries({"type": kinds}, optional={
        "rate": json_values | st.sampled_from([48000, 44100, 16000]), "t": json_values | st.floats(0, 1e6),
        "b_send": json_values, "k": json_values, "b_recv": json_values, "why": json_values,
        "message": json_values})
    buffers = st.lists(st.binary(max_size=64) | st.just(np.full(512, 0.2, np.float32).tobytes()), max_size=2)
    rec = Recorder(max_seconds=0.05, run_preflight=False)

    @hypothesis.settings(max_examples=300, derandomize=True, deadline=None)
    @hypothesis.given(st.lists(st.tuples(messages | json_values, buffers), min_size=1, max_size=12))
    def check(msgs):
        for content, bufs in msgs:
            rec._on_msg(rec, content, bufs)  # must not raise
            if rec.rate:
                assert rec._n <= round(rec.max_seconds * rec.rate)
                assert sum(p.size for p in rec._parts) <= round(rec.max_seconds * rec.rate)

    check()


def test_live_talk_queue_is_bounded_and_drops_with_a_notice():
    import threading

    from qvtools.mic import LIVE_QUEUE_MAX

    release = threading.Event()

    class StalledSession:  # the worker blocks in connect(), as behind a stalled service
        manual = True
        connected = False
        input_sample_rate = 16000

        def connect(self):
            release.wait(30)
            raise ConnectionError("stalled service gave up")

    talk = LiveTalk(StalledSession(), max_seconds=60.0)
    try:
        talk._on_msg(talk, {"type": "start", "rate": 48000}, [])
        block = np.full(480, 0.1, np.float32).tobytes()
        for _ in range(LIVE_QUEUE_MAX + 50):
            talk._on_msg(talk, {"type": "chunk", "t": 1.0}, [block])
        assert talk._q.qsize() <= LIVE_QUEUE_MAX and any("queue is full" in d for d in talk.dropped)
    finally:
        release.set()
        talk.close()
