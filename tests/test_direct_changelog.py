"""Direct table writes (processors.runtime.DirectTable + ChangelogProducer): the same bytes Faust would
write, in the changelog partition of the current record and in its RocksDB — the local write only once the
changelog records are delivered, with the persisted offset — and a delivery failure raised, RocksDB untouched.

The Faust table and its RocksDB store are real; the Kafka client is a stand-in that records what it is
given (the broker round trip itself is covered by tests/test_worker.py and tests/test_ledger_worker.py,
whose failover workers restore these changelogs)."""

from __future__ import annotations

import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.streams import _current_event
from faust.types import TP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmlog.processors.runtime import ChangelogProducer, DirectTable, _table_encoders
from swarmlog.streams.producer import ProduceError


class RecordingKafka:
    """Stands in for confluent_kafka.Producer: keeps produced records, delivers them on flush()."""

    def __init__(self, fail: bool = False) -> None:
        self.records: list[tuple[str, bytes | None, bytes, int]] = []
        self.queued: list[tuple[Any, Any]] = []
        self.fail = fail
        self.next_offset: dict[tuple[str, int], int] = {}

    def produce(self, topic: str, value: bytes | None, key: bytes, partition: int, on_delivery: Any) -> None:
        self.records.append((topic, value, key, partition))
        offset = self.next_offset.get((topic, partition), 0)
        self.next_offset[(topic, partition)] = offset + 1
        self.queued.append((on_delivery, SimpleNamespace(topic=lambda: topic, partition=lambda: partition,
                                                          offset=lambda: offset)))

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        queued, self.queued = self.queued, []
        for callback, msg in queued:
            callback(SimpleNamespace(str=lambda: "broker says no") if self.fail else None, msg)
        return 0


@pytest.fixture
def table(tmp_path: Path) -> Any:
    app = faust.App("direct-test", store="rocksdb://", datadir=str(tmp_path), topic_partitions=4)
    return app.Table("t", default=None, partitions=4)


class _Event:
    """Faust's current event, as far as a table write looks at it (weak-referenceable)."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


def _in_partition(partition: int) -> Any:
    event = _Event(partition)
    _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    return event  # keep it alive while writing


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # encoders only
@given(key=st.text(), value=json_values)
def test_fast_encoders_give_the_stores_bytes(table: Any, key: str, value: Any) -> None:
    encode_key, encode_value = _table_encoders(table.data)
    assert encode_key is not table.data._encode_key  # the JSON table takes the fast path
    assert encode_key(key) == table.data._encode_key(key)
    assert encode_value(value) == table.data._encode_value(value)


def test_writes_reach_rocksdb_and_the_current_partitions_changelog(table: Any) -> None:
    kafka = RecordingKafka()
    changelog = ChangelogProducer("unused:9092", kafka=kafka)
    current = [2]
    direct = DirectTable(table, changelog, lambda: current[0])
    topic = table.changelog_topic.get_topic_name()
    keep = _in_partition(2)
    direct["cmd/a"] = {"status": "ROUTED", "score": 0.5}
    direct["cmd/b"] = [1, 2]
    del direct["cmd/b"]
    current[0] = 3
    keep = _in_partition(3)
    direct["cmd/c"] = "x"
    assert keep is not None
    encode = table.data._encode_key
    assert kafka.records == [
        (topic, table.data._encode_value({"status": "ROUTED", "score": 0.5}), encode("cmd/a"), 2),
        (topic, table.data._encode_value([1, 2]), encode("cmd/b"), 2),
        (topic, None, encode("cmd/b"), 2),  # a delete is a tombstone, as Faust sends it
        (topic, table.data._encode_value("x"), encode("cmd/c"), 3),
    ]
    # changelog first: nothing reaches RocksDB or the persisted offsets before delivery
    assert table.data._dbs.get(2) is None or table.data._dbs[2].get(encode("cmd/a")) is None
    keep = _in_partition(2)  # Faust reads a key from the current record's partition
    assert direct.get("cmd/a") is None
    assert table.data.persisted_offset(TP(topic, 2)) is None
    assert changelog.flush() == 4
    # delivered: RocksDB of the record's partition holds them, with the last delivered offset per partition
    assert table.data._dbs[2].get(encode("cmd/a")) == table.data._encode_value({"status": "ROUTED", "score": 0.5})
    assert direct.get("cmd/a") == {"status": "ROUTED", "score": 0.5} and direct.get("cmd/b") is None
    assert table.data._dbs[3].get(encode("cmd/c")) is not None
    assert table.data.persisted_offset(TP(topic, 2)) == 2
    assert table.data.persisted_offset(TP(topic, 3)) == 0
    assert changelog.flush() == 0  # nothing pending: no round trip


def test_a_failed_delivery_is_raised_and_never_written_locally(table: Any) -> None:
    kafka = RecordingKafka(fail=True)
    changelog = ChangelogProducer("unused:9092", kafka=kafka)
    direct = DirectTable(table, changelog, lambda: 1)
    keep = _in_partition(1)
    direct["k"] = 1
    assert keep is not None
    with pytest.raises(ProduceError, match="broker says no"):
        changelog.flush()
    assert direct.get("k") is None  # RocksDB stays what the changelog holds
    assert table.data.persisted_offset(TP(table.changelog_topic.get_topic_name(), 1)) is None
    kafka.fail = False  # the dropped batch is not written by a later flush either
    direct["other"] = 2
    assert changelog.flush() == 1
    assert direct.get("k") is None and direct.get("other") == 2


def test_write_group_writes_what_single_writes_write(tmp_path: Path) -> None:
    """``WriteBehindStore.flush`` hands a DirectTable the whole group; same records, same RocksDB as key by key."""
    from swarmlog.processors.runtime import _DELETED

    ops: list[tuple[str, Any]] = [("__flush/1", [["a", 1, False], ["b", None, True]]), ("a", 1), ("b", _DELETED),
                                  ("__flush/1", _DELETED)]
    outcomes = []
    for mode in ("single", "group"):
        app = faust.App(f"direct-{mode}", store="rocksdb://", datadir=str(tmp_path / mode), topic_partitions=4)
        table = app.Table("t", default=None, partitions=4)
        kafka = RecordingKafka()
        direct = DirectTable(table, ChangelogProducer("unused:9092", kafka=kafka), lambda: 1)
        keep = _in_partition(1)
        direct["b"] = "old"
        direct.changelog.flush()
        if mode == "single":
            for key, value in ops:
                if value is _DELETED:
                    del direct[key]
                else:
                    direct[key] = value
        else:
            direct.write_group(1, ops, _DELETED)
        direct.changelog.flush()
        assert keep is not None
        outcomes.append(([(v, k, p) for _t, v, k, p in kafka.records],
                         sorted(table.data._dbs[1].items()) if hasattr(table.data._dbs[1], "items") else None,
                         (direct.get("a"), direct.get("b"), direct.get("__flush/1"))))
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][2] == (1, None, None)


_GONE = object()  # stands for a deleted key in the strategy below


@settings(max_examples=40, deadline=None)
@given(items=st.dictionaries(st.text(max_size=6), json_values | st.just(_GONE), min_size=1, max_size=6),
       with_intent=st.booleans())
def test_flush_group_sends_the_bytes_of_the_intent_ops(tmp_path_factory: pytest.TempPathFactory,
                                                        items: dict[str, Any], with_intent: bool) -> None:
    """``write_flush_group`` joins the intent's bytes from the encoded keys and values: the changelog must get
    exactly what ``write_group`` sends for (intent, keys, intent deleted), and RocksDB end the same."""
    from swarmlog.processors.runtime import _DELETED

    pairs = [(k, _DELETED if v is _GONE else v) for k, v in items.items()]
    intent_key = "__flush/1"
    ops: list[tuple[str, Any]] = list(pairs)
    if with_intent:
        intent = [[k, None if v is _DELETED else v, v is _DELETED] for k, v in pairs]
        ops = [(intent_key, intent), *pairs, (intent_key, _DELETED)]
    outcomes = []
    for mode in ("ops", "flush_group"):
        app = faust.App(f"fg-{mode}", store="rocksdb://", datadir=str(tmp_path_factory.mktemp(mode)),
                        topic_partitions=4)
        table = app.Table("t", default=None, partitions=4)
        kafka = RecordingKafka()
        direct = DirectTable(table, ChangelogProducer("unused:9092", kafka=kafka), lambda: 1)
        keep = _in_partition(1)
        direct["stale"] = "x"  # a key some groups delete
        direct.changelog.flush()
        if mode == "ops":
            direct.write_group(1, ops, _DELETED)
        else:
            direct.write_flush_group(1, intent_key if with_intent else None, pairs, _DELETED)
        direct.changelog.flush()
        assert keep is not None
        outcomes.append(([(v, k, p) for _t, v, k, p in kafka.records], sorted(table.data._dbs[1].items())))
        table.data._dbs[1].close()
    assert outcomes[0] == outcomes[1]
