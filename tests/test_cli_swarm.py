"""``swarmlog swarm`` on the real broker: health, backup activation planned and applied, and the
role projection's verification of what the CLI produced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from swarmlog.infra.topics import provision
from swarmlog.streams.identity import Identity
from swarmlog.streams.producer import EventProducer
from tests.support.live import env_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def swarm_cli(env: dict[str, str], *args: str) -> tuple[int, Any]:
    """(exit code, parsed --json output or stderr) of ``swarmlog swarm ARGS --json``."""
    proc = subprocess.run([sys.executable, "-m", "swarmlog.infra.cli", "swarm", *args, "--json"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    return proc.returncode, (json.loads(proc.stdout) if proc.returncode == 0 else proc.stderr)


def test_backups_refill_a_role_whose_holder_failed(kafka_bootstrap: str, unique_topics: Any, tmp_path: Path) -> None:
    prefix = unique_topics.new_prefix()
    provision(kafka_bootstrap, prefix=prefix, partitions=2)
    env = env_for(kafka_bootstrap, tmp_path, prefix, SWARMLOG_PARTITIONS="2")
    leader, spare, worker = (Identity.generate(n) for n in ("bk-leader", "bk-spare", "bk-worker"))
    roles = {leader.did: "leader", spare.did: "reserve", worker.did: "worker"}
    for identity in (leader, spare, worker):
        producer = EventProducer(identity, kafka_bootstrap, topic_prefix=prefix)
        producer.produce("agents.registered", {"agent_id": identity.did, "address": "a", "capabilities": ["x"],
                                               "max_concurrency": 1})
        producer.produce("swarm.role_changed", {"agent_id": identity.did, "swarm_id": "s1", "role": roles[identity.did],
                                                "reason": "assignment"})
        if identity is leader:
            producer.produce("agents.health_changed", {"agent_id": leader.did, "previous_status": "UNKNOWN",
                                                       "status": "FAILED", "health_score": 0.0, "reason": "probe"})
        producer.close()

    def cli(*args: str) -> tuple[int, Any]:
        return swarm_cli(env, *args)

    code, before = cli("health", "s1")
    assert code == 0, before
    assert before["redundancy"] == {"leader": 0, "reserve": 1, "worker": 1} and before["failed"] == 1
    code, plan = cli("backups", "s1", "--require", "leader,worker")
    assert code == 0, plan
    assert plan["produced"] == 0 and [(c["agent_id"], c["previous_role"], c["role"], c["replaces_agent"])
                                      for c in plan["planned"]] == [(spare.did, "reserve", "leader", leader.did)]
    code, applied = cli("backups", "s1", "--require", "leader,worker", "--apply")
    assert code == 0 and applied["produced"] == 1, applied
    code, after = cli("health", "s1")
    assert code == 0 and after["redundancy"]["leader"] == 1, after
    code, again = cli("backups", "s1", "--require", "leader,worker")
    assert code == 0 and again["planned"] == []  # nothing left to refill
    code, err = cli("backups", "s1", "--require", " , ")
    assert code == 2 and "names no role" in err


def test_flock_reports_steering_targets_and_metrics(kafka_bootstrap: str, unique_topics: Any, tmp_path: Path) -> None:
    prefix = unique_topics.new_prefix()
    provision(kafka_bootstrap, prefix=prefix, partitions=2)
    env = env_for(kafka_bootstrap, tmp_path, prefix, SWARMLOG_PARTITIONS="2")
    members = [Identity.generate(f"flock-{i}") for i in range(3)]
    for i, identity in enumerate(members):
        producer = EventProducer(identity, kafka_bootstrap, topic_prefix=prefix)
        producer.produce("swarm.position", {"agent_id": identity.did, "swarm_id": "f1", "x": 10.0 * i, "y": 0.0,
                                            "vx": 1.0, "vy": 0.0})
        if i == 0:
            producer.produce("swarm.formation", {"swarm_id": "f1", "shape": "LINE", "anchor_x": 0.0, "anchor_y": 50.0,
                                                 "spacing": 30.0, "members": []})
        producer.close()

    def cli(*args: str) -> tuple[int, Any]:
        return swarm_cli(env, *args)

    code, out = cli("flock", "f1")
    assert code == 0, out
    dids = sorted(m.did for m in members)
    assert sorted(out["steering"]) == dids and sorted(out["targets"]) == dids
    assert out["metrics"]["members"] == 3 and out["metrics"]["polarization"] == 1.0  # all fly east
    assert out["metrics"]["min_distance"] == 10.0
    # all align east at the same rate; 10 apart is inside the separation radius (25), so beyond
    # that the west member is pushed west and the east one east, relative to the middle one
    west, middle, east = (out["steering"][m.did] for m in members)
    assert west[0] < middle[0] < east[0] and west[1] == middle[1] == east[1] == 0.0
    assert middle[0] - west[0] == pytest.approx(east[0] - middle[0])
    # a LINE heading east (0 rad) puts its slots side by side across the heading, spacing apart
    slots = sorted((round(x, 6), round(y, 6)) for x, y in out["targets"].values())
    assert slots == [(0.0, 20.0), (0.0, 50.0), (0.0, 80.0)]
    code, err = cli("flock", "nobody")
    assert code == 2 and "no positions" in err
