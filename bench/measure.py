"""Run a Python program and report what IT used: the benchmarks' process wrapper.

    python bench/measure.py OUT.json -m tap_sage.tap --config ...     # a module
    python bench/measure.py OUT.json -c "from x import y; y()" args   # code
    python bench/measure.py OUT.json script.py args                    # a script

The program runs in this very process (``runpy``), so what is measured is its own: at its
first HTTP request (``requests.Session.send``) and just before it exits (``atexit``), the
process's CPU seconds (user + system, every thread), its wall clock, and the kernel's
high-water mark of its resident memory (``VmHWM`` in ``/proc/self/status``, which is per
process image: unlike ``ru_maxrss`` of a child, it does not start at the size of the parent
that forked it). OUT.json gets ``{"first_request": {...}, "exit": {...}}``.

``TAP_SAGE_BENCH_NO_WIRE=1`` turns off tap-sage's wire conversion and check (records go out
as Sage sent them), to measure what the conversion costs, side by side.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any


def _hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _snapshot() -> dict[str, float]:
    times = os.times()
    return {"cpu": times.user + times.system, "wall": time.time(), "hwm_mib": _hwm_mib()}


def _no_wire() -> None:
    from tap_sage.sage import wire
    from tap_sage.streams import SageStream

    bare = wire.RecordCheck(wire.Plan(()))  # reads only what the list reader needs
    wire.Shape.record_check = property(lambda self: bare)  # type: ignore[assignment,method-assign]
    SageStream.post_process = lambda self, row, context=None: row  # type: ignore[method-assign]


def main() -> None:
    out = Path(sys.argv[1])
    report: dict[str, Any] = {"start": _snapshot()}

    import requests

    send = requests.Session.send

    def first_send(self: requests.Session, request: Any, **kwargs: Any) -> Any:
        if "first_request" not in report:
            report["first_request"] = _snapshot()
            requests.Session.send = send  # type: ignore[method-assign]
        return send(self, request, **kwargs)

    requests.Session.send = first_send  # type: ignore[method-assign]

    def at_exit() -> None:
        report["exit"] = _snapshot()
        out.write_text(json.dumps(report))

    atexit.register(at_exit)
    if os.environ.get("TAP_SAGE_BENCH_NO_WIRE") == "1":
        _no_wire()
    args = sys.argv[2:]
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    elif args[0] == "-c":
        sys.argv = ["-c", *args[2:]]
        exec(compile(args[1], "<bench>", "exec"), {"__name__": "__main__"})  # noqa: S102
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
