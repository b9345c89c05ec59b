"""Faust on the embedded Tansu broker: correct the end offsets table recovery relies on.

Tansu reports a partition's high watermark as (base offset of the last record batch + 1)
instead of (last offset + 1) — see ``streams.reader.true_high_watermarks``. Faust's
table recovery reads each changelog partition up to that high watermark, so a worker
taking over a partition restored its table *without the last batch of changelog
writes* and then kept counting from stale values (found by tests/test_worker.py: one
lost update per subject after a SIGKILL failover). On the embedded broker we therefore
replace the consumer's end offsets with the true ones. Apache Kafka is left untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from swarmlog.streams.reader import true_high_watermarks

log = logging.getLogger(__name__)
_PATCHED: dict[str, Any] = {}


def correct_end_offsets_for_embedded_broker(bootstrap: str) -> None:
    """Idempotent: patch Faust's aiokafka consumer thread to report true end offsets."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if "original" in _PATCHED:
        _PATCHED["bootstrap"] = bootstrap
        return
    original = AIOKafkaConsumerThread._highwaters
    _PATCHED["original"] = original
    _PATCHED["bootstrap"] = bootstrap

    async def _highwaters(self: Any, partitions: list[Any]) -> Mapping[Any, int]:
        reported = dict(await original(self, partitions))
        probe = [(tp.topic, tp.partition, 0, high) for tp, high in reported.items() if high]
        if not probe:
            return reported
        try:
            true_ends = true_high_watermarks(_PATCHED["bootstrap"], probe)
        except Exception:  # never block recovery on the probe; fall back to what the broker said
            log.exception("could not probe true end offsets; using the broker's")
            return reported
        return {tp: max(high, true_ends.get((tp.topic, tp.partition), high)) for tp, high in reported.items()}

    AIOKafkaConsumerThread._highwaters = _highwaters  # type: ignore[method-assign]
