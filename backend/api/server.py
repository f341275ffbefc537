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

Behind a reverse proxy (deploy/nginx/cds.conf) every connection comes from the proxy, so the client is the
address the proxy puts in ``X-Forwarded-For``. :func:`trusted_proxies` reads ``BACKEND_HTTP_TRUSTED_PROXIES``:
only connections from those addresses have their forwarded headers believed (uvicorn's proxy-headers middleware,
which then sets the client address the login throttle and the audit log see), and only they are exempt from the
per-address cap, which would otherwise cap the whole site at one client's share (the proxy caps each real client
with ``limit_conn``). uvicorn by itself trusts 127.0.0.1 and ::1, so any local process could choose its address
for the throttle: the default here trusts nobody.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from typing import ClassVar, TypedDict

from uvicorn.protocols.http.h11_impl import H11Protocol

from backend.settings import Network, Settings, networks


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and a per-address connection cap (see the module doc)."""

    header_timeout_s: ClassVar[float] = 10.0
    max_per_address: ClassVar[int] = 64
    trusted: ClassVar[tuple[Network, ...]] = ()
    """Reverse proxies: not counted per address."""
    open_per_address: ClassVar[Counter[str]] = Counter()
    refused: ClassVar[int] = 0
    """Connections closed at once because their address was over the cap (for tests and logs)."""

    _address: str | None = None
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else ""
        cls = type(self)
        if not _within(address, cls.trusted):
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


def _within(address: str, nets: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in nets)


def trusted_proxies(settings: Settings) -> tuple[Network, ...]:
    """The networks of ``http_trusted_proxies``; ConfigError for anything that is not an address or a network
    (uvicorn would silently compare it as a string, and ``*`` would let every client choose its address)."""
    return networks(settings.http_trusted_proxies, "http_trusted_proxies")


class ServerOptions(TypedDict):
    """The keyword arguments of ``uvicorn.run`` that make the edge."""

    http: type[GuardedH11Protocol]
    limit_concurrency: int
    timeout_keep_alive: int
    proxy_headers: bool
    forwarded_allow_ips: list[str]


def server_options(settings: Settings) -> ServerOptions:
    """uvicorn's options for the edge: the guarded protocol, its limits, and which proxies' headers to believe."""
    proxies = trusted_proxies(settings)
    return ServerOptions(http=guarded_protocol(settings, proxies), limit_concurrency=settings.http_limit_concurrency,
                         timeout_keep_alive=settings.http_keepalive_s, proxy_headers=bool(proxies),
                         forwarded_allow_ips=[str(net) for net in proxies])


def guarded_protocol(settings: Settings, proxies: tuple[Network, ...]) -> type[GuardedH11Protocol]:
    """A protocol class carrying this process's limits and trusted proxies, with its own connection counts."""
    return type("GuardedH11", (GuardedH11Protocol,), {
        "header_timeout_s": settings.http_header_timeout_s,
        "max_per_address": settings.http_max_connections_per_address,
        "trusted": proxies,
        "open_per_address": Counter(),
        "refused": 0,
    })
