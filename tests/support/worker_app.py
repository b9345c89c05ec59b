"""A real swarmlog Faust worker with a test projection, run as a subprocess by the tests.

Environment: SWARMLOG_BOOTSTRAP, SWARMLOG_HOME, TEST_TOPIC, TEST_WORKER, TEST_WEB_PORT, TEST_APP_ID.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, ClassVar

from faust.worker import Worker

from swarmlog.processors import app as app_module
from swarmlog.processors.app import WorkerConfig, create_app
from swarmlog.projections.base import Derived, EventContext, InvalidEvent, Projection, Stores
from swarmlog.streams.keystore import Keystore
from swarmlog.streams.producer import EventProducer
from swarmlog.streams.settings import get_settings


class CountingProjection(Projection):
    """Counts dead-letter-shaped test events per subject; refuses reason 'refuse'."""

    name: ClassVar[str] = "counting"
    event_types: ClassVar[frozenset[str]] = frozenset({"deadletter.recorded"})

    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        if payload["reason"] == "refuse":
            raise InvalidEvent("refused-by-test", str(payload["source_offset"]))
        key = f"count/{ctx.subject}"
        stores.own.put(key, (stores.own.get(key) or 0) + 1)
        seen = stores.own.get(f"seen/{ctx.subject}") or []
        stores.own.put(f"seen/{ctx.subject}", [*seen, payload["source_offset"]])
        return []


def main() -> None:
    if "TEST_LEDGER_TOPIC" not in os.environ:  # no checkpoint topic: run without the ledger
        os.environ["SWARMLOG_LEDGER"] = "0"
        get_settings.cache_clear()
    if os.environ.get("TEST_DIRECT_CHANGELOG"):  # "1"/"0": direct table writes on/off, whatever the default
        app_module.DIRECT_CHANGELOG = os.environ["TEST_DIRECT_CHANGELOG"] == "1"
    bootstrap = os.environ["SWARMLOG_BOOTSTRAP"]
    name = os.environ["TEST_WORKER"]
    home = Path(os.environ["SWARMLOG_HOME"])
    identity = Keystore().load_or_create(name)
    config = WorkerConfig(bootstrap=bootstrap, name=name, datadir=home / "workers" / name,
                          web_port=int(os.environ["TEST_WEB_PORT"]),
                          partitions=int(os.environ.get("TEST_PARTITIONS", "3")),
                          app_id=os.environ["TEST_APP_ID"], embedded=True)
    dead_topic = os.environ["TEST_DEADLETTER_TOPIC"]

    def producer() -> EventProducer:
        return EventProducer(identity, bootstrap, identity_topic=os.environ["TEST_TRUST_TOPIC"], seal_interval_ms=50,
                             topic_overrides={"deadletter.recorded": dead_topic,
                                              "ledger.checkpoint": os.environ.get("TEST_LEDGER_TOPIC", dead_topic)})

    app = create_app(config, producer, domains={"test": ((os.environ["TEST_TOPIC"],), lambda: [CountingProjection()])},
                     replica_projections=lambda: [])
    app.conf.table_standby_replicas = 0
    print(f"worker {name} starting", file=sys.stderr, flush=True)
    Worker(app, loglevel="warn", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
