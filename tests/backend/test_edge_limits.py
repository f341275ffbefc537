"""Connection floods against the real ``python -m backend`` process: half-sent requests and idle sockets from
other addresses are closed (at once beyond the per-address cap, after the header timeout otherwise), while
``/health`` keeps answering and MQTT ingest keeps storing readings."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from devstack.processes import HOST
from protocol import mqtt
from tests.backend.conftest import batch_bytes, count_points, device_id, make_settings, reading

CAP = 20


def _flood(port: int, source: str, n: int, payload: bytes) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((source, 0))  # another loopback address: another client as far as the server can tell
        s.connect((HOST, port))
        if payload:
            s.sendall(payload)
        s.setblocking(False)
        out.append(s)
    return out


def _closed_by_server(sockets: list[socket.socket]) -> int:
    """How many of ``sockets`` the server has closed (EOF or reset)."""
    closed = 0
    for s in sockets:
        try:
            if s.recv(4096) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed += 1
    return closed


def test_connection_flood_is_shed_and_health_and_ingest_keep_working(
    broker: Any, influx: Any, unique_id: str, tmp_path: Path, backend_process: Callable[..., Any],
    publisher_factory: Any, wait_for: Callable[..., Any],
) -> None:
    settings = make_settings(broker, influx, unique_id, http_header_timeout_s=1.0,
                             http_max_connections_per_address=CAP)
    backend = backend_process(settings)
    backend.start()
    half_sent = _flood(backend.port, "127.0.0.2", 200, b"GET /health HTTP/1.1\r\nHost: x\r\n")
    idle = _flood(backend.port, "127.0.0.3", 200, b"")
    try:
        # beyond the cap, closed before a byte is read; within it, closed once the header timeout passes
        wait_for(lambda: _closed_by_server(half_sent) >= 200 - CAP, 10, what="half-sent requests over the cap")
        started = time.monotonic()
        health = httpx.get(f"http://{HOST}:{backend.port}/health", timeout=5)
        latency = time.monotonic() - started
        assert health.status_code == 200
        print(f"/health during the flood: {latency * 1000:.1f} ms")
        pub = publisher_factory(broker)
        now = int(time.time() * 1000)
        pub.publish(mqtt.readings_topic(unique_id, "gw1"),
                    batch_bytes(unique_id, "gw1", [reading(device_id(1), s, now - 60_000 + s) for s in range(50)]))
        pub.wait_all_acked()
        wait_for(lambda: count_points(influx, unique_id) == 50, 15, what="readings stored during the flood")
        wait_for(lambda: _closed_by_server(half_sent + idle) == 400, 20,
                 what=lambda: f"all flood connections closed ({_closed_by_server(half_sent + idle)} of 400)")
        assert httpx.get(f"http://{HOST}:{backend.port}/health", timeout=5).status_code == 200
    finally:
        for s in half_sent + idle:
            s.close()
