"""Injection, net energy and self-consumption from the export register, on every path (issue 14).

Site ``pv`` (GD II), Tuesday 2026-06-02, a reading at the start of every minute from 00:00 to 24:00:

* grid meter G (bidirectional): imports 10 Wh/min except 10:00-14:00, when it exports 20 Wh/min instead. At 12:00
  it reboots (boot 1 -> 2) and its export register restarts from its last EEPROM save, 50 Wh lower: the step
  11:59 -> 12:00 counts 0 (the same rule as the import register), so the 11:00 hour injects 59 x 20 = 1,18 kWh;
* generation meter P (``generation = [P]``): 30 Wh/min from 08:00 to 16:00, its import register.
* The day before, G's readings are old ones without the export field: no injection.

Per hour: consumption 0,6 kWh (0 from 10:00 to 14:00), injection 1,2 (1,18 at 11:00) from 10:00 to 14:00,
generation 1,8 from 08:00 to 16:00; self-consumption (generation − injection) / generation: 1 at 08:00, 09:00,
14:00, 15:00, 0,3333 at 10:00, 12:00, 13:00, (1,8 − 1,18) / 1,8 = 0,3444 at 11:00. The day: consumption
20 x 0,6 = 12 kWh (P is generation, not consumption), injection 4,78, net 7,22, generation 14,4, self-consumption
(14,4 − 4,78) / 14,4 = 0,6681. The SCEE energy per posto then comes from the series and keeps the injection after
the raw readings expire (their shards dropped).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from backend.aneel.sites import SiteConfigError, parse_sites
from backend.api.app import create_app
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import ensure_schema
from backend.store.lineprotocol import reading_line
from backend.store.readings import ReadingStore
from backend.store.rollups import RollupWorker, energy_from_ms
from protocol.mqtt import Reading
from protocol.timebase import TZ
from tests.analytics.conftest import ms, service

G, P = "00000000000000a7", "00000000000000a8"
SITE = "pv"
MIN = 60_000
DAY = 86_400_000
SITES = f"""[[site]]
id = "{SITE}"
distributor = "CEMIG-D"
devices = ["{G}", "{P}"]
generation = ["{P}"]
[site.gd]
regime = "GD II"
"""


def lines(t0: int) -> list[str]:
    out = []
    imp, exp, gen, boot = 30_000_000, 40_000_000, 5_000_000, 1
    for i in range(-1440, 1441):
        t = t0 + i * MIN
        hour = (i // 60) % 24
        if i > -1440:
            prev = ((i - 1) // 60) % 24  # the step from the previous minute belongs to that minute's hour
            if i > 0 and 10 <= prev < 14:
                exp += 20_000
            else:
                imp += 10_000
            if i > 0 and 8 <= prev < 16:
                gen += 30_000
        if i == 12 * 60:
            boot, exp = 2, exp - 20_000 - 50_000  # the step's 20 Wh never counted, then 50 Wh lost
        grid = reading_line(SITE, "gw", Reading(device=G, boot=boot, seq=i + 2000, ts=t, vrms=220.0, irms=1.0,
                                                p=600.0 if not 10 <= hour < 14 else -1200.0, s=600.0, pf=1.0,
                                                freq=60.0, energy_mwh=imp, energy_export_mwh=exp))
        if i <= 0:  # the day before: an old reading, without the export register
            grid = grid.replace(f",energy_export_mwh={exp}i", "")
        out.append(grid)
        if i >= 0:
            out.append(reading_line(SITE, "gw", Reading(device=P, boot=1, seq=i, ts=t, vrms=220.0, irms=1.0,
                                                        p=1800.0, s=1800.0, pf=1.0, freq=60.0, energy_mwh=gen)))
    return out


def test_generation_meters_must_be_meter_ids() -> None:
    assert parse_sites(SITES)[SITE].generation == [P]
    with pytest.raises(SiteConfigError):
        parse_sites(SITES.replace(f'generation = ["{P}"]', 'generation = ["inversor"]'))


@pytest.mark.asyncio
async def test_injection_net_and_self_consumption_agree_on_every_path(env: tuple[Settings, InfluxClient]) -> None:
    settings, client = env
    t0 = ms(dt.datetime(2026, 6, 2, tzinfo=TZ))
    await ReadingStore(client, settings).write(lines(t0), {G: (t0 - DAY, t0 + DAY), P: (t0, t0 + DAY)})
    await RollupWorker(client, settings).run_once(now_ns=time.time_ns() + 10 * 10**9)
    assert await energy_from_ms(client, settings) == 0
    svc = service(settings, client, parse_sites(SITES))
    scope = svc.scope(SITE, None, None)
    raw = await svc.consumo(scope, t0, t0 + DAY, "hour", with_peak=False)
    series = await svc.consumo(scope, t0 - 2 * DAY, t0 + DAY, "hour", with_peak=False)
    fallback = await svc.consumo(scope, t0 - 2 * DAY, t0 + DAY, "hour", with_peak=False, series=False)
    share = {8: 1.0, 9: 1.0, 10: 0.3333, 11: 0.3444, 12: 0.3333, 13: 0.3333, 14: 1.0, 15: 1.0}
    for c in (raw, series, fallback):
        hours = c.buckets[-24:]
        assert [b.kwh for b in hours] == pytest.approx([0.0 if 10 <= h < 14 else 0.6 for h in range(24)], abs=1e-6)
        assert [b.injecao_kwh for b in hours] == pytest.approx(
            [1.18 if h == 11 else 1.2 if 10 <= h < 14 else 0.0 for h in range(24)], abs=1e-6)
        assert [b.geracao_kwh for b in hours] == pytest.approx([1.8 if 8 <= h < 16 else 0.0 for h in range(24)],
                                                               abs=1e-6)
        assert [b.autoconsumo for b in hours] == [share.get(h) for h in range(24)]
        assert hours[11].liquido_kwh == pytest.approx(-1.18, abs=1e-6)
        day_before = 0.0 if c is raw else 14.4  # the three-day ranges hold the day before: G's 14,4 kWh
        assert (c.kwh_total, c.injecao_kwh, c.liquido_kwh, c.geracao_kwh, c.autoconsumo) == pytest.approx(
            (12.0 + day_before, 4.78, 7.22 + day_before, 14.4, 0.6681), abs=1e-6)
        assert c.resets == 0  # the counts are the import register's, which kept its value across the reboot
    days = await svc.consumo(scope, t0 - DAY, t0 + DAY, "day", with_peak=False)
    assert [b.kwh for b in days.buckets] == pytest.approx([14.4, 12.0], abs=1e-6)
    assert [b.injecao_kwh for b in days.buckets] == pytest.approx([0.0, 4.78], abs=1e-6)
    # The SCEE bill's energy per posto comes from the series now, equal to the raw readings'.
    site = svc.sites[SITE]
    await svc.data.load()
    from_series = await svc._energy_by_posto(scope, site, t0, t0 + DAY)
    raw_cons = await svc._raw_hourly(scope, site, t0, t0 + DAY, "import")
    raw_exp = await svc._raw_hourly(scope, site, t0, t0 + DAY, "export")
    assert sum(from_series[0].values()) == pytest.approx(raw_cons.kwh_total, abs=1e-6) == 12.0
    assert sum(from_series[1].values()) == pytest.approx(raw_exp.kwh_total, abs=1e-6) == 4.78
    # The raw readings expire (their shards dropped, as the retention policy would): the cycle keeps its injection.
    shards = await client.rows("SHOW SHARDS", db=settings.influx_db)
    for row in shards:
        if row.get("database") == settings.influx_db and row.get("retention_policy") == "raw":
            await client.execute(f"DROP SHARD {int(row['id'])}", db=settings.influx_db)
    assert (await svc._raw_hourly(scope, site, t0, t0 + DAY, "export")).kwh_total == 0.0
    cons, inj, _ = await svc._energy_by_posto(scope, site, t0 - 2 * DAY, t0 + DAY)  # past the raw range
    assert (round(sum(cons.values()), 6), round(sum(inj.values()), 6)) == (12.0 + 14.4, 4.78)


SOLAR = "00000000000000a9"
JWT = "injection-test-secret-" + "z" * 20


@pytest.mark.asyncio
async def test_injected_today_is_a_number_once_a_meter_reports_its_export_register(
        influx: Any, unique_id: str, tmp_path: Path) -> None:
    """The "injetado hoje" tile: a solar meter of a site without ``[site.gd]`` whose older readings were stored
    without the export register (absent, as before the field existed, then 0, as an old gateway sends it) and
    whose newest ones carry it. Before the register moves, today's injection is 0 kWh (the step to its first value
    is not energy of today), not None, which hid the tile while ``/agora`` showed the meter injecting; once it
    moves, the kWh counted from the raw readings.

    The app's clock stands at 00:31 of a fixed day, so the older readings (from 00:01) are today's at whatever
    time of day the test runs (on the wall clock they were yesterday's for 40 minutes a day)."""
    now = ms(dt.datetime(2026, 9, 15, 0, 31, tzinfo=TZ))
    sites = tmp_path / "sites.toml"
    sites.write_text(f'[[site]]\nid = "casa"\ndistributor = "LIGHT SESA"\ndevices = ["{SOLAR}"]\n', encoding="utf-8")
    settings = Settings(influx_url=influx.url, influx_db=unique_id, jwt_secret=JWT, ingest_enabled=False,
                        rollup_enabled=False, aneel_sync_enabled=False, alerts_enabled=False, ons_sync_enabled=False,
                        retention_raw="INF", log_level="WARNING", sites_file=str(sites))

    def reading(seq: int, ts: int, export: int | None) -> str:
        line = reading_line("casa", "gw", Reading(device=SOLAR, boot=1, seq=seq, ts=ts, vrms=127.0, irms=6.4,
                                                  p=-812.0, s=844.0, pf=0.96, freq=60.0, energy_mwh=5_000_000 + seq,
                                                  energy_export_mwh=export or 0))
        return line if export is not None else line.replace(",energy_export_mwh=0i", "")

    async def write(lines: list[str], t0: int, t1: int) -> None:
        await ReadingStore(client, settings).write(lines, {SOLAR: (t0, t1)})

    async with InfluxClient(influx.url) as client:
        await ensure_schema(client, settings)
        old = now - 30 * MIN
        await write([reading(i, old + i * MIN, None if i < 15 else 0) for i in range(28)], old, now - 2 * MIN)
        await write([reading(100, now - 10_000, 8_500_000)], now - 10_000, now - 9_999)
        app = create_app(settings)
        app.state.services.clock = lambda: now
        async with AsyncTestClient(app) as api:
            headers = {"Authorization": f"Bearer {app.state.authenticator.issue('tester', 'viewer')}"}

            async def injected() -> float | None:
                r = await api.get("/api/v1/painel/resumo", params={"site": "casa"}, headers=headers)
                assert r.status_code == 200, r.text
                return r.json()["injecao_hoje_kwh"]  # type: ignore[no-any-return]

            now_view = (await api.get("/api/v1/painel/agora", params={"site": "casa"}, headers=headers)).json()
            assert now_view["sites"][0]["com_geracao"]
            assert await injected() == 0.0
            await write([reading(101, now - 2_000, 8_520_000)], now - 2_000, now - 1_999)
            assert await injected() == 0.02
        await client.execute(f'DROP DATABASE "{unique_id}"', epoch=None)
