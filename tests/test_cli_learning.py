"""``swarmlog forecast``: a week-long forecast from a CSV history with a known daily cycle; bad input exits 2."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from typer.testing import CliRunner

from swarmlog.infra.cli import app

H = 3_600_000


def history(path: Path, days: int = 21) -> Path:
    rng = random.Random(1)
    rows = ["timestamp_ms,count"]
    for h in range(24 * days):
        load = max(0.0, 200 + 80 * math.sin(2 * math.pi * h / 24) + rng.gauss(0, 10))
        rows.append(f"{1_699_999_200_000 + h * H},{load}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_forecast_a_week_from_csv(tmp_path: Path) -> None:
    csv_file = history(tmp_path / "h.csv")
    result = CliRunner().invoke(app, ["forecast", "ml.inference", "--hours", "168", "--capacity", "1000",
                                      "--csv", str(csv_file), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert len(doc["points"]) == 168 and doc["history_hours"] == 24 * 21 - 1
    assert 250 < doc["peak_load"] < 320  # truth: 200 + 80 = 280 at the daily peak
    assert doc["recommended_capacity"] == doc["peak_load"] * 1.2
    assert (doc["action"], doc["risk_level"]) == ("scale-down", "LOW") and doc["estimated_cost_change"] < 0
    day = [p["load"] for p in doc["points"][:24]]
    assert max(day) - min(day) > 100  # the daily cycle is forecast, not a flat line


def test_forecast_rejects_bad_input(tmp_path: Path) -> None:
    csv_file = history(tmp_path / "h.csv", days=3)
    runner = CliRunner()
    assert runner.invoke(app, ["forecast", "x", "--hours", "169", "--csv", str(csv_file)]).exit_code == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("1,abc\n")
    assert runner.invoke(app, ["forecast", "x", "--csv", str(bad)]).exit_code == 2
