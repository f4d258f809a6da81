"""One realtime response's events (qvtools/server/rt_response.py), built without a socket or a service."""

from __future__ import annotations

import base64

from qvtools.server.rt_response import ResponseStream, plan_sentence, tokens


def _types(events):
    return [e["type"] for e in events]


def test_audio_response_events_come_in_the_documented_order():
    # §4.5: item added, item created, part added, deltas, then transcript/audio/part/item done
    r = ResponseStream("resp_1", "item_1", ["text", "audio"], None, None)
    opening = r.opening("item_0")
    assert _types(opening) == ["response.output_item.added", "conversation.item.created",
                               "response.content_part.added"]
    assert opening[1]["previous_item_id"] == "item_0" and opening[2]["part"]["type"] == "audio"
    assert r.transcript_delta("Hello ")["delta"] == "Hello "
    delta = r.audio_delta(b"\x01\x00" * 240)
    assert delta["type"] == "response.audio.delta" and base64.b64decode(delta["delta"]) == b"\x01\x00" * 240
    r.transcript_delta("there.")
    assert r.audio_samples == 240
    dones = r.dones("completed")
    assert _types(dones) == ["response.audio_transcript.done", "response.audio.done", "response.content_part.done",
                             "response.output_item.done"]
    assert dones[0]["transcript"] == "Hello there."
    assert dones[-1]["item"]["content"] == [{"type": "audio", "transcript": "Hello there."}]
    assert r.stage == "done" and r.dones("completed") == []  # never twice


def test_text_response_and_a_cancel_before_anything_was_sent():
    r = ResponseStream("resp_2", "item_2", ["text"], None, None)
    assert r.dones("incomplete") == []  # cancelled before response.created: no pending *.done
    t = ResponseStream("resp_3", "item_3", ["text"], None, None)
    assert t.opening(None)[2]["part"]["type"] == "text"
    for tok in tokens("Two words."):
        assert t.text_delta(tok)["type"] == "response.text.delta"
    dones = t.dones("incomplete")
    assert _types(dones) == ["response.text.done", "response.content_part.done", "response.output_item.done"]
    assert dones[0]["text"] == "Two words." and dones[-1]["item"]["status"] == "incomplete"
    assert t.final_item("completed")["content"] == [{"type": "text", "text": "Two words."}]


def test_plan_sentence_spreads_the_tokens_over_fixed_size_chunks_and_carries_the_rest():
    toks = tokens("one two three four five")
    assert toks == ["one ", "two ", "three ", "four ", "five"]
    pcm = bytes(10 * 4 + 6)  # four 10-byte chunks and 6 bytes over
    head, deltas, carry, sent = plan_sentence(b"", pcm, 10, toks, 0, 3)  # a 3-word sentence
    assert head is None and len(carry) == 6 and sent == 3
    assert [len(c) for c, _, _ in deltas] == [10] * 4
    assert "".join(t for _, t, _ in deltas) == "one two three "  # the sentence's words, in order, once
    assert [s for _, _, s in deltas] == [1, 2, 3, 3]
    # the next sentence starts with the carried bytes
    head, deltas, carry, sent = plan_sentence(carry, bytes(4), 10, toks, sent, 2)
    assert head is None and [len(c) for c, _, _ in deltas] == [10] and carry == b""
    assert deltas[0][1] == "four five" and sent == 5


def test_plan_sentence_with_too_little_audio_sends_its_text_at_once():
    toks = tokens("Hi there. Bye.")
    head, deltas, carry, sent = plan_sentence(b"", bytes(4), 10, toks, 0, 2)
    assert (head, deltas, len(carry), sent) == ("Hi there. ", [], 4, 2)
