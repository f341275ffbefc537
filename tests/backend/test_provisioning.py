"""Provisioned devices against the real broker and InfluxDB: the attacks of a gateway holding its own valid
credentials — a cardinality flood of invented meter ids, another site's meter impersonated, a retained DeviceInfo
redirecting CONFIG downlinks, ConfigResults for requests it did not get — have no effect on anyone else's data;
the admin API provisions, moves and disables meters, gateways and sites, audited."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from backend.accounts.audit import AuditLog
from backend.accounts.store import AccountStore, Actor
from backend.api.app import create_app
from backend.ingest.devicebook import DeviceBook
from backend.ingest.limits import Budget
from backend.ingest.provisioning import Book, DeviceRecord, GatewayRecord, SiteRecord
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import FLEET_SITE
from protocol import mqtt
from protocol.mqtt import ConfigResult, DeviceInfo
from tests.backend.conftest import batch_bytes, count_points, device_id, make_settings, reading


def _metric(client: AsyncTestClient[Any], name: str, label: str) -> float:
    for family in client.app.state.services.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and label in sample.labels.values():
                return float(sample.value)
    return 0.0


def _admin(client: AsyncTestClient[Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.app.state.authenticator.issue('root', 'admin')}"}


def _operator(client: AsyncTestClient[Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.app.state.authenticator.issue('ops', 'operator')}"}


def _tag_values(influx: Any, db: str) -> set[str]:
    rows = influx.rows(f'SHOW TAG VALUES ON "{db}" FROM "readings" WITH KEY = "device"', db=db)
    return {r["value"] for r in rows}


def _info(device: str) -> bytes:
    return mqtt.json_encoder.encode(DeviceInfo(device=device, firmware="1.0", hw_rev=1, boot=1, report_period_ms=1000,
                                               link="up", port="/dev/ttyUSB0", seen_at=int(time.time() * 1000)))


# --- the sans-IO core ---------------------------------------------------------------------------------------------


def test_book_verdicts() -> None:
    book = Book(declared={"00000000000000d1": "casa-a"})
    book.replace([DeviceRecord("00000000000000a1", "casa-a", "gw1", "auto"),
                  DeviceRecord("00000000000000a2", "casa-a", "gw1", "admin"),
                  DeviceRecord("00000000000000a3", "casa-a", "gw1", "auto", disabled=True)],
                 [GatewayRecord("casa-a", "gw9", disabled=True)], [SiteRecord("casa-z", disabled=True)])
    assert book.verdict("casa-a", "gw1", "00000000000000a1") == "owned"
    assert book.verdict("casa-a", "gw2", "00000000000000a1") == "moved"  # an automatic claim follows its site
    assert book.verdict("casa-a", "gw2", "00000000000000a2") == "not_owner"  # an admin's assignment does not
    assert book.verdict("casa-b", "gw1", "00000000000000a1") == "not_owner"  # never across sites
    assert book.verdict("casa-a", "gw1", "00000000000000a3") == "device_disabled"
    assert book.verdict("casa-a", "gw9", "00000000000000a1") == "gateway_disabled"
    assert book.verdict("casa-z", "gw1", "00000000000000ff") == "site_disabled"
    assert book.verdict("casa-a", "gw1", "00000000000000ff") == "unknown"
    assert book.verdict("casa-a", "gw5", "00000000000000d1") == "unknown"  # declared for casa-a: claimable there
    assert book.verdict("casa-b", "gw1", "00000000000000d1") == "not_owner"  # ... and nowhere else
    assert book.owned_by("casa-a", "gw1") == 2  # the disabled meter does not count
    book.put_device(DeviceRecord("00000000000000a1", "casa-a", "gw2", "auto"))
    assert (book.owned_by("casa-a", "gw1"), book.owned_by("casa-a", "gw2")) == (1, 1)


def test_budget_refills_at_its_rate_and_forgets_the_oldest_key() -> None:
    budget: Budget[str] = Budget(rate=2.0, burst=3, max_keys=2)
    assert [budget.take("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert budget.retry_after("a", 0.0) == pytest.approx(0.5)
    assert budget.take("a", 0.5) and not budget.take("a", 0.5)
    assert budget.take("b", 0.5) and budget.take("c", 0.5)  # "a" is dropped: at most two keys
    assert budget.available("a", 0.5) == 3  # a forgotten key starts with a full bucket
    assert Budget[str](rate=0, burst=1).take("x", 0.0, cost=10)  # rate 0: no limit


# --- attacks from a gateway with valid credentials -------------------------------------------------------------


@pytest.mark.asyncio
async def test_cardinality_flood_is_bounded_and_new_real_meters_still_stored(
    broker: Any, influx: Any, unique_id: str, publisher_factory: Any, mqtt_recorder: Any, wait_for_async: Any,
) -> None:
    """200 messages of 500 invented meter ids from one gateway: at most the hour's budget of them becomes a tag
    value, the rest is refused (counted, dead-lettered); a real meter of another gateway is stored meanwhile and
    after, the device list stays small, and the rollups keep running."""
    site = unique_id
    dead = mqtt_recorder(f"{mqtt.DEAD_LETTER_ROOT}/cds/v1/{site}/evil/#")
    settings = make_settings(broker, influx, unique_id)
    app = create_app(settings)
    async with AsyncTestClient(app) as client:
        services = app.state.services
        assert await services.ingest.bridge.wait_connected(10)
        pub = publisher_factory(broker)
        now = int(time.time() * 1000)
        evil = mqtt.readings_topic(site, "evil")
        for m in range(200):
            fake = [reading(f"{0xE0000000 + m * 500 + i:016x}", 1, now - 10_000) for i in range(500)]
            pub.publish(evil, batch_bytes(site, "evil", fake))
            if m == 100:  # a real meter joins its own gateway in the middle of the flood
                pub.publish(mqtt.readings_topic(site, "gw1"), batch_bytes(site, "gw1", [reading(device_id(1), 1, now)]))
        pub.publish(mqtt.readings_topic(site, "gw1"),  # of a closed minute, so its rollup is due at once
                    batch_bytes(site, "gw1", [reading(device_id(2), 1, now - 180_000)]))
        pub.wait_all_acked()
        await wait_for_async(lambda: services.ingest.unacked == 0 and dead.count() >= 200, timeout=60,
                             what=lambda: f"flood handled: unacked {services.ingest.unacked}, dead {dead.count()}")
        budget = settings.provisioning_new_devices_per_hour
        tags = _tag_values(influx, unique_id)
        assert {device_id(1), device_id(2)} <= tags
        assert len(tags - {device_id(1), device_id(2)}) == budget
        assert services.devices.book.owned_by(site, "evil") == budget
        refused = _metric(client, "cds_ingest_rejected_total", "device_limit")
        assert refused == 200 * 500 - budget
        assert services.registry.refused[(site, "evil")]["device_limit"] == refused
        assert json.loads(dead.payloads[-1])["reason"] == "device_limit"
        r = await client.get("/api/v1/devices", headers=_operator(client))
        assert r.status_code == 200 and len(r.content) < 20_000, len(r.content)
        r = await client.get("/api/v1/admin/gateways", headers=_admin(client))
        evil_gw = next(g for g in r.json() if g["gateway"] == "evil")
        assert evil_gw["medidores"] == budget and evil_gw["recusas"]["device_limit"] == refused
        # the rollups still run for everyone: the real meter's minute appears in r1m
        await wait_for_async(lambda: influx.rows(f'SELECT sum(n) FROM "{unique_id}"."r1m"."readings" WHERE '
                                                 f"device = '{device_id(2)}'", db=unique_id),
                             timeout=20, what="the real meter's 1-minute rollup")


@pytest.mark.asyncio
async def test_another_sites_meter_cannot_be_impersonated_or_reconfigured(
    broker: Any, influx: Any, unique_id: str, publisher_factory: Any, mqtt_recorder: Any, wait_for_async: Any,
) -> None:
    """The meter of site A/gw1 published by a gateway of site B: readings and DeviceInfo refused and
    dead-lettered, the victim's data untouched, CONFIG still sent to gw1 only, and ConfigResults not from gw1
    or for requests nobody opened answer nothing."""
    site_a, site_b = f"{unique_id}_a", f"{unique_id}_b"
    victim = device_id(0xA1)
    dead = mqtt_recorder(f"{mqtt.DEAD_LETTER_ROOT}/cds/v1/{site_b}/#")
    gw1_downlink = mqtt_recorder(f"cds/v1/{site_a}/gw1/down/config/#")
    evil_downlink = mqtt_recorder(f"cds/v1/{site_b}/evil/down/#")
    app = create_app(make_settings(broker, influx, unique_id, config_timeout_s=2.0))
    async with AsyncTestClient(app) as client:
        services = app.state.services
        assert await services.ingest.bridge.wait_connected(10)
        r = await client.put(f"/api/v1/admin/medidores/{victim}", json={"site": site_a, "gateway": "gw1"},
                             headers=_admin(client))
        assert r.status_code == 200 and r.json()["origem"] == "admin", r.text
        pub = publisher_factory(broker)
        now = int(time.time() * 1000)
        pub.publish(mqtt.readings_topic(site_a, "gw1"),
                    batch_bytes(site_a, "gw1", [reading(victim, s, now - 5000 + s) for s in range(5)]))
        pub.publish(mqtt.readings_topic(site_b, "evil"),
                    batch_bytes(site_b, "evil", [reading(victim, 100 + s, now - 4000 + s, p=9999.0) for s in range(5)]))
        pub.publish(mqtt.device_topic(site_b, "evil", victim), _info(victim), retain=True)
        pub.wait_all_acked()
        dead.wait_count(2, timeout=15)
        reasons = sorted(json.loads(p)["reason"] for p in dead.payloads)
        assert reasons == ["not_owner", "not_owner"]
        await wait_for_async(lambda: count_points(influx, unique_id) == 5, timeout=10, what="the victim's 5 readings")
        assert influx.rows(f'SELECT max(p) FROM "{unique_id}"."raw"."readings"', db=unique_id)[0]["max"] == 100.0
        assert victim not in services.registry.devices  # the attacker's DeviceInfo was not taken
        assert _metric(client, "cds_ingest_rejected_total", "not_owner") == 6  # 5 readings + 1 DeviceInfo

        # CONFIG goes to the owner's downlink only. While the request is open, the attacker answers it with the
        # right request id, and the owner's gateway with a request id nobody opened: neither is taken.
        def forge() -> None:
            _, payload, _ = gw1_downlink.wait_count(1, timeout=15)[0]
            rid = mqtt.config_request_decoder.decode(payload).request_id
            forged = ConfigResult(device=victim, request_id=rid, status="applied")
            pub.publish(mqtt.config_result_topic(site_b, "evil"), mqtt.json_encoder.encode(forged))
            unopened = ConfigResult(device=victim, request_id=rid % 0xFFFF + 1, status="applied")
            pub.publish(mqtt.config_result_topic(site_a, "gw1"), mqtt.json_encoder.encode(unopened))
            pub.wait_all_acked()

        forging = threading.Thread(target=forge)
        forging.start()
        r = await client.put("/api/v1/aicss/config", json={"device": victim, "report_period_ms": 2000,
                                                           "timeout_s": 3.0}, headers=_operator(client))
        forging.join()
        assert r.status_code == 200 and r.json()["status"] == "pending", r.text
        assert [t for t, _, _ in gw1_downlink.messages] == [mqtt.config_topic(site_a, "gw1", victim)]
        dead.wait_count(3, timeout=15)  # the attacker's result is refused and dead-lettered
        assert _metric(client, "cds_ingest_messages_total", "config_other") == 1  # the unopened id: ignored
        assert evil_downlink.count() == 0
        r = await client.put("/api/v1/aicss/config", json={"device": victim, "report_period_ms": 2000,
                                                           "site": site_b, "gateway": "evil"}, headers=_admin(client))
        assert r.status_code == 409, r.text  # naming another gateway does not redirect the downlink
        assert evil_downlink.count() == 0
        pub.publish(mqtt.device_topic(site_b, "evil", victim), b"", retain=True)  # no retained junk for others
        pub.wait_all_acked()


@pytest.mark.asyncio
async def test_a_result_for_an_open_request_from_its_gateway_is_taken(
    broker: Any, influx: Any, unique_id: str, publisher_factory: Any, mqtt_recorder: Any, wait_for_async: Any,
) -> None:
    """The honest path after the refusals above: the owner's answer to the open request completes the PUT."""
    site = unique_id
    dev = device_id(7)
    app = create_app(make_settings(broker, influx, unique_id))
    async with AsyncTestClient(app) as client:
        assert await app.state.services.ingest.bridge.wait_connected(10)
        pub = publisher_factory(broker)

        def answer() -> None:
            topic, payload, _ = downlink.wait_count(1, timeout=15)[0]
            req = mqtt.config_request_decoder.decode(payload)
            pub.publish(mqtt.config_result_topic(site, "gw1"), mqtt.json_encoder.encode(
                ConfigResult(device=topic.rsplit("/", 1)[1], request_id=req.request_id, status="applied")))

        downlink = mqtt_recorder(f"cds/v1/{site}/gw1/down/config/#")
        pub.publish(mqtt.device_topic(site, "gw1", dev), _info(dev), retain=True)  # first sight: claimed
        pub.wait_all_acked()
        book = app.state.services.devices.book
        owner = await wait_for_async(lambda: book.owner(dev), timeout=10, what="the meter claimed at first sight")
        assert (owner.site, owner.gateway, owner.origin) == (site, "gw1", "auto")
        answering = threading.Thread(target=answer)
        answering.start()
        r = await client.put("/api/v1/aicss/config", json={"device": dev, "report_period_ms": 2000, "timeout_s": 15},
                             headers=_operator(client))
        answering.join()
        assert r.status_code == 200 and r.json()["status"] == "applied", r.text
        pub.publish(mqtt.device_topic(site, "gw1", dev), b"", retain=True)
        pub.wait_all_acked()



# --- the administrator's book ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_admin_provisions_moves_and_disables_meters_gateways_and_sites_audited(
    broker: Any, influx: Any, unique_id: str, publisher_factory: Any, mqtt_recorder: Any, wait_for_async: Any,
) -> None:
    """With automatic claims off, only provisioned meters are stored; disabling a meter, a gateway or a site
    refuses what follows (dead-lettered with the reason) and keeps what was stored; every change is audited;
    only admins may do any of it."""
    site = unique_id
    dev1, dev2 = device_id(1), device_id(2)
    dead = mqtt_recorder(f"{mqtt.DEAD_LETTER_ROOT}/cds/v1/{site}/#")
    app = create_app(make_settings(broker, influx, unique_id, provisioning_auto=False))
    async with AsyncTestClient(app) as client:
        services = app.state.services
        assert await services.ingest.bridge.wait_connected(10)
        admin = _admin(client)
        pub = publisher_factory(broker)
        now = int(time.time() * 1000)
        seq = iter(range(1, 1000))

        def send(*devices: str, gateway: str = "gw1") -> None:
            pub.publish(mqtt.readings_topic(site, gateway),
                        batch_bytes(site, gateway, [reading(d, n, now - 60_000 + n) for d in devices
                                                    for n in [next(seq)]]))
            pub.wait_all_acked()

        send(dev1)
        assert json.loads(dead.wait_count(1)[-1][1])["reason"] == "unprovisioned"
        for path in (f"/api/v1/admin/medidores/{dev1}", "/api/v1/admin/gateways/x/y", "/api/v1/admin/sites/x"):
            r = await client.put(path, json={}, headers=_operator(client))
            assert r.status_code == 403, (path, r.text)
        r = await client.put(f"/api/v1/admin/medidores/{dev1}", json={"site": site, "gateway": "gw1"}, headers=admin)
        assert r.status_code == 200, r.text
        r = await client.put(f"/api/v1/admin/medidores/{dev2}", json={"site": site, "gateway": "gw2"}, headers=admin)
        assert r.status_code == 200, r.text
        send(dev1, dev2)  # dev2 belongs to gw2 (an admin's assignment does not follow the meter)
        assert json.loads(dead.wait_count(2)[-1][1])["reason"] == "not_owner"
        await wait_for_async(lambda: count_points(influx, unique_id) == 1, timeout=10, what="dev1 stored")
        send(dev2, gateway="gw2")
        await wait_for_async(lambda: count_points(influx, unique_id) == 2, timeout=10, what="dev2 from gw2")

        r = await client.post(f"/api/v1/admin/medidores/{dev1}/desativar", headers=admin)
        assert r.status_code == 200 and r.json()["desativado"] is True, r.text
        send(dev1)
        assert json.loads(dead.wait_count(3)[-1][1])["reason"] == "device_disabled"
        r = await client.post(f"/api/v1/admin/medidores/{dev1}/ativar", headers=admin)
        assert r.status_code == 200 and r.json()["desativado"] is False
        r = await client.put(f"/api/v1/admin/gateways/{site}/gw1", json={"desativado": True}, headers=admin)
        assert r.status_code == 200 and r.json()["registrado"] and r.json()["desativado"], r.text
        send(dev1)
        assert json.loads(dead.wait_count(4)[-1][1])["reason"] == "gateway_disabled"
        r = await client.put(f"/api/v1/admin/gateways/{site}/gw1", json={"limite_medidores": 5}, headers=admin)
        assert r.json()["limite_medidores"] == 5 and not r.json()["desativado"]
        r = await client.put(f"/api/v1/admin/sites/{site}", json={"nome": "Condomínio Azul", "desativado": True},
                             headers=admin)
        assert r.status_code == 200 and r.json()["desativado"], r.text
        send(dev2, gateway="gw2")
        assert json.loads(dead.wait_count(5)[-1][1])["reason"] == "site_disabled"
        r = await client.put(f"/api/v1/admin/sites/{site}", json={"nome": "Condomínio Azul"}, headers=admin)
        send(dev1)
        await wait_for_async(lambda: count_points(influx, unique_id) == 3, timeout=10, what="dev1 again")

        r = await client.get("/api/v1/admin/medidores", headers=admin)
        assert [(m["medidor"], m["gateway"], m["origem"]) for m in r.json()] == [(dev1, "gw1", "admin"),
                                                                                  (dev2, "gw2", "admin")]
        r = await client.get("/api/v1/admin/sites", headers=admin)
        assert [(s["site"], s["nome"], s["medidores"]) for s in r.json()] == [(site, "Condomínio Azul", 2)]
        r = await client.get("/api/v1/admin/gateways", headers=admin)
        # this replica subscribes to every site, so it also lists (and counts refusals of) the gateways whose
        # retained messages other tests left on the shared broker: another site's "gw1" among them
        gws = {g["gateway"]: g for g in r.json() if g["site"] == site}
        assert gws["gw1"]["recusas"] == {"device_disabled": 1, "gateway_disabled": 1, "not_owner": 1,
                                         "unprovisioned": 1}
        r = await client.put(f"/api/v1/admin/medidores/{dev1}", json={"site": "Nope!", "gateway": "gw1"},
                             headers=admin)
        assert r.status_code == 400 and "inválid" in r.json()["detail"].lower(), r.text
        r = await client.post("/api/v1/admin/medidores/00000000000000ff/desativar", headers=admin)
        assert r.status_code == 404 and "não provisionado" in r.json()["detail"]
        r = await client.get("/api/v1/admin/auditoria", headers=admin)
        actions = [(e["acao"], e["resultado"]) for e in r.json()]
        for expected in [("provisionar_medidor", "ok"), ("desativar_medidor", "ok"), ("ativar_medidor", "ok"),
                         ("desativar_gateway", "ok"), ("registrar_gateway", "ok"), ("desativar_site", "ok"),
                         ("registrar_site", "ok"), ("desativar_medidor", "falha")]:
            assert expected in actions, expected

    # a restarted replica has the same book: it lives in InfluxDB, not in the process
    app = create_app(make_settings(broker, influx, unique_id, provisioning_auto=False))
    async with AsyncTestClient(app) as client:
        book = app.state.services.devices.book
        assert (book.owner(dev1).gateway, book.owner(dev2).gateway) == ("gw1", "gw2")
        assert book.gateways[(site, "gw1")].max_devices == 5 and book.sites[site].name == "Condomínio Azul"


@pytest.mark.asyncio
async def test_http_ingest_is_bounded_per_gateway_and_per_token(
    broker: Any, influx: Any, unique_id: str,
) -> None:
    """An operator token posting invented meters over HTTP: the same per-gateway budget as MQTT (the refused
    readings listed with their reason), and 429 with Retry-After once the token's request budget is spent."""
    site = unique_id
    app = create_app(make_settings(broker, influx, unique_id, ingest_enabled=False, ingest_gateway_messages_per_s=1,
                                   ingest_gateway_burst=3, provisioning_new_devices_per_hour=4))
    async with AsyncTestClient(app) as client:
        headers = _operator(client)
        now = int(time.time() * 1000)
        fake = [reading(f"{0xF0000000 + i:016x}", 1, now - 1000) for i in range(50)]
        r = await client.post("/api/v1/aicss/dados", content=batch_bytes(site, "gw1", fake), headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["accepted"] == 4 and {x["reason"] for x in body["rejected"]} == {"device_limit"}
        assert len(body["rejected"]) == 46
        for _ in range(2):  # the rest of the burst
            r = await client.post("/api/v1/aicss/dados", content=batch_bytes(site, "gw1", fake[:1]), headers=headers)
            assert r.status_code == 200, r.text
        r = await client.post("/api/v1/aicss/dados", content=batch_bytes(site, "gw1", fake[:1]), headers=headers)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text
        assert "tente de novo" in r.json()["detail"]
        assert _tag_values(influx, unique_id) == {d.device for d in fake[:4]}


@pytest.mark.asyncio
async def test_a_meter_claimed_on_one_replica_is_not_claimed_again_on_another(influx: Any, unique_id: str) -> None:
    """Replica B's copy of the book does not know the meter replica A just claimed: B looks it up before claiming,
    so a gateway of another site is refused (not_owner) instead of taking the meter over."""
    settings = Settings(influx_url=influx.url, influx_db=unique_id, jwt_secret="x" * 32)
    dev = device_id(0xB0)
    async with InfluxClient(settings.influx_url) as client:
        audit = AuditLog(client, settings)
        await AccountStore(client, settings, audit).ensure_schema()
        a, b = DeviceBook(client, settings, audit), DeviceBook(client, settings, audit)
        await b.load()
        assert await a.resolve("casa-a", "gw1", [dev], wait=False) == {}
        assert b.book.verdict("casa-b", "gw1", dev) == "unknown"  # B's copy is stale ...
        assert await b.resolve("casa-b", "gw1", [dev], wait=False) == {dev: "not_owner"}  # ... its decision is not
        assert b.book.owner(dev) is not None and b.book.owner(dev).site == "casa-a"
        entries = await audit.entries()
        assert [(e.acao, e.usuario, e.alvo) for e in entries] == [("provisionar_medidor", "casa-a/gw1", dev)]


@pytest.mark.asyncio
async def test_a_reload_in_flight_keeps_what_this_replica_changed_meanwhile(
        influx: Any, unique_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload has read the book; before its copy is installed this replica claims one meter (its first reading)
    and provisions another. The older copy must not undo either: under a CPU hog a meter's first reading was
    accepted and its CONFIG then refused as "não provisionado" until the next reload."""
    settings = Settings(influx_url=influx.url, influx_db=unique_id, jwt_secret="x" * 32)
    claimed, provisioned = device_id(0xC0), device_id(0xC1)
    async with InfluxClient(settings.influx_url) as client:
        audit = AuditLog(client, settings)
        await AccountStore(client, settings, audit).ensure_schema()
        replica = DeviceBook(client, settings, audit)
        read, release = asyncio.Event(), asyncio.Event()
        rows = client.rows

        async def rows_held_once_the_book_is_read(q: str, **kwargs: Any) -> list[dict[str, Any]]:
            out = await rows(q, **kwargs)
            if FLEET_SITE in q:  # the reload's last query: the copy it will install is complete
                read.set()
                await release.wait()
            return out

        monkeypatch.setattr(client, "rows", rows_held_once_the_book_is_read)
        reload = asyncio.create_task(replica.load())
        await read.wait()
        assert await replica.resolve("casa-a", "gw1", [claimed], wait=False) == {}
        await replica.provision(provisioned, "casa-a", "gw2", actor=Actor(username="admin", address="127.0.0.1"))
        release.set()
        await reload

        def owners() -> list[tuple[str, str] | None]:
            return [(r.site, r.gateway) if (r := replica.book.owner(d)) is not None else None
                    for d in (claimed, provisioned)]

        assert owners() == [("casa-a", "gw1"), ("casa-a", "gw2")]
        monkeypatch.undo()
        await replica.load()  # and storage holds them too
        assert owners() == [("casa-a", "gw1"), ("casa-a", "gw2")]
