"""Quote ids: unique and time-ordered (a ULID: 48 bits of milliseconds, 80 random bits).

26 characters of Crockford base32: 10 for the milliseconds, 16 for the random bits. Made once
per quote, so made cheaply (measured 3.3 µs with a loop over the 26 characters, ~0.9 µs now):
the time part is encoded once per millisecond, and each random character is one random byte
mapped by ``bytes.translate`` (256 is a multiple of 32, so every character is equally likely).
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_RANDOM_CHARS = bytes(ord(_ALPHABET[b & 31]) for b in range(256))
_last: tuple[int, str] = (-1, "")  # the last millisecond and its 10 characters


def new_quote_id() -> str:
    global _last
    millis = time.time_ns() // 1_000_000
    last = _last  # one read: another thread may replace it meanwhile, never half of it
    if last[0] != millis:
        last = _last = (millis, _encode_time(millis))
    return last[1] + os.urandom(16).translate(_RANDOM_CHARS).decode()


def _encode_time(millis: int) -> str:
    return "".join(_ALPHABET[(millis >> shift) & 31] for shift in range(45, -1, -5))
