"""``python -m gateway run``: wires the queue, the serial links, the ingest thread, the forwarder and the status page.

Threads: one per serial port (blocking reads), ``ingest`` (group commit + ACK), paho's network thread,
``forwarder`` (the pump), ``status-http``; the main thread rescans port globs and waits for SIGTERM/SIGINT.
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import sqlite3
import threading
import time

from gateway.forwarder import VERSION, Forwarder
from gateway.ingest import Ingest
from gateway.queue import DurableQueue
from gateway.serial_link import SerialLink
from gateway.settings import Settings
from gateway.stats import Stats
from gateway.statuspage import Snapshot, StatusServer

log = logging.getLogger(__name__)

_GLOB_CHARS = set("*?[")


class Gateway:
    """The running gateway; :meth:`run` blocks until SIGTERM or SIGINT."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = Stats()
        q = settings.queue
        self.queue = DurableQueue(
            q.path, max_rows=q.max_rows, max_bytes=q.max_bytes, max_age_s=q.max_age_days * 86400,
            full_policy=q.full_policy, synchronous=q.synchronous, replay_window_s=q.replay_window_s,
        )  # fmt: skip
        # each talks to the other (readings and device infos out, downlink CONFIGs in): the ingest is built on the
        # forwarder, and the forwarder's inbound side is connected once both exist
        self.forwarder = Forwarder(settings, self.queue, self.stats)
        self.ingest = Ingest(settings, self.queue, self.stats, self.forwarder)
        self.forwarder.attach(self.ingest)
        self.links: dict[str, SerialLink] = {}
        self.status: StatusServer | None = None
        self._stop = threading.Event()

    # --- ports -----------------------------------------------------------------------------------------------------

    def _scan_ports(self) -> None:
        known_real = {os.path.realpath(p) for p in self.links}
        for entry in self.settings.serial.ports:
            paths = sorted(glob.glob(entry)) if _GLOB_CHARS & set(entry) else [entry]
            for path in paths:
                if path in self.links:
                    continue
                real = os.path.realpath(path)
                if real in known_real and real != path:
                    continue  # the same device reached through another symlink
                s = self.settings.serial
                link = SerialLink(
                    path, self.ingest.events, self.stats, baudrate=s.baudrate,
                    reopen_min_s=s.reopen_min_s, reopen_max_s=s.reopen_max_s,
                )  # fmt: skip
                self.links[path] = link
                known_real.add(real)
                log.info("watching serial port %s", path)
                link.start()

    # --- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.ingest.start()
        self.forwarder.start()
        st = self.settings.status
        if st.enabled:
            try:
                self.status = StatusServer(
                    st.bind, st.port, self.snapshot, username=st.username, password=st.password, refresh_s=st.refresh_s
                )
            except OSError as exc:  # the readings matter more than the page: keep running without it
                self.stats.error("status_page")
                log.error("status page disabled: cannot listen on %s:%d: %s", st.bind, st.port, exc)
            else:
                self.status.start()
                log.info("status page on http://%s:%d/", st.bind, self.status.port)
        self._scan_ports()

    def run(self) -> None:
        """Start, then rescan port globs until stopped by SIGTERM/SIGINT."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        self.start()
        log.info("gateway %s/%s running (queue %s, %d rows waiting)", self.settings.site, self.settings.gateway,
                 self.settings.queue.path, self.queue.rows)  # fmt: skip
        try:
            while not self._stop.wait(self.settings.serial.rescan_s):
                self._scan_ports()
        finally:
            self.stop()

    def stop(self) -> None:
        # In the order of the data: no more frames, then the ingest commits and ACKs its last window, then the
        # forwarder says offline. The clean-stop mark waits for the ingest thread: it is written on that thread's
        # writer connection.
        log.info("stopping")
        for link in self.links.values():
            link.stop()
        self.ingest.stop()
        self.forwarder.stop()
        if self.status:
            self.status.stop()
        try:
            self.queue.mark_clean_stop()
        except sqlite3.Error as exc:
            log.error("cannot record the clean stop (the next start replays the window): %s", exc)
        self.queue.close()

    # --- the status page's one snapshot ------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        now = time.time()
        s = self.stats.snapshot()
        oldest = self.queue.oldest_ts() if self.queue.rows else None
        with self.ingest.devices_lock:
            meters = [
                {
                    "device": d.info.device, "port": d.info.port, "link": d.info.link, "firmware": d.info.firmware,
                    "boot": d.info.boot, "report_period_ms": d.info.report_period_ms, "last_seen_ms": d.last_seen_ms,
                    "last_reading": dict(d.last_reading), "meter_status": dict(d.meter_status),
                    "readings": d.readings, "duplicates": d.duplicates,
                }
                for d in sorted(self.ingest.devices.values(), key=lambda d: d.info.device)
            ]  # fmt: skip
        by_port = {m["port"]: m["device"] for m in meters if m["link"] == "up"}
        counters = self.queue.counters
        f = self.forwarder
        receipts = self.queue.receipts
        return {
            "site": self.settings.site,
            "gateway": self.settings.gateway,
            "version": VERSION,
            "now_ms": int(now * 1000),
            "uptime_s": s["uptime_s"],
            "meters": meters,
            "links": [
                {
                    "port": p,
                    "state": lk.state,
                    "since": lk.since,
                    "last_error": lk.last_error,
                    "opens": lk.opens,
                    "device": by_port.get(p),
                }
                for p, lk in sorted(self.links.items())
            ],
            "queue": {
                "rows": self.queue.rows,
                "bytes": self.queue.bytes,
                "oldest_age_s": max(0.0, now - oldest / 1000) if oldest is not None else 0.0,
                "max_rows": self.queue.max_rows,
                "max_bytes": self.queue.max_bytes,
                "policy": self.queue.full_policy,
                **{k: counters.get(k, 0) for k in ("dropped_full", "expired", "dropped_at_meter", "skipped_unknown")},
                # the sent rows are "unconfirmed" while receipts are in force, "replay" while the window is
                "delivery": "receipts" if receipts else "replay-window",
                "unconfirmed_rows": self.queue.replay_rows if receipts else 0,
                "unconfirmed_bytes": self.queue.replay_bytes if receipts else 0,
                "receipt_timeout_s": f.receipts.timeout_ms / 1000,
                "last_receipt_ms": f.receipts.last_receipt_ms,
                "unconfirmed_trimmed": counters.get("unconfirmed_trimmed", 0),
                "dead_lettered": counters.get("dead_lettered", 0),
                "replay_rows": 0 if receipts else self.queue.replay_rows,
                "replay_bytes": 0 if receipts else self.queue.replay_bytes,
                "replay_window_s": self.queue.replay_window_s,
                "replay_trimmed": counters.get("replay_trimmed", 0),
            },
            "broker": {
                "state": f.state,
                "since": f.since,
                "host": self.settings.mqtt.host,
                "port": self.settings.mqtt.port,
                "last_error": f.last_error,
                "inflight": f.inflight_messages,
            },
            "rates": {"in_per_s": s["rate_in"], "out_per_s": s["rate_out"]},
            "counters": s["counters"],
            "errors": s["errors"],
        }
