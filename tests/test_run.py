"""The main job end to end: broker, a real worker process, a simulated population, replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_swarmlog_run_completes_and_the_log_verifies(kafka_bootstrap: str, tmp_path: object) -> None:
    env = {**os.environ, "SWARMLOG_BOOTSTRAP": kafka_bootstrap, "SWARMLOG_EMBEDDED": "1",
           "SWARMLOG_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "swarmlog.infra.cli", "run", "--agents", "24", "--commands", "60", "--json",
         "--timeout", "120"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["complete"] is True
    assert summary["worker_caught_up"] is True  # the worker folded the whole log before it stopped
    assert summary["commands_sent"] == 60
    assert summary["routed"] + summary["route_failed"] == 60
    assert summary["receipts"] == summary["routed"]
    assert summary["consensus"] == "APPROVED"  # 6 of 7 BFT voters approve: 2f+1 = 5 reached
    verification = summary["verification"]
    # every record of the run authenticates; nothing forged, nothing pending at the end
    assert verification.get("authenticated", 0) > 24 * 2 + 60
    assert not {k for k in verification if k in ("forged", "malformed", "pending", "unknown-key")}
    # plus the marketplace episode's receipts (executions billed to contracts, not brokered commands)
    assert sum(summary["commands_by_status"].values()) == 60 + summary["market"]["receipts"]
    # the worker's RocksDB tables (read back from their changelogs) equal a replay of the log
    equal = summary["live_tables_equal_replay"]
    assert set(equal) == {"agents", "routing", "consensus", "sessions", "market", "swarm_jobs", "swarm_voting",
                          "swarm_tasks", "swarm_space", "swarm_roles", "heal", "trust"}, equal
    assert all(equal.values()), equal
    market = summary["market"]
    statuses = sorted(c["status"] for c in market["contracts"].values())
    assert statuses == ["BREACHED", "FULFILLED"], market  # the slow seller breaks its latency SLA
    assert [c["penalty"] > 0 for c in market["contracts"].values() if c["status"] == "BREACHED"] == [True]
    assert market["auction"]["clearing_price"] == 35.0  # second-highest revealed bid (42 wins, 18 unrevealed)
    assert market["analytics"]["trade_count"] == 2 and not market["refused"], market
    swarm = summary["swarm"]
    assert not swarm["notes"], swarm
    # the swarm vote: 6 of 7 for scale_out, one equivocator voided, the straggler late
    assert swarm["vote"]["result"]["decision"] == "scale_out" and swarm["vote"]["equivocating_voters"] == 1
    assert swarm["vote"]["late_votes"] == 1 and swarm["hivemind"]["generation"] == 1
    assert swarm["hivemind"]["intentions"] == ["scale_out"]
    assert swarm["task"]["status"] == "COMPLETED" and swarm["task"]["late_bids"] == 1
    assert swarm["optimization"]["status"] == "DONE" and swarm["optimization"]["best_value"] <= 1e-6
    assert swarm["formation"]["error_after"] < 1.0 < swarm["formation"]["error_before"]
    assert swarm["formation"]["min_distance"] >= 25.0
    # the self-healing service mesh: the degraded agent is detected, acted on, and recovers
    heal = summary["self_healing"]
    assert heal["recovered"] is True and heal["anomaly"]["component"] == heal["degraded_agent"]
    assert heal["action"]["target"] == heal["degraded_agent"] and heal["time_to_recover_ms"] > 0
