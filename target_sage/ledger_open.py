"""Which ledger ``ledger_path`` names: the SQLite file (``target_sage.ledger``) or the
PostgreSQL table that several machines share (``target_sage.ledger_db``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from target_sage.ledger import Ledger
from target_sage.ledger_db import DatabaseLedger

if TYPE_CHECKING:
    from target_sage.settings import TargetSettings


def open_ledger(settings: TargetSettings) -> Ledger:
    """The ledger that ``ledger_path`` names: a SQLite file, or a PostgreSQL database."""
    if settings.ledger_url:
        return DatabaseLedger(settings.ledger_url, read_only=settings.dry_run)
    if settings.connection.token_store_url:
        logging.getLogger("target_sage.ledger").warning(
            "The token store is a database that machines share, but the ledger is the file %s "
            "of this machine: a target of this connection on another machine would not know "
            "what this one wrote. Set `ledger_path` to a postgresql:// URL to share it "
            "(`python -m target_sage.ledger_db copy` moves this file there)",
            settings.ledger_path,
        )
    return Ledger(settings.ledger_path, read_only=settings.dry_run)
