"""``swarmlog forecast CAP --hours 168``: workload forecast and capacity plan for one capability.

History comes from the log (every authenticated ``commands.requested`` for the capability,
counted per UTC hour of its *event* time — replayed and verified here, no worker needed)
or from a CSV of ``timestamp_ms,count`` rows (``--csv``), e.g. an export from elsewhere.
The forecaster and the planner are the pure ``projections.forecast`` code.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from swarmlog.streams.settings import get_settings


def _fail(message: str, code: int) -> None:
    typer.echo(f"swarmlog: error: {message}", err=True)
    raise typer.Exit(code)


def _history_from_log(capability: str) -> list[tuple[int, float]]:
    from swarmlog.infra.broker import BrokerError, resolve_bootstrap
    from swarmlog.streams.reader import ReadError, read_verified
    from swarmlog.streams.verify import Status

    topic = get_settings().topic_prefix + "commands"
    rows: list[tuple[int, float]] = []
    try:
        bootstrap = resolve_bootstrap(start_if_missing=False)
        for verdict in read_verified(bootstrap, [topic]):
            event = verdict.event
            if verdict.status is not Status.AUTHENTICATED or event is None or \
                    event.event_type != "commands.requested":
                continue
            if event.decode_payload().get("capability") == capability:
                rows.append((event.timestamp_ms, 1.0))
    except (BrokerError, ReadError) as exc:
        _fail(str(exc), 1)
    return sorted(rows)


def _history_from_csv(path: Path) -> list[tuple[int, float]]:
    rows: list[tuple[int, float]] = []
    try:
        with path.open(newline="") as fh:
            for n, row in enumerate(csv.reader(fh), start=1):
                if not row or row[0].startswith("#") or (n == 1 and not row[0].strip().lstrip("-").isdigit()):
                    continue  # blank, comment or header line
                rows.append((int(row[0]), float(row[1])))
    except (OSError, ValueError, IndexError) as exc:
        _fail(f"{path}: expected rows of timestamp_ms,count ({exc})", 2)
    return sorted(rows)


def forecast_command(
    capability: Annotated[str, typer.Argument(help="Capability to forecast, e.g. ml.inference.")],
    hours: Annotated[int, typer.Option(help="Horizon in hours (1..168).")] = 24,
    capacity: Annotated[float, typer.Option(help="Current capacity, commands per hour.")] = 0.0,
    buffer: Annotated[float, typer.Option(help="Headroom multiplier on the peak.")] = 1.2,
    cost_per_unit_hour: Annotated[float, typer.Option(help="Cost of one command/hour of capacity per hour.")]
    = 0.001,
    model: Annotated[str, typer.Option(help="snarimax or holt-winters.")] = "snarimax",
    csv_file: Annotated[Path | None, typer.Option("--csv", help="History as timestamp_ms,count rows.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Forecast hourly load, recommend capacity (peak × buffer), assess risk, suggest scale-down savings."""
    from swarmlog.projections.forecast import MAX_HORIZON_HOURS, HourlyForecaster, plan_capacity

    if not 1 <= hours <= MAX_HORIZON_HOURS:
        _fail(f"--hours must be in 1..{MAX_HORIZON_HOURS}, got {hours}", 2)
    if capacity < 0 or buffer < 1.0:
        _fail("--capacity must be >= 0 and --buffer >= 1", 2)
    if model not in ("snarimax", "holt-winters"):
        _fail(f"--model must be snarimax or holt-winters, got {model!r}", 2)
    history = _history_from_csv(csv_file) if csv_file else _history_from_log(capability)
    if not history:
        _fail(f"no history for {capability!r}", 1)
    f = HourlyForecaster(model)
    for ts, amount in history:
        if amount < 0:
            _fail(f"negative count {amount} at {ts}", 2)
        f.record(ts, amount)
    hours_seen = f.series.n
    points = f.forecast(hours)
    plan = plan_capacity(capability, points, capacity, buffer, cost_per_unit_hour)
    document: dict[str, Any] = {
        **plan.as_event("", model if f.series.ready else "seasonal-naive" if hours_seen >= 24 else "mean",
                        1 - f.series.alpha if points[0].lower is not None else None),
        "action": plan.action, "history_hours": hours_seen,
    }
    document.pop("recommendation_id")
    if json_out:
        typer.echo(json.dumps(document))
        return
    typer.echo(f"{capability}: {hours_seen} h of history, model {document['model']}, horizon {hours} h")
    typer.echo(f"  peak {plan.peak_load:.1f}/h  current {plan.current_capacity:.1f}/h  "
               f"recommended {plan.recommended_capacity:.1f}/h ({plan.action}, buffer {buffer})")
    typer.echo(f"  risk {plan.risk_level}  cost change {plan.estimated_cost_change_per_day:+.2f}/day")
    for p in points[: min(len(points), 12)]:
        band = f"  [{p.lower:.1f}, {p.upper:.1f}]" if p.lower is not None and p.upper is not None else ""
        typer.echo(f"  {p.at_ms}: {p.load:.1f}{band}")
    if len(points) > 12:
        typer.echo(f"  … {len(points) - 12} more hours (--json for all)")
