"""``swarmlog ledger root | prove EVENT_ID | consistency OLD NEW``: the audit ledger's tree heads and proofs.

By default the running workers answer (each holds the ledger lanes of the partitions it owns);
``--from-log`` replays and verifies the topics instead and rebuilds the ledger through the same
pure code (:func:`swarmlog.projections.ledger.replay_ledger`) -- what an auditor computes. With
``--json`` every hash is hex and every proof is in :func:`swarmlog.streams.merkle.proof_to_json`
form (RFC 9162 field names), so a verifier in any language can check it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer

from swarmlog.infra.cli_query import _fail, worker_answers
from swarmlog.streams.settings import get_settings

app = typer.Typer(help="The Merkle audit ledger: tree heads, inclusion and consistency proofs.",
                  no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (hex hashes).")]
FromLogOpt = Annotated[bool, typer.Option("--from-log", help="Replay and verify the log instead of asking workers.")]
TopicOpt = Annotated[list[str] | None, typer.Option("--topic", help="With --from-log: logical topics to replay "
                                                    "(default: every topic the workers consume).")]


def _ask_all(path: str) -> list[tuple[int, Any]]:
    """(status, JSON) from every running worker for ``path``."""
    return list(worker_answers(path))


def _replayed_store(topics: list[str] | None) -> Any:
    from swarmlog.infra.broker import BrokerError, resolve_bootstrap
    from swarmlog.processors.app import default_domains
    from swarmlog.processors.ledger_app import policy_from_settings
    from swarmlog.projections.ledger import replay_ledger
    from swarmlog.streams.reader import ReadError, plan_ranges, read_records

    settings = get_settings()
    names = topics or sorted({t for topics_, _ in default_domains().values() for t in topics_})
    try:
        bootstrap = resolve_bootstrap(start_if_missing=False)
        records = read_records(bootstrap, plan_ranges(bootstrap, [settings.topic_prefix + t for t in names]))
        return replay_ledger(records, policy_from_settings()).store
    except (BrokerError, ReadError) as exc:
        _fail(str(exc), 1)


def _emit(value: Any, json_out: bool) -> None:
    typer.echo(json.dumps(value, indent=None if json_out else 2, default=str))


@app.command("root")
def root_cmd(
    origin: Annotated[str | None, typer.Option(help="Only this lane (e.g. swarmlog/ledger/commands/0).")] = None,
    from_log: FromLogOpt = False,
    topic: TopicOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Tree size and root of every ledger lane, with its last checkpoint."""
    from swarmlog.projections.ledger import ledger_summary

    if from_log:
        lanes = ledger_summary(_replayed_store(topic))
    else:
        lanes = [row for status, doc in _ask_all("/swarmlog/ledger/") if status == 200 for row in doc["lanes"]]
    lanes = sorted((row for row in lanes if origin is None or row["origin"] == origin), key=lambda r: r["origin"])
    if origin is not None and not lanes:
        _fail(f"no ledger lane {origin}", 2)
    if json_out:
        _emit({"lanes": lanes}, True)
        return
    for row in lanes:
        typer.echo(f"{row['origin']}  size {row['tree_size']}  root {row['root_hash']}  "
                   f"({row['hash_algorithm']}; last checkpoint at {row['checkpoint_size']})")


@app.command("prove")
def prove_cmd(
    event_id: Annotated[str, typer.Argument(help="Event id (UUID text, as `swarmlog tail` shows it).")],
    from_log: FromLogOpt = False,
    topic: TopicOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Inclusion proof of an event in its lane's tree, and its timestamp proof (the inclusion in
    the first checkpoint covering it)."""
    from swarmlog.projections.ledger import prove_event
    from swarmlog.streams.merkle import ProofError

    doc: Any = None
    if from_log:
        try:
            doc = prove_event(_replayed_store(topic), event_id)
        except ProofError as exc:
            _fail(str(exc), 2)
    else:
        for status, answer in _ask_all(f"/swarmlog/ledger/prove/{quote(event_id, safe='')}/"):
            if status == 200:
                doc = answer
                break
            if status == 409:
                _fail(str(answer.get("error")), 2)
    if doc is None:
        _fail(f"event {event_id} is not in the ledger", 2)
    if json_out:
        _emit(doc, True)
        return
    proof = doc["proof"]
    typer.echo(f"{doc['origin']}: leaf {doc['leaf_index']} of {doc['tree_size']} (event hash {doc['event_hash']})")
    typer.echo(f"  root {proof['root_hash']}  path of {len(proof['inclusion_path'])} hashes")
    stamp = doc.get("timestamp")
    if stamp:
        cp = stamp["checkpoint"]
        typer.echo(f"  first checkpoint covering it: size {cp['tree_size']} root {cp['root_hash']} "
                   f"(event time {cp['timestamp_ms']} ms)")
    else:
        typer.echo("  not yet covered by a checkpoint")


@app.command("consistency")
def consistency_cmd(
    old: Annotated[int, typer.Argument(help="Older tree size (>= 1).")],
    new: Annotated[int, typer.Argument(help="Newer tree size.")],
    origin: Annotated[str | None, typer.Option(help="The lane (required when several lanes exist).")] = None,
    from_log: FromLogOpt = False,
    topic: TopicOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """RFC 9162 consistency proof between tree sizes OLD and NEW of a lane, with both roots."""
    from swarmlog.projections.ledger import ledger_lanes, prove_consistency
    from swarmlog.streams.merkle import ProofError

    if old < 1 or new < old:
        _fail("need 1 <= OLD <= NEW (RFC 9162: no consistency proof from the empty tree, trees only grow)", 2)
    doc: Any = None
    if from_log:
        store = _replayed_store(topic)
        lanes = ledger_lanes(store)
        if origin is None:
            if len(lanes) != 1:
                _fail(f"pass --origin, one of: {', '.join(lanes) or '(no lanes)'}", 2)
            origin = lanes[0]
        if origin not in lanes:
            _fail(f"no ledger lane {origin}", 2)
        try:
            doc = prove_consistency(store, origin, old, new)
        except ProofError as exc:
            _fail(str(exc), 2)
    else:
        if origin is None:
            _fail("pass --origin (see `swarmlog ledger root`)", 2)
        query = urlencode({"origin": origin, "old": old, "new": new})
        for status, answer in _ask_all(f"/swarmlog/ledger/consistency/?{query}"):
            if status == 200:
                doc = answer
                break
            if status == 400:
                _fail(str(answer.get("error")), 2)
        if doc is None:
            _fail(f"no running worker holds lane {origin}", 2)
    if json_out:
        _emit(doc, True)
        return
    proof = doc["proof"]
    typer.echo(f"{doc['origin']}: {proof['tree_size_1']} -> {proof['tree_size_2']}")
    typer.echo(f"  first root  {proof['first_hash']}\n  second root {proof['second_hash']}")
    typer.echo(f"  proof: {len(proof['consistency_path'])} hashes")
