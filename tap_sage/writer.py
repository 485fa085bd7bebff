"""Singer output that does not flush stdout after every record.

The SDK's msgspec writer encodes fast but flushes ``sys.stdout`` after each message, which
costs a system call per record. ``BufferedMsgSpecWriter`` keeps records in a buffer and writes
them out when it grows past ``FLUSH_BYTES``, at least every ``FLUSH_SECONDS``, on every message
that is not a RECORD (STATE above all: a STATE line reaches stdout only after every record
before it) and at exit. The first RECORD of the process is flushed at once, so a connection
test (``meltano config tap-sage test``) sees it without waiting.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import time
import typing as t

from singer_sdk.contrib.msgspec import MsgSpecWriter, serialize_jsonl
from singer_sdk.singerlib.messages import RecordMessage, SchemaMessage

if t.TYPE_CHECKING:
    from singer_sdk.singerlib.encoding.simple import Message

FLUSH_BYTES = 1 << 16
FLUSH_SECONDS = 1.0


class BufferedMsgSpecWriter(MsgSpecWriter):
    """msgspec encoding, written in large chunks (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()
        self._last_flush = time.monotonic()
        self._records = 0
        #: bytes of messages written so far (``tap_sage.state`` paces STATE by it)
        self.written = 0
        atexit.register(self._flush_at_exit)

    def serialize_message(self, message: Message) -> bytearray:
        """The SDK's msgspec line; a SCHEMA message without ``dataclasses.asdict``, which
        deep-copies the whole schema first (a tenth of a second for a big one): the same
        top-level fields, ``None`` ones left out, as ``Message.to_dict`` gives them."""
        if isinstance(message, SchemaMessage):
            fields = {"type": message.type, "stream": message.stream, "schema": message.schema,
                      "key_properties": message.key_properties,
                      "bookmark_properties": message.bookmark_properties}  # fmt: skip
            return serialize_jsonl({k: v for k, v in fields.items() if v is not None})
        return super().serialize_message(message)

    def write_message(self, message: Message) -> None:
        """Buffer one message; flush unless it is a RECORD that can wait."""
        line = self.format_message(message)
        self.written += len(line)
        self._buffer += line
        if isinstance(message, RecordMessage):
            self._records += 1
            if (
                self._records > 1
                and len(self._buffer) < FLUSH_BYTES
                and time.monotonic() - self._last_flush < FLUSH_SECONDS
            ):
                return
        self.flush()

    def _flush_at_exit(self) -> None:
        with contextlib.suppress(ValueError, OSError):  # stdout closed: nothing more to write
            self.flush()

    def flush(self) -> None:
        """Write out everything buffered and flush stdout."""
        stdout = sys.stdout
        if self._buffer:
            stdout.flush()
            stdout.buffer.write(self._buffer)
            self._buffer.clear()
        stdout.flush()
        self._last_flush = time.monotonic()
