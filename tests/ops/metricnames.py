"""Metric names on both sides of monitoring: those the backend and the gateway export, and those PromQL names.

An alert or a panel on a metric nobody exports evaluates to nothing, so it never fires and draws nothing, with no
error anywhere. The tests compare the two sets; the exported names come from the real registries (a backend
``Metrics`` and a gateway's status page serving a real ``Gateway``'s snapshot), so renaming a metric in the code
breaks the test instead of the alert.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from prometheus_client import generate_latest

from backend.metrics import Metrics
from gateway import settings as gateway_settings
from gateway.app import Gateway
from gateway.statuspage import StatusServer

REPO: Final = Path(__file__).resolve().parents[2]

PROMETHEUS_OWN: Final = frozenset({"up"})
"""Series Prometheus makes itself for every target."""
BLACKBOX: Final = frozenset({"probe_success", "probe_ssl_earliest_cert_expiry"})
"""blackbox_exporter's, for the TLS alerts; test_prometheus_rules.py checks them against the real exporter."""

_SUFFIXES: Final = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                    "summary": ("_sum", "_count", ""), "gauge": ("",), "untyped": ("",), "info": ("_info",),
                    "stateset": ("",), "unknown": ("",)}


def exposition_names(text: str) -> set[str]:
    """The sample names a text exposition can carry, from its ``# TYPE`` lines: a family with no sample yet (a
    labelled counter before its first increment) still declares its type, so it counts as exported."""
    names: set[str] = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        family, kind = m.groups()
        base = family.removesuffix("_total") if kind == "counter" else family
        names.update(base + suffix for suffix in _SUFFIXES[kind])
    return names


def backend_names() -> set[str]:
    return exposition_names(generate_latest(Metrics().registry).decode())


@contextmanager
def _gateway(tmp: Path) -> Iterator[Gateway]:
    """A gateway built from the shipped gateway.toml, its queue in ``tmp``; nothing started."""
    settings = gateway_settings.load(REPO / "deploy" / "gateway" / "gateway.toml",
                                     {"GATEWAY_QUEUE__PATH": str(tmp / "queue.sqlite3")})
    gw = Gateway(settings)
    try:
        yield gw
    finally:
        gw.queue.close()


def gateway_names(tmp: Path) -> set[str]:
    """What a gateway's status page serves on /metrics, fetched over HTTP from a real one."""
    with _gateway(tmp) as gw:
        server = StatusServer("127.0.0.1", 0, gw.snapshot)
        server.start()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as resp:
                text = resp.read().decode()
        finally:
            server.stop()
    return exposition_names(text)


_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST: Final = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS: Final = frozenset({"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring",
                              "group_left", "group_right", "inf", "nan", "atan2"})


def promql_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers left once strings, label matchers, ranges,
    numbers and durations, grouping label lists, keywords and function or aggregation names are taken out."""
    e = _STRING.sub('""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = _LABEL_LIST.sub(" ", e)
    e = re.sub(r"(?<![A-Za-z_:])\d[\w.]*", " ", e)
    e = re.sub(r"\$\w+", " ", e)  # Grafana's macros ($__rate_interval, $__range) inside ranges already went
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if m.group(0).lower() not in _KEYWORDS:
            names.add(m.group(0))
    return names
