"""The ingest thread: decoded frames from every link -> group commit into the queue -> cumulative ACKs.

One thread owns the queue's writer connection and all protocol state, so no locks guard the hot path. It takes
events from the links (and downlink CONFIG requests from MQTT), collects everything that arrives within
``queue.commit_window_ms`` into one transaction, commits it, and only then ACKs each meter up to its contiguous
durable seq (protocol.md section 3). If a commit fails nothing is ACKed and the in-memory progress is reloaded
from the database: the meters resend, nothing is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Final, Protocol

import msgspec

from gateway import downlink
from gateway.errors import QueueError
from gateway.link import Progress, Session
from gateway.queue import DurableQueue, Row
from gateway.serial_link import LinkDown, LinkUp, Received, SerialLink
from gateway.settings import Settings
from gateway.stats import Stats
from protocol import frames, mqtt

log = logging.getLogger(__name__)

_SYNC = frames.encode(frames.Sync())
_reading_check = msgspec.json.Decoder(mqtt.Reading)
RESYNC_WARN_S: Final = 60.0
"""A link's boot-mismatch warning is logged at most this often (every mismatch is still counted)."""


class Publisher(Protocol):
    """What the ingest needs of the MQTT side (:class:`gateway.forwarder.Forwarder`); called from the ingest thread."""

    def wake(self) -> None: ...
    def publish_device(self, info: mqtt.DeviceInfo) -> None: ...
    def publish_config_result(self, result: mqtt.ConfigResult) -> None: ...


@dataclass(frozen=True, slots=True)
class ConfigIn:
    """A downlink request from MQTT (``request`` is None when the payload did not decode)."""

    device: str
    request: mqtt.ConfigRequest | None
    error: str = ""


@dataclass(slots=True)
class DeviceView:
    """What the status page shows per meter."""

    info: mqtt.DeviceInfo
    last_reading: dict[str, float] = field(default_factory=dict)
    meter_status: dict[str, int] = field(default_factory=dict)
    readings: int = 0
    duplicates: int = 0
    last_seen_ms: int = 0


@dataclass(slots=True)
class _Batch:
    rows: list[Row] = field(default_factory=list)
    progress: dict[tuple[str, int], Progress] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    ack: set[SerialLink] = field(default_factory=set)
    room: int = 1 << 62


class Ingest:
    """Owns sessions, progress and the queue writer; runs in its own thread (:meth:`start`)."""

    def __init__(self, settings: Settings, queue: DurableQueue, stats: Stats, publisher: Publisher) -> None:
        self.settings = settings
        self.queue = queue
        self.stats = stats
        self.publisher = publisher
        self.events: SimpleQueue[object] = SimpleQueue()
        self.sessions: dict[SerialLink, Session] = {}
        self.devices: dict[str, DeviceView] = {}
        self.devices_lock = threading.Lock()
        self._progress: dict[tuple[str, int], Progress] = {}
        self._configs = downlink.PendingConfigs(settings.serial.config_timeout_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._next_expire = 0.0

    # --- thread plumbing -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.events.put(None)
        self._thread.join(timeout)

    def submit_config(self, device: str, request: mqtt.ConfigRequest | None, error: str = "") -> None:
        """Called from the MQTT thread."""
        self.events.put(ConfigIn(device, request, error))

    def device_infos(self) -> list[mqtt.DeviceInfo]:
        with self.devices_lock:
            return [d.info for d in self.devices.values()]

    def _run(self) -> None:
        window = self.settings.queue.commit_window_ms / 1000
        while not self._stop.is_set():
            try:
                first = self.events.get(timeout=0.5)
            except Empty:
                first = None
            batch = _Batch()
            if self.queue.full_policy == "refuse-new":
                # read once per window: only this thread adds rows, so the room can only grow before the commit
                batch.room = self.queue.room()
            if first is not None:
                self._handle(first, batch)
                deadline = time.monotonic() + window
                while len(batch.rows) < 20000:  # caps one transaction when a backlog floods in within one window
                    remaining = deadline - time.monotonic()
                    try:
                        ev = self.events.get(timeout=remaining) if remaining > 0 else self.events.get_nowait()
                    except Empty:
                        break
                    if ev is None:  # stop(): commit what was collected, then leave
                        break
                    self._handle(ev, batch)
            try:
                self._commit(batch)
                self._periodic()
            except Exception:  # one bad event must never stop the ingest thread
                self.stats.error("internal")
                log.exception("ingest: unexpected error")

    def _handle(self, ev: object, batch: _Batch) -> None:
        try:
            if isinstance(ev, Received):
                self._received(ev, batch)
            elif isinstance(ev, LinkUp):
                self.sessions[ev.link] = Session(ev.link.port)
            elif isinstance(ev, LinkDown):
                self._link_down(ev)
            elif isinstance(ev, ConfigIn):
                self._config_in(ev)
        except Exception:
            self.stats.error("internal")
            log.exception("ingest: error handling %s", type(ev).__name__)

    # --- frames --------------------------------------------------------------------------------------------------

    def _received(self, ev: Received, batch: _Batch) -> None:
        link = ev.link
        session = self.sessions.get(link)
        if session is None:  # frames after LinkDown raced in: the port is closed, ignore
            return
        for item in ev.items:
            if isinstance(item, frames.FrameError):
                self.stats.error(f"frame_{item.reason}")
            elif isinstance(item, frames.Reading):
                self._reading(link, session, item, ev.recv_ms, batch)
            elif isinstance(item, frames.Hello):
                self._hello(link, session, item, ev.recv_ms)
            elif isinstance(item, frames.Status):
                self._status(link, session, item, batch)
            elif isinstance(item, frames.ConfigResult):
                self._config_result(session, item, ev.recv_ms)
            elif isinstance(item, frames.Log):
                self.stats.inc("meter_logs")
                log.log(10 + 10 * min(item.level, 4), "meter %s: %s", session.device or link.port, item.text)
            else:
                self.stats.error("frame_unexpected_kind")

    def _progress_for(self, device: str, boot: int) -> Progress:
        key = (device, boot)
        p = self._progress.get(key)
        if p is None:
            p = self.queue.load_progress(device, boot)
            self._progress[key] = p
        return p

    def _hello(self, link: SerialLink, session: Session, hello: frames.Hello, recv_ms: int) -> None:
        old = session.device
        changed = session.on_hello(hello)
        self.stats.inc("hellos")
        if changed:
            for key in [k for k in self._progress if k[0] == hello.device and k[1] != hello.boot_count]:
                del self._progress[key]  # an older boot of this meter sends nothing more
            self._progress_for(hello.device, hello.boot_count)
            if old and old != hello.device:
                self._mark_down(old)
        info = mqtt.DeviceInfo(
            device=hello.device,
            firmware=hello.firmware,
            hw_rev=hello.hw_rev,
            boot=hello.boot_count,
            report_period_ms=hello.report_period_ms,
            link="up",
            port=link.port,
            seen_at=recv_ms,
        )
        with self.devices_lock:
            view = self.devices.get(hello.device)
            if view is None:
                self.devices[hello.device] = view = DeviceView(info)
            previous = view.info
            view.info = info
            view.last_seen_ms = recv_ms
        if changed or previous.link != "up" or previous.port != link.port:
            self.publisher.publish_device(info)

    def _reading(self, link: SerialLink, session: Session, r: frames.Reading, recv_ms: int, batch: _Batch) -> None:
        hello = session.hello
        if hello is None:
            self.stats.inc("readings_without_hello")
            if session.should_sync(time.monotonic(), self.settings.serial.sync_interval_s) and link.write(_SYNC):
                self.stats.inc("syncs_sent")
            return
        device, boot = hello.device, hello.boot_count
        prog = self._progress_for(device, boot)
        fresh_first = r.flags & frames.FLAG_FIRST_AFTER_BOOT and not r.flags & frames.FLAG_RESENT
        if fresh_first and prog.is_duplicate(r.seq):
            self._resync(link, session, f"a new first reading (seq {r.seq}) on boot {boot}")
            return
        # ACK even a duplicate: it was resent because the meter missed our ACK
        batch.ack.add(link)
        view = self.devices.get(device)
        if prog.is_duplicate(r.seq):
            self.stats.inc("duplicates")
            if view:
                view.duplicates += 1
            return
        if batch.room <= 0:
            # not added to the progress, so the cumulative ACK stays below it and the meter keeps it
            self.stats.inc("refused_full")
            return
        ts = prog.stamp(prog.timestamp(r, recv_ms, newest_seq=session.newest_seq, period_ms=hello.report_period_ms))
        reading = mqtt.reading_from_frame(device, boot, ts, r)
        payload = mqtt.json_encoder.encode(reading)
        try:
            _reading_check.decode(payload)  # the backend validates the same way: never poison a batch
        except msgspec.ValidationError as exc:
            self.stats.error("reading_invalid")
            log.warning("meter %s boot %d seq %d: invalid reading not forwarded: %s", device, boot, r.seq, exc)
            # ACKed all the same: the meter would resend it forever, and the gap would hold back the ACK of the rest
            prog.add(r.seq)
            batch.progress[(device, boot)] = prog
            return
        prog.add(r.seq)
        batch.progress[(device, boot)] = prog
        batch.rows.append(Row(device, boot, r.seq, ts, payload))
        batch.room -= 1
        if view:
            view.readings += 1
            view.last_seen_ms = recv_ms
            if view.last_reading.get("ts", 0) <= ts:
                view.last_reading = {
                    "seq": r.seq, "ts": ts, "vrms": reading.vrms, "irms": reading.irms, "p": reading.p,
                    "pf": reading.pf, "freq": reading.freq, "energy_kwh": r.energy_mwh / 1e6,
                    "export_kwh": reading.energy_export_mwh / 1e6, "flags": r.flags,
                }  # fmt: skip

    def _status(self, link: SerialLink, session: Session, st: frames.Status, batch: _Batch) -> None:
        session.status = st
        self.stats.inc("statuses")
        hello = session.hello
        if hello is None:
            return
        view = self.devices.get(hello.device)
        if view:
            view.meter_status = {
                "queued": st.queued, "dropped": st.dropped, "rx_errors": st.rx_errors,
                "next_seq": st.next_seq, "oldest_seq": st.oldest_seq, "sample_rate_hz": st.sample_rate_hz,
            }  # fmt: skip
        prog = self._progress_for(hello.device, hello.boot_count)
        # a meter cannot have produced fewer readings than we committed for this boot: it is a new boot we missed
        if st.next_seq <= prog.contiguous or any(s >= st.next_seq for s in prog.above):
            self._resync(link, session, f"STATUS next_seq {st.next_seq} below the committed {prog.contiguous}")
            return
        dropped, skipped = prog.meter_oldest(st.oldest_seq, st.dropped)
        if dropped or skipped:
            batch.progress[(hello.device, hello.boot_count)] = prog
            batch.counters["dropped_at_meter"] = batch.counters.get("dropped_at_meter", 0) + dropped
            batch.counters["skipped_unknown"] = batch.counters.get("skipped_unknown", 0) + skipped
            log.warning(
                "meter %s boot %d: %d readings dropped at the meter, %d skipped (oldest held is %d)",
                hello.device, hello.boot_count, dropped, skipped, st.oldest_seq,
            )  # fmt: skip
            batch.ack.add(link)

    def _resync(self, link: SerialLink, session: Session, why: str) -> None:
        """The meter rebooted without us hearing its HELLO: forget the old boot on this link and ask again.

        Without this, the new boot's readings would be taken for duplicates (or, past the old seq, filed under
        the old boot).
        """
        self.stats.error("boot_mismatch")
        mono = time.monotonic()
        session.hello = None
        session.status = None
        # A meter whose boot counter went back (EEPROM replaced or wiped) answers every SYNC with the same HELLO
        # and a STATUS below what we committed: without these limits that is a SYNC/HELLO loop at line speed,
        # a warning per turn. Its readings wait for the next HELLO (readings without one SYNC once per interval).
        if mono - session.resync_warned_mono >= RESYNC_WARN_S:
            session.resync_warned_mono = mono
            log.warning("%s: %s: the meter must have rebooted unheard; sending SYNC", link.port, why)
        if mono - session.last_resync_mono < self.settings.serial.sync_interval_s:
            return
        session.last_resync_mono = session.last_sync_mono = mono
        if link.write(_SYNC):
            self.stats.inc("syncs_sent")

    # --- links and downlink --------------------------------------------------------------------------------------

    def _mark_down(self, device: str) -> None:
        with self.devices_lock:
            view = self.devices.get(device)
            if view is None or view.info.link == "down":
                return
            view.info = msgspec.structs.replace(view.info, link="down", seen_at=int(time.time() * 1000))
            info = view.info
        self.publisher.publish_device(info)

    def _link_down(self, ev: LinkDown) -> None:
        session = self.sessions.pop(ev.link, None)
        if session and session.device:
            self._mark_down(session.device)

    def _link_of(self, device: str) -> SerialLink | None:
        for link, session in self.sessions.items():
            if session.device == device and link.state == "up":
                return link
        return None

    def _config_in(self, ev: ConfigIn) -> None:
        now_ms = int(time.time() * 1000)
        if ev.request is None:
            self.stats.error("config_bad_request")
            log.warning("downlink CONFIG for %s rejected: %s", ev.device, ev.error)
            return
        link = self._link_of(ev.device)
        frame = downlink.to_frame(ev.request)
        if link is None or not link.write(frames.encode(frame)):
            self.stats.inc("configs_undeliverable")
            self.publisher.publish_config_result(
                downlink.failure(ev.device, ev.request.request_id, "undeliverable", "meter not connected", now_ms)
            )
            return
        self.stats.inc("configs_sent")
        self._configs.sent(ev.device, ev.request.request_id, time.monotonic())

    def _config_result(self, session: Session, res: frames.ConfigResult, recv_ms: int) -> None:
        if session.device is None:
            self.stats.error("config_result_unexpected")
            return
        result, expected = self._configs.answered(session.device, res, recv_ms)
        if not expected:
            self.stats.error("config_result_unexpected")
        if result.status == "applied" and session.hello is not None:
            session.hello = msgspec.structs.replace(session.hello, report_period_ms=res.report_period_ms)
            with self.devices_lock:
                view = self.devices.get(session.device)
                if view:
                    view.info = msgspec.structs.replace(view.info, report_period_ms=res.report_period_ms)
                    info = view.info
            if view:
                self.publisher.publish_device(info)
        self.publisher.publish_config_result(result)

    # --- commit, ACK, housekeeping ---------------------------------------------------------------------------------

    def _commit(self, batch: _Batch) -> None:
        dirty = [p for p in batch.progress.values() if p.dirty]
        if batch.rows or dirty or batch.counters:
            try:
                result = self.queue.commit(batch.rows, dirty, batch.counters)
            except QueueError as exc:
                self.stats.error("queue_write")
                log.error("queue commit failed, nothing ACKed (the meters will resend): %s", exc)
                # the in-memory progress holds seqs that never reached the disk: reload it from there on next use,
                # or their resends would be taken for duplicates and ACKed without ever being queued
                for key in batch.progress:
                    self._progress.pop(key, None)
                return
            if result.inserted:
                self.stats.inc("readings_committed", result.inserted)
                self.stats.inc("commits")
                self.publisher.wake()
            if result.dropped_full:
                log.warning("queue full: dropped the %d oldest readings (policy drop-oldest)", result.dropped_full)
        for link in batch.ack:
            session = self.sessions.get(link)
            if session is None or session.hello is None:
                continue
            prog = self._progress.get((session.hello.device, session.hello.boot_count))
            if prog is None or prog.ack_seq == 0:
                continue
            if link.write(frames.encode(frames.Ack(session.hello.boot_count, prog.ack_seq))):
                self.stats.inc("acks_sent")

    def _periodic(self) -> None:
        mono = time.monotonic()
        for result in self._configs.expired(mono, int(time.time() * 1000)):
            self.stats.inc("configs_timeout")
            self.publisher.publish_config_result(result)
        if mono >= self._next_expire:
            self._next_expire = mono + self.settings.queue.expire_interval_s
            try:
                n = self.queue.expire(int(time.time() * 1000))
            except QueueError as exc:
                self.stats.error("queue_write")
                log.error("%s", exc)
                return
            if n:
                log.warning("queue: %d readings older than %g days expired unsent", n, self.queue.max_age_s / 86400)
