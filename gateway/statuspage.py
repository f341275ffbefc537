"""The local status page: ``/`` (HTML in pt-BR, refreshes itself), ``/detalhes``, ``/status.json`` and ``/metrics``.

A stdlib ``HTTPServer`` in a daemon thread: small (no web framework in the gateway's RSS), read-only (GET and
HEAD only), optionally behind HTTP basic authentication. All four views render the same snapshot dictionary,
built by :meth:`gateway.app.Gateway.snapshot`.

The HTML is read on a phone next to the meters: a card per meter, numbers written the Brazilian way (decimal
comma), no JavaScript and nothing loaded from elsewhere (the Pi may have no Internet), nothing wider than 360 px.
Serial port paths and the raw counters are on ``/detalhes``, for whoever installs or repairs the gateway.

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


def num(value: float, decimals: int = 0) -> str:
    """``value`` written the Brazilian way: 1.234,5 (thousands dot, decimal comma).

    By hand rather than with babel: the page runs on the Raspberry Pi, whose install (the ``gateway`` extra) stays
    without locale data; the two swaps below are all pt-BR needs for plain numbers."""
    text = f"{round(value, decimals) or 0.0:,.{decimals}f}"  # "or 0.0": -0.4 W is "0", not "-0"
    return text.replace(",", "\0").replace(".", ",").replace("\0", ".")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{num(seconds)} s"
    if seconds < 7200:
        return f"{num(seconds / 60)} min"
    if seconds < 172800:
        return f"{num(seconds / 3600, 1)} h"
    return f"{num(seconds / 86400, 1)} dias"


def _mb(n: int) -> str:
    return f"{num(n / 1e6, 1)} MB"


def _delivery(q: Snapshot) -> str:
    if q["delivery"] == "receipts":
        return (f"sim: cada leitura fica guardada até o recibo do servidor (reenviada após "
                f"{num(q['receipt_timeout_s'])} s sem recibo)")
    if q["receipt_timeout_s"]:
        return ("não: o servidor ainda não enviou nenhum recibo (versão antiga?); usando a janela de reenvio "
                "após queda do broker")
    return "desativada (queue.receipt_timeout_s = 0); usando a janela de reenvio após queda do broker"


# Phone first: one column of cards that wrap into a grid on wider screens; long words (error texts, counter names)
# break instead of widening the page, so nothing scrolls sideways at 360 px.
_STYLE = """body{font-family:system-ui,sans-serif;margin:0 auto;padding:.75rem;max-width:72rem;line-height:1.35;
overflow-wrap:break-word}h1{font-size:1.3rem;margin:.2rem 0}h2{font-size:1.1rem;margin:1.2rem 0 .5rem}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,19rem),1fr));gap:.75rem}
.cards>*{min-width:0}.card{border:1px solid #ccc;border-radius:.5rem;padding:.6rem .8rem;background:#fafafa}
.card h3{font-size:1rem;margin:0 0 .4rem;font-family:monospace;overflow-wrap:anywhere}
.big{font-size:1.6rem;font-weight:bold;margin:.1rem 0 0}
.ok{color:#16660f}.bad{color:#a11}dl{display:grid;grid-template-columns:minmax(45%,1fr) auto;gap:.15rem .75rem;margin:0}
dt{color:#555}dd{margin:0;text-align:right;overflow-wrap:anywhere;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.25rem .4rem;text-align:left}
th{background:#eee}td{overflow-wrap:anywhere}td.n{text-align:right;font-variant-numeric:tabular-nums}.note{color:#555;font-size:.9rem}"""


def _dl(pairs: list[tuple[str, str]]) -> str:
    """A definition list of already escaped values, labels escaped here."""
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


def _meter_card(m: Snapshot) -> str:
    e = html.escape
    r = m["last_reading"] or {}
    ms = m["meter_status"] or {}
    link = m["link"] or ""
    up = link == "up"
    state = f'<span class="{"ok" if up else "bad"}">{e(LINK_PT.get(link, link))}</span>'

    def reading(key: str, decimals: int) -> str:
        return num(r[key], decimals) if key in r else "—"

    power = f"{num(r['p'])} W" if r else "—"
    # signed power: negative while a solar household injects into the grid
    flow = ("injetando na rede" if r["p"] < 0 else "consumindo da rede") if r else "sem leitura"
    return (f'<article class="card"><h3>{e(m["device"])}</h3><p class="big">{power}</p><p class="note">{flow}</p>'
            + _dl([
        ("Conexão", state),
        ("Última leitura", e(_fmt_time(r.get("ts", 0)))),
        ("Potência ativa (W)", reading("p", 0)),
        ("Tensão (V)", reading("vrms", 1)),
        ("Corrente (A)", reading("irms", 2)),
        ("Fator de potência", reading("pf", 2)),
        ("Frequência (Hz)", reading("freq", 2)),
        ("Energia consumida da rede (kWh)", reading("energy_kwh", 3)),
        ("Energia injetada na rede (kWh)", reading("export_kwh", 3)),
        ("Firmware", e(str(m["firmware"] or "—"))),
        ("Reinícios (boot)", num(m["boot"]) if m["boot"] is not None else "—"),
        ("Leituras recebidas", num(m["readings"])),
        ("Duplicadas", num(m["duplicates"])),
        ("Fila no medidor", num(ms["queued"]) if "queued" in ms else "—"),
        ("Descartadas no medidor", num(ms["dropped"]) if "dropped" in ms else "—"),
        ("Erros de recepção no medidor", num(ms["rx_errors"]) if "rx_errors" in ms else "—"),
    ]) + "</article>")  # fmt: skip


def _page(s: Snapshot, title: str, body: str, refresh_s: int) -> str:
    e = html.escape
    return f"""<!doctype html>
<html lang="pt-BR"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh_s}">
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<title>CDS — gateway {e(s["gateway"])}{e(title)}</title><style>{_STYLE}</style></head><body>
<h1>Gateway {e(s["gateway"])} — instalação {e(s["site"])}</h1>
<p class="note">Versão {e(s["version"])} · em funcionamento há {_age(s["uptime_s"])} · atualizado em
{_fmt_time(s["now_ms"])} (a página recarrega a cada {refresh_s} s)</p>
{body}</body></html>
"""


def render_html(s: Snapshot, refresh_s: int) -> str:
    """The pt-BR main page: a card per meter, the queue and the broker link. Every value is escaped.

    No filesystem path appears here (serial ports are device paths of the Raspberry Pi, of no use to someone
    checking the meters on a phone): :func:`render_details` shows them."""
    e = html.escape
    q, b = s["queue"], s["broker"]
    meters = "".join(_meter_card(m) for m in s["meters"]) or '<p class="note">Nenhum medidor visto.</p>'
    connected = b["state"] == "connected"
    queue = _dl([
        ("Leituras na fila", f'{num(q["rows"])} de {num(q["max_rows"])}'),
        ("Tamanho", f'{_mb(q["bytes"])} de {num(q["max_bytes"] / 1e6)} MB'),
        ("Leitura mais antiga não enviada", _age(q["oldest_age_s"]) if q["rows"] else "—"),
        ("Política de fila cheia", e(POLICY_PT.get(q["policy"], q["policy"]))),
        ("Descartadas por fila cheia", num(q["dropped_full"])),
        ("Expiradas sem envio", num(q["expired"])),
        ("Perdidas no medidor", num(q["dropped_at_meter"])),
        ("Não recebidas (confirmadas por outro)", num(q["skipped_unknown"])),
        ("Enviadas, aguardando o recibo do servidor", f'{num(q["unconfirmed_rows"])} ({_mb(q["unconfirmed_bytes"])})'),
        ("Último recibo do servidor", _fmt_time(q["last_receipt_ms"])),
        ("Removidas sem recibo por falta de espaço", num(q["unconfirmed_trimmed"])),
        ("Recusadas pelo servidor (dead letter)", num(q["dead_lettered"])),
        (f'Guardadas para reenvio após queda do broker (últimos {num(q["replay_window_s"])} s)',
         f'{num(q["replay_rows"])} ({_mb(q["replay_bytes"])})'),
        ("Removidas da reserva de reenvio por falta de espaço", num(q["replay_trimmed"])),
    ])  # fmt: skip
    broker = _dl([
        ("Estado", f'<span class="{"ok" if connected else "bad"}">{e(BROKER_PT.get(b["state"], b["state"]))}</span>'
                   f' desde {_fmt_time(int(b["since"] * 1000))}'),
        ("Endereço", f'{e(b["host"])}:{b["port"]}'),
        ("Mensagens aguardando confirmação", num(b["inflight"])),
        ("Último erro", e(b["last_error"] or "—")),
        ("Taxa de entrada", f'{num(s["rates"]["in_per_s"], 2)} leituras/s'),
        ("Taxa de envio", f'{num(s["rates"]["out_per_s"], 2)} leituras/s'),
    ])  # fmt: skip
    errors = "".join(f'<tr><td>{e(k)}</td><td class="n">{num(v)}</td></tr>' for k, v in sorted(s["errors"].items()))
    body = f"""<p class="note"><a href="detalhes">Detalhes (portas seriais e contadores)</a> ·
<a href="status.json">JSON</a> · <a href="metrics">métricas</a></p>
<h2>Medidores</h2><div class="cards">{meters}</div>
<div class="cards">
<section><h2>Fila local</h2><div class="card">{queue}
<p class="note">Confirmação de entrega pelo servidor: {e(_delivery(q))}</p></div></section>
<section><h2>Servidor MQTT (broker)</h2><div class="card">{broker}</div></section>
<section><h2>Erros por tipo</h2><table><tr><th>Tipo</th><th>Quantidade</th></tr>
{errors or "<tr><td colspan=2>nenhum</td></tr>"}</table></section>
</div>"""
    return _page(s, "", body, refresh_s)


def render_details(s: Snapshot, refresh_s: int) -> str:
    """The pt-BR detail page, for whoever installs or repairs the gateway: serial ports with their paths, which
    meter answers on each, and every counter."""
    e = html.escape
    ports = "".join(
        f'<article class="card"><h3>{e(lk["port"])}</h3>' + _dl([
            ("Estado", e(LINK_PT.get(lk["state"], lk["state"]))),
            ("Medidor", e(lk["device"] or "—")),
            ("Desde", _fmt_time(int(lk["since"] * 1000))),
            ("Aberturas", num(lk["opens"])),
        ]) + (f'<p class="note">Último erro: {e(lk["last_error"])}</p>' if lk["last_error"] else "") + "</article>"
        for lk in s["links"]
    ) or '<p class="note">Nenhuma porta.</p>'  # fmt: skip
    counters = "".join(f'<tr><td>{e(k)}</td><td class="n">{num(v)}</td></tr>'
                       for k, v in sorted(s["counters"].items()))
    body = f"""<p class="note"><a href="./">Voltar aos medidores</a></p>
<h2>Portas seriais</h2><div class="cards">{ports}</div>
<h2>Contadores</h2><table><tr><th>Nome</th><th>Valor</th></tr>{counters}</table>"""
    return _page(s, " — detalhes", body, refresh_s)


class _BoundedServer(HTTPServer):
    """An HTTP server whose connections are served by a fixed pool, with a cap on those waiting for it."""

    request_queue_size = 64  # accept a burst at once and decide here, rather than leave it to the kernel

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        # Made before the socket is bound: a bind that fails (port taken) calls server_close(), which shuts the pool
        # down; were it missing, that AttributeError would escape the gateway's "run without the page" fallback and
        # stop the gateway. The pool starts no thread until a request comes.
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="status-http")
        self._lock = threading.Lock()
        self.taken = 0
        """Connections being served or waiting for a worker."""
        self.refused = 0
        super().__init__(address, handler)

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
                    self._send(200, render_html(snapshot(), refresh_s).encode(), "text/html; charset=utf-8")
                elif path == "/detalhes":
                    self._send(200, render_details(snapshot(), refresh_s).encode(), "text/html; charset=utf-8")
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
