"""The list reader's parameters (``ReaderSettings``) and the hooks by which it reports to its stream."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tap_sage.sync.pages import CHECKPOINT_PAGES, MAX_PAGE_SIZE, PAGE_FLOOR, Progress


@dataclass(frozen=True)
class ReaderSettings:
    """What one read of one list is asked to do: the reader's parameters."""

    #: ``items_per_page`` of the main scan
    page_size: int
    #: inclusive lower bound of ``updated_at`` (the bookmark), when ``incremental``
    since: str | None
    incremental: bool
    #: the list takes ``sort=updated_at``
    sortable: bool
    #: the list takes ``deleted_since``
    deletions: bool
    #: emit the deletion pass's tombstones
    include_deleted: bool = True
    #: the stream's own filters (``stream_filters``)
    params: Mapping[str, Any] = field(default_factory=dict)
    #: pages of one list in flight at a time
    max_concurrency: int = 1
    #: exclusive lower bound of the deletion pass when there is no bookmark to derive it from
    deleted_after: str | None = None
    #: largest ``items_per_page`` of the repairs
    max_page_size: int = MAX_PAGE_SIZE
    #: an interrupted read's checkpoint to resume from
    resume: Progress | None = None
    checkpoint_pages: int = CHECKPOINT_PAGES
    #: smallest page the heavy-page fallback goes down to
    page_floor: int = PAGE_FLOOR


@dataclass(frozen=True)
class ReaderHooks:
    """How a read reports to its stream (all optional)."""

    #: a ``Progress`` to put in state (every record up to it is out)
    checkpoint: Callable[[Progress], None] | None = None
    #: a first read began: the lower bound (ISO) of the next run's deletion pass
    on_start: Callable[[str], None] | None = None
    #: whether a page's error may be cured by smaller pages
    heavy: Callable[[Exception], bool] | None = None
    #: the read goes on with pages of this size after this error
    on_smaller_pages: Callable[[int, Exception], None] | None = None
    logger: logging.Logger | None = None
