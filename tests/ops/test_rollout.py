"""``python -m backend rollout`` under load with two real replicas: a healthy new version replaces both, one slot
at a time; a broken one is rolled back on its own with the old version serving again; no reading is lost either
way (the load is an older gateway's, without receipts: the worst case)."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.accounts.passwords import hash_password
from backend.rollout.plan import Command, Plan, PlanError, Slot, parse_plan
from backend.rollout.run import Rollout
from backend.settings import Settings, User
from devstack.processes import free_port
from tests.backend.conftest import REPO, BackendProcess, count_points, make_settings, purge_session
from tests.backend.test_faults import Stream

PASSWORD = "rollout-smoke-password-1"


class Replicas:
    """Backend replicas started and stopped by shell commands, as a plan runs them (pid files in ``tmp``)."""

    def __init__(self, base: Settings, tmp: Path) -> None:
        self.base, self.tmp = base, tmp
        self.ports: dict[str, int] = {}
        self.client_ids: list[str] = []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports.setdefault(name, free_port())}"

    def start(self, name: str, **overrides: str) -> Command:
        client_id = f"{self.base.mqtt_client_id}-{name}"
        self.client_ids.append(client_id)
        process = BackendProcess(self.base, self.tmp, name)
        env = {**process.env(), "BACKEND_PORT": str(self.url(name).rsplit(":", 1)[1]),
               "BACKEND_MQTT_CLIENT_ID": client_id, **overrides}
        pid, log = self.tmp / f"{name}.pid", self.tmp / f"{name}.log"
        # Only the backend goes to the background, with its own output: the command's pipe closes when bash exits.
        script = (f"cd {shlex.quote(str(REPO))} || exit 1; setsid {shlex.quote(sys.executable)} -m backend "
                  f">>{shlex.quote(str(log))} 2>&1 </dev/null & echo $! > {shlex.quote(str(pid))}")
        return Command(argv=["bash", "-c", script], env={k: v for k, v in env.items() if k.startswith("BACKEND_")})

    def stop(self, name: str) -> Command:
        pid = shlex.quote(str(self.tmp / f"{name}.pid"))
        # SIGTERM is the graceful stop; the command returns once the process is gone, as `systemctl stop` does.
        script = f"p=$(cat {pid}) && kill -TERM $p && while kill -0 $p 2>/dev/null; do sleep 0.05; done"
        return Command(argv=["bash", "-c", script])

    def run(self, cmd: Command) -> None:
        subprocess.run(cmd.argv, env={**os.environ, **cmd.env}, check=True, timeout=60)

    def ready(self, name: str) -> bool:
        try:
            return httpx.get(self.url(name) + "/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill_all(self) -> None:
        for pid_file in self.tmp.glob("*.pid"):
            subprocess.run(["bash", "-c", f"kill -KILL $(cat {shlex.quote(str(pid_file))}) 2>/dev/null"], check=False)


def _plan(r: Replicas, new_overrides: dict[str, dict[str, str]], ready_timeout_s: float) -> Plan:
    return Plan(slot=[Slot(name=slot, old_url=r.url(f"{slot}-blue"), new_url=r.url(f"{slot}-green"),
                           start_new=r.start(f"{slot}-green", **new_overrides.get(slot, {})),
                           stop_new=r.stop(f"{slot}-green"), stop_old=r.stop(f"{slot}-blue"),
                           start_old=r.start(f"{slot}-blue")) for slot in ("s1", "s2")],
                ready_timeout_s=ready_timeout_s, smoke_timeout_s=30)


@pytest.mark.parametrize("broken", [False, True], ids=["healthy", "broken-new-version"])
def test_rollout_under_load_replaces_or_rolls_back_and_loses_nothing(
    broker: Any, influx: Any, unique_id: str, publisher_factory: Any, tmp_path: Path, wait_for: Any, broken: bool,
) -> None:
    base = make_settings(broker, influx, unique_id, mqtt_adopt_after_s=0.5, ingest_batch_points=500,
                         users=[User(username="ops", role="admin", password_hash=hash_password(PASSWORD))])
    r = Replicas(base, tmp_path)
    try:
        for slot in ("s1", "s2"):  # the old version
            r.run(r.start(f"{slot}-blue"))
        wait_for(lambda: r.ready("s1-blue") and r.ready("s2-blue"), 30, what="the old replicas ready")
        stream = Stream(publisher_factory(broker), unique_id, "gw1", batches=600, per_batch=5, rate_hz=40).start()
        wait_for(lambda: count_points(influx, unique_id) >= 200, 20, what="load flowing")
        # The broken version cannot reach InfluxDB: it never becomes ready.
        overrides = {"s2": {"BACKEND_INFLUX_URL": "http://127.0.0.1:9"}} if broken else {}
        lines: list[str] = []
        outcome = asyncio.run(Rollout(_plan(r, overrides, ready_timeout_s=20 if broken else 60), ("ops", PASSWORD),
                                      say=lines.append).run())
        steps = [(e.slot, e.step, e.ok) for e in outcome.events]
        if broken:
            assert not outcome.ok and outcome.rolled_back, lines
            assert ("s2", "new replica ready", False) in steps
            assert steps[-3:] == [("s1", "rollback: start_old", True), ("s1", "rollback: old replica ready", True),
                                  ("s2", "rollback: stop_new", True)] or ("s1", "rollback: stop_new", True) in steps
            assert r.ready("s1-blue") and r.ready("s2-blue"), "the old version serves again"
            assert not r.ready("s1-green") and not r.ready("s2-green")
        else:
            assert outcome.ok and not outcome.rolled_back, lines
            assert [s for s in steps if s[1] == "smoke check"] == [("s1", "smoke check", True),
                                                                 ("s2", "smoke check", True)]
            assert r.ready("s1-green") and r.ready("s2-green")
            assert not r.ready("s1-blue") and not r.ready("s2-blue")
        stream.join()
        mine = f" WHERE site = '{unique_id}'"  # not the smoke checks' readings
        wait_for(lambda: count_points(influx, unique_id, where=mine) == stream.total, 60,
                 what=lambda: f"all {stream.total} readings stored, {count_points(influx, unique_id, where=mine)}")
    finally:
        r.kill_all()
        for client_id in r.client_ids:
            purge_session(broker.host, broker.port, client_id)


def test_plan_is_checked_before_anything_runs() -> None:
    good = """
[[slot]]
name = "a"
old_url = "http://127.0.0.1:1"
new_url = "http://127.0.0.1:2"
start_new = {argv = ["true"]}
stop_new = {argv = ["true"]}
stop_old = {argv = ["true"]}
start_old = {argv = ["true"]}
"""
    assert parse_plan(good).slot[0].name == "a"
    for bad, why in ((good.replace('"http://127.0.0.1:2"', '"http://127.0.0.1:1/"'), "own URL"),
                     (good + good, "repeat"), ("ready_timeout_s = 5", "slot"),
                     (good.replace('argv = ["true"]}', 'argv = []}', 1), "empty command"),
                     (good + "colour = 1", "unknown field")):
        with pytest.raises(PlanError, match=why if why != "unknown field" else "colour"):
            parse_plan(bad)
    shipped = (REPO / "deploy" / "backend" / "rollout.example.toml").read_text()
    assert len(parse_plan(shipped).slot) == 2
