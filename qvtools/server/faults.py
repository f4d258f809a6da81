"""Fault injection for the local service: throttled or failing enrollment, slow, dropped, stalled or
garbled realtime streams. Off by default; for testing clients and benchmarks, never part of the cloud path.

A :class:`FaultPlan` says what goes wrong. Plans are installed per API key, for every key (``"*"``) or
for one open realtime session (its ``sess_...`` id):

- in the configuration: ``ServiceConfig(faults={"*": FaultPlan(...), "sk-x": {...}})``;
- at run time: ``LocalService.set_faults(target, plan)`` / ``clear_faults()``;
- over HTTP, only when ``ServiceConfig.fault_control`` is True: ``POST /qvtools/faults``
  ``{"target": "*" | "key" | "sess_...", "plan": {...} | null}`` (``"key"`` = the caller's own key;
  ``GET`` shows the plans the caller can see, never a key);
- by the client, only when ``ServiceConfig.allow_client_faults`` is True: a ``qvtools`` extension in
  ``session.update`` (``{"session": {"qvtools": {"faults": {...}}}}``) for that session.

Precedence: session plan > the caller's key plan > ``"*"``. A realtime session takes the key/``"*"`` plan
when it opens (later key changes apply to new sessions); a session plan applies at once.

Independent of any plan, a client that stops reading is never buffered for without bound: every realtime
send is bounded by ``ServiceConfig.realtime_send_timeout_s``; past it the connection is aborted and the
reason ("slow reader") logged -- see :meth:`SessionFaults.slow_reader`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

from aiohttp import web

from ..realtime import endings
from ..realtime import events as ev
from .http import ServiceError, authenticate, error_response, read_json

__all__ = ["FaultPlan", "FaultInjector", "SessionFaults", "FAULTS_PATH", "ENROLL_STATUSES", "MALFORMED_FRAME",
           "UNKNOWN_EVENT_TYPE", "client_faults", "FAULTS", "SESSION_ENDINGS"]

log = logging.getLogger(__name__)

#: The control endpoint (only routed when ``ServiceConfig.fault_control`` is True). Outside ``/api`` so it
#: can never be mistaken for a DashScope path.
FAULTS_PATH = "/qvtools/faults"

#: Injectable enrollment statuses -> (code, message). 429/500/503 are the documented DashScope answers
#: (protocol reference §3 table); 502/504 are what a proxy in front of it answers (not DashScope codes).
ENROLL_STATUSES = {
    429: ("Throttling.RateQuota", "Requests rate limit exceeded, try again later."),
    500: ("InternalError", "An internal error has occured, try again later or contact service support."),
    502: ("BadGateway", "Bad gateway (injected fault)."),
    503: ("ModelUnavailable", "Model is unavailable, try again later."),
    504: ("GatewayTimeout", "Gateway timeout (injected fault)."),
}
_ACTIONS = ("create", "list", "delete")
#: Injectable ends of a realtime session (§7.24, :mod:`qvtools.realtime.endings`):
#: ``model_error``: ``error`` COMMON_ERROR then close 1011, in place of the turn's ``response.created``;
#: ``param_error``: ``error`` InvalidParameter then close 1007 with the same text as the reason, likewise;
#: ``bare_close``: right after the turn's ``speech_stopped`` (manual mode: ``committed``), a close frame
#: without a status code (the client sees 1005), no ``error`` event.
SESSION_ENDINGS = ("model_error", "param_error", "bare_close")
SessionEnding = Literal["model_error", "param_error", "bare_close"]
_DROP_WHEN = ("before", "after")
#: The frame sent by ``malformed_after_audio_deltas``: a truncated JSON object (not parseable).
MALFORMED_FRAME = '{"type": "response.audio.delta", "delta": "AAAA'
#: The event type sent by ``unknown_after_audio_deltas`` (well-formed JSON, a type no client knows).
UNKNOWN_EVENT_TYPE = "qvtools.fault.unknown_event"


def _opt_int(name, value, lo=0):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"FaultPlan.{name} must be an integer >= {lo} or None, got {value!r}")
    return value


@dataclass(frozen=True)
class FaultPlan:
    """What goes wrong, and for which requests. Every field defaults to "no fault".

    Selection: ``times`` faults only the next N matching enrollment requests and, separately, the next N
    realtime sessions (None: every one); ``probability`` faults each match with that chance, drawn from
    ``random.Random(seed)`` (reproducible).

    Enrollment (``POST`` customization, only for actions in ``enroll_actions``):
    ``enroll_status`` answers 429/500/502/503/504 with the documented error body (and ``Retry-After:
    retry_after_s`` when set) without doing the work; ``enroll_drop="before"`` closes the connection
    without doing the work, ``"after"`` does the work (a create makes its voice) then closes without
    answering; ``added_latency_ms`` delays the answer (after the work).

    Realtime (counted per response, ``N`` = ``response.audio.delta`` events sent so far, 0 = before the
    first): ``added_latency_ms`` delays ``response.created`` and so everything after it;
    ``drop_after_audio_deltas`` aborts the TCP connection (no close frame); ``stall_after_audio_deltas``
    stops sending anything for the rest of the session while the socket stays open;
    ``malformed_after_audio_deltas`` sends one non-JSON frame (:data:`MALFORMED_FRAME`);
    ``unknown_after_audio_deltas`` sends one event of type :data:`UNKNOWN_EVENT_TYPE`.

    Session endings (§7.24; :data:`SESSION_ENDINGS`): ``end_session`` ends the session on its
    ``end_on_turn``-th turn (1 = the first; counted per session); ``end_reason`` replaces the 1007 text
    (default: the §7.24 b voice text for the session's voice). Combine with ``times=1`` to fault only the
    first session, so a retry on a new session succeeds.
    """

    times: int | None = None
    probability: float = 1.0
    seed: int | None = None
    enroll_actions: tuple = _ACTIONS
    enroll_status: int | None = None
    retry_after_s: float | None = None
    enroll_drop: str | None = None
    added_latency_ms: float = 0.0
    drop_after_audio_deltas: int | None = None
    stall_after_audio_deltas: int | None = None
    malformed_after_audio_deltas: int | None = None
    unknown_after_audio_deltas: int | None = None
    # -- session endings (§7.24), so they can be rehearsed offline
    end_session: SessionEnding | None = None
    end_on_turn: int = 1
    end_reason: str | None = None

    def __post_init__(self):
        _opt_int("times", self.times)
        if isinstance(self.probability, bool) or not isinstance(self.probability, (int, float)) \
                or not 0.0 <= float(self.probability) <= 1.0:
            raise ValueError(f"FaultPlan.probability must be a number in [0, 1], got {self.probability!r}")
        _opt_int("seed", self.seed)
        actions = (self.enroll_actions,) if isinstance(self.enroll_actions, str) else self.enroll_actions
        if not isinstance(actions, (list, tuple)) or not set(actions) <= set(_ACTIONS):
            raise ValueError(f"FaultPlan.enroll_actions must be a subset of {_ACTIONS}, got {self.enroll_actions!r}")
        object.__setattr__(self, "enroll_actions", tuple(actions))
        if self.enroll_status is not None and self.enroll_status not in ENROLL_STATUSES:
            raise ValueError(f"FaultPlan.enroll_status must be one of {sorted(ENROLL_STATUSES)}, "
                             f"got {self.enroll_status!r}")
        if self.retry_after_s is not None and (isinstance(self.retry_after_s, bool) or
                                               not isinstance(self.retry_after_s, (int, float))
                                               or self.retry_after_s < 0):
            raise ValueError(f"FaultPlan.retry_after_s must be a number >= 0, got {self.retry_after_s!r}")
        if self.enroll_drop is not None and self.enroll_drop not in _DROP_WHEN:
            raise ValueError(f"FaultPlan.enroll_drop must be 'before', 'after' or None, got {self.enroll_drop!r}")
        if isinstance(self.added_latency_ms, bool) or not isinstance(self.added_latency_ms, (int, float)) \
                or not 0 <= self.added_latency_ms <= 600_000:
            raise ValueError(f"FaultPlan.added_latency_ms must be a number in [0, 600000], "
                             f"got {self.added_latency_ms!r}")
        for name in ("drop_after_audio_deltas", "stall_after_audio_deltas", "malformed_after_audio_deltas",
                     "unknown_after_audio_deltas"):
            _opt_int(name, getattr(self, name))
        if self.end_session is not None and self.end_session not in SESSION_ENDINGS:
            raise ValueError(f"FaultPlan.end_session must be one of {SESSION_ENDINGS} or None, "
                             f"got {self.end_session!r}")
        _opt_int("end_on_turn", self.end_on_turn, lo=1)
        if self.end_reason is not None and (not isinstance(self.end_reason, str) or not self.end_reason.strip()
                                            or len(self.end_reason.encode("utf-8")) > 123):
            raise ValueError("FaultPlan.end_reason must be a non-empty text of at most 123 bytes (RFC 6455 "
                             f"§5.5), got {self.end_reason!r}")

    @classmethod
    def from_dict(cls, data) -> "FaultPlan":
        """A plan from JSON-like data; unknown fields or bad values raise :class:`ValueError`."""
        if isinstance(data, FaultPlan):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"a fault plan must be an object of FaultPlan fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FaultPlan fields {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["enroll_actions"] = list(self.enroll_actions)
        return out

    @property
    def enrollment_faults(self) -> bool:
        return self.enroll_status is not None or self.enroll_drop is not None or self.added_latency_ms > 0

    @property
    def realtime_faults(self) -> bool:
        return self.added_latency_ms > 0 or any(getattr(self, n) is not None for n in (
            "drop_after_audio_deltas", "stall_after_audio_deltas", "malformed_after_audio_deltas",
            "unknown_after_audio_deltas", "end_session"))


@dataclass
class _Installed:
    plan: FaultPlan
    rng: random.Random
    enroll_used: int = 0
    sessions_used: int = 0

    def draw(self, kind: str) -> bool:
        """Whether this match is faulted (``times`` budget, then ``probability``); counts it."""
        used = self.enroll_used if kind == "enroll" else self.sessions_used
        if self.plan.times is not None and used >= self.plan.times:
            return False
        if self.plan.probability < 1.0 and self.rng.random() >= self.plan.probability:
            return False
        if kind == "enroll":
            self.enroll_used += 1
        else:
            self.sessions_used += 1
        return True


def _install(plan) -> _Installed:
    plan = FaultPlan.from_dict(plan)
    return _Installed(plan, random.Random(plan.seed or 0))


class FaultInjector:
    """The service's fault plans (``app[FAULTS]``) and a log of the faults that fired. Thread-safe:
    ``set``/``clear`` may be called from any thread (``LocalService.set_faults``)."""

    def __init__(self, plans: dict | None = None):
        self._lock = threading.Lock()
        self._plans: dict[str, _Installed] = {}
        self._sessions: dict[str, SessionFaults] = {}
        self._fired: list[dict] = []
        for target, plan in (plans or {}).items():
            self.set(target, plan)

    def __repr__(self) -> str:  # never show the keys
        with self._lock:
            return f"FaultInjector({len(self._plans)} plans, {len(self._sessions)} open sessions, " \
                   f"{len(self._fired)} faults fired)"

    # -- plans
    def set(self, target: str, plan) -> None:
        """Install ``plan`` (a :class:`FaultPlan` or a dict of its fields; None removes) for ``target``:
        ``"*"``, an API key, or the id of an open realtime session (``sess_...``)."""
        if not isinstance(target, str) or not target:
            raise ValueError("a fault target must be '*', an API key or a session id (sess_...)")
        installed = None if plan is None else _install(plan)
        with self._lock:
            if target.startswith("sess_"):
                sf = self._sessions.get(target)
                if sf is None:
                    raise ValueError(f"no open realtime session {target!r} to set faults on")
                sf.plan = None if installed is None else installed.plan
            elif installed is None:
                self._plans.pop(target, None)
            else:
                self._plans[target] = installed
        log.info("fault plan %s for %s", "removed" if plan is None else "set",
                 target if target == "*" or target.startswith("sess_") else "an API key")

    def clear(self) -> None:
        """Remove every plan (key, ``"*"`` and open sessions)."""
        with self._lock:
            self._plans.clear()
            for sf in self._sessions.values():
                sf.plan = None

    def _select(self, key: str, kind: str, action: str | None = None) -> FaultPlan | None:
        with self._lock:
            inst = self._plans.get(key) or self._plans.get("*")
            if inst is None:
                return None
            plan = inst.plan
            if kind == "enroll" and (not plan.enrollment_faults or action not in plan.enroll_actions):
                return None
            if kind == "session" and not plan.realtime_faults:
                return None
            return plan if inst.draw(kind) else None

    # -- the log of fired faults (tests, benchmarks)
    def record(self, fault: str, **detail) -> None:
        with self._lock:
            self._fired.append({"fault": fault, **detail})
        log.info("injected fault %s %s", fault, detail)

    def clear_fired(self) -> None:
        """Forget the faults fired so far."""
        with self._lock:
            self._fired.clear()

    def fired(self, fault: str | None = None) -> list[dict]:
        """A copy of the faults fired so far (``{"fault": name, ...detail}``), optionally of one kind."""
        with self._lock:
            out = list(self._fired)
        return out if fault is None else [f for f in out if f["fault"] == fault]

    # -- enrollment
    async def enrollment(self, request, scope: str, action: str, work):
        """Run the enrollment handler coroutine ``work`` under the caller's plan (see :class:`FaultPlan`)."""
        plan = self._select(scope, "enroll", action)
        if plan is None:
            return await work
        if plan.enroll_status is not None:
            work.close()
            code, message = ENROLL_STATUSES[plan.enroll_status]
            self.record("enroll_status", status=plan.enroll_status, action=action)
            resp = error_response(plan.enroll_status, code, message)
            if plan.retry_after_s is not None:
                # RFC 9110 §10.2.3: delay-seconds is a non-negative integer; round up so clients wait long enough
                resp.headers["Retry-After"] = str(int(-(-float(plan.retry_after_s) // 1)))
            return resp
        if plan.enroll_drop == "before":
            work.close()
            self.record("enroll_drop", when="before", action=action)
            return _abort(request)
        resp = await work
        if plan.added_latency_ms > 0:
            self.record("enroll_latency", ms=plan.added_latency_ms, action=action)
            await asyncio.sleep(plan.added_latency_ms / 1000.0)
        if plan.enroll_drop == "after":
            self.record("enroll_drop", when="after", action=action)
            return _abort(request)
        return resp

    # -- realtime sessions
    def open_session(self, key: str, session_id: str, transport) -> "SessionFaults":
        sf = SessionFaults(self, session_id, self._select(key, "session"), transport, _key_hash(key))
        with self._lock:
            self._sessions[session_id] = sf
        return sf

    def close_session(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def session_owner_ok(self, session_id: str, key: str) -> bool:
        with self._lock:
            sf = self._sessions.get(session_id)
            return sf is not None and sf.key_hash == _key_hash(key)

    # -- HTTP control endpoint
    def add_routes(self, app) -> None:
        app.router.add_get(FAULTS_PATH, self._http_get)
        app.router.add_post(FAULTS_PATH, self._http_post)

    async def _http_get(self, request):
        key = authenticate(request)
        with self._lock:
            all_plan = self._plans.get("*")
            own = self._plans.get(key)
            sessions = {sid: sf.plan.to_dict() for sid, sf in self._sessions.items()
                        if sf.plan is not None and sf.key_hash == _key_hash(key)}
        return web.json_response({"*": all_plan.plan.to_dict() if all_plan else None,
                                  "key": own.plan.to_dict() if own else None, "sessions": sessions,
                                  "fired": len(self._fired)})

    async def _http_post(self, request):
        key = authenticate(request)
        body = await read_json(request)
        target = body.get("target")
        if not isinstance(target, str) or not (target in ("*", "key") or target.startswith("sess_")):
            raise ServiceError(400, "InvalidParameter",
                               "Required parameter(target) missing or invalid: use '*', 'key' (your own API key) "
                               "or the id of one of your open realtime sessions (sess_...).")
        if target.startswith("sess_") and not self.session_owner_ok(target, key):
            raise ServiceError(400, "InvalidParameter", f"No open realtime session {target!r} of this API key.")
        try:
            plan = None if body.get("plan") is None else FaultPlan.from_dict(body["plan"])
            self.set(key if target == "key" else target, plan)
        except (TypeError, ValueError) as exc:
            raise ServiceError(400, "InvalidParameter", f"Required parameter(plan) invalid: {exc}") from None
        return web.json_response({"target": target, "plan": None if plan is None else plan.to_dict()})


FAULTS = web.AppKey("faults", FaultInjector)  # the app's fault plans (off unless ServiceConfig.faults)


def _key_hash(key: str) -> str:
    return hashlib.sha256(b"qvtools-faults\x00" + key.encode("utf-8")).hexdigest()


def _abort(request):
    """Close the HTTP connection without an answer (the client sees a reset / empty reply)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    # The response cannot be delivered any more; aiohttp drops it with the connection.
    return web.Response(status=500)


@dataclass
class SessionFaults:
    """The faults of one realtime session, applied around each send (:meth:`before_send`/:meth:`after_send`)."""

    injector: FaultInjector
    session_id: str
    plan: FaultPlan | None
    transport: object = field(repr=False, default=None)
    key_hash: str | None = field(repr=False, default=None)
    stalled: bool = False
    _deltas: dict = field(default_factory=dict, repr=False)  # response_id -> audio deltas sent
    _turns: int = 0  # turns seen by the session-ending fault (response.created / speech_stopped sent)

    def set_plan(self, plan) -> None:
        """A session-level plan (client ``session.update`` extension or ``set_faults(session_id)``)."""
        self.plan = None if plan is None else FaultPlan.from_dict(plan)

    async def before_send(self, conn, event: dict) -> bool:
        """False: do not send this event (a stalled stream). May delay (added latency) or fire N=0 faults."""
        if self.stalled:
            return False
        plan = self.plan
        if plan is None:
            return True
        etype = event.get("type")
        if etype == "response.created" and plan.end_session in ("model_error", "param_error"):
            self._turns += 1
            if self._turns == plan.end_on_turn:
                await self._end_session(conn, plan)
                return False
        if etype == "response.created" and plan.added_latency_ms > 0:
            self.injector.record("added_latency", session_id=self.session_id, ms=plan.added_latency_ms)
            await asyncio.sleep(plan.added_latency_ms / 1000.0)
        if etype == "response.audio.delta":
            rid = event.get("response_id")
            if self._deltas.get(rid, 0) == 0:
                await self._fire(conn, plan, 0)
                return not (self.stalled or conn.closed)
        return True

    async def after_send(self, conn, event: dict) -> None:
        plan = self.plan
        if plan is not None and plan.end_session == "bare_close" and event.get("type") in (
                "input_audio_buffer.speech_stopped", "input_audio_buffer.committed"):
            manual = not (conn.session.get("turn_detection") or None)
            if (event["type"] == "input_audio_buffer.committed") == manual:
                self._turns += 1
                if self._turns == plan.end_on_turn:
                    await self._end_session(conn, plan)
            return
        if plan is None or event.get("type") != "response.audio.delta":
            return
        rid = event.get("response_id")
        n = self._deltas.get(rid, 0) + 1
        self._deltas[rid] = n
        await self._fire(conn, plan, n)

    async def _fire(self, conn, plan: FaultPlan, n: int) -> None:
        if plan.malformed_after_audio_deltas == n:
            self.injector.record("malformed_event", session_id=self.session_id, after_audio_deltas=n)
            await self._raw(conn, MALFORMED_FRAME, "invalid")
        if plan.unknown_after_audio_deltas == n:
            self.injector.record("unknown_event", session_id=self.session_id, after_audio_deltas=n)
            await self._raw(conn, json.dumps({"event_id": ev.new_id("event"), "type": UNKNOWN_EVENT_TYPE,
                                              "note": "injected by qvtools fault injection"}), UNKNOWN_EVENT_TYPE)
        if plan.stall_after_audio_deltas == n:
            self.injector.record("stall", session_id=self.session_id, after_audio_deltas=n)
            self.stalled = True
        if plan.drop_after_audio_deltas == n:
            self.injector.record("drop", session_id=self.session_id, after_audio_deltas=n)
            conn.closed = True
            if self.transport is not None:
                self.transport.abort()  # no close frame: the client sees the connection vanish

    async def _end_session(self, conn, plan: FaultPlan) -> None:
        """The §7.24 ending ``plan.end_session``: the error event (none for a bare close), then the close."""
        kind = plan.end_session
        self.injector.record("end_session", session_id=self.session_id, ending=kind, turn=self._turns)
        if kind == "bare_close":
            conn.closed = True
            await _close_without_status(conn)
            return
        if kind == "model_error":
            code, message, close = endings.MODEL_SERVING_CODE, endings.MODEL_SERVING_ERROR, \
                endings.CLOSE_INTERNAL_ERROR
            info = {"code": code, "message": message}
        else:
            message = plan.end_reason or endings.voice_error_reason(str(conn.session.get("voice")))
            code, close = "InternalError.Algo.InvalidParameter", endings.CLOSE_INVALID_PAYLOAD
            info = {"type": "invalid_request_error", "code": code, "message": message, "param": None}
        await self._raw(conn, json.dumps({"event_id": ev.new_id("event"), "type": "error", "error": info}), "error")
        await conn._close(close, message)

    async def _raw(self, conn, text: str, trace_type: str) -> None:
        if conn.closed or conn.ws.closed:
            return
        async with conn.send_lock:
            conn.trace.record(conn.session_id, trace_type, None)
            try:
                await conn.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                conn.closed = True

    async def slow_reader(self, conn, timeout_s: float) -> None:
        """A send blocked longer than ``timeout_s``: the client is not reading. The connection is aborted
        at once -- a close frame would queue behind the data the client does not read, and a graceful
        close would keep that data buffered -- and the reason is logged (WARNING) and recorded as the
        ``slow_reader_closed`` fault, so nothing is buffered for that client any more."""
        reason = f"slow reader: a send was blocked for more than {timeout_s:g} s"
        log.warning("session %s: %s; closing the connection", self.session_id, reason)
        self.injector.record("slow_reader_closed", session_id=self.session_id, timeout_s=timeout_s)
        conn.closed = True
        if self.transport is not None:
            self.transport.abort()

async def _close_without_status(conn) -> None:
    """Send a close frame with an empty payload (RFC 6455 §7.1.5: the peer reads 1005) and end the
    connection. aiohttp's public ``close()`` always writes a code, so its frame writer is used directly."""
    from aiohttp import WSMsgType

    ws = conn.ws
    writer = getattr(ws, "_writer", None)
    try:
        if writer is not None and not ws.closed:
            async with conn.send_lock:
                await writer.send_frame(b"", WSMsgType.CLOSE)
    except (ConnectionError, RuntimeError):
        pass
    transport = getattr(conn.faults, "transport", None)
    if transport is not None:
        transport.close()


def client_faults(config, session) -> tuple[bool, FaultPlan | None, dict | None]:
    """The ``qvtools.faults`` extension of a ``session.update`` payload: ``(present, plan, error)``.

    Only honoured when ``ServiceConfig.allow_client_faults`` is True; otherwise (or for a bad plan) the
    error (``{"code","message","param"}``) refuses the whole update, as any bad update (§4.5 d).
    ``{"faults": null}`` removes the session's plan.
    """
    ext = session.get("qvtools") if isinstance(session, dict) else None
    if not isinstance(ext, dict) or "faults" not in ext:
        return False, None, None
    param = "session.qvtools.faults"
    if not getattr(config, "allow_client_faults", False):
        return True, None, {"code": "faults_disabled", "param": param,
                            "message": "Client-requested fault injection is disabled on this service "
                                       "(ServiceConfig.allow_client_faults)."}
    try:
        plan = None if ext["faults"] is None else FaultPlan.from_dict(ext["faults"])
    except (TypeError, ValueError) as exc:
        return True, None, {"code": "invalid_value", "param": param, "message": f"Invalid fault plan: {exc}"}
    return True, plan, None
