"""``swarmlog market``: discovery and contracts of the capability marketplace.

Like ``swarmlog agents|commands`` (``cli_query.py``): by default the running workers
answer (each holds the market table shards of the partitions it owns, so ``find`` asks
every worker and merges their rankings); ``--from-log`` replays and verifies the
``market`` and ``receipts`` topics through the same reducers instead.

Trust-weighted discovery (``--by trust --from-log``) weighs providers by their global
EigenTrust score from a replay of the ``trust`` topic; the workers' own view answers with a
neutral trust of 0.5 (a worker holds only its partitions of the trust graph).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from swarmlog.infra.cli_query import FromLogOpt, JsonOpt, _emit, _fail, _replay, worker_answers

app = typer.Typer(help="Capability marketplace: find listings, show contracts.", no_args_is_help=True)
MARKET_TOPICS = ["market", "receipts"]


def _replay_market() -> Any:
    from swarmlog.projections.market import MarketProjection

    return _replay(MARKET_TOPICS, [MarketProjection()])


def _ask_all(path: str) -> list[Any]:
    """The 200 answers of every running worker for ``path`` (each holds some partitions)."""
    answers = []
    for status, body in worker_answers(path):
        if status == 200:
            answers.append(body)
        elif status != 404:
            _fail(f"worker answered {status} for {path}: {body}", 1)
    return answers


def _merge(rows: list[dict[str, Any]], by: str, limit: int) -> list[dict[str, Any]]:
    """Re-rank rows from several workers with the same keys ``find`` uses."""
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        if by == "sla":
            return (-r["uptime_percent"], r["max_latency_ms"], r["listing_id"])
        cost = r["unit_cost"] if r["unit_cost"] is not None else float("inf")
        if by == "trust":
            return (-r.get("trust", 0.5), -r["value"], cost, r["listing_id"])
        return (-r["value"], cost, r["listing_id"])

    return sorted(rows, key=key)[:limit]


@app.command("find")
def market_find(
    capability: Annotated[str, typer.Argument(help="Capability, e.g. data.etl.")],
    by: Annotated[str, typer.Option("--by", help="Ranking: value (rating / cost), sla (uptime, latency), trust.")]
    = "value",
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many listings.")] = 10,
    from_log: FromLogOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Open listings of CAPABILITY, best first."""
    from swarmlog.projections.market import RANKINGS, find

    if by not in RANKINGS:
        _fail(f"--by must be one of {', '.join(RANKINGS)}, got {by!r}", 2)
    if from_log:
        engine = _replay_market()
        if by == "trust":
            from swarmlog.projections.trust import TrustProjection, trust_score

            trust_store = _replay(["trust"], [TrustProjection()]).stores["trust"]
            listings = find(engine.stores["market"], capability, by, limit=limit,
                            trust=lambda agent: trust_score(trust_store, agent))
        else:
            listings = find(engine.stores["market"], capability, by, limit=limit)
    else:
        answers = _ask_all(f"/swarmlog/market/find/?capability={quote(capability)}&by={by}&limit={limit}")
        listings = _merge([row for a in answers for row in a.get("listings", [])], by, limit)
    if json_out:
        _emit(listings, True)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("listing", "provider", "kind", "unit cost", "rating", "reviews", "uptime %", "max latency ms",
                  "left", "value", *(["trust"] if by == "trust" else []),
                  title=f"{capability} by {by}: {len(listings)} listing(s)")
    for r in listings:
        cost = "-" if r["unit_cost"] is None else f"{r['unit_cost']:.4g}"
        table.add_row(r["listing_id"], r["provider"][:24] + "…", r["kind"], cost, f"{r['rating']:.2f}",
                      str(r["review_count"]), f"{r['uptime_percent']:g}", str(r["max_latency_ms"]),
                      "∞" if r["remaining"] is None else str(r["remaining"]), f"{r['value']:.4g}",
                      *([f"{r['trust']:.2f}"] if by == "trust" else []))
    Console().print(table)


@app.command("contract")
def market_contract(
    contract_id: Annotated[str, typer.Argument(help="Contract id.")],
    from_log: FromLogOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """A contract: parties, terms, SLA, status history, measured uptime / p99 latency, penalty, payments."""
    from swarmlog.projections.market import clock, get_contract

    contract: Any = None
    if from_log:
        store = _replay_market().stores["market"]
        contract = get_contract(store, contract_id, clock(store))
    else:
        for answer in _ask_all(f"/swarmlog/contracts/{quote(contract_id, safe='')}/"):
            contract = answer
            break
    if contract is None:
        _fail(f"unknown contract {contract_id}", 2)
    _emit(contract, json_out)
