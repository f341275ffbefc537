"""Fixtures for the gateway tests: simulated meters, the gateway subprocess factory, persistent collectors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gwharness import Collector, GatewayProcess

from devstack.mosquitto import MosquittoService
from sim.runner import MeterRunner


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[MeterRunner]:
    runner = MeterRunner(speed=1.0, link_dir=tmp_path / "links", seed=tmp_path.name)
    runner.start()
    yield runner
    runner.stop()
    assert runner.error is None, runner.error


@pytest.fixture
def gateway_factory(tmp_path: Path, broker: MosquittoService) -> Iterator[Callable[..., GatewayProcess]]:
    procs: list[GatewayProcess] = []

    def make(site: str, ports: list[str], **sections: Any) -> GatewayProcess:
        gw = GatewayProcess(tmp_path, broker, site, ports, **sections)
        procs.append(gw)
        return gw

    yield make
    for gw in procs:
        gw.stop()


@pytest.fixture
def collector_factory(broker: MosquittoService) -> Iterator[Callable[[str], Collector]]:
    made: list[Collector] = []

    def make(site: str) -> Collector:
        c = Collector(broker, site)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
