"""``swarmlog broker up|down|status`` and ``swarmlog topics``.

Why separate from the root CLI: these commands only need the broker and topic modules,
so they stay importable (and testable) without Faust or the crypto stack.

Conventions (DESIGN.md §7): human output is a rich table on stdout; ``--json`` prints
exactly one JSON document on stdout; failures print ONE line on stderr and exit 1
(runtime) or 2 (bad usage / bad input).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Annotated, Any, NoReturn

import typer
from confluent_kafka import KafkaException
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from swarmlog.infra import broker as _broker
from swarmlog.infra import topics as _topics

log = logging.getLogger(__name__)

app = typer.Typer(
    help="Run the embedded Kafka-protocol broker (Tansu, memory-only: it keeps nothing across a restart).",
    no_args_is_help=True,
)

_out = Console(soft_wrap=True)  # never break paths or addresses across lines


def _fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr, then exit with ``code`` (1 runtime, 2 bad usage)."""
    first = " ".join(str(message).split("\n", 1)[0].split())
    typer.echo(f"error: {first}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Map failures to one stderr line and an exit code: bad settings or input → 2,
    anything the broker or the environment did → 1."""
    try:
        yield
    except ValidationError as exc:  # SWARMLOG_* settings that do not parse
        err = exc.errors()[0]
        where = "SWARMLOG_" + str(err["loc"][0]).upper() if err.get("loc") else "settings"
        _fail(f"invalid {where}: {err['msg']}", 2)
    except (_broker.BrokerError, _topics.ProvisionError, _topics.TopicNotFound) as exc:
        _fail(str(exc))
    except KafkaException as exc:
        _fail(f"Kafka did not answer: {exc.args[0].str() if exc.args else exc}")
    except ValueError as exc:  # e.g. a SWARMLOG_TOPIC_PREFIX that makes invalid topic names
        _fail(str(exc), 2)


def _emit_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, default=str))


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]


@app.command("up")
def up(
    port: Annotated[
        int | None, typer.Option("--port", "-p", help="Loopback port to listen on (default: a free one).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Start the shared embedded broker (idempotent) and print where it listens."""
    if port is not None and not 1 <= port <= 65535:
        _fail(f"--port must be between 1 and 65535, got {port}", 2)
    with _errors():
        state, started = _broker.ensure_broker_up(port)
    if json_out:
        _emit_json({"started": started, **state.model_dump(mode="json")})
        return
    verb = "started" if started else "already running"
    _out.print(f"embedded broker {verb} on [bold]{state.bootstrap}[/bold] (pid {state.pid})")
    _out.print("memory-only: it keeps nothing across a restart. Log: " + str(state.log_path))


@app.command("down")
def down(json_out: JsonOpt = False) -> None:
    """Stop the shared embedded broker (its topics and messages are gone afterwards)."""
    with _errors():
        before = _broker.read_state()
        stopped = _broker.broker_down()
    if json_out:
        doc: dict[str, Any] = {"stopped": stopped}
        if stopped and before is not None:
            doc.update(pid=before.pid, bootstrap=before.bootstrap)
        _emit_json(doc)
        return
    if stopped and before is not None:
        _out.print(f"stopped embedded broker on {before.bootstrap} (pid {before.pid})")
    else:
        _out.print("no embedded broker was running")


@app.command("status")
def status(json_out: JsonOpt = False) -> None:
    """Show whether the shared embedded broker runs and answers Kafka metadata."""
    with _errors():
        st = _broker.broker_status()
    if json_out:
        _emit_json(st.model_dump(mode="json"))
        return
    table = Table(title="embedded broker", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("running", "yes" if st.running else "no")
    if st.state is not None:
        table.add_row("bootstrap", st.state.bootstrap)
        table.add_row("pid", f"{st.state.pid} ({'alive' if st.pid_alive else 'dead'})")
        table.add_row("metadata", "reachable" if st.reachable else "not reachable")
        table.add_row("topics", "-" if st.topics is None else str(st.topics))
        table.add_row("started", st.state.started_at.isoformat(timespec="seconds"))
        table.add_row("log", st.state.log_path or "-")
    table.add_row("state file", st.state_file)
    if st.stale_cleaned:
        table.add_row("note", "removed a stale state file (the recorded process was gone)")
    if st.error and st.state is not None:
        table.add_row("error", st.error)
    _out.print(table)


def topics_command(
    json_out: JsonOpt = False,
    provision: Annotated[
        bool,
        typer.Option(
            "--provision",
            help="Create the missing catalog topics first (starts the embedded broker "
            "if no SWARMLOG_BOOTSTRAP is set and none runs).",
        ),
    ] = False,
) -> None:
    """List topics with partitions and message counts; --provision creates the catalog."""
    with _errors():
        for spec in _topics.catalog():
            spec.name()  # raises on a bad SWARMLOG_TOPIC_PREFIX before we start a broker
        bootstrap = _broker.resolve_bootstrap(start_if_missing=provision)
        try:
            created = _topics.provision(bootstrap) if provision else []
            infos = _topics.describe(bootstrap)
        except KafkaException as exc:
            _fail(f"Kafka at {bootstrap} did not answer: {exc.args[0].str() if exc.args else exc}")
    if json_out:
        _emit_json(
            {
                "bootstrap": bootstrap,
                "created": created,
                "topics": [info.model_dump(mode="json") for info in infos],
            }
        )
        return
    table = Table(title=f"topics on {bootstrap}")
    table.add_column("topic")
    table.add_column("catalog")
    table.add_column("partitions", justify="right")
    table.add_column("messages", justify="right")
    for info in infos:
        mark = " (new)" if info.name in created else ""
        table.add_row(info.name + mark, info.logical or "-", str(info.partitions), f"{info.messages:,}")
    _out.print(table)
    if not infos:
        _out.print("no topics yet: run `swarmlog topics --provision` to create the catalog")


__all__ = ["app", "down", "status", "topics_command", "up"]
