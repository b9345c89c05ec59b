"""Session projection: distributed sessions (multiplexed conversations across agents).

Folds ``sessions.opened``, ``sessions.command_attached``, ``sessions.closed`` and
``sessions.receipt_recorded`` — the ``commands.receipt`` events that name a session,
forwarded into the session's own partition by the worker that folded the receipt
(``routing.session_receipt``). Every event this projection folds is therefore keyed by
session id and lives in the session's partition: one total order, the same live and in
replay. Pure: time is event time.

Rules
-----
* **Open**: the owner must be the envelope producer (``owner-mismatch``), ``timeout_ms > 0``,
  ``expires_at_ms`` null or ≥ 0; a second ``sessions.opened`` for the same id is
  ``duplicate-session`` (the very same event again is a no-op). ``parent_session_id`` is
  recorded, not checked: the parent may live in another partition, whose events this
  worker may not have folded yet.
* **Attach**: the session must exist (``unknown-session``) and the producer must be the
  owner or a participant (``not-a-participant``): otherwise anyone could keep someone
  else's session alive and fill its history. Attaching resets the idle timer
  (``last_activity_ms = max(last_activity_ms, event time)``). Attaching to a session that
  is no longer OPEN (closed, or expired at this event's time) is recorded as a *late
  attach* (counter only), like a late vote in ``consensus``; attaching the same
  ``command_id`` twice is a no-op.
* **Receipts** (``sessions.receipt_recorded``): one naming an unknown session is
  ``unknown-session``; its ``agent_id`` must be the producer of the original receipt,
  ``receipt_producer`` (``agent-mismatch``: a receipt is the executing agent's own
  statement); the record keeps the original receipt's event id, producer and time, and
  which worker forwarded it (``forwarded_by``). Receipts are recorded whatever the
  session's state — commands attached before the close finish after it — once per
  command, and do not reset the idle timer (the schema: a session expires "when no
  command attaches for this long"). A receipt reports failure when ``success`` is false
  or ``timed_out`` is true.
* **Close**: only the owner may close an OPEN session (``not-owner``), with the schema's end
  state CLOSED, EXPIRED or ABORTED. Closing a session that is no longer OPEN is a no-op.
* **Expiry** (deterministic): a session expires at ``expiry_ms = min(last_activity_ms +
  timeout_ms, expires_at_ms)``. The projection keeps an event clock (``clock/now_ms``: the
  newest event time folded; see ``consensus.DeadlineIndex`` for the ``lane`` scope and
  why it exists) and, before each event acts, expires every OPEN session with
  ``expiry_ms ≤ now``: state EXPIRED, ``closed_ms = expiry_ms``, and exactly one derived
  ``sessions.closed`` (state EXPIRED, reason ``idle-timeout`` or ``hard-expiry``,
  ``timeout_ms`` for an idle timeout, and the counters). The store is the guard against
  deriving it twice; folding that derived event back is a no-op (the session is no longer
  OPEN). ``expire_due(stores, now_ms)`` is the runtime's tick for quiet partitions.
* **History**: the last ``history_limit`` command records (attach and receipt records,
  in fold order) are kept in the session; counters cover every command.

Refusals raise ``InvalidEvent`` before any write: ``invalid-payload``, ``subject-mismatch``
(a session event keyed by something else than its session id), and the reasons above.

Partitioning: receipts live on the ``receipts`` topic, keyed by *command*, so folding them
here would write session records from receipts partitions (another table shard, an
order Kafka does not fix). The coordination domain forwards them instead: the forwarded
event lands in the session's partition after everything written there before it, and a
forwarded receipt that arrives before its session's ``sessions.opened`` is refused as
``unknown-session`` (dead-lettered with its bytes), identically everywhere.

Store layout
------------
``session/<id>``
    ``session_id owner participants timeout_ms expires_at_ms parent_session_id metadata
    opened_ms event_id scope state last_activity_ms expiry_ms closed_ms closed_by
    close_reason counters history``; ``state`` is OPEN, CLOSED, EXPIRED or ABORTED;
    ``counters`` = ``commands receipts succeeded failed timed_out late_attaches
    history_dropped total_duration_ms``.
``cmd/<session_id>/<command_id>``
    ``{attached, receipt}``: what was seen of one command (makes attach and receipt idempotent).
``due/...``, ``clock/...``
    deadline index and event clocks (``consensus.DeadlineIndex``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from swarmlog.projections.base import JSON, Derived, EventContext, InvalidEvent, Projection, StateStore, Stores
from swarmlog.projections.consensus import (
    ClockScope,
    DeadlineIndex,
    field_int,
    field_number,
    field_optional_text,
    field_text,
)
from swarmlog.projections.ticks import TICK

OPENED = "sessions.opened"
ATTACHED = "sessions.command_attached"
CLOSED_EVENT = "sessions.closed"
RECEIPT = "sessions.receipt_recorded"

OPEN, CLOSED, EXPIRED, ABORTED = "OPEN", "CLOSED", "EXPIRED", "ABORTED"
END_STATES = (CLOSED, EXPIRED, ABORTED)
DEFAULT_HISTORY_LIMIT = 100

COUNTERS = ("commands", "receipts", "succeeded", "failed", "timed_out", "late_attaches", "history_dropped",
            "total_duration_ms")


def _session_key(session_id: str) -> str:
    return f"session/{session_id}"


class SessionProjection(Projection):
    """Session lifecycle, bounded command history and counters; rules in the module docstring."""

    name: ClassVar[str] = "sessions"
    event_types: ClassVar[frozenset[str]] = frozenset({OPENED, ATTACHED, CLOSED_EVENT, RECEIPT, TICK})

    def __init__(self, history_limit: int = DEFAULT_HISTORY_LIMIT, clock_scope: ClockScope = "global") -> None:
        if history_limit < 0:
            raise ValueError("history_limit must be >= 0")
        self.history_limit = history_limit
        self.deadlines = DeadlineIndex(clock_scope)

    # ------------------------------------------------------------------ entry points
    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        store = stores.own
        if ctx.event_type == TICK:  # a quiet lane's clock (projections/ticks.py)
            return self.expire_due(stores, ctx.timestamp_ms, [ctx.lane])
        if ctx.event_type == OPENED:
            opened = self._check_opened(store, ctx, payload)
            if opened is None:
                return []
            return self._advance(store, ctx) + self._open(store, opened)
        if ctx.event_type == ATTACHED:
            attach = self._check_attach(store, ctx, payload)
            if attach is None:
                return []
            return self._advance(store, ctx) + self._attach(store, ctx, attach)
        if ctx.event_type == CLOSED_EVENT:
            close = self._check_close(store, ctx, payload)
            return self._advance(store, ctx) + self._close(store, ctx, close)
        if ctx.event_type == RECEIPT:
            receipt = self._check_receipt(store, ctx, payload)
            if receipt is None:
                return self._advance(store, ctx)  # already recorded: only the clock moves
            return self._advance(store, ctx) + self._receipt(store, ctx, receipt)
        raise InvalidEvent("unsupported-event-type", ctx.event_type)

    def expire_due(self, stores: Stores, now_ms: int, lanes: Iterable[str] | None = None) -> list[Derived]:
        """Expire every OPEN session whose expiry is ``<= now_ms`` (a runtime tick; the event
        clock does not move and ``closed_ms`` is the expiry time, so a replay agrees).
        ``lanes`` (lane scope) limits the sweep to the caller's partitions."""
        store = stores.own
        derived: list[Derived] = []
        for scope in self.deadlines.scopes(store, lanes):
            for session_id in self.deadlines.pop_due(store, scope, now_ms):
                derived += self._expire(store, session_id)
        return derived

    # ------------------------------------------------------------------ validation (no writes)
    @staticmethod
    def _session(store: StateStore, session_id: str) -> dict[str, Any]:
        session = store.get(_session_key(session_id))
        if not isinstance(session, dict):
            raise InvalidEvent("unknown-session", session_id)
        return session

    @staticmethod
    def _check_subject(ctx: EventContext, session_id: str) -> None:
        if ctx.subject != session_id:
            raise InvalidEvent("subject-mismatch", f"subject {ctx.subject!r} != session_id {session_id!r}")

    def _check_opened(self, store: StateStore, ctx: EventContext, payload: dict[str, Any]) -> dict[str, Any] | None:
        session_id = field_text(payload, "session_id", key_safe=True)
        existing = store.get(_session_key(session_id))
        if isinstance(existing, dict):
            if existing.get("event_id") == ctx.event_id:
                return None
            raise InvalidEvent("duplicate-session", session_id)
        self._check_subject(ctx, session_id)
        owner = field_text(payload, "owner")
        if owner != ctx.producer:
            raise InvalidEvent("owner-mismatch", f"{owner} is not the producer {ctx.producer}")
        participants = payload.get("participants") or []
        if not isinstance(participants, list) or not all(isinstance(p, str) and p for p in participants):
            raise InvalidEvent("invalid-payload", "participants must be a list of DIDs")
        timeout_ms = field_int(payload, "timeout_ms")
        if timeout_ms <= 0:
            raise InvalidEvent("invalid-payload", f"timeout_ms must be > 0, got {timeout_ms}")
        expires_at_ms: int | None = None
        if payload.get("expires_at_ms") is not None:
            expires_at_ms = field_int(payload, "expires_at_ms")
            if expires_at_ms < 0:
                raise InvalidEvent("invalid-payload", f"expires_at_ms must be >= 0, got {expires_at_ms}")
        metadata = payload.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in metadata.items()):
            raise InvalidEvent("invalid-payload", "metadata must map strings to strings")
        idle_expiry = ctx.timestamp_ms + timeout_ms
        return {
            "session_id": session_id, "owner": owner, "participants": sorted(set(participants)),
            "timeout_ms": timeout_ms, "expires_at_ms": expires_at_ms,
            "parent_session_id": field_optional_text(payload, "parent_session_id"), "metadata": dict(metadata),
            "opened_ms": ctx.timestamp_ms, "event_id": ctx.event_id, "scope": self.deadlines.scope_of(ctx.lane),
            "state": OPEN, "last_activity_ms": ctx.timestamp_ms,
            "expiry_ms": idle_expiry if expires_at_ms is None else min(idle_expiry, expires_at_ms),
            "closed_ms": None, "closed_by": None, "close_reason": None,
            "counters": dict.fromkeys(COUNTERS, 0), "history": [],
        }

    def _check_attach(self, store: StateStore, ctx: EventContext, payload: dict[str, Any]) -> dict[str, Any] | None:
        session_id = field_text(payload, "session_id", key_safe=True)
        command_id = field_text(payload, "command_id", key_safe=True)
        capability = field_text(payload, "capability")
        agent_id = field_optional_text(payload, "agent_id")
        session = self._session(store, session_id)
        self._check_subject(ctx, session_id)
        if ctx.producer != session["owner"] and ctx.producer not in session["participants"]:
            raise InvalidEvent("not-a-participant", f"{ctx.producer} may not attach to {session_id}")
        seen = store.get(f"cmd/{session_id}/{command_id}")
        if isinstance(seen, dict) and seen.get("attached"):
            return None
        return {"session_id": session_id, "command_id": command_id, "capability": capability, "agent_id": agent_id}

    def _check_close(self, store: StateStore, ctx: EventContext, payload: dict[str, Any]) -> dict[str, Any]:
        session_id = field_text(payload, "session_id", key_safe=True)
        state = payload.get("state")
        if state not in END_STATES:
            raise InvalidEvent("invalid-payload", f"unknown end state {state!r}")
        reason = field_text(payload, "reason", default="")
        session = self._session(store, session_id)
        self._check_subject(ctx, session_id)
        now = self.deadlines.would_be_now(store, ctx.lane, ctx.timestamp_ms)
        still_open = session["state"] == OPEN and (session["scope"] != self.deadlines.scope_of(ctx.lane)
                                                   or session["expiry_ms"] > now)
        if still_open and ctx.producer != session["owner"]:
            raise InvalidEvent("not-owner", f"{ctx.producer} may not close {session_id}")
        return {"session_id": session_id, "state": state, "reason": reason}

    def _check_receipt(self, store: StateStore, ctx: EventContext, payload: dict[str, Any]) -> dict[str, Any] | None:
        session_id = field_text(payload, "session_id", key_safe=True)
        command_id = field_text(payload, "command_id", key_safe=True)
        agent_id = field_text(payload, "agent_id")
        capability = field_text(payload, "capability")
        success = payload.get("success")
        timed_out = payload.get("timed_out", False)
        if not isinstance(success, bool) or not isinstance(timed_out, bool):
            raise InvalidEvent("invalid-payload", "success and timed_out must be booleans")
        duration_ms = field_int(payload, "duration_ms")
        error_rate = field_number(payload, "error_rate", 0.0)
        if duration_ms < 0 or not 0.0 <= error_rate <= 1.0:
            raise InvalidEvent("invalid-payload", f"duration_ms {duration_ms} / error_rate {error_rate} out of range")
        receipt_producer = field_text(payload, "receipt_producer")
        receipt_event_id = field_text(payload, "receipt_event_id")
        receipt_ms = field_int(payload, "receipt_ms")
        if agent_id != receipt_producer:
            raise InvalidEvent("agent-mismatch", f"{agent_id} is not the receipt's producer {receipt_producer}")
        self._session(store, session_id)
        self._check_subject(ctx, session_id)
        seen = store.get(f"cmd/{session_id}/{command_id}")
        if isinstance(seen, dict) and seen.get("receipt"):
            return None  # the first receipt of a command is the one that counts
        return {"session_id": session_id, "command_id": command_id, "agent_id": agent_id,
                "capability": capability, "success": success, "timed_out": timed_out,
                "duration_ms": duration_ms, "error_rate": error_rate, "receipt_event_id": receipt_event_id,
                "receipt_ms": receipt_ms}

    # ------------------------------------------------------------------ effects
    def _advance(self, store: StateStore, ctx: EventContext) -> list[Derived]:
        scope, now = self.deadlines.advance(store, ctx.lane, ctx.timestamp_ms)
        derived: list[Derived] = []
        for session_id in self.deadlines.pop_due(store, scope, now):
            derived += self._expire(store, session_id)
        return derived

    def _open(self, store: StateStore, session: dict[str, Any]) -> list[Derived]:
        session_id = session["session_id"]
        store.put(_session_key(session_id), session)
        self.deadlines.add(store, session["scope"], session_id, session["expiry_ms"])
        now = self.deadlines.now(store, session["scope"])
        if now is not None and session["expiry_ms"] <= now:
            self.deadlines.remove(store, session["scope"], session_id, session["expiry_ms"])
            return self._expire(store, session_id)
        return []

    def _push(self, session: dict[str, Any], record: dict[str, Any], counters: dict[str, int]) -> None:
        """Append to the bounded history (counters keep the full story)."""
        history = [*session["history"], record]
        overflow = len(history) - self.history_limit
        if overflow > 0:
            history = history[overflow:]
            counters["history_dropped"] += overflow
        session["history"] = history

    def _attach(self, store: StateStore, ctx: EventContext, attach: dict[str, Any]) -> list[Derived]:
        session_id, command_id = attach["session_id"], attach["command_id"]
        session = dict(store.get(_session_key(session_id)))
        counters = dict(session["counters"])
        session["counters"] = counters
        if session["state"] != OPEN:
            counters["late_attaches"] += 1
            store.put(_session_key(session_id), session)
            return []
        counters["commands"] += 1
        self._push(session, {"kind": "attached", "command_id": command_id, "capability": attach["capability"],
                             "agent_id": attach["agent_id"], "by": ctx.producer, "timestamp_ms": ctx.timestamp_ms,
                             "event_id": ctx.event_id}, counters)
        last = max(session["last_activity_ms"], ctx.timestamp_ms)
        idle_expiry = last + session["timeout_ms"]
        hard = session["expires_at_ms"]
        expiry = idle_expiry if hard is None else min(idle_expiry, hard)
        if expiry != session["expiry_ms"]:
            self.deadlines.remove(store, session["scope"], session_id, session["expiry_ms"])
            self.deadlines.add(store, session["scope"], session_id, expiry)
        session["last_activity_ms"] = last
        session["expiry_ms"] = expiry
        seen = store.get(f"cmd/{session_id}/{command_id}")
        store.put(f"cmd/{session_id}/{command_id}", {**(seen if isinstance(seen, dict) else {}), "attached": True})
        store.put(_session_key(session_id), session)
        return []

    def _receipt(self, store: StateStore, ctx: EventContext, receipt: dict[str, Any]) -> list[Derived]:
        session_id, command_id = receipt["session_id"], receipt["command_id"]
        session = dict(store.get(_session_key(session_id)))
        counters = dict(session["counters"])
        session["counters"] = counters
        failed = not receipt["success"] or receipt["timed_out"]
        counters["receipts"] += 1
        counters["failed" if failed else "succeeded"] += 1
        counters["timed_out"] += int(receipt["timed_out"])
        counters["total_duration_ms"] += receipt["duration_ms"]
        seen = store.get(f"cmd/{session_id}/{command_id}")
        attached = isinstance(seen, dict) and bool(seen.get("attached"))
        self._push(session, {"kind": "receipt", "command_id": command_id, "capability": receipt["capability"],
                             "agent_id": receipt["agent_id"], "success": receipt["success"],
                             "timed_out": receipt["timed_out"], "error_rate": receipt["error_rate"],
                             "duration_ms": receipt["duration_ms"], "attached": attached,
                             "timestamp_ms": receipt["receipt_ms"], "event_id": receipt["receipt_event_id"],
                             "forwarded_by": ctx.producer}, counters)
        store.put(f"cmd/{session_id}/{command_id}", {**(seen if isinstance(seen, dict) else {}), "receipt": True})
        store.put(_session_key(session_id), session)
        return []

    def _close(self, store: StateStore, ctx: EventContext, close: dict[str, Any]) -> list[Derived]:
        session_id = close["session_id"]
        session = dict(store.get(_session_key(session_id)))
        if session["state"] != OPEN:
            return []  # closed before, or expired at this event's time: nothing left to close
        self.deadlines.remove(store, session["scope"], session_id, session["expiry_ms"])
        session.update(state=close["state"], closed_ms=ctx.timestamp_ms, closed_by=ctx.producer,
                       close_reason=close["reason"])
        store.put(_session_key(session_id), session)
        return []

    def _expire(self, store: StateStore, session_id: str) -> list[Derived]:
        session = store.get(_session_key(session_id))
        if not isinstance(session, dict) or session["state"] != OPEN:
            return []
        hard = session["expires_at_ms"]
        by_hard = hard is not None and hard <= session["last_activity_ms"] + session["timeout_ms"]
        session = {**session, "state": EXPIRED, "closed_ms": session["expiry_ms"], "closed_by": None,
                   "close_reason": "hard-expiry" if by_hard else "idle-timeout"}
        store.put(_session_key(session_id), session)
        counters = session["counters"]
        payload: dict[str, JSON] = {
            "session_id": session_id, "state": EXPIRED, "reason": session["close_reason"],
            "timeout_ms": None if by_hard else session["timeout_ms"],
            "command_count": counters["commands"], "failed_count": counters["failed"],
        }
        return [Derived(CLOSED_EVENT, payload, subject=session_id)]


# ---------------------------------------------------------------------------- queries
def get_session(store: StateStore, session_id: str) -> dict[str, Any] | None:
    """The session record: state, expiry, counters and the bounded history (None if unknown)."""
    session = store.get(_session_key(session_id))
    return dict(session) if isinstance(session, dict) else None
