"""Classify every record of a log as authenticated, pending, forged, duplicate, ...

Pure and incremental: feed raw Kafka records in log order (records of different
partitions may interleave arbitrarily) and get verdicts back as soon as they are
decided. Nothing here touches Kafka, so the live workers, the replay engine, the audit
and the tests all run the same rules.

Rules (see docs/security.md):
* An unsigned event is **pending** until a seal of its producer covering its lane and
  seq arrives; it is then **authenticated** if its hash is the sealed leaf, **forged**
  otherwise. A sealed leaf whose event never arrived is reported as a *missing* problem.
* An inline-signed event is decided on arrival (hybrid signature over its hash).
* (stream, lane, seq) is consumed once: a second arrival with the same hash is a
  **duplicate**, with another hash it is **forged**.
* An event that arrives after a later seq of its lane is **out of sequence** (reordered).
* Seals and inline signatures only count with the producer's identity document (it
  binds the ML-DSA-65 key to the did:key); a revoked DID authenticates nothing after
  its revocation was fed in.
* An unsigned event that its seal never reaches is **unsealed** (given up), decided by
  log position only, so every reader of the partition decides it at the same record:
  (a) a later seal of the same producer stream in the same lane starts after its seq
  (seals of one lane are written in seq order into the lane's own partition, so the
  seal that would cover it can no longer come), or (b) its partition already holds
  ``unsealed_window`` later records (offset ≥ its offset + window) and none sealed it.
* Events are released in the order they become authenticated: inline-signed ones at
  their own position, sealed ones at their seal's position, in seq order. That order is
  a function of the log alone, so replays fold exactly as the live workers did.
"""

from __future__ import annotations

import gc
import hashlib
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from typing import Any

from swarmlog.streams import speedups
from swarmlog.streams.codec import MAGIC, CodecError, SchemaStore, default_store
from swarmlog.streams.envelope import (
    IDENTITY_EVENT_TYPE,
    ZERO_HASH,
    EnvelopeCodec,
    Event,
    event_signing_message,
    seal_signing_message,
)
from swarmlog.streams.identity import HybridSignature, InvalidDID, PublicIdentity, ed25519_public_from_did
from swarmlog.streams.merkle import leaf_hash, root_from_leaf_hashes


class Status(StrEnum):
    AUTHENTICATED = "authenticated"
    PENDING = "pending"
    FORGED = "forged"
    DUPLICATE = "duplicate"
    OUT_OF_SEQUENCE = "out-of-sequence"
    UNKNOWN_KEY = "unknown-key"
    REVOKED_KEY = "revoked-key"
    MALFORMED = "malformed"
    UNKNOWN_SCHEMA = "unknown-schema"
    UNSEALED = "unsealed"


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One Kafka record as read from the log."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int = 0

    @property
    def position(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(slots=True)
class Verdict:
    """The decision about one record. ``event`` is None for records that are not events."""

    status: Status
    record: RawRecord
    event: Event | None
    reason: str = ""
    kind: str = "event"  # "event" or "seal"

    @property
    def ok(self) -> bool:
        return self.status is Status.AUTHENTICATED


@dataclass(frozen=True, slots=True)
class Problem:
    """A discrepancy that is not one record: a sealed event that never arrived, a broken chain."""

    kind: str
    lane: str
    seq: int
    detail: str
    position: str


@dataclass(slots=True)
class _Candidate:
    event: Event
    record: RawRecord
    arrival: int


@dataclass
class _LaneState:
    sealed_upto: int = -1
    sealed_hash: bytes = ZERO_HASH
    pending: dict[int, list[_Candidate]] = field(default_factory=dict)
    recent: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    inline_ok: set[int] = field(default_factory=set)
    min_seen: int = -1
    max_auth_seq: int = -1
    given_up: OrderedDict[int, None] = field(default_factory=OrderedDict)


class Keyring:
    """Identities learnt from verified identity documents, and revocations."""

    def __init__(self) -> None:
        self._by_did: dict[str, PublicIdentity] = {}
        self._by_doc_hash: dict[bytes, PublicIdentity | None] = {}
        self.revoked: dict[str, str] = {}

    def get(self, did: str) -> PublicIdentity | None:
        return self._by_did.get(did)

    def add(self, identity: PublicIdentity) -> None:
        self._by_did.setdefault(identity.did, identity)

    def revoke(self, did: str, reason: str = "revoked") -> None:
        self.revoked[did] = reason

    def __len__(self) -> int:
        return len(self._by_did)

    def learn_identity_event(self, event: Event, store: SchemaStore) -> PublicIdentity | None:
        """Verify a self-signed identity document; cache the result by its hash."""
        if event.hash in self._by_doc_hash:
            return self._by_doc_hash[event.hash]
        identity = _verify_identity_event(event, store)
        self._by_doc_hash[event.hash] = identity
        if identity is not None:
            self.add(identity)
        return identity


def _verify_identity_event(event: Event, store: SchemaStore) -> PublicIdentity | None:
    if event.event_type != IDENTITY_EVENT_TYPE or event.auth is None:
        return None
    try:
        doc = event.decode_payload(store)
        ed_pub = ed25519_public_from_did(event.producer)
    except (CodecError, InvalidDID):
        return None
    if doc.get("did") != event.producer:
        return None
    candidate = PublicIdentity(
        did=event.producer,
        ed25519_public=ed_pub,
        ml_dsa_65_public=doc["ml_dsa_65_public_key"],
        x25519_public=doc["x25519_public_key"],
        ml_kem_768_public=doc["ml_kem_768_public_key"],
        label=doc.get("label", ""),
    )
    signature = HybridSignature.from_record(event.auth["signature"])
    if not candidate.verify(event_signing_message(event.hash), signature):
        return None
    return candidate


class Verifier:
    """Incremental log verifier; see the module docstring for the rules."""

    def __init__(self, store: SchemaStore | None = None, keyring: Keyring | None = None,
                 history: int = 4096, from_start: bool = True, unsealed_window: int | None = None) -> None:
        """``from_start``: the input begins at the start of the log, so a sealed event
        that never arrived is a real loss; reading from the middle, only gaps after the
        first event seen in a lane count. ``unsealed_window``: offset distance after
        which a pending event is given up (default: the ``unsealed_window`` setting)."""
        if unsealed_window is None:
            from swarmlog.streams.settings import get_settings

            unsealed_window = get_settings().unsealed_window
        if unsealed_window < 1:
            raise ValueError("unsealed_window must be >= 1")
        self.unsealed_window = unsealed_window
        # per Kafka partition: (offset, lane key, seq, arrival) of pending events, in arrival order
        self._waiting: dict[tuple[str, int], deque[tuple[int, tuple[bytes, str], int, int]]] = {}
        self.from_start = from_start
        self.store = store or default_store()
        self.codec = EnvelopeCodec(self.store)
        self.keyring = keyring if keyring is not None else Keyring()
        self.history = history
        self.problems: list[Problem] = []
        self._lanes: dict[tuple[bytes, str], _LaneState] = {}
        self._statements: dict[bytes, tuple[dict[str, Any] | None, str]] = {}
        self.counts: dict[str, int] = {}
        self._arrivals = 0
        self._did_problems: dict[str, str] = {}
        self._seal_header = MAGIC + self.codec.seal_fingerprint
        self._event_header = MAGIC + self.codec.envelope_fingerprint
        native = speedups.native
        decoder = self.codec.entry.decode_body
        # the C batch decoder of unsigned envelopes (feed_many), when the envelope codec is the C one
        self._decode_events = (native.decode_events if native is not None and isinstance(decoder, native.Decoder)
                               else None)

    # ------------------------------------------------------------------ feeding
    def feed(self, record: RawRecord) -> list[Verdict]:
        """Verdicts decided by this record (possibly for earlier records, when it is a seal)."""
        return self._feed_one(record, None)

    def feed_many(self, records: Iterable[RawRecord]) -> list[Verdict]:
        """``feed`` of each record in order, verdicts concatenated: the same verdicts, counts and state.

        Why: replay and audit feed whole fetched batches; decoding the batch's unsigned
        envelopes in one C call (straight into ``Event`` slots, hash included) costs a third of
        decoding them one by one. Records the C decoder declines (seals, signed or malformed
        envelopes) go through ``feed``'s own path.
        """
        batch = records if type(records) is list else list(records)
        with gc_paused():
            return self._feed_batch(batch)

    def _feed_batch(self, batch: list[RawRecord]) -> list[Verdict]:
        decode = self._decode_events
        if decode is None or not batch:
            events: list[Event | None] = [None] * len(batch)
        else:
            events = decode(self.codec.entry.decode_body, self._event_header, Event, _EVENT_SLOTS,
                            [r.value for r in batch])
        out: list[Verdict] = []
        feed_one = self._feed_one
        revoked = self.keyring.revoked
        did_problems = self._did_problems
        lanes = self._lanes
        all_waiting = self._waiting
        window = self.unsealed_window
        part: tuple[str, int] | None = None
        waiting: deque[tuple[int, tuple[bytes, str], int, int]] | None = None
        for record, event in zip(batch, events, strict=True):
            # The usual unsigned event — valid producer, not revoked, a known lane, a new seq past the
            # seals: it waits for its seal. What ``_on_event`` does for it, inlined (a third of the
            # verifier's time per record was calls and lookups); anything else takes ``feed_one``.
            if event is not None and did_problems.get(event.producer) == "" and event.producer not in revoked:
                seq = event.seq
                lane_key = (event.stream_id, event.lane)
                lane = lanes.get(lane_key)
                if (lane is not None and seq > lane.sealed_upto and seq >= 0 and seq not in lane.pending
                        and seq not in lane.recent):
                    if lane.min_seen < 0 or seq < lane.min_seen:
                        lane.min_seen = seq
                    self._arrivals = arrival = self._arrivals + 1
                    lane.pending[seq] = [_Candidate(event, record, arrival)]
                    if part is None or part[0] != record.topic or part[1] != record.partition:
                        part = (record.topic, record.partition)
                        waiting = all_waiting.get(part)
                        if waiting is None:
                            waiting = all_waiting[part] = deque()
                    assert waiting is not None
                    waiting.append((record.offset, lane_key, seq, arrival))
                    if waiting[0][0] + window <= record.offset:
                        verdicts = self._give_up_window(record, waiting)
                        self._count_verdicts(verdicts)
                        out += verdicts
                    continue
            part = None  # feed_one may create or drop a partition's queue
            verdicts = feed_one(record, event)
            if verdicts:
                out += verdicts
        return out

    def _feed_one(self, record: RawRecord, event: Event | None) -> list[Verdict]:
        """``event``: the record's envelope when already decoded (an unsigned event), else None."""
        verdicts = self._feed(record) if event is None else self._on_event(record, event)
        waiting = self._waiting.get((record.topic, record.partition))
        if waiting and waiting[0][0] + self.unsealed_window <= record.offset:
            verdicts += self._give_up_window(record, waiting)
        if verdicts:
            self._count_verdicts(verdicts)
        return verdicts

    def _count_verdicts(self, verdicts: list[Verdict]) -> None:
        """One count per verdict, keys added in the order they first occur (as counting one by one would).

        Why a Counter: a seal releases hundreds of verdicts at once; tallying (kind, status) pairs in C
        first leaves one Python step per distinct pair instead of one per verdict.
        """
        counts = self.counts
        for (kind, status), n in Counter(map(_KIND_STATUS, verdicts)).items():
            key = (_COUNT_KEYS if kind == "event" else _SEAL_COUNT_KEYS)[status]
            counts[key] = counts.get(key, 0) + n

    def feed_all(self, records: Iterable[RawRecord]) -> list[Verdict]:
        out: list[Verdict] = []
        for record in records:
            out.extend(self.feed(record))
        return out

    def finish(self) -> list[Verdict]:
        """Decide what is still pending at the end of the input."""
        out: list[Verdict] = []
        for (_, lane_name), lane in self._lanes.items():
            for seq in sorted(lane.pending):
                for cand in lane.pending[seq]:
                    if seq <= lane.sealed_upto:
                        out.append(Verdict(Status.FORGED, cand.record, cand.event,
                                           f"{lane_name} seq {seq} is not in any seal of its producer"))
                    else:
                        out.append(Verdict(Status.PENDING, cand.record, cand.event,
                                           "no seal covering this event has been seen"))
            lane.pending.clear()
        self._waiting.clear()
        for verdict in out:
            self.counts[verdict.status.value] = self.counts.get(verdict.status.value, 0) + 1
        return out

    def _feed(self, record: RawRecord) -> list[Verdict]:
        value = record.value
        if not isinstance(value, (bytes, bytearray)) or not value:
            return [Verdict(Status.MALFORMED, record, None, "empty record value")]
        if value[:10] == self._seal_header:
            verdicts = self._on_seal(record)
            self._prune_waiting(record)
            return verdicts
        try:
            event = self.codec.decode(bytes(value))
        except CodecError as exc:
            return [Verdict(Status(exc.reason) if exc.reason in _STATUS_VALUES else Status.MALFORMED,
                            record, None, str(exc))]
        return self._on_event(record, event)

    # ------------------------------------------------------------------ events
    def _on_event(self, record: RawRecord, event: Event) -> list[Verdict]:
        if event.producer in self.keyring.revoked:
            return [Verdict(Status.REVOKED_KEY, record, event,
                            f"producer {event.producer} was revoked: {self.keyring.revoked[event.producer]}")]
        did_problem = self._did_problems.get(event.producer)
        if did_problem is None:
            try:
                ed25519_public_from_did(event.producer)
                did_problem = ""
            except InvalidDID as exc:
                did_problem = str(exc)
            if len(self._did_problems) > 100_000:  # bounded: garbage producers must not grow it forever
                self._did_problems.clear()
            self._did_problems[event.producer] = did_problem
        if did_problem:
            return [Verdict(Status.UNKNOWN_KEY, record, event, f"producer is not a valid did:key: {did_problem}")]
        stream_key = (event.stream_id, event.lane)
        lane = self._lanes.get(stream_key)
        if lane is None:  # not setdefault: a fresh _LaneState per event was a visible cost
            lane = self._lanes[stream_key] = _LaneState()
        seq = event.seq
        if seq < 0:
            return [Verdict(Status.MALFORMED, record, event, "negative sequence number")]
        known = lane.recent.get(seq)
        if known is not None:
            if known == event.hash:
                return [Verdict(Status.DUPLICATE, record, event, f"{event.lane} seq {seq} already authenticated")]
            return [Verdict(Status.FORGED, record, event,
                            f"{event.lane} seq {seq} conflicts with the authenticated event")]
        if seq <= lane.sealed_upto:
            return [Verdict(Status.DUPLICATE, record, event, f"{event.lane} seq {seq} was sealed earlier")]
        candidates = lane.pending.get(seq)
        if candidates and any(c.event.hash == event.hash for c in candidates):
            return [Verdict(Status.DUPLICATE, record, event, f"{event.lane} seq {seq} already received")]
        if lane.min_seen < 0 or seq < lane.min_seen:
            lane.min_seen = seq
        if event.auth is not None:
            # Lateness against *authenticated* events only: a forgery must not be able to
            # make a genuine signed event look reordered.
            verdict = self._check_inline(record, event, lane, seq < lane.max_auth_seq)
            if verdict is not None:
                return [verdict]
        self._arrivals += 1
        candidate = _Candidate(event, record, self._arrivals)
        if candidates is None:
            lane.pending[seq] = [candidate]
        else:
            candidates.append(candidate)
        part = (record.topic, record.partition)
        waiting = self._waiting.get(part)
        if waiting is None:
            waiting = self._waiting[part] = deque()
        waiting.append((record.offset, stream_key, seq, self._arrivals))
        return []

    def _check_inline(self, record: RawRecord, event: Event, lane: _LaneState, late: bool) -> Verdict | None:
        """Decide an inline-signed event now, or return None to wait for its seal."""
        assert event.auth is not None
        if event.event_type == IDENTITY_EVENT_TYPE:
            identity = self.keyring.learn_identity_event(event, self.store)
            if identity is None:
                return Verdict(Status.FORGED, record, event, "identity document does not verify")
        else:
            identity = self.keyring.get(event.producer)
            attached = event.auth.get("identity")
            if identity is None and attached:
                identity = self._identity_from_bytes(attached, event.producer)
            if identity is None:
                return None  # cannot check the signature yet; the seal may still authenticate it
            signature = HybridSignature.from_record(event.auth["signature"])
            if not identity.verify(event_signing_message(event.hash), signature):
                return Verdict(Status.FORGED, record, event, "inline hybrid signature does not verify")
        lane.inline_ok.add(event.seq)
        self._remember(lane, event.seq, event.hash)
        lane.max_auth_seq = max(lane.max_auth_seq, event.seq)
        if late:
            return Verdict(Status.OUT_OF_SEQUENCE, record, event,
                           f"{event.lane} seq {event.seq} arrived after a later event of its lane")
        return Verdict(Status.AUTHENTICATED, record, event, "inline signature")

    def _identity_from_bytes(self, raw: bytes, expected_did: str) -> PublicIdentity | None:
        try:
            doc_event = self.codec.decode(raw)
        except CodecError:
            return None
        if doc_event.producer != expected_did:
            return None
        return self.keyring.learn_identity_event(doc_event, self.store)

    def _remember(self, lane: _LaneState, seq: int, digest: bytes) -> None:
        lane.recent[seq] = digest
        if len(lane.recent) > self.history:
            lane.recent.popitem(last=False)

    # ------------------------------------------------------------------ seals
    def _on_seal(self, record: RawRecord) -> list[Verdict]:
        try:
            seal = self.codec.decode_seal(bytes(record.value))
        except CodecError as exc:
            return [Verdict(Status.MALFORMED, record, None, f"undecodable seal: {exc}", kind="seal")]
        statement, reason = self._verify_statement(seal)
        if statement is None:
            return [Verdict(Status.FORGED, record, None, reason, kind="seal")]
        lane_root = next((entry for entry in statement["lanes"] if entry["lane"] == seal["lane"]), None)
        if lane_root is None:
            return [Verdict(Status.FORGED, record, None, f"seal copy for {seal['lane']} names no signed lane",
                            kind="seal")]
        first, last = lane_root["first_seq"], lane_root["last_seq"]
        leaves: list[bytes] = seal["leaves"]
        if last < first or len(leaves) != last - first + 1:
            return [Verdict(Status.FORGED, record, None, "seal leaf count does not match its seq range",
                            kind="seal")]
        if _lane_root(leaves) != lane_root["root"]:
            return [Verdict(Status.FORGED, record, None, "seal leaves do not hash to the signed root",
                            kind="seal")]
        if statement["producer"] in self.keyring.revoked:
            return [Verdict(Status.REVOKED_KEY, record, None,
                            f"seal by revoked producer {statement['producer']}", kind="seal")]
        stream_key = (statement["stream_id"], seal["lane"])
        lane = self._lanes.get(stream_key)
        if lane is None:
            lane = self._lanes[stream_key] = _LaneState()
        return self._apply_seal(record, seal["lane"], lane, first, leaves)

    def _verify_statement(self, seal: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        raw_statement: bytes = seal["statement"]
        signature = HybridSignature.from_record(seal["signature"])
        cache_key = hashlib.sha256(raw_statement + signature.ed25519 + signature.ml_dsa_65
                                   + hashlib.sha256(seal["identity"]).digest()).digest()
        cached = self._statements.get(cache_key)
        if cached is not None:
            return cached
        result: tuple[dict[str, Any] | None, str]
        try:
            statement = self.codec.decode_statement(raw_statement)
        except CodecError as exc:
            result = (None, f"undecodable seal statement: {exc}")
        else:
            identity = self.keyring.get(statement["producer"])
            if identity is None:
                identity = self._identity_from_bytes(seal["identity"], statement["producer"])
            if identity is None:
                result = (None, f"no valid identity document for {statement['producer']}")
            elif statement.get("hash_alg", "sha256") != "sha256":
                result = (None, f"unsupported seal hash algorithm {statement.get('hash_alg')}")
            elif not identity.verify(seal_signing_message(raw_statement), signature):
                result = (None, "seal signature does not verify")
            else:
                result = (statement, "")
        self._statements[cache_key] = result
        return result

    def _apply_seal(self, record: RawRecord, lane_name: str, lane: _LaneState, first: int,
                    leaves: list[bytes]) -> list[Verdict]:
        out: list[Verdict] = []
        if lane.sealed_upto >= 0 and first > lane.sealed_upto + 1 and self.from_start:
            for seq in range(lane.sealed_upto + 1, first):
                self.problems.append(Problem("missing-seal", lane_name, seq,
                                             "no seal covered this seq", record.position))
        prev = lane.sealed_hash if first == lane.sealed_upto + 1 else None
        chosen_in_order: list[_Candidate] = []
        pending = lane.pending
        inline_ok = lane.inline_ok
        sealed_upto = lane.sealed_upto
        remembered: list[tuple[int, bytes]] = []
        seq = first - 1
        problems = self.problems
        for digest in leaves:
            seq += 1
            candidates = pending.pop(seq, None)
            if (candidates is not None and len(candidates) == 1 and seq > sealed_upto and not inline_ok
                    and candidates[0].event.hash == digest):
                chosen = candidates[0]  # the common case, decided as the general branch decides it
            else:
                if candidates is None:
                    candidates = []
                if seq in inline_ok:
                    inline_ok.discard(seq)
                    for cand in candidates:
                        out.append(Verdict(Status.FORGED, cand.record, cand.event,
                                           f"{lane_name} seq {seq} is not the sealed event"))
                    prev = digest
                    continue
                if seq <= sealed_upto:
                    continue  # a second copy of an older seal
                found: _Candidate | None = None
                for cand in candidates:
                    if found is None and cand.event.hash == digest:
                        found = cand
                    else:
                        out.append(Verdict(Status.FORGED, cand.record, cand.event,
                                           f"{lane_name} seq {seq} is not the sealed event"))
                if found is None:
                    if seq in lane.given_up:
                        problems.append(Problem("sealed-after-give-up", lane_name, seq,
                                                "sealed after it was dead-lettered as unsealed", record.position))
                    elif self.from_start or 0 <= lane.min_seen <= seq:
                        problems.append(Problem("missing", lane_name, seq,
                                                f"sealed event {digest.hex()[:16]}… never arrived", record.position))
                    prev = digest
                    continue
                chosen = found
            # accepted (one place for both branches): check its chain link, remember it, release it
            if prev is not None and chosen.event.prev_hash != prev:
                problems.append(Problem("chain-broken", lane_name, seq,
                                        "prev_hash does not match the predecessor's hash", chosen.record.position))
            remembered.append((seq, digest))
            chosen_in_order.append(chosen)
            prev = digest
        if remembered:  # nothing above reads ``recent``: remembering them in one go keeps the same window
            recent = lane.recent
            recent.update(remembered)
            excess = len(recent) - self.history
            if excess > 0:
                popitem = recent.popitem
                for _ in range(excess):
                    popitem(last=False)
        # An event that arrived after a later event of the same batch was reordered.
        late: set[int] = set()
        earliest_later = None
        arrivals = [cand.arrival for cand in chosen_in_order]
        in_order = arrivals == sorted(arrivals)  # usual: nothing is late, skip the scan
        for cand in () if in_order else reversed(chosen_in_order):
            if earliest_later is not None and cand.arrival > earliest_later:
                late.add(cand.arrival)
            earliest_later = cand.arrival if earliest_later is None else min(earliest_later, cand.arrival)
        if not late and chosen_in_order:
            out += _sealed_verdicts(chosen_in_order)
        else:
            for cand in chosen_in_order:
                if cand.arrival in late:
                    out.append(Verdict(Status.OUT_OF_SEQUENCE, cand.record, cand.event,
                                       f"{lane_name} seq {cand.event.seq} arrived after a later event of its lane"))
                else:
                    out.append(Verdict(Status.AUTHENTICATED, cand.record, cand.event, "sealed"))
        if chosen_in_order:  # seqs ascend: the last chosen is the largest
            lane.max_auth_seq = max(lane.max_auth_seq, chosen_in_order[-1].event.seq)
        last = first + len(leaves) - 1
        for seq in sorted(s for s in lane.pending if s < first):
            # (a) this seal starts after seq: the seal that would cover it can no longer come
            for cand in lane.pending.pop(seq):
                out.append(self._unsealed(lane, cand, f"{lane_name} seq {seq}: a later seal of its producer "
                                                      f"(seq {first}..{last}) does not cover it"))
        if last > lane.sealed_upto:
            lane.sealed_upto = last
            lane.sealed_hash = leaves[-1]
        return out

    # ------------------------------------------------------------------ giving up
    def _unsealed(self, lane: _LaneState, cand: _Candidate, reason: str) -> Verdict:
        lane.given_up[cand.event.seq] = None
        if len(lane.given_up) > self.history:
            lane.given_up.popitem(last=False)
        return Verdict(Status.UNSEALED, cand.record, cand.event, reason)

    def _prune_waiting(self, record: RawRecord) -> None:
        """Drop decided events from the front of the partition's queue (after a seal: amortised O(1))."""
        waiting = self._waiting.get((record.topic, record.partition))
        if not waiting:
            return
        lanes = self._lanes
        popleft = waiting.popleft
        while waiting:
            _offset, lane_key, seq, arrival = waiting[0]
            lane = lanes.get(lane_key)
            if lane is not None:
                candidates = lane.pending.get(seq)
                if candidates and any(c.arrival == arrival for c in candidates):
                    return
            popleft()

    def _give_up_window(self, record: RawRecord,
                        waiting: deque[tuple[int, tuple[bytes, str], int, int]]) -> list[Verdict]:
        """(b) events of ``record``'s partition pending for ``unsealed_window`` offsets or more."""
        out: list[Verdict] = []
        while waiting and waiting[0][0] + self.unsealed_window <= record.offset:
            _offset, lane_key, seq, arrival = waiting.popleft()
            lane = self._lanes.get(lane_key)
            candidates = lane.pending.get(seq) if lane is not None else None
            if not candidates or lane is None:
                continue  # decided meanwhile (sealed, forged, given up by rule a)
            for cand in [c for c in candidates if c.arrival == arrival]:
                candidates.remove(cand)
                out.append(self._unsealed(lane, cand, f"{cand.event.lane} seq {seq}: no seal within "
                                                      f"{self.unsealed_window} records of its partition"))
            if not candidates:
                del lane.pending[seq]
        return out

    # ------------------------------------------------------------------ misc
    def pending_count(self) -> int:
        return sum(len(c) for lane in self._lanes.values() for c in lane.pending.values())

    def pending_positions(self) -> set[tuple[str, int, int]]:
        """(topic, partition, offset) of every record still waiting for its seal.

        A consumer must not commit past these: after a crash they have to be read again.
        """
        return {(c.record.topic, c.record.partition, c.record.offset)
                for lane in self._lanes.values() for cands in lane.pending.values() for c in cands}


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one batch, if it is on.

    Why: a batch allocates ~10 container objects per record (events, records, verdicts,
    contexts, payloads, new store values), enough to trigger young-generation collections
    every few dozen records, and what a replay keeps (the outcome's events, the projection
    state) makes the older generations ever larger to scan: ~15 % of replay CPU went to
    the collector. Verification and the reducers work on plain values (JSON data, events),
    so their garbage is acyclic and reference counting frees it as before; a cycle some
    reducer does build waits only until the batch ends (a few thousand records), when the
    collector is back on. The pause is process-wide: it is lifted only by whoever set it, so
    a caller that had switched the collector off keeps it off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


_STATUS_VALUES = {status.value for status in Status}
# counter key of each verdict status (Enum.value is a property call: a visible cost per verdict)
_COUNT_KEYS = {status: status.value for status in Status}
_SEAL_COUNT_KEYS = {status: f"seal-{status.value}" for status in Status}
_KIND_STATUS = attrgetter("kind", "status")
# Event's slots in envelope field order, then the hash and the raw value (for _speedups.decode_events)
_EVENT_SLOTS = ("event_id", "event_type", "payload_schema", "producer", "stream_id", "lane", "seq", "prev_hash",
                "timestamp_ms", "subject", "payload_bytes", "auth", "hash", "raw")


_VERDICT_SLOTS = ("status", "record", "event", "reason", "kind")


def _sealed_verdicts(chosen: list[_Candidate]) -> list[Verdict]:
    """AUTHENTICATED "sealed" verdicts of ``chosen``, in order; built in C when the extension is in use."""
    native = speedups.native
    if native is None:
        return [Verdict(Status.AUTHENTICATED, c.record, c.event, "sealed") for c in chosen]
    verdicts: list[Verdict] = native.slot_objects(
        Verdict, _VERDICT_SLOTS, (Status.AUTHENTICATED, [c.record for c in chosen], [c.event for c in chosen],
                                  "sealed", "event"), len(chosen))
    return verdicts


def _lane_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 root over the leaves ``HASH(0x00 || h)``; in C when the extension is built."""
    native = speedups.native
    if native is not None and type(leaves) is list:
        try:  # it refuses anything but bytes itself (not a scan per seal here)
            root: bytes = native.merkle_root_leaves(leaves)
        except TypeError:
            pass
        else:
            return root
    return root_from_leaf_hashes([leaf_hash(h) for h in leaves])
