"""The pt-BR dashboard in a real browser: Debian's Chromium driven by Playwright against ``python -m backend`` (a
subprocess on a free port) with the real InfluxDB, the fake ANEEL and the fake ONS. A user logs in, sees the "Rede
elétrica agora" card of the site's subsystem with its renewable share, asks a grid question in the question box
and sees the answer with its numbers, the interpretation collapsed.

Skipped only when ``/usr/bin/chromium`` is missing (``bash scripts/setup.sh`` installs it); Playwright's own browser
downloads are never used. A screenshot of the page at 1366×900 is left in the test's temporary folder.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from backend.api.auth import hash_password
from backend.settings import Settings, User
from devstack.aneel_fake import FakeCkan
from devstack.ons_fake import FakeOns
from protocol.timebase import TZ
from tests.analytics.test_api import DEV1, sites_toml
from tests.backend.conftest import JWT_SECRET, BackendProcess
from tests.ons.test_api import load_readings

CHROMIUM = Path("/usr/bin/chromium")
USER, PASSWORD = "ana", "senha-do-painel"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at "
                                "/usr/bin/chromium (bash scripts/setup.sh installs it)")


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
    """The backend with a site in the Sudeste (LIGHT SESA) that used energy in the last three days, after its
    first ONS pull."""
    ckan, ons = fakes
    sites = tmp_path / "sites.toml"
    sites.write_text(sites_toml("casa"), encoding="utf-8")
    now = dt.datetime.now(TZ)
    settings = Settings(influx_url=influx.url, influx_db=unique_id, jwt_secret=JWT_SECRET, ingest_enabled=False,
                        rollup_enabled=False, retention_raw="INF", log_level="WARNING", sites_file=str(sites),
                        aneel_base_url=ckan.url, aneel_backoff_max_s=0.05, alerts_enabled=False,
                        ons_base_url=ons.url, ons_first_year=ons.until.year, ons_attempts=2, ons_backoff_max_s=0.05,
                        users=(User(USER, "viewer", hash_password(PASSWORD)),))
    quarter = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    asyncio.run(load_readings(settings, {"casa": DEV1}, quarter - dt.timedelta(days=3), quarter))
    process = backend_process(settings)
    process.start(timeout=60)
    base = f"http://127.0.0.1:{process.port}"
    token = httpx.post(f"{base}/api/v1/auth/token", json={"username": USER, "password": PASSWORD}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    wait_for(lambda: httpx.get(f"{base}/api/v1/ons/agora", headers=headers, timeout=5).status_code == 200,
             timeout=120, interval=0.5, what="the backend's first ONS pull")
    return process


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/painel/")
    page.get_by_label("Usuário").fill(USER)
    page.get_by_label("Senha").fill(PASSWORD)
    page.get_by_role("button", name="Entrar").click()


def test_grid_card_and_question_box_in_chromium(backend: BackendProcess, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{backend.port}"
    today = dt.datetime.now(TZ).date()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--lang=pt-BR"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900}, locale="pt-BR", timezone_id=str(TZ))
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
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
            browser.close()
