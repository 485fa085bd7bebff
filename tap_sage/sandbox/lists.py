"""List queries: paging, filters and sort of a ``GET`` on a list, and the page it answers."""

from __future__ import annotations

import bisect
import logging
import math
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request, Response

from tap_sage.sage import catalogue
from tap_sage.sage.catalogue import Resource
from tap_sage.sandbox import store
from tap_sage.sandbox.answers import SageError, json_response, raw_json
from tap_sage.sandbox.model import parse_when, utc_ts

log = logging.getLogger("sage_sandbox")

MAX_ITEMS_PER_PAGE = 200
#: Sage's default ``items_per_page`` (a list request without it)
DEFAULT_ITEMS_PER_PAGE = 20
BASE_FIELDS = ("id", "displayed_as", "$path")


@dataclass
class Query:
    """One list request as SQL: ``WHERE`` clauses with their parameters and the order."""

    where: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    #: the SQL of the sort field (``seq``, creation order, when unsorted); ties by ``seq``
    sort_column: str = "seq"
    descending: bool = False
    sort_field: str = "seq"
    tombstones: bool = False

    def add(self, clause: str, *values: Any) -> None:
        """One more ``AND`` clause."""
        self.where.append(clause)
        self.params.extend(values)

    @property
    def sql_where(self) -> str:
        """The ``WHERE`` text."""
        return " AND ".join(self.where)

    @property
    def order(self) -> str:
        """The ``ORDER BY`` text."""
        if self.sort_column == "seq":
            return "seq"
        desc = " DESC" if self.descending else ""
        return f"{self.sort_column}{desc}, seq{desc}"

    @property
    def shape(self) -> tuple[Any, ...]:
        """What makes two requests page through the same sorted list."""
        return (self.sql_where, tuple(self.params), self.order)

    def after(self, key: tuple[Any, ...]) -> tuple[str, list[Any]]:
        """The clause keeping the rows that come after ``key`` (sort value, seq) in the order
        (SQLite sorts NULL first ascending, last descending)."""
        if self.sort_column == "seq":
            return "seq > ?", [key[-1]]
        column, (value, seq) = self.sort_column, key
        if not self.descending:
            if value is None:
                return f"(({column}) IS NULL AND seq > ?) OR ({column}) IS NOT NULL", [seq]
            return f"({column}, seq) > (?, ?)", [value, seq]
        if value is None:
            return f"({column}) IS NULL AND seq < ?", [seq]
        return f"({column}, seq) < (?, ?) OR ({column}) IS NULL", [value, seq]


class ListQueries:
    """Answers list requests in time independent of the page number, with the answers of
    ``LIMIT/OFFSET`` paging over the sorted list.

    Each list's ``count(*)`` is cached, and so is the sort key at the end of every page
    served (``Cursors``), until the next write by any server on the file (the ``generation``
    of ``meta``, bumped in the writing transaction). A page then seeks from the nearest key
    before it instead of skipping rows; after a write it is read with ``OFFSET`` again, so
    records shift between pages exactly as they do at Sage. ``paging="offset"`` always skips
    (the reference the tests compare with)."""

    def __init__(self, paging: str = "seek", log_paging: bool = False) -> None:
        self._counts: dict[tuple[str, tuple[Any, ...]], tuple[str | None, int]] = {}
        self._count_lock = threading.Lock()
        self.cursors = Cursors() if paging == "seek" else None
        self.log_paging = log_paging

    def list_records(
        self, request: Request, conn: sqlite3.Connection, biz: str, res: Resource
    ) -> Response:
        """One page of a list (see ``tap_sage/sandbox/__init__.py``, "Lists")."""
        args = request.args
        for param in res.params:
            if param.required and not args.get(param.name):
                # the spec marks it required (tax_determinations' ``usage``): Sage refuses the list
                raise SageError(
                    400, "InvalidParameter", f"{param.name} is missing or empty", param.name
                )
        page, ipp = paging(args)
        query = build_query(args, biz, res)
        # one snapshot: the generation, the count and the page agree
        with store.transaction(conn, immediate=False):
            generation = store.get_meta(conn, "generation", "0")
            where = query.sql_where.replace("+updated_at", "updated_at")
            total = self._count(conn, generation, where, query.params)
            last = max(1, math.ceil(total / ipp))
            page = min(page, last)
            rows = self._page(conn, generation, query, ipp, (page - 1) * ipp)
        head: dict[str, Any] = {
            "$total": total,
            "$page": page,
            "$next": _link(request, res.path, page + 1, ipp) if page < last else None,
            "$back": _link(request, res.path, page - 1, ipp) if page > 1 else None,
            "$itemsPerPage": ipp,
        }
        return _render(head, rows, args.get("attributes"), query.tombstones)

    def _count(
        self, conn: sqlite3.Connection, generation: str | None, where: str, params: list[Any]
    ) -> int:
        """``count(*)`` of a list, cached until the next write (from any process)."""
        key = (where, tuple(params))
        with self._count_lock:
            cached = self._counts.get(key)
            if cached is not None and cached[0] == generation:
                return cached[1]
        total = int(
            conn.execute(
                f"SELECT count(*) FROM records WHERE {where}",  # noqa: S608
                params,
            ).fetchone()[0]
        )
        with self._count_lock:
            if len(self._counts) > 2000:
                self._counts.clear()
            self._counts[key] = (generation, total)
        return total

    def _page(
        self,
        conn: sqlite3.Connection,
        generation: str | None,
        query: Query,
        ipp: int,
        offset: int,
    ) -> list[tuple[Any, Any]]:
        """(id, data) of the rows at ``offset`` .. ``offset + ipp - 1`` of the sorted list;
        ``data`` is the stored JSON's UTF-8 bytes (a page goes out without decoding it)."""
        start = None
        if self.cursors is not None and offset > 0:
            start = self.cursors.find(query.shape, generation, offset)
        keys = _page_keys(conn, query, ipp, offset, start)
        if self.log_paging:
            how = f"seek from {start[0]}" if start is not None else "offset"
            log.info("list page at %d via %s", offset, how)
        if self.cursors is not None and keys:
            seq, *value = keys[-1]  # the key of the row: (sort value, seq), or (seq,)
            self.cursors.remember(query.shape, generation, offset + len(keys), (*value, seq))
        seqs = [key[0] for key in keys]
        by_seq = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                "SELECT seq, id, CAST(data AS BLOB) FROM records WHERE seq IN "  # noqa: S608
                f"({','.join('?' * len(seqs))})",
                seqs,
            )
        }
        return [by_seq[seq] for seq in seqs]


class Cursors:
    """Per list shape and generation: the sort key (sort value, seq) of the last row before
    each offset served so far."""

    #: list shapes kept (then all are forgotten), and offsets kept per shape
    MAX_SHAPES = 2000
    MAX_OFFSETS = 20000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shapes: dict[tuple[Any, ...], tuple[str | None, list[int], dict[int, Any]]] = {}

    def find(
        self, shape: tuple[Any, ...], generation: str | None, offset: int
    ) -> tuple[int, tuple[Any, ...]] | None:
        """The nearest known (offset, key) at or before ``offset`` in this generation."""
        with self._lock:
            known = self._shapes.get(shape)
            if known is None or known[0] != generation:
                return None
            offsets, keys = known[1], known[2]
            i = bisect.bisect_right(offsets, offset)
            if i == 0:
                return None
            return offsets[i - 1], keys[offsets[i - 1]]

    def remember(
        self, shape: tuple[Any, ...], generation: str | None, offset: int, key: tuple[Any, ...]
    ) -> None:
        """The row before ``offset`` has sort key ``key`` (in this generation)."""
        with self._lock:
            known = self._shapes.get(shape)
            if known is None or known[0] != generation:
                if len(self._shapes) >= self.MAX_SHAPES:
                    self._shapes.clear()
                known = (generation, [], {})
                self._shapes[shape] = known
            offsets, keys = known[1], known[2]
            if offset not in keys:
                if len(offsets) >= self.MAX_OFFSETS:
                    offsets.clear()
                    keys.clear()
                bisect.insort(offsets, offset)
            keys[offset] = key


def paging(args: MultiDict[str, str]) -> tuple[int, int]:
    """``page`` (from 1) and ``items_per_page`` (1..200, default 20) of a list request."""

    def number(name: str, default: int) -> int:
        raw = args.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise SageError(400, "InvalidParameter", f"{name} must be an integer", name) from None

    page = max(1, number("page", 1))
    ipp = min(MAX_ITEMS_PER_PAGE, max(1, number("items_per_page", DEFAULT_ITEMS_PER_PAGE)))
    return page, ipp


def _link(request: Request, path: str, page: int, ipp: int) -> str:
    params: list[tuple[str, str]] = [("page", str(page)), ("items_per_page", str(ipp))]
    params += [
        (k, v) for k, v in request.args.items(multi=True) if k not in ("page", "items_per_page")
    ]
    return f"{path}?{urlencode(params)}"


def build_query(args: MultiDict[str, str], biz: str, res: Resource) -> Query:
    """The SQL of a list request's filters and sort."""
    props = catalogue.list_schema(res.name).get("properties", {})
    query = Query(where=["business = ?", "resource = ?"], params=[biz, res.name])
    sort = args.get("sort")
    if sort:
        _sort(query, sort, res, props)
    names = res.param_names
    query.tombstones = "deleted_since" in names and bool(args.get("deleted_since"))
    if query.tombstones:
        since = _when(args["deleted_since"], "deleted_since")
        # exclusive: deleted_at > since (timestamps are whole seconds)
        query.add(
            "deleted_at IS NOT NULL AND deleted_at > ?", utc_ts(math.floor(since.timestamp()))
        )
    else:
        query.add("deleted_at IS NULL")
    if "updated_or_created_since" in names and args.get("updated_or_created_since"):
        since = _when(args["updated_or_created_since"], "updated_or_created_since")
        # inclusive; "+" keeps the planner on the creation-order index unless sorting
        column = "updated_at" if query.sort_field == "updated_at" else "+updated_at"
        query.add(f"{column} >= ?", utc_ts(math.ceil(since.timestamp())))
    _date_filters(query, args, names, props)
    if "search" in names and args.get("search"):
        term = args["search"].lower().replace("\\", "\\\\").replace("%", "\\%")
        query.add("search LIKE ? ESCAPE '\\'", "%" + term.replace("_", "\\_") + "%")
    for name, param in res.filter_params.items():
        value = args.get(name)
        if value is None or value == "" or name in ("search", "from_date", "to_date"):
            continue
        clause = _filter_clause(name, param.type, value, props)
        if clause is not None:
            query.add(clause[0], *clause[1])
    return query


def _sort(query: Query, sort: str, res: Resource, props: dict[str, Any]) -> None:
    if not res.sortable:
        raise SageError(400, "InvalidParameter", f"sort is not a parameter of {res.path}", "sort")
    field_name, _, direction = sort.partition(":")
    column = _sort_column(field_name, props)
    if column is None or direction not in ("", "asc", "desc"):
        raise SageError(400, "InvalidParameter", f"Cannot sort by {sort!r}", "sort")
    query.sort_column = column
    query.descending = direction == "desc"
    query.sort_field = field_name


def _date_filters(
    query: Query, args: MultiDict[str, str], names: frozenset[str], props: dict[str, Any]
) -> None:
    if "date" in props:
        if "from_date" in names and args.get("from_date"):
            query.add("doc_date >= ?", _day(args["from_date"], "from_date"))
        if "to_date" in names and args.get("to_date"):
            query.add("doc_date <= ?", _day(args["to_date"], "to_date"))
    if "updated_from_date" in names and args.get("updated_from_date"):
        day = _day(args["updated_from_date"], "updated_from_date")
        query.add("updated_at >= ?", day + "T00:00:00Z")
    if "updated_to_date" in names and args.get("updated_to_date"):
        query.add(
            "updated_at <= ?", _day(args["updated_to_date"], "updated_to_date") + "T23:59:59Z"
        )


def _page_keys(
    conn: sqlite3.Connection,
    query: Query,
    ipp: int,
    offset: int,
    start: tuple[int, tuple[Any, ...]] | None,
) -> list[tuple[Any, ...]]:
    """(seq, sort value...) of the page's rows, from the (covering) indexes: skipping
    ``offset`` rows, or seeking past the key ``start`` names and skipping the rest."""
    where, params, skip = query.sql_where, list(query.params), offset
    if start is not None:
        clause, values = query.after(start[1])
        # the seek's bound, not a filter's lower bound on the same column, ranges the index
        lower = f"{query.sort_column} >= ?"
        where = " AND ".join(f"+{c}" if c == lower else c for c in query.where)
        where = f"{where} AND ({clause})"
        params += values
        skip = offset - start[0]
    columns = "seq" if query.sort_column == "seq" else f"seq, {query.sort_column}"
    sql = f"SELECT {columns} FROM records WHERE {where} ORDER BY {query.order} LIMIT ? OFFSET ?"  # noqa: S608
    return [tuple(row) for row in conn.execute(sql, [*params, ipp, skip])]


def _render(
    head: dict[str, Any], rows: list[tuple[Any, Any]], attributes: str | None, tombstones: bool
) -> Response:
    if attributes == "all" and not tombstones:
        page = b",".join(r[1] for r in rows)
        # Sage (Rails) writes ``&`` as ``\u0026``: recorded, products_list_attributes_all.json's
        # ``$next``; in JSON text an ``&`` can only be inside a string, so this is its escape
        envelope = store.encode(head)[:-1].replace(b"&", b"\\u0026")
        return raw_json(200, b"".join((envelope, b',"$items":[', page, b"]}")))
    items: list[dict[str, Any]] = []
    for _, data in rows:
        record = store.loads(data)
        if tombstones:
            items.append(
                {
                    "id": record.get("id"),
                    "displayed_as": record.get("displayed_as"),
                    "$path": record.get("$path"),
                    "deleted_at": record.get("deleted_at"),
                }
            )
        else:
            items.append(select(record, attributes))
    head["$items"] = items
    return json_response(200, head)


def select(record: dict[str, Any], attributes: str | None) -> dict[str, Any]:
    """The fields ``attributes`` asks for (always ``id``, ``displayed_as``, ``$path``)."""
    if attributes == "all":
        return record
    out = {k: record.get(k) for k in BASE_FIELDS}
    if attributes:
        for name in attributes.split(","):
            name = name.strip()
            if name and name in record:
                out[name] = record[name]
    return out


def _sort_column(field_name: str, props: dict[str, Any]) -> str | None:
    """The SQL of a ``sort`` field: ``created_at``, ``updated_at``, and where the item has them
    ``date``, ``due_date``, ``expiry_date`` (NOTES.md, "sort"); ``None`` for anything else."""
    if field_name in ("updated_at", "created_at"):
        return field_name
    if field_name == "date" and "date" in props:
        return "doc_date"
    if field_name in ("due_date", "expiry_date") and field_name in props:
        return f"json_extract(data, '$.{field_name}')"
    return None


def _when(value: str, name: str) -> Any:
    try:
        return parse_when(value)
    except ValueError:
        raise SageError(
            400, "InvalidParameter", f"{name} is not a valid date or date-time", name
        ) from None


def _day(value: str, name: str) -> str:
    parsed = _when(value, name)
    if len(value.strip()) > 10:
        parsed = parsed + timedelta(0)
    return str(parsed.strftime("%Y-%m-%d"))


def _filter_clause(
    name: str, kind: str, value: str, props: dict[str, Any]
) -> tuple[str, list[Any]] | None:
    """SQL for an id-valued or boolean filter parameter, if the record has the field."""
    if name.endswith("_id"):
        base = name[:-3]
        if base in props:
            return f"json_extract(data, '$.{base}.id') = ?", [value]
        if base + "s" in props:
            return (
                f"EXISTS (SELECT 1 FROM json_each(data, '$.{base}s') "  # noqa: S608
                "WHERE json_extract(value, '$.id') = ?)",
                [value],
            )
        return None
    if kind == "boolean" and name in props:
        flag = value.strip().lower() in ("true", "1", "yes")
        return f"json_extract(data, '$.{name}') = ?", [1 if flag else 0]
    if name == "email" and "email" in props:
        return "lower(json_extract(data, '$.email')) = ?", [value.lower()]
    return None
