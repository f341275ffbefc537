"""Where a user-chosen URL may lead (backend/notify/egress.py): every internal address class refused, public ones
and the operator's allowed networks let through, the URL pinned to the checked address with the name kept for the
receiver and TLS, and a name refused when any of its addresses is internal or when it does not resolve."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from backend.errors import ConfigError
from backend.notify.egress import Refused, Resolver, internal, pin, refused_host
from backend.settings import Settings

LAN = ipaddress.ip_network("192.168.1.0/24")
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1",  # loopback
    "10.1.2.3", "172.16.0.1", "172.31.255.254", "192.168.1.10", "fd00::1", "fc00::5",  # private
    "169.254.169.254", "169.254.0.1", "fe80::1",  # link-local: cloud metadata
    "224.0.0.1", "239.255.255.250", "ff02::1",  # multicast (224/4 counts as "global" to ipaddress)
    "0.0.0.0", "::",  # unspecified
    "240.0.0.1", "255.255.255.255",  # reserved
    "100.64.0.1", "100.127.255.254",  # shared address space (carrier-grade NAT)
    "192.0.2.1", "198.18.0.1", "2001:db8::1",  # documentation, benchmarking
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",  # IPv4-mapped
    "2002:7f00:1::1", "2002:a9fe:a9fe::",  # 6to4 of 127.0.0.1 and 169.254.169.254
])
def test_internal_addresses_are_refused(address: str) -> None:
    assert internal(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8",
                                     "2002:808:808::1", "172.32.0.1", "100.128.0.1"])
def test_public_addresses_are_let_through(address: str) -> None:
    assert not internal(ipaddress.ip_address(address))


def test_the_operators_networks_let_their_addresses_through_and_nothing_else() -> None:
    assert not internal(ipaddress.ip_address("192.168.1.10"), (LAN,))
    assert internal(ipaddress.ip_address("192.168.2.10"), (LAN,))
    assert not internal(ipaddress.ip_address("::ffff:192.168.1.10"), (LAN,))  # the same host, mapped
    assert not internal(ipaddress.ip_address("127.0.0.1"), (LOOPBACK,))
    assert internal(ipaddress.ip_address("::1"), (LOOPBACK,))  # an IPv4 network never covers an IPv6 address


def test_allowed_networks_setting_is_parsed_and_an_invalid_one_is_a_config_error() -> None:
    assert Settings().notify_networks() == ()
    assert Settings(notify_allowed_networks=" 192.168.1.0/24, 10.0.0.7 ,fd00::/8").notify_networks() == (
        LAN, ipaddress.ip_network("10.0.0.7/32"), ipaddress.ip_network("fd00::/8"))
    for bad in ("192.168.1.0/33", "lan", "*"):
        with pytest.raises(ConfigError, match="BACKEND_NOTIFY_ALLOWED_NETWORKS"):
            Settings.from_env({"BACKEND_NOTIFY_ALLOWED_NETWORKS": bad})


def test_what_the_preferences_refuse_without_resolving() -> None:
    for url in ("http://localhost/x", "http://LOCALHOST./x", "https://api.localhost:8443/x", "http://127.0.0.1/x",
                "http://[::1]:8080/x", "http://169.254.169.254/latest", "http://[::ffff:10.0.0.1]/x"):
        assert refused_host(url, ()) is not None, url
    assert refused_host("http://[::1]:8080/x", ()) == "::1"
    for url in ("https://hooks.example.com/x", "http://8.8.8.8/x"):  # a name is judged when it resolves
        assert refused_host(url, ()) is None, url
    assert refused_host("http://192.168.1.5:8123/api/webhook/x", (LAN,)) is None
    assert refused_host("http://localhost/x", (LOOPBACK,)) == "localhost"  # ::1 is localhost too
    assert refused_host("http://localhost/x", (LOOPBACK, ipaddress.ip_network("::1/128"))) is None
    for url in ("ftp://example.com/x", "http://:80/x", "http://example.com:99999/x"):
        with pytest.raises(Refused, match="URL inválida"):
            refused_host(url, ())


def table(answers: dict[str, list[str]]) -> Resolver:
    """A resolver answering from ``answers`` (a missing name: no such name, as getaddrinfo says it)."""

    async def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    return resolve


@pytest.mark.asyncio
async def test_pin_sends_to_the_checked_address_and_keeps_the_name_for_the_receiver_and_tls() -> None:
    resolve = table({"hooks.example": ["93.184.216.34"], "v6.example": ["2606:4700:4700::1111"]})
    t = await pin("https://hooks.example/api/hook?a=1", (), resolve)
    assert t.url == "https://93.184.216.34/api/hook?a=1"
    assert t.headers == {"Host": "hooks.example", "Connection": "close"}
    assert t.extensions == {"sni_hostname": "hooks.example"}
    t = await pin("http://v6.example:8080/h", (), resolve)
    assert t.url == "http://[2606:4700:4700::1111]:8080/h" and t.headers["Host"] == "v6.example:8080"
    assert t.extensions == {}  # no TLS, nothing to name
    t = await pin("https://8.8.8.8/h", (), resolve)
    assert t.url == "https://8.8.8.8/h" and t.extensions == {}  # a literal is checked as the address it is


@pytest.mark.asyncio
async def test_pin_refuses_a_name_with_any_internal_address_and_retries_one_that_does_not_resolve() -> None:
    resolve = table({"mixed.example": ["93.184.216.34", "127.0.0.1"], "meta.example": ["169.254.169.254"],
                     "lan.example": ["192.168.1.5"], "empty.example": []})
    with pytest.raises(Refused) as refused:
        await pin("http://mixed.example/h", (), resolve)
    assert refused.value.permanent
    assert str(refused.value) == ("destino em rede interna recusado: mixed.example → 127.0.0.1 "
                                  "(BACKEND_NOTIFY_ALLOWED_NETWORKS)")
    with pytest.raises(Refused, match=r"meta\.example → 169\.254\.169\.254"):
        await pin("http://meta.example/latest/meta-data/", (), resolve)
    with pytest.raises(Refused, match=r"recusado: 127\.0\.0\.1 \(BACKEND"):
        await pin("http://127.0.0.1:8086/query?q=DROP%20DATABASE%20cds", (), resolve)
    assert (await pin("http://lan.example:8123/h", (LAN,), resolve)).url == "http://192.168.1.5:8123/h"
    for name in ("nowhere.example", "empty.example"):
        with pytest.raises(Refused, match="nome não resolvido") as refused:
            await pin(f"http://{name}/h", (), resolve)
        assert not refused.value.permanent
