"""Time-ordered unique ids (UUIDv7, RFC 9562) generated without a syscall per id.

Why not ``uuid``: building ``uuid.UUID`` objects costs more than the rest of the event
envelope on the ingest hot path. Layout: 48-bit Unix milliseconds, version 7, a 42-bit
counter spread over ``rand_a`` and the top of ``rand_b`` (RFC 9562 §6.2 method 1, so
ids from one process are strictly increasing), 32 random bits drawn once per process.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import uuid

_COUNTER_BITS = 42
_COUNTER_MAX = (1 << _COUNTER_BITS) - 1


_PACK = struct.Struct(">QQ").pack


class UUID7Generator:
    """Monotonic UUIDv7 source; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0
        self._salt = int.from_bytes(os.urandom(4), "big")

    def new(self) -> bytes:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms > self._last_ms:
                self._last_ms = ms
                # Random start leaves room to count up inside the millisecond.
                self._counter = counter = int.from_bytes(os.urandom(6), "big") >> 7  # 41 bits
            else:
                counter = self._counter = self._counter + 1
                if counter > _COUNTER_MAX:
                    self._last_ms += 1
                    self._counter = counter = 0
                ms = self._last_ms
        # ms(48) | ver(4) | counter[41:30](12) ‖ var(2) | counter[29:0](30) | salt(32)
        return _PACK((ms << 16) | 0x7000 | (counter >> 30),
                     0x8000000000000000 | ((counter & 0x3FFFFFFF) << 32) | self._salt)


    def reserve(self, n: int) -> tuple[int, int]:
        """Reserve ``n`` (>= 1) consecutive ids in one locked step: their millisecond and first counter.

        The ids are ``pack_ids(ms, first, n, salt)``; the C ingest path packs them itself.
        """
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms > self._last_ms:
                self._last_ms = ms
                first = int.from_bytes(os.urandom(6), "big") >> 7
            else:
                first = self._counter + 1
                ms = self._last_ms
            last = first + n - 1
            if last > _COUNTER_MAX:  # spill into the next millisecond(s), as new() would
                ms += 1 + (last - _COUNTER_MAX) // (_COUNTER_MAX + 1)
                first, last = 0, n - 1
                self._last_ms = ms
            self._counter = last
        return ms, first

    @property
    def salt(self) -> int:
        """The 32 random low bits shared by every id of this process."""
        return self._salt

    def batch(self, n: int) -> list[bytes]:
        """``n`` consecutive ids in one locked step (the bulk ingest path)."""
        if n <= 0:
            return []
        ms, first = self.reserve(n)
        return pack_ids(ms, first, n, self._salt)


def pack_ids(ms: int, first: int, n: int, salt: int) -> list[bytes]:
    """The ``n`` UUIDv7s of millisecond ``ms`` with counters ``first``, ``first + 1``, ..."""
    hi_base = (ms << 16) | 0x7000
    lo_base = 0x8000000000000000 | salt
    pack = _PACK
    return [pack(hi_base | (c >> 30), lo_base | ((c & 0x3FFFFFFF) << 32)) for c in range(first, first + n)]


_GENERATOR = UUID7Generator()


def uuid7() -> bytes:
    """16 raw bytes of a fresh UUIDv7."""
    return _GENERATOR.new()


def uuid7_batch(n: int) -> list[bytes]:
    """``n`` fresh, strictly increasing UUIDv7s."""
    return _GENERATOR.batch(n)


def uuid7_reserve(n: int) -> tuple[int, int, int]:
    """(ms, first counter, salt) of ``n`` fresh ids, for code that packs them itself."""
    ms, first = _GENERATOR.reserve(n)
    return ms, first, _GENERATOR.salt


def uuid7_str() -> str:
    return str(uuid.UUID(bytes=uuid7()))


def uuid_text(raw: bytes) -> str:
    """Canonical text form of 16 raw id bytes (what ``str(uuid.UUID(bytes=raw))`` gives).

    Formatted from the hex string: building a ``uuid.UUID`` per event was a visible share
    of replay time (every folded event's context carries its id as text).
    """
    if len(raw) != 16:
        raise ValueError("bytes is not a 16-char string")
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid_bytes(text: str) -> bytes:
    """Raw bytes from text form; ValueError on anything else."""
    return uuid.UUID(text).bytes


def uuid7_time_ms(raw: bytes) -> int:
    """The millisecond timestamp embedded in a UUIDv7."""
    return int.from_bytes(raw[:6], "big")
