"""``swarmlog worker``: run one Faust worker; start more to share partitions."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from swarmlog.streams.settings import get_settings

log = logging.getLogger(__name__)


def worker_command(
    name: Annotated[str, typer.Option(help="Worker name: its signing identity and data directory.")] = "worker-1",
    web_port: Annotated[int, typer.Option(help="Faust web port (each worker on a machine needs its own).")] = 6066,
    datadir: Annotated[Path | None, typer.Option(help="RocksDB tables; default $SWARMLOG_HOME/workers/NAME.")]
    = None,
    loglevel: Annotated[str, typer.Option(help="crit, error, warn, info or debug.")] = "warn",
    domains: Annotated[str, typer.Option(help="Comma-separated domains this worker runs (default: all), e.g. "
                                         "agents,coordination. Workers with the same set share a consumer group.")]
    = "",
) -> None:
    """Run a worker: verify events, fold them into RocksDB tables, emit decisions.

    Any number of workers with different names join one consumer group and share the
    partitions; stop one (Ctrl-C, SIGTERM, even SIGKILL) and its partitions move to the
    others without losing or double-applying an event.
    """
    from faust.worker import Worker

    from swarmlog.infra.broker import BrokerError, resolve_bootstrap
    from swarmlog.infra.topics import provision
    from swarmlog.processors.app import WorkerConfig, create_app, select_domains
    from swarmlog.streams.keystore import Keystore
    from swarmlog.streams.producer import EventProducer

    settings = get_settings()
    try:
        chosen = select_domains(domains)
    except ValueError as exc:
        typer.echo(f"swarmlog: error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        bootstrap = resolve_bootstrap(start_if_missing=True)
    except BrokerError as exc:
        typer.echo(f"swarmlog: error: {exc}", err=True)
        raise typer.Exit(1) from None
    provision(bootstrap)
    identity = Keystore().load_or_create(name, label=f"swarmlog worker {name}", passphrase=settings.passphrase)
    config = WorkerConfig(
        bootstrap=bootstrap, name=name, datadir=datadir or settings.home / "workers" / name,
        topic_prefix=settings.topic_prefix, partitions=settings.partitions, web_port=web_port,
        # short group timeouts on the embedded broker (also when `swarmlog run` passes it in)
        embedded=os.environ.get("SWARMLOG_BOOTSTRAP") is None or os.environ.get("SWARMLOG_EMBEDDED") == "1",
        app_id="swarmlog" if not domains else "swarmlog-" + "-".join(sorted(chosen)),
        tick_interval_s=settings.tick_interval_ms / 1000,
    )
    config.datadir.mkdir(parents=True, exist_ok=True)

    def producer() -> EventProducer:
        return EventProducer(identity, bootstrap, seal_batch=settings.seal_batch,
                             seal_interval_ms=settings.seal_interval_ms, topic_prefix=settings.topic_prefix)

    app = create_app(config, producer, domains=chosen)
    typer.echo(f"worker {name} ({identity.did}) on {bootstrap}, tables in {config.datadir}", err=True)
    Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()  # web port: app config
