"""Keyed HTTP views answer from ANY worker: two workers share the partitions, each forwards to the key's owner."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from swarmlog.infra.topics import provision
from swarmlog.streams.identity import Identity
from swarmlog.streams.producer import EventProducer, partition_for
from swarmlog.streams.settings import get_settings
from tests.support.live import CliWorker, env_for, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 4


def keys_covering_every_partition(stem: str) -> list[str]:
    """One key per partition, so each worker owns some of them whatever the assignment."""
    keys: dict[int, str] = {}
    for i in itertools.count():
        key = f"{stem}-{i}"
        keys.setdefault(partition_for(key.encode(), PARTITIONS), key)
        if len(keys) == PARTITIONS:
            return [keys[p] for p in sorted(keys)]
    raise AssertionError("unreachable")


def test_keyed_views_are_routed_to_the_owner_from_any_worker(kafka_bootstrap: str, unique_topics: Any,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = unique_topics.new_prefix()
    monkeypatch.setenv("SWARMLOG_PARTITIONS", str(PARTITIONS))
    get_settings.cache_clear()
    provision(kafka_bootstrap, partitions=PARTITIONS, prefix=prefix)
    env = env_for(kafka_bootstrap, tmp_path, prefix, SWARMLOG_PARTITIONS=str(PARTITIONS))
    workers = [CliWorker(env, "w1", tmp_path), CliWorker(env, "w2", tmp_path)]
    owner = Identity.generate("owner")
    proposals, sessions, commands = (keys_covering_every_partition(s) for s in ("proposal", "session", "command"))
    try:
        with EventProducer(owner, kafka_bootstrap, topic_prefix=prefix, seal_interval_ms=50) as producer:
            for pid in proposals:
                producer.produce("consensus.proposed", {
                    "proposal_id": pid, "operation": "deploy", "proposer": owner.did, "policy": "SIMPLE_MAJORITY",
                    "eligible_voters": [owner.did], "voter_count": 1, "deadline_ms": 2**42}, sign=True)
            for sid in sessions:
                producer.produce("sessions.opened", {"session_id": sid, "owner": owner.did, "timeout_ms": 600_000})
            for cid in commands:  # no agent serves it: each command is recorded and fails routing
                producer.produce("commands.requested", {"command_id": cid, "capability": "nobody.serves.this",
                                                        "args": b"{}", "requester": owner.did})
        wanted = [("proposals", k) for k in proposals] + [("sessions", k) for k in sessions] + \
                 [("commands", k) for k in commands]

        def every_key_from_both() -> dict[tuple[str, str], list[tuple[int, dict[str, str], Any]]] | None:
            answers = {(view, key): [w.get(f"/swarmlog/{view}/{key}/") for w in workers] for view, key in wanted}
            ok = all(status == 200 for replies in answers.values() for status, _, _ in replies)
            if not ok:
                return None
            # both workers in the group, each owning partitions (a lone worker would answer everything itself)
            answered_by = {h.get("X-Swarmlog-Worker") for replies in answers.values() for _, h, _ in replies}
            return answers if answered_by == {"w1", "w2"} else None

        answers = wait_for(every_key_from_both, 180, "every key from both workers, owned by both", workers)
        for (view, key), replies in answers.items():
            (_, h1, body1), (_, h2, body2) = replies
            assert body1 == body2, (view, key)
            assert h1["X-Swarmlog-Worker"] == h2["X-Swarmlog-Worker"], "both answers come from the key's owner"
        assert {answers[("proposals", k)][0][2]["proposal_id"] for k in proposals} == set(proposals)
        assert {answers[("sessions", k)][0][2]["session_id"] for k in sessions} == set(sessions)
        assert {answers[("commands", k)][0][2]["capability"] for k in commands} == {"nobody.serves.this"}
        # the partitions of one view's keys are split between the workers, not held by one
        for view in ("proposals", "sessions", "commands"):
            owners = {answers[(v, k)][0][1]["X-Swarmlog-Worker"] for v, k in wanted if v == view}
            assert owners == {"w1", "w2"}, view
        # an unknown key is a 404 from either worker (after asking the owner)
        assert [w.get("/swarmlog/proposals/no-such-proposal/")[0] for w in workers] == [404, 404]
    finally:
        for worker in workers:
            worker.stop()
        get_settings.cache_clear()
