"""The probes of ``python -m backend health-check``: broker, InfluxDB, replicas, gateways, data freshness.

Each probe asks the running deployment one question with the backend's own settings (``BACKEND_*``: the same
broker user and InfluxDB credentials the replicas use) and turns the answer into :class:`~report.Check` values;
a probe that cannot reach its service reports a failure instead of raising, so one broken part never hides the
state of the others. Nothing is written anywhere.

Gateways are counted from their retained status messages, which the broker hands to a new subscriber right after
its SUBACK; the probe listens for ``gateway_window_s`` after that, a bound for the retained burst to arrive (a
deployment with thousands of gateways may want a longer window).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from typing import Any

import httpx
import msgspec
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from backend.aneel.store import AneelStore
from backend.errors import InfluxError
from backend.healthcheck.report import Check, Report, Thresholds, freshness, report
from backend.ingest.devicebook import fetch
from backend.ons.store import OnsStore
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import RP_RAW, table
from protocol import mqtt

MAX_NAMED: int = 10
"""Offline gateways or silent sites named in one line at most (the rest are counted)."""


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f" (+{len(items) - MAX_NAMED})" if len(items) > MAX_NAMED else "")


def gateway_statuses(s: Settings, window_s: float) -> dict[str, bool] | str:
    """``site/gateway`` → online from the retained statuses, or the reason the broker could not be asked."""
    statuses: dict[str, bool] = {}
    subscribed, failed = threading.Event(), []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{s.resolved_client_id()}-health",
                         protocol=paho.MQTTv5)
    if s.mqtt_username:
        client.username_pw_set(s.mqtt_username, s.mqtt_password or None)
    if s.mqtt_tls:
        client.tls_set(ca_certs=s.mqtt_ca_file or None, cert_reqs=ssl.CERT_REQUIRED)

    def on_connect(c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            failed.append(f"CONNACK {reason}")
            subscribed.set()
        else:
            c.subscribe(mqtt.STATUS_FILTER, qos=1)

    def on_subscribe(_c: paho.Client, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        if any(r.is_failure for r in reasons):
            failed.append(f"SUBSCRIBE {mqtt.STATUS_FILTER} refused")
        subscribed.set()

    def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            site, gateway, _ = mqtt.split_topic(msg.topic)
            statuses[f"{site}/{gateway}"] = mqtt.status_decoder.decode(msg.payload).online
        except (ValueError, msgspec.DecodeError):
            pass  # a cleared or foreign retained message is not a gateway's status

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    try:
        client.connect(s.mqtt_host, s.mqtt_port, keepalive=30)
    except OSError as exc:
        return f"{s.mqtt_host}:{s.mqtt_port}: {exc}"
    client.loop_start()
    try:
        if not subscribed.wait(10):
            return "no CONNACK/SUBACK within 10 s"
        if failed:
            return failed[0]
        time.sleep(window_s)  # the retained burst follows the SUBACK (module docstring)
        return dict(statuses)
    finally:
        client.disconnect()
        client.loop_stop()


async def broker_checks(s: Settings, window_s: float) -> list[Check]:
    found = await asyncio.to_thread(gateway_statuses, s, window_s)
    if isinstance(found, str):
        return [Check("broker", "falha", f"broker MQTT inacessível: {found}", f"MQTT broker unreachable: {found}")]
    offline = sorted(k for k, online in found.items() if not online)
    checks = [Check("broker", "ok", f"conectado em {s.mqtt_host}:{s.mqtt_port}",
                    f"connected to {s.mqtt_host}:{s.mqtt_port}")]
    if not found:
        checks.append(Check("gateways", "aviso", "nenhum gateway publicou seu estado", "no gateway status seen"))
    elif offline:
        checks.append(Check("gateways", "aviso", f"{len(found) - len(offline)} de {len(found)} online; fora do ar: "
                            f"{_names(offline)}", f"{len(found) - len(offline)} of {len(found)} online; offline: "
                            f"{_names(offline)}"))
    else:
        checks.append(Check("gateways", "ok", f"{len(found)} online", f"{len(found)} online"))
    return checks


async def replica_checks(urls: list[str]) -> list[Check]:
    checks = []
    async with httpx.AsyncClient(timeout=5.0) as http:
        for url in urls:
            name = f"réplica {url}"
            try:
                r = await http.get(url.rstrip("/") + "/ready")
            except httpx.HTTPError as exc:
                checks.append(Check(name, "falha", f"sem resposta: {exc}", f"no answer: {exc}"))
                continue
            if r.status_code == 200:
                checks.append(Check(name, "ok", "pronta", "ready"))
            else:
                checks.append(Check(name, "falha", f"não pronta (HTTP {r.status_code}): {r.text[:200]}",
                                    f"not ready (HTTP {r.status_code}): {r.text[:200]}"))
    return checks


async def data_checks(influx: InfluxClient, s: Settings, t: Thresholds) -> list[Check]:
    """Readings per site (the sites of the device book and those that reported in the last day), ANEEL, ONS."""
    try:
        version = await influx.ping()
    except InfluxError as exc:
        return [Check("influxdb", "falha", f"InfluxDB inacessível: {exc}", f"InfluxDB unreachable: {exc}")]
    checks = [Check("influxdb", "ok", f"responde (versão {version})", f"answers (version {version})")]
    now_ms = time.time() * 1000
    try:
        rows = await influx.rows(f"SELECT last(seq) FROM {table(s.influx_db, RP_RAW)} WHERE time > now() - 1d "
                                 "GROUP BY site", db=s.influx_db)
        newest = {str(r["site"]): (now_ms - int(r["time"])) / 1000 for r in rows}
        devices, _, _ = await fetch(influx, s.resolved_accounts_db())
        expected = {r.site for r in devices if not r.disabled}
    except InfluxError as exc:
        return [*checks, Check("medições", "falha", f"consulta falhou: {exc}", f"query failed: {exc}")]
    silent = sorted(expected - set(newest))
    if silent:
        checks.append(Check("medições", "falha", f"sites sem medições nas últimas 24 h: {_names(silent)}",
                            f"sites without readings in the last 24 h: {_names(silent)}"))
    for site in sorted(newest):
        checks.append(freshness(f"medições {site}", "medição mais recente", "newest reading", newest[site],
                                t.readings_warn_s, t.readings_fail_s))
    if not newest and not silent:
        checks.append(Check("medições", "aviso", "nenhuma medição nas últimas 24 h", "no readings in the last 24 h"))
    for name, store, warn, fail in (("aneel", AneelStore(influx, s.influx_db), t.aneel_warn_s, t.aneel_fail_s),
                                    ("ons", OnsStore(influx, s.influx_db), t.ons_warn_s, t.ons_fail_s)):
        if (name == "aneel" and not s.aneel_sync_enabled) or (name == "ons" and not s.ons_sync_enabled):
            checks.append(Check(name, "ok", "sincronização desligada na configuração", "sync disabled by settings"))
            continue
        try:
            status = await store.status()
        except InfluxError as exc:
            checks.append(Check(name, "falha", f"consulta falhou: {exc}", f"query failed: {exc}"))
            continue
        checks.append(freshness(name, f"dados {name.upper()} atualizados", f"{name.upper()} data pulled",
                                status.age_s, warn, fail))
    return checks


async def run(s: Settings, replicas: list[str], thresholds: Thresholds, gateway_window_s: float = 2.0) -> Report:
    async with InfluxClient(s.influx_url, username=s.influx_username, password=s.influx_password,
                            token=s.influx_token, timeout=s.influx_timeout_s) as influx:
        data, broker, reps = await asyncio.gather(data_checks(influx, s, thresholds),
                                                  broker_checks(s, gateway_window_s), replica_checks(replicas))
    return report([*broker, *reps, *data])
