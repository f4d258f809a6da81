"""The muted-microphone keep-alive (issue 18; §7.22: 1 s of zero PCM every 30 s, as Qwen's own client) on
a clock the test drives, against the real local service."""

from __future__ import annotations

import pytest

from qvtools.realtime.keepalive import KEEPALIVE_INTERVAL_S, KEEPALIVE_SILENCE_S, KeepAlive
from qvtools.realtime.session import RealtimeSession

from realtime_support import FLASH, settings_for, shared_service, utterance


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_the_rule_is_qwens_own():
    assert (KEEPALIVE_INTERVAL_S, KEEPALIVE_SILENCE_S) == (30.0, 1.0)
    with pytest.raises(ValueError):
        KeepAlive(object(), interval_s=0)


@pytest.mark.parametrize("manual", [False, True], ids=["server_vad", "push_to_talk"])
def test_keepalive_sends_silence_only_when_due_and_the_session_stays_usable(manual):
    clock = Clock()
    rt = RealtimeSession(settings_for(shared_service()), FLASH, voice="Ethan",
                         turn_detection=None if manual else "server_vad")
    sent = []
    with rt:
        real_send = rt._send
        rt._send = lambda event: (sent.append(event), real_send(event))[1]
        ka = KeepAlive(rt, clock=clock)
        assert not ka.tick() and not sent  # not due yet
        clock.t += 29.9
        assert not ka.tick()
        clock.t += 0.2
        assert ka.tick() and ka.sent == 1
        appends = [e for e in sent if e["type"] == "input_audio_buffer.append"]
        assert len(appends) == 1
        import base64

        pcm = base64.b64decode(appends[0]["audio"])
        assert len(pcm) == 2 * rt.input_sample_rate and not any(pcm)  # 1 s of zeros at the input rate
        assert [e["type"] for e in sent][1:] == (["input_audio_buffer.clear"] if manual else [])
        ka.touch()
        clock.t += 10
        assert not ka.tick()  # audio of the caller's own resets the wait
        turn = rt.send_audio(utterance(), realtime=False)
    assert turn.status == "completed", turn.error
    assert turn.user_transcript and "weather" in turn.user_transcript.lower()


def test_no_keepalive_on_a_closed_session():
    clock = Clock()
    rt = RealtimeSession(settings_for(shared_service()), FLASH)
    ka = KeepAlive(rt, clock=clock)
    clock.t += 60
    assert not ka.tick()


def test_live_talk_keeps_a_muted_session_alive():
    """issue 18 (§7.22): with ``keepalive=True`` a muted LiveTalk sends 1 s of zero PCM once 30 s passed."""
    import threading

    pytest.importorskip("anywidget")
    from qvtools.mic import LiveTalk

    from realtime_support import FLASH, settings_for, shared_service

    from qvtools.realtime.session import RealtimeSession

    now = [1000.0]
    rt = RealtimeSession(settings_for(shared_service()), FLASH, voice="Ethan")
    rt.connect()
    talk = LiveTalk(rt, keepalive=True)
    try:
        ka = talk.keepalive
        ka._clock = lambda: now[0]
        ka.touch()
        sent = threading.Event()
        real_tick = ka.tick
        ka.tick = lambda: (real_tick() and sent.set()) or sent.is_set()
        assert not sent.wait(0.3) and ka.sent == 0  # muted, but not due yet
        now[0] += 30.0
        assert sent.wait(10) and ka.sent == 1
        assert rt.connected
        other = LiveTalk(rt)
        assert other.keepalive is None  # off by default
        other.close()
    finally:
        talk.close()
        rt.close()
