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
    assert sum(summary["commands_by_status"].values()) == 60
    # the worker's RocksDB tables (read back from their changelogs) equal a replay of the log
    assert summary["live_tables_equal_replay"] == {"routing": True, "consensus": True, "sessions": True}
