"""The status page as someone reads it on a phone next to the meters: a card per meter, pt-BR numbers, no
filesystem path on the main view (the detail view has them), and no horizontal scroll at 360 px in Debian's
Chromium (driven by Playwright, skipped only when ``/usr/bin/chromium`` is missing)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.statuspage import StatusServer, num, render_details, render_html

CHROMIUM = Path("/usr/bin/chromium")
PORT_PATH = "/run/cds/pts/ttyAICSS-00000000000000a1-com-um-nome-bem-comprido"
SOLAR, PLAIN = "00000000000000a1", "00000000000000b2"


def snapshot() -> dict[str, Any]:
    """What :meth:`gateway.app.Gateway.snapshot` returns, with a solar meter exporting and an old meter offline."""
    reading = {"seq": 9, "ts": 1_795_295_280_000, "vrms": 219.87, "irms": 10.123, "p": -2212.4, "pf": 0.99,
               "freq": 60.01, "energy_kwh": 1234.5678, "export_kwh": 987.654, "flags": 0}
    return {
        "site": "casa-solar", "gateway": "gw-1", "version": "1.1.0", "now_ms": 1_795_295_281_000,
        "uptime_s": 93_784.0,
        "meters": [
            {"device": SOLAR, "port": PORT_PATH, "link": "up", "firmware": "1.1.0", "boot": 12,
             "report_period_ms": 1000, "last_seen_ms": 1_795_295_280_500, "last_reading": reading,
             "meter_status": {"queued": 0, "dropped": 0, "rx_errors": 3}, "readings": 123_456, "duplicates": 7},
            {"device": PLAIN, "port": "/dev/ttyUSB1", "link": "down", "firmware": "1.0.0", "boot": 3,
             "report_period_ms": 1000, "last_seen_ms": 0, "last_reading": {}, "meter_status": {}, "readings": 0,
             "duplicates": 0},
        ],
        "links": [
            {"port": PORT_PATH, "state": "up", "since": 1_795_295_000.0, "last_error": "", "opens": 1,
             "device": SOLAR},
            {"port": "/dev/ttyUSB1", "state": "down", "since": 1_795_295_000.0,
             "last_error": "[Errno 2] could not open port /dev/ttyUSB1: No such file or directory", "opens": 40,
             "device": None},
        ],
        "queue": {"rows": 1500, "bytes": 2_345_678, "oldest_age_s": 75.2, "max_rows": 1_000_000,
                  "max_bytes": 200_000_000, "policy": "drop-oldest", "dropped_full": 0, "expired": 0,
                  "dropped_at_meter": 0, "skipped_unknown": 0, "delivery": "receipts", "unconfirmed_rows": 12,
                  "unconfirmed_bytes": 4_800, "receipt_timeout_s": 30.0, "last_receipt_ms": 1_795_295_279_000,
                  "unconfirmed_trimmed": 0, "dead_lettered": 0, "replay_rows": 0, "replay_bytes": 0,
                  "replay_window_s": 600.0, "replay_trimmed": 0},
        "broker": {"state": "connected", "since": 1_795_295_000.0, "host": "mqtt.exemplo.com.br", "port": 8883,
                   "last_error": "", "inflight": 2},
        "rates": {"in_per_s": 1.5, "out_per_s": 1.25},
        "counters": {"readings_committed": 123_456, "frames_decoded_with_a_rather_long_counter_name": 1},
        "errors": {"crc": 2},
    }  # fmt: skip


@pytest.mark.parametrize(("value", "decimals", "text"), [
    (1234567.891, 2, "1.234.567,89"), (-2212.4, 0, "-2.212"), (0.99, 2, "0,99"), (-0.4, 0, "0"), (12, 0, "12"),
], ids=["thousands-and-decimals", "negative", "fraction", "no-minus-zero", "integer"])  # fmt: skip
def test_numbers_are_written_the_brazilian_way(value: float, decimals: int, text: str) -> None:
    assert num(value, decimals) == text


def test_main_view_has_a_card_per_meter_with_ptbr_numbers_and_no_paths() -> None:
    page = render_html(snapshot(), 5)
    assert page.count('<article class="card">') == 2
    for text in ("-2.212 W", "injetando na rede", "219,9", "10,12", "0,99", "60,01", "1.234,568", "987,654",
                 "Energia consumida da rede (kWh)", "Energia injetada na rede (kWh)", "123.456", "1.500 de 1.000.000",
                 "2,3 MB", "75 s", "1,50 leituras/s", "26,1 h", "desconectado"):  # fmt: skip
        assert text in page, text
    assert "/dev/" not in page and "/run/" not in page and "ttyAICSS" not in page
    for english in ("219.9", "0.99", "60.01", "1234.568", "987.654", "1.50 ", "2.3 MB", "26.1 h"):
        assert english not in page, english
    assert "<script" not in page and "http://" not in page and "https://" not in page  # nothing from elsewhere


def test_detail_view_shows_the_ports_and_counters() -> None:
    page = render_details(snapshot(), 5)
    assert PORT_PATH in page and "could not open port /dev/ttyUSB1" in page
    assert "frames_decoded_with_a_rather_long_counter_name" in page and "123.456" in page


def test_values_are_escaped() -> None:
    s = snapshot()
    s["meters"][1]["firmware"] = "<b>x</b>"
    s["broker"]["last_error"] = "<script>alert(1)</script>"
    page = render_html(s, 5)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "<script>" not in page


@pytest.fixture
def server() -> Iterator[StatusServer]:
    srv = StatusServer("127.0.0.1", 0, snapshot)
    srv.start()
    yield srv
    srv.stop()


def test_detail_route_is_served(server: StatusServer) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/detalhes", timeout=5) as resp:
        assert resp.status == 200 and PORT_PATH in resp.read().decode()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium")
@pytest.mark.parametrize("path", ["/", "/detalhes"])
def test_no_horizontal_scroll_at_360_px(server: StatusServer, path: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 360, "height": 740}, locale="pt-BR")
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"http://127.0.0.1:{server.port}{path}")
            page.wait_for_load_state("load")
            widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            page.screenshot(path=str(tmp_path / "gateway-360.png"), full_page=True)
        finally:
            browser.close()
    assert widths[0] <= widths[1], f"page {widths[0]} px wide at {widths[1]} px"
    assert errors == []
