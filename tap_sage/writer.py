"""Singer output that does not flush stdout after every record.

The SDK's msgspec writer encodes fast but flushes ``sys.stdout`` after each message, which
costs a system call per record. ``BufferedMsgSpecWriter`` keeps records in a buffer and writes
them out when it grows past ``FLUSH_BYTES``, at least every ``FLUSH_SECONDS``, on every message
that is not a RECORD (STATE above all: a STATE line reaches stdout only after every record
before it) and at exit. The first RECORD of the process is flushed at once, so a connection
test (``meltano config tap-sage test``) sees it without waiting.

``RawRecordLine`` is the tap's fast path (``tap_sage.records``): a RECORD whose record is
already JSON text goes into the buffer as its three parts joined, with no message object built
and encoded, and ``write_records`` buffers a run of them at once; the bytes are those the SDK's
``RecordMessage`` would give (tests/test_fast_path.py). Each line, and each run, is one append.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import time
import typing as t
import weakref
from datetime import datetime

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecWriter, serialize_jsonl
from singer_sdk.singerlib.messages import RecordMessage, SchemaMessage

if t.TYPE_CHECKING:
    from singer_sdk.singerlib.encoding.simple import Message

FLUSH_BYTES = 1 << 16
FLUSH_SECONDS = 1.0

#: Every writer of the process, for ``flush_writers`` (the end of the output, ``tap.end_output``).
_WRITERS: weakref.WeakSet[BufferedMsgSpecWriter] = weakref.WeakSet()

_encode = msgspec.json.encode


class RawRecordLine:
    """One RECORD line in three parts: ``head`` (up to ``"record":``), the record's JSON text,
    and ``tail`` (``version``, ``time_extracted``, the closing brace and the line break)."""

    __slots__ = ("head", "record", "tail")

    def __init__(self, head: bytes, record: bytes, tail: bytes) -> None:
        self.head = head
        self.record = record
        self.tail = tail


def record_head(stream: str) -> bytes:
    """What precedes the record in a RECORD line of ``stream`` (as ``RecordMessage.to_dict``
    orders it)."""
    return b'{"type":"RECORD","stream":' + _encode(stream) + b',"record":'


def record_tail(version: int | None, extracted: datetime) -> bytes:
    """What follows the record in a RECORD line (``None`` fields left out, as the SDK does)."""
    version_part = b"" if version is None else b',"version":' + _encode(version)
    return version_part + b',"time_extracted":' + _encode(extracted) + b"}\n"


def flush_writers() -> None:
    """Write out what every ``BufferedMsgSpecWriter`` of the process still buffers."""
    for writer in list(_WRITERS):
        writer.flush()


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
        _WRITERS.add(self)

    def serialize_message(self, message: Message | RawRecordLine) -> bytearray:
        """The SDK's msgspec line; a SCHEMA message without ``dataclasses.asdict``, which
        deep-copies the whole schema first (a tenth of a second for a big one): the same
        top-level fields, ``None`` ones left out, as ``Message.to_dict`` gives them; a
        ``RawRecordLine`` as it is."""
        if isinstance(message, RawRecordLine):
            return bytearray(b"".join((message.head, message.record, message.tail)))
        if isinstance(message, SchemaMessage):
            fields = {"type": message.type, "stream": message.stream, "schema": message.schema,
                      "key_properties": message.key_properties,
                      "bookmark_properties": message.bookmark_properties}  # fmt: skip
            return serialize_jsonl({k: v for k, v in fields.items() if v is not None})
        return super().serialize_message(message)

    def write_message(self, message: Message | RawRecordLine) -> None:
        """Buffer one message; flush unless it is a RECORD that can wait."""
        line = self.serialize_message(message)  # one append of the whole line
        self.written += len(line)
        self._buffer += line
        if isinstance(message, (RawRecordLine, RecordMessage)):
            self._records += 1
            if (
                self._records > 1
                and len(self._buffer) < FLUSH_BYTES
                and time.monotonic() - self._last_flush < FLUSH_SECONDS
            ):
                return
        self.flush()

    def write_records(self, head: bytes, records: list[bytes], tail: bytes) -> None:
        """Buffer one RECORD line per JSON text of ``records``: ``head + record + tail`` each
        (``record_head``, ``record_tail``), as ``RawRecordLine`` would give them one by one."""
        if not records:
            return
        # one append of the whole run: a signal handler (the SDK writes a last STATE on
        # SIGTERM) never finds half a line in the buffer
        lines = b"".join((head, (tail + head).join(records), tail))
        buffer = self._buffer
        buffer += lines
        self.written += len(lines)
        first = self._records == 0
        self._records += len(records)
        if (
            first
            or len(buffer) >= FLUSH_BYTES
            or time.monotonic() - self._last_flush >= FLUSH_SECONDS
        ):
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
