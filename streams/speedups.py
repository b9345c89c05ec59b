"""Chooses between the optional C extension and the pure-Python hot paths, once, at import.

The C extension (``_speedups.c``) is built by ``pip install`` when a compiler is present
and skipped otherwise. Both paths produce byte-identical events; the C one is only faster.
``SWARMLOG_SPEEDUPS=0`` forces the pure-Python path (tests run both).
"""

from __future__ import annotations

import os
from types import ModuleType

native: ModuleType | None = None
"""The ``_speedups`` module, or None when it is not built or disabled."""


def _load() -> ModuleType | None:
    if os.environ.get("SWARMLOG_SPEEDUPS", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        from swarmlog.streams import _speedups
    except ImportError:
        return None
    return _speedups


native = _load()


def enabled() -> bool:
    """Whether the C hot paths are in use in this process."""
    return native is not None
