"""A client's ``conversation.item.create`` as plain code: the item checked and acknowledged (no socket).

:func:`client_item` turns the event's ``item`` into what ``conversation.item.created`` carries and, for a
user message, the turn's text; an unusable item raises :class:`ItemError` with the ``error`` event's
message and ``param`` (the session goes on). The connection (:mod:`qvtools.server.realtime`) sends.
§ numbers refer to ``../shared/reference/dashscope-protocol.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..realtime import events as ev

__all__ = ["ClientItem", "ClientEventError", "ItemError", "client_item"]


class ClientEventError(ValueError):
    """An unusable field of a client event: ``message`` and ``param`` of the ``error`` event (the session
    goes on)."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.message, self.param = message, param


class ItemError(ClientEventError):
    """An unusable ``conversation.item.create``: ``message`` and ``param`` of the ``error`` event."""


@dataclass(frozen=True)
class ClientItem:
    """An accepted item: its id, the item as ``conversation.item.created`` carries it (``out``) and, for a
    user message, its text (a user turn to answer), else None."""

    item_id: str
    out: dict
    text: str | None = None


def client_item(item, *, keep_client_id: bool = False) -> ClientItem:
    """The accepted form of a client ``item`` (a user ``message`` with ``input_text`` parts, or a
    ``function_call_output``); :class:`ItemError` otherwise. §7.13 (observed): the ack carries a
    server-made id, a client-chosen id is not kept unless ``keep_client_id``
    (``ServiceConfig.realtime_item_ids = "client"``)."""
    if not isinstance(item, dict):
        raise ItemError("'item' must be an object.", "item")
    itype = item.get("type")
    keep = keep_client_id and isinstance(item.get("id"), str) and item["id"]
    item_id = item["id"] if keep else ev.new_id("item")
    if itype == "message" and item.get("role", "user") == "user":
        content = item.get("content")
        texts = [c.get("text") for c in content if isinstance(c, dict) and c.get("type") == "input_text"] \
            if isinstance(content, list) else []
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ItemError("A user message needs 'input_text' content with a 'text' string.", "item.content")
        text = " ".join(texts)
        return ClientItem(item_id, ev.user_item(item_id, text=text), text)  # status "completed" (§7.13)
    if itype == "function_call_output":
        if not isinstance(item.get("call_id"), str) or not item["call_id"] or not isinstance(item.get("output"), str):
            raise ItemError("function_call_output needs 'call_id' and 'output' strings.", "item")
        return ClientItem(item_id, dict(item, id=item_id, object="realtime.item", status="completed"))
    raise ItemError(f"Unsupported item type {itype!r}.", "item.type")
