"""Schemathesis against the real ``python -m backend``: every operation of the OpenAPI document, fed generated
and boundary inputs with an admin token, must never answer 5xx, and every answer must be one the document
promises: a documented status code, a documented content type, a body that validates against the documented
schema (backend/api/openapi.py completes the document; tests/backend/test_openapi.py checks its shape).

Everything the endpoints need is live, so a 503 would be a real failure and not a missing part: InfluxDB with
authentication (the admin's InfluxQL console has its READ-only user), the fake ANEEL and ONS already pulled,
MQTT ingest, rollups and alerts running, a configured site with a month of readings. The run is seeded and
deterministic and the examples per operation are bounded (about 1000 cases in well under a minute). The login
is left out: each attempt costs a deliberately slow scrypt hash, and its statuses (401, 429 with Retry-After)
are covered by tests/backend/test_login_throttle.py and the document's test.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.api.auth import hash_password
from backend.settings import User
from devstack.aneel_fake import FakeCkan
from devstack.influxdb import InfluxService
from devstack.ons_fake import FakeOns
from devstack.processes import HOST
from protocol import mqtt
from tests.backend.conftest import batch_bytes, device_id, make_settings, reading

ADMIN, ADMIN_PASSWORD = "fuzzer", "senha-do-fuzzer"
INFLUX_ADMIN = ("root", "root-secret-for-the-fuzz-test")
ST = Path(sys.executable).parent / "st"
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance")


@pytest.fixture
def secured_influx(tmp_path: Path) -> Iterator[InfluxService]:
    with InfluxService(tmp_path / "influx", admin=INFLUX_ADMIN) as influx:
        yield influx


def _token(base: str) -> str:
    r = httpx.post(f"{base}/api/v1/auth/token", json={"username": ADMIN, "password": ADMIN_PASSWORD}, timeout=10)
    r.raise_for_status()
    return str(r.json()["access_token"])


@pytest.mark.skipif(not ST.exists(), reason="schemathesis (st) is not installed in this environment")
def test_every_answer_to_generated_input_is_documented_and_none_is_5xx(
    broker: Any, secured_influx: InfluxService, unique_id: str, tmp_path: Path, publisher_factory: Any,
    backend_process: Callable[..., Any], wait_for: Callable[..., Any],
) -> None:
    dev = device_id(7)
    sites = tmp_path / "sites.toml"
    sites.write_text(f'[[site]]\nid = "{unique_id}"\nname = "Casa"\ndistributor = "LIGHT SESA"\nsubgroup = "B1"\n'
                     f'modality = "Convencional"\nicms = "0.18"\npis = "0.0110"\ncofins = "0.0507"\n'
                     f'phases = 2\ndevices = ["{dev}"]\n', encoding="utf-8")
    with FakeCkan() as aneel, FakeOns(until=dt.date.today() - dt.timedelta(days=2)) as ons:
        settings = make_settings(
            broker, secured_influx, unique_id, influx_username=INFLUX_ADMIN[0], influx_password=INFLUX_ADMIN[1],
            influx_readonly_username=f"ro_{unique_id}", influx_readonly_password="leitura-somente-fuzz",
            users=[User(username=ADMIN, role="admin", password_hash=hash_password(ADMIN_PASSWORD))],
            sites_file=str(sites), aneel_sync_enabled=True, aneel_base_url=aneel.url, ons_sync_enabled=True,
            ons_base_url=ons.url, ons_first_year=dt.date.today().year, alerts_enabled=True,
            http_max_connections_per_address=1000)
        backend = backend_process(settings)
        backend.start()
        base = f"http://{HOST}:{backend.port}"
        now = int(dt.datetime.now().timestamp() * 1000)
        pub = publisher_factory(broker)
        pub.publish(mqtt.readings_topic(unique_id, "gw1"), batch_bytes(
            unique_id, "gw1", [reading(dev, s, now - 3_600_000 + s * 10_000, energy=1000 + s * 5) for s in range(300)]))
        pub.wait_all_acked()
        token = _token(base)
        auth = {"Authorization": f"Bearer {token}"}

        def synced() -> bool:
            cost = httpx.get(f"{base}/api/v1/analytics/custo", params={"site": unique_id}, headers=auth, timeout=30)
            return cost.status_code == 200 and httpx.get(f"{base}/api/v1/ons/agora", headers=auth,
                                                         timeout=10).status_code == 200

        wait_for(synced, 90, interval=0.5, what="ANEEL and ONS pulled")
        run = subprocess.run(
            [str(ST), "run", f"{base}/docs/openapi.json", "--header", f"Authorization: Bearer {token}",
             "--checks", ",".join(CHECKS), "--phases", "examples,fuzzing", "--max-examples", "30",
             "--seed", "20261201", "--generation-deterministic",
             "--exclude-path", "/api/v1/auth/token", "--workers", "1", "--request-timeout", "30", "--no-color"],
            capture_output=True, text=True, timeout=900, cwd=tmp_path)
        log = backend.log_path.read_text()[-4000:]
        assert run.returncode == 0, f"{run.stdout[-6000:]}\n{run.stderr[-2000:]}\n--- backend log\n{log}"
        summary = re.search(r"Tested: (\d+).*?(\d+) generated", run.stdout, re.S)
        assert summary, run.stdout[-3000:]
        print(f"schemathesis: {summary.group(1)} operations, {summary.group(2)} generated cases, no 5xx, all "
              "answers as documented")
        assert int(summary.group(1)) >= 25 and int(summary.group(2)) >= 400, run.stdout[-3000:]
    shutil.rmtree(tmp_path / "schemathesis-report", ignore_errors=True)
