"""Users' webhook and ntfy URLs cannot make the notifier send into the operator's network (server-side request
forgery): against the real InfluxDB, a webhook receiver and an ntfy server on real sockets, a TLS receiver whose
certificate names a host only, and the notifier's own outbox. The one seam is the resolver: a table that maps test
names to addresses, as a DNS server would.

The attack is the real one: a webhook at InfluxDB's v1 ``/query`` with an InfluxQL statement in the query string,
which InfluxDB runs for a POST whatever its body. Preferences are written straight to the store, as ones saved
before the API refused internal addresses (or naming a host that resolves inside) would be: the screen at send time
must hold on its own.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from backend.notify.channels import SendError, Senders
from backend.notify.preferences import Canal
from backend.notify.render import render
from backend.notify.transitions import AlertIn, Event
from tests.notify.conftest import SECRET, T0, Receiver, Rig, alert_list, clear
from tests.notify.test_delivery import follow, publish
from tests.notify.test_egress import table
from tests.notify.test_ntfy import TOKEN, NtfyServer

pytestmark = [pytest.mark.services, pytest.mark.asyncio]
REFUSED = "destino em rede interna recusado: 127.0.0.1 (BACKEND_NOTIFY_ALLOWED_NETWORKS)"


async def databases(rig: Rig) -> set[str]:
    return {str(r["name"]) for r in await rig.influx.rows("SHOW DATABASES", epoch=None)}


async def alert(rig: Rig, broker: Any, site: str, device: str, at_ms: int, wait_for_async: Any) -> None:
    """A critical alert of ``device`` opens on ``site`` and the notifier sends what it routes."""
    await publish(rig, broker, site, [alert_list(site, at_ms, (device, "offline", "critico"))], wait_for_async)
    await rig.cycle()


def allow(rig: Rig, networks: str, **extra: Any) -> None:
    """The notifier's senders with ``networks`` allowed by the operator ("" = the default: public addresses only)."""
    rig.notifier.senders.settings = msgspec.structs.replace(rig.settings, notify_allowed_networks=networks, **extra)


async def outcomes(rig: Rig) -> dict[str, tuple[str, str]]:
    """Channel name -> (status, last error) of Ana's deliveries."""
    return {d.canal: (d.situacao, d.ultimo_erro) for d in await rig.records.recent("ana")}


async def test_webhook_into_influxdb_fails_permanently_and_the_statement_never_runs(
        rig: Rig, broker: Any, influx: Any, unique_id: str, wait_for_async: Any) -> None:
    site = unique_id.replace("_", "-")
    target = f"{unique_id}_pwned"
    attack = Canal(nome="hook", tipo="webhook", destino=f"{influx.url}/query?q=CREATE%20DATABASE%20{target}",
                   segredo=SECRET)
    allow(rig, "")
    await follow(rig, site, attack)
    try:
        await alert(rig, broker, site, "00000000000000a1", T0, wait_for_async)
        (seen,) = await rig.records.recent("ana")
        assert (seen.situacao, seen.tentativas, seen.ultimo_erro) == ("falhou", 1, REFUSED)
        assert seen.proxima_tentativa_ms is None  # given up at once: no retry changes the address
        assert rig.notifier.metrics.deliveries.labels("webhook", "failed")._value.get() == 1
        assert target not in await databases(rig)

        # The control: with loopback allowed by the operator, the same channel does run the statement — what stopped
        # it above is the screen, not a request InfluxDB would have ignored anyway.
        allow(rig, "127.0.0.0/8")
        await alert(rig, broker, site, "00000000000000a2", T0 + 1000, wait_for_async)
        assert target in await databases(rig)
    finally:
        clear(broker, site)
        await rig.influx.execute(f'DROP DATABASE "{target}"', epoch=None)


async def test_a_name_is_sent_to_the_address_checked_and_refused_when_any_of_its_addresses_is_internal(
        rig: Rig, broker: Any, receiver: Receiver, unique_id: str, wait_for_async: Any) -> None:
    site = unique_id.replace("_", "-")
    port = receiver.server_address[1]
    rig.notifier.senders.resolve = table({"hooks.example": ["127.0.0.1"], "mixed.example": ["93.184.216.34",
                                                                                           "127.0.0.1"]})
    await follow(rig, site, Canal(nome="hook", tipo="webhook", destino=f"http://hooks.example:{port}/hook",
                                  segredo=SECRET))
    try:
        await alert(rig, broker, site, "00000000000000a1", T0, wait_for_async)
        assert len(receiver.ids()) == 1 and receiver.hosts == [f"hooks.example:{port}"]
        assert await outcomes(rig) == {"hook": ("entregue", "")}

        # Without the operator's allowance, the same name is refused; and a name with a public and a loopback
        # address is refused whole, never narrowed to its public one.
        allow(rig, "")
        await follow(rig, site, Canal(nome="nome", tipo="webhook", destino=f"http://hooks.example:{port}/hook",
                                      segredo=SECRET),
                     Canal(nome="misto", tipo="webhook", destino=f"http://mixed.example:{port}/hook", segredo=SECRET))
        await alert(rig, broker, site, "00000000000000a2", T0 + 1000, wait_for_async)
        assert len(receiver.arrivals()) == 1
        seen = await outcomes(rig)
        assert seen["nome"] == ("falhou", "destino em rede interna recusado: hooks.example → 127.0.0.1 "
                                          "(BACKEND_NOTIFY_ALLOWED_NETWORKS)")
        assert seen["misto"] == ("falhou", "destino em rede interna recusado: mixed.example → 127.0.0.1 "
                                           "(BACKEND_NOTIFY_ALLOWED_NETWORKS)")
    finally:
        clear(broker, site)


async def test_a_name_that_does_not_resolve_is_retried(rig: Rig) -> None:
    rig.notifier.senders.resolve = table({})
    event = Event(id="teste:ana@1:teste", type="teste", alert=AlertIn(id="teste", site=""), at_ms=T0, opened_ms=T0,
                  user="ana")
    hook = Canal(nome="hook", tipo="webhook", destino="https://nowhere.example/hook", segredo=SECRET)
    with pytest.raises(SendError, match=r"nome não resolvido: nowhere\.example") as failed:
        await rig.notifier.senders.send("d1", "ana", hook, event, render(event), T0)
    assert not failed.value.permanent


async def test_a_redirect_from_an_allowed_receiver_into_influxdb_is_not_followed(
        rig: Rig, broker: Any, influx: Any, receiver: Receiver, unique_id: str, wait_for_async: Any) -> None:
    """The receiver is allowed (127.0.0.0/8, as InfluxDB is): only not following the redirect keeps the POST from
    InfluxDB."""
    site = unique_id.replace("_", "-")
    target = f"{unique_id}_pwned"
    receiver.location = f"{influx.url}/query?q=CREATE%20DATABASE%20{target}"
    await follow(rig, site, Canal(nome="hook", tipo="webhook", destino=receiver.url, segredo=SECRET))
    try:
        await alert(rig, broker, site, "00000000000000a1", T0, wait_for_async)
        assert len(receiver.arrivals()) == 1
        ((status, error),) = (await outcomes(rig)).values()
        assert status == "pendente" and error.startswith("HTTP 307"), error
        assert target not in await databases(rig)
    finally:
        clear(broker, site)
        await rig.influx.execute(f'DROP DATABASE "{target}"', epoch=None)


async def test_ntfy_own_server_is_screened_and_the_operators_default_is_trusted(
        rig: Rig, broker: Any, unique_id: str, wait_for_async: Any) -> None:
    site = unique_id.replace("_", "-")
    server = NtfyServer()
    try:
        allow(rig, "", notify_ntfy_server=server.url)  # the operator runs ntfy on this host
        await follow(rig, site, Canal(nome="proprio", tipo="ntfy", destino="t1", servidor=server.url, token=TOKEN),
                     Canal(nome="padrao", tipo="ntfy", destino="t2", token=TOKEN))
        await alert(rig, broker, site, "00000000000000a1", T0, wait_for_async)
        assert [p.topic for p in server.posted] == ["t2"]
        assert await outcomes(rig) == {"proprio": ("falhou", REFUSED), "padrao": ("entregue", "")}
    finally:
        server.shutdown()
        server.server_close()
        clear(broker, site)


class TlsReceiver(Receiver):
    """The webhook receiver behind TLS with a certificate for ``hooks.example`` only (no address in it); records
    the server name (SNI) of every handshake."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.names: list[str | None] = []
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.context.sni_callback = lambda _sock, name, _ctx: self.names.append(name)
        super().__init__()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True), address


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[TlsReceiver, Path]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=hooks.example",
                    "-addext", "subjectAltName=DNS:hooks.example"], check=True, capture_output=True)
    r = TlsReceiver(cert, key)
    yield r, cert
    r.shutdown()
    r.server_close()


async def test_https_pinned_to_an_address_still_names_the_host_for_sni_and_the_certificate(
        rig: Rig, broker: Any, tls_receiver: tuple[TlsReceiver, Path], unique_id: str, wait_for_async: Any) -> None:
    """The connection goes to 127.0.0.1, which the certificate does not name: the handshake succeeds only if SNI and
    the certificate check use the URL's name; and a name the certificate does not carry still fails it."""
    receiver, cert = tls_receiver
    site = unique_id.replace("_", "-")
    port = receiver.server_address[1]
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(cert)), timeout=5) as http:
        rig.notifier.senders = Senders(rig.settings, http, table({"hooks.example": ["127.0.0.1"],
                                                                  "other.example": ["127.0.0.1"]}))
        await follow(rig, site, *(Canal(nome=name.split(".")[0], tipo="webhook", segredo=SECRET,
                                        destino=f"https://{name}:{port}/hook")
                                  for name in ("hooks.example", "other.example")))
        try:
            await alert(rig, broker, site, "00000000000000a1", T0, wait_for_async)
            assert len(receiver.ids()) == 1 and receiver.hosts == [f"hooks.example:{port}"]
            assert sorted(n or "" for n in receiver.names) == ["hooks.example", "other.example"]
            seen = await outcomes(rig)
            assert seen["hooks"] == ("entregue", "")
            assert seen["other"][0] == "pendente" and "CERTIFICATE_VERIFY_FAILED" in seen["other"][1], seen
        finally:
            clear(broker, site)
