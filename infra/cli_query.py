"""``swarmlog agents|consensus|commands|sessions``: query the projections.

By default the running workers answer (their HTTP views; each worker holds the full
registry and the shards of the partitions it owns, so the CLI asks each in turn). With
``--from-log`` the CLI instead replays and verifies the topics itself through the same
reducers — slower, but needs no worker and is exactly what an auditor would compute.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote

import typer

from swarmlog.streams.settings import get_settings

agents_app = typer.Typer(help="Registered agents: find by capability, show one.", no_args_is_help=True)
consensus_app = typer.Typer(help="Consensus proposals and their votes.", no_args_is_help=True)
commands_app = typer.Typer(help="Commands: routing decision and receipt.", no_args_is_help=True)
sessions_app = typer.Typer(help="Distributed sessions: state, timeout, command/receipt history.",
                           no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
FromLogOpt = Annotated[bool, typer.Option("--from-log", help="Replay and verify the log instead of asking workers.")]


class NotFound(Exception):
    pass


def _fail(message: str, code: int) -> None:
    typer.echo(f"swarmlog: error: {message}", err=True)
    raise typer.Exit(code)


def worker_answers(path: str, timeout: float = 5.0) -> Iterator[tuple[int, Any]]:
    """(HTTP status, JSON body) of GET ``path`` from each running worker that answers.

    Workers register their URL in ``SWARMLOG_HOME`` (processors/views.py); one that does not
    answer is skipped. If none answers at all the command fails with one clear line.
    """
    from swarmlog.processors.views import endpoints

    answered = 0
    for info in endpoints(get_settings().home):
        try:
            with urllib.request.urlopen(info["url"] + path, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, TimeoutError, ConnectionError):
            continue
        answered += 1
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"error": raw.decode("utf-8", "replace")[:200]}
        yield status, body
    if not answered:
        _fail("no running worker found (start one: `swarmlog worker`), or use --from-log", 1)


def _ask_workers(path: str) -> Any:
    """The first worker's 200 answer for ``path``; NotFound if every worker says 404."""
    for status, body in worker_answers(path):
        if status == 200:
            return body
        if status != 404:
            _fail(f"worker answered {status} for {path}: {body}", 1)
    raise NotFound(path)


def _replay(topics: list[str], projections: list[Any], stores: dict[str, Any] | None = None) -> Any:
    from swarmlog.infra.broker import BrokerError, resolve_bootstrap
    from swarmlog.projections.engine import Engine
    from swarmlog.streams.reader import ReadError, plan_ranges, read_record_batches

    prefix = get_settings().topic_prefix
    try:
        bootstrap = resolve_bootstrap(start_if_missing=False)
        engine = Engine(projections, stores)
        for batch in read_record_batches(bootstrap, plan_ranges(bootstrap, [prefix + t for t in topics])):
            engine.feed_many(batch)
    except (BrokerError, ReadError) as exc:
        _fail(str(exc), 1)
    engine.finish()
    return engine


def _emit(value: Any, json_out: bool) -> None:
    if json_out or not isinstance(value, (dict, list)):
        typer.echo(json.dumps(value, indent=None if json_out else 2, default=str))
        return
    from rich.console import Console
    from rich.pretty import Pretty

    Console().print(Pretty(value))


@agents_app.command("find")
def agents_find(
    capability: Annotated[str, typer.Argument(help="Capability, e.g. database.query.")],
    include_expired: Annotated[bool, typer.Option("--all", help="Include agents whose heartbeats stopped.")]
    = False,
    from_log: FromLogOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Agents serving CAPABILITY (live ones; --all adds expired), with fitness."""
    from swarmlog.projections.registry import RegistryProjection, find_by_capability

    if from_log:
        engine = _replay(["agents", "commands", "receipts"], [RegistryProjection()])
        agents = find_by_capability(engine.stores["registry"], capability, include_expired=include_expired)
    else:
        suffix = "&all=1" if include_expired else ""
        agents = _ask_workers(f"/swarmlog/agents/?capability={quote(capability)}{suffix}")["agents"]
    if json_out:
        _emit(agents, True)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("agent", "status", "health", "latency ms", "reliability", "load", "fitness", "region",
                  title=f"{capability}: {len(agents)} agent(s)")
    for a in agents:
        table.add_row(str(a.get("agent_id")), str(a.get("status")), f"{a.get('health', 0):.2f}",
                      f"{a.get('latency_ms', 0):.1f}", f"{a.get('reliability', 0):.3f}",
                      f"{a.get('load')}/{a.get('max_concurrency')}", f"{a.get('fitness', 0):.3f}",
                      f"{a.get('cloud') or ''} {a.get('region') or ''}")
    Console().print(table)


@agents_app.command("show")
def agents_show(
    agent_id: Annotated[str, typer.Argument(help="Agent id (its DID).")],
    from_log: FromLogOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """One agent's record."""
    from swarmlog.projections.registry import RegistryProjection, get_agent

    try:
        if from_log:
            engine = _replay(["agents", "commands", "receipts"], [RegistryProjection()])
            agent = get_agent(engine.stores["registry"], agent_id)
            if agent is None:
                raise NotFound(agent_id)
        else:
            agent = _ask_workers(f"/swarmlog/agents/{quote(agent_id, safe='')}/")
    except NotFound:
        _fail(f"unknown agent {agent_id}", 2)
    _emit(agent, json_out)


def _replay_projection(projection_name: str, topics: list[str]) -> Any:
    """A verified replay of one worker projection, with what it reads rebuilt as the audit does.

    The registry is folded from its own topics; other read-only stores (the router's learned
    latency models and trust graph) only shape *derived* decisions, which the log records and
    the projection folds — an empty store gives the same table.
    """
    from swarmlog.processors.app import default_domains
    from swarmlog.projections.base import MemoryStore
    from swarmlog.projections.registry import RegistryProjection

    projections: list[Any] = [p for _, (_, factory) in default_domains().items() for p in factory()
                              if p.name == projection_name]
    reads = {name for p in projections for name in p.reads}
    if "registry" in reads:
        projections = [RegistryProjection(), *projections]
        topics = [*dict.fromkeys(["agents", "commands", "receipts", *topics])]
    return _replay(topics, projections, {name: MemoryStore() for name in reads - {"registry"}})


def _show_key(view: str, key: str, topics: list[str], projection_name: str, prefix: str, from_log: bool,
              json_out: bool) -> None:
    try:
        if from_log:
            engine = _replay_projection(projection_name, topics)
            value = engine.stores[projection_name].get(prefix + key)
            if value is None:
                raise NotFound(key)
        else:
            value = _ask_workers(f"/swarmlog/{view}/{quote(key, safe='')}/")
    except NotFound:
        _fail(f"unknown {view[:-1]} {key}", 2)
    _emit(value, json_out)


@consensus_app.command("show")
def consensus_show(
    proposal_id: Annotated[str, typer.Argument(help="Proposal id.")],
    from_log: FromLogOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """A proposal: policy, eligible voters, tallies, status, decision."""
    _show_key("proposals", proposal_id, ["consensus"], "consensus", "proposal/", from_log, json_out)


@commands_app.command("show")
def commands_show(
    command_id: Annotated[str, typer.Argument(help="Command id.")],
    from_log: FromLogOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """A command: routing decision, chosen agent, receipt."""
    _show_key("commands", command_id, ["commands", "receipts"], "routing", "cmd/", from_log, json_out)


@sessions_app.command("show")
def sessions_show(
    session_id: Annotated[str, typer.Argument(help="Session id.")],
    from_log: FromLogOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """A session: owner, state, expiry, counters and its command/receipt history."""
    _show_key("sessions", session_id, ["sessions"], "sessions", "session/", from_log, json_out)
