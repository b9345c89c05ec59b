"""The audit core (pure): findings, rebuilt projections, per-lane Merkle roots against checkpoints."""

from __future__ import annotations

from typing import Any

import pytest

from swarmlog.infra.audit import Auditor, LiveValue, diff_table, lane_origin, parse_origin
from swarmlog.streams.chain import OutRecord
from swarmlog.streams.codec import encode_body
from swarmlog.streams.identity import Identity
from swarmlog.streams.merkle import root
from swarmlog.streams.verify import RawRecord
from tests.audit_support import CHECKPOINT, LogBuilder, checkpoint_payload, lane_leaves

TOPICS = ["trust", "agents", "ledger"]


@pytest.fixture(scope="module")
def ledger_id() -> Identity:
    return Identity.generate("ledger-worker")


def two_producer_log(alice: Identity, bob: Identity) -> LogBuilder:
    log = LogBuilder(partitions=3)
    wa, wb = log.writer(alice), log.writer(bob)
    log.agent_events(wa, [f"agent-a{i}" for i in range(5)], heartbeats=3)
    log.agent_events(wb, [f"agent-b{i}" for i in range(5)], heartbeats=2, seal_every=3)
    return log


def add_checkpoints(log: LogBuilder, signer: Identity, payloads: list[dict[str, Any]]) -> list[RawRecord]:
    writer = log.writer(signer)
    added = []
    for payload in payloads:
        _ref, value = writer.append(CHECKPOINT, encode_body(CHECKPOINT, payload), payload["origin"], "ledger", 0)
        log.add([OutRecord("ledger", 0, payload["origin"].encode(), value)])
        added.append(log.records[-1])
    log.add(writer.seal())
    return added


def audit(records: list[RawRecord], **kwargs: Any) -> Any:
    auditor = Auditor(TOPICS, **kwargs)
    auditor.feed_all(records)
    return auditor.finish()


def test_origin_round_trip() -> None:
    assert parse_origin(lane_origin("run-1.agents", 4)) == ("run-1.agents", 4)
    assert parse_origin("elsewhere/agents/1") is None
    assert parse_origin("swarmlog/ledger/agents/x") is None


def test_clean_log_has_no_findings_and_rebuilds_the_registry(alice: Identity, bob: Identity) -> None:
    log = two_producer_log(alice, bob)
    report = audit(log.records)
    assert report.findings == [] and report.ok
    leaves = lane_leaves(log.records, "agents")
    lanes = {(lane.topic, lane.partition): lane for lane in report.lanes}
    for partition, hashes in leaves.items():
        # leaves in the worker ledger's order: as the verifier released them (the producers' seals)
        assert lanes[("agents", partition)].leaves == len(hashes)
        assert lanes[("agents", partition)].root == root(hashes).hex()
    agents = {k for k in report.projections["registry"] if k.startswith("agent/")}
    assert len(agents) == 10
    assert "registry" in report.projection_counts
    # only domains whose every topic was read are rebuilt (agents, trust: their one topic was read);
    # routing/consensus/sessions/... need topics this audit did not read: skipped silently
    assert set(report.projections) == {"registry", "agents", "trust"}


def test_partial_domain_is_skipped_with_a_reason(alice: Identity, bob: Identity) -> None:
    auditor = Auditor(["trust", "agents", "commands"])
    assert "coordination" in auditor.skipped and "receipts" in auditor.skipped["coordination"]


def test_checkpoints_verify_and_forks_are_named(alice: Identity, bob: Identity, ledger_id: Identity) -> None:
    log = two_producer_log(alice, bob)
    leaves = lane_leaves(log.records, "agents")
    p_good, p_fork, p_bad_proof = sorted(leaves)[:3]
    good = leaves[p_good]
    fork_base = leaves[p_fork]
    forked_history = fork_base[:2] + [b"\x66" * 32] * (len(fork_base) - 2)
    bad = leaves[p_bad_proof]
    payloads = [
        checkpoint_payload("agents", p_good, good, 3, signer=ledger_id),
        checkpoint_payload("agents", p_good, good, len(good), previous=3, signer=ledger_id),
        # a fork: internally consistent with its previous checkpoint, but not the log's history
        checkpoint_payload("agents", p_fork, fork_base, 2, signer=ledger_id),
        {**checkpoint_payload("agents", p_fork, forked_history, len(fork_base), previous=2, signer=ledger_id)},
        # the right roots, but the consistency proof is for another tree
        checkpoint_payload("agents", p_bad_proof, bad, 2, signer=ledger_id),
        checkpoint_payload("agents", p_bad_proof, bad, len(bad), previous=2, signer=ledger_id,
                           proof_leaves=[b"\x01" * 32] * len(bad)),
    ]
    cps = add_checkpoints(log, ledger_id, payloads)
    report = audit(log.records)
    found = {(f.kind, f.topic, f.partition, f.offset) for f in report.findings}
    assert found == {("checkpoint-root-mismatch", "ledger", 0, cps[3].offset),
                     ("checkpoint-inconsistent", "ledger", 0, cps[5].offset)}
    status = {lane.partition: lane.status for lane in report.lanes if lane.topic == "agents"}
    assert status[p_good] == f"verified at size {len(good)}"
    assert status[p_fork] == status[p_bad_proof] == "FAILED"
    assert any("signatures not checked" in note for note in report.notes)


def test_checkpoint_ahead_of_the_log_after_a_drop(alice: Identity, bob: Identity, ledger_id: Identity) -> None:
    log = two_producer_log(alice, bob)
    leaves = lane_leaves(log.records, "agents")
    partition = sorted(leaves)[0]
    add_checkpoints(log, ledger_id, [checkpoint_payload("agents", partition, leaves[partition],
                                                        len(leaves[partition]), signer=ledger_id)])
    victim = next(r for r in log.records if r.topic == "agents" and r.partition == partition and r.offset == 1)
    report = audit([r for r in log.records if r is not victim])
    kinds = sorted(f.kind for f in report.findings)
    assert kinds == ["checkpoint-ahead", "missing"]


def test_checkpoint_signature_hook_is_called(alice: Identity, bob: Identity, ledger_id: Identity) -> None:
    log = two_producer_log(alice, bob)
    leaves = lane_leaves(log.records, "agents")
    partition = sorted(leaves)[0]
    cps = add_checkpoints(log, ledger_id, [checkpoint_payload("agents", partition, leaves[partition], 2,
                                                              signer=ledger_id)])
    seen: list[tuple[str, str]] = []

    def refuse(payload: dict[str, Any], identity: Any) -> bool:
        seen.append((payload["origin"], identity.did))
        return False

    report = audit(log.records, verify_checkpoint=refuse)
    assert seen == [(lane_origin("agents", partition), ledger_id.did)]
    assert [(f.kind, f.offset) for f in report.findings] == [("checkpoint-signature", cps[0].offset)]
    accepting = audit(log.records, verify_checkpoint=lambda payload, identity: True)
    assert accepting.ok


def test_pending_tail_is_an_error_unless_allowed(alice: Identity) -> None:
    log = LogBuilder(partitions=1)
    writer = log.writer(alice)
    log.agent_events(writer, ["agent-x"], heartbeats=2, seal_every=100)
    unsealed = [r for r in log.records if not (r.topic == "agents" and r.offset == 3)]  # the seal record
    report = audit(unsealed)
    assert {f.kind for f in report.findings} == {"pending"} and not report.ok
    assert audit(unsealed, allow_pending=True).ok


def test_diff_table_names_every_difference() -> None:
    rebuilt = {"a": 1, "b": {"x": 1}, "c": 3}
    live = {"a": LiveValue(1, "cl", 0, 5), "b": LiveValue({"x": 2}, "cl", 1, 7), "d": LiveValue(4, "cl", 2, 9)}
    found = {(f.kind, f.offset) for f in diff_table("t", rebuilt, live, "changelog")}
    assert found == {("projection-mismatch", 7), ("projection-extra-live", 9), ("projection-missing-live", None)}
    assert diff_table("t", {"a": 1}, {"a": LiveValue(1, "cl")}, "changelog") == []
