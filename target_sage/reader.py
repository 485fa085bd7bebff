"""Reading the Singer input line by line, with line numbers, robust to bad and hostile lines.

A line that is not UTF-8, not JSON, not a Singer message, or nested beyond reason is handed to
``on_bad_line(line_number, problem, text)`` (the target records it or stops, per
``on_error``) instead of ending the run with a traceback. ``line_number`` is the line being
processed, for the messages of records that fail later.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import IO, Any

from singer_sdk.singerlib.encoding import SimpleSingerReader
from singer_sdk.singerlib.json import deserialize_json
from typing_extensions import override

#: Deeper than this is "nested beyond reason": Sage's deepest write body (a document's lines
#: with their links) is 4 levels; records from taps rarely go past 10.
MAX_NESTING = 64
#: How much of a bad line is kept in the dead letter and the results file.
MAX_KEPT = 100_000

BadLine = Callable[[int, str, str], None]


def too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether ``value`` nests dicts/lists deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))
    return False


class LineReader(SimpleSingerReader):
    """The SDK's reader, with line numbers and bad lines reported instead of raised."""

    def __init__(self) -> None:
        super().__init__()
        self.line_number = 0
        self.on_bad_line: BadLine | None = None

    def _bad(self, number: int, problem: str, text: str) -> None:
        if self.on_bad_line is None:
            raise ValueError(f"Input line {number}: {problem}")
        self.on_bad_line(number, problem, text[:MAX_KEPT])

    @override
    def process_lines(
        self,
        file_input: IO[Any] | None,
        callbacks: dict[str, Callable[[dict[str, Any]], None]],
    ) -> Counter[str]:
        stats: dict[str, int] = defaultdict(int)
        stream = file_input or self.default_input
        # Bytes where we can have them: a line that is not UTF-8 is one bad line, not the end.
        source: Iterable[Any] = getattr(stream, "buffer", None) or stream
        for number, raw in enumerate(source, start=1):
            self.line_number = number
            if isinstance(raw, bytes):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    text = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
                    self._bad(number, f"not UTF-8 (byte {exc.start + 1} of the line)", text)
                    continue
            else:
                line = raw
            if not line.strip():
                continue  # a blank line carries nothing
            try:
                message = deserialize_json(line)
            except RecursionError:
                self._bad(number, "nested beyond reason (JSON too deep to read)", line.rstrip())
                continue
            except ValueError as exc:  # JSONDecodeError
                self._bad(number, f"not valid JSON ({exc})", line.rstrip())
                continue
            if not isinstance(message, dict) or not isinstance(message.get("type"), str):
                self._bad(number, "not a Singer message (no `type`)", line.rstrip())
                continue
            if too_deep(message):
                self._bad(
                    number, f"nested beyond reason (more than {MAX_NESTING} levels)", line.rstrip()
                )
                continue
            kind = message["type"]
            callback = callbacks.get(kind)
            if callback is None:
                self._bad(number, f"unknown Singer message type {kind!r}", line.rstrip())
                continue
            self._current_message = line
            callback(message)
            stats[kind] += 1
        return Counter(**stats)
