"""A client's conversation.item.create checked and acknowledged (qvtools/server/rt_items.py), with literal
JSON: no socket."""

from __future__ import annotations

import pytest

from qvtools.server.rt_items import ItemError, client_item


def test_a_user_message_is_acknowledged_completed_with_a_server_id_and_its_text_is_the_turn():
    item = client_item({"type": "message", "role": "user", "id": "mine", "content": [
        {"type": "input_text", "text": "Hello"}, {"type": "input_audio"}, {"type": "input_text", "text": "there"}]})
    assert item.text == "Hello there"
    assert item.item_id != "mine" and item.item_id.startswith("item")  # §7.13: the server's id
    assert item.out == {"id": item.item_id, "object": "realtime.item", "type": "message", "status": "completed",
                        "role": "user", "content": [{"type": "input_text", "text": "Hello there"}]}


def test_a_client_id_is_kept_only_when_configured():
    item = client_item({"type": "message", "id": "mine", "content": [{"type": "input_text", "text": "Hi"}]},
                       keep_client_id=True)
    assert item.item_id == "mine" and item.out["id"] == "mine"
    assert client_item({"type": "message", "id": "", "content": [{"type": "input_text", "text": "Hi"}]},
                       keep_client_id=True).item_id != ""  # an empty id is not a client id


def test_a_function_call_output_is_acknowledged_and_is_no_user_turn():
    item = client_item({"type": "function_call_output", "call_id": "call_1", "output": "{\"ok\": true}"})
    assert item.text is None
    assert item.out["type"] == "function_call_output" and item.out["call_id"] == "call_1"
    assert item.out["status"] == "completed" and item.out["object"] == "realtime.item"


@pytest.mark.parametrize("obj, param, message", [
    (["not", "an", "object"], "item", "'item' must be an object."),
    ({"type": "message", "content": []}, "item.content", "needs 'input_text'"),
    ({"type": "message", "content": [{"type": "input_text", "text": 5}]}, "item.content", "needs 'input_text'"),
    ({"type": "message", "content": "Hello"}, "item.content", "needs 'input_text'"),
    ({"type": "function_call_output", "call_id": "", "output": "x"}, "item", "'call_id' and 'output'"),
    ({"type": "function_call_output", "call_id": "c", "output": 1}, "item", "'call_id' and 'output'"),
    ({"type": "message", "role": "assistant", "content": [{"type": "input_text", "text": "x"}]}, "item.type",
     "Unsupported item type 'message'"),
    ({"type": "function_call"}, "item.type", "Unsupported item type 'function_call'"),
])
def test_an_unusable_item_names_the_param_and_the_problem(obj, param, message):
    with pytest.raises(ItemError, match=message.replace("(", r"\(")) as info:
        client_item(obj)
    assert info.value.param == param and str(info.value) == info.value.message
