"""The results file (one JSON line per record) and the dead-letter file (Singer messages)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tap_sage.sage.errors import SageError
from target_sage.payload import dumps


class OutputFileError(SageError):
    """A results or dead-letter file cannot be written."""


def open_private(path: Path, setting: str) -> IO[str]:
    """Open ``path`` for appending, created 0600 (it holds business data); an existing file
    is made 0600 too. An unusable path is an error naming the setting, the path and the fix."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise OutputFileError(
            f"`{setting}` {path} cannot be written ({exc.strerror or exc}): set `{setting}` "
            "to a file in a folder this user can write"
        ) from None
    with contextlib.suppress(OSError):  # not ours to change (/dev/null): its mode stays
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8")


OUTCOMES = ("created", "updated", "deleted", "voided", "executed", "skipped", "failed")


@dataclass
class Result:
    """What happened to one record."""

    stream: str
    operation: str
    source_key: Any
    outcome: str
    sage_id: str | None = None
    http_status: int | None = None
    data_code: str | None = None
    message: str | None = None
    source: str | None = None
    x_request_id: str | None = None
    output: dict[str, Any] | None = None
    dry_run: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self, run_id: str) -> dict[str, Any]:
        """The JSON object written to the results file."""
        out: dict[str, Any] = {
            "run_id": run_id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "stream": self.stream,
            "operation": self.operation,
            "source_key": self.source_key,
            "sage_id": self.sage_id,
            "outcome": self.outcome,
            "http_status": self.http_status,
            "$dataCode": self.data_code,
            "$message": self.message,
            "$source": self.source,
            "x_request_id": self.x_request_id,
        }
        if self.output:
            out["output"] = self.output
        if self.dry_run:
            out["dry_run"] = True
        return out


class ResultsFile:
    """Appends result lines; thread-safe; flushed after every line. Also counts outcomes."""

    def __init__(self, path: Path | None, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        if path is not None:
            self._fh = open_private(path, "results_path")

    def write(self, result: Result) -> None:
        """Record one result."""
        text = dumps(result.line(self.run_id), ensure_ascii=False)
        with self._lock:
            self.counts[(result.stream, result.outcome)] += 1
            if self._fh is not None:
                self._fh.write(text + "\n")
                self._fh.flush()

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


class DeadLetterFile:
    """Failed records as Singer messages (SCHEMA once per stream, then RECORDs): replayable."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        self._schemas_written: set[str] = set()
        self.count = 0

    def write(self, schema_message: dict[str, Any] | None, record_message: dict[str, Any]) -> None:
        """Append one failed record (and its stream's SCHEMA the first time)."""
        if self.path is None:
            return
        with self._lock:
            if self._fh is None:
                self._fh = open_private(self.path, "dead_letter_path")
            stream = str(record_message.get("stream"))
            if schema_message is not None and stream not in self._schemas_written:
                self._fh.write(dumps(schema_message) + "\n")
                self._schemas_written.add(stream)
            self._fh.write(dumps(record_message) + "\n")
            self._fh.flush()
            self.count += 1

    def write_bad_line(self, number: int, problem: str, text: str) -> None:
        """Append a line that was no Singer message, with its line number and the problem.

        Replaying the dead letter reports it again: fix or drop it by hand."""
        if self.path is None:
            return
        with self._lock:
            if self._fh is None:
                self._fh = open_private(self.path, "dead_letter_path")
            entry = {"type": "INVALID_LINE", "input_line": number, "problem": problem, "text": text}
            self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self._fh.flush()
            self.count += 1

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
