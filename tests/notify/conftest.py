"""Notifier test helpers: a real HTTP receiver that checks webhook signatures, a real SMTP server (aiosmtpd), a
notifier wired to the session broker and InfluxDB with an injected clock, and alert-list builders."""

from __future__ import annotations

import datetime as dt
import hmac
import http.server
import threading
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller

from backend.accounts.audit import AuditLog
from backend.accounts.store import AccountStore
from backend.ingest.bridge import MqttBridge
from backend.notify.channels import Senders, sign
from backend.notify.deliveries import DeliveryLog
from backend.notify.notifier import ALERTS_FILTER, Notifier, mqtt_settings
from backend.notify.outbox import Outbox
from backend.notify.preferences import PreferenceStore
from backend.settings import Settings, User
from backend.store.influx import InfluxClient
from devstack.processes import HOST, free_port
from protocol.timebase import TZ
from tests.backend.conftest import Publisher

SECRET = "s" * 32
_TODAY = dt.datetime.now(TZ).date()
_TUESDAY = _TODAY - dt.timedelta(days=(_TODAY.weekday() - 1) % 7 + 7)
T0 = int(dt.datetime.combine(_TUESDAY, dt.time(12, 0), TZ).timestamp() * 1000)
"""Noon of a Tuesday one to two weeks ago, Brasília: every time in the tests is relative to it (the delivery
records keep the injected times, so they must fall inside their 90-day retention)."""


def alert_list(site: str, at_ms: int, *alerts: tuple[str, str, str]) -> bytes:
    """An AlertList as the replicas publish it: (device, kind, severity) per alert."""
    return msgspec.json.encode({
        "site": site, "evaluated_at": dt.datetime.fromtimestamp(at_ms / 1000, TZ).isoformat(), "v": 1,
        "alerts": [{"id": f"{site}:{d}:{k}", "site": site, "device": d, "kind": k, "severity": s,
                    "message": f"Alerta {k}", "value": 1.5, "limit": "1 V"} for d, k, s in alerts]})


def retain(broker: Any, site: str, *payloads: bytes) -> None:
    """Publish retained lists on the site's alerts topic, as the replicas do (an empty payload clears it)."""
    pub = Publisher(broker)
    try:
        for p in payloads:
            pub.publish(f"cds/v1/{site}/alerts", p, retain=True)
        pub.wait_all_acked()
    finally:
        pub.close()


def clear(broker: Any, site: str) -> None:
    retain(broker, site, b"")


class Receiver(http.server.ThreadingHTTPServer):
    """A webhook receiver on a real socket: checks the HMAC of every body, records the accepted ones, answers
    ``status`` (503 while 'down'), or redirects to ``location`` when set; ``hold`` names alert kinds whose requests
    are held until ``release`` (the sender is then provably mid-send: its request arrived, its answer has not
    left)."""

    daemon_threads = True

    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.bodies: list[dict[str, Any]] = []
        """The accepted bodies, in the order their answers were decided (a held one after its release)."""
        self.arrived: list[str] = []
        """``X-CDS-Delivery`` of every signed request as it arrived, before any hold: what was in flight."""
        self.hosts: list[str] = []
        """The ``Host`` header of every signed request, as it arrived."""
        self.location = ""
        self.mismatched_ids = 0
        """Requests whose body ``id`` differs from their ``X-CDS-Delivery`` header (must stay 0)."""
        self.bad_signatures = 0
        self.status = 200
        self.hold: set[str] = set()
        self.release = threading.Event()
        self.lock = threading.Lock()
        super().__init__((HOST, free_port()), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/hook"

    def ids(self) -> list[str]:
        with self.lock:
            return [b["id"] for b in self.bodies]

    def arrivals(self) -> list[str]:
        with self.lock:
            return list(self.arrived)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        srv = self.server
        if not hmac.compare_digest(self.headers.get("X-CDS-Signature", ""), sign(srv.secret, raw)):
            srv.bad_signatures += 1
            self.send_response(401)
            self.end_headers()
            return
        body = msgspec.json.decode(raw)
        with srv.lock:
            srv.arrived.append(self.headers.get("X-CDS-Delivery", ""))
            srv.hosts.append(self.headers.get("Host", ""))
            srv.mismatched_ids += body["id"] != self.headers.get("X-CDS-Delivery")
        if srv.location:  # 307: a client that followed it would repeat the POST, body and all, at the new place
            self.send_response(307)
            self.send_header("Location", srv.location)
            self.end_headers()
            return
        if body["alerta"]["kind"] in srv.hold:
            srv.release.wait(60)
        status = srv.status
        if status == 200:
            with srv.lock:
                srv.bodies.append(body)
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.release.set()
    r.shutdown()
    r.server_close()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname=HOST, port=port)
    controller.start()
    yield box, port
    controller.stop()


class Clock:
    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def notify_settings(broker: Any, influx: Any, uid: str, tmp: Path, **extra: Any) -> Settings:
    base: dict[str, Any] = dict(
        mqtt_host=broker.host, mqtt_port=broker.port, influx_url=influx.url, influx_db=uid,
        notify_state_dir=str(tmp / "notify"), notify_mqtt_client_id=f"nt-{uid}", log_level="WARNING",
        alerts_interval_s=60.0, notify_retry_base_s=30.0, notify_retry_max_s=600.0, notify_timeout_s=5.0,
        notify_allowed_networks="127.0.0.0/8",  # the test receivers listen on 127.0.0.1, an internal address
        users=(User("ana", "viewer", "scrypt$x"), User("bia", "viewer", "scrypt$x")))
    base.update(extra)
    return Settings(**base)


class Rig:
    """A notifier in this process: real broker, InfluxDB, outbox; the test drives its steps and its clock."""

    def __init__(self, settings: Settings, influx: InfluxClient, http: httpx.AsyncClient, clock: Clock) -> None:
        self.settings = settings
        self.influx = influx
        self.clock = clock
        self.outbox = Outbox(Path(settings.notify_state_dir))
        self.prefs = PreferenceStore(influx, settings)
        self.records = DeliveryLog(influx, settings)
        self.notifier = Notifier(settings, self.outbox, Senders(settings, http), self.prefs, self.records,
                                 AccountStore(influx, settings, AuditLog(influx, settings)), clock=clock,
                                 rand=lambda: 0.0)
        self.bridge = MqttBridge(mqtt_settings(settings), self.notifier.on_message, [(ALERTS_FILTER, 1)])

    async def cycle(self) -> None:
        """Route what arrived and run every due delivery to its end."""
        self.notifier.route_pending()
        await self.notifier.run_due(wait=True)
        await self.notifier.report()


@pytest_asyncio.fixture
async def rig(broker: Any, influx: Any, unique_id: str, tmp_path: Path) -> AsyncIterator[Rig]:
    (tmp_path / "notify").mkdir()
    settings = notify_settings(broker, influx, unique_id, tmp_path)
    async with InfluxClient(influx.url) as client, httpx.AsyncClient(timeout=5) as http:
        store = AccountStore(client, settings, AuditLog(client, settings))
        await store.ensure_schema()
        r = Rig(settings, client, http, Clock())
        await r.records.ensure_schema()
        await r.bridge.start()
        assert await r.bridge.wait_connected(10)
        yield r
        await r.bridge.stop()
        r.outbox.close()
        await client.execute(f'DROP DATABASE "{settings.resolved_accounts_db()}"', epoch=None)
