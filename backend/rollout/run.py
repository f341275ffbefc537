"""Running a rolling upgrade: slot by slot, start the new replica, prove it, then retire the old one.

For each slot of the plan, in order:

1. run ``start_new``; the new replica must answer ``/ready`` with 200 within ``ready_timeout_s``;
2. the smoke check on the new replica: log in, post one reading through the HTTP ingest, read it back from the
   new replica, and answer one analytics query (``consumo`` of the smoke meter) — ingest, InfluxDB, the
   rollups' readers and the analytics service all answer, not only the process;
3. run ``stop_old`` (a graceful stop: the old replica finishes its writes and acknowledgements; what the broker
   still queues for its session is adopted by a surviving peer, docs/operations.md).

Anything that fails — a command, readiness in time, the smoke check — rolls the whole rollout back without being
asked: the old replicas already stopped are started again (``start_old``, and waited for until ready), then every
new replica started so far is stopped. Old replicas are stopped only after their slot's new one proved itself, so
during the whole procedure at least as many replicas serve as before, and the broker's shared subscription spreads
the readings over whichever are connected: nothing is lost whichever step fails.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import httpx
import msgspec

from backend.rollout.plan import Command, Plan, Slot
from protocol import mqtt
from protocol.mqtt import Reading, ReadingBatch


class Event(msgspec.Struct, frozen=True):
    at_s: float
    """Seconds since the rollout started."""
    slot: str
    step: str
    ok: bool
    detail: str = ""


class Outcome(msgspec.Struct, frozen=True):
    ok: bool
    rolled_back: bool
    events: list[Event]


class Rollout:
    """One run of a plan; ``login`` is the (user, password) of an operator or admin for the smoke check."""

    def __init__(self, plan: Plan, login: tuple[str, str], say: Callable[[str], None] = print) -> None:
        self.plan = plan
        self.login = login
        self.say = say
        self.events: list[Event] = []
        self._t0 = time.monotonic()

    def _note(self, slot: Slot, step: str, ok: bool, detail: str = "") -> bool:
        event = Event(at_s=round(time.monotonic() - self._t0, 2), slot=slot.name, step=step, ok=ok, detail=detail)
        self.events.append(event)
        suffix = f": {detail}" if detail else ""
        self.say(f"[{event.at_s:7.2f} s] {slot.name}: {step} {'ok' if ok else 'FAILED'}{suffix}")
        return ok

    async def run(self) -> Outcome:
        started_new: list[Slot] = []
        stopped_old: list[Slot] = []
        for slot in self.plan.slot:
            started_new.append(slot)  # stop_new is harmless even when start_new did not get far
            healthy = (await self._command(slot, "start_new", slot.start_new)
                       and await self._ready(slot, "new replica ready", slot.new_url)
                       and await self._smoke(slot))
            if healthy and await self._command(slot, "stop_old", slot.stop_old):
                stopped_old.append(slot)
                continue
            await self._rollback(started_new, stopped_old)
            return Outcome(ok=False, rolled_back=True, events=self.events)
        return Outcome(ok=True, rolled_back=False, events=self.events)

    async def _rollback(self, started_new: list[Slot], stopped_old: list[Slot]) -> None:
        # Old replicas back first, so the number serving never drops below what it was before the rollout.
        for slot in reversed(stopped_old):
            if await self._command(slot, "rollback: start_old", slot.start_old):
                await self._ready(slot, "rollback: old replica ready", slot.old_url)
        for slot in reversed(started_new):
            await self._command(slot, "rollback: stop_new", slot.stop_new)

    async def _command(self, slot: Slot, step: str, cmd: Command) -> bool:
        try:
            proc = await asyncio.create_subprocess_exec(*cmd.argv, env={**os.environ, **cmd.env},
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
            async with asyncio.timeout(self.plan.command_timeout_s):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            return self._note(slot, step, False, f"no exit within {self.plan.command_timeout_s:g} s")
        except OSError as exc:
            return self._note(slot, step, False, str(exc))
        tail = out.decode(errors="replace").strip()[-300:]
        return self._note(slot, step, proc.returncode == 0, tail if proc.returncode else "")

    async def _ready(self, slot: Slot, step: str, url: str) -> bool:
        deadline = time.monotonic() + self.plan.ready_timeout_s
        last = "no answer"
        async with httpx.AsyncClient(timeout=3.0) as http:
            while time.monotonic() < deadline:
                try:
                    r = await http.get(url.rstrip("/") + "/ready")
                    if r.status_code == 200:
                        return self._note(slot, step, True, url)
                    last = f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                await asyncio.sleep(0.25)  # polling a process that is starting: there is nothing to wait on
        return self._note(slot, step, False, f"{url}: {last} after {self.plan.ready_timeout_s:g} s")

    async def _smoke(self, slot: Slot) -> bool:
        p, base = self.plan, slot.new_url.rstrip("/")
        try:
            async with asyncio.timeout(p.smoke_timeout_s):
                return await self._smoke_steps(slot, base)
        except TimeoutError:
            return self._note(slot, "smoke check", False, f"not done within {p.smoke_timeout_s:g} s")
        except httpx.HTTPError as exc:
            return self._note(slot, "smoke check", False, f"{type(exc).__name__}: {exc}")

    async def _smoke_steps(self, slot: Slot, base: str) -> bool:
        p = self.plan
        async with httpx.AsyncClient(base_url=base, timeout=10.0) as http:
            r = await http.post("/api/v1/auth/token", json={"username": self.login[0], "password": self.login[1]})
            if r.status_code != 200:
                return self._note(slot, "smoke check", False, f"login: HTTP {r.status_code} {r.text[:200]}")
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            now = int(time.time() * 1000)
            seq = now // 1000 % 2**32  # a new reading every second the check runs: it cannot be an old one
            reading = Reading(device=p.smoke_device, boot=1, seq=seq, ts=now, vrms=127.0, irms=0.0, p=0.0, s=0.0,
                              pf=1.0, freq=60.0, energy_mwh=0)
            body = mqtt.json_encoder.encode(ReadingBatch(site=p.smoke_site, gateway=p.smoke_gateway,
                                                         readings=[reading]))
            r = await http.post("/api/v1/aicss/dados", content=body, headers=auth)
            if r.status_code != 200:
                return self._note(slot, "smoke check", False, f"ingest: HTTP {r.status_code} {r.text[:200]}")
            while True:
                r = await http.get(f"/api/v1/devices/{p.smoke_device}/readings", headers=auth,
                                   params={"start": _iso(now - 60_000), "end": _iso(now + 1000)})
                if r.status_code == 200 and any(pt.get("seq") == seq for pt in r.json()["points"]):
                    break
                if r.status_code != 200:
                    return self._note(slot, "smoke check", False, f"read back: HTTP {r.status_code} {r.text[:200]}")
                await asyncio.sleep(0.2)  # the write is acknowledged; the query may lag it by a flush
            r = await http.get("/api/v1/analytics/consumo", headers=auth,
                               params={"device": p.smoke_device, "granularidade": "day"})
            if r.status_code != 200:
                return self._note(slot, "smoke check", False, f"analytics: HTTP {r.status_code} {r.text[:200]}")
        return self._note(slot, "smoke check", True, "ingest, read back and consumo answered")


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
