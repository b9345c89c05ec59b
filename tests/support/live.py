"""Real ``swarmlog worker`` processes (the CLI, the real app and domains) for integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from swarmlog.infra.broker import free_port
from swarmlog.streams.reader import plan_ranges, read_records, read_verified
from swarmlog.streams.verify import Status

ROOT = Path(__file__).resolve().parent.parent.parent


Command = Callable[[str, int], tuple[list[str], dict[str, str]]]  # (name, web port) → (argv, extra env)


class WorkerProcess:
    """A worker subprocess with its own name, web port and log file."""

    def __init__(self, env: dict[str, str], name: str, home: Path, command: Command) -> None:
        self.name = name
        self.log = home / f"{name}.log"
        self.port = free_port()
        argv, extra = command(name, self.port)
        self.proc = subprocess.Popen(argv, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT), **extra},
                                     stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def get(self, path: str) -> tuple[int, dict[str, str], Any]:
        """(status, headers, JSON body) of GET ``path`` on this worker; status 0 if it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            return 0, {}, None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class CliWorker(WorkerProcess):
    """``swarmlog worker``: the real CLI, the real app and its default domains."""

    def __init__(self, env: dict[str, str], name: str, home: Path) -> None:
        super().__init__(env, name, home, lambda n, port: (
            [sys.executable, "-m", "swarmlog.infra.cli", "worker", "--name", n, "--web-port", str(port)], {}))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, workers: Sequence[WorkerProcess]) -> Any:
    """Poll until ``predicate()`` is truthy; fail with the workers' log tails (early if they all died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if workers and all(w.proc.poll() is not None for w in workers):
            break
        time.sleep(0.5)
    tails = "\n".join(f"--- {w.name}\n{w.log.read_text()[-3000:]}" for w in workers if w.log.exists())
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def authenticated_payloads(bootstrap: str, topic: str, event_type: str) -> list[dict[str, Any]]:
    return [v.event.decode_payload() for v in read_verified(bootstrap, [topic])
            if v.status is Status.AUTHENTICATED and v.event is not None and v.event.event_type == event_type]


def record_at(bootstrap: str, topic: str, partition: int, offset: int) -> bytes | None:
    for record in read_records(bootstrap, plan_ranges(bootstrap, [topic], partitions=[partition])):
        if record.offset == offset:
            return record.value
    return None


def env_for(bootstrap: str, home: Path, prefix: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "SWARMLOG_BOOTSTRAP": bootstrap, "SWARMLOG_EMBEDDED": "1", "SWARMLOG_HOME": str(home),
            "SWARMLOG_TOPIC_PREFIX": prefix, **extra}


class LiveSetup:
    """A provisioned topic prefix, the worker environment for it, and the producers and workers
    a live test starts; ``close`` stops the workers and closes the producers, whatever happened."""

    def __init__(self, bootstrap: str, prefix: str, home: Path, partitions: int) -> None:
        from swarmlog.infra.topics import provision

        provision(bootstrap, prefix=prefix, partitions=partitions)
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.home = home
        self.env = env_for(bootstrap, home, prefix, SWARMLOG_PARTITIONS=str(partitions))
        self.producers: list[Any] = []
        self.workers: list[WorkerProcess] = []

    def producer(self, identity: Any, **options: Any) -> Any:
        """An ``EventProducer`` on this prefix; seals every 50 ms unless told otherwise."""
        from swarmlog.streams.producer import EventProducer

        producer = EventProducer(identity, self.bootstrap, topic_prefix=self.prefix,
                                 **{"seal_interval_ms": 50, **options})
        self.producers.append(producer)
        return producer

    def flush(self) -> None:
        for producer in self.producers:
            producer.flush()

    def worker(self, name: str) -> CliWorker:
        worker = CliWorker(self.env, name, self.home)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        for producer in self.producers:
            producer.close()

    def __enter__(self) -> LiveSetup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
