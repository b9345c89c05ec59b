"""Process-wide settings, read from ``SWARMLOG_*`` environment variables.

They live at the bottom layer (``streams``) so every other layer can read them without
importing upward.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PQBackend(StrEnum):
    """Which library performs ML-DSA / ML-KEM operations."""

    AUTO = "auto"  # liboqs when its C library is present, else cryptography
    CRYPTOGRAPHY = "cryptography"
    LIBOQS = "liboqs"


def _default_home() -> Path:
    return Path.home() / ".swarmlog"


class Settings(BaseSettings):
    """Configuration for every swarmlog process; each field maps to ``SWARMLOG_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="SWARMLOG_", extra="ignore")

    bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers (host:port[,host:port]). Unset: use the embedded broker.",
    )
    home: Path = Field(default_factory=_default_home, description="State directory (keys, broker state).")
    keystore: Path | None = Field(default=None, description="Keystore directory; default <home>/keys.")
    passphrase: str | None = Field(default=None, description="Passphrase for encrypted keystore entries.")
    pq_backend: PQBackend = Field(default=PQBackend.AUTO, description="Post-quantum crypto backend.")
    topic_prefix: str = Field(default="", description="Prefix for every topic name (namespacing on a shared cluster).")
    partitions: int = Field(default=6, ge=1, description="Partitions for newly provisioned topics.")
    replication: int = Field(default=1, ge=1, description="Replication factor for newly provisioned topics.")
    event_retention_ms: int = Field(
        default=-1,
        ge=-1,
        description="retention.ms for newly provisioned event topics; -1 keeps the log forever (it is the "
        "source of truth). The embedded Tansu broker stores this config but was not seen to enforce it.",
    )
    seal_batch: int = Field(default=4096, ge=1,
                            description="Events per producer seal (Merkle batch); see docs/benchmarks.md, Ingest.")
    seal_interval_ms: int = Field(default=200, ge=1, description="Longest time an event waits for its seal.")
    ledger: bool = Field(default=True, description="Workers append authenticated events to the Merkle ledger.")
    ledger_hash: str = Field(default="sha256", pattern="^(sha256|sha3-256)$",
                             description="Ledger tree hash: sha256 (RFC 9162/CT default) or sha3-256.")
    ledger_checkpoint_leaves: int = Field(default=1000, ge=1, description="Checkpoint a lane every N new leaves.")
    ledger_checkpoint_interval_ms: int = Field(
        default=60_000, ge=1, description="...or when this much EVENT time passed since its last checkpoint.")
    unsealed_window: int = Field(
        default=100_000,
        ge=1,
        description="A verifier gives up an event still waiting for its seal once its partition holds this many "
        "later records (offset distance): it is dead-lettered as 'unsealed' (docs/architecture.md).",
    )
    tick_interval_ms: int = Field(
        default=1000, ge=0,
        description="How often a worker looks for quiet lanes with a deadline due and ticks them "
        "(clock.tick, docs/swarm.md); 0: never.")

    @property
    def keystore_dir(self) -> Path:
        return self.keystore if self.keystore is not None else self.home / "keys"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process (read once from the environment)."""
    return Settings()
