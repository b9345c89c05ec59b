"""The worker side of the audit ledger: its table, its signer, its HTTP views.

Thin on purpose: the ledger itself is the pure :mod:`swarmlog.projections.ledger`; here it gets a
Faust table (RocksDB + changelog, so a replacement worker restores it on failover), the worker's
identity for signing checkpoints, and read-only views for ``swarmlog ledger``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust

from swarmlog.processors.runtime import OutputSink
from swarmlog.projections.base import StateStore
from swarmlog.projections.ledger import (
    LedgerPolicy,
    LedgerRecorder,
    ledger_summary,
    prove_consistency,
    prove_event,
)
from swarmlog.streams.checkpoint import sign_checkpoint
from swarmlog.streams.merkle import HashAlgorithm, ProofError
from swarmlog.streams.settings import Settings, get_settings

LEDGER_STORE_PREFIX = "ledger-"


def policy_from_settings(settings: Settings | None = None) -> LedgerPolicy:
    """The ledger policy of this process (``SWARMLOG_LEDGER_*``)."""
    s = settings or get_settings()
    alg = HashAlgorithm.SHA3_256 if s.ledger_hash == "sha3-256" else HashAlgorithm.SHA256
    return LedgerPolicy(alg, s.ledger_checkpoint_leaves, s.ledger_checkpoint_interval_ms)


def ledger_table(app: faust.App, domain: str, partitions: int) -> Any | None:
    """The domain's ledger table (a Faust table), or None when the ledger is switched off.

    The worker appends through a batch write-behind store over it (``runtime.WriteBehindStore``:
    a leaf costs several table writes, and per-write changelog records tripled the cost of
    folding); the views read it through a plain ``TableStore``.
    """
    if not get_settings().ledger:
        return None
    return app.Table(f"swarmlog-ledger-{domain}", default=None, partitions=partitions)


def make_recorder(store: StateStore, sink: Callable[[], OutputSink]) -> LedgerRecorder:
    """A recorder whose checkpoints are signed with the identity the worker's outputs carry."""

    def signer(origin: str, size: int, root: bytes, previous: dict[str, Any] | None,
               proof: list[bytes]) -> dict[str, Any]:
        return sign_checkpoint(sink().producer.identity, origin, size, root, previous, proof)

    return LedgerRecorder(store, policy_from_settings(), signer)


def add_ledger_views(app: faust.App, stores: Callable[[], dict[str, StateStore]]) -> None:
    """``/swarmlog/ledger/`` (lanes held here), ``.../prove/{event_id}/``, ``.../consistency/``."""

    def ledgers() -> list[StateStore]:
        return [store for name, store in stores().items() if name.startswith(LEDGER_STORE_PREFIX)]

    @app.page("/swarmlog/ledger/")
    async def ledger_view(web: Any, request: Any) -> Any:
        return web.json({"lanes": [row for store in ledgers() for row in ledger_summary(store)]})

    @app.page("/swarmlog/ledger/prove/{event_id}/")
    async def prove_view(web: Any, request: Any, event_id: str) -> Any:
        for store in ledgers():
            try:
                doc = prove_event(store, event_id)
            except ProofError as exc:
                return web.json({"error": str(exc)}, status=409)
            if doc is not None:
                return web.json(doc)
        return web.json({"error": f"event {event_id} is in no ledger lane held by this worker"}, status=404)

    @app.page("/swarmlog/ledger/consistency/")
    async def consistency_view(web: Any, request: Any) -> Any:
        origin = request.query.get("origin", "")
        try:
            old = int(request.query.get("old", ""))
            new = int(request.query["new"]) if request.query.get("new") else None
        except ValueError:
            return web.json({"error": "pass ?origin=O&old=N[&new=M]"}, status=400)
        for store in ledgers():
            if store.get(f"meta|{origin}") is None:
                continue
            try:
                return web.json(prove_consistency(store, origin, old, new))
            except ProofError as exc:
                return web.json({"error": str(exc)}, status=400)
        return web.json({"error": f"lane {origin} is not held by this worker"}, status=404)
