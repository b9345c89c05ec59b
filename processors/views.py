"""JSON-over-HTTP views of a worker's projections (Faust web), and how clients find workers.

Agent queries are answered by any worker from its full registry replica. Keyed views
(``/swarmlog/{proposals|commands|sessions}/<key>/``) are **routed to the worker that owns
the key**: the key's partition is ``crc32(key) % partitions`` — the partition every
swarmlog writer puts the key's events in, and so the changelog partition its table row
was written to — and Faust's partition assignor says which worker actively holds that
changelog partition (``app.router.tables_metadata()``). A worker that does not own it
forwards the request there (one hop: the forwarded request carries ``X-Swarmlog-Routed``
and is answered locally) and returns the owner's answer; ``X-Swarmlog-Worker`` names the
worker that answered. Faust's own ``@app.table_route`` cannot be used: it locates a key
by hashing the *serialized table key* with the Kafka producer's partitioner, while our
rows sit in the partition of the event's subject (crc32) under a prefixed key.

Workers advertise their web address in ``<SWARMLOG_HOME>/workers/<name>/endpoint.json``
while they run; the CLI asks the running workers (``swarmlog agents|consensus|commands|sessions``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import faust
from yarl import URL

from swarmlog.projections.base import StateStore
from swarmlog.streams.producer import partition_for

log = logging.getLogger(__name__)

ENDPOINT_FILE = "endpoint.json"
ROUTED_HEADER = "X-Swarmlog-Routed"
WORKER_HEADER = "X-Swarmlog-Worker"
# view name → (projection, key prefix in its store)
KEYED_VIEWS = {"proposals": ("consensus", "proposal/"), "commands": ("routing", "cmd/"),
               "sessions": ("sessions", "session/"), "contracts": ("market", "contract/")}
FORWARD_TIMEOUT_S = 5.0


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


def owner_url(app: faust.App, store: StateStore, key: str, partitions: int) -> URL | None:
    """Web address of the worker actively holding ``key``'s shard of ``store`` (None: unknown)."""
    changelog = getattr(getattr(store, "table", None), "changelog_topic", None)
    if changelog is None:
        return None  # not a Faust table (tests, replicas): nothing to route
    topic = changelog.get_topic_name()
    partition = partition_for(key.encode(), partitions)
    for url, topics in app.router.tables_metadata().items():
        if partition in topics.get(topic, ()):
            return URL(url)
    return None


def _same_node(a: URL, b: URL) -> bool:
    return (a.host, a.port) == (b.host, b.port)


def add_views(app: faust.App, stores: Callable[[], dict[str, StateStore]],
              health: Callable[[], dict[str, Any]] | None = None, *, worker: str = "",
              partitions: int | None = None) -> None:
    """Register the read-only views; ``stores()`` maps projection name → store (may grow).

    ``partitions``: the source topics' partition count; keyed views are routed to the key's
    owner when it is given (see the module docstring)."""
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

    answered_by = {WORKER_HEADER: worker}

    async def forward(web: Any, request: Any, owner: URL) -> Any | None:
        """The owner's answer to ``request``, or None if it cannot be reached."""
        target = request.url.with_scheme(owner.scheme or "http").with_host(owner.host or "127.0.0.1") \
            .with_port(owner.port)
        try:
            async with app.http_client.get(target, headers={ROUTED_HEADER: worker or "1"},
                                           timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)) as response:
                body = await response.read()
                return web.bytes(body, content_type="application/json", status=response.status,
                                 headers={WORKER_HEADER: response.headers.get(WORKER_HEADER, str(owner))})
        except Exception as exc:  # aiohttp client errors, timeouts: answer locally instead
            log.warning("could not forward %s to %s: %s", request.url.path, owner, exc)
            return None

    @app.page("/swarmlog/{projection}/{key}/")
    async def key_view(web: Any, request: Any, projection: str, key: str) -> Any:
        if projection not in KEYED_VIEWS:
            return web.json({"error": f"no view {projection}"}, status=404)
        name, prefix = KEYED_VIEWS[projection]
        st = store(name)
        if st is not None and partitions and request.headers.get(ROUTED_HEADER) is None:
            owner = owner_url(app, st, key, partitions)
            if owner is not None and not _same_node(owner, URL(str(app.conf.canonical_url))):
                forwarded = await forward(web, request, owner)
                if forwarded is not None:
                    return forwarded
        value = st.get(prefix + key) if st is not None else None
        if value is None:
            return web.json({"error": f"{projection} {key} not held by this worker"}, status=404,
                            headers=answered_by)
        return web.json(value, headers=answered_by)
