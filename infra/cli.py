"""The ``swarmlog`` command.

Conventions: data goes to stdout (``--json`` gives one JSON document, or JSON lines for
streams); messages go to stderr; an error is one line and a non-zero exit — 2 for bad
usage or bad input, 1 for a failure at run time (broker unreachable, delivery failed).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated, Any, NoReturn

import click
import typer

from swarmlog.streams.codec import CodecError, default_store
from swarmlog.streams.settings import get_settings

app = typer.Typer(
    name="swarmlog",
    help=(
        "swarmlog — an event-sourced coordination fabric for autonomous agents on Kafka.\n\n"
        "Every fact is a signed Avro event on a Kafka topic. With no SWARMLOG_BOOTSTRAP set, "
        "commands use the embedded broker (`swarmlog broker up`)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

log = logging.getLogger("swarmlog.cli")


class UserError(Exception):
    """Bad usage or bad input: exit code 2."""


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line to stderr and exit."""
    typer.echo(f"swarmlog: error: {message}", err=True)
    raise typer.Exit(code)


def emit_json(document: Any) -> None:
    typer.echo(json.dumps(document, sort_keys=False, default=str))


def _mount_subcommands() -> None:
    from swarmlog.infra import (
        cli_audit,
        cli_broker,
        cli_keys,
        cli_learning,
        cli_ledger,
        cli_market,
        cli_query,
        cli_swarm,
        cli_trust,
        cli_worker,
    )

    app.command("worker")(cli_worker.worker_command)
    app.command("forecast")(cli_learning.forecast_command)
    app.add_typer(cli_query.agents_app, name="agents")
    app.add_typer(cli_query.consensus_app, name="consensus")
    app.add_typer(cli_query.commands_app, name="commands")
    app.add_typer(cli_swarm.app, name="swarm")
    app.add_typer(cli_market.app, name="market")
    app.add_typer(cli_query.sessions_app, name="sessions")
    app.add_typer(cli_trust.app, name="trust")

    app.add_typer(cli_broker.app, name="broker", help="Start, stop and check the embedded Kafka-protocol broker.")
    app.add_typer(cli_keys.app, name="keys", help="Create and inspect agent identities (Ed25519 + ML-DSA-65).")
    app.add_typer(cli_ledger.app, name="ledger")
    cli_audit.register(app)  # audit, archive, restore


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress to stderr.")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


@app.command("run")
def run_cmd(
    agents: Annotated[int, typer.Option(min=1, help="Simulated agents, each with its own identity.")] = 200,
    commands: Annotated[int, typer.Option(min=1, help="Commands the orchestrator sends.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed of the simulation.")] = 2028,
    timeout: Annotated[float, typer.Option(help="Give up waiting for the worker after this many seconds.")] = 180,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """The main job: a simulated multi-cloud agent population on a real broker and worker.

    Starts the embedded broker (unless SWARMLOG_BOOTSTRAP is set) and a worker, registers
    the agents, routes commands with every strategy, collects receipts, runs a BFT vote on
    a critical operation, then replays and verifies the whole log and prints a summary.
    """
    from swarmlog.infra.run import run_main_job

    summary = run_main_job(agents, commands, seed, timeout, progress=not json_out)
    if json_out:
        emit_json(summary)
    else:
        _print_summary(summary)
    if not summary.get("complete"):
        fail("the run did not complete (see the worker log tail above)", 1)


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table("", "", title="swarmlog run", show_header=False)
    for key in ("broker", "agents", "commands_sent", "routed", "route_failed", "receipts", "votes", "consensus",
                "seconds_to_first_route", "seconds_to_decision"):
        value = summary.get(key)
        table.add_row(key.replace("_", " "), f"{value:.1f}" if isinstance(value, float) else str(value))
    table.add_row("route failures", json.dumps(summary.get("route_failures_by_reason", {})))
    table.add_row("commands (replayed)", json.dumps(summary.get("commands_by_status", {})))
    table.add_row("agents per capability", json.dumps(summary.get("agents_per_capability", {})))
    table.add_row("proposals (replayed)", json.dumps(summary.get("proposals", [])))
    table.add_row("verification (replayed)", json.dumps(summary.get("verification", {})))
    if "swarm" in summary:
        sw = summary["swarm"]
        vote = sw["vote"].get("result") or {}
        table.add_row("swarm vote", f"{vote.get('decision')} (confidence {vote.get('confidence', 0):.2f}, "
                      f"{sw['vote']['equivocating_voters']} equivocating, {sw['vote']['late_votes']} late)")
        table.add_row("hive mind", f"generation {sw['hivemind']['generation']}, "
                      f"intentions {sw['hivemind']['intentions']}")
        table.add_row("task auction", f"{sw['task']['status']} to {str(sw['task']['assignee'])[:24]}… "
                      f"(score {sw['task']['score']}, {sw['task']['bids']} bids)")
        table.add_row("optimisation (PSO, Rastrigin d=5)", json.dumps(sw["optimization"]))
        table.add_row("formation (CIRCLE)", json.dumps(sw["formation"]))
    table.add_row("live tables == replay", json.dumps(summary.get("live_tables_equal_replay", {})))
    table.add_row("phases (s)", json.dumps(summary.get("phases_seconds", {})))
    from swarmlog.infra.run_heal import one_line

    table.add_row("self-healing", one_line(summary.get("self_healing")))
    console.print(table)
    if "worker_log_tail" in summary:
        console.print(summary["worker_log_tail"], markup=False)


@app.command("topics")
def topics_cmd(
    provision: Annotated[bool, typer.Option("--provision", help="Create the missing catalog topics first.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """List topics with partitions and message counts."""
    from swarmlog.infra.cli_broker import topics_command

    topics_command(json_out=json_out, provision=provision)


@app.command("schemas")
def schemas_cmd(
    json_out: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """List every event type with its topic, subject field and schema fingerprint."""
    store = default_store()
    rows = []
    for event_type in store.event_types():
        entry = store.for_event_type(event_type)
        rows.append({"event_type": event_type, "topic": entry.topic, "subject": entry.subject_field,
                     "schema": entry.full_name, "fingerprint": entry.fingerprint.hex()})
    if json_out:
        emit_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("event type", "topic", "subject", "schema", "fingerprint")
    for row in rows:
        table.add_row(*(str(row[k]) for k in ("event_type", "topic", "subject", "schema", "fingerprint")))
    Console().print(table)


@app.command("produce")
def produce_cmd(
    event_type: Annotated[str, typer.Argument(help="Event type, e.g. agents.registered (see `swarmlog schemas`).")],
    data: Annotated[str | None, typer.Option("--data", "-d", help="Payload as JSON; default: read stdin.")] = None,
    key: Annotated[str, typer.Option("--key", "-k", help="Keystore identity that signs (created if missing).")]
    = "default",
    subject: Annotated[str | None, typer.Option(help="Kafka key; default: the schema's subject field.")] = None,
    topic: Annotated[str | None, typer.Option(help="Topic override; default: the schema's topic.")] = None,
    sign: Annotated[bool, typer.Option("--sign", help="Also attach an inline hybrid signature.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Produce one signed event (JSON payload on stdin or --data) and seal it.

    Bytes fields take base64, ids take UUID text, hashes take hex. One JSON object per
    line on stdin produces several events, sealed together.
    """
    from swarmlog.infra.broker import BrokerError, resolve_bootstrap
    from swarmlog.infra.topics import ProvisionError, provision
    from swarmlog.streams.jsonio import from_json
    from swarmlog.streams.keystore import Keystore, KeystoreError
    from swarmlog.streams.producer import EventProducer, ProduceError

    store = default_store()
    try:
        entry = store.for_event_type(event_type)
    except CodecError:
        fail(f"unknown event type {event_type!r} (list them with `swarmlog schemas`)", 2)
    text = data if data is not None else sys.stdin.read()
    documents = _parse_json_documents(text)
    payloads = []
    for index, document in enumerate(documents):
        try:
            payloads.append(from_json(entry.parsed, document, store.named_types))
        except CodecError as exc:
            prefix = f"payload {index + 1}: " if len(documents) > 1 else ""
            fail(f"{event_type}: {prefix}{exc}", 2)
    settings = get_settings()
    try:
        identity = Keystore().load_or_create(key, passphrase=settings.passphrase)
    except KeystoreError as exc:
        fail(str(exc), 2)
    try:
        bootstrap = resolve_bootstrap(start_if_missing=True)
        target = topic or settings.topic_prefix + (entry.topic or "")
        identity_topic = settings.topic_prefix + "trust"
        provision(bootstrap)
        if topic is not None:
            _ensure_topic(bootstrap, topic)
        with EventProducer(identity, bootstrap, seal_batch=settings.seal_batch,
                           seal_interval_ms=settings.seal_interval_ms, topic_prefix=settings.topic_prefix,
                           identity_topic=identity_topic) as producer:
            refs = [producer.produce(event_type, payload, subject=subject, topic=target, sign=sign)
                    for payload in payloads]
    except (BrokerError, ProvisionError, ProduceError) as exc:
        fail(str(exc), 1)
    except CodecError as exc:
        fail(str(exc), 2)
    out = [{"event_id": _uuid(r.event_id), "topic": r.topic, "partition": r.partition, "lane": r.lane,
            "seq": r.seq, "hash": r.hash.hex(), "producer": identity.did} for r in refs]
    if json_out:
        emit_json(out[0] if len(out) == 1 else out)
    else:
        for row in out:
            typer.echo(f"{row['event_id']}  {row['lane']}  seq {row['seq']}  {row['hash'][:16]}…")


@app.command("tail")
def tail_cmd(
    topic: Annotated[str, typer.Argument(help="Topic to read (logical name; the prefix is applied).")],
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the oldest record.")] = False,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="Keep waiting for new events.")] = False,
    limit: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    show_rejected: Annotated[bool, typer.Option("--all", help="Also print rejected records.")] = False,
    raw_topic: Annotated[bool, typer.Option("--raw-topic", help="Use TOPIC exactly, without the prefix.")]
    = False,
    json_out: Annotated[bool, typer.Option("--json", help="JSON lines on stdout.")] = False,
) -> None:
    """Decode and verify events of a topic; print them as they are authenticated."""
    from swarmlog.infra.broker import BrokerError, resolve_bootstrap
    from swarmlog.streams.reader import ReadError, read_verified
    from swarmlog.streams.verify import Status

    settings = get_settings()
    name = topic if raw_topic else settings.topic_prefix + topic
    try:
        bootstrap = resolve_bootstrap(start_if_missing=False)
    except BrokerError as exc:
        fail(str(exc), 1)
    store = default_store()
    shown = 0
    try:
        for verdict in read_verified(bootstrap, [name], from_beginning=from_beginning, follow=follow):
            if verdict.kind == "seal" and verdict.status is Status.AUTHENTICATED:
                continue
            if verdict.status is not Status.AUTHENTICATED and not show_rejected:
                if verdict.kind == "event" or verdict.status is not Status.AUTHENTICATED:
                    log.warning("%s %s: %s", verdict.record.position, verdict.status.value, verdict.reason)
                continue
            row = verdict_to_json(verdict, store)
            if json_out:
                typer.echo(json.dumps(row, default=str))
            else:
                typer.echo(_human_line(row))
            shown += 1
            if limit is not None and shown >= limit:
                break
    except ReadError as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def verdict_to_json(verdict: Any, store: Any) -> dict[str, Any]:
    """One verdict as a JSON-ready dict (payload decoded when possible)."""
    from swarmlog.streams.jsonio import to_json

    record = verdict.record
    row: dict[str, Any] = {"status": verdict.status.value, "reason": verdict.reason, "kind": verdict.kind,
                           "topic": record.topic, "partition": record.partition, "offset": record.offset}
    event = verdict.event
    if event is not None:
        row.update({"event_id": _uuid(event.event_id), "event_type": event.event_type,
                    "producer": event.producer, "subject": event.subject, "lane": event.lane,
                    "seq": event.seq, "timestamp_ms": event.timestamp_ms, "hash": event.hash.hex(),
                    "signed": event.auth is not None})
        try:
            entry = store.for_event_type(event.event_type)
            row["payload"] = to_json(entry.parsed, event.decode_payload(store), store.named_types)
        except CodecError as exc:
            row["payload_error"] = str(exc)
    return row


def _human_line(row: dict[str, Any]) -> str:
    payload = json.dumps(row.get("payload"), separators=(",", ":"), default=str)
    if len(payload) > 160:
        payload = payload[:157] + "..."
    return (f"{row['topic']}[{row['partition']}]@{row['offset']} {row.get('event_type', row['kind'])} "
            f"{row.get('subject', '')} {row['status']} {payload}")


def _uuid(raw: bytes) -> str:
    from swarmlog.streams.ids import uuid_text

    return uuid_text(raw)


def _parse_json_documents(text: str) -> list[Any]:
    text = text.strip()
    if not text:
        fail("no payload: pass --data JSON or JSON on stdin", 2)
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        pass
    documents = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            documents.append(json.loads(line))
        except json.JSONDecodeError as exc:
            fail(f"stdin line {number}: invalid JSON: {exc.msg}", 2)
    return documents


def _ensure_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import NewTopic

    from swarmlog.infra.broker import admin_client

    admin = admin_client(bootstrap)
    if topic in admin.list_topics(timeout=10).topics:
        return
    futures = admin.create_topics([NewTopic(topic, get_settings().partitions, get_settings().replication)])
    for future in futures.values():
        try:
            future.result()
        except Exception as exc:  # TopicAlreadyExists races are fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def main() -> None:
    """Console entry point: maps errors to one line and an exit code."""
    try:
        code = app(standalone_mode=False)
    except click.exceptions.UsageError as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except UserError as exc:
        typer.echo(f"swarmlog: error: {exc}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


_mount_subcommands()


if __name__ == "__main__":
    main()
