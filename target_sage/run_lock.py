"""One target run at a time per ledger: a lock file beside the ledger, held from the first
write to the end of the run (the OS drops it when the process dies)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

if TYPE_CHECKING:
    from target_sage.settings import TargetSettings

LOGGER = logging.getLogger("target_sage")

#: Seconds to wait for another process's run on the same ledger.
LEDGER_LOCK_TIMEOUT = 900
#: Ledger path -> the lock this process holds on it (one run at a time per ledger across
#: processes; runs in one process are sequential anyway, so they share it).
_RUN_LOCKS: dict[str, FileLock] = {}
_RUN_LOCKS_GUARD = threading.Lock()


def acquire_run_lock(settings: TargetSettings) -> None:
    """Hold the ledger's run lock before the first write (not in a dry run).

    Two processes writing the same records at once could both create a record Sage cannot
    deduplicate; the second waits. The OS drops the lock if the process dies.
    """
    if settings.dry_run:
        return
    key = str(settings.ledger_path)
    with _RUN_LOCKS_GUARD:
        if key in _RUN_LOCKS:
            return
        lock = FileLock(key + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            LOGGER.warning(
                "Another target-sage run is writing with the ledger %s; waiting "
                "up to %d s for it to finish",
                key,
                LEDGER_LOCK_TIMEOUT,
            )
            lock.acquire(timeout=LEDGER_LOCK_TIMEOUT)
        _RUN_LOCKS[key] = lock


def release_run_lock(settings: TargetSettings) -> None:
    """Let other processes write with this ledger again."""
    with _RUN_LOCKS_GUARD:
        lock = _RUN_LOCKS.pop(str(settings.ledger_path), None)
    if lock is not None:
        lock.release()


# -- routing -------------------------------------------------------------------------------
