"""Where a user-chosen URL may lead: the screen between users' webhook and ntfy destinations and the operator's
network.

Why: the notifier POSTs to URLs that any logged-in user typed (a webhook's ``destino``, an ntfy channel's own
``servidor``), from a host inside the operator's network. Unscreened, that is a server-side request forgery: a
household user could have the notifier send requests to whatever listens there — InfluxDB's v1 API runs
``POST /query?q=DROP DATABASE ...`` from the query string alone, a cloud's metadata service at 169.254.169.254 hands
out credentials. So a destination must be a public address, or lie in a network the operator listed in
``BACKEND_NOTIFY_ALLOWED_NETWORKS`` (a Home Assistant on the LAN). The operator's own ntfy server
(``BACKEND_NOTIFY_NTFY_SERVER``) is not screened: the operator chose it.

The check is on *addresses*, made at every send on what the name resolves to then:

- every address the name resolves to must pass. A name with one public and one internal address is refused, not
  narrowed to its public one: such a name is a probe, and a client library may try the addresses in any order.
- the request then goes to the very address that was checked (*pinned*): the URL's host becomes that IP, the
  ``Host`` header keeps the name, and TLS gets the name for SNI and the certificate check (httpx's ``sni_hostname``
  extension). Checking one resolution and letting the HTTP client do another would let a name that answers a public
  address first and an internal one next (DNS rebinding) through.
- a pinned request asks for its connection to be closed afterwards (``Connection: close``): the client's pool keys
  connections by the URL's host, now an IP, so a kept connection whose certificate was checked for one name could
  otherwise carry the next request for another name on the same address.
- redirects are never followed (httpx's default, restated at each call in channels.py): a public receiver could
  otherwise bounce the request into the network.

Internal means loopback, private (RFC 1918, fc00::/7), link-local (169.254/16, where cloud metadata lives, and
fe80::/10), multicast, unspecified, reserved, shared (100.64/10, carrier-grade NAT), and anything else
:mod:`ipaddress` does not call global (documentation and benchmarking ranges...). An IPv6 address that carries an
IPv4 one it leads to (``::ffff:a.b.c.d``, 6to4) is judged by that IPv4 address.

The preferences API refuses what it can tell without resolving (:func:`refused_host`: ``localhost`` names and
internal literal addresses), so a user hears at once; a name is judged at send time, because what it resolves to
while the request handler runs says nothing about what it will resolve to at the next send.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Final

import httpx
import msgspec

from backend.settings import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``: :func:`system_resolver` in the notifier, a table in tests."""
SETTING: Final = "BACKEND_NOTIFY_ALLOWED_NETWORKS"
_DEFAULT_PORT: Final = {"http": 80, "https": 443}
_LOOPBACK: Final = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
"""What a ``localhost`` name resolves to (RFC 6761 keeps those names on the loopback interface)."""


class Refused(Exception):
    """A destination the notifier does not send to (pt-BR reason); ``permanent`` unless a retry may change it (a
    name that did not resolve this time)."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Target(msgspec.Struct, frozen=True):
    """Where a request really goes: ``url`` with the checked address as host, plus the ``headers`` and httpx
    request ``extensions`` that keep the name for the receiver (``Host``) and for TLS (SNI, certificate)."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, str]


# --- the sans-IO core -------------------------------------------------------------------------------------------


def internal(ip: Address, allowed: tuple[Network, ...] = ()) -> bool:
    """Whether ``ip`` leads into a network a user's destination may not reach, ``allowed`` being the operator's
    exceptions."""
    if any(ip in net for net in allowed):
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:  # the packet ends up at the IPv4 address, so that is the one to judge
            return internal(embedded, allowed)
    # is_global alone would do for most; the named classes are spelled out because is_global lets multicast
    # (224.0.0.0/4) through and its exact ranges have changed between Python releases
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_unspecified
            or ip.is_reserved or not ip.is_global)


def _parse(url: str) -> httpx.URL:
    """``url`` as httpx will send it; Refused (permanent) when it is not an http(s) URL with a host and a port."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise Refused(f"URL inválida: {exc}", permanent=True) from exc
    if parsed.scheme not in _DEFAULT_PORT or not parsed.raw_host:
        raise Refused("URL inválida: use http:// ou https:// com um endereço", permanent=True)
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise Refused(f"URL inválida: porta {parsed.port}", permanent=True)
    return parsed


def _literal(host: str) -> Address | None:
    """The address a URL's host names by itself (``127.0.0.1``, ``::1``), None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def refused_host(url: str, allowed: tuple[Network, ...]) -> str | None:
    """The host of ``url`` when it is known to lead inside without resolving anything — a ``localhost`` name or an
    internal literal address — else None (a name is judged when it is resolved, at send time)."""
    host = _parse(url).raw_host.decode("ascii")
    ip = _literal(host)
    if ip is not None:
        return host if internal(ip, allowed) else None
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return host if any(internal(a, allowed) for a in _LOOPBACK) else None
    return None


def reason(where: str) -> str:
    """Why a destination was refused, for the user who reads it (pt-BR; ``where``: the address, or name → address)."""
    return f"destino em rede interna recusado: {where} ({SETTING})"


def pinned(url: httpx.URL, ip: Address) -> Target:
    """``url`` sent to ``ip``, still naming its host to the receiver and to TLS (see the module)."""
    host = url.raw_host.decode("ascii")
    extensions = {"sni_hostname": host} if url.scheme == "https" and _literal(host) is None else {}
    return Target(url=str(url.copy_with(host=str(ip))),
                  headers={"Host": url.netloc.decode("ascii"), "Connection": "close"}, extensions=extensions)


# --- the I/O shell ----------------------------------------------------------------------------------------------


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system's resolver gives for ``host`` (the loop's getaddrinfo, in a worker thread)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def pin(url: str, allowed: tuple[Network, ...], resolve: Resolver = system_resolver) -> Target:
    """Resolve ``url``'s host and return where to send it, or raise Refused: permanent when any of its addresses is
    internal, not when the name does not resolve (a DNS outage passes; a retry will tell)."""
    parsed = _parse(url)
    host = parsed.raw_host.decode("ascii")
    ip = _literal(host)
    if ip is not None:
        addresses = [ip]
    else:
        try:
            found = await resolve(host, parsed.port or _DEFAULT_PORT[parsed.scheme])
        except OSError as exc:  # socket.gaierror: no such name, or no answer from the DNS server
            raise Refused(f"nome não resolvido: {host} ({exc})", permanent=False) from exc
        addresses = [ipaddress.ip_address(a) for a in found]
        if not addresses:
            raise Refused(f"nome não resolvido: {host}", permanent=False)
    for a in addresses:
        if internal(a, allowed):
            raise Refused(reason(host if ip is not None else f"{host} → {a}"), permanent=True)
    return pinned(parsed, addresses[0])
