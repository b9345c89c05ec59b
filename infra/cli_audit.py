"""``swarmlog audit``, ``swarmlog archive`` and ``swarmlog restore``: thin adapters over
``infra/audit.py`` and ``infra/archive.py``.

Exit codes: 0 clean, 1 any discrepancy (audit) or a run-time failure (broker unreachable),
2 bad usage or bad input.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from swarmlog.streams.settings import get_settings

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
RawOpt = Annotated[bool, typer.Option("--raw-topics", help="Use TOPICS exactly, without the topic prefix.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar on stderr.")]


def _fail(message: str, code: int) -> None:
    typer.echo(f"swarmlog: error: {message}", err=True)
    raise typer.Exit(code)


def _bootstrap() -> str:
    from swarmlog.infra.broker import BrokerError, resolve_bootstrap

    try:
        return resolve_bootstrap(start_if_missing=False)
    except BrokerError as exc:
        _fail(str(exc), 1)
    raise AssertionError("unreachable")


def _existing_topics(bootstrap: str) -> set[str]:
    from swarmlog.infra.broker import admin_client

    return set(admin_client(bootstrap).list_topics(timeout=10).topics)


def _resolve_topics(bootstrap: str, topics: list[str] | None, raw: bool) -> list[str]:
    """Named topics (prefix applied unless raw), or every catalog event topic that exists."""
    from swarmlog.infra.topics import EVENT_TOPICS

    prefix = get_settings().topic_prefix
    existing = _existing_topics(bootstrap)
    if topics:
        names = [t if raw else prefix + t for t in topics]
        unknown = [n for n in names if n not in existing]
        if unknown:
            _fail(f"no such topic: {', '.join(unknown)}", 2)
        return names
    names = [prefix + t for t in EVENT_TOPICS if prefix + t in existing]
    if not names:
        _fail(f"none of the catalog topics exist under prefix {prefix!r}; name topics explicitly", 2)
    return names


@contextmanager
def _bar(enabled: bool, description: str) -> Iterator[Callable[[int, int], None]]:
    if not enabled:
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


def _parse_partitions(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        _fail(f"--partitions takes comma-separated numbers, got {text!r}", 2)
    return None


def audit_command(
    topics: Annotated[list[str] | None, typer.Argument(help="Topics to audit (logical names); default: every "
                                                            "catalog event topic that exists.")] = None,
    raw_topics: RawOpt = False,
    partitions: Annotated[str | None, typer.Option(help="Only these partitions, e.g. 0,2.")] = None,
    start: Annotated[int | None, typer.Option("--from", min=0, help="First offset of every partition.")] = None,
    end: Annotated[int | None, typer.Option("--to", min=0, help="Stop before this offset in every partition.")]
    = None,
    compare_live: Annotated[bool, typer.Option("--compare-live", help="Diff the rebuilt projections against the "
                                                                      "worker tables' changelog topics.")] = False,
    datadir: Annotated[list[Path] | None, typer.Option("--datadir", help="Diff against these worker RocksDB "
                                                                          "datadirs instead (repeatable).")]
    = None,
    app_id: Annotated[str | None, typer.Option(help="Worker app id (default: swarmlog + topic prefix).")] = None,
    hash_alg: Annotated[str, typer.Option("--hash", help="Ledger hash: sha256 or sha3-256.")] = "sha256",
    allow_pending: Annotated[bool, typer.Option("--allow-pending", help="Unsealed events at the end are warnings, "
                                                                        "not discrepancies.")] = False,
    json_out: JsonOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Verify a topic range end to end: seals, signatures, chains, sequence; rebuild every projection;
    recompute each lane's Merkle root against its checkpoints; optionally diff live tables.

    Exit 0 when clean, 1 on any discrepancy, 2 on bad usage.
    """
    from swarmlog.infra.audit import app_id_for, live_from_changelogs, live_from_datadirs, run_audit
    from swarmlog.streams.merkle import SHA3_256, SHA256
    from swarmlog.streams.reader import ReadError

    algs = {"sha256": SHA256, "sha3-256": SHA3_256, "sha3_256": SHA3_256}
    if hash_alg.lower() not in algs:
        _fail(f"--hash must be sha256 or sha3-256, not {hash_alg!r}", 2)
    if start is not None and end is not None and end <= start:
        _fail("--to must be greater than --from", 2)
    if (compare_live or datadir) and (start or end is not None or partitions is not None):
        _fail("--compare-live/--datadir need the whole log (no --from/--to/--partitions)", 2)
    for path in datadir or []:
        if not path.is_dir():
            _fail(f"--datadir {path} is not a directory", 2)
    parts = _parse_partitions(partitions)
    bootstrap = _bootstrap()
    names = _resolve_topics(bootstrap, topics, raw_topics)
    prefix = get_settings().topic_prefix
    try:
        with _bar(progress and not json_out, "audit") as tick:
            report = run_audit(bootstrap, names, prefix="" if raw_topics else prefix, partitions=parts,
                               start_offset=start, end_offset=end, alg=algs[hash_alg.lower()],
                               allow_pending=allow_pending, progress=tick)
        table_names = list(report.projections)
        if datadir:
            report.add_projection_diff(live_from_datadirs(datadir, table_names), "datadir")
        elif compare_live:
            live = live_from_changelogs(bootstrap, app_id or app_id_for(prefix), table_names)
            if not live:
                report.notes.append("no changelog topic found for any rebuilt table: nothing to compare")
            report.add_projection_diff(live, "changelog")
    except ReadError as exc:
        _fail(str(exc), 1)
    document = report.as_dict()
    document["topics"] = names
    if json_out:
        typer.echo(json.dumps(document, default=str))
    else:
        _print_report(document)
    raise typer.Exit(0 if report.ok else 1)


def _print_report(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    errors = [p for p in doc["problems"] if p["severity"] == "error"]
    console.print(f"[bold]audit of {len(doc['topics'])} topic(s), {doc['records']} records[/bold]: "
                  + ("[green]CLEAN[/green]" if doc["ok"] else f"[red]{len(errors)} discrepancy(ies)[/red]"))
    console.print("verdicts: " + json.dumps(doc["counts"]), markup=False, highlight=False)
    if doc["problems"]:
        table = Table("severity", "kind", "where", "reason", title="problems")
        for p in doc["problems"][:500]:
            where = p["topic"] + (f"[{p['partition']}]" if p["partition"] is not None else "") + \
                (f"@{p['offset']}" if p["offset"] is not None else "")
            table.add_row(p["severity"], p["kind"], where, p["reason"])
        console.print(table)
        if len(doc["problems"]) > 500:
            console.print(f"… {len(doc['problems']) - 500} more (use --json for all)")
    checked = [lane for lane in doc["lanes"] if lane["checkpoints"]]
    console.print(f"ledger: {len(doc['lanes'])} lane(s), {len(checked)} with checkpoints")
    for lane in checked:
        console.print(f"  {lane['origin']}: {lane['leaves']} leaves, root {lane['root'][:16]}…, {lane['status']}",
                      markup=False, highlight=False)
    for name, info in doc["projections"].items():
        live = doc["live_tables_equal_rebuilt"].get(name)
        suffix = "" if live is None else ("; live table equal" if live else "; LIVE TABLE DIFFERS")
        console.print(f"projection {name}: {info['keys']} keys, digest {info['digest'][:16]}…{suffix}",
                      markup=False, highlight=False)
    for name, why in doc["skipped_projections"].items():
        console.print(f"projection domain {name} skipped: {why}", markup=False, highlight=False)
    for note in doc["notes"]:
        console.print(f"note: {note}", markup=False, highlight=False)


def archive_command(
    output: Annotated[Path, typer.Argument(help="Archive file to write (Avro object container, e.g. log.avro).")],
    topics: Annotated[list[str] | None, typer.Argument(help="Topics (logical names); default: every catalog "
                                                            "event topic that exists.")] = None,
    raw_topics: RawOpt = False,
    codec: Annotated[str, typer.Option(help="Avro block codec: deflate or null.")] = "deflate",
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT if it exists.")] = False,
    json_out: JsonOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Write topics, byte for byte, to one Avro object container file (one file per run).

    Every record keeps its value, key, headers, partition, offset and timestamp; `swarmlog
    restore` produces them back into any broker unchanged (no re-signing).
    """
    from swarmlog.infra.archive import ArchiveError, archive_topics
    from swarmlog.streams.reader import ReadError

    if codec not in ("deflate", "null"):
        _fail(f"--codec must be deflate or null, not {codec!r}", 2)
    if output.exists() and not force:
        _fail(f"{output} exists (pass --force to overwrite)", 2)
    if not output.parent.is_dir():
        _fail(f"directory {output.parent} does not exist", 2)
    bootstrap = _bootstrap()
    names = _resolve_topics(bootstrap, topics, raw_topics)
    try:
        with _bar(progress and not json_out, "archive") as tick:
            summary = archive_topics(bootstrap, names, output, codec=codec, progress=tick)
    except (ArchiveError, ReadError, OSError) as exc:
        _fail(str(exc), 1)
    if json_out:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        typer.echo(f"archived {summary.records} records of {len(summary.topics)} topic(s) to {summary.path}")


def restore_command(
    archive: Annotated[Path, typer.Argument(help="An archive written by `swarmlog archive`.")],
    into_existing: Annotated[bool, typer.Option("--into-existing", help="Append to topics that already hold "
                                                                        "records (creates duplicates).")] = False,
    json_out: JsonOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Produce an archive into the broker: same topics, same partitions, same order, raw bytes.

    Restoring into a fresh broker (e.g. the embedded one after a restart, which keeps
    nothing) gives a log that audits exactly like the original.
    """
    from swarmlog.infra.archive import ArchiveError, read_archive_meta, restore_archive

    if not archive.is_file():
        _fail(f"{archive} is not a file", 2)
    try:
        read_archive_meta(archive)
    except ArchiveError as exc:
        _fail(str(exc), 2)
    bootstrap = _bootstrap()
    try:
        with _bar(progress and not json_out, "restore") as tick:
            summary = restore_archive(bootstrap, archive, into_existing=into_existing, progress=tick)
    except ArchiveError as exc:
        _fail(str(exc), 1)
    if json_out:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        typer.echo(f"restored {summary.records} records into {len(summary.topics)} topic(s)")


def register(app: typer.Typer) -> None:
    """Mount ``audit``, ``archive`` and ``restore`` on the root app (one line in cli.py)."""
    app.command("audit")(audit_command)
    app.command("archive")(archive_command)
    app.command("restore")(restore_command)
