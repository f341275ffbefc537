"""Validation of uplink reading batches, shared by MQTT ingest and ``POST /api/v1/aicss/dados``.

A payload is rejected whole when it cannot be trusted as a batch (:func:`decode_batch`: too big, not JSON, wrong
schema — msgspec's strict decoding also refuses NaN/infinity and out-of-range numbers —, site/gateway not
matching the topic the broker's ACL allowed). Between decoding and :func:`convert_batch` the caller asks the
device book which meters of the batch the gateway may report. Readings that are individually unusable (a meter
the gateway does not own, a timestamp too far in the future or older than raw retention) are rejected one by
one, so the good readings of the same batch are kept. Every rejection has a ``reason`` from
:data:`Reason`, used as the metrics label and in the dead letter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from backend.store.lineprotocol import LineProtocolError, reading_formatter
from backend.store.readings import Span
from protocol import ids, mqtt
from protocol.mqtt import Reading, ReadingBatch

Reason = Literal[
    "oversize", "invalid_json", "schema", "bad_topic", "topic_mismatch", "future_timestamp",
    "unrepresentable", "influx_rejected", "beyond_retention", "internal_error",
    "not_owner", "device_disabled", "gateway_disabled", "site_disabled", "unprovisioned", "device_limit",
    "rate_limited",
]  # fmt: skip
"""The last seven come from the device book (ingest/provisioning.py) and the gateway's budgets (limits.py)."""


class Rejection(Exception):
    """A whole payload refused; ``reason`` says why (a metrics label), ``error`` the technical detail."""

    def __init__(self, reason: Reason, error: str) -> None:
        super().__init__(f"{reason}: {error}")
        self.reason = reason
        self.error = error


@dataclass(slots=True)
class RejectedReading:
    reading: Reading
    reason: Reason
    error: str


@dataclass(slots=True)
class ParsedBatch:
    """The accepted part of a batch as line protocol, plus what was refused."""

    site: str
    gateway: str
    lines: list[str]
    spans: dict[str, Span]
    rejected: list[RejectedReading] = field(default_factory=list)
    batch_id: str = ""
    """The gateway's id of the message, for its receipt (empty: an older gateway, no receipt)."""

    @property
    def accepted(self) -> int:
        return len(self.lines)


def topic_ids(topic: str) -> tuple[str, str]:
    """(site, gateway) of an uplink readings topic; Rejection('bad_topic') when it is not one."""
    try:
        site, gateway, rest = mqtt.split_topic(topic)
    except ValueError as exc:
        raise Rejection("bad_topic", str(exc)) from exc
    if rest != "up/readings" or not ids.is_ident(site) or not ids.is_ident(gateway):
        raise Rejection("bad_topic", f"topic {topic[:200]!r} is not cds/v1/<site>/<gateway>/up/readings "
                                     "with valid ids")
    return site, gateway


def decode_batch(payload: bytes, *, max_bytes: int, site: str | None = None,
                 gateway: str | None = None) -> ReadingBatch:
    """Decode one ReadingBatch, refused whole when unusable. ``site``/``gateway`` (the topic's) must match."""
    if len(payload) > max_bytes:
        raise Rejection("oversize", f"payload of {len(payload)} bytes exceeds {max_bytes}")
    try:
        batch: ReadingBatch = mqtt.batch_decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise Rejection("schema", str(exc)) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec raises the latter for invalid UTF-8
        raise Rejection("invalid_json", str(exc)) from exc
    if site is not None and (batch.site != site or batch.gateway != gateway):
        raise Rejection("topic_mismatch", f"payload names {batch.site}/{batch.gateway} but was published "
                                          f"under {site}/{gateway}")
    return batch


def convert_batch(
    batch: ReadingBatch,
    *,
    now_ms: int,
    max_future_ms: int,
    min_ts_ms: int = 0,
    refused: Mapping[str, Reason] | None = None,
) -> ParsedBatch:
    """The batch's readings as line protocol, those that cannot be stored refused one by one.

    ``refused``: meters whose readings are all refused (the device book's verdict). Readings measured before
    ``min_ts_ms`` (the raw retention policy's edge) are refused too: InfluxDB would drop them and answer 400 for
    the whole write, stranding the good readings it did store."""
    out = ParsedBatch(batch.site, batch.gateway, [], {}, batch_id=batch.batch_id)
    limit = now_ms + max_future_ms
    line = reading_formatter(batch.site, batch.gateway)
    readings = batch.readings
    if not refused and min_ts_ms <= min(r.ts for r in readings) and max(r.ts for r in readings) <= limit:
        try:  # the common case: every reading kept
            out.lines = [line(r) for r in readings]
        except LineProtocolError:
            out.lines = []
        else:
            out.spans = _spans(readings)
            return out
    refused = refused or {}
    kept = []
    for r in readings:
        if r.device in refused:
            out.rejected.append(RejectedReading(r, refused[r.device], f"device {r.device}: {refused[r.device]}"))
            continue
        if r.ts > limit:
            out.rejected.append(RejectedReading(r, "future_timestamp",
                                                f"ts {r.ts} is more than {max_future_ms} ms ahead of {now_ms}"))
            continue
        if r.ts < min_ts_ms:
            out.rejected.append(RejectedReading(r, "beyond_retention",
                                                f"ts {r.ts} is older than the raw retention policy ({min_ts_ms})"))
            continue
        try:
            out.lines.append(line(r))
        except LineProtocolError as exc:
            out.rejected.append(RejectedReading(r, "unrepresentable", str(exc)))
            continue
        kept.append(r)
    out.spans = _spans(kept)
    return out


def _spans(readings: list[Reading]) -> dict[str, Span]:
    """(first, last) measured time per device."""
    acc: dict[str, list[int]] = {}
    for r in readings:
        t = r.ts
        span = acc.get(r.device)
        if span is None:
            acc[r.device] = [t, t]
        elif t > span[1]:
            span[1] = t
        elif t < span[0]:
            span[0] = t
    return {d: (lo, hi) for d, (lo, hi) in acc.items()}
