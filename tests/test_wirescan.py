"""The compiled page scanner (``tap_sage/sage/_wirescan.c``) against msgspec and the ordinary
path, on pages made to break it.

The scanner may refuse any page (the tap then reads it with msgspec: ``tests/test_fast_path.py``
runs both ways). What it must never do is accept a page wrongly. So for every page it accepts:

- the page is well-formed JSON (msgspec decodes it),
- each item's text is the item's JSON text in the page, ``business_id`` spliced in as
  ``records._spliced`` does,
- ``Shape.to_record`` changes nothing in the item (decoded, converted and written again with
  msgspec, it is the same bytes): what the fast path emits is what the ordinary path would,
- the reader's values are the item's own, and the envelope's members are msgspec's.

The pages are real ones (the sandbox's lists over HTTP, and Sage's recordings), cut to a few
items and then broken: values swapped for what Sage might send or should not (``""``, numbers,
floats, exponents, non-decimals, nested objects, ``business_id``), and bytes flipped, inserted,
cut, escaped or made invalid UTF-8. Reproducible: ``TAP_SAGE_SCAN_SEED`` (default below) and
``TAP_SAGE_SCAN_CASES`` set them; a failure names its seed and case.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import msgspec
import pytest
import requests

from tap_sage import records
from tap_sage.sage import catalogue, wire
from tap_sage.sandbox.runner import SandboxProcess

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT.parent / "shared" / "sage-api" / "recorded"
SEED = int(os.environ.get("TAP_SAGE_SCAN_SEED", "20261202"))
CASES = int(os.environ.get("TAP_SAGE_SCAN_CASES", "4000"))
STREAMS = ["sales_invoices", "products", "bank_accounts", "contacts", "journals",
           "purchase_credit_notes", "transactions", "contact_payments"]  # fmt: skip
BUSINESS = "0d40342d0287cd6b13555c54afca6c90"

# No skip when the scanner is missing: a checkout's install builds it (hatch_build.py), and
# without it the fast path's tests would prove nothing; the first test says what is wrong.
encode = msgspec.json.encode
#: how the ordinary path writes a record (the SDK's msgspec writer: a ``Decimal`` as a number)
write = msgspec.json.Encoder(decimal_format="number").encode


def test_the_scanner_is_built_in_this_install() -> None:
    """``make venv`` compiles it (hatch_build.py: the machine's C compiler and Python's
    headers); a build older than ``_wirescan.c`` is not used (``make venv`` builds again)."""
    assert wire.SCANNER is not None, "no page scanner: run make venv (a C compiler is needed)"
    assert wire.SCANNER.ABI_VERSION == wire.SCANNER_ABI


# -- the pools of real items -----------------------------------------------------------------


#: The sandbox's pages as it answered them (``pools``), ``$next`` escaped as Sage writes it.
SANDBOX_PAGES: dict[str, bytes] = {}


@pytest.fixture(scope="module")
def pools(seeded_db: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    """Items of each stream as the sandbox sends them (first business, one page each), with
    the recordings' products and bank accounts."""
    db = tmp_path_factory.mktemp("wirescan") / "sandbox.db"
    db.write_bytes(seeded_db.read_bytes())
    out: dict[str, list[Any]] = {}
    with SandboxProcess(db, extra_args=["--quiet"]) as box:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {box.grant()['access_token']}"
        business = session.get(box.api_url + "/businesses", timeout=10).json()["$items"][0]["id"]
        for name in STREAMS:
            response = session.get(
                box.api_url + catalogue.resources()[name].path,
                params={"items_per_page": 60, "attributes": "all"},
                headers={"X-Business": business},
                timeout=30,
            )
            response.raise_for_status()
            out[name] = json.loads(response.content)["$items"]
            SANDBOX_PAGES[name] = response.content
    for name, stream in (("products_list_attributes_all.json", "products"),
                         ("bank_accounts_list_full.json", "bank_accounts")):  # fmt: skip
        if (RECORDED / name).exists():
            text = (RECORDED / name).read_bytes().removeprefix(b"\xef\xbb\xbf")
            out[stream] += json.loads(text)["$items"]
    assert all(len(items) >= 3 for items in out.values()), {k: len(v) for k, v in out.items()}
    return out


# -- the oracle ------------------------------------------------------------------------------


class _Envelope(msgspec.Struct):
    items: list[msgspec.Raw] = msgspec.field(name="$items", default_factory=list)


def _has_duplicate_keys(text: bytes) -> bool:
    found = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        found = found or len({k for k, _ in items}) != len(items)
        return dict(items)

    json.loads(text, object_pairs_hook=pairs)
    return found


def msgspec_reader(page: bytes, check: Any, business: str | None = None) -> dict[str, Any]:
    """``records.decode_page`` as an install without the scanner reads the page."""
    saved, records.SCANNER = records.SCANNER, None
    try:
        return records.decode_page(page, check, business)
    finally:
        records.SCANNER = saved


def check_page(stream: str | wire.Shape, page: bytes, business: str | None, where: str) -> bool:
    """Scan ``page`` with the table of ``stream`` (or of a shape); when accepted, hold it to
    everything the module docstring says. Returns whether it was accepted."""
    shape = wire.read_shape(stream) if isinstance(stream, str) else stream
    check = shape.record_check
    assert check.table is not None
    suffix = None if business is None else b'"business_id":' + encode(business)
    result = wire.SCANNER.scan(page, check.table, suffix)
    if result is None:
        return False
    texts, metas, members = result
    try:
        whole = msgspec.json.decode(page)
        raws = [bytes(r) for r in msgspec.json.decode(page, type=_Envelope).items]
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        pytest.fail(f"{where}: accepted a page msgspec refuses ({error}): {page[:300]!r}")
    assert isinstance(whole, dict), where
    assert len(texts) == len(raws) == len(metas), where
    duplicates = _has_duplicate_keys(page)
    for i, (text, raw, meta) in enumerate(zip(texts, raws, metas, strict=True)):
        expected = raw if business is None else records._spliced(raw, encode(business))
        assert text == expected, f"{where} item {i}: {text[:200]!r} != {expected[:200]!r}"
        item = records.decode_item(raw)
        assert isinstance(item, dict), where
        assert "business_id" not in item, f"{where} item {i}: accepted its own business_id"
        assert meta == tuple(item.get(key) for key in wire.READER_FIELDS), f"{where} item {i}"
        if not duplicates:  # msgspec keeps the last of a repeated key; the text has both
            again = write(shape.to_record(records.decode_item(raw)))
            assert again == raw, (
                f"{where} item {i}: the ordinary path changes it:\n{raw[:400]!r}\n{again[:400]!r}"
            )
    for key, text in members:
        assert key.decode() in whole and key != b"$items", where
        assert msgspec.json.decode(text) == whole[key.decode()] or duplicates, where
    # the page as the tap reads it, both ways: the same items, texts, values and envelope
    got = records.decode_page(page, check, business)
    other = msgspec_reader(page, check, business)
    assert {k: v for k, v in got.items() if k != "$items"} == {
        k: v for k, v in other.items() if k != "$items"
    } or duplicates, where
    for i, (a, b) in enumerate(zip(got["$items"], other["$items"], strict=True)):
        assert a.__class__ is records.RawRecord, where
        if b.__class__ is records.RawRecord:
            assert (a.raw, tuple(a._meta)) == (b.raw, tuple(b._meta)), f"{where} item {i}"
        else:  # msgspec's check refuses what the scanner takes (a number in a date field...)
            assert write(shape.to_record(b)) == raws[i] or duplicates, f"{where} item {i}"
    return True


# -- unmutated pages are accepted ------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMS)
def test_real_pages_are_accepted_and_right(pools: dict[str, list[Any]], stream: str) -> None:
    items = [i for i in pools[stream] if b"\\" not in encode(i)]
    page = encode({"$total": len(items), "$page": 1, "$next": None, "$itemsPerPage": 200,
                   "$items": [wire.read_shape(stream).to_wire(dict(i)) for i in items]})  # fmt: skip
    # the sandbox's own wire: decimals as Rails strings, no "" dates in lists
    assert check_page(stream, page, BUSINESS, stream)
    assert check_page(stream, page, None, stream)


def test_the_sandboxs_answers_are_read_by_the_scanner(pools: dict[str, list[Any]]) -> None:
    """Over real HTTP: a page with more to follow has ``\\u0026`` in its ``$next``, as Sage's
    has, and the scanner reads it (items and envelope, against msgspec's reader)."""
    escaped = [name for name, page in SANDBOX_PAGES.items() if b"\\u0026" in page]
    assert "sales_invoices" in escaped, sorted(SANDBOX_PAGES)
    for name in escaped:
        assert check_page(name, SANDBOX_PAGES[name], BUSINESS, name)


# -- pages made to break it ------------------------------------------------------------------

VALUES: list[Any] = [
    "", "0", "-1.50", "10.0", "1e5", "1E5", "1-2", " 2", "2 ", "abc", "NaN", "Infinity",
    "é€ 中", "-", ".", "..", 0, -7, 12345678901234567890, True, False, None, {}, [],
    {"a": "1"}, {"total_amount": 3}, ["1.0", None], ["", "1"], ["1-2"], [3], [None],
    "2026-01-01", "2026-01-01T00:00:00Z", "+1", "1.", ".5", "01.5", "1.2.3", "1,2", "--", "-.5",
    10**300, -(10**4299), "@number@",
]  # fmt: skip


def _number_text(rng: random.Random) -> bytes:
    """A JSON number as a serializer might write it: long, short, zeros after the point, an
    exponent, a sign."""
    sign = rng.choice([b"", b"", b"-"])
    whole = rng.choice([b"0", b"7", b"10", b"9" * rng.randint(1, 300), b"1" + b"0" * 4400])
    fraction = rng.choice([b"", b"", b".0", b".5", b".000001", b".0000001", b".000000",
                           b".0000000", b".00000012", b"." + b"3" * rng.randint(1, 40)])  # fmt: skip
    exponent = rng.choice([b""] * 6 + [b"e5", b"E-2", b"e+0"])
    return sign + whole + fraction + exponent


FLOATS = [1.5, -0.0, 1e300, 2.5e-7, 0.000001, 0.0000001, 0.1234567, 100.25]
BYTES = [b" ", b"\n", b"\\", b"\\u00e9", b'\\"', b"\x00", b"\x1f", b"\x7f", b"\xc0\xaf",
         b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xff", b"\xe2\x82", b"\xc3\xa9", b'"', b",",
         b":", b"{", b"}", b"[", b"]", b"-0", b"01", b"1.", b".5", b"1e", b"nul", b"tru"]  # fmt: skip


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, sub in value.items():
            yield (*path, key)
            yield from _paths(sub, (*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield (*path, i)
            yield from _paths(sub, (*path, i))


def _values(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for sub in value.values():
            yield sub
            yield from _values(sub)
    elif isinstance(value, list):
        for sub in value:
            yield sub
            yield from _values(sub)


def _set(root: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        root = root[step]
    root[path[-1]] = value


def _mutate_values(rng: random.Random, items: list[Any]) -> None:
    for _ in range(rng.randint(1, 3)):
        item = rng.choice(items)
        paths = list(_paths(item))
        roll = rng.random()
        if roll < 0.08:  # business_id at the top (refused) or in a nested object (not)
            nested = [v for v in _values(item) if isinstance(v, dict)]
            target = rng.choice(nested) if nested and rng.random() < 0.5 else item
            target["business_id"] = "b"
        elif roll < 0.15 and paths:
            path = rng.choice(paths)
            parent = item
            for step in path[:-1]:
                parent = parent[step]
            del parent[path[-1]]
        elif paths:
            value = rng.choice(FLOATS) if rng.random() < 0.1 else rng.choice(VALUES)
            _set(item, rng.choice(paths), json.loads(json.dumps(value)))


def _mutate_bytes(rng: random.Random, page: bytes) -> bytes:
    data = bytearray(page)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        roll = rng.random()
        if roll < 0.4:
            data[at:at] = rng.choice(BYTES)
        elif roll < 0.6 and data:
            del data[at : at + rng.randint(1, 4)]
        elif roll < 0.8 and at < len(data):
            data[at] = rng.randrange(256)
        else:
            data = data[:at]
    return bytes(data)


def test_broken_pages_are_refused_or_right(pools: dict[str, list[Any]]) -> None:
    accepted = refused = 0
    for case in range(CASES):
        rng = random.Random(f"{SEED}:{case}")
        stream = rng.choice(STREAMS)
        shape = wire.read_shape(stream)
        items = [shape.to_wire(json.loads(json.dumps(i)))
                 for i in rng.sample(pools[stream], rng.randint(0, 4))]  # fmt: skip
        if rng.random() < 0.7:
            _mutate_values(rng, items) if items else None
        envelope = {"$total": len(items), "$items": items, "$next": rng.choice([None, "/x?page=2"])}
        page = encode(envelope)
        while b'"@number@"' in page:  # a number's exact text, as no encoder of ours writes it
            page = page.replace(b'"@number@"', _number_text(rng), 1)
        if rng.random() < 0.5:
            page = _mutate_bytes(rng, page)
        business = rng.choice([BUSINESS, None, "é"])
        try:
            ok = check_page(stream, page, business, f"seed {SEED} case {case} ({stream})")
        except json.JSONDecodeError:
            ok = False  # accepted pages are JSON (check_page asserts it with msgspec first)
        accepted, refused = accepted + ok, refused + (not ok)
    # both sides were exercised: the oracle saw thousands of accepted pages
    print(f"scanner: {accepted} accepted, {refused} refused (seed {SEED})")
    assert accepted > CASES // 5 and refused > CASES // 5, (accepted, refused)


# -- the edges, one by one -------------------------------------------------------------------

TABLE_STREAM = "sales_invoices"


def scan(page: bytes, business: str | None = None) -> Any:
    table = wire.read_shape(TABLE_STREAM).record_check.table
    suffix = None if business is None else b'"business_id":' + encode(business)
    return wire.SCANNER.scan(page, table, suffix)


@pytest.mark.parametrize(
    "page",
    [
        b"",
        b"{",
        b"[]",
        b'{"$items":null}',
        b'{"$items":[1]}',
        b'{"$items":[{}],"$items":[]}',
        b'{"$items":[]} ',
        b' {"$items":[]}',
        b'{"$items":[]}x',
        b'{"$items":[{"a":1}],}',
        b'{"$items":[{"a":-0}]}',
        b'{"$items":[{"a":01}]}',
        b'{"$items":[{"a":1.}]}',
        b'{"$items":[{"a":1e5}]}',
        b'{"$items":[{"a":1.5E2}]}',
        b'{"$items":[{"a":0.0000001}]}',
        b'{"$items":[{"a":0.0000000}]}',
        b'{"$items":[{"a":-0.00000012}]}',
        b'{"$items":[{"a":.5}]}',
        b'{"$items":[{"a":"\\u00e9"}]}',
        b'{"$items":[{"a":"\x01"}]}',
        b'{"$items":[{"a":"\xc0\xaf"}]}',
        b'{"$items":[{"a":"\xed\xa0\x80"}]}',
        b'{"$items":[{"a":"\xf4\x90\x80\x80"}]}',
        b'{"$items":[{"a":"\xe2\x82"}]}',
        b'{"$items":[{"id":1}]}',
        b'{"$items":[{"business_id":"x"}]}',
        b'{"$items":[{"total_amount":""}]}',
        b'{"$items":[{"total_amount":"1e5"}]}',
        b'{"$items":[{"total_amount":3}]}',
        b'{"$items":[{"x":{"total_amount":"a"}}]}',
        b'{"$items":[{"date":""}]}',
        b'{"$items":[{"x":[{"date":""}]}]}',
        b'{"$items":[{"a":' + b"[" * 70 + b"]" * 70 + b"}]}",
        b'{"$items":[' + b'{"a":' * 70 + b"1" + b"}" * 70 + b"]}",
        b'{"$items":[{"a":tru}]}',
        b'{"$items":[{"a":nulll}]}',
        b'{"$items":[{"a" :1}]}',
        b'{"$next":"\\x","$items":[]}',
        b'{"$next":"\\u00g1","$items":[]}',
        b'{"$next":"\\u00","$items":[]}',
        b'{"$next":"\\',
        b'{"\\u0024items":[]}',
        b'{"$next":"a\\u0026b","$items":[{"a":"\\u0026"}]}',
    ],
)
def test_what_it_refuses(page: bytes) -> None:
    assert scan(page) is None
    assert scan(page, BUSINESS) is None


@pytest.mark.parametrize("depth", [61, 62])
def test_nesting_up_to_the_limit_is_read(depth: int) -> None:
    """The page and ``$items`` are 2 levels; an item and what it holds may use the rest."""
    inner = b'{"a":' * depth + b"1" + b"}" * depth
    texts, _, _ = scan(b'{"$items":[' + inner + b"]}")
    assert texts == [inner]
    assert scan(b'{"$items":[' + b'{"a":' * 63 + b"1" + b"}" * 63 + b"]}") is None


@pytest.mark.parametrize(
    "value", ["--", "-", ".", "..", "1-2", "1.2.3", ".5", "5.", "+1", "1,2", " 1", "1e5", "٣"]
)
def test_a_decimal_in_another_form_is_refused_and_then_converted_or_refused(value: str) -> None:
    """Both readers send it the ordinary way, which writes it in plain digits or stops with an
    error naming the field."""
    page = encode({"$items": [{"id": "a", "total_amount": value}]})
    assert scan(page) is None
    check = wire.read_shape(TABLE_STREAM).record_check
    (item,) = msgspec_reader(page, check)["$items"]
    assert item.__class__ is dict
    shape = wire.read_shape(TABLE_STREAM)
    try:
        expected = format(Decimal(value), "f")
    except InvalidOperation:
        with pytest.raises(wire.WireValueError, match="field total_amount"):
            shape.to_record(item)
    else:
        assert shape.to_record(item)["total_amount"] == expected


def test_the_envelope_may_escape_as_sage_does() -> None:
    """Sage writes ``&`` as ``\\u0026`` (recorded: products' ``$next``): the envelope's members
    are decoded by msgspec; an item with an escape is still refused (written back, it would
    differ)."""
    page = rb'{"$next":"/p?page=2\u0026x=\"\/\\\b\f\n\r\t","$items":[{"id":"a"}]}'
    texts, _, members = scan(page)
    assert texts == [b'{"id":"a"}']
    assert members == [(b"$next", page[9 : page.index(b',"$items"')])]
    body = records.decode_page(page, wire.read_shape(TABLE_STREAM).record_check)
    assert body["$next"] == '/p?page=2&x="/\\\b\f\n\r\t'


def test_any_bytes_like_page_reads_the_same() -> None:
    page = b'{"$items":[{"id":"a","total_amount":"1.0"}],"$total":1}'
    expected = scan(page, "B")
    assert expected is not None
    for same in (bytearray(page), memoryview(page)):
        assert scan(same, "B") == expected  # type: ignore[arg-type]


def test_too_many_keys_for_the_table_leave_the_stream_to_msgspec() -> None:
    many = wire.Shape.of({"properties": {f"k{i}": dict(wire.DECIMAL_SCHEMA) for i in range(600)}})
    assert many.record_check.table is None
    body = records.decode_page(b'{"$items":[{"k1":"2.0"}]}', many.record_check)
    assert body["$items"][0].__class__ is records.RawRecord  # msgspec's check took it


def test_what_it_accepts_exactly() -> None:
    page = (b'{"$total":2,"$items":[{},{"id":"a","updated_at":"2026-01-01T00:00:00Z",'
            b'"total_amount":"-1.50","x":{"business_id":"n"},"n":[1,-2,0,-0.0,0.000001,0.0000012,10.250],"s":"\xc3\xa9\xe2\x82\xac",'
            b'"deleted_at":null}],"$next":null,"$back":"/b"}')  # fmt: skip
    texts, metas, members = scan(page, "B")
    assert texts == [b'{"business_id":"B"}',
                     page[page.index(b'{"id"') : page.index(b"}]")] + b',"business_id":"B"}']  # fmt: skip
    assert metas == [(None, None, None, None), ("a", "2026-01-01T00:00:00Z", None, None)]
    assert members == [(b"$total", b"2"), (b"$next", b"null"), (b"$back", b'"/b"')]
    body = records.decode_page(page, wire.read_shape(TABLE_STREAM).record_check, "B")
    assert body["$total"] == 2 and body["$next"] is None and len(body["$items"]) == 2
    assert body["$items"][1].raw == texts[1] and body["$items"][1].get("id") == "a"


def test_a_malformed_table_is_an_error_not_a_crash() -> None:
    for table in (
        b"\x05\x00\x00ab",
        b"\x00\x00\x00",
        b"\x02\x00\x09ab",
        b"\x01\x00\x00a\x01\x00\x00a",
    ):
        with pytest.raises(ValueError, match="malformed key table"):
            wire.SCANNER.scan(b'{"$items":[]}', table, None)
    with pytest.raises(TypeError):
        wire.SCANNER.scan(b'{"$items":[]}', b"", "not bytes")


#: No list of today's catalogue has an array of decimals (``wire._ARR_DEC``); the scanner's
#: rule for one is held to ``Shape.to_record`` on a schema that has it.
LISTS = wire.Shape.of({"properties": {
    "id": {"type": ["string", "null"]},
    "rates": {"type": ["array", "null"], "items": dict(wire.DECIMAL_SCHEMA)},
    "lines": {"type": ["array", "null"], "items": {"type": ["object", "null"], "properties": {
        "steps": {"type": ["array", "null"], "items": dict(wire.DECIMAL_SCHEMA)}}}},
}})  # fmt: skip
ELEMENTS: list[Any] = ["1.0", "-2", "0", None, "", "1e5", "1-2", "-", " 1", "1.", ".5", "a", 3, 1.5,
                       [], {}, True]  # fmt: skip


def _decimals(rng: random.Random) -> Any:
    if rng.random() < 0.1:
        return rng.choice([None, "1.0", 7, {}])
    pool = ELEMENTS[:4] if rng.random() < 0.6 else ELEMENTS
    return [rng.choice(pool) for _ in range(rng.randint(0, 4))]


def test_arrays_of_decimals_are_refused_or_right() -> None:
    accepted = 0
    for case in range(CASES // 4):
        rng = random.Random(f"{SEED}:lists:{case}")
        item = {"id": f"i{case}", "rates": _decimals(rng), "lines": [{"steps": _decimals(rng)}]}
        page = msgspec.json.encode({"$items": [item]})
        accepted += check_page(LISTS, page, None, f"seed {SEED} lists case {case}")
    assert CASES // 40 < accepted < CASES // 4, accepted


def test_a_build_older_than_its_source_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """An editable install whose C source changed since it was built reads with msgspec
    until ``make venv`` builds it again (the test above then fails: it must be built)."""
    from tap_sage.sage import _wirescan

    assert wire._load_scanner() is _wirescan
    monkeypatch.setattr(_wirescan, "SOURCE", "0" * 16)
    assert wire._load_scanner() is None
    monkeypatch.setattr(_wirescan, "ABI_VERSION", wire.SCANNER_ABI + 1)
    assert wire._load_scanner() is None


@pytest.mark.parametrize("value", [[], {}, [1], {"a": "1"}, True])
def test_what_is_no_decimal_stops_the_ordinary_path_too(value: Any) -> None:
    """``Shape.to_record`` itself: an empty list or object in a decimal field is no decimal
    (the readers' one check must not drop it as falsy), nor a decimal list that is no list."""
    shape = wire.read_shape(TABLE_STREAM)
    for item in ({"total_amount": value}, {"total_amount": value, "net_amount": "1.0"}):
        with pytest.raises(wire.WireValueError, match="field total_amount"):
            shape.to_record(dict(item))
    if not isinstance(value, list):
        with pytest.raises(wire.WireValueError, match=r"field rates: .* is not a list of decimals"):
            LISTS.to_record({"rates": value})
