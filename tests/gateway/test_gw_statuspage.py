"""The status page under a connection flood: bounded threads, stalled clients dropped, the page still served."""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.statuspage import WAITING, WORKERS, StatusServer


@pytest.fixture
def server() -> Iterator[StatusServer]:
    snapshot = {"n": 0}

    def snap() -> dict[str, Any]:
        snapshot["n"] += 1
        return {"served": snapshot["n"]}

    srv = StatusServer("127.0.0.1", 0, snap, timeout_s=0.2)
    srv.start()
    yield srv
    srv.stop()


def _json(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=5) as resp:
        return bytes(resp.read())


def test_connection_flood_costs_no_threads_and_stalled_clients_are_dropped(
    server: StatusServer, wait_for: Callable[..., Any],
) -> None:
    before = threading.active_count()
    flood = []
    for _ in range(80):  # half-sent requests that never finish
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"GET /status.json HTTP/1.1\r\nHost: x\r\n")
        s.setblocking(False)
        flood.append(s)
    open_ = set(flood)

    def all_closed_by_the_server() -> bool:
        for s in list(open_):
            try:
                if s.recv(4096) == b"":  # EOF: refused at once, or dropped after timeout_s
                    open_.discard(s)
            except BlockingIOError:
                pass
        assert threading.active_count() <= before + WORKERS  # never more threads than the pool
        return not open_

    try:
        wait_for(all_closed_by_the_server, 30, what=lambda: f"{len(open_)} flood connections still open")
    finally:
        for s in flood:
            s.close()
    assert b'"served"' in _json(server.port)


def test_connections_beyond_workers_and_waiting_are_closed_at_once(wait_for: Callable[..., Any]) -> None:
    srv = StatusServer("127.0.0.1", 0, dict, timeout_s=60.0)  # stalled clients keep their slots in this test
    srv.start()
    held = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(WORKERS + WAITING)]
    try:
        wait_for(lambda: srv.httpd.taken == WORKERS + WAITING, 10, what="every slot taken")
        extra = socket.create_connection(("127.0.0.1", srv.port))
        extra.settimeout(10)
        assert extra.recv(1) == b""  # closed by the server at once, not queued
        assert srv.httpd.refused == 1
        extra.close()
    finally:
        for s in held:
            s.close()
        srv.stop()
