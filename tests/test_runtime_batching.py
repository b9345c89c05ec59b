"""Batch-aggregated table writes (processors.runtime.WriteBehindStore): same state as per-event
writes, one write per key per batch, and a flush cut anywhere is all-or-nothing after recovery."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlog.processors.runtime import INTENT_PREFIX, PartitionedRuntime, TableStore, WriteBehindStore
from swarmlog.projections.base import MemoryStore, snapshot
from swarmlog.streams.identity import Identity
from tests.test_engine import CountingProjection, dl, make_log


class RecordingTable(dict[str, Any]):
    """A plain mapping standing in for a Faust table: records every write with its partition,
    the way Faust sends each write to the changelog partition of the current event."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.log: list[tuple[int, str, Any]] = []  # (partition, key, value or None for a delete)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.log.append((self.current, key, value))

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.log.append((self.current, key, None))


def store_on(table: RecordingTable, partition: list[int]) -> WriteBehindStore:
    def restore(token: Any) -> None:
        table.current = token

    return WriteBehindStore(table, lambda: (partition[0], partition[0]), restore)


def test_reads_see_the_batch_and_flush_writes_each_key_once() -> None:
    table = RecordingTable()
    table.update({"a": 1, "gone": 5})
    partition = [0]
    store = store_on(table, partition)
    store.put("a", 2)
    store.put("a", 3)
    store.delete("gone")
    partition[0] = 1
    store.put("b", [1])
    assert store.get("a") == 3 and store.get("gone") is None and store.get("b") == [1]
    assert dict(store.scan("")) == {"a": 3, "b": [1]}
    assert table.log == []  # nothing reaches the table before flush
    store.flush()
    assert dict(table) == {"a": 3, "b": [1]}
    writes = [(p, k) for p, k, _v in table.log if not k.startswith(INTENT_PREFIX)]
    assert sorted(writes) == [(0, "a"), (0, "gone"), (1, "b")]  # once per key, in its own partition
    # partition 0 had two keys: intent first, intent deleted last; partition 1 a single (atomic) write
    p0 = [(k, v is None) for p, k, v in table.log if p == 0]
    assert p0[0] == (f"{INTENT_PREFIX}0", False) and p0[-1] == (f"{INTENT_PREFIX}0", True)
    assert not any(k.startswith(INTENT_PREFIX) for p, k, _v in table.log if p == 1)
    assert store.get("a") == 3  # the cache was dropped: read from the table again


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 3), st.booleans()), min_size=1, max_size=25),
       st.data())
def test_a_flush_cut_anywhere_is_all_or_nothing_after_recover(ops: list[tuple[str, int, bool]],
                                                              data: st.DataObject) -> None:
    before = {"a": 0, "c": 10, "e": 20}
    table = RecordingTable()
    table.update(before)
    partition = [0]
    store = store_on(table, partition)
    for key, value, delete in ops:
        if delete:
            store.delete(key)
        else:
            store.put(key, value)
    expected_after = dict(before)
    for key, value, delete in ops:
        if delete:
            expected_after.pop(key, None)
        else:
            expected_after[key] = value
    store.flush()
    assert dict(table) == expected_after
    cut = data.draw(st.integers(0, len(table.log)), label="records delivered before the crash")
    # the successor restores the changelog prefix that reached the broker, then recovers
    restored = RecordingTable()
    restored.update(before)
    for _p, key, value in table.log[:cut]:
        if value is None:
            restored.pop(key, None)
        else:
            dict.__setitem__(restored, key, value)
    successor = store_on(restored, partition)
    successor.recover()
    state = {k: v for k, v in restored.items() if not k.startswith(INTENT_PREFIX)}
    assert state in (before, expected_after)
    assert not any(k.startswith(INTENT_PREFIX) for k in restored)


@pytest.fixture(scope="module")
def identity() -> Identity:
    return Identity.generate("batching-test")


def test_runtime_with_batched_tables_equals_per_event_writes(identity: Identity) -> None:
    payloads = [dl(f"topic-{i % 5}", "refuse" if i % 11 == 4 else "x", i) for i in range(120)]
    records = make_log(identity, payloads, partitions=3, seal_every=7)
    rng = random.Random(3)
    batches: list[list[Any]] = []
    i = 0
    while i < len(records):
        n = rng.randint(1, 40)
        batches.append(records[i:i + n])
        i += n

    plain = CountingStore()
    per_event = PartitionedRuntime([CountingProjection()], lambda _name: plain)
    table = RecordingTable()
    batched_store = WriteBehindStore(table)
    batched = PartitionedRuntime([CountingProjection()], lambda _name: batched_store)
    for batch in batches:
        out_a, pending_a = per_event.process(batch)
        out_b, pending_b = batched.process(batch)
        assert [e.event_id for e in out_a.applied] == [e.event_id for e in out_b.applied]
        assert [d.reason for d in out_a.dead_letters] == [d.reason for d in out_b.dead_letters]
        assert pending_a == pending_b
        assert batched_store.pending == 0  # flushed before the caller acknowledges anything
    assert snapshot(TableStore(table), include_marks=True) == snapshot(plain, include_marks=True)
    assert per_event.counters.values == batched.counters.values
    # fewer table writes (intents included) than per-event writes: marks and counters collapse per batch
    assert batched_store.writes == len(table.log)
    assert len(table.log) < plain.puts / 2


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.puts = 0

    def put(self, key: str, value: Any) -> None:
        self.puts += 1
        super().put(key, value)
