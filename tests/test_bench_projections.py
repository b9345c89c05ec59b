"""benchmarks/projections.py runs end to end on a tiny log and reports every variant (no timing asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_projections_benchmark_smoke(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = {**os.environ, "SWARMLOG_BOOTSTRAP": kafka_bootstrap, "SWARMLOG_EMBEDDED": "1",
           "SWARMLOG_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "projections.py", "--agents", "10", "--heartbeats", "60", "--commands", "30",
         "--timeout", "180", "--json", str(out)],
        cwd=ROOT / "benchmarks", env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["events"] == 10 + 60 + 30 + 30
    assert set(result["variants"]) == {"bare", "bare_batched", "naive", "swarmlog_per_event", "swarmlog_faust_tables",
                                       "swarmlog"}
    records = sum(result["records"].values())
    for name in ("bare", "bare_batched", "naive"):
        assert result["variants"][name]["counted"] == records  # every record of the log reached the agent
    for variant in result["variants"].values():
        assert variant["seconds"] > 0 and variant["events_per_s"] > 0 and variant["cpu_seconds"] > 0
    for name in ("swarmlog", "swarmlog_faust_tables", "swarmlog_per_event"):
        # every request was decided (one derived event each) and nothing was refused
        assert result["variants"][name]["health"]["outputs"] == {"derived": 30, "dead_letters": 0}
    expected = {"swarmlog_over_bare", "swarmlog_over_naive", "swarmlog_per_event_over_bare",
                "swarmlog_per_event_over_naive", "naive_over_bare", "swarmlog_over_per_event",
                "swarmlog_faust_tables_over_bare", "swarmlog_faust_tables_over_naive", "swarmlog_over_faust_tables"}
    assert set(result["ratios"]) == expected and set(result["cpu_ratios"]) == expected
