"""The ntfy channel against a server on a real socket that speaks ntfy's publish API (``POST /<topic>``, the
message as the body, ``Title``/``Priority``/``Tags`` headers, a Bearer token), as the public ntfy.sh and a
self-hosted ntfy answer it: delivered once, retried while the server is down, resolved sent, token carried."""

from __future__ import annotations

import email.header
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from backend.notify.preferences import Canal
from devstack.processes import HOST, free_port
from tests.notify.conftest import T0, Rig, alert_list, clear
from tests.notify.test_delivery import follow, publish

pytestmark = [pytest.mark.services, pytest.mark.asyncio]

TOKEN = "tk_" + "a" * 29


class Posted(msgspec.Struct, frozen=True):
    topic: str
    title: str
    priority: str
    tags: str
    delivery: str
    message: str


class NtfyServer(http.server.ThreadingHTTPServer):
    """ntfy's publish endpoint: 200 with the message as JSON when the token is right, 401 when not (ntfy's
    answer to a wrong token on a protected topic), ``status`` otherwise (503 while 'down')."""

    daemon_threads = True

    def __init__(self) -> None:
        self.posted: list[Posted] = []
        self.refused = 0
        self.status = 200
        self.lock = threading.Lock()
        super().__init__((HOST, free_port()), _NtfyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}"


class _NtfyHandler(http.server.BaseHTTPRequestHandler):
    server: NtfyServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        srv = self.server
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            srv.refused += 1
            self._answer(401, b'{"code":40101,"http":401,"error":"unauthorized"}')
            return
        if srv.status != 200:
            self._answer(srv.status, b'{"code":50301,"http":503,"error":"unavailable"}')
            return
        # ntfy decodes RFC 2047 encoded words in headers; so does this server, the way a client's UI would show it
        title = str(email.header.make_header(email.header.decode_header(self.headers.get("Title", ""))))
        with srv.lock:
            srv.posted.append(Posted(topic=self.path.lstrip("/"), title=title, priority=self.headers["Priority"],
                                     tags=self.headers.get("Tags", ""),
                                     delivery=self.headers.get("X-CDS-Delivery", ""), message=body))
        self._answer(200, msgspec.json.encode({"id": "n1", "event": "message", "topic": self.path.lstrip("/"),
                                               "message": body}))

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def ntfy() -> Iterator[NtfyServer]:
    server = NtfyServer()
    yield server
    server.shutdown()
    server.server_close()


async def test_ntfy_delivered_once_retried_while_down_and_resolved_sent(
        rig: Rig, broker: Any, ntfy: NtfyServer, unique_id: str, wait_for_async: Any) -> None:
    site = unique_id.replace("_", "-")
    topic = f"cds-{site}"
    await follow(rig, site, Canal(nome="celular", tipo="ntfy", destino=topic, servidor=ntfy.url, token=TOKEN))
    ntfy.status = 503
    try:
        await publish(rig, broker, site, [alert_list(site, T0, ("00000000000000a1", "tensao", "critico"))],
                      wait_for_async)
        await rig.cycle()
        assert ntfy.posted == [] and rig.notifier.metrics.deliveries.labels("ntfy", "retried")._value.get() == 1
        (seen,) = await rig.records.recent("ana")
        assert seen.situacao == "pendente" and "503" in seen.ultimo_erro
        ntfy.status = 200
        rig.clock.ms = T0 + 15_000  # the first retry (base 30 s, no jitter in the rig: half of it)
        await rig.cycle()
        # the same list again from the other replica: nothing new to say
        await publish(rig, broker, site, [alert_list(site, T0 + 5_000, ("00000000000000a1", "tensao", "critico"))],
                      wait_for_async)
        await rig.cycle()
        (first,) = ntfy.posted
        assert first.topic == topic and first.priority in {"4", "5"}  # ntfy: 4 high, 5 urgent
        assert first.title.startswith("[CDS] ALERTA CRÍTICO"), first.title  # pt-BR survives the Latin-1 header
        assert first.message and first.delivery
        # gone from the lists for a whole evaluation interval: resolved, once
        await publish(rig, broker, site, [alert_list(site, T0 + 60_000), alert_list(site, T0 + 125_000)],
                      wait_for_async)
        await rig.cycle()
        assert len(ntfy.posted) == 2 and ntfy.posted[0] == first  # the alert was not sent again
        assert ntfy.posted[1].title.startswith("[CDS] Resolvido"), ntfy.posted[1].title
        assert ntfy.posted[1].delivery != first.delivery and ntfy.posted[1].priority == "3"
        assert ntfy.refused == 0
        assert rig.notifier.metrics.deliveries.labels("ntfy", "delivered")._value.get() == 2
    finally:
        clear(broker, site)
