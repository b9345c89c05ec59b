"""``swarmlog trust score|path|delegations``: the trust network, computed from the log.

Global trust (EigenTrust) and transitive paths need the whole trust graph, while each
worker holds only the table shards of the partitions it owns. So these commands replay
and verify the ``trust`` topic through the same reducer the workers run
(``TrustProjection``) and query the result — exactly what an auditor computes.
``--from-log`` is therefore the default (and the only mode); the flag exists so scripts
written against ``swarmlog agents|commands`` read the same.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from swarmlog.infra.cli_query import FromLogOpt, JsonOpt, _emit, _fail, _replay

app = typer.Typer(help="Trust network: scores, transitive paths, delegation chains (replayed from the log).",
                  no_args_is_help=True)

PretrustedOpt = Annotated[list[str] | None, typer.Option(
    "--pretrusted", help="A pre-trusted agent DID for EigenTrust (repeat for several).")]
AtOpt = Annotated[int | None, typer.Option("--at", help="Evaluate at this event time (ms); default: newest event.")]


def _store() -> Any:
    from swarmlog.projections.trust import TrustProjection

    return _replay(["trust"], [TrustProjection()]).stores["trust"]


@app.command("score")
def score(
    agent_id: Annotated[str, typer.Argument(help="Agent DID.")],
    pretrusted: PretrustedOpt = None,
    at: AtOpt = None,
    from_log: FromLogOpt = True,
    json_out: JsonOpt = False,
) -> None:
    """An agent's global trust (EigenTrust), the spec's Bayesian score (conservative 95 %) and its Beta view."""
    from swarmlog.projections.trust import agent_trust, clock_of, global_trust, revoked_at, trust_score

    store = _store()
    now = at if at is not None else clock_of(store)
    spec = agent_trust(store, agent_id, now_ms=now)
    known = spec is not None or store.get(f"identity/{agent_id}") is not None
    if not known:
        _fail(f"unknown agent {agent_id} (no identity and no observation in the trust topic)", 2)
    eigen = global_trust(store, pretrusted or (), now)
    _emit({
        "agent_id": agent_id, "at_ms": now,
        "global": trust_score(store, agent_id, pretrusted=pretrusted or (), now_ms=now),
        "eigentrust_share": eigen.scores.get(agent_id, 0.0), "distrust": eigen.distrust.get(agent_id, 0.0),
        "agents": len(eigen.scores),
        "pretrusted": list(eigen.pretrusted), "converged": eigen.converged,
        "spec": spec, "revoked_ms": revoked_at(store, agent_id),
    }, json_out)


@app.command("path")
def path(
    source: Annotated[str, typer.Argument(help="Trusting agent DID.")],
    target: Annotated[str, typer.Argument(help="Trusted agent DID.")],
    at: AtOpt = None,
    from_log: FromLogOpt = True,
    json_out: JsonOpt = False,
) -> None:
    """Transitive trust from SOURCE to TARGET: best path product of pair scores, paths below 0.1 pruned."""
    from swarmlog.projections.trust import trust_path

    found = trust_path(_store(), source, target, now_ms=at)
    if found is None:
        _fail(f"no trust path from {source} to {target} above 0.1", 2)
        return
    _emit({"source": found.source, "target": found.target, "trust": found.trust, "path": list(found.path),
           "hops": len(found.path) - 1}, json_out)


@app.command("delegations")
def delegations(
    agent_id: Annotated[str, typer.Argument(help="Agent DID.")],
    at: AtOpt = None,
    from_log: FromLogOpt = True,
    json_out: JsonOpt = False,
) -> None:
    """Delegations the agent holds and granted, each with its whole-chain validity at --at (default: now)."""
    from swarmlog.projections.trust import delegations_of

    found = delegations_of(_store(), agent_id, at_ms=at)
    if json_out:
        _emit(found, True)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("side", "delegation", "from", "to", "capability", "depth", "valid", "reason",
                  title=f"delegations of {agent_id}")
    for side, items in found.items():
        for d in items:
            check = d["check"]
            table.add_row(side, d["delegation_id"], d["delegator"], d["delegate"], d["capability"], str(d["depth"]),
                          "yes" if check["valid"] else "no", check["reason"])
    Console().print(table)
