"""Tenant isolation against the real InfluxDB and app: two sites, users bound to one of them through the admin API,
and every read or write that touches the other site answering exactly as if that site did not exist (404).

Also: admins and bootstrap users see both sites; operators act on their own site only; a disabled user's token
and a revoked grant stop working on another replica within ``accounts_refresh_s``; logins (good and bad) and
admin actions are in the audit log with who, what, when, from where and the outcome.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from backend.accounts.audit import AuditLog
from backend.accounts.passwords import hash_password
from backend.accounts.store import AccountStore, Actor
from backend.api.app import create_app
from backend.errors import BadRequestError
from backend.settings import Settings, User
from backend.store.influx import InfluxClient
from backend.store.layout import ACCOUNT_GRANT, ensure_schema
from backend.store.lineprotocol import reading_line
from backend.store.readings import ReadingStore
from backend.store.rollups import RollupWorker
from devstack.aneel_fake import FakeCkan
from protocol.mqtt import Reading
from tests.backend.conftest import JWT_SECRET, batch_bytes, reading

SITE_A, SITE_B, SITE_NONE = "casa-a", "casa-b", "casa-z"
DEV_A, DEV_B, DEV_NONE = "00000000000000a1", "00000000000000b1", "00000000000000ff"
BOOT_USER, BOOT_PASSWORD = "boot", "senha-da-configuracao"
REFRESH_S = 0.5


def sites_toml() -> str:
    site = """
[[site]]
id = "{id}"
name = "{name}"
distributor = "LIGHT SESA"
subgroup = "B1"
modality = "Convencional"
icms = "0.24"
pis = "0.0123"
cofins = "0.0567"
devices = ["{dev}"]
[site.groups]
cozinha = ["{dev}"]
"""
    return site.format(id=SITE_A, name="Casa A", dev=DEV_A) + site.format(id=SITE_B, name="Casa B", dev=DEV_B)


async def load_readings(settings: Settings) -> None:
    """Half an hour of readings per meter, ending now (so the fleet views count them as recent)."""
    async with InfluxClient(settings.influx_url) as influx:
        await ensure_schema(influx, settings)
        now = int(time.time() * 1000)
        lines, spans = [], {}
        for site, dev in ((SITE_A, DEV_A), (SITE_B, DEV_B)):
            ts = [now - 1_800_000 + i * 60_000 for i in range(30)]
            lines += [reading_line(site, "gw1", Reading(device=dev, boot=1, seq=i, ts=t, vrms=127.0, irms=1.0, p=500.0,
                                                        s=520.0, pf=0.96, freq=60.0, energy_mwh=10_000 + i * 8_000))
                      for i, t in enumerate(ts)]
            spans[dev] = (ts[0], ts[-1])
        await ReadingStore(influx, settings).write(lines, spans)
        await RollupWorker(influx, settings).run_once(now_ns=(int(time.time()) + 120) * 10**9)


@pytest.fixture
def fake() -> Iterator[FakeCkan]:
    server = FakeCkan().start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def replicas(broker: Any, influx: Any, fake: FakeCkan, unique_id: str, tmp_path: Path,
                   wait_for_async: Any) -> AsyncIterator[tuple[AsyncTestClient[Any], AsyncTestClient[Any]]]:
    """Two replicas of the app on one InfluxDB (the readings' database and the accounts database)."""
    sites = tmp_path / "sites.toml"
    sites.write_text(sites_toml(), encoding="utf-8")
    settings = Settings(mqtt_host=broker.host, mqtt_port=broker.port, influx_url=influx.url, influx_db=unique_id,
                        jwt_secret=JWT_SECRET, ingest_enabled=False, rollup_enabled=False, log_level="WARNING",
                        sites_file=str(sites), aneel_base_url=fake.url, aneel_backoff_max_s=0.05,
                        alerts_enabled=False, ons_sync_enabled=False, accounts_refresh_s=REFRESH_S,
                        users=(User(BOOT_USER, "viewer", hash_password(BOOT_PASSWORD)),))
    await load_readings(settings)
    one, two = create_app(settings), create_app(settings)
    async with AsyncTestClient(one) as c1, AsyncTestClient(two) as c2:
        svc = one.state.services.analytics
        await wait_for_async(lambda: svc.scheduler.last_report is not None and svc.scheduler.last_report.ok,
                             timeout=20, what="first ANEEL sync")
        yield c1, c2
    async with InfluxClient(influx.url) as c:
        for db in (unique_id, settings.resolved_accounts_db()):
            await c.execute(f'DROP DATABASE "{db}"', epoch=None)


def admin(client: AsyncTestClient[Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.app.state.authenticator.issue('root', 'admin')}"}


async def login(client: AsyncTestClient[Any], user: str, password: str) -> dict[str, str]:
    r = await client.post("/api/v1/auth/token", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def create_user(client: AsyncTestClient[Any], user: str, sites: dict[str, str]) -> dict[str, str]:
    r = await client.post("/api/v1/admin/usuarios", headers=admin(client),
                          json={"usuario": user, "senha": f"senha-de-{user}", "sites": sites})
    assert r.status_code == 201, r.text
    assert r.json()["usuario"]["sites"] == sites and r.json()["senha_gerada"] is None
    return await login(client, user, f"senha-de-{user}")


def b_requests(site: str, dev: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every read that names site ``site`` or its meter ``dev`` (method, path, params or JSON body)."""
    ana = "/api/v1/analytics"
    return [
        ("GET", "/api/v1/gateways", {"site": site}),
        ("GET", "/api/v1/devices", {"site": site}),
        ("GET", f"/api/v1/devices/{dev}", {}),
        ("GET", f"/api/v1/devices/{dev}/readings", {}),
        ("GET", f"/api/v1/devices/{dev}/readings", {"resolution": "1m"}),
        ("GET", "/api/v1/aicss/status", {"device": dev}),
        ("GET", f"{ana}/consumo", {"site": site}),
        ("GET", f"{ana}/consumo", {"site": site, "granularidade": "day"}),
        ("GET", f"{ana}/consumo", {"site": site, "grupo": "cozinha"}),
        ("GET", f"{ana}/consumo", {"device": dev}),
        ("GET", f"{ana}/consumo", {"site": SITE_A, "device": dev}),
        ("GET", f"{ana}/consumo", {"site": site, "device": DEV_A}),
        ("GET", f"{ana}/custo", {"site": site}),
        ("GET", f"{ana}/tarifa-branca", {"site": site}),
        ("GET", f"{ana}/previsao", {"site": site}),
        ("GET", f"{ana}/previsao", {"device": dev}),
        ("GET", f"{ana}/relatorios", {"site": site}),
        ("GET", f"{ana}/relatorios", {"site": site, "formato": "csv"}),
        ("GET", f"{ana}/relatorios", {"device": dev, "formato": "csv", "tipo": "mensal"}),
        ("GET", f"{ana}/relatorios", {"site": site, "grupo": "cozinha", "formato": "csv"}),
        ("GET", f"{ana}/renovavel", {"site": site}),
        ("GET", f"{ana}/alertas", {"site": site}),
        ("POST", "/api/v1/perguntas", {"pergunta": "quanto consumi ontem?", "site": site}),
        ("POST", "/api/v1/perguntas", {"pergunta": "quais alertas?", "site": site}),
    ]


async def send(client: AsyncTestClient[Any], method: str, path: str, args: dict[str, Any],
               headers: dict[str, str]) -> Any:
    if method == "GET":
        return await client.get(path, params=args, headers=headers)
    return await client.post(path, json=args, headers=headers)


@pytest.mark.asyncio
async def test_viewer_of_a_gets_404_for_everything_of_b_as_for_a_site_that_does_not_exist(
        replicas: tuple[AsyncTestClient[Any], AsyncTestClient[Any]]) -> None:
    client, _ = replicas
    vera = await create_user(client, "vera", {SITE_A: "viewer"})
    for (method, path, args), (_, path_none, args_none) in zip(b_requests(SITE_B, DEV_B),
                                                                b_requests(SITE_NONE, DEV_NONE), strict=True):
        r = await send(client, method, path, args, vera)
        assert r.status_code == 404, (path, args, r.status_code, r.text)
        assert SITE_B not in r.text.replace(f"'{SITE_B}'", "") and "Casa B" not in r.text, (path, args, r.text)
        nobody = await send(client, method, path_none, args_none, vera)  # a site that does not exist at all
        assert (nobody.status_code, nobody.json()["detail"]) == (
            404, r.json()["detail"].replace(SITE_B, SITE_NONE).replace(DEV_B, DEV_NONE)), (path, args)
        # the admin sees site B: the 404 above is the rule, not a missing site
        seen = await send(client, method, path, args, admin(client))
        assert seen.status_code != 404 or path.endswith("/gateways") or "status" in path, (path, args, seen.text)

    # A question naming B's meter in its text: answered like one about a meter nobody knows, with none of B's data.
    q = "quanto consumiu o medidor {} ontem?"
    r = await client.post("/api/v1/perguntas", json={"pergunta": q.format(DEV_B)}, headers=vera)
    unknown = await client.post("/api/v1/perguntas", json={"pergunta": q.format(DEV_NONE)}, headers=vera)
    assert r.status_code == unknown.status_code
    assert r.json()["resposta"].replace(DEV_B, DEV_NONE) == unknown.json()["resposta"]
    assert r.json()["disponivel"] is False and not r.json()["valores"]
    # B's name is not in the caller's vocabulary: "casa b" is an unknown word, not a site
    r = await client.post("/api/v1/perguntas", json={"pergunta": "quanto consumiu a Casa B ontem?"}, headers=vera)
    assert "Casa B" not in r.json()["resposta"] and r.json()["interpretacao"]["escopo"]["site"] in (None, SITE_A)


@pytest.mark.asyncio
async def test_lists_show_a_viewer_only_their_site_and_an_admin_both(
        replicas: tuple[AsyncTestClient[Any], AsyncTestClient[Any]]) -> None:
    client, _ = replicas
    vera = await create_user(client, "vera", {SITE_A: "viewer"})
    boot = await login(client, BOOT_USER, BOOT_PASSWORD)
    for headers, sites, devices in ((vera, [SITE_A], [DEV_A]), (admin(client), [SITE_A, SITE_B], [DEV_A, DEV_B]),
                                    (boot, [SITE_A, SITE_B], [DEV_A, DEV_B])):
        r = await client.get("/api/v1/sites", headers=headers)
        assert r.status_code == 200 and [s["site"] for s in r.json()] == sites, r.text
        r = await client.get("/api/v1/analytics/sites", headers=headers)
        assert [s["id"] for s in r.json()] == sites
        r = await client.get("/api/v1/devices", headers=headers)
        assert [d["device"] for d in r.json()] == devices
        r = await client.get("/api/v1/aicss/status", headers=headers)
        assert [d["device"] for d in r.json()["items"]] == devices
        r = await client.get("/api/v1/analytics/alertas", headers=headers)
        assert r.status_code == 200 and [a["site"] for a in r.json()] == sites, r.text
        r = await client.get("/api/v1/gateways", headers=headers)
        assert r.status_code == 200 and all(g["site"] in sites for g in r.json())
        r = await client.post("/api/v1/perguntas", json={"pergunta": "quais medidores?"}, headers=headers)
        assert r.status_code == 200 and (DEV_B in r.json()["resposta"]) == (SITE_B in sites), r.text
    # their own site answers with data, including the CSV report and the meter's readings
    r = await client.get("/api/v1/analytics/consumo", params={"site": SITE_A}, headers=vera)
    assert r.status_code == 200 and r.json()["kwh_total"] > 0, r.text
    r = await client.get("/api/v1/analytics/relatorios", params={"site": SITE_A, "formato": "csv"}, headers=vera)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    r = await client.get(f"/api/v1/devices/{DEV_A}/readings", headers=vera)
    assert r.status_code == 200 and r.json()["count"] == 30
    r = await client.get(f"/api/v1/devices/{DEV_B}/readings", headers=admin(client))
    assert r.status_code == 200 and r.json()["count"] == 30
    r = await client.get("/api/v1/analytics/custo", params={"site": SITE_A}, headers=vera)
    assert r.status_code == 200, r.text
    # public data for any authenticated user; admin endpoints for global admins only
    assert (await client.get("/api/v1/aneel/bandeiras", headers=vera)).status_code == 200
    assert (await client.get("/api/v1/conhecimento", params={"q": "bandeira"}, headers=vera)).status_code == 200
    assert (await client.get("/api/v1/ons/cmo", headers=vera)).status_code != 403
    for method, path, body in (("GET", "/api/v1/admin/usuarios", None), ("GET", "/api/v1/admin/auditoria", None),
                               ("POST", "/api/v1/consultas/influxql", {"consulta": "SHOW MEASUREMENTS"}),
                               ("POST", "/api/v1/aneel/sync", {}), ("POST", "/api/v1/ons/sync", {})):
        r = await client.request(method, path, json=body, headers=vera)
        assert r.status_code == 403, (path, r.text)


@pytest.mark.asyncio
async def test_operator_of_a_cannot_post_readings_or_configure_meters_of_b(
        replicas: tuple[AsyncTestClient[Any], AsyncTestClient[Any]]) -> None:
    client, _ = replicas
    otto = await create_user(client, "otto", {SITE_A: "operator"})
    vera = await create_user(client, "vera", {SITE_A: "viewer", SITE_B: "viewer"})
    now = int(time.time() * 1000)
    post = "/api/v1/aicss/dados"
    body_b = batch_bytes(SITE_B, "gw1", [reading(DEV_B, 1000, now)])
    r = await client.post(post, content=body_b, headers=otto)
    assert r.status_code == 404 and SITE_B not in r.json()["detail"].replace(f"'{SITE_B}'", ""), r.text
    r = await client.post(post, content=batch_bytes(SITE_A, "gw1", [reading(DEV_B, 1001, now)]), headers=otto)
    assert r.status_code == 404, r.text  # B's meter smuggled under site A
    r = await client.post(post, content=batch_bytes(SITE_A, "gw1", [reading(DEV_A, 1002, now)]), headers=otto)
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    r = await client.post(post, content=batch_bytes(SITE_B, "gw1", [reading(DEV_B, 1003, now)]), headers=vera)
    assert r.status_code == 403  # a viewer everywhere: no operator role anywhere
    for body in ({"device": DEV_B, "report_period_ms": 1000},
                 {"device": DEV_B, "report_period_ms": 1000, "site": SITE_B, "gateway": "gw1"},
                 {"device": DEV_B, "report_period_ms": 1000, "site": SITE_A, "gateway": "gw1"},
                 {"device": DEV_A, "report_period_ms": 1000, "site": SITE_B, "gateway": "gw1"}):
        r = await client.put("/api/v1/aicss/config", json=body, headers=otto)
        assert r.status_code == 404, (body, r.text)
    r = await client.put("/api/v1/aicss/config", json={"device": DEV_A, "report_period_ms": 1000, "site": SITE_A,
                                                       "gateway": "gw1"}, headers=otto)
    assert r.status_code == 503, r.text  # allowed; this replica runs no MQTT ingest to send it
    assert (await client.post(post, content=body_b, headers=admin(client))).status_code == 200


@pytest.mark.asyncio
async def test_disabled_user_and_revoked_grant_stop_working_on_another_replica_within_the_refresh(
        replicas: tuple[AsyncTestClient[Any], AsyncTestClient[Any]], wait_for_async: Any) -> None:
    one, two = replicas
    vera = await create_user(one, "vera", {SITE_A: "viewer", SITE_B: "viewer"})
    consumo_b = ("/api/v1/analytics/consumo", {"site": SITE_B})
    assert (await two.get(consumo_b[0], params=consumo_b[1], headers=vera)).status_code == 200
    r = await one.delete(f"/api/v1/admin/usuarios/vera/sites/{SITE_B}", headers=admin(one))
    assert r.status_code == 200 and r.json()["sites"] == {SITE_A: "viewer"}
    assert (await one.get(consumo_b[0], params=consumo_b[1], headers=vera)).status_code == 404  # at once here
    t0 = time.monotonic()

    async def refused_b() -> bool:
        return (await two.get(consumo_b[0], params=consumo_b[1], headers=vera)).status_code == 404

    await wait_for_async(refused_b, timeout=REFRESH_S * 4, what="revoked grant refused on the other replica")
    assert time.monotonic() - t0 <= REFRESH_S * 4
    assert (await two.get("/api/v1/analytics/consumo", params={"site": SITE_A}, headers=vera)).status_code == 200

    r = await one.post("/api/v1/admin/usuarios/vera/desativar", headers=admin(one))
    assert r.status_code == 200 and r.json()["desativado"] is True
    assert (await one.get("/api/v1/sites", headers=vera)).status_code == 401

    async def refused() -> bool:
        return (await two.get("/api/v1/sites", headers=vera)).status_code == 401

    await wait_for_async(refused, timeout=REFRESH_S * 4, what="disabled user's token refused on the other replica")
    r = await two.post("/api/v1/auth/token", json={"username": "vera", "password": "senha-de-vera"})
    assert r.status_code == 401 and r.json()["detail"] == "Usuário ou senha incorretos."
    assert (await one.post("/api/v1/admin/usuarios/vera/ativar", headers=admin(one))).status_code == 200
    assert (await one.get("/api/v1/sites", headers=vera)).status_code == 200


@pytest.mark.asyncio
async def test_admin_endpoints_generated_password_validation_and_audit_log(
        replicas: tuple[AsyncTestClient[Any], AsyncTestClient[Any]]) -> None:
    client, _ = replicas
    h = admin(client)
    r = await client.post("/api/v1/admin/usuarios", headers=h, json={"usuario": "gil", "perfil": "admin"})
    assert r.status_code == 201 and r.json()["usuario"]["perfil"] == "admin", r.text
    generated = r.json()["senha_gerada"]
    assert generated and len(generated) >= 12
    gil = await login(client, "gil", generated)
    assert (await client.get("/api/v1/admin/usuarios", headers=gil)).status_code == 200  # a store admin
    r = await client.post("/api/v1/auth/token", json={"username": "gil", "password": "errada-de-proposito"})
    assert r.status_code == 401
    r = await client.post("/api/v1/admin/usuarios/gil/senha", headers=gil, json={})
    new = r.json()["senha_gerada"]
    assert r.status_code == 200 and new and new != generated
    await login(client, "gil", new)

    for body, status, text in (({"usuario": "Zé Ninguém"}, 400, "Nome de usuário inválido"),
                               ({"usuario": "curta", "senha": "123"}, 400, "A senha deve ter"),
                               ({"usuario": "gil"}, 409, "já existe"),
                               ({"usuario": BOOT_USER}, 409, "já existe"),
                               ({"usuario": "ivo", "sites": {SITE_A: "dono"}}, 400, "'viewer' ou 'operator'"),
                               ({"usuario": "ivo", "sites": {"Casa A!": "viewer"}}, 400, "site inválido"),
                               ({"usuario": "ivo", "perfil": "admin", "sites": {SITE_A: "viewer"}}, 400, "sites"),
                               ({"usuario": "ivo", "perfil": "root"}, 400, "")):
        r = await client.post("/api/v1/admin/usuarios", headers=h, json=body)
        assert r.status_code == status and text in r.json()["detail"], (body, r.text)
    assert (await client.post(f"/api/v1/admin/usuarios/{BOOT_USER}/desativar", headers=h)).status_code == 409
    assert (await client.post("/api/v1/admin/usuarios/ninguem/desativar", headers=h)).status_code == 404
    assert (await client.delete(f"/api/v1/admin/usuarios/gil/sites/{SITE_A}", headers=h)).status_code == 404
    assert (await client.put(f"/api/v1/admin/usuarios/gil/sites/{SITE_A}", headers=h,
                             json={"perfil": "viewer"})).status_code == 409  # an admin sees every site already

    users = (await client.get("/api/v1/admin/usuarios", headers=h)).json()
    assert [(u["usuario"], u["origem"]) for u in users] == [(BOOT_USER, "configuracao"), ("gil", "cadastro")]
    assert "scrypt" not in str(users) and "hash" not in str(users)
    r = await client.post("/api/v1/consultas/influxql", headers=h, json={"consulta": "DROP DATABASE x"})
    assert r.status_code == 400

    r = await client.get("/api/v1/admin/auditoria", headers=h, params={"usuario": "gil"})
    assert r.status_code == 200, r.text
    entries = [(e["acao"], e["resultado"], e["usuario"]) for e in r.json()]
    assert ("criar_usuario", "ok", "root") in entries
    assert ("login", "ok", "gil") in entries and ("login", "falha", "gil") in entries
    assert ("redefinir_senha", "ok", "gil") in entries
    assert ("criar_usuario", "falha", "root") in entries  # "gil" twice
    assert ("desativar_usuario", "falha", "root") not in entries  # that was about another user
    times = [e["time_ms"] for e in r.json()]
    assert times == sorted(times, reverse=True)
    assert all(e["endereco"] for e in r.json())
    assert "senha" not in str(r.json()).replace("redefinir_senha", "").replace("senha incorretos", "")
    everything = (await client.get("/api/v1/admin/auditoria", headers=h, params={"limite": 1000})).json()
    actions = {(e["acao"], e["resultado"]) for e in everything}
    assert {("consulta_influxql", "falha"), ("desativar_usuario", "falha"), ("revogar_site", "falha"),
            ("conceder_site", "falha")} <= actions
    since = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    r = await client.get("/api/v1/admin/auditoria", headers=h, params={"inicio": since.isoformat()})
    assert r.status_code == 200 and r.json() == []
    r = await client.get("/api/v1/admin/auditoria", headers=h, params={"limite": 0})
    assert r.status_code == 400 and "limite" in r.json()["detail"]


@pytest.mark.asyncio
async def test_bootstrap_user_still_logs_in_and_tokens_of_global_roles_keep_working(
        replicas: tuple[AsyncTestClient[Any], AsyncTestClient[Any]]) -> None:
    client, _ = replicas
    boot = await login(client, BOOT_USER, BOOT_PASSWORD)
    r = await client.get("/api/v1/analytics/consumo", params={"site": SITE_B}, headers=boot)
    assert r.status_code == 200
    assert (await client.get("/api/v1/admin/usuarios", headers=boot)).status_code == 403  # a viewer
    tool = {"Authorization": f"Bearer {client.app.state.authenticator.issue('ferramenta', 'operator')}"}
    assert (await client.get("/api/v1/devices", headers=tool)).status_code == 200


@pytest.mark.asyncio
async def test_a_change_written_during_a_reload_is_served_at_once_on_its_replica(
        influx: Any, unique_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An admin creates a user while another admin's password reset (refused: too short) is reloading the accounts:
    the reload read the users before the new one was written and finished after. Its copy must not count as fresh,
    or this replica would serve the new user (and so a revoked grant) late although the change was made here."""
    settings = Settings(influx_url=influx.url, influx_db=unique_id, jwt_secret=JWT_SECRET, accounts_refresh_s=3600)
    actor = Actor(username="admin", address="127.0.0.1")
    async with InfluxClient(settings.influx_url) as client:
        audit = AuditLog(client, settings)
        store = AccountStore(client, settings, audit)
        await store.ensure_schema()
        await store.create("otto", "senha-de-otto", admin=False, grants={SITE_A: "operator"}, actor=actor)
        writing, write, written = asyncio.Event(), asyncio.Event(), asyncio.Event()
        read, reload = asyncio.Event(), asyncio.Event()
        rows, write_lines = client.rows, client.write

        async def held_write(lines: Any, *args: Any, **kwargs: Any) -> None:
            nina = "nina" in str(lines)  # the new user's point and its audit entry
            if nina:
                writing.set()
                await write.wait()
            await write_lines(lines, *args, **kwargs)
            if nina:
                # Set before the creation goes on, without yielding, to mark the copy stale and wait for the lock.
                written.set()

        async def held_rows(q: str, **kwargs: Any) -> list[dict[str, Any]]:
            out = await rows(q, **kwargs)
            if ACCOUNT_GRANT in q and writing.is_set() and not read.is_set():  # the reset's reload, users read
                read.set()
                await reload.wait()
            return out

        monkeypatch.setattr(client, "write", held_write)
        monkeypatch.setattr(client, "rows", held_rows)
        create = asyncio.create_task(store.create("nina", "senha-de-nina", admin=False, grants={SITE_A: "viewer"},
                                                  actor=actor))
        await writing.wait()
        reset = asyncio.create_task(store.set_password("otto", "curta", actor=actor))
        await read.wait()
        write.set()
        await written.wait()
        reload.set()
        await create
        with pytest.raises(BadRequestError):
            await reset
        nina = await store.account("nina")
        assert nina is not None and nina.grants == {SITE_A: "viewer"}
