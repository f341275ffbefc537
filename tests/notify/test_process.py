"""``python -m backend notify`` as an operator runs it: a real process configured by ``BACKEND_*`` variables, on the
session's Mosquitto and InfluxDB, sending to a real SMTP server and a webhook receiver on real sockets.

Faults are injected into the process itself (SIGKILL while a webhook request is held open by the receiver, a second
instance on the same state directory, SIGTERM); every wait is on something observable — the receiver's records,
the process's own metrics endpoint, its exit code — never a sleep.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend.accounts.audit import AuditLog
from backend.accounts.store import AccountStore
from backend.aneel.records import parse_bandeira_month, parse_tariff
from backend.aneel.store import AneelStore, day_ms, tariff_line
from backend.notify.deliveries import DeliveryLog
from backend.notify.outbox import lock_state_dir
from backend.notify.preferences import Canal, PreferenceStore, Preferencias, RegraSite
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import ANEEL_FLAG, ensure_schema
from backend.store.lineprotocol import point
from devstack.aneel_rows import ACIONAMENTO, LIGHT, NA, REH_LIGHT_2026, tariff_row
from devstack.processes import HOST, free_port
from protocol.timebase import TZ
from tests.notify.conftest import SECRET, T0, Mailbox, Receiver, alert_list, clear, retain

pytestmark = [pytest.mark.services, pytest.mark.asyncio]
REPO = Path(__file__).resolve().parents[2]
DEV = "00000000000000d1"


class NotifierProcess:
    """One ``python -m backend notify``; its output (JSON log lines) goes to a file the failures quote."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.metrics_port = int(env["BACKEND_NOTIFY_METRICS_PORT"])
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "backend", "notify"], cwd=REPO, env=env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]

    def metric(self, name: str, **labels: str) -> float | None:
        """A sample of the running process's metrics (None while the endpoint does not answer)."""
        try:
            text = httpx.get(f"http://{HOST}:{self.metrics_port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return None

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the notifier did not exit within {timeout} s; its output:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    """``spawn(env) -> NotifierProcess``; every process still running at the end is killed."""
    started: list[NotifierProcess] = []

    def make(env: dict[str, str]) -> NotifierProcess:
        p = NotifierProcess(env, tmp_path / f"notify-{len(started)}.log")
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def operator_env(broker: Any, influx: Any, uid: str, tmp: Path, smtp_port: int, **extra: str) -> dict[str, str]:
    """The variables an operator sets for the notifier (docs/operations.md, "Notifications"), and nothing of the
    test runner's own ``BACKEND_*`` environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
    env.update({
        "BACKEND_MQTT_HOST": broker.host, "BACKEND_MQTT_PORT": str(broker.port), "BACKEND_INFLUX_URL": influx.url,
        "BACKEND_INFLUX_DB": uid, "BACKEND_NOTIFY_STATE_DIR": str(tmp / "notify-state"),
        "BACKEND_NOTIFY_MQTT_CLIENT_ID": f"nt-{uid}", "BACKEND_NOTIFY_METRICS_PORT": str(free_port()),
        "BACKEND_NOTIFY_SMTP_HOST": HOST, "BACKEND_NOTIFY_SMTP_PORT": str(smtp_port),
        "BACKEND_NOTIFY_SMTP_SECURITY": "none", "BACKEND_NOTIFY_RETRY_BASE_S": "0.2",
        "BACKEND_NOTIFY_RETRY_MAX_S": "1", "BACKEND_NOTIFY_PREFS_REFRESH_S": "0.3", "BACKEND_LOG_LEVEL": "INFO",
        "BACKEND_USERS": '[{"username": "ana", "role": "viewer", "password_hash": "scrypt$x"}]',
        "BACKEND_NOTIFY_ALLOWED_NETWORKS": "127.0.0.0/8",  # the test receivers listen on 127.0.0.1
    })
    env.update(extra)
    return env


async def set_prefs(influx: Any, uid: str, prefs: Preferencias) -> None:
    """Ana's preferences, stored where the API's PUT stores them (and the accounts schema a replica creates)."""
    settings = Settings(influx_url=influx.url, influx_db=uid)
    async with InfluxClient(influx.url) as client:
        await AccountStore(client, settings, AuditLog(client, settings)).ensure_schema()
        await PreferenceStore(client, settings).put("ana", prefs, T0)


async def drop(influx: Any, *dbs: str) -> None:
    async with InfluxClient(influx.url) as client:
        for db in dbs:
            await client.execute(f'DROP DATABASE "{db}"', epoch=None)


def hook(receiver: Receiver) -> Canal:
    return Canal(nome="hook", tipo="webhook", destino=receiver.url, segredo=SECRET)


async def test_real_process_sends_alert_and_resolved_once_per_channel_then_stops_on_sigterm(
        broker: Any, influx: Any, receiver: Receiver, smtp: tuple[Mailbox, int], unique_id: str, tmp_path: Path,
        spawn: Any, wait_for_async: Any) -> None:
    site = unique_id.replace("_", "-")
    box, smtp_port = smtp
    await set_prefs(influx, unique_id, Preferencias(
        canais=[hook(receiver), Canal(nome="mail", tipo="email", destino="ana@example.com")],
        sites=[RegraSite(site=site)]))
    env = operator_env(broker, influx, unique_id, tmp_path, smtp_port)
    notifier = spawn(env)
    one = ("00000000000000a1", "offline", "critico")
    try:
        retain(broker, site, alert_list(site, T0, one))
        await wait_for_async(lambda: len(receiver.ids()) == 1 and len(box.messages) == 1, timeout=30,
                             what=lambda: f"the alert on both channels; output:\n{notifier.output()}")
        # the other replica's list, then two without the alert a whole interval apart
        retain(broker, site, alert_list(site, T0 + 5000, one), alert_list(site, T0 + 61_000),
               alert_list(site, T0 + 122_000))
        await wait_for_async(lambda: len(receiver.ids()) == 2 and len(box.messages) == 2, timeout=30,
                             what=lambda: f"the resolved on both channels; output:\n{notifier.output()}")
        # Nothing left to send: what arrived is all that will ever arrive.
        await wait_for_async(lambda: notifier.metric("cds_notify_pending_deliveries") == 0
                             and notifier.metric("cds_notify_deliveries_total", channel="email",
                                                 outcome="delivered") == 2, timeout=30,
                             what=lambda: f"pending 0 and 2 e-mails counted; output:\n{notifier.output()}")
        assert [b["evento"] for b in receiver.bodies] == ["alerta", "resolvido"]
        assert len(set(receiver.ids())) == 2 and receiver.bad_signatures == receiver.mismatched_ids == 0
        assert notifier.metric("cds_notify_deliveries_total", channel="webhook", outcome="delivered") == 2
        assert "ALERTA CRÍTICO" in box.messages[0]["Subject"] and box.messages[1]["Subject"].startswith(
            "[CDS] Resolvido")
        assert box.messages[0]["X-CDS-Delivery"] == f"{site}:{one[0]}:offline@{T0}:alerta/ana/mail"

        async def recorded() -> bool:  # what /api/v1/notificacoes/entregas shows
            settings = Settings(influx_url=influx.url, influx_db=unique_id)
            async with InfluxClient(influx.url) as client:
                seen = await DeliveryLog(client, settings).recent("ana")
            return sorted((d.evento, d.tipo_canal, d.situacao, d.tentativas) for d in seen) == [
                ("alerta", "email", "entregue", 1), ("alerta", "webhook", "entregue", 1),
                ("resolvido", "email", "entregue", 1), ("resolvido", "webhook", "entregue", 1)]

        await wait_for_async(recorded, what="the four deliveries recorded in InfluxDB", timeout=30)

        notifier.proc.send_signal(signal.SIGTERM)
        assert notifier.wait() == 0, notifier.output()
        assert "notifier stopped" in notifier.output()
        os.close(lock_state_dir(Path(env["BACKEND_NOTIFY_STATE_DIR"])))  # the lock went with the process
    finally:
        clear(broker, site)
        await drop(influx, f"{unique_id}_accounts")


async def test_notifier_kill9_mid_send_resends_only_the_one_in_flight_and_a_second_instance_refuses(
        broker: Any, influx: Any, receiver: Receiver, smtp: tuple[Mailbox, int], unique_id: str, tmp_path: Path,
        spawn: Any, wait_for_async: Any) -> None:
    site = unique_id.replace("_", "-")
    await set_prefs(influx, unique_id, Preferencias(canais=[hook(receiver)], sites=[RegraSite(site=site)]))
    # One send at a time: while the receiver holds one request, the next delivery provably waits its turn.
    env = operator_env(broker, influx, unique_id, tmp_path, smtp[1], BACKEND_NOTIFY_CONCURRENCY="1")
    a = ("00000000000000a1", "offline", "critico")
    b = ("00000000000000b1", "tensao", "aviso")  # held by the receiver: in flight at the kill
    c = ("00000000000000c1", "fator_potencia", "aviso")  # queued behind it: pending at the kill
    ids = {k: f"{site}:{dev}:{kind}@{at}:alerta/ana/hook" for k, (dev, kind, _), at in
           [("a", a, T0), ("b", b, T0 + 60_000), ("c", c, T0 + 60_000)]}
    first = spawn(env)
    try:
        retain(broker, site, alert_list(site, T0, a))
        await wait_for_async(lambda: first.metric("cds_notify_deliveries_total", channel="webhook",
                                                  outcome="delivered") == 1, timeout=30,
                             what=lambda: f"A delivered and marked so; output:\n{first.output()}")
        receiver.hold = {"tensao"}
        retain(broker, site, alert_list(site, T0 + 60_000, a, b, c))
        await wait_for_async(lambda: ids["b"] in receiver.arrivals(), timeout=30,
                             what=lambda: f"B in flight; output:\n{first.output()}")
        await wait_for_async(lambda: first.metric("cds_notify_pending_deliveries") == 2, timeout=30,
                             what="the gauge counting B (in flight) and C (queued)")
        first.proc.send_signal(signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL
        assert receiver.arrivals() == [ids["a"], ids["b"]]  # C never left
        # The receiver now accepts B: the dead notifier never saw that answer, so B is sent again.
        receiver.hold = set()
        receiver.release.set()
        await wait_for_async(lambda: receiver.ids() == [ids["a"], ids["b"]], timeout=30, what="the held B accepted")

        second = spawn(env)
        await wait_for_async(lambda: collections.Counter(receiver.ids()) == {ids["a"]: 1, ids["b"]: 2, ids["c"]: 1}
                             and second.metric("cds_notify_pending_deliveries") == 0, timeout=30,
                             what=lambda: f"B again and C after the restart, nothing pending; got "
                                          f"{receiver.ids()}; output:\n{second.output()}")
        assert receiver.mismatched_ids == receiver.bad_signatures == 0
        assert second.metric("cds_notify_deliveries_total", channel="webhook", outcome="delivered") == 2

        third = spawn(env)
        assert third.wait() == 2
        assert f"another notifier is running on {env['BACKEND_NOTIFY_STATE_DIR']}" in third.output()
        assert second.proc.poll() is None
        assert second.metric("cds_notify_pending_deliveries") == 0
        second.proc.send_signal(signal.SIGTERM)
        assert second.wait() == 0, second.output()
        assert collections.Counter(receiver.ids()) == {ids["a"]: 1, ids["b"]: 2, ids["c"]: 1}
    finally:
        clear(broker, site)
        await drop(influx, f"{unique_id}_accounts")


async def write_site_history(influx: Any, uid: str, site: str, days: int) -> None:
    """``days`` days of hourly rollups of one meter (0,5 kWh every hour) up to this hour, as the replicas' rollup
    worker leaves them, and Light's B1 tariff valid around today with ANEEL's bandeiras."""
    settings = Settings(influx_url=influx.url, influx_db=uid, retention_raw="INF", retention_1m="INF")
    now = dt.datetime.now(TZ).replace(minute=0, second=0, microsecond=0)
    lines, energy, per_h = [], 10_000_000, 500_000
    for h in range(days * 24, 0, -1):
        t = int((now - dt.timedelta(hours=h)).timestamp() * 1000)
        lines.append(f"readings,device={DEV},gateway=gw,site={site} n=60i,energy_first={energy}i,"
                     f"energy_last={energy + per_h - per_h // 60}i,boot_min=1i,boot_max=1i {t}")
        energy += per_h
    today = now.date()
    row = tariff_row(REH_LIGHT_2026, *LIGHT, (today - dt.timedelta(days=200)).isoformat(),
                     (today + dt.timedelta(days=200)).isoformat(), "B1", "Convencional", NA, "578,56", "302,00")
    flags = [parse_bandeira_month(r) for r in ACIONAMENTO]
    async with InfluxClient(influx.url) as client:
        await ensure_schema(client, settings)
        await client.write(lines, uid, rp="r1h", precision="ms")
        store = AneelStore(client, uid)
        await store.ensure_schema()
        await store.write([tariff_line(parse_tariff(row))] + [
            point(ANEEL_FLAG, {}, {"flag": m.flag, "adder": str(m.adder_rs_mwh), "gerado": ""}, day_ms(m.month))
            for m in flags])


async def test_real_process_budget_alert_opens_above_budget_and_resolves_when_raised(
        broker: Any, influx: Any, receiver: Receiver, smtp: tuple[Mailbox, int], unique_id: str, tmp_path: Path,
        spawn: Any, wait_for_async: Any) -> None:
    site = unique_id.replace("_", "-")
    sites = tmp_path / "sites.toml"
    sites.write_text(f'[[site]]\nid = "{site}"\ndistributor = "LIGHT SESA"\nicms = "0.24"\npis = "0.0123"\n'
                     f'cofins = "0.0567"\nbilling_day = 15\ndevices = ["{DEV}"]\n', encoding="utf-8")
    await write_site_history(influx, unique_id, site, days=21)
    rule = RegraSite(site=site, orcamento_mensal_rs=Decimal(50))
    await set_prefs(influx, unique_id, Preferencias(canais=[hook(receiver)], sites=[rule]))
    env = operator_env(broker, influx, unique_id, tmp_path, smtp[1], BACKEND_SITES_FILE=str(sites),
                       BACKEND_NOTIFY_BUDGET_INTERVAL_S="0.3", BACKEND_RETENTION_RAW="INF")
    notifier = spawn(env)
    try:
        await wait_for_async(lambda: len(receiver.bodies) == 1, timeout=30,
                             what=lambda: f"the budget alert; output:\n{notifier.output()}")
        (opened,) = receiver.bodies
        assert opened["evento"] == "alerta" and opened["alerta"]["kind"] == "orcamento"
        assert opened["assunto"] == f"[CDS] Alerta em {site}: Conta projetada acima do orçamento"
        assert "acima do seu orçamento de R$ 50,00" in opened["texto"]
        # A 28-31 day cycle of 12 kWh a day at Light's (578,56 + 302,00) R$/MWh over 0,70756 of taxes, plus
        # the last published bandeira (Amarela, 18,85 R$/MWh): 336-372 kWh x ~1,27 R$/kWh.
        assert 420 < opened["alerta"]["value"] < 480

        await set_prefs(influx, unique_id, Preferencias(canais=[hook(receiver)], sites=[
            msgspec.structs.replace(rule, orcamento_mensal_rs=Decimal(900_000))]))
        await wait_for_async(lambda: len(receiver.bodies) == 2, timeout=30,
                             what=lambda: f"the budget resolved; output:\n{notifier.output()}")
        assert receiver.bodies[1]["evento"] == "resolvido" and receiver.bodies[1]["alerta"]["kind"] == "orcamento"
        assert notifier.metric("cds_notify_errors_total", step="budget") in (None, 0)
    finally:
        await drop(influx, unique_id, f"{unique_id}_accounts")
