"""Edge limits of the HTTP server that uvicorn itself does not have.

uvicorn closes an idle keep-alive connection, caps concurrent requests (``limit_concurrency``, answered 503) and
body sizes are capped by the app, but a connection that sends half a request's headers and then nothing is kept
open forever, and one client may open as many connections as the process has file descriptors. Measured on the
first build: 3 000 half-sent requests were never closed, 20 600 idle sockets exhausted the descriptors and
``/health`` timed out. :class:`GuardedH11Protocol` (uvicorn's h11 protocol with two additions) closes:

* a connection whose request headers are not complete within ``header_timeout_s`` of its opening or of the end
  of its previous response (slow-loris clients);
* a new connection from an address that already holds ``max_per_address`` open ones, at once, before any byte
  is read — so one client cannot take the slots of everybody else, while many people behind one NAT still fit.

Counts are per process, in the event loop's thread (uvicorn runs one loop per worker process), so they need no
lock. A reverse proxy in front adds TLS and limits of its own; these hold without one.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

from backend.settings import Settings


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and a per-address connection cap (see the module doc)."""

    header_timeout_s: ClassVar[float] = 10.0
    max_per_address: ClassVar[int] = 64
    open_per_address: ClassVar[Counter[str]] = Counter()
    refused: ClassVar[int] = 0
    """Connections closed at once because their address was over the cap (for tests and logs)."""

    _address: str | None = None
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else ""
        cls = type(self)
        if cls.open_per_address[address] >= cls.max_per_address:
            cls.refused += 1
            transport.close()
            return
        cls.open_per_address[address] += 1
        self._address = address
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        if self._address is not None:
            counts = type(self).open_per_address
            counts[self._address] -= 1
            if counts[self._address] <= 0:
                del counts[self._address]
            self._address = None
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm_header_timer()  # a request has arrived whole: the app's limits take over

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request on this keep-alive connection gets the same deadline

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(type(self).header_timeout_s, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedH11Protocol]:
    """A protocol class carrying this process's limits, with its own connection counts."""
    return type("GuardedH11", (GuardedH11Protocol,), {
        "header_timeout_s": settings.http_header_timeout_s,
        "max_per_address": settings.http_max_connections_per_address,
        "open_per_address": Counter(),
        "refused": 0,
    })
