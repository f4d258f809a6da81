"""Widgets are built with real data and inspected through their children and values."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
import soundfile as sf

widgets = pytest.importorskip("ipywidgets")

from qvtools import audio as qaudio  # noqa: E402
from qvtools.config import TARGET_MODELS  # noqa: E402
from qvtools.errors import InvalidAudio  # noqa: E402
from qvtools.widgets import (ComparisonGrid, RunProgress, audio_player, metric_badge,  # noqa: E402
                             preflight_view)

SR = 24000


def tone(freq=220.0, amp=0.1, seconds=0.5, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def decode_player(html_value: str) -> tuple[str, bytes]:
    m = re.search(r'<audio[^>]*\bcontrols\b[^>]*src="data:([^;]+);base64,([^"]+)"', html_value)
    assert m, html_value[:200]
    return m.group(1), base64.b64decode(m.group(2))


def test_audio_player_array_keeps_loudness():
    x = tone(amp=0.1)
    w = audio_player(x, SR)
    assert isinstance(w, widgets.HTML)
    mime, data = decode_player(w.value)
    assert mime == "audio/wav"
    y, sr = sf.read(io.BytesIO(data), dtype="float32")
    info = sf.info(io.BytesIO(data))
    assert sr == SR and info.subtype == "PCM_16"
    # not normalised: the peak stays at 0.1 (to one PCM16 step), not 1.0 as IPython.display.Audio would make it
    assert abs(np.max(np.abs(y)) - 0.1) < 2 / 32768
    np.testing.assert_allclose(y, x, atol=1 / 32768)


def test_audio_player_bytes_are_embedded_untouched():
    wav = qaudio.wav_bytes(tone(amp=0.05), SR)
    mime, data = decode_player(audio_player(wav).value)
    assert mime == "audio/wav" and data == wav


def test_audio_player_tuple_and_path(tmp_path):
    x = tone(amp=0.2)
    assert decode_player(audio_player((x, SR)).value)[0] == "audio/wav"
    p = tmp_path / "clip.wav"
    p.write_bytes(qaudio.wav_bytes(x, SR))
    assert decode_player(audio_player(p).value)[1] == p.read_bytes()


def test_audio_player_bad_input():
    with pytest.raises(ValueError, match="sample_rate"):
        audio_player(tone())
    with pytest.raises(InvalidAudio):
        audio_player(b"")
    with pytest.raises(TypeError, match="cannot play"):
        audio_player(3.5)


def test_metric_badge_formats_and_missing():
    assert "TTFA 412 ms" in metric_badge("ttfa_ms", 412.3)
    assert "WER 25%" in metric_badge("wer", 0.25)
    assert "n/a" in metric_badge("speaker_similarity", float("nan"))
    assert 'data-metric="speaker_similarity"' in metric_badge("speaker_similarity", 0.81)


@pytest.fixture
def grid_data(tmp_path):
    rows = []
    refs = {}
    for vi, voice in enumerate(["alice", "bob"]):
        refs[voice] = (tone(180 + 40 * vi, 0.3), SR)
        for prompt in ["p1", "p2"]:
            for mi, model in enumerate(TARGET_MODELS):
                rel = f"{voice}_{prompt}_{mi}.wav"
                (tmp_path / rel).write_bytes(qaudio.wav_bytes(tone(300 + 10 * mi), SR))
                rows.append({"voice_ref": voice, "prompt_id": prompt, "target_model": model, "repeat": 0,
                             "status": "completed", "audio_path": rel, "ttfa_ms": 300.0 + 100 * mi,
                             "speaker_similarity": 0.8 - 0.1 * mi, "wer": 0.0 if mi == 0 else 0.5})
    return rows, refs, tmp_path


def test_comparison_grid_layout(grid_data):
    rows, refs, audio_dir = grid_data
    g = ComparisonGrid(rows, refs, audio_dir)
    assert isinstance(g, widgets.VBox)
    assert g.models == list(TARGET_MODELS)
    n_cols = 2 + len(TARGET_MODELS)
    assert len(g.table.children) == n_cols * (1 + 4)  # header row + 2 voices x 2 prompts
    # every voice x prompt row: a reference player and one player per model
    assert g.players == 4 * (1 + len(TARGET_MODELS))
    cells = [w.value for w in g.table.children]
    assert "alice" in cells[n_cols] and "p1" in cells[n_cols]
    flash_cell = cells[n_cols + 3]
    assert "TTFA 400 ms" in flash_cell and "WER 50%" in flash_cell and "sim 0.70" in flash_cell
    assert set(g.metrics) == {"ttfa_ms", "speaker_similarity", "wer"}


def test_comparison_grid_badges_follow_the_rows_error_metric(grid_data):
    """issue 10 item 5: a Mandarin reply shows its CER, an English one its WER, never the other one."""
    rows, refs, audio_dir = grid_data
    rows = [dict(r, error_metric="cer" if r["voice_ref"] == "bob" else "wer", cer=0.25,
                 wer=float("nan") if r["voice_ref"] == "bob" else r["wer"]) for r in rows]
    g = ComparisonGrid(rows, refs, audio_dir)
    assert {"wer", "cer"} <= set(g.metrics)
    cells = [w.value for w in g.table.children]
    n_cols = 2 + len(TARGET_MODELS)
    alice, bob = cells[n_cols + 3], cells[n_cols * 3 + 3]  # flash replies of alice/p1 and bob/p1
    assert "WER 50%" in alice and "CER" not in alice
    assert "CER 25%" in bob and "WER" not in bob


def test_comparison_grid_from_dataframe_with_missing_cells(grid_data):
    pd = pytest.importorskip("pandas")
    rows, refs, audio_dir = grid_data
    rows = [r for r in rows if not (r["voice_ref"] == "bob" and r["target_model"] == TARGET_MODELS[1])]
    rows[0] = dict(rows[0], audio_path="missing.wav")
    # the results schema: voice_ref / target_model / prompt_id, string columns holding <NA>
    df = pd.DataFrame(rows)
    df["voice"] = "qwen-omni-vc-x-voice"
    df["error"] = pd.Series([None] * len(df), dtype="string")
    g = ComparisonGrid(df, {"alice": refs["alice"]}, audio_dir)
    assert g.models == list(TARGET_MODELS) and ("bob", "p2") in g.cells
    values = [w.value for w in g.table.children]
    assert sum("not run" in v for v in values) == 2
    assert sum("no audio" in v for v in values) == 2  # bob has no reference
    assert any("audio unavailable" in v for v in values)


def test_comparison_grid_prefers_completed_repeat(grid_data):
    rows, refs, audio_dir = grid_data
    failed = dict(rows[0], status="failed", repeat=0, audio_path=None, ttfa_ms=float("nan"))
    ok = dict(rows[0], repeat=1)
    g = ComparisonGrid([failed, ok] + rows[1:], refs, audio_dir)
    assert g.cells[("alice", "p1")][TARGET_MODELS[0]]["repeat"] == 1


def test_comparison_grid_rejects_bad_rows():
    with pytest.raises(TypeError, match="mapping or a dataclass"):
        ComparisonGrid([1, 2], {}, None)


def test_comparison_grid_takes_only_results_columns(grid_data):
    """No aliases (voice/model/prompt, reply_path...): a row without the results columns is a clear error."""
    from qvtools.errors import ConfigError

    rows, refs, audio_dir = grid_data
    old = [{"voice": r["voice_ref"], "prompt": r["prompt_id"], "model": r["target_model"],
            "reply_path": r["audio_path"]} for r in rows]
    with pytest.raises(ConfigError, match="row 0 has no voice_ref, prompt_id, target_model"):
        ComparisonGrid(old, refs, audio_dir)
    # the session voice id (`voice`) is never taken for the reference voice
    g = ComparisonGrid([dict(r, voice="qwen-omni-vc-x") for r in rows], refs, audio_dir)
    assert {v for v, _ in g.cells} == {"alice", "bob"}


class _Report:
    ok = True

    def _repr_html_(self):
        return "<table class='preflight'><tr><td>duration</td><td>12.0 s</td></tr></table>"


def test_preflight_view_uses_repr_html():
    w = preflight_view(_Report())
    assert isinstance(w, widgets.HTML) and "12.0 s" in w.value
    with pytest.raises(ValueError, match="no report"):
        preflight_view(None)


def test_run_progress_callback_forms():
    p = RunProgress(total=4, description="compare")
    assert p.bar.max == 4 and p.done == 0
    p(1, 4, "alice/p1")
    assert p.bar.value == 1 and "alice/p1" in p.label.value
    p({"done": 2, "total": 4, "status": "failed", "message": "bob/p1"})
    assert p.bar.value == 2 and "1 failed" in p.label.value
    p.update()  # no numbers: one more done
    assert p.done == 3
    p.finish()
    assert p.done == 4 and p.bar.bar_style == "warning"


# --------------------------------------------------------------------------- VoiceManager on the real local service


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from qvtools.config import Settings
    from qvtools.workspace import connect

    ws = connect(Settings(region="local", data_dir=tmp_path_factory.mktemp("vm")))
    try:
        yield ws
    finally:
        ws.close()


@pytest.fixture(scope="module")
def sample_voice_bytes():
    from qvtools.resources import samples_dir

    voices = sorted((samples_dir() / "voices").glob("*.wav"))
    if not voices:
        pytest.skip("no sample voices in qvtools/samples/voices (run data/make_samples.py)")
    return voices[0].name, voices[0].read_bytes()


@pytest.mark.slow
def test_voice_manager_create_and_delete_with_confirmation(workspace, sample_voice_bytes):
    import datetime

    from qvtools.widgets import VoiceManager

    vm = VoiceManager(workspace)
    assert vm.selector.options == () and "no voices yet" in vm.table.value
    assert vm.create_button.disabled
    name, data = sample_voice_bytes
    # an upload through the FileUpload widget runs the preflight and shows its report
    vm.upload.value = ({"name": name, "type": "audio/wav", "size": len(data), "content": memoryview(data),
                        "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert vm.report is not None and vm.report.ok
    assert "<table" in vm.preflight.value and not vm.create_button.disabled
    assert vm.name.value == name.rsplit(".", 1)[0]
    vm.target_model.value = TARGET_MODELS[1]
    voice = vm.create()
    assert voice is not None and voice.target_model == TARGET_MODELS[1]
    assert vm.selector.options == (voice.voice,) and voice.voice in vm.table.value
    # delete needs two steps: request (shows the confirmation) then confirm; cancel keeps the voice
    vm.selector.value = (voice.voice,)
    assert vm.request_delete() == [voice.voice]
    assert vm.confirm_box.layout.display == "flex" and voice.voice in vm.confirm_label.value
    vm.cancel_delete()
    assert vm.confirm_box.layout.display == "none"
    assert voice.voice in {v.voice for v in workspace.voices.list()}
    vm.selector.value = (voice.voice,)
    vm.request_delete()
    assert vm.confirm_delete() == [voice.voice]
    assert voice.voice not in {v.voice for v in workspace.voices.list()}
    assert vm.selector.options == () and "deleted" in vm.status.value


def test_voice_manager_rejects_bad_upload_and_empty_delete(workspace):
    from qvtools.widgets import VoiceManager

    vm = VoiceManager(workspace)
    assert vm.load_clip(b"this is not audio", "notes.txt") is None
    assert vm.create_button.disabled and "decode" in vm.preflight.value
    assert vm.request_delete() == [] and "select one or more" in vm.status.value
    assert vm.confirm_box.layout.display == "none"


def test_comparison_grid_chosen_badges(grid_data):
    rows, refs, audio_dir = grid_data
    rows = [dict(r, e2e_ms=900.0) for r in rows]
    g = ComparisonGrid(rows, refs, audio_dir, metrics=["e2e_ms"], models=[TARGET_MODELS[1]])
    values = [w.value for w in g.table.children]
    assert len(values) == 3 * 5 and g.players == 4 * 2
    assert sum("E2E 900 ms" in v for v in values) == 4 and not any("TTFA" in v for v in values)


def test_latency_badge_is_labelled_simulated_only_for_simulated_rows():
    from qvtools.widgets import metric_badge

    assert "(simulated)" in metric_badge("ttfa_ms", 812.0, simulated=True)
    assert "(simulated)" not in metric_badge("ttfa_ms", 812.0, simulated=False)
    # a non-latency metric is never labelled, a missing value stays "n/a"
    assert "(simulated)" not in metric_badge("speaker_similarity", 0.8, simulated=True)
    assert "(simulated)" in metric_badge("delivery_rtf", 2.5, simulated=True)  # issue 11: a timing figure too
    assert "n/a" in metric_badge("ttfa_ms", float("nan"), simulated=True)


def test_comparison_grid_badges_degraded_clones_and_orders_any_models(grid_data):
    pd = pytest.importorskip("pandas")
    rows, refs, audio_dir = grid_data
    other = {TARGET_MODELS[0]: "qwen9-omni-giga-realtime", TARGET_MODELS[1]: "qwen3-omni-flash-realtime"}
    rows = [dict(r, target_model=other[r["target_model"]]) for r in rows]
    for r in rows:  # alice's clone for the qwen3 model was made in fallback mode (§7.9)
        if r["voice_ref"] == "alice" and r["target_model"] == "qwen3-omni-flash-realtime":
            r.update(voice_fallback_mode=True, voice_fallback_reason="noisy <reference>")
    df = pd.DataFrame(rows)
    df["voice_fallback_mode"] = df["voice_fallback_mode"].astype("boolean")  # <NA> elsewhere, as in results
    g = ComparisonGrid(df, refs, audio_dir)
    assert g.models == ["qwen3-omni-flash-realtime", "qwen9-omni-giga-realtime"]  # catalog first, then others
    values = [w.value for w in g.table.children]
    flagged = [v for v in values if "DEGRADED clone" in v]
    assert len(flagged) == 2 and all('data-metric="voice_fallback_mode"' in v for v in flagged)
    assert all("noisy &lt;reference&gt;" in v for v in flagged)
    n_cols = 2 + len(g.models)
    assert "DEGRADED" in values[n_cols + 2] and "DEGRADED" not in values[n_cols + 3]
