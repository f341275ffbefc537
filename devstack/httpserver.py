"""One local HTTP server in a daemon thread: what the fake ANEEL and ONS servers share.

Both fakes answer from a ``BaseHTTPRequestHandler`` subclass bound to their own state; this module owns the rest:
bind 127.0.0.1 (port 0 picks a free one, read back from the socket), serve from a thread with a short poll so
``stop()`` returns quickly, and shut down, close and join cleanly so a test's teardown leaves no thread behind.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ThreadedServer:
    """Serves ``handler`` on 127.0.0.1:``port`` from the moment it is built until :meth:`stop`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int, name: str) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
