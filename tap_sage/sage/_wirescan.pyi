"""The compiled page scanner (``_wirescan.c``); see its header comment."""

from typing import Any

ABI_VERSION: int
SLOTS: int
MAX_KEYS: int
SOURCE: str
DEC: int
DATE: int
TEXT: int
DECLIST: int
FORBID: int

def scan(
    page: bytes, table: bytes, suffix: bytes | None, /
) -> tuple[list[bytes], list[tuple[Any, ...]], list[tuple[bytes, bytes]]] | None: ...
