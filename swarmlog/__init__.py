"""swarmlog: an event-sourced coordination fabric for autonomous software agents on Kafka.

This module is the public facade; the implementation lives in the subpackages
(``swarmlog.streams``, ``swarmlog.projections``, ``swarmlog.processors``,
``swarmlog.infra``). Names are imported lazily so ``import swarmlog`` stays cheap.

    import swarmlog

    identity = swarmlog.Keystore().load_or_create("me")
    bootstrap = swarmlog.resolve_bootstrap(start_if_missing=True)
    with swarmlog.EventProducer(identity, bootstrap) as producer:
        producer.produce("agents.registered", {...})
    for verdict in swarmlog.read_verified(bootstrap, ["agents"]):
        print(verdict.status, verdict.event)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Settings": "swarmlog.streams.settings",
    "get_settings": "swarmlog.streams.settings",
    "SchemaStore": "swarmlog.streams.codec",
    "default_store": "swarmlog.streams.codec",
    "CodecError": "swarmlog.streams.codec",
    "Event": "swarmlog.streams.envelope",
    "Identity": "swarmlog.streams.identity",
    "PublicIdentity": "swarmlog.streams.identity",
    "HybridSignature": "swarmlog.streams.identity",
    "Keystore": "swarmlog.streams.keystore",
    "encrypt_for": "swarmlog.streams.encryption",
    "decrypt": "swarmlog.streams.encryption",
    "EventProducer": "swarmlog.streams.producer",
    "EventRef": "swarmlog.streams.producer",
    "ProduceError": "swarmlog.streams.producer",
    "ChainWriter": "swarmlog.streams.chain",
    "Verifier": "swarmlog.streams.verify",
    "Verdict": "swarmlog.streams.verify",
    "Status": "swarmlog.streams.verify",
    "RawRecord": "swarmlog.streams.verify",
    "Keyring": "swarmlog.streams.verify",
    "read_verified": "swarmlog.streams.reader",
    "read_records": "swarmlog.streams.reader",
    "plan_ranges": "swarmlog.streams.reader",
    "ReadError": "swarmlog.streams.reader",
    "resolve_bootstrap": "swarmlog.infra.broker",
    "EmbeddedBroker": "swarmlog.infra.broker",
    "provision": "swarmlog.infra.topics",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'swarmlog' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
