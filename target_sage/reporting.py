"""Reporting: the results file, the dead letter, and the count of failures of a run."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from target_sage.results import DeadLetterFile, Result, ResultsFile
    from target_sage.settings import TargetSettings
    from target_sage.work import WorkItem

LOGGER = logging.getLogger("target_sage")


@dataclass
class Reporter:
    """Writes each record's result line (and, under ``on_error: continue``, the dead letter)."""

    settings: TargetSettings
    results: ResultsFile
    dead_letter: DeadLetterFile
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count_failure(self) -> None:
        """One more failed record (or bad line) in this run."""
        with self._lock:
            self.failed += 1

    def report(self, item: WorkItem, result: Result) -> None:
        """Write the result line, and the dead letter of a failure."""
        self.report_message(result, item.schema_message, item.raw_message)

    def report_message(
        self,
        result: Result,
        schema_message: dict[str, Any] | None,
        raw_message: dict[str, Any],
    ) -> None:
        """Write the result line, and under ``on_error: continue`` the failed message."""
        self.results.write(result)
        if result.outcome == "failed":
            self.count_failure()
            if self.settings.on_error == "continue":
                self.dead_letter.write(schema_message, raw_message)
                LOGGER.error("%s", result.message)
