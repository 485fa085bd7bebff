"""Consistent, concurrent reads of one Sage list for one business.

Sage lists are paged by page NUMBER (``page``/``items_per_page``), and page numbers are offsets:
a record that leaves the part of the list already read (deleted, or, when the list is sorted by
``updated_at``, updated and so moved to its end) shifts every later record one place forward,
and the record that was first on the next page slips onto a page already read. A naive scan
never sees it. This module reads a list so that it never loses a record:

**The walk.** One scan of the list, bounded below by ``updated_or_created_since=<bookmark>``
(inclusive) where the resource takes it, ordered by ``sort=updated_at`` where the resource takes
it (else Sage's default creation order). Page 1 is fetched first and its records are handed out
at once (so the first record comes after one request); ``$total`` then says how many pages there
are, and pages 2..n-1 are fetched ``max_concurrency`` at a time while the records are handed out
strictly in page order, exactly as a sequential scan would hand them out. The LAST page is fetched
alone, once every other page has been answered, and the walk goes on from there (via ``$next``) for
as long as the list grows. With no concurrent writes this costs exactly one request per
``items_per_page`` records, the page-1 request included.

**Why a record can be skipped (issue 9).** Keys only grow: a record created or updated gets
``updated_at`` = now, so (sorted by ``updated_at``) it goes to the end of the list, and (in
creation order) a new record goes to the end and an update moves nothing. So the position of a
record whose key does not change can only FALL, and only when a record before it leaves (is
deleted, or updated and so moved past it). Take such a record R, present throughout, on no page
of a scan. Page 1 starts at the list's start, so it is wholly before R; the last page (no
``$next``) is not wholly before R. So some boundary k has page k wholly before R and page k+1
wholly after it: R sat after offset ``k*size - 1`` when page k was answered and before offset
``k*size`` when page k+1 was. Its position fell, so (i) page k+1 was answered AFTER page k and
(ii) in between some record before it left. This holds whatever order the pages were answered
in. What the old reader missed (issue 9): read concurrently, the record that left need not be
one the scan READ. Page 5 answered, then a record of page 4's range deleted or updated, then
page 4 and page 6 answered: the record is on no page (it left first), page 4 and 5 share a
record, and the first record of page 6's old range is lost at the 5/6 boundary. And the reads
that repaired a skip were themselves scans under writes that nothing checked.

**The lemma (scans read in order).** A scan whose pages are answered one after another reads
every record present when its last page is answered, unless a record it read on one of its
pages but the last left the list before that last page was answered. (By induction: while no
record read so far leaves, the first ``k*size`` records of the list are exactly those of pages
1..k, since nothing enters before them, so page k+1 continues exactly where page k ended.) One
page is one atomic query: it needs no check.

**Detection.** The scan's suspect boundaries are those where (i) and (ii) are possible: some
record left after page k's query could have begun (``sent_at``, the ``Date`` header less the
request's duration) and before page k+1 was answered (``served_at``), from a position before
that boundary. The records that left are all known, with the times they left:

* deleted: the deletion pass (``deleted_since``) lists them with ``deleted_at``; tombstones
  only accumulate, so reading that feed over pages loses none;
* updated (sorted by ``updated_at``): they are among the records changed since the scan began,
  which the reader reads COMPLETELY (``_complete_tail``: one page of up to 200, or several checked
  by the lemma and read again until proven) whenever the scan met any changed record. The last
  page is read after every other page was answered, so an update made before it ends the list
  and shows on it (or makes it all fresh records); a scan that met no changed record had none
  that matters. A changed record created during the scan sat after every older record and
  shifted none; in creation order an update moves nothing.

A record the scan read sat, read in order (one worker), on that page or later (the lemma), and
left after that page's query began; read concurrently, it may have sat anywhere. A record the
scan never read (it left before its page came, or it was itself skipped and then left) may have
sat anywhere, and, unless its ``deleted_at`` says when (creation order), left any time from the
scan's start. A removal is never after its ``deleted_at`` / new ``updated_at``, so boundaries
whose first page was sent after it are not suspect on its account. Two neighbouring pages
that share a record cannot hide one. Resources without ``deleted_since`` fall back to ``$total``:
fresh records seen (``created_at``/``updated_at`` after the scan began, including those of a
page answered past the shrunken end) minus the change of ``$total`` counts the records that
left; a positive count makes the scan suspect (a deletion masked by a create the reader never
saw escapes this: such resources give nothing better).

**Why nothing is lost.** A record R present throughout the sync either (a) kept its key during
the main scan and the repairs, or (b) was updated during them. (a): if the scan skipped R, R's
boundary is suspect (above) and its repair is a chain of atomic pages each starting at or before
the end of the previous one, reaching past the boundary's far side, so R is on one of them;
where a single second holds more records than a page, the repair spans pages and is checked by
the lemma. (b): after every repair, the records changed since the scan began are read once more,
completely (proven by the lemma, else read again, ``MAX_ROUNDS`` times); R, changed before that
read, is on it. A read that cannot be proven keeps the bookmark where it was.

**Repair.** Where the list is sorted by ``updated_at``, the records skipped at boundary k lie,
in (``updated_at``, creation) order, strictly between the last record of page k and the first of
page k+1; they are re-read by keyset: ``updated_or_created_since=<updated_at of the last record
of page k>`` with ``items_per_page=200`` until the window's upper timestamp is passed, and
finally the records changed since the scan began are read once more, completely (a skipped
record updated before its window was re-read has moved there). In creation order, each suspect boundary is found again in ONE page (an
``items_per_page`` chosen so that the page holds remembered records from both sides of it; one
page is one atomic query) and what lies between them is emitted; failing that, the list is
scanned again from the first suspect page. Records already emitted (same id and ``updated_at``)
are not emitted twice. A repair that itself spans pages is checked the same way, for at most
``MAX_ROUNDS`` rounds; a read that cannot be proven complete does not move the bookmark, so the
next run reads the same range again (a record may come twice; none is lost).

**Heavy pages.** When a main-scan page keeps failing after its retries in a way smaller pages
may cure (``heavy``: a 5xx, an HTML 52x from a gateway, a timeout), the read starts again with
pages half as big, down to ``page_floor``, and says so (``on_smaller_pages``). The new scan is a
scan of its own, proven as above; what the given-up one emitted is not emitted again, so the
records, their order and the bookmark are those of one read.

**Bookmark.** ``min(latest updated_at or deleted_at read, server time when the scan began - 1 s)``: every
change made during the sync carries an ``updated_at`` at or after the scan began and is read
again by the next run (``updated_or_created_since`` is inclusive), and everything older was
emitted. The next deletion pass asks for ``deleted_since = bookmark - 1 s`` (exclusive), which
covers every deletion this run's pass could not have seen; a first read (no bookmark) puts its
own lower bound in state before its first record, so a run after a killed first run still
emits the deletions of what the killed run emitted. The bookmark depends only on the data, never
on the concurrency: sequential and concurrent reads of the same data emit the same records in
the same order and the same bookmark.

**Checkpoints.** A read sorted by ``updated_at`` (with a deletion feed) offers a ``Progress``
every ``CHECKPOINT_PAGES`` pages while nothing suggests a skip: every record up to the last one
emitted, in list order, is out. A run killed after it resumes from there, and then checks that
nothing left the list since the killed read began (no deletion since, no record created before
the checkpoint and changed since); if something did, it re-reads the killed read's range too.

**Where it lives.** ``settings`` (the reader's parameters and hooks), ``pages`` (the clock, pages
and the bookkeeping of a read), ``scan`` (paging one query), ``walk`` (the main scan),
``deletions`` (the deletion pass and the suspect boundaries), ``repair`` (windows and the
changed records, sorted by ``updated_at``), ``gaps`` (creation order), ``reader`` (``ListReader``:
the read's phases in order).
"""

from __future__ import annotations

from tap_sage.sync.pages import (
    ANCHORS,
    CHECKPOINT_PAGES,
    CLOCK_MARGIN,
    MAX_PAGE_SIZE,
    MAX_ROUNDS,
    PAGE_FLOOR,
    Answered,
    Fetch,
    Page,
    Progress,
    ReadResult,
    Removal,
    epoch,
    iso,
    with_page,
)
from tap_sage.sync.reader import ListReader
from tap_sage.sync.settings import ReaderHooks, ReaderSettings

__all__ = [
    "ANCHORS",
    "CHECKPOINT_PAGES",
    "CLOCK_MARGIN",
    "MAX_PAGE_SIZE",
    "MAX_ROUNDS",
    "PAGE_FLOOR",
    "Answered",
    "Fetch",
    "ListReader",
    "Page",
    "Progress",
    "ReadResult",
    "ReaderHooks",
    "ReaderSettings",
    "Removal",
    "epoch",
    "iso",
    "with_page",
]
