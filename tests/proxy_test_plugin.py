"""A proxy.py plugin for the proxy tests: names under ``.sage.test`` resolve to 127.0.0.1.

Only the proxy knows these names, so a request to ``http://api.sage.test:PORT`` can reach
the sandbox only through the proxy.
"""

from __future__ import annotations

from proxy.http.proxy import HttpProxyBasePlugin
from typing_extensions import override


class SageTestHosts(HttpProxyBasePlugin):
    """Resolve ``*.sage.test`` to the loopback address; leave other names to the system."""

    @override
    def resolve_dns(self, host: str, port: int) -> tuple[str | None, None]:
        if host == "sage.test" or host.endswith(".sage.test"):
            return "127.0.0.1", None
        return None, None
