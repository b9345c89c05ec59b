"""Shared by the benchmark scripts: a description of the machine a figure was measured on."""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Any


def machine() -> dict[str, Any]:
    """CPU model, cores and software versions, printed with every benchmark result."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()}
    with contextlib.suppress(ImportError):
        import confluent_kafka

        info["confluent_kafka"] = confluent_kafka.version()[0]
        info["librdkafka"] = confluent_kafka.libversion()[0]
    with contextlib.suppress(ImportError):
        import cryptography

        info["cryptography"] = cryptography.__version__
    return info
