"""The sans-IO core: transitions, routing and quiet hours, the retry schedule, rendering (every alert kind the
analytics publish), signatures, secrets, the budget alert."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import msgspec
import pytest

from backend.analytics.alert_rules import AlertList, check_bandeira, check_gateway_queue, check_stale
from backend.notify.budget import CycleProjection, budget_alert, project_bill
from backend.notify.channels import sign
from backend.notify.outbox import retry_delay_ms
from backend.notify.preferences import Canal, Preferencias, RegraSite, Silencio, keep_secrets
from backend.notify.render import render
from backend.notify.routing import route
from backend.notify.transitions import AlertIn, parse_list, step
from protocol.mqtt import GatewayStatus
from protocol.timebase import TZ
from tests.analytics.test_billing_month import SITES, books

A = AlertIn(id="s:d:offline", site="s", device="d", kind="offline", severity="critico", message="sem comunicação")
W = AlertIn(id="s:d:tensao", site="s", device="d", kind="tensao", severity="aviso", message="tensão precária")
NOON = int(dt.datetime(2026, 5, 5, 12, 0, tzinfo=TZ).timestamp() * 1000)


def test_open_once_ignore_older_copies_resolve_after_a_whole_interval() -> None:
    s, ev = step(None, [A], 1000, 60_000)
    assert [e.type for e in ev] == ["alerta"]
    s2, ev = step(s, [A], 1000, 60_000)  # the other replica's copy of the same evaluation
    assert ev == [] and s2 is s
    s, ev = step(s, [A], 6000, 60_000)
    assert ev == [] and s.open[A.id].opened_ms == 1000
    s, ev = step(s, [], 61_000, 60_000)  # missing once: not yet
    assert ev == [] and s.open[A.id].missing_since_ms == 61_000
    s, ev = step(s, [A], 70_000, 60_000)  # back: no event, not missing any more
    assert ev == [] and s.open[A.id].missing_since_ms is None
    s, ev = step(s, [], 80_000, 60_000)
    s, ev = step(s, [], 140_000, 60_000)
    assert [(e.type, e.opened_ms) for e in ev] == [("resolvido", 1000)] and s.open == {}
    assert ev[0].id == "s:d:offline@1000:resolvido"


def prefs(**rule: object) -> dict[str, Preferencias]:
    return {"ana": Preferencias(canais=[Canal(nome="n", tipo="ntfy", destino="t")],
                                sites=[RegraSite(site="s", **rule)],  # type: ignore[arg-type]
                                silencio=Silencio(inicio="22:00", fim="07:00"))}


def test_route_by_kind_severity_and_tenancy_with_quiet_hours_over_midnight() -> None:
    _, (alerta,) = step(None, [W], NOON, 0)
    assert len(route(alerta, prefs(), lambda u, s: True, NOON)) == 1
    assert route(alerta, prefs(tipos=["offline"]), lambda u, s: True, NOON) == []
    assert route(alerta, prefs(severidade_minima="critico"), lambda u, s: True, NOON) == []
    assert route(alerta, prefs(), lambda u, s: False, NOON) == []
    night = NOON + 11 * 3_600_000  # 23:00
    (held,) = route(alerta, prefs(), lambda u, s: True, night)
    assert dt.datetime.fromtimestamp(held.due_ms / 1000, TZ) == dt.datetime(2026, 5, 6, 7, 0, tzinfo=TZ)
    _, (critical,) = step(None, [A], night, 0)
    (now,) = route(critical, prefs(), lambda u, s: True, night)
    assert now.due_ms == night


@pytest.mark.parametrize(("attempt", "rand", "want"), [(1, 0.0, 15_000), (1, 0.999999, 29_999), (2, 0.0, 30_000),
                                                      (5, 0.5, 360_000), (40, 0.0, 300_000)])
def test_retry_delay_doubles_with_jitter_and_a_cap(attempt: int, rand: float, want: int) -> None:
    assert retry_delay_ms(attempt, 30_000, 600_000, rand) == want


def test_render_pt_br_and_signature() -> None:
    s, (opened,) = step(None, [W], NOON, 0)
    msg = render(opened)
    assert msg.subject.startswith("[CDS] Alerta em s: Tensão") and "05/05/2026 às 12:00" in msg.body
    _, (resolved,) = step(s, [], NOON + 90 * 60_000, 0)
    assert "após 1 h 30 min" in render(resolved).body
    assert sign("k" * 16, b"{}") == "sha256=" + __import__("hmac").new(b"k" * 16, b"{}", "sha256").hexdigest()


def test_webhook_secret_kept_for_the_same_url_generated_once_otherwise() -> None:
    old = Preferencias(canais=[Canal(nome="h", tipo="webhook", destino="https://a/x", segredo="x" * 20)])
    same, generated = keep_secrets(Preferencias(canais=[Canal(nome="h", tipo="webhook", destino="https://a/x")]),
                                   old, lambda: "new")
    assert same.canais[0].segredo == "x" * 20 and generated == {}
    moved, generated = keep_secrets(Preferencias(canais=[Canal(nome="h", tipo="webhook", destino="https://b/x")]),
                                    old, lambda: "new")
    assert moved.canais[0].segredo == "new" and generated == {"h": "new"}


def test_budget_alert_when_projected_bill_exceeds_the_budget() -> None:
    tariffs, flags = books()
    cfg = SITES["casa-rio"]
    today = dt.date(2026, 5, 1)
    history: list[float | None] = [14.0] * 28
    total = project_bill(cfg, today, {"Fora ponta": 200.0}, 5.0, history, tariffs, flags)
    assert Decimal(300) < total < Decimal(600)  # 200 kWh so far + ~14 kWh/day to the 15th, Light's prices
    c0, c1 = cfg.cycle_for(today)
    projection = CycleProjection(site="casa-rio", cycle_start=c0, cycle_end=c1, projected_rs=total)
    alert = budget_alert("casa-rio", "ana", projection, Decimal(250))
    assert alert is not None and alert.kind == "orcamento" and "R$ 250,00" in alert.message
    assert budget_alert("casa-rio", "ana", projection, total) is None
    s, (opened,) = step(None, [alert], 1, 0, user="ana")
    assert opened.user == "ana"
    _, (closed,) = step(s, [], 2, 0, user="ana")
    assert closed.type == "resolvido"


def test_gateway_stale_data_and_bandeira_alerts_read_from_a_published_list_and_rendered_in_pt_br() -> None:
    _, flags = books()
    status = GatewayStatus(online=True, gateway="gw1", site="s", queued=1200, oldest_queued_ms=3 * 3_600_000,
                           ts=NOON)
    made = [check_gateway_queue("s", "gw1", status, [], age_s=900, critical_s=7200, rows=5000, window_s=1800),
            check_stale("s", "aneel", NOON - 3 * 86_400_000, True, NOON, 86_400),
            check_bandeira("s", flags, dt.date(2026, 4, 28))]  # May's Amarela published, April is Verde
    alerts = [a for a in made if a is not None]
    assert [a.kind for a in alerts] == ["fila_gateway", "dados_desatualizados", "bandeira"]
    when = dt.datetime.fromtimestamp(NOON / 1000, TZ).isoformat()
    lst, at = parse_list("cds/v1/s/alerts", msgspec.json.encode(AlertList(site="s", evaluated_at=when,
                                                                           alerts=alerts)))
    assert [(a.kind, a.device, a.gateway) for a in lst.alerts] == [
        ("fila_gateway", "", "gw1"), ("dados_desatualizados", "", ""), ("bandeira", "", "")]
    _, events = step(None, lst.alerts, at, 0)
    msgs = {e.alert.kind: render(e) for e in events}
    queue = msgs["fila_gateway"]
    assert queue.subject == "[CDS] ALERTA CRÍTICO em s: Gateway com leituras represadas"
    assert "\nGateway: gw1\n" in queue.body and "Medidor" not in queue.body
    assert queue.body.startswith("Fila do gateway gw1: 1.200 leitura(s)") and "Valor medido: 1.200" in queue.body
    stale = msgs["dados_desatualizados"]
    assert stale.subject == "[CDS] Alerta em s: Dados de tarifas ou da rede desatualizados"
    assert stale.body.startswith("Tarifas e bandeiras da ANEEL sem atualização há 3 dias")
    flag = msgs["bandeira"]
    assert flag.subject == "[CDS] Alerta em s: Mudança de bandeira tarifária"
    assert flag.body.startswith("Bandeira tarifária de 05/2026: amarela") and "Gateway" not in flag.body
