"""Archive topics to an Avro object container file, and restore them into any broker.

Why: the log is the evidence, and the embedded broker keeps nothing across a restart; an
archive is the log outside Kafka. Records are stored byte for byte (value, key, headers)
with their original partition, offset and timestamp, so a restore reproduces every
partition in the same order and the restored log verifies and audits exactly like the
original: nothing is re-signed or re-encoded.

Format: **one file per run**, holding every archived topic (fastavro object container,
deflate by default). Each Avro record is one Kafka record (schema ``ARCHIVE_SCHEMA``);
within a partition records appear in offset order (partitions interleave). The file
metadata ``swarmlog.archive`` is JSON: format version, the topics with their partition
counts and archived offset ranges, the record count.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

FORMAT_VERSION = 1
META_KEY = "swarmlog.archive"

ARCHIVE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "ArchivedRecord",
    "namespace": "swarmlog.archive",
    "doc": "One Kafka record, byte for byte, as archived by `swarmlog archive`.",
    "fields": [
        {"name": "topic", "type": "string"},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "timestamp_ms", "type": "long"},
        {"name": "timestamp_type", "type": "int", "doc": "0 none, 1 create time, 2 log append time"},
        {"name": "key", "type": ["null", "bytes"]},
        {"name": "value", "type": ["null", "bytes"]},
        {"name": "headers", "type": {"type": "array", "items": {
            "type": "record", "name": "Header",
            "fields": [{"name": "key", "type": "string"}, {"name": "value", "type": ["null", "bytes"]}]}}},
    ],
}
_PARSED = fastavro.parse_schema(ARCHIVE_SCHEMA)


class ArchiveError(RuntimeError):
    """The archive cannot be written or read, or a restore target is unsuitable."""


@dataclass(frozen=True)
class ArchiveSummary:
    path: Path
    records: int
    topics: dict[str, dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "records": self.records, "topics": self.topics}


def archive_topics(bootstrap: str, topics: Sequence[str], path: Path, *, codec: str = "deflate",
                   progress: Callable[[int, int], None] | None = None) -> ArchiveSummary:
    """Write every record of ``topics`` (low to high watermark taken now) to ``path``.

    Written to ``path.tmp`` and renamed, so a failed run never leaves a truncated archive.
    """
    from swarmlog.streams.reader import plan_ranges, read_messages

    ranges = plan_ranges(bootstrap, topics)
    total = sum(max(0, (r.stop or 0) - r.start) for r in ranges)
    meta_topics: dict[str, dict[str, Any]] = {}
    for r in ranges:
        entry = meta_topics.setdefault(r.topic, {"partitions": 0, "ranges": {}})
        entry["partitions"] = max(entry["partitions"], r.partition + 1)
        entry["ranges"][str(r.partition)] = [r.start, r.stop]
    done = 0

    def records() -> Iterator[dict[str, Any]]:
        nonlocal done
        for batch in read_messages(bootstrap, ranges):
            for msg in batch:
                ts_type, ts = msg.timestamp()
                headers = msg.headers() or []
                yield {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
                       "timestamp_ms": ts, "timestamp_type": ts_type, "key": msg.key(), "value": msg.value(),
                       "headers": [{"key": k, "value": v} for k, v in headers]}
            done += len(batch)
            if progress is not None:
                progress(done, total)

    metadata = {META_KEY: json.dumps({"format": FORMAT_VERSION, "created_ms": int(time.time() * 1000),
                                      "topics": meta_topics, "records": total}, sort_keys=True)}
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fastavro.writer(fh, _PARSED, records(), codec=codec, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if done != total:
        raise ArchiveError(f"archived {done} records but {total} were planned")
    return ArchiveSummary(path, done, meta_topics)


def read_archive_meta(path: Path) -> dict[str, Any]:
    """The archive's metadata (format, topics, record count); ArchiveError if it is not one."""
    try:
        with open(path, "rb") as fh:
            reader = fastavro.reader(fh)
            raw = reader.metadata.get(META_KEY)
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"{path}: not a readable Avro container file: {exc}") from None
    if raw is None:
        raise ArchiveError(f"{path}: not a swarmlog archive (no {META_KEY} metadata)")
    meta: dict[str, Any] = json.loads(raw)
    if meta.get("format") != FORMAT_VERSION:
        raise ArchiveError(f"{path}: unsupported archive format {meta.get('format')}")
    return meta


def iter_archive(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as fh:
        for record in fastavro.reader(fh, reader_schema=_PARSED):
            assert isinstance(record, dict)
            yield record


def restore_archive(bootstrap: str, path: Path, *, into_existing: bool = False,
                    progress: Callable[[int, int], None] | None = None) -> ArchiveSummary:
    """Produce every archived record to the same topic and partition, in archive order.

    Raw bytes (value, key, headers, timestamp): nothing is re-signed. Topics are created
    with the archived partition counts; an existing topic must have at least as many
    partitions and, unless ``into_existing``, be empty (appending would duplicate records).
    Offsets on the target start at its current end (0 on a fresh broker); order within
    each partition is kept (idempotent producer, acks=all).
    """
    from confluent_kafka import KafkaException, Producer

    from swarmlog.infra.broker import client_config
    from swarmlog.infra.topics import ensure_topics, watermarks

    meta = read_archive_meta(path)
    topics: dict[str, dict[str, Any]] = meta["topics"]
    total = int(meta["records"])
    from swarmlog.infra.broker import admin_client

    existing = admin_client(bootstrap).list_topics(timeout=10).topics
    for name, info in topics.items():
        if name not in existing:
            continue
        have = len(existing[name].partitions)
        if have < info["partitions"]:
            raise ArchiveError(f"topic {name} has {have} partitions, the archive needs {info['partitions']}")
        if not into_existing:
            marks = watermarks(bootstrap, [name])
            if any(high > low for low, high in marks.get(name, [])):
                raise ArchiveError(f"topic {name} already holds records; restore into an empty topic "
                                   "(or pass --into-existing to append)")
    ensure_topics(bootstrap, {name: info["partitions"] for name, info in topics.items() if name not in existing})
    errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer(client_config(bootstrap, **{"enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                                    "queue.buffering.max.messages": 500_000,
                                                    "message.max.bytes": 10_485_760}))
    done = 0
    try:
        for record in iter_archive(path):
            headers = [(h["key"], h["value"]) for h in record["headers"]] or None
            while True:
                try:
                    producer.produce(record["topic"], record["value"], record["key"], record["partition"],
                                     on_delivery=delivered, timestamp=record["timestamp_ms"], headers=headers)
                    break
                except BufferError:
                    producer.poll(0.05)
            done += 1
            if done % 5000 == 0:
                producer.poll(0)
                if progress is not None:
                    progress(done, total)
        remaining = producer.flush(120)
    except KafkaException as exc:
        raise ArchiveError(f"restore failed: {exc}") from None
    if remaining:
        raise ArchiveError(f"{remaining} records were not delivered within 120 s")
    if errors:
        raise ArchiveError(f"{len(errors)} records failed delivery, first: {errors[0]}")
    if progress is not None:
        progress(done, total)
    if done != total:
        raise ArchiveError(f"the archive holds {done} records but its metadata says {total}")
    return ArchiveSummary(path, done, topics)
