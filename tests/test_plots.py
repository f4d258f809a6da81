"""qvtools.plots on the Agg backend: each function draws what it should and returns it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from qvtools import plots, results  # noqa: E402
from qvtools.errors import ConfigError  # noqa: E402
from qvtools.realtime.turn import TimedEvent, Turn  # noqa: E402

PLUS, FLASH = "qwen3.5-omni-plus-realtime", "qwen3.5-omni-flash-realtime"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def frame(rng):
    rows = [{"target_model": m, "ttfa_ms": float(v), "status": "completed", "simulated": True}
            for m, mu in ((PLUS, 900), (FLASH, 600)) for v in rng.normal(mu, 80, 25)]
    return results.to_frame(rows)


def test_latency_ecdf(frame):
    ax = plots.latency_ecdf(frame)
    assert isinstance(ax, plt.Axes)
    assert len(ax.lines) == 2
    assert "(simulated latency)" in ax.get_title()
    assert ax.get_xlabel() == "ttfa_ms"
    for line in ax.lines:  # an ECDF ends at 1
        assert line.get_ydata()[-1] == pytest.approx(1.0)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(PLUS in t and "n=25" in t for t in labels)


def test_latency_plots_without_simulated_rows_and_into_given_axes(frame):
    real = frame.assign(simulated=False)
    fig, (a1, a2) = plt.subplots(1, 2)
    assert plots.latency_ecdf(real, ax=a1) is a1
    assert plots.latency_box(real, ax=a2) is a2
    assert "simulated" not in a1.get_title() and "simulated" not in a2.get_title()
    assert [t.get_text().split("\n")[0] for t in a2.get_xticklabels()] == sorted([PLUS, FLASH])
    with pytest.raises(ConfigError, match="nope"):
        plots.latency_box(real, metric="nope")


def test_latency_box_simulated_title(frame):
    ax = plots.latency_box(frame, metric="ttfa_ms")
    assert "(simulated latency)" in ax.get_title() and ax.get_ylabel() == "ttfa_ms"


def test_only_timing_plots_say_simulated(frame):
    # issue 11: an audio / quality metric of a local run is not a simulated figure; delivery_rtf is
    df = frame.assign(speaker_similarity=0.8, wer=0.1, delivery_rtf=2.5)
    for metric in ("speaker_similarity", "wer"):
        assert "simulated" not in plots.latency_box(df, metric).get_title()
        assert "simulated" not in plots.latency_ecdf(df, metric).get_title()
    assert "(simulated latency)" in plots.latency_box(df, "delivery_rtf").get_title()
    assert plots.simulated_suffix(df) == plots.simulated_suffix(df, "ttfa_ms") == " (simulated latency)"
    assert plots.simulated_suffix(df, "wer") == ""


def _turn():
    t0 = 50.0
    events = [TimedEvent(t0 + 0.01, "session.created", {}), TimedEvent(t0 + 0.03, "session.updated", {}),
              TimedEvent(t0 + 1.9, "input_audio_buffer.speech_stopped", {}),
              TimedEvent(t0 + 2.0, "response.created", {})]
    events += [TimedEvent(t0 + 2.3 + 0.1 * k, "response.audio.delta", {"delta": 4800}) for k in range(5)]
    events.append(TimedEvent(t0 + 3.0, "response.done", {}))
    marks = {"connect": t0, "first_audio_sent": t0 + 0.05, "speech_end_sent": t0 + 1.2,
             "last_audio_sent": t0 + 2.0, "response_created": t0 + 2.0, "first_audio_delta": t0 + 2.3,
             "response_done": t0 + 3.0}
    return Turn(model=FLASH, voice="v", session_id="s", response_id="r", status="completed", error=None,
                events=events, marks=marks, audio=np.zeros(24000, np.float32), sample_rate=24000,
                audio_chunks=[(e.t, 4800) for e in events if e.type == "response.audio.delta"],
                user_transcript=None, assistant_transcript=None, usage=None)


def test_event_waterfall():
    ax = plots.event_waterfall(_turn())
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["session.created", "session.updated", "input_audio_buffer.speech_stopped",
                      "response.created", "response.audio.delta", "response.done"]
    deltas = ax.lines[labels.index("response.audio.delta")]
    assert np.allclose(deltas.get_xdata(), [2300, 2400, 2500, 2600, 2700])
    assert ax.get_xlabel() == "ms since connect"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "speech_end_sent" in legend
    ax2 = plots.event_waterfall(_turn(), origin="first_audio_sent", simulated=True)
    assert ax2.lines[0].get_xdata()[0] == pytest.approx(-40.0)
    assert "(simulated latency)" in ax2.get_title()


def test_event_waterfall_of_empty_turn():
    ax = plots.event_waterfall(Turn(model=FLASH))
    assert ax.get_xlabel() == "ms since first event"


def tone(f0, sr, dur):
    t = np.arange(int(sr * dur)) / sr
    return (0.3 * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))).astype(np.float32)


def test_waveform_spectrogram_with_and_without_reference():
    fig = plots.waveform_spectrogram(tone(150, 24000, 0.5), 24000, ref=tone(120, 16000, 0.7), ref_sr=16000)
    assert isinstance(fig, plt.Figure)
    main_axes = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    assert len(main_axes) == 4
    assert main_axes[0].get_title().startswith("Reply") and main_axes[1].get_title().startswith("Reference")
    single = plots.waveform_spectrogram(tone(150, 24000, 0.5), 24000)
    assert len([a for a in single.axes if a.get_label() != "<colorbar>"]) == 2
    with pytest.raises(ConfigError, match="ref_sr"):
        plots.waveform_spectrogram(tone(150, 24000, 0.5), 24000, ref=tone(150, 24000, 0.5))


def test_f0_contours():
    ax = plots.f0_contours({"reply": (tone(200, 16000, 0.6), 16000), "reference": (tone(100, 24000, 0.6), 24000)})
    contour = ax.lines[0].get_ydata()
    assert np.nanmedian(contour) == pytest.approx(200, rel=0.02)
    assert ax.get_ylabel() == "F0 (Hz)" and "median 200 Hz" in ax.get_legend().get_texts()[0].get_text()
    ax2 = plots.f0_contours([("only", tone(150, 16000, 0.4), 16000)])
    assert len(ax2.lines) == 2  # contour + median line


def test_similarity_heatmap():
    m = pd.DataFrame([[1.0, 0.42], [0.42, 1.0]], index=["a", "b"], columns=["a", "b"])
    ax = plots.similarity_heatmap(m)
    assert [t.get_text() for t in ax.texts] == ["1.00", "0.42", "0.42", "1.00"]
    assert ax.get_title() == "Speaker similarity"
    with pytest.raises(ConfigError, match="DataFrame"):
        plots.similarity_heatmap(np.eye(2))


def test_no_show_is_called(monkeypatch, frame):
    def boom(*a, **k):
        raise AssertionError("plots must not call plt.show()")

    monkeypatch.setattr(plt, "show", boom)
    plots.latency_ecdf(frame)
    plots.latency_box(frame)
    plots.event_waterfall(_turn())


def test_data_with_dollar_signs_is_drawn_literally_not_as_mathtext(rng):
    """Issue 23: a model named ``a$x^{2$`` made every figure a mathtext parse error at draw time."""
    odd = "evil$x^{2$-realtime"
    df = pd.DataFrame([{"target_model": m, "ttfa_ms": float(v), "simulated": False}
                       for m in (odd, FLASH) for v in rng.normal(500, 50, 10)])
    ax = plots.latency_box(df, "ttfa_ms")
    ax2 = plots.latency_ecdf(df, "ttfa_ms")
    heat = plots.similarity_heatmap(pd.DataFrame([[0.5]], index=[odd], columns=["$v$"]))
    for a in (ax, ax2, heat):
        a.figure.canvas.draw()  # raises ValueError on a mathtext parse error
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert any(r"evil\$x^{2\$-realtime" in t for t in labels)
    assert any(r"evil\$x" in t.get_text() for t in ax2.get_legend().get_texts())
    assert plots.plain_text("a$b") == r"a\$b"
