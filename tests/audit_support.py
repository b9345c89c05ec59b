"""Builders shared by the audit tests: signed logs in memory and ledger checkpoint payloads."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from swarmlog.infra.audit import lane_origin
from swarmlog.streams.chain import ChainWriter, OutRecord
from swarmlog.streams.checkpoint import sign_checkpoint
from swarmlog.streams.codec import default_store, encode_body
from swarmlog.streams.identity import Identity
from swarmlog.streams.merkle import consistency_proof, root
from swarmlog.streams.verify import RawRecord

STORE = default_store()
IDENTITY_ENTRY = STORE.for_event_type("trust.identity")
REGISTERED = STORE.for_event_type("agents.registered")
HEARTBEAT = STORE.for_event_type("agents.heartbeat")
CHECKPOINT = STORE.for_event_type("ledger.checkpoint")


def registered(agent: str) -> dict[str, Any]:
    return {"agent_id": agent, "address": "a.example:1", "capabilities": ["ml.inference"], "max_concurrency": 4,
            "region": "eu", "cloud": "aws", "health_score": 1.0, "latency_ms": 10.0, "reliability": 0.99,
            "metadata": {}}


def heartbeat(agent: str, i: int) -> dict[str, Any]:
    return {"agent_id": agent, "health_score": 0.9, "current_load": i % 3, "latency_ms": 10.0 + i,
            "reliability": 0.99, "max_concurrency": 4, "interval_ms": 5000, "resources": {}}


class LogBuilder:
    """Records as several producers would write them, with per-partition offsets."""

    def __init__(self, partitions: int = 3, topic: str = "agents", trust: str = "trust") -> None:
        self.partitions = partitions
        self.topic = topic
        self.trust = trust
        self.records: list[RawRecord] = []
        self._offsets: dict[tuple[str, int], int] = {}

    def add(self, out: Sequence[OutRecord]) -> None:
        for rec in out:
            offset = self._offsets.get((rec.topic, rec.partition), 0)
            self._offsets[(rec.topic, rec.partition)] = offset + 1
            self.records.append(RawRecord(rec.topic, rec.partition, offset, rec.key, rec.value))

    def writer(self, identity: Identity) -> ChainWriter:
        writer = ChainWriter(identity)
        _ref, value = writer.append(IDENTITY_ENTRY, encode_body(IDENTITY_ENTRY, writer.identity_payload()),
                                    identity.did, self.trust, 0, sign=True)
        self.add([OutRecord(self.trust, 0, b"", value)])
        return writer

    def agent_events(self, writer: ChainWriter, agents: Sequence[str], heartbeats: int, seal_every: int = 4) -> None:
        n = 0
        for agent in agents:
            partition = zlib.crc32(agent.encode()) % self.partitions
            _r, value = writer.append(REGISTERED, encode_body(REGISTERED, registered(agent)), agent, self.topic,
                                      partition)
            self.add([OutRecord(self.topic, partition, agent.encode(), value)])
            for i in range(heartbeats):
                _r, value = writer.append(HEARTBEAT, encode_body(HEARTBEAT, heartbeat(agent, i)), agent, self.topic,
                                          partition)
                self.add([OutRecord(self.topic, partition, agent.encode(), value)])
                n += 1
                if n % seal_every == 0:
                    self.add(writer.seal())
        self.add(writer.seal())


def checkpoint_payload(topic: str, partition: int, leaves: Sequence[bytes], size: int,
                       previous: int = 0, signer: Identity | None = None,
                       proof_leaves: Sequence[bytes] | None = None) -> dict[str, Any]:
    """A LedgerCheckpoint payload over ``leaves[:size]`` (event hashes): a real C2SP note signed
    by ``signer`` (Ed25519 + ML-DSA-65 lines, hybrid signature), with the consistency proof from
    ``previous`` computed over ``proof_leaves`` (default: the same leaves).

    The note is signed as a first checkpoint and the previous size and proof are set afterwards:
    ``sign_checkpoint`` refuses to sign a fork, and the tests need forks to audit. Neither field
    is part of the signed note, so the signature still verifies.
    """
    origin = lane_origin(topic, partition)
    head = root(list(leaves[:size]))
    payload = sign_checkpoint(signer or Identity.generate("ledger"), origin, size, head)
    basis = list(proof_leaves if proof_leaves is not None else leaves)
    payload["previous_tree_size"] = previous
    payload["consistency_proof"] = consistency_proof(previous, size, basis[:size]) if 0 < previous < size else []
    return payload


def lane_leaves(records: Sequence[RawRecord], topic: str) -> dict[int, list[bytes]]:
    """Event hashes of a clean log's events per partition, in ledger order: the order the verifier
    releases authenticated events (projections/ledger.py), once each."""
    from swarmlog.projections.ledger import authenticated_events
    from swarmlog.streams.verify import Verifier

    verifier = Verifier()
    out: dict[int, list[bytes]] = {}
    for rec in records:
        for record, event in authenticated_events(verifier.feed(rec)):
            if record.topic == topic and event.hash not in out.setdefault(record.partition, []):
                out[record.partition].append(event.hash)
    return out
