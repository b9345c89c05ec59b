"""JSON-over-HTTP views of a worker's projections (Faust web), and how clients find workers.

Each worker answers from what it holds: the full registry replica (any worker can answer
agent queries) and the table shards of the partitions it owns (proposals, commands,
sessions). A client that does not know which worker owns a key asks each running worker
in turn (``swarmlog agents|consensus|commands``); workers advertise their web address in
``<SWARMLOG_HOME>/workers/<name>/endpoint.json`` while they run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faust

from swarmlog.projections.base import StateStore

ENDPOINT_FILE = "endpoint.json"


def write_endpoint(datadir: Path, name: str, url: str) -> Path:
    """Advertise a running worker's web address (removed again on clean shutdown)."""
    path = datadir / ENDPOINT_FILE
    path.write_text(json.dumps({"name": name, "url": url, "pid": os.getpid()}))
    return path


def endpoints(home: Path) -> Iterator[dict[str, Any]]:
    """Advertised workers whose process is still alive."""
    for path in sorted((home / "workers").glob(f"*/{ENDPOINT_FILE}")):
        try:
            info = json.loads(path.read_text())
            os.kill(int(info["pid"]), 0)
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            continue
        yield info


def add_views(app: faust.App, stores: Callable[[], dict[str, StateStore]],
              health: Callable[[], dict[str, Any]] | None = None) -> None:
    """Register the read-only views; ``stores()`` maps projection name → store (may grow)."""
    from swarmlog.projections import registry

    @app.page("/swarmlog/health/")
    async def health_view(web: Any, request: Any) -> Any:
        return web.json(health() if health is not None else {})

    def store(name: str) -> StateStore | None:
        return stores().get(name)

    @app.page("/swarmlog/agents/")
    async def agents_view(web: Any, request: Any) -> Any:
        capability = request.query.get("capability")
        reg = store("registry")
        if reg is None or not capability:
            return web.json({"error": "pass ?capability=NAME"}, status=400)
        include_expired = request.query.get("all") in ("1", "true")
        found = registry.find_by_capability(reg, capability, include_expired=include_expired)
        return web.json({"capability": capability, "agents": found})

    @app.page("/swarmlog/agents/{agent_id}/")
    async def agent_view(web: Any, request: Any, agent_id: str) -> Any:
        reg = store("registry")
        agent = registry.get_agent(reg, agent_id) if reg is not None else None
        if agent is None:
            return web.json({"error": f"unknown agent {agent_id}"}, status=404)
        return web.json(agent)

    @app.page("/swarmlog/market/find/")
    async def market_find_view(web: Any, request: Any) -> Any:
        from swarmlog.projections import market

        capability, by = request.query.get("capability"), request.query.get("by", "value")
        st = store("market")
        if st is None or not capability or by not in market.RANKINGS:
            return web.json({"error": "pass ?capability=NAME&by=value|sla|trust"}, status=400)
        limit = int(request.query.get("limit", "10"))
        return web.json({"capability": capability, "listings": market.find(st, capability, by, limit=limit)})

    @app.page("/swarmlog/{projection}/{key}/")
    async def key_view(web: Any, request: Any, projection: str, key: str) -> Any:
        prefixes = {"proposals": ("consensus", "proposal/"), "commands": ("routing", "cmd/"),
                    "sessions": ("sessions", "session/"), "contracts": ("market", "contract/")}
        if projection not in prefixes:
            return web.json({"error": f"no view {projection}"}, status=404)
        name, prefix = prefixes[projection]
        st = store(name)
        value = st.get(prefix + key) if st is not None else None
        if value is None:
            return web.json({"error": f"{projection} {key} not held by this worker"}, status=404)
        return web.json(value)
