"""swarmlog: an event-sourced coordination fabric for autonomous software agents on Kafka.

This module is the public facade. The implementation lives in subpackages
(``swarmlog.streams``, ``swarmlog.projections``, ``swarmlog.processors``,
``swarmlog.infra``); import from here for the stable API.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
