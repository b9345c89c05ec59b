"""Session-wide test setup: an isolated SWARMLOG_HOME, one Kafka-protocol broker, unique topics.

Why this shape (DESIGN.md §4): starting a broker costs ~0.1 s but Kafka clients cost
more to reconnect, so the whole session shares ONE embedded broker (or the cluster named
by ``SWARMLOG_BOOTSTRAP``) and every test isolates itself with unique topic names.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from swarmlog.infra.broker import EmbeddedBroker, admin_client
from swarmlog.infra.topics import delete_topics, ensure_topics
from swarmlog.streams.identity import Identity
from swarmlog.streams.settings import get_settings

# No per-example deadline: Hypothesis' default (200 ms) is a timing assertion, and timings
# are not what these tests check — a loaded CI machine made one fail on a 2 ms example.
hypothesis_settings.register_profile("swarmlog", deadline=None)
hypothesis_settings.load_profile("swarmlog")


@pytest.fixture(scope="session", autouse=True)
def swarmlog_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point SWARMLOG_HOME at a session temp dir so no test touches ~/.swarmlog (keys,
    broker state). Set directly in os.environ (monkeypatch is function-scoped) and the
    settings cache is cleared so modules that already read settings see the new home."""
    home = tmp_path_factory.mktemp("swarmlog-home")
    previous = os.environ.get("SWARMLOG_HOME")
    os.environ["SWARMLOG_HOME"] = str(home)
    get_settings.cache_clear()
    try:
        yield home
    finally:
        if previous is None:
            os.environ.pop("SWARMLOG_HOME", None)
        else:
            os.environ["SWARMLOG_HOME"] = previous
        get_settings.cache_clear()


@pytest.fixture(scope="session")
def kafka_bootstrap(swarmlog_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers for integration tests: ``SWARMLOG_BOOTSTRAP`` when set (a real
    cluster), else one in-process embedded broker for the whole session (no state file;
    its log stays in the pytest temp dir for post-mortems)."""
    configured = os.environ.get("SWARMLOG_BOOTSTRAP")
    if configured:
        yield configured
        return
    log_path = tmp_path_factory.mktemp("embedded-broker") / "broker.log"
    with EmbeddedBroker(state_dir=None, log_path=log_path) as broker:
        yield broker.bootstrap


class TopicFactory:
    """Creates uniquely named topics on the session broker and deletes them afterwards.

    ``factory("orders", partitions=3)`` creates e.g. ``t-test-foo-orders-1a2b3c4d`` and
    returns its name. ``factory.new_prefix()`` returns a unique topic prefix (for
    ``provision(..., prefix=...)``); topics under it are deleted at teardown too.
    """

    def __init__(self, bootstrap: str, test_name: str) -> None:
        self.bootstrap = bootstrap
        self._stem = re.sub(r"[^A-Za-z0-9]+", "-", test_name).strip("-")[:40] or "test"
        self.created: list[str] = []
        self.prefixes: list[str] = []

    def __call__(
        self, base: str = "topic", partitions: int = 1, *, config: dict[str, str] | None = None
    ) -> str:
        name = f"t-{self._stem}-{base}-{uuid.uuid4().hex[:8]}"
        ensure_topics(self.bootstrap, {name: partitions}, config={name: config or {}})
        self.created.append(name)
        return name

    def many(self, count: int, base: str = "topic", partitions: int = 1) -> list[str]:
        return [self(f"{base}{i}", partitions) for i in range(count)]

    def new_prefix(self) -> str:
        prefix = f"t-{self._stem}-{uuid.uuid4().hex[:8]}."
        self.prefixes.append(prefix)
        return prefix

    def cleanup(self) -> None:
        """Best effort: frees broker memory (Tansu keeps everything in RAM) and keeps a
        shared real cluster tidy. Never fails the test."""
        names = list(self.created)
        if self.prefixes:
            with contextlib.suppress(Exception):
                admin = admin_client(self.bootstrap)
                existing = admin.list_topics(timeout=5).topics
                names += [n for n in existing if n.startswith(tuple(self.prefixes))]
        with contextlib.suppress(Exception):
            delete_topics(self.bootstrap, sorted(set(names)), timeout=10)


@pytest.fixture
def unique_topics(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    """A :class:`TopicFactory` bound to the session broker; tests must use unique names."""
    factory = TopicFactory(kafka_bootstrap, request.node.name)
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture(scope="module")
def alice() -> Identity:
    """A producer identity, fresh per test module (key generation is the slow part)."""
    return Identity.generate("alice")


@pytest.fixture(scope="module")
def bob() -> Identity:
    """A second producer identity, fresh per test module."""
    return Identity.generate("bob")
