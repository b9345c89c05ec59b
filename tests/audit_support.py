"""Builders shared by the audit tests: signed logs in memory and ledger checkpoint payloads."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from swarmlog.infra.audit import lane_origin
from swarmlog.streams.chain import ChainWriter, OutRecord
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
    """A LedgerCheckpoint payload over ``leaves[:size]`` (event hashes), with the consistency
    proof from ``previous`` computed over ``proof_leaves`` (default: the same leaves)."""
    origin = lane_origin(topic, partition)
    head = root(list(leaves[:size]))
    note = f"{origin}\n{size}\n{head.hex()}\n"
    signature = (signer or Identity.generate("ledger")).sign(note.encode()).to_record()
    basis = list(proof_leaves if proof_leaves is not None else leaves)
    proof = consistency_proof(previous, size, basis[:size]) if 0 < previous < size else []
    return {"origin": origin, "tree_size": size, "root_hash": head, "note": note, "signature": signature,
            "previous_tree_size": previous, "consistency_proof": proof}


def lane_leaves(records: Sequence[RawRecord], topic: str) -> dict[int, list[bytes]]:
    """Event hashes of a clean log's events per partition, in offset order (the ledger contract)."""
    from swarmlog.streams.envelope import EnvelopeCodec

    codec = EnvelopeCodec()
    out: dict[int, list[tuple[int, bytes]]] = {}
    for rec in records:
        if rec.topic != topic or codec.is_seal(rec.value):
            continue
        out.setdefault(rec.partition, []).append((rec.offset, codec.decode(rec.value).hash))
    return {p: [h for _, h in sorted(v)] for p, v in out.items()}
