"""Friendly names of meters against the real InfluxDB and app (two replicas, two sites, the tenancy test's
fixtures): an operator of the site names a meter, a viewer of the site sees the name on the dashboard's live strip
(on the other replica too, within ``accounts_refresh_s``), a viewer may not name it (403), another site's operator
gets the 404 of a meter that does not exist, and every change is in the audit log."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.backend.test_tenancy import DEV_A, SITE_A, SITE_B, admin, create_user, fake, replicas  # noqa: F401

pytestmark = [pytest.mark.services, pytest.mark.asyncio]


def _meter(agora: dict[str, Any], device: str) -> dict[str, Any]:
    (meter,) = [m for s in agora["sites"] for m in s["medidores"] if m["device"] == device]
    return meter


async def test_operator_names_a_meter_viewer_sees_it_cannot_set_it_other_site_gets_404(
    replicas: tuple[AsyncTestClient[Any], AsyncTestClient[Any]], wait_for_async: Any,  # noqa: F811
) -> None:
    c1, c2 = replicas
    operator = await create_user(c1, "olga", {SITE_A: "operator"})
    viewer = await create_user(c1, "vitor", {SITE_A: "viewer", SITE_B: "operator"})
    stranger = await create_user(c1, "bruno", {SITE_B: "operator"})

    before = (await c1.get("/api/v1/painel/agora", headers=viewer)).json()
    assert _meter(before, DEV_A)["nome"] == "cozinha" and _meter(before, DEV_A)["nome_dado"] is None

    r = await c1.put(f"/api/v1/medidores/{DEV_A}/nome", headers=operator, json={"nome": "  Geladeira   da  cozinha "})
    assert r.status_code == 200, r.text
    assert r.json()["nome"] == "Geladeira da cozinha" and r.json()["site"] == SITE_A
    assert r.json()["alterado_por"] == "olga"

    seen = (await c1.get("/api/v1/painel/agora", headers=viewer)).json()
    assert _meter(seen, DEV_A)["nome"] == "Geladeira da cozinha"
    assert _meter(seen, DEV_A)["nome_dado"] == "Geladeira da cozinha"

    async def other_replica_sees_it() -> bool:
        agora = (await c2.get("/api/v1/painel/agora", headers=viewer)).json()
        return bool(_meter(agora, DEV_A)["nome"] == "Geladeira da cozinha")

    await wait_for_async(other_replica_sees_it, timeout=10, what="the name on the other replica")

    r = await c1.put(f"/api/v1/medidores/{DEV_A}/nome", headers=viewer, json={"nome": "Chuveiro"})
    assert r.status_code == 403, r.text  # sees the site, does not operate it
    r = await c1.put(f"/api/v1/medidores/{DEV_A}/nome", headers=stranger, json={"nome": "Chuveiro"})
    assert r.status_code == 404 and r.json()["detail"] == f"Medidor {DEV_A} desconhecido.", r.text
    r = await c1.put("/api/v1/medidores/00000000000000ee/nome", headers=operator, json={"nome": "x"})
    assert r.status_code == 404 and r.json()["detail"] == "Medidor 00000000000000ee desconhecido."
    assert (await c1.put(f"/api/v1/medidores/{DEV_A}/nome", headers=operator,
                         json={"nome": "x" * 41})).status_code == 400
    assert (await c1.put(f"/api/v1/medidores/{DEV_A}/nome", headers=operator,
                         json={"nome": "a", "extra": 1})).status_code == 400
    assert (await c1.get("/api/v1/painel/agora", headers=stranger)).json()["sites"][0]["site"] == SITE_B

    r = await c1.put(f"/api/v1/medidores/{DEV_A}/nome", headers=operator, json={"nome": ""})
    assert r.status_code == 200 and r.json()["nome"] == ""
    back = (await c1.get("/api/v1/painel/agora", headers=viewer)).json()
    assert _meter(back, DEV_A)["nome"] == "cozinha" and _meter(back, DEV_A)["nome_dado"] is None

    log = (await c1.get("/api/v1/admin/auditoria", headers=admin(c1), params={"usuario": "olga"})).json()
    named = [e for e in log if e["acao"] == "nomear_medidor"]
    assert [(e["resultado"], e["alvo"]) for e in named] == [("ok", DEV_A), ("falha", DEV_A), ("ok", DEV_A)]
    assert "Geladeira da cozinha" in named[-1]["detalhe"]
