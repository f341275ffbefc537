"""The local status page: ``/`` (HTML in pt-BR, refreshes itself), ``/status.json`` and ``/metrics``.

A stdlib ``HTTPServer`` in a daemon thread: small (no web framework in the gateway's RSS), read-only (GET and
HEAD only), optionally behind HTTP basic authentication. All three views render the same snapshot dictionary,
built by :meth:`gateway.app.Gateway.snapshot`.

Bounded, because the page shares a Raspberry Pi with the readings: a fixed pool of worker threads serves it, a
few connections may wait for a worker, any more are closed at once, and a request that is not complete within
``timeout_s`` is dropped. A flood of connections therefore costs neither threads nor memory, and a client that
sends half a request and stalls holds a worker for seconds, not forever.
"""

from __future__ import annotations

import base64
import hmac
import html
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

WORKERS: Final = 4
"""Requests served at once."""
WAITING: Final = 16
"""Connections that may wait for a worker; beyond workers + waiting a new connection is closed at once."""

Snapshot = dict[str, Any]

LINK_PT = {"up": "conectado", "down": "desconectado", "connecting": "conectando", "stopped": "parado"}
BROKER_PT = {
    "connected": "conectado", "disconnected": "desconectado", "connecting": "conectando", "stopped": "parado",
}  # fmt: skip
POLICY_PT = {"drop-oldest": "descartar as mais antigas", "refuse-new": "recusar novas"}


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        for name, value in sorted(s["counters"].items()):
            yield CounterMetricFamily(f"cds_gateway_{name}", f"Gateway counter {name} (since start)", value=value)
        errors = CounterMetricFamily("cds_gateway_errors", "Errors by kind (since start)", labels=["kind"])
        for kind, value in sorted(s["errors"].items()):
            errors.add_metric([kind], value)
        yield errors
        q = s["queue"]
        lost = CounterMetricFamily(
            "cds_gateway_readings_lost", "Readings lost, by reason (persisted)", labels=["reason"]
        )
        for reason in ("dropped_full", "expired", "dropped_at_meter", "skipped_unknown"):
            lost.add_metric([reason], q[reason])
        yield lost
        yield GaugeMetricFamily("cds_gateway_queue_rows", "Readings waiting in the queue", value=q["rows"])
        yield GaugeMetricFamily("cds_gateway_queue_bytes", "Bytes counted against queue.max_bytes", value=q["bytes"])
        yield GaugeMetricFamily(
            "cds_gateway_queue_oldest_age_seconds", "Age of the oldest unsent reading", value=q["oldest_age_s"]
        )
        yield GaugeMetricFamily(
            "cds_gateway_replay_rows", "PUBACKed readings kept for replay after a broker crash", value=q["replay_rows"]
        )
        yield GaugeMetricFamily("cds_gateway_replay_bytes", "Bytes of the replay window", value=q["replay_bytes"])
        yield CounterMetricFamily(
            "cds_gateway_replay_trimmed",
            "Replay rows deleted early to respect the bounds (persisted)",
            value=q["replay_trimmed"],
        )
        yield GaugeMetricFamily(
            "cds_gateway_receipts_mode", "1 while readings are kept until the backend's receipt, 0 while the replay "
            "window is in force (no receipt seen: an older backend, or receipts off)",
            value=int(q["delivery"] == "receipts"),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "cds_gateway_unconfirmed_rows", "PUBACKed readings waiting for the backend's receipt",
            value=q["unconfirmed_rows"],
        )  # fmt: skip
        yield GaugeMetricFamily("cds_gateway_unconfirmed_bytes", "Bytes of them", value=q["unconfirmed_bytes"])
        yield CounterMetricFamily(
            "cds_gateway_unconfirmed_trimmed", "Unconfirmed readings deleted to respect the bounds (persisted)",
            value=q["unconfirmed_trimmed"],
        )  # fmt: skip
        yield CounterMetricFamily(
            "cds_gateway_dead_lettered", "Readings the backend refused and dead-lettered, deleted on its receipt "
            "(persisted)", value=q["dead_lettered"],
        )  # fmt: skip
        b = s["broker"]
        connected = int(b["state"] == "connected")
        yield GaugeMetricFamily("cds_gateway_broker_connected", "1 when connected", value=connected)
        yield GaugeMetricFamily("cds_gateway_inflight_messages", "Messages awaiting PUBACK", value=b["inflight"])
        links = GaugeMetricFamily("cds_gateway_link_up", "1 when the port is open", labels=["port"])
        for link in s["links"]:
            links.add_metric([link["port"]], int(link["state"] == "up"))
        yield links
        seen = GaugeMetricFamily("cds_gateway_meter_last_seen_seconds", "Last frame from a meter", labels=["device"])
        power = GaugeMetricFamily(
            "cds_gateway_meter_power_watts", "Last active power (negative = export)", labels=["device"]
        )
        energy = GaugeMetricFamily("cds_gateway_meter_energy_kwh", "Last imported-energy register", labels=["device"])
        export = GaugeMetricFamily(
            "cds_gateway_meter_export_kwh", "Last exported-energy register (0: meter without one)", labels=["device"]
        )
        for m in s["meters"]:
            seen.add_metric([m["device"]], m["last_seen_ms"] / 1000)
            if m["last_reading"]:
                power.add_metric([m["device"]], m["last_reading"]["p"])
                energy.add_metric([m["device"]], m["last_reading"]["energy_kwh"])
                export.add_metric([m["device"]], m["last_reading"]["export_kwh"])
        yield from (seen, power, energy, export)


def _fmt_time(ms: int) -> str:
    if not ms:
        return "—"
    return time.strftime("%d/%m/%Y %H:%M:%S", time.localtime(ms / 1000))


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} dias"


def _delivery(q: Snapshot) -> str:
    if q["delivery"] == "receipts":
        return (f"sim: cada leitura fica guardada até o recibo do servidor (reenviada após "
                f"{q['receipt_timeout_s']:g} s sem recibo)")
    if q["receipt_timeout_s"]:
        return ("não: o servidor ainda não enviou nenhum recibo (versão antiga?); usando a janela de reenvio "
                "após queda do broker")
    return "desativada (queue.receipt_timeout_s = 0); usando a janela de reenvio após queda do broker"


def render_html(s: Snapshot, refresh_s: int) -> str:
    """The pt-BR page. Every value is escaped."""
    e = html.escape
    q, b = s["queue"], s["broker"]
    rows = []
    for m in s["meters"]:
        r = m["last_reading"] or {}
        ms = m["meter_status"] or {}
        rows.append(
            "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in (
                m["device"], m["port"], LINK_PT.get(m["link"], m["link"]), m["firmware"], m["boot"],
                _fmt_time(r.get("ts", 0)), r.get("p", "—"), r.get("vrms", "—"), r.get("irms", "—"),
                r.get("pf", "—"), r.get("freq", "—"),
                f"{r['energy_kwh']:.3f}" if r else "—", f"{r['export_kwh']:.3f}" if r else "—",
                m["readings"], m["duplicates"],
                ms.get("queued", "—"), ms.get("dropped", "—"), ms.get("rx_errors", "—"),
            )) + "</tr>"
        )  # fmt: skip
    links = "".join(
        f"<tr><td>{e(lk['port'])}</td><td>{e(LINK_PT.get(lk['state'], lk['state']))}</td>"
        f"<td>{e(lk['device'] or '—')}</td><td>{e(_fmt_time(int(lk['since'] * 1000)))}</td>"
        f"<td>{e(lk['last_error'] or '—')}</td></tr>"
        for lk in s["links"]
    )
    errors = "".join(f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in sorted(s["errors"].items())) or (
        "<tr><td colspan=2>nenhum</td></tr>"
    )
    counters = "".join(f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in sorted(s["counters"].items()))
    return f"""<!doctype html>
<html lang="pt-BR"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh_s}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>CDS — gateway {e(s["gateway"])}</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:.25em .5em;text-align:left}}th{{background:#eee}}</style></head><body>
<h1>Gateway {e(s["gateway"])} — instalação {e(s["site"])}</h1>
<p>Versão {e(s["version"])} · em funcionamento há {_age(s["uptime_s"])} · atualizado em {_fmt_time(s["now_ms"])}
(a página recarrega a cada {refresh_s} s; <a href="status.json">JSON</a> · <a href="metrics">métricas</a>)</p>
<h2>Medidores</h2>
<table><tr><th>Medidor</th><th>Porta</th><th>Conexão</th><th>Firmware</th><th>Boot</th><th>Última leitura</th>
<th>Potência ativa (W)</th><th>Tensão (V)</th><th>Corrente (A)</th><th>Fator de potência</th><th>Frequência (Hz)</th>
<th>Energia consumida da rede (kWh)</th><th>Energia injetada na rede (kWh)</th><th>Leituras</th>
<th>Duplicadas</th><th>Fila no medidor</th>
<th>Descartadas no medidor</th><th>Erros de recepção no medidor</th></tr>
{"".join(rows) or "<tr><td colspan=17>nenhum medidor visto</td></tr>"}</table>
<h2>Portas seriais</h2>
<table><tr><th>Porta</th><th>Estado</th><th>Medidor</th><th>Desde</th><th>Último erro</th></tr>{links}</table>
<h2>Fila local</h2>
<table><tr><th>Leituras na fila</th><td>{q["rows"]} de {q["max_rows"]}</td></tr>
<tr><th>Tamanho</th><td>{q["bytes"] / 1e6:.1f} MB de {q["max_bytes"] / 1e6:.0f} MB</td></tr>
<tr><th>Leitura mais antiga não enviada</th><td>{_age(q["oldest_age_s"]) if q["rows"] else "—"}</td></tr>
<tr><th>Política de fila cheia</th><td>{e(POLICY_PT.get(q["policy"], q["policy"]))}</td></tr>
<tr><th>Descartadas por fila cheia</th><td>{q["dropped_full"]}</td></tr>
<tr><th>Expiradas sem envio</th><td>{q["expired"]}</td></tr>
<tr><th>Perdidas no medidor</th><td>{q["dropped_at_meter"]}</td></tr>
<tr><th>Não recebidas (confirmadas por outro)</th><td>{q["skipped_unknown"]}</td></tr>
<tr><th>Confirmação de entrega pelo servidor</th><td>{_delivery(q)}</td></tr>
<tr><th>Enviadas, aguardando o recibo do servidor</th>
<td>{q["unconfirmed_rows"]} ({q["unconfirmed_bytes"] / 1e6:.1f} MB)</td></tr>
<tr><th>Último recibo do servidor</th><td>{_fmt_time(q["last_receipt_ms"])}</td></tr>
<tr><th>Removidas sem recibo por falta de espaço</th><td>{q["unconfirmed_trimmed"]}</td></tr>
<tr><th>Recusadas pelo servidor (dead letter)</th><td>{q["dead_lettered"]}</td></tr>
<tr><th>Guardadas para reenvio após queda do broker (últimos {q["replay_window_s"]:g} s)</th>
<td>{q["replay_rows"]} ({q["replay_bytes"] / 1e6:.1f} MB)</td></tr>
<tr><th>Removidas da reserva de reenvio por falta de espaço</th><td>{q["replay_trimmed"]}</td></tr></table>
<h2>Servidor MQTT (broker)</h2>
<table><tr><th>Estado</th><td>{e(BROKER_PT.get(b["state"], b["state"]))}
desde {_fmt_time(int(b["since"] * 1000))}</td></tr>
<tr><th>Endereço</th><td>{e(b["host"])}:{b["port"]}</td></tr>
<tr><th>Mensagens aguardando confirmação</th><td>{b["inflight"]}</td></tr>
<tr><th>Último erro</th><td>{e(b["last_error"] or "—")}</td></tr>
<tr><th>Taxa de entrada</th><td>{s["rates"]["in_per_s"]:.2f} leituras/s</td></tr>
<tr><th>Taxa de envio</th><td>{s["rates"]["out_per_s"]:.2f} leituras/s</td></tr></table>
<h2>Erros por tipo</h2><table><tr><th>Tipo</th><th>Quantidade</th></tr>{errors}</table>
<h2>Contadores</h2><table><tr><th>Nome</th><th>Valor</th></tr>{counters}</table>
</body></html>
"""


class _BoundedServer(HTTPServer):
    """An HTTP server whose connections are served by a fixed pool, with a cap on those waiting for it."""

    request_queue_size = 64  # accept a burst at once and decide here, rather than leave it to the kernel

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="status-http")
        self._lock = threading.Lock()
        self.taken = 0
        """Connections being served or waiting for a worker."""
        self.refused = 0

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket],
                        client_address: Any) -> None:
        with self._lock:
            full = self.taken >= WORKERS + WAITING
            if full:
                self.refused += 1
            else:
                self.taken += 1
        if full:  # a flood: closing now costs nothing, queueing would cost memory
            self.shutdown_request(request)
            return
        self._pool.submit(self._serve, request, client_address)

    def _serve(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._lock:
                self.taken -= 1

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


class StatusServer:
    """Serves the three views of ``snapshot()`` on ``bind:port`` until :meth:`stop`."""

    def __init__(
        self, bind: str, port: int, snapshot: Callable[[], Snapshot], *, username: str = "cds",
        password: str = "", refresh_s: int = 5, timeout_s: float = 5.0,
    ) -> None:  # fmt: skip
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_SnapshotCollector(snapshot))
        expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode() if password else ""

        class Handler(BaseHTTPRequestHandler):
            server_version = "cds-gateway"
            timeout = timeout_s  # socket timeout: a half-sent request is dropped, its worker freed

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("http: " + fmt, *args)

            def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                if expected and not hmac.compare_digest(  # constant time: no guessing the password byte by byte
                    self.headers.get("Authorization", "").encode(), expected.encode()
                ):
                    self._send(401, "Senha necessária\n".encode(), "text/plain; charset=utf-8",
                               {"WWW-Authenticate": 'Basic realm="CDS gateway", charset="UTF-8"'})  # fmt: skip
                    return
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    body = render_html(snapshot(), refresh_s).encode()
                    self._send(200, body, "text/html; charset=utf-8")
                elif path == "/status.json":
                    self._send(200, json.dumps(snapshot()).encode(), "application/json")
                elif path == "/metrics":
                    self._send(200, generate_latest(registry), "text/plain; version=0.0.4; charset=utf-8")
                else:
                    self._send(404, "Página não encontrada\n".encode(), "text/plain; charset=utf-8")

            do_HEAD = do_GET

            def _read_only(self) -> None:
                self._send(405, b"Somente leitura\n", "text/plain; charset=utf-8", {"Allow": "GET, HEAD"})

            do_POST = do_PUT = do_DELETE = do_PATCH = _read_only

        self.httpd = _BoundedServer((bind, port), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="status-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
