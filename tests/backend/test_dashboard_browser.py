"""The pt-BR dashboard in a real browser: Debian's Chromium driven by Playwright against ``python -m backend`` (a
subprocess on a free port) with the real InfluxDB, the fake ANEEL and the fake ONS.

* The grid card and the question box: a user logs in, sees the "Rede elétrica agora" card of the site's subsystem
  with its renewable share, asks a grid question and sees the answer with its numbers, the interpretation collapsed.
* The dashboard as people meet it: live power that changes by itself (polling), switching meter, group and period
  (applied on change), the CSV of what the chart shows checked against the API, browser-side validation that
  clears stale cards, the user kept on reload, "Sessão expirada" on a 401, the form cleared on logout, and a phone
  width without horizontal scroll.
* ``/docs`` renders with every request outside the backend refused (Swagger UI served from its package).

No page may log a JavaScript error or a console error. Skipped only when ``/usr/bin/chromium`` is missing (``bash
scripts/setup.sh`` installs it); Playwright's own browser downloads are never used. Screenshots (desktop 1366×900,
phone 390×844) are left in the test's temporary folder; docs/img/ holds copies of the main ones.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from backend.api.auth import hash_password
from backend.api.painel import LIVE_MAX_AGE_MS
from backend.settings import Settings, User
from backend.store.influx import InfluxClient
from backend.store.lineprotocol import reading_line
from backend.store.readings import ReadingStore
from devstack.aneel_fake import FakeCkan
from devstack.ons_fake import FakeOns
from protocol.mqtt import Reading
from protocol.timebase import TZ
from tests.analytics.test_api import DEV1, DEV2, sites_toml
from tests.backend.conftest import JWT_SECRET, BackendProcess
from tests.ons.test_api import load_readings

CHROMIUM = Path("/usr/bin/chromium")
USER, PASSWORD = "ana", "senha-do-painel"
OPERATOR, OPERATOR_PASSWORD = "olga", "senha-da-operadora"
HISTORY_DAYS = 16
"""Enough daily history for the forecast's backtest (14 days), so the projected bill is shown."""
DESKTOP, PHONE = {"width": 1366, "height": 900}, {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at "
                                "/usr/bin/chromium (bash scripts/setup.sh installs it)")


def history_end(now: dt.datetime) -> dt.datetime:
    """Where the fixture's history ends: the last quarter hour (``load_readings`` writes quarters) at least
    :data:`~backend.api.painel.LIVE_MAX_AGE_MS` before ``now``. The history is the past, never "power now": the
    live readings are the ones each test publishes itself (:func:`write_power`), so what the dashboard shows live
    does not depend on where in its quarter hour the clock happens to be."""
    edge = now - dt.timedelta(milliseconds=LIVE_MAX_AGE_MS)
    return edge.replace(minute=edge.minute - edge.minute % 15, second=0, microsecond=0)


@pytest.mark.parametrize("after_quarter_s", [0, 0.5, 1, 59, 60, 61, 899.9])
def test_history_ends_before_the_live_window(after_quarter_s: float) -> None:
    """However soon after a quarter hour the test starts, the history's newest reading is not "power now", so the
    dashboard starts with "sem leitura" until the test itself publishes a live reading (a run that started within a
    minute of a quarter hour used to see the history's last quarter as live: "1.000 W")."""
    now = dt.datetime(2026, 5, 4, 10, 15, tzinfo=TZ) + dt.timedelta(seconds=after_quarter_s)
    end = history_end(now)
    assert (end.minute % 15, end.second, end.microsecond) == (0, 0, 0)  # load_readings' quarters
    assert now - end >= dt.timedelta(milliseconds=LIVE_MAX_AGE_MS)
    assert now - end < dt.timedelta(minutes=15) + dt.timedelta(milliseconds=LIVE_MAX_AGE_MS)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeCkan, FakeOns]]:
    """ANEEL's portal and ONS's, published up to yesterday as the real ONS is (a day or two late)."""
    ckan, ons = FakeCkan().start(), FakeOns().start()
    try:
        yield ckan, ons
    finally:
        ckan.stop()
        ons.stop()


@pytest.fixture
def backend(influx: Any, fakes: tuple[FakeCkan, FakeOns], unique_id: str, tmp_path: Path,
            backend_process: Callable[..., BackendProcess], wait_for: Callable[..., Any]) -> BackendProcess:
    """The backend with a site in the Sudeste (LIGHT SESA) whose two meters used energy in the last
    :data:`HISTORY_DAYS` days (up to :func:`history_end`: none of it live), after its first ONS pull."""
    ckan, ons = fakes
    sites = tmp_path / "sites.toml"
    sites.write_text(sites_toml("casa"), encoding="utf-8")
    now = dt.datetime.now(TZ)
    settings = Settings(influx_url=influx.url, influx_db=unique_id, jwt_secret=JWT_SECRET, ingest_enabled=False,
                        rollup_enabled=False, retention_raw="INF", log_level="WARNING", sites_file=str(sites),
                        aneel_base_url=ckan.url, aneel_backoff_max_s=0.05, alerts_enabled=False,
                        ons_base_url=ons.url, ons_first_year=ons.until.year, ons_attempts=2, ons_backoff_max_s=0.05,
                        users=(User(USER, "viewer", hash_password(PASSWORD)),
                               User(OPERATOR, "operator", hash_password(OPERATOR_PASSWORD))))
    end = history_end(now)
    for dev in (DEV1, DEV2):
        asyncio.run(load_readings(settings, {"casa": dev}, end - dt.timedelta(days=HISTORY_DAYS), end))
    process = backend_process(settings)
    process.start(timeout=60)
    base = f"http://127.0.0.1:{process.port}"
    token = httpx.post(f"{base}/api/v1/auth/token", json={"username": USER, "password": PASSWORD}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}

    def grid_ready() -> bool:
        try:  # the first pull keeps the backend busy: a slow answer is "not yet"
            return httpx.get(f"{base}/api/v1/ons/agora", headers=headers, timeout=10).status_code == 200
        except httpx.TimeoutException:
            return False

    wait_for(grid_ready, timeout=120, interval=0.5, what="the backend's first ONS pull")
    return process


def log_in(page: Page, base: str, user: str = USER, password: str = PASSWORD) -> None:
    page.goto(f"{base}/painel/")
    page.get_by_label("Usuário").fill(user)
    page.get_by_label("Senha").fill(password)
    page.get_by_role("button", name="Entrar").click()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--lang=pt-BR"])
        try:
            yield chromium
        finally:
            chromium.close()


def new_page(browser: Browser, errors: list[str], viewport: dict[str, int] = DESKTOP) -> Page:
    """A pt-BR page in Brasília time whose JavaScript errors and console errors land in ``errors``."""
    page = browser.new_page(viewport=viewport, locale="pt-BR", timezone_id=str(TZ), accept_downloads=True)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return page


async def write_power(settings: Settings, device: str, p_w: float, energy_mwh: int, seq: int,
                      export_mwh: int = 0, ago_ms: int = 0) -> None:
    """One raw reading of ``device`` stamped ``ago_ms`` before now, as a gateway would deliver it (a negative
    ``p_w`` with a growing ``export_mwh``: a solar household injecting)."""
    ts = int(time.time() * 1000) - ago_ms
    async with InfluxClient(settings.influx_url) as influx:
        line = reading_line("casa", "gw1", Reading(device=device, boot=1, seq=seq, ts=ts, vrms=127.0,
                                                   irms=abs(p_w) / 127, p=p_w, s=abs(p_w) * 1.04, pf=0.96,
                                                   freq=60.0, energy_mwh=energy_mwh, energy_export_mwh=export_mwh))
        await ReadingStore(influx, settings).write([line], {device: (ts, ts + 1)})


def in_thread(coro: Any) -> None:
    """Run ``coro`` to completion beside Playwright's sync API, which holds an event loop in this thread."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


def horizontal_overflow(page: Page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth"))


def test_grid_card_and_question_box_in_chromium(backend: BackendProcess, browser: Browser, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{backend.port}"
    today = dt.datetime.now(TZ).date()
    errors: list[str] = []
    page = new_page(browser, errors)
    try:
        log_in(page, base)

        card = page.locator("#card-rede")
        expect(card.get_by_role("heading")).to_have_text("Rede elétrica agora")
        expect(page.locator("#rede-subsistema")).to_have_text("Sudeste/Centro-Oeste (SE)")
        expect(page.locator("#rede-renovavel")).to_have_text(re.compile(r"^\d{1,3},\d %$"))
        expect(page.locator("#rede-mix li")).to_have_count(5)  # four sources and the total
        expect(page.locator("#rede-mix")).to_contain_text("Hidráulica")
        expect(page.locator("#rede-idade")).to_contain_text("a mais recente publicada pelo ONS")
        if today.day > 1:  # ONS is a day late: this month has grid hours from its second day on
            expect(page.locator("#rede-meu")).to_have_text(re.compile(r"^\d{1,3},\d %$"))
            expect(page.locator("#rede-meu-nota")).to_contain_text("kWh, hora a hora")
        else:
            expect(page.locator("#rede-meu-nota")).to_have_text(
                "Ainda não há dados do ONS para as horas do seu consumo deste mês.")

        page.get_by_label("Sua pergunta").fill("qual a geração solar no nordeste agora?")
        page.get_by_role("button", name="Perguntar").click()
        expect(page.locator("#resposta-texto")).to_contain_text("Geração solar no Nordeste:")
        expect(page.locator("#resposta-texto")).to_contain_text("a mais recente publicada pelo ONS")
        row = page.locator("#resposta-valores tbody tr")
        expect(row).to_have_count(1)
        expect(row.locator("td").nth(0)).to_have_text("Geração solar")
        expect(row.locator("td").nth(1)).to_have_text(re.compile(r"^[\d.]+(,\d+)? MWmed$"))
        expect(page.locator("#resposta-campos")).not_to_be_visible()  # the interpretation starts collapsed
        page.screenshot(path=str(tmp_path / "painel.png"))
        page.locator("#resposta-interpretacao summary").click()
        expect(page.locator("#resposta-campos")).to_contain_text("Nordeste (NE)")
        expect(page.locator("#resposta-campos code")).to_have_text("GET /api/v1/ons/agora")
        assert errors == []
    finally:
        page.close()


def br_number(text: str) -> float:
    """"1.234,567" -> 1234.567"""
    return float(text.replace(".", "").replace(",", "."))


def test_dashboard_live_breakdown_csv_session_and_phone_in_chromium(
        backend: BackendProcess, browser: Browser, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{backend.port}"
    token = httpx.post(f"{base}/api/v1/auth/token", json={"username": USER, "password": PASSWORD}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    errors: list[str] = []
    page = new_page(browser, errors)
    try:
        started = time.perf_counter()
        log_in(page, base)
        expect(page.locator("#hoje-kwh")).to_have_text(re.compile(r"^[\d.]+,\d\d kWh$"), timeout=15_000)
        first_view_s = time.perf_counter() - started
        expect(page.locator("#who")).to_have_text(f"{USER} (viewer)")

        # Live power: the history ends before the live window (history_end), so it starts as a gap; then each
        # reading the test publishes shows up by itself.
        expect(page.locator("#potencia-total")).to_have_text("sem leitura")
        in_thread(write_power(backend.settings, DEV1, 500.0, 50_000_000, 10_000))
        expect(page.locator("#potencia-total")).to_have_text("500 W", timeout=15_000)
        in_thread(write_power(backend.settings, DEV1, 1234.0, 50_001_000, 10_001))
        expect(page.locator("#potencia-total")).to_have_text("1.234 W", timeout=15_000)
        expect(page.locator("#potencia-medidores")).to_contain_text("cozinha")
        expect(page.locator("#potencia-medidores")).to_contain_text("sem leitura")  # DEV2: no recent reading
        expect(page.locator("#online-medidores")).to_contain_text("Medidores online:")

        # The honest numbers at a glance: a projection with its interval, the bill's minimum never "the bill".
        expect(page.locator("#projecao-rs")).to_have_text(re.compile(r"^R\$\s[\d.]+,\d\d$"))
        expect(page.locator("#projecao-intervalo")).to_contain_text("(80 %)")
        expect(page.locator("#projecao-nota")).to_contain_text("sazonal ingênuo")
        expect(page.locator("#bandeira")).not_to_have_text("–")
        expect(page.locator("#alertas-abertos")).not_to_have_text("–")

        # Period, meter and group apply on change; the chart draws bars with Plotly.
        page.locator("#granularidade").select_option("day")
        today = dt.datetime.now(TZ).date()
        page.locator("#inicio").fill((today - dt.timedelta(days=6)).isoformat())
        page.locator("#inicio").dispatch_event("change")
        expect(page.locator("#consumo-titulo")).to_contain_text("por dia")
        expect(page.locator("#chart-consumo .main-svg").first).to_be_visible()
        api_site = httpx.get(f"{base}/api/v1/analytics/consumo", headers=headers, params={
            "site": "casa", "inicio": (today - dt.timedelta(days=6)).isoformat(), "fim": today.isoformat(),
            "granularidade": "day"}).json()
        expect(page.locator("#kwh-total")).to_have_text(f"{api_site['kwh_total']:,.3f}".replace(",", "X")
                                                        .replace(".", ",").replace("X", "."))
        page.screenshot(path=str(tmp_path / "painel-desktop.png"), full_page=False)
        page.screenshot(path=str(tmp_path / "painel-desktop-inteiro.png"), full_page=True)

        # The CSV is the report of exactly that scope and period; its total is the API's.
        with page.expect_download() as download:
            page.locator("#csv").click()
        rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8-sig")),
                               delimiter=";"))
        assert rows[-1][0] == "Total"
        assert len(rows) == 2 + 7  # header, 7 days, total
        assert abs(br_number(rows[-1][3]) - api_site["kwh_total"]) < 0.0015

        page.locator("#escopo").select_option(f"device:{DEV2}")
        expect(page.locator("#consumo-titulo")).to_contain_text("medidor …00a2")
        page.locator("#escopo").select_option("grupo:cozinha")
        expect(page.locator("#consumo-titulo")).to_contain_text("grupo cozinha")
        page.locator("#granularidade").select_option("hour")
        expect(page.locator("#consumo-nota")).to_contain_text("posto tarifário")
        page.locator("input[name=divisao][value=medidor]").check()
        expect(page.locator("#divisao-tabela tbody tr")).to_have_count(2)

        # Validation in the browser: a human message, and no stale chart or number left behind.
        page.locator("#inicio").fill((today + dt.timedelta(days=2)).isoformat())
        page.locator("#inicio").dispatch_event("change")
        expect(page.locator("#controles-erro")).to_contain_text("A data de início deve ser igual ou anterior")
        expect(page.locator("#kwh-total")).to_have_text("–")
        expect(page.locator("#chart-consumo .main-svg")).to_have_count(0)
        page.locator("#inicio").fill((today - dt.timedelta(days=2)).isoformat())
        page.locator("#inicio").dispatch_event("change")
        expect(page.locator("#controles-erro")).to_have_text("")
        expect(page.locator("#kwh-total")).not_to_have_text("–")

        # The user stays on reload; a 401 says "Sessão expirada"; logout leaves no password behind.
        page.reload()
        expect(page.locator("#who")).to_have_text(f"{USER} (viewer)")
        page.evaluate("sessionStorage.setItem('cds-token', 'not-a-token')")
        # The live poll (every 5 s) may meet the bad token first and hide the controls before a click could land, so
        # the change is dispatched rather than clicked: whichever request is refused first must say the same thing.
        page.locator("#granularidade").dispatch_event("change")
        expect(page.locator("#login-error")).to_have_text("Sessão expirada: entre novamente.")
        log_in(page, base)
        expect(page.locator("#who")).to_have_text(f"{USER} (viewer)")
        page.get_by_role("button", name="Sair").click()
        expect(page.get_by_label("Senha")).to_have_value("")
        expect(page.get_by_label("Usuário")).to_have_value("")
        # Chromium itself logs each request the expired token got refused; nothing else may be an error.
        assert [e for e in errors if "status of 401" not in e] == []
        errors.clear()
    finally:
        page.close()

    # Phone width: everything usable without horizontal scroll.
    for viewport in (PHONE, {"width": 360, "height": 780}):
        phone = new_page(browser, errors, viewport)
        try:
            log_in(phone, base)
            expect(phone.locator("#hoje-kwh")).to_have_text(re.compile(r"kWh$"), timeout=15_000)
            expect(phone.locator("#chart-consumo .main-svg").first).to_be_visible()
            assert horizontal_overflow(phone) == 0
            if viewport == PHONE:
                phone.screenshot(path=str(tmp_path / "painel-celular.png"))
        finally:
            phone.close()
    assert errors == []
    print(f"first view (login to today's kWh on screen): {first_view_s * 1000:.0f} ms; screenshots in {tmp_path}")


def test_operator_names_meters_and_solar_injection_in_chromium(
        backend: BackendProcess, browser: Browser, tmp_path: Path) -> None:
    """An operator names a meter from the dashboard and every view uses the name; a meter injecting (negative
    power, export register above zero) shows "injetando"; a viewer gets no rename form."""
    base = f"http://127.0.0.1:{backend.port}"
    # DEV2 injects 812 W now (today's injected kWh: tests/analytics/test_injection.py).
    in_thread(write_power(backend.settings, DEV2, -812.0, 90_000_000, 20_000, 8_500_000))
    errors: list[str] = []
    page = new_page(browser, errors)
    try:
        log_in(page, base, OPERATOR, OPERATOR_PASSWORD)
        expect(page.locator("#card-nomes")).to_be_visible(timeout=15_000)
        page.locator("#nome-medidor").select_option(DEV1)
        page.locator("#nome-novo").fill("Geladeira")
        page.get_by_role("button", name="Salvar nome").click()
        expect(page.locator("#nome-ok")).to_have_text("Nome salvo: Geladeira.")
        expect(page.locator("#escopo")).to_contain_text("Medidor: Geladeira")
        expect(page.locator("#potencia-medidores")).to_contain_text("Geladeira", timeout=15_000)
        expect(page.locator("#potencia-medidores")).to_contain_text("injetando 812 W")
        expect(page.locator("#divisao-tabela")).to_contain_text("Geladeira")
        page.locator("#escopo").select_option(f"device:{DEV1}")
        expect(page.locator("#consumo-titulo")).to_contain_text("medidor Geladeira")
        page.screenshot(path=str(tmp_path / "painel-nomes-solar.png"), full_page=False)
        assert errors == []
    finally:
        page.close()
    viewer = new_page(browser, errors)
    try:
        log_in(viewer, base)
        expect(viewer.locator("#potencia-medidores")).to_contain_text("Geladeira", timeout=15_000)
        expect(viewer.locator("#card-nomes")).to_be_hidden()
        assert errors == []
    finally:
        viewer.close()


def test_docs_render_offline(backend: BackendProcess, browser: Browser) -> None:
    base = f"http://127.0.0.1:{backend.port}"
    errors: list[str] = []
    page = new_page(browser, errors)
    outside: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith(base):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    try:
        page.goto(f"{base}/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("CDS")
        expect(page.locator(".opblock-tag-section").first).to_be_visible()
        assert outside == []
        assert errors == []
    finally:
        page.close()
