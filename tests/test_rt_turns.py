"""A realtime session's turn bookkeeping and turn decisions (qvtools/server/rt_turns.py), with dicts: no socket."""

from __future__ import annotations

import pytest

from qvtools.server.rt_turns import Gate, TurnState, barge_in, commit_responds, partial_step_bytes, replies_ahead, \
    response_gate, transcription_delta, transcription_events, transcription_failure

SEMANTIC = {"type": "semantic_vad", "create_response": True}
SERVER = {"type": "server_vad", "create_response": True, "interrupt_response": True}


def test_items_chain_through_previous_item_id():
    turns = TurnState()
    assert turns.link("item_a") is None  # the first item has no previous item
    assert turns.link("item_b") == "item_a"
    assert turns.last_item_id == "item_b"


def test_turn_indices_count_up_and_the_history_adds():
    turns = TurnState()
    assert [turns.next_turn(), turns.next_turn(), turns.next_turn()] == [0, 1, 2]
    turns.count_history(7)
    turns.count_history(5)
    assert turns.history_tokens == 12


def test_the_last_language_is_kept_only_when_asr_found_one():
    turns = TurnState()
    turns.heard("zh")
    turns.heard(None)
    turns.heard("")
    assert turns.last_language == "zh"
    turns.heard("ja")
    assert turns.last_language == "ja"


def test_a_manual_turn_opens_its_item_once_and_a_commit_of_it_is_early():
    turns = TurnState()
    turns.link("item_prev")
    opened = turns.begin_manual()
    assert opened is not None
    item, prev = opened
    assert item.startswith("item") and prev == "item_prev"
    assert turns.begin_manual() is None  # the turn is open: no second item
    assert turns.is_open(item) and not turns.is_open("item_other")
    assert turns.commit(item) == (True, "item_prev")  # §7.4: only committed, with the item's own previous id
    assert not turns.is_open(item)  # a partial finishing after the commit is not sent
    assert turns.last_item_id == item


def test_a_commit_of_another_item_links_it_and_closes_the_manual_turn():
    turns = TurnState()
    item, _ = turns.begin_manual()
    assert turns.commit("item_vad") == (False, item)
    assert turns.manual_item is None and turns.last_item_id == "item_vad"


def test_a_cleared_buffer_forgets_the_manual_turn_and_the_next_append_opens_a_new_one():
    turns = TurnState()
    first, _ = turns.begin_manual()
    turns.drop_manual()
    assert not turns.is_open(first)
    second, prev = turns.begin_manual()
    assert second != first and prev == first  # the dropped item stays in the chain (it was announced)


def test_partials_are_due_every_step_of_new_audio_and_restart_with_a_turn():
    turns = TurnState()
    turns.begin_manual()
    assert not turns.partial_due(3199, 3200)
    assert turns.partial_due(3200, 3200)
    assert not turns.partial_due(6000, 3200)  # counted from the last partial (3200), not from 0
    assert turns.partial_due(6400, 3200)
    turns.commit(turns.manual_item)
    turns.begin_manual()
    assert turns.partial_mark == 0 and turns.partial_due(3200, 3200)


def test_the_pending_user_turn_is_taken_once():
    turns = TurnState()
    turns.pending_user = "user turn"
    assert turns.take_pending() == "user turn"
    assert turns.take_pending() is None


@pytest.mark.parametrize("td, pending, voice_error, judged, gate", [
    (SEMANTIC, "turn", None, False, Gate.JUDGE),  # §7.23: judged on the transcript first
    (SEMANTIC, "turn", None, True, Gate.START),  # judged already
    (SEMANTIC, None, None, False, Gate.START),  # a response.create without a user turn
    (SEMANTIC, "turn", "bad voice", False, Gate.VOICE_ERROR),  # the voice error wins over the judgement
    (SERVER, "turn", None, False, Gate.START),
    (SERVER, "turn", "bad voice", False, Gate.VOICE_ERROR),  # §7.3: a lone error at the trigger
    (None, None, None, False, Gate.START),  # manual mode
    (None, None, "bad voice", False, Gate.VOICE_ERROR),
])
def test_the_response_gate(td, pending, voice_error, judged, gate):
    assert response_gate(td, pending_user=pending, voice_error=voice_error, judged=judged) is gate


def test_only_a_server_vad_commit_with_create_response_starts_a_response():
    assert commit_responds(SERVER, auto=True)
    assert commit_responds({"type": "server_vad"}, auto=True)  # create_response defaults to true (§4.2)
    assert not commit_responds(dict(SERVER, create_response=False), auto=True)
    assert not commit_responds(SERVER, auto=False)  # a client commit waits for response.create
    assert not commit_responds(None, auto=False)


def test_barge_in_follows_interrupt_response():
    assert barge_in(SERVER) and barge_in({"type": "server_vad"}) and barge_in(None)
    assert not barge_in(dict(SERVER, interrupt_response=False))


def test_the_transcription_delta_shapes():
    stash = transcription_delta("item_1", "hello there", "zh", "stash")  # §7.14 observed
    assert stash["type"] == "conversation.item.input_audio_transcription.delta"
    assert (stash["item_id"], stash["text"], stash["stash"], stash["language"]) == ("item_1", "", "hello there", "zh")
    text = transcription_delta("item_1", "hello there", None, "text")  # the earlier guess
    assert (text["text"], text["stash"], text["language"]) == ("hello there", "", "en")  # en when unknown


def test_a_heard_turn_gives_delta_then_completed_only_when_the_session_transcribes():
    on = {"input_audio_transcription": {"model": "gummy-realtime-v1"}}
    events = transcription_events("item_1", "ni hao", "zh", session=on, shape="stash")
    assert [e["type"] for e in events] == ["conversation.item.input_audio_transcription.delta",
                                           "conversation.item.input_audio_transcription.completed"]
    assert events[0]["stash"] == "ni hao" and events[1]["transcript"] == "ni hao"
    assert transcription_events("item_1", "ni hao", "zh", session={"input_audio_transcription": None},
                                shape="stash") == []
    failed = transcription_failure("item_1", "boom", session=on)
    assert [e["type"] for e in failed] == ["conversation.item.input_audio_transcription.failed"]
    assert transcription_failure("item_1", "boom", session={}) == []  # §4.5 d: never an error event


def test_a_reply_is_made_ahead_only_for_a_spoken_vad_response_with_a_usable_voice():
    spoken = {"turn_detection": SERVER, "modalities": ["text", "audio"]}
    assert replies_ahead(spoken, None)
    assert not replies_ahead(spoken, "bad voice")
    assert not replies_ahead(dict(spoken, modalities=["text"]), None)
    assert not replies_ahead(dict(spoken, turn_detection=dict(SERVER, create_response=False)), None)
    assert replies_ahead(dict(spoken, turn_detection=None), None)  # no VAD: no speculation is started anyway


def test_partials_wait_while_one_runs_and_are_off_without_transcription():
    on = {"input_audio_transcription": {"model": "gummy-realtime-v1"}}
    assert partial_step_bytes(on, 1.0, 16000) == 32000  # PCM16: 2 bytes a sample
    assert partial_step_bytes(on, 0, 16000) == 0  # realtime_partial_transcription_s = 0: deltas at commit only
    assert partial_step_bytes({"input_audio_transcription": None}, 1.0, 16000) == 0
    turns = TurnState()
    turns.begin_manual()
    assert not turns.partial_due(40000, 32000, busy=True)  # one at a time: the mark stays
    assert turns.partial_mark == 0
    assert turns.partial_due(40000, 32000)
    assert not turns.partial_due(90000, 0)  # partials off
