"""The notifier against the real broker, InfluxDB, an SMTP server and a webhook receiver on real sockets; its
clock is injected, so retries and quiet hours are driven, never waited for."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest
from aiosmtpd.controller import Controller

from backend.notify.preferences import Canal, Preferencias, RegraSite, Silencio
from devstack.processes import HOST, free_port
from tests.notify.conftest import SECRET, T0, Mailbox, Receiver, Rig, alert_list, clear, retain

pytestmark = [pytest.mark.services, pytest.mark.asyncio]


def hook(receiver: Receiver) -> Canal:
    return Canal(nome="hook", tipo="webhook", destino=receiver.url, segredo=SECRET)


async def follow(rig: Rig, site: str, *channels: Canal, **rule: Any) -> None:
    await rig.prefs.put("ana", Preferencias(canais=list(channels), sites=[RegraSite(site=site, **rule)]), T0)
    await rig.notifier.refresh()


async def publish(rig: Rig, broker: Any, site: str, payloads: list[bytes], wait_for_async: Any) -> None:
    """Publish retained lists (as the replicas do) and wait until the notifier took the last one."""
    retain(broker, site, *payloads)
    last = msgspec.json.decode(payloads[-1])["evaluated_at"]
    want = int(dt.datetime.fromisoformat(last).timestamp() * 1000)

    def taken() -> bool:
        state = rig.outbox.state(site)
        return state is not None and state.last_evaluated_ms >= want

    await wait_for_async(taken, what=f"the notifier took the list of {last}")


async def test_two_replicas_same_list_one_message_per_transition_and_resolved_once(
        rig: Rig, broker: Any, receiver: Receiver, smtp: tuple[Mailbox, int], unique_id: str,
        wait_for_async: Any) -> None:
    site = unique_id.replace("_", "-")
    box, port = smtp
    rig.notifier.senders.settings = msgspec.structs.replace(
        rig.settings, notify_smtp_host="127.0.0.1", notify_smtp_port=port, notify_smtp_security="none")
    await follow(rig, site, hook(receiver), Canal(nome="mail", tipo="email", destino="ana@example.com"))
    try:
        one = ("00000000000000a1", "offline", "critico")
        # replica A evaluates at T0, replica B 5 s later; A's copy arrives again (QoS 1 duplicate)
        await publish(rig, broker, site, [alert_list(site, T0, one), alert_list(site, T0 + 5000, one),
                                          alert_list(site, T0, one)], wait_for_async)
        await rig.cycle()
        await rig.cycle()
        assert [b["evento"] for b in receiver.bodies] == ["alerta"]
        assert len(box.messages) == 1 and "ALERTA CRÍTICO" in box.messages[0]["Subject"]
        assert box.messages[0]["X-CDS-Delivery"].endswith("/ana/mail")
        # gone from A's list, still in an older-evaluated copy: ignored; gone for a whole interval: resolved
        await publish(rig, broker, site, [alert_list(site, T0 + 60_000), alert_list(site, T0 + 30_000, one),
                                          alert_list(site, T0 + 65_000)], wait_for_async)
        await rig.cycle()
        assert [b["evento"] for b in receiver.bodies] == ["alerta"]
        await publish(rig, broker, site, [alert_list(site, T0 + 120_000)], wait_for_async)
        await rig.cycle()
        assert [b["evento"] for b in receiver.bodies] == ["alerta", "resolvido"]
        assert len(box.messages) == 2 and box.messages[1]["Subject"].startswith("[CDS] Resolvido")
        assert receiver.bad_signatures == 0 and len(set(receiver.ids())) == 2
        seen = await rig.records.recent("ana")
        assert sorted((d.evento, d.tipo_canal, d.situacao) for d in seen) == [
            ("alerta", "email", "entregue"), ("alerta", "webhook", "entregue"),
            ("resolvido", "email", "entregue"), ("resolvido", "webhook", "entregue")]
    finally:
        clear(broker, site)


async def test_receiver_down_is_retried_with_backoff_counted_visible_then_delivered(
        rig: Rig, broker: Any, receiver: Receiver, unique_id: str, wait_for_async: Any) -> None:
    site = unique_id.replace("_", "-")
    await follow(rig, site, hook(receiver))
    receiver.status = 503
    try:
        await publish(rig, broker, site, [alert_list(site, T0, ("00000000000000a1", "tensao", "aviso"))],
                      wait_for_async)
        await rig.cycle()
        (row,) = rig.outbox.dirty() or [r for r in rig.outbox.due(10**15, 10)]
        assert row.attempts == 1 and row.status == "pendente"
        assert row.next_ms == T0 + 15_000  # base 30 s, jitter 0: half of it
        failed = rig.notifier.metrics.deliveries.labels("webhook", "retried")._value.get()
        assert failed == 1
        (seen,) = await rig.records.recent("ana")
        assert seen.situacao == "pendente" and "HTTP 503" in seen.ultimo_erro and seen.tentativas == 1

        rig.clock.ms = T0 + 10_000  # not due yet
        await rig.cycle()
        assert rig.outbox.get(row.id).attempts == 1  # type: ignore[union-attr]
        rig.clock.ms = T0 + 15_000
        await rig.cycle()
        again = rig.outbox.get(row.id)
        assert again is not None and again.attempts == 2 and again.next_ms == T0 + 15_000 + 30_000
        receiver.status = 200
        rig.clock.ms = T0 + 45_000
        await rig.cycle()
        assert [b["evento"] for b in receiver.bodies] == ["alerta"]
        assert rig.notifier.metrics.deliveries.labels("webhook", "delivered")._value.get() == 1
        (seen,) = await rig.records.recent("ana")
        assert seen.situacao == "entregue" and seen.tentativas == 3
    finally:
        clear(broker, site)


async def test_quiet_hours_hold_a_warning_until_they_end_and_let_a_critical_through(
        rig: Rig, broker: Any, receiver: Receiver, unique_id: str, wait_for_async: Any) -> None:
    site = unique_id.replace("_", "-")
    await rig.prefs.put("ana", Preferencias(canais=[hook(receiver)], sites=[RegraSite(site=site)],
                                            silencio=Silencio(inicio="11:00", fim="13:00")), T0)
    await rig.notifier.refresh()
    try:
        await publish(rig, broker, site, [alert_list(site, T0, ("00000000000000a1", "tensao", "aviso"),
                                                     ("00000000000000a2", "offline", "critico"))], wait_for_async)
        await rig.cycle()
        assert [b["alerta"]["kind"] for b in receiver.bodies] == ["offline"]
        rig.clock.ms = T0 + 3_600_000 - 1  # 12:59:59.999
        await rig.cycle()
        assert len(receiver.bodies) == 1
        rig.clock.ms = T0 + 3_600_000  # 13:00
        await rig.cycle()
        assert [b["alerta"]["kind"] for b in receiver.bodies] == ["offline", "tensao"]
    finally:
        clear(broker, site)


async def test_smtp_server_down_is_retried_then_the_mail_delivered_once(
        rig: Rig, broker: Any, unique_id: str, wait_for_async: Any) -> None:
    """No SMTP server listens on the configured port (connection refused): the e-mail is retried with backoff,
    and delivered once when a server answers there."""
    site = unique_id.replace("_", "-")
    port = free_port()
    rig.notifier.senders.settings = msgspec.structs.replace(
        rig.settings, notify_smtp_host=HOST, notify_smtp_port=port, notify_smtp_security="none")
    await follow(rig, site, Canal(nome="mail", tipo="email", destino="ana@example.com"))
    box = Mailbox()
    server = Controller(box, hostname=HOST, port=port)
    try:
        await publish(rig, broker, site, [alert_list(site, T0, ("00000000000000a1", "offline", "critico"))],
                      wait_for_async)
        await rig.cycle()
        (seen,) = await rig.records.recent("ana")
        assert seen.situacao == "pendente" and seen.tentativas == 1 and seen.ultimo_erro.startswith("SMTP")
        assert rig.notifier.metrics.deliveries.labels("email", "retried")._value.get() == 1
        server.start()
        rig.clock.ms = T0 + 15_000
        await rig.cycle()
        await rig.cycle()
        assert len(box.messages) == 1 and box.messages[0]["X-CDS-Delivery"] == seen.id
        (seen,) = await rig.records.recent("ana")
        assert seen.situacao == "entregue" and seen.tentativas == 2
    finally:
        server.stop(no_assert=True)
        clear(broker, site)
