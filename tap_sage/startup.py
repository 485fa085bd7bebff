"""What tap-sage and target-sage do before their first request, made to cost less.

``long_lived_imports``: the executables' imports with the cyclic garbage collector's old
generations left alone. ``package_version``: the versions the SDK logs as a run starts, read
without the ``email`` package. ``one_malloc_arena``: tap-sage's threads share one glibc heap.


Importing tap-sage or target-sage (the SDK, jsonschema, referencing, requests, click, msgspec,
...) makes some 50,000 container objects that live as long as the process, and a few thousand
that are garbage at once (the classes that ``attrs`` and jsonschema's ``create`` make and then
replace, with their cycles). Python's thresholds (700, 10, 10) walk the old objects again and
again: measured by ``gc.callbacks`` over ``import tap_sage.tap`` (bytecode cached), 37 ms of
collections, most of it one pass of generation 2 over all of them (30 ms), in a start-up of
about 0.33 s of CPU before the first request.

Inside ``long_lived_imports`` only the young generation is collected (every 10,000
allocations: the garbage of the imports dies young, and 20 objects of it, 1.4 KB, are left),
14 to 15 ms in all; at the end everything that survived is frozen (``gc.freeze``: it lived
through the imports, and it lives as long as the process), so that no later pass walks it
again, and the thresholds are as they were. Every other object is collected as usual. The
freeze is the whole process's: a program that imports ``tap_sage.tap`` into its own process
(pytest does) has what it holds at that moment frozen too, its garbage cycles then among it
never collected; the executables run as processes of their own.
Measured side by side (``bench/startup_bench.py``): see the README's benchmark table.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Iterator

#: allocations between two passes over the young generation, inside ``long_lived_imports``
YOUNG_THRESHOLD = 10_000
#: never reached: generation 0 passes only
_NEVER = 1 << 30


@contextlib.contextmanager
def long_lived_imports() -> Iterator[None]:
    """Collect only young objects inside the block; freeze what survived it."""
    threshold = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, _NEVER, _NEVER)
    try:
        yield
    finally:
        gc.freeze()
        gc.set_threshold(*threshold)


def package_version(distribution: str) -> str:
    """The installed version of ``distribution``: the ``Version`` field of its core metadata,
    found by ``importlib.metadata`` and read from the headers of its ``METADATA`` file.

    The SDK logs the tap's and its own version as every run starts
    (``PluginBase.get_plugin_version``, ``get_sdk_version``, by ``importlib.metadata.version``),
    whose ``Distribution.metadata`` parses the file with the ``email`` package's
    ``email.policy`` and imports it for that: 607 KiB allocated and 6.1 ms for the two
    versions (tracemalloc and ``perf_counter``, after the SDK's imports), against 9 KiB and
    2.1 ms here. ``Version`` is a single-line header of the core metadata specification
    (packaging.python.org, "Core metadata specifications"), before the first empty line;
    where it is not found so, ``importlib.metadata.version`` answers.
    """
    from importlib import metadata

    try:
        text = metadata.distribution(distribution).read_text("METADATA") or ""
    except metadata.PackageNotFoundError:
        return "[could not be detected]"  # the SDK's answer (singer_sdk.helpers._packaging)
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line:
            break  # the headers end here
        if line[0] in " \t":
            continue  # the folded rest of the header before
        name, colon, value = line.partition(":")
        if colon and name.lower() == "version" and value.strip():
            return value.strip()
    return metadata.version(distribution)


#: glibc's ``M_ARENA_MAX`` parameter of ``mallopt`` (``malloc.h``)
_M_ARENA_MAX = -8


def one_malloc_arena() -> bool:
    """Make the process's threads share glibc's one main heap (``mallopt(M_ARENA_MAX, 1)``,
    what ``MALLOC_ARENA_MAX=1`` does), before any thread allocates; whether it was done.

    tap-sage reads pages in threads of its own and writes their records on the main thread:
    each page's body and item texts (about 800 KiB a page of sales invoices) are allocated by
    the thread that read it and freed by another, and glibc gives each thread a heap (an arena)
    of its own, up to 8 per core, whose freed blocks stay resident apart from the others'. The
    process's high-water mark then grows with the length of the sync, though the Python objects
    alive at the peak do not: measured on 49,975 sales invoices against 5,007 (their last
    tenth, 2026-12-02), VmHWM 89.5 to 90.8 MiB against 73.0 to 77.2 (+18% to +23%) while
    tracemalloc's peak was 42.7 against 40.6 MiB; with one arena, 71.3 to 72.8 MiB against 65.1
    to 68.8. Python allocates under the GIL, one thread at a time, and small blocks come from
    each thread's cache (``tcache``), so the shared lock is not contended: whole syncs of the
    49,975 invoices, three of each in turn, took 1.00, 1.01, 1.00 s of CPU without and 1.01,
    0.98, 1.02 s with it, with 7% fewer minor page faults. (Allocations made outside the GIL,
    such as OpenSSL's for HTTPS, now take the one heap's lock; they are a few per connection,
    not per record.) A ``MALLOC_ARENA_MAX`` or a ``glibc.malloc.arena_max`` tunable in the
    environment is the user's choice and is kept; a process that already runs other threads
    (one that imports tap-sage into itself) is left as it is; other C libraries (musl, macOS)
    have no such parameter and are left alone."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    if "glibc.malloc.arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    import threading

    if threading.active_count() > 1:
        return False
    import ctypes  # imported already by the SDK's dependencies (no start-up cost)

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, 1))
