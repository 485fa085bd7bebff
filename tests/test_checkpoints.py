"""The one test-hook mechanism: ``checkpoint(name)`` does nothing without a handler, the
handlers are the tests' (``tests/checkpoint_support.py``), and production code reads no test
environment variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from tap_sage import checkpoints
from tap_sage.sage.oauth import TokenAnswerLost
from tests import checkpoint_support

ROOT = Path(__file__).resolve().parents[1]


def test_a_checkpoint_runs_the_installed_handlers_only_while_installed() -> None:
    seen: list[str] = []
    checkpoints.checkpoint("before_request")  # nothing installed: nothing happens
    remove = checkpoints.install(seen.append)
    try:
        checkpoints.checkpoint("before_request")
        checkpoints.checkpoint("after_ledger")
    finally:
        remove()
    checkpoints.checkpoint("after_request")
    assert seen == ["before_request", "after_ledger"]


def test_lose_next_refresh_answer_raises_once_at_its_point() -> None:
    with checkpoint_support.lose_next_refresh_answer():
        checkpoints.checkpoint("after_marker")  # another point: nothing
        with pytest.raises(TokenAnswerLost):
            checkpoints.checkpoint("refresh_answered")
        checkpoints.checkpoint("refresh_answered")  # once only
    checkpoints.checkpoint("refresh_answered")


def test_production_code_reads_no_test_hook_variable() -> None:
    names = (
        checkpoint_support.KILL_ENV,
        checkpoint_support.PAUSE_ENV,
        checkpoint_support.PAUSE_FILE_ENV,
        checkpoint_support.LOSE_ANSWER_ENV,
    )
    found = [
        f"{path.relative_to(ROOT)}: {name}"
        for package in ("tap_sage", "target_sage")
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in names
        if name in path.read_text(encoding="utf-8")
    ]
    assert not found, found
