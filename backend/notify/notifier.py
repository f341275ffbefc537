"""``python -m backend notify``: the notifier process, the I/O shell around transitions, routing and the outbox.

One instance per deployment (the state directory's lock refuses a second one). It reads, never writes, the
broker: its own user may only subscribe to ``cds/v1/+/alerts`` (backend/ingest/broker_users.py, role
``notifier``). Every list that arrives — retained ones at each connect included — is turned into events and
stored in the outbox at once, in the MQTT thread's hop onto the loop; everything slower happens in the loop:

1. route the stored events with the users' preferences (re-read every ``notify_prefs_refresh_s``, with the test
   requests and the users' grants), queueing deliveries;
2. start every due delivery as its own task, at most ``notify_concurrency`` at once, each bounded by
   ``notify_timeout_s``: a dead SMTP server or a slow webhook holds its own slot and never the others, and nothing
   here ever touches ingest, which runs in other processes;
3. copy changed deliveries to InfluxDB for ``/api/v1/notificacoes/entregas``;
4. every ``notify_budget_interval_s``, project the bills of the sites someone budgets.

Time comes from ``clock`` (ms) and jitter from ``rand``, both injectable, so tests drive retries and quiet hours
without waiting. Counters (``cds_notify_*``) are served on ``notify_metrics_port`` when set.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Final

import httpx
import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from backend.accounts.access import Caller
from backend.accounts.audit import AuditLog
from backend.accounts.store import AccountStore
from backend.analytics.runtime import open_analytics
from backend.errors import BackendError, ConfigError
from backend.ingest.bridge import Incoming, MqttBridge
from backend.logs import configure_logging
from backend.metrics import Metrics
from backend.notify.budget import CycleProjection, budget_alert, projected_bill, state_key
from backend.notify.channels import SendError, Senders
from backend.notify.deliveries import DeliveryLog
from backend.notify.outbox import Outbox, Row, lock_state_dir, retry_delay_ms
from backend.notify.preferences import PreferenceStore, Preferencias
from backend.notify.render import render
from backend.notify.routing import route
from backend.notify.transitions import AlertIn, BadAlertList, Event, parse_list, step
from backend.settings import Settings
from backend.store.influx import InfluxClient
from protocol.mqtt import ROOT
from protocol.timebase import TZ

log = logging.getLogger(__name__)
ALERTS_FILTER: Final = f"{ROOT}/+/alerts"
TESTS_MARK: Final = "test_requests"
Project = Callable[[str, dt.datetime], Awaitable[CycleProjection | None]]


class NotifyMetrics:
    """The notifier's Prometheus counters, on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.deliveries = Counter("cds_notify_deliveries_total", "Delivery attempts by channel type and outcome "
                                  "(delivered, retried, failed = given up)", ["channel", "outcome"], registry=r)
        self.events = Counter("cds_notify_events_total", "Transitions queued, by type", ["type"], registry=r)
        self.bad_lists = Counter("cds_notify_bad_lists_total", "Alert payloads refused", registry=r)
        self.errors = Counter("cds_notify_errors_total", "Failed background steps (InfluxDB, projections)",
                              ["step"], registry=r)
        self.pending = Gauge("cds_notify_pending_deliveries", "Deliveries not yet delivered or given up",
                             registry=r)
        for channel in ("email", "webhook", "ntfy"):
            for outcome in ("delivered", "retried", "failed"):
                self.deliveries.labels(channel, outcome)


class Notifier:
    """Everything between an alert list and a sent message; see the module's steps."""

    def __init__(self, settings: Settings, outbox: Outbox, senders: Senders, prefs: PreferenceStore,
                 records: DeliveryLog, accounts: AccountStore, *, clock: Callable[[], int] | None = None,
                 rand: Callable[[], float] = random.random, project: Project | None = None,
                 metrics: NotifyMetrics | None = None) -> None:
        self.s = settings
        self.outbox = outbox
        self.senders = senders
        self.prefs_store = prefs
        self.records = records
        self.accounts = accounts
        self.clock = clock or (lambda: int(time.time() * 1000))
        self.rand = rand
        self.project = project
        self.metrics = metrics or NotifyMetrics()
        self.prefs: dict[str, Preferencias] | None = None
        """None until the first successful read: events wait in the outbox rather than being routed to no one."""
        self.callers: dict[str, Caller] = {}
        self.wakeup = asyncio.Event()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.notify_concurrency)

    # --- lists in ------------------------------------------------------------------------------------------

    def on_message(self, msg: Incoming) -> None:
        """A PUBLISH on ``cds/v1/+/alerts`` (on the loop): transitions stored before the broker's ack."""
        try:
            self.take_list(msg.topic, msg.payload)
        except BadAlertList as exc:
            self.metrics.bad_lists.inc()
            log.warning("alert list refused", extra={"topic": exc.topic, "error": str(exc)[:300]})
        if msg.bridge is not None:
            msg.bridge.ack(msg)

    def take_list(self, topic: str, payload: bytes) -> list[Event]:
        if not payload:  # a retained list being cleared: nothing was evaluated
            return []
        lst, evaluated_ms = parse_list(topic, payload)
        before = self.outbox.state(lst.site)
        state, events = step(before, lst.alerts, evaluated_ms, int(self.s.alerts_interval_s * 1000))
        if state is not before:
            self.outbox.apply(lst.site, state, events, self.clock())
            self._queued(events)
        return events

    def _queued(self, events: list[Event]) -> None:
        for e in events:
            self.metrics.events.labels(e.type).inc()
        if events:
            self.wakeup.set()

    # --- preferences, tests, budgets ---------------------------------------------------------------------

    async def refresh(self) -> None:
        """Re-read preferences, grants and test requests (InfluxDB down: keep the last copy, try next time)."""
        prefs = await self.prefs_store.all()
        callers = {}
        for user in prefs:
            account = await self.accounts.account(user)
            if account is not None and not account.disabled:
                callers[user] = account.caller()
        self.prefs, self.callers = prefs, callers
        after = self.outbox.mark(TESTS_MARK)
        requests = await self.records.test_requests(after)
        if requests:
            now = self.clock()
            events = [Event(id=f"teste:{user}@{at}:teste", type="teste", alert=AlertIn(id="teste", site=""),
                            at_ms=at, opened_ms=at, user=user) for user, at in requests]
            self.outbox.add_requested(events, TESTS_MARK, max(at for _, at in requests), now)
            self._queued(events)

    def may_see(self, user: str, site: str) -> bool:
        caller = self.callers.get(user)
        return caller is not None and caller.can_see(site)

    async def check_budgets(self) -> None:
        """Project each budgeted site once and open or resolve each user's ``orcamento`` alert."""
        if self.project is None or self.prefs is None:
            return
        now_ms = self.clock()
        budgets: dict[str, dict[str, Decimal]] = {}
        for user, p in self.prefs.items():
            for rule in p.sites:
                if rule.orcamento_mensal_rs is not None and self.may_see(user, rule.site):
                    budgets.setdefault(rule.site, {})[user] = rule.orcamento_mensal_rs
        for site, users in sorted(budgets.items()):
            projection = await self.project(site, dt.datetime.fromtimestamp(now_ms / 1000, TZ))
            if projection is None:
                continue
            for user, budget in sorted(users.items()):
                alert = budget_alert(site, user, projection, budget)
                key = state_key(site, user)
                before = self.outbox.state(key)
                state, events = step(before, [alert] if alert else [], now_ms, 0, user=user)
                if state is not before:
                    self.outbox.apply(key, state, events, now_ms)
                    self._queued(events)

    # --- deliveries ---------------------------------------------------------------------------------------

    def route_pending(self) -> int:
        """Queue the deliveries of every stored event not routed yet; how many were queued."""
        if self.prefs is None:
            return 0
        queued = 0
        for event in self.outbox.unrouted():
            deliveries = route(event, self.prefs, self.may_see, self.clock())
            self.outbox.route(event.id, deliveries, self.clock())
            queued += len(deliveries)
        return queued

    async def run_due(self, *, wait: bool = False) -> int:
        """Start every due delivery not already under way; with ``wait``, until they are done. How many started."""
        rows = [r for r in self.outbox.due(self.clock(), 1000) if r.id not in self._inflight]
        tasks = []
        for row in rows:
            task = asyncio.create_task(self._deliver(row), name=row.id)
            self._inflight[row.id] = task
            task.add_done_callback(lambda t: self._inflight.pop(t.get_name(), None))
            tasks.append(task)
        if wait:
            await asyncio.gather(*tasks)
        return len(rows)

    async def _deliver(self, row: Row) -> None:
        try:
            await self._attempt(row)
        finally:
            self.wakeup.set()  # the loop reports the outcome and counts what is pending without waiting a round

    async def _attempt(self, row: Row) -> None:
        async with self._slots:
            now = self.clock()
            attempt = row.attempts + 1
            retry_at = now + retry_delay_ms(attempt, int(self.s.notify_retry_base_s * 1000),
                                            int(self.s.notify_retry_max_s * 1000), self.rand())
            self.outbox.begin_attempt(row.id, now, retry_at)
            kind = row.channel.tipo
            try:
                async with asyncio.timeout(self.s.notify_timeout_s):
                    await self.senders.send(row.id, row.username, row.channel, row.event, render(row.event), now)
            except (SendError, TimeoutError) as exc:
                error = str(exc) or "tempo esgotado"
                give_up = (isinstance(exc, SendError) and exc.permanent) or attempt >= self.s.notify_max_attempts
                self.outbox.finish(row.id, "falhou" if give_up else "pendente", self.clock(), error)
                self.metrics.deliveries.labels(kind, "failed" if give_up else "retried").inc()
                log.warning("delivery failed", extra={"delivery": row.id, "attempt": attempt, "error": error,
                                                      "given_up": give_up})
                return
            self.outbox.finish(row.id, "entregue", self.clock())
            self.metrics.deliveries.labels(kind, "delivered").inc()

    async def report(self) -> None:
        """Copy changed deliveries to InfluxDB (failures: left dirty for the next round)."""
        rows = self.outbox.dirty()
        if rows:
            await self.records.write(rows)
            self.outbox.cleaned(rows)

    # --- the loop -----------------------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Run the steps until ``stop`` is set; a failing step is logged, counted and tried again later."""
        refreshed = budgeted = -float("inf")
        while not stop.is_set():
            self.wakeup.clear()
            mono = time.monotonic()
            if mono - refreshed >= self.s.notify_prefs_refresh_s:
                ok = await self._safely("refresh", self.refresh())
                refreshed = mono if ok else mono - self.s.notify_prefs_refresh_s + 1.0  # InfluxDB down: again in 1 s
            if mono - budgeted >= self.s.notify_budget_interval_s and self.prefs is not None:
                budgeted = mono
                await self._safely("budget", self.check_budgets())
            self.route_pending()
            await self.run_due()
            await self._safely("report", self.report())
            self.metrics.pending.set(self.outbox.pending())
            nxt = self.outbox.next_due_ms()
            wait = 1.0 if nxt is None else min(max((nxt - self.clock()) / 1000, 0.05), 1.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.wakeup.wait()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    async def _safely(self, name: str, step_: Awaitable[None]) -> bool:
        try:
            await step_
        except BackendError as exc:
            self.metrics.errors.labels(name).inc()
            log.warning("notifier step failed", extra={"step": name, "error": str(exc)[:300]})
            return False
        return True


def mqtt_settings(settings: Settings) -> Settings:
    """The backend's broker settings with the notifier's identity, and no session to keep: the lists are
    retained, so every connect brings the current ones."""
    return msgspec.structs.replace(
        settings, mqtt_username=settings.notify_mqtt_username, mqtt_password=settings.notify_mqtt_password,
        mqtt_client_id=settings.notify_mqtt_client_id or f"cds-notify-{socket.gethostname()}",
        mqtt_session_expiry_s=0)


async def _main(settings: Settings, stop: asyncio.Event) -> None:
    s = settings
    folder = Path(s.notify_state_dir)
    lock = lock_state_dir(folder)
    outbox = Outbox(folder)
    metrics = NotifyMetrics()
    if s.notify_metrics_port:
        start_http_server(s.notify_metrics_port, addr=s.host, registry=metrics.registry)
    try:
        async with contextlib.AsyncExitStack() as stack:
            influx = await stack.enter_async_context(InfluxClient(
                s.influx_url, username=s.influx_username, password=s.influx_password, token=s.influx_token,
                timeout=s.influx_timeout_s))
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=s.notify_timeout_s))
            records = DeliveryLog(influx, s)
            with contextlib.suppress(BackendError):  # InfluxDB still starting: report() fails until it answers
                await records.ensure_schema()
            project: Project | None = None
            if s.sites_file:
                quiet = msgspec.structs.replace(s, aneel_sync_enabled=False, alerts_enabled=False)
                # alerts are off in this copy, so it needs no gateway statuses
                svc = await stack.enter_async_context(open_analytics(quiet, influx, None, Metrics(), dict))

                async def project(site: str, now: dt.datetime) -> CycleProjection | None:
                    return await projected_bill(svc, site, now)
            notifier = Notifier(s, outbox, Senders(s, http), PreferenceStore(influx, s), records,
                                AccountStore(influx, s, AuditLog(influx, s)), project=project, metrics=metrics)
            bridge = MqttBridge(mqtt_settings(s), notifier.on_message, [(ALERTS_FILTER, 1)])
            await bridge.start()
            stack.push_async_callback(bridge.stop)
            log.info("notifier started", extra={"state_dir": str(folder), "client_id": bridge.client_id})
            await notifier.serve(stop)
            log.info("notifier stopped", extra={"pending": outbox.pending()})
    finally:
        outbox.close()
        os.close(lock)


def run_notifier(settings: Settings) -> int:
    """The ``notify`` subcommand: run until SIGTERM or SIGINT; 2 on a configuration error."""
    configure_logging(settings.log_level)
    if settings.notify_smtp_security not in ("starttls", "ssl", "none"):
        print("configuration error: BACKEND_NOTIFY_SMTP_SECURITY must be starttls, ssl or none", file=sys.stderr)
        return 2
    if settings.notify_concurrency < 1 or settings.notify_max_attempts < 1 or settings.notify_timeout_s <= 0:
        print("configuration error: BACKEND_NOTIFY_CONCURRENCY, _MAX_ATTEMPTS and _TIMEOUT_S must be positive",
              file=sys.stderr)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await _main(settings, stop)

    try:
        asyncio.run(main())
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return 0
