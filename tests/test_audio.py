"""qvtools.audio: loading, probing, resampling, PCM16, WAV bytes and data URLs."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf

from qvtools import audio
from qvtools.errors import InvalidAudio


def tone(freq=440.0, seconds=1.0, sr=24000, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(x, sr, fmt="WAV", subtype="PCM_16"):
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def test_load_path_bytes_file_and_tuple_agree(tmp_path):
    x = tone()
    data = encode(x, 24000)
    path = tmp_path / "t.wav"
    path.write_bytes(data)
    for src in (path, str(path), data, bytearray(data), memoryview(data), io.BytesIO(data)):
        y, sr = audio.load(src)
        assert sr == 24000 and y.dtype == np.float32 and y.shape == x.shape
        np.testing.assert_allclose(y, x, atol=1 / 32768 + 1e-6)
    y, sr = audio.load((x, 24000))
    np.testing.assert_array_equal(y, x)


def test_file_object_position_restored():
    data = encode(tone(), 24000)
    f = io.BytesIO(data)
    audio.probe(f)
    assert f.tell() == 0


def test_probe_containers():
    x = tone(seconds=2.0, sr=48000)
    info = audio.probe(encode(x, 48000))
    assert (info.container, info.codec, info.sample_rate, info.channels) == ("wav", "PCM_16", 48000, 1)
    assert info.duration_s == pytest.approx(2.0, abs=1e-3) and info.mime == "audio/wav"
    assert audio.probe(encode(x, 48000, "FLAC", "PCM_16")).container == "flac"
    assert audio.probe(encode(x, 48000, "FLAC", "PCM_16")).mime is None
    assert audio.probe(encode(x, 48000, "WAV", "FLOAT")).codec == "FLOAT"
    mp3 = audio.probe(encode(x, 48000, "MP3", "MPEG_LAYER_III"))
    assert mp3.container == "mp3" and mp3.mime == "audio/mpeg"
    stereo = audio.probe(encode(np.stack([x, x], 1), 48000))
    assert stereo.channels == 2
    arr = audio.probe((np.zeros((1000, 2), np.float32), 8000))
    assert (arr.container, arr.channels, arr.size_bytes) == ("array", 2, None)
    assert arr.duration_s == pytest.approx(0.125)


def test_m4a_decodes_through_pyav():
    av = pytest.importorskip("av")
    sr = 24000
    x = tone(seconds=1.0, sr=sr)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        st = out.add_stream("aac", rate=sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = sr
        for pkt in list(st.encode(frame)) + list(st.encode(None)):
            out.mux(pkt)
    info = audio.probe(buf.getvalue())
    assert info.container == "m4a" and info.codec == "aac" and info.mime == "audio/mp4"
    assert info.video_streams == 0 and abs(info.frames - sr) < 3000
    assert audio.sniff_container(buf.getvalue()) == "m4a"
    y, rate = audio.load(buf.getvalue())
    assert rate == sr and abs(len(y) - sr) < 3000


def test_sniff_container_reads_the_content_not_the_label():
    """The local service matches the sniffed container to the data-URL label (SEED §2.4, issue 13)."""
    x = tone(seconds=0.5, sr=24000)
    assert audio.sniff_container(encode(x, 24000)) == "wav"
    assert audio.sniff_container(encode(x, 24000, "FLAC", "PCM_16")) == "flac"
    assert audio.sniff_container(encode(x, 24000, "OGG", "VORBIS")) == "ogg"
    assert audio.sniff_container(encode(x, 24000, "MP3", "MPEG_LAYER_III")) == "mp3"
    assert audio.sniff_container(b"\xff\xfb\x90\x00" + bytes(100)) == "mp3"  # a bare MPEG-1 layer III frame
    assert audio.sniff_container(b"\xff\xf1\x50\x80" + bytes(100)) == "aac"  # ADTS
    assert audio.sniff_container(encode(x, 24000, "AIFF", "PCM_16")) == "aiff"
    assert audio.sniff_container(b"RIFF\x00\x00\x00\x00AVI LIST") is None
    assert audio.sniff_container(b"") is None and audio.sniff_container(b"\x00" * 64) is None
    assert set(audio.MIME_CONTAINERS) == set(audio.ALLOWED_MIME)


def test_probe_frames_of_a_wav():
    info = audio.probe(encode(np.zeros((4800, 2), np.float32), 48000))
    assert (info.frames, info.channels, info.video_streams) == (4800, 2, 0)


def test_mono_and_resample():
    x = tone(440, 1.0, 48000)
    st = np.stack([x, 0 * x], axis=1)
    np.testing.assert_allclose(audio.to_mono(st), x / 2, atol=1e-7)
    assert audio.to_mono(x) is not None and audio.to_mono(x).shape == x.shape
    y = audio.resample(x, 48000, 16000)
    assert len(y) == 16000 and y.dtype == np.float32
    # the tone keeps its pitch (spectral peak within one bin)
    spec = np.abs(np.fft.rfft(y))
    assert np.argmax(spec) == pytest.approx(440, abs=1)
    y, sr = audio.load((st, 48000), mono=True, sample_rate=24000)
    assert sr == 24000 and y.ndim == 1 and len(y) == 24000
    assert audio.resample(x, 16000, 16000) is not None


def test_pcm16_roundtrip_and_clipping():
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0], dtype=np.float32)
    data = audio.to_pcm16(x)
    assert len(data) == 2 * len(x)
    y = audio.from_pcm16(data)
    np.testing.assert_allclose(y[:5], x[:5], atol=1 / 32767)
    assert y[5] == pytest.approx(32767 / 32768) and y[6] == pytest.approx(-32767 / 32768)
    np.testing.assert_array_equal(audio.from_pcm16(np.frombuffer(data, "<i2")), y)
    with pytest.raises(InvalidAudio):
        audio.from_pcm16(b"\x00\x01\x02")


def test_int16_tuple_is_scaled():
    x, sr = audio.load((np.array([0, 16384, -32768], dtype=np.int16), 16000))
    np.testing.assert_allclose(x, [0.0, 0.5, -1.0])


def test_wav_bytes_is_16bit_wav():
    data = audio.wav_bytes(tone(), 24000)
    info = sf.info(io.BytesIO(data))
    assert (info.format, info.subtype, info.samplerate) == ("WAV", "PCM_16", 24000)
    assert len(data) == 44 + 2 * 24000


def test_data_url_roundtrip():
    data = audio.wav_bytes(tone(seconds=0.1), 24000)
    url = audio.data_url(data, "audio/wav")
    assert url.startswith("data:audio/wav;base64,")
    assert len(url) == len("data:audio/wav;base64,") + len(base64.b64encode(data))
    assert audio.parse_data_url(url) == ("audio/wav", data)
    with pytest.raises(InvalidAudio):
        audio.data_url(data, "audio/flac")
    for bad in ("nope", "data:audio/wav,abc", "data:audio/wav;base64,@@@", 42):
        with pytest.raises(ValueError):
            audio.parse_data_url(bad)


@pytest.mark.parametrize("src,exc", [
    (b"", InvalidAudio),
    (b"garbage" * 20, InvalidAudio),
    ("/no/such/file.wav", InvalidAudio),
    (12345, TypeError),
    ((np.zeros((2, 2, 2)), 16000), InvalidAudio),
    ((np.zeros(10), 0), InvalidAudio),
    ((np.zeros(10),), TypeError),
])
def test_bad_sources(src, exc):
    with pytest.raises(exc):
        audio.load(src)


def test_frame_power_is_the_one_frame_energy(rng=None):
    """qvtools.audio.frame_power / frame_energy_db reproduce, bit for bit, the three copies they replace
    (preflight VAD frames, metrics 20 ms / 10 ms frames, server.voice centred 25 ms frames; issue 12)."""
    from qvtools.audio import frame_energy_db, frame_power

    rng = np.random.default_rng(1)
    for n in (100, 511, 5000, 112123):
        x = (rng.standard_normal(n) * 0.1).astype(np.float32)
        # preflight: non-overlapping 512-sample frames, zero-padded to n_frames
        nf = n // 512 + 2
        y = np.pad(x, (0, nf * 512 - n)).reshape(nf, 512).astype(np.float64)
        assert np.array_equal(frame_energy_db(x, 512, n_frames=nf), 10 * np.log10(np.mean(y * y, axis=1) + 1e-12))
        # metrics: sliding 20 ms frames, 10 ms hop, no padding; shorter than a frame -> its own power
        a = x.astype(np.float64)
        want = (np.lib.stride_tricks.sliding_window_view(a * a, 480)[::240].mean(axis=1) if n >= 480
                else np.array([np.mean(a * a)]))
        assert np.array_equal(frame_power(a, 480, 240), want)
        # server.voice: 25 ms windows centred on a fractional hop, eps 1e-10
        sr, hop, win = 16000, 80.0, 400
        m = int(n / hop) + 1
        pad = np.pad(a, (win // 2, win))
        idx = (np.arange(m) * hop).astype(int)[:, None] + np.arange(win)[None, :]
        fr = pad[np.minimum(idx, len(pad) - 1)]
        starts = (np.arange(m) * hop).astype(int) - win // 2
        assert np.array_equal(frame_energy_db(a, win, starts=starts, eps=1e-10),
                              10 * np.log10(np.mean(fr ** 2, axis=1) + 1e-10))
    assert frame_power(np.zeros(0), 512).size == 0
    assert frame_energy_db(np.zeros(1024), 512)[0] == pytest.approx(-120.0)
