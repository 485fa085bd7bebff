"""Importing an executable's modules with the cyclic garbage collector's old generations left alone.

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
again, and the thresholds are as they were. Every other object is collected as usual.
Measured side by side (``bench/startup_bench.py``): see the README's benchmark table.
"""

from __future__ import annotations

import contextlib
import gc
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
