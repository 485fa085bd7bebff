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
from typing import Any

from tap_sage.sage.errors import SageError
from target_sage.payload import dumps

OUTCOMES = ("created", "updated", "deleted", "voided", "executed", "skipped", "failed")


class OutputFileError(SageError):
    """A results or dead-letter file cannot be written."""


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


def _append(path: Path, text: str, setting: str) -> None:
    """Append ``text`` to ``path``, created 0600 (it holds business data; an existing file is
    made 0600 too), then close it. An unusable path is an error naming the setting, the path
    and the fix. Its folder is made only when it is missing (not once a line)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    try:
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:  # the folder went away since start-up: make it again
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise OutputFileError(
            f"`{setting}` {path} cannot be written ({exc.strerror or exc}): set `{setting}` "
            "to a file in a folder this user can write"
        ) from None
    with contextlib.suppress(OSError):  # not ours to change (/dev/null): its mode stays
        os.fchmod(fd, 0o600)
    with open(fd, "a", encoding="utf-8") as fh:
        fh.write(text)


def _check_writable(path: Path, setting: str) -> None:
    """Fail at start-up, not at the first result, when the path cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFileError(
            f"`{setting}` {path} cannot be written ({exc.strerror or exc}): set `{setting}` "
            "to a file in a folder this user can write"
        ) from None


class ResultsFile:
    """Appends result lines; thread-safe; each line is on disk when ``write`` returns. Also
    counts outcomes.

    The file is opened for each line and closed again, so no exit path (a failed record, a
    bad setting found after start-up, an exception of the SDK) leaves a file handle open;
    one open and close is microseconds next to the HTTP request behind every result.
    """

    def __init__(self, path: Path | None, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        if path is not None:
            _check_writable(path, "results_path")

    def write(self, result: Result) -> None:
        """Record one result."""
        text = dumps(result.line(self.run_id), ensure_ascii=False)
        with self._lock:
            self.counts[(result.stream, result.outcome)] += 1
            if self.path is not None:
                _append(self.path, text + "\n", "results_path")

    def close(self) -> None:
        """Nothing stays open between two lines; kept for the callers that close."""


class DeadLetterFile:
    """Failed records as Singer messages (SCHEMA once per stream, then RECORDs): replayable.

    Opened for each record and closed again, like the results file: no handle outlives a
    ``write``, whatever way the run ends. Decimals are written digit for digit.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._schemas_written: set[str] = set()
        self.count = 0

    def write(self, schema_message: dict[str, Any] | None, record_message: dict[str, Any]) -> None:
        """Append one failed record (and its stream's SCHEMA the first time)."""
        if self.path is None:
            return
        with self._lock:
            stream = str(record_message.get("stream"))
            lines: list[str] = []
            if schema_message is not None and stream not in self._schemas_written:
                lines.append(dumps(schema_message) + "\n")
            lines.append(dumps(record_message) + "\n")
            _append(self.path, "".join(lines), "dead_letter_path")
            if schema_message is not None:
                self._schemas_written.add(stream)
            self.count += 1

    def write_bad_line(self, number: int, problem: str, text: str) -> None:
        """Append a line that was no Singer message, with its line number and the problem.

        Replaying the dead letter reports it again: fix or drop it by hand."""
        if self.path is None:
            return
        entry = {"type": "INVALID_LINE", "input_line": number, "problem": problem, "text": text}
        with self._lock:
            _append(self.path, json.dumps(entry, ensure_ascii=False) + "\n", "dead_letter_path")
            self.count += 1

    def close(self) -> None:
        """Nothing stays open between two records; kept for the callers that close."""
