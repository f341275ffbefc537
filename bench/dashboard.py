"""The dashboard's first view and the p95 of every API call it makes, against a running backend.

Start the demo first (``bash scripts/run.sh``; it prints the URL, the user and where the password is), then::

    .venv/bin/python bench/dashboard.py --base http://127.0.0.1:8000 --user admin --password-file PATH

Prints, for each call the dashboard makes on its first view and while it stays open (the "at a glance" strip
polls ``/painel/agora`` every 5 s and ``/painel/resumo`` every minute), p50 and p95 over ``--repeat`` sequential
calls, beside the floor of ``/health`` measured in the same run; then the first-view time in Debian's Chromium
(``/usr/bin/chromium``, headless): from navigation with a valid session to today's kWh and the consumption chart on
screen, cold (first load, Plotly.js not cached) and warm (reload), median of ``--views``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

TZ = ZoneInfo("America/Sao_Paulo")
CHROMIUM = Path("/usr/bin/chromium")


def calls(site: str, device: str | None, today: dt.date) -> list[tuple[str, str, dict[str, str]]]:
    """(label, path, query) of what the dashboard asks for a site with the default 30 days by day."""
    start = (today - dt.timedelta(days=29)).isoformat()
    rng = {"inicio": start, "fim": today.isoformat()}
    out = [
        ("painel/agora", "/api/v1/painel/agora", {"site": site}),
        ("painel/resumo", "/api/v1/painel/resumo", {"site": site}),
        ("analytics/sites", "/api/v1/analytics/sites", {}),
        ("consumo 30 dias por dia", "/api/v1/analytics/consumo", {"site": site, "granularidade": "day", **rng}),
        ("consumo 30 dias por hora", "/api/v1/analytics/consumo", {"site": site, "granularidade": "hour", **rng}),
        ("painel/postos 30 dias", "/api/v1/painel/postos", {"site": site, **rng}),
        ("custo do ciclo", "/api/v1/analytics/custo", {"site": site, "referencia": today.isoformat()}),
        ("tarifa-branca 30 dias", "/api/v1/analytics/tarifa-branca", {"site": site, **rng}),
        ("previsao", "/api/v1/analytics/previsao", {"site": site}),
        ("alertas", "/api/v1/analytics/alertas", {"site": site}),
        ("aneel/bandeiras", "/api/v1/aneel/bandeiras", {}),
        ("ons/agora", "/api/v1/ons/agora", {}),
        ("renovavel do mês", "/api/v1/analytics/renovavel", {"site": site, "inicio": today.replace(day=1).isoformat(),
                                                             "fim": today.isoformat()}),
        ("relatorio CSV 30 dias", "/api/v1/analytics/relatorios", {"site": site, "tipo": "diario", "formato": "csv",
                                                                   **rng}),
    ]
    if device:
        out.append(("consumo de um medidor 30 dias", "/api/v1/analytics/consumo",
                    {"device": device, "granularidade": "day", **rng}))
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def time_calls(client: httpx.Client, path: str, query: dict[str, str], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = client.get(path, params=query)
        out.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"{path} answered {r.status_code}: {r.text[:200]}")
    return out


def first_view(base: str, token: str, user: str, views: int) -> tuple[float, float]:
    from playwright.sync_api import sync_playwright  # only this part needs a browser

    cold, warm = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            for _ in range(views):
                context = browser.new_context(viewport={"width": 1366, "height": 900}, locale="pt-BR",
                                              timezone_id="America/Sao_Paulo")
                context.add_init_script(f"sessionStorage.setItem('cds-token', {token!r});"
                                        f"sessionStorage.setItem('cds-user', JSON.stringify({{name: {user!r}, "
                                        "role: 'admin'}));")
                page = context.new_page()
                for sink in (cold, warm):
                    t0 = time.perf_counter()
                    if sink is cold:
                        page.goto(f"{base}/painel/")
                    else:
                        page.reload()
                    page.wait_for_function("document.getElementById('hoje-kwh').textContent.endsWith('kWh') && "
                                           "document.querySelector('#chart-consumo .main-svg') !== null",
                                           timeout=30_000)
                    sink.append((time.perf_counter() - t0) * 1000)
                context.close()
        finally:
            browser.close()
    return statistics.median(cold), statistics.median(warm)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="http://127.0.0.1:8000")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password-file", type=Path, required=True)
    ap.add_argument("--site", help="default: the first site the user sees")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--views", type=int, default=5)
    args = ap.parse_args(argv)
    password = args.password_file.read_text(encoding="utf-8").strip()
    with httpx.Client(base_url=args.base, timeout=60) as client:
        login = client.post("/api/v1/auth/token", json={"username": args.user, "password": password})
        login.raise_for_status()
        token = login.json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        sites: list[dict[str, Any]] = client.get("/api/v1/analytics/sites").json()
        site = next(s for s in sites if args.site in (None, s["id"]))
        device = site["dispositivos"][0] if site["dispositivos"] else None
        print(f"site {site['id']}: {len(site['dispositivos'])} meters; {args.repeat} sequential calls each")
        floor = time_calls(client, "/health", {}, args.repeat)
        print(f"{'call':34} {'p50 ms':>8} {'p95 ms':>8}")
        print(f"{'floor: /health':34} {statistics.median(floor):8.1f} {percentile(floor, 0.95):8.1f}")
        for label, path, query in calls(site["id"], device, dt.datetime.now(TZ).date()):
            ms = time_calls(client, path, query, args.repeat)
            print(f"{label:34} {statistics.median(ms):8.1f} {percentile(ms, 0.95):8.1f}")
    if CHROMIUM.exists():
        cold, warm = first_view(args.base, token, args.user, args.views)
        print(f"first view (session open -> today's kWh and the chart on screen): cold {cold:.0f} ms, "
              f"warm {warm:.0f} ms (median of {args.views})")
    else:
        print("first view: skipped, /usr/bin/chromium is missing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
