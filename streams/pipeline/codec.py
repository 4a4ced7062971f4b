"""msgpack bytes for the state the counting stage keeps in Faust tables (windows, clocks, detectors).

Pure: no Faust, no I/O. One encoder and one typed decoder per kind of value, built once at import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec

T = TypeVar("T")


def msgpack_codec(kind: type[T]) -> tuple[Callable[[T], bytes], Callable[[bytes], T]]:
    """``(encode, decode)`` for values of ``kind``; ``decode`` raises ``msgspec.DecodeError`` (a
    ValueError) on bytes that are not a ``kind``. The bound methods themselves, so a call costs no extra
    Python frame."""
    return msgspec.msgpack.Encoder().encode, msgspec.msgpack.Decoder(kind).decode
