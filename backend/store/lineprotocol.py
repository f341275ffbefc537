"""InfluxDB line protocol (v1 ``/write``): escaping and the CDS reading schema.

A reading becomes one point keyed by measurement + tags (site, gateway, device) + measured timestamp, so writing
the same reading twice overwrites it: at-least-once delivery upstream becomes exactly-once in storage.

    readings,site=<site>,gateway=<gw>,device=<dev> vrms=127.1,irms=3.2,...,energy_mwh=123i,boot=7i,seq=42i,...,
        energy_export_mwh=0i <ts_ms>

``energy_mwh`` is the imported-energy register, ``energy_export_mwh`` the exported one; a meter without an export
register (an old meter or an old gateway's payload) stores 0 there, i.e. "import only".

Every user- or device-supplied string goes through the escapers below; characters line protocol cannot carry at
all (newlines, NUL) are rejected rather than silently altered.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from protocol.mqtt import Reading

READINGS_MEASUREMENT: Final = "readings"
PRECISION: Final = "ms"

_FORBIDDEN = frozenset("\n\r\x00")


class LineProtocolError(ValueError):
    """A value that line protocol cannot represent (newline, NUL, NaN, infinity, empty key)."""


def _check(value: str, what: str) -> None:
    if not value:
        raise LineProtocolError(f"empty {what}")
    if not _FORBIDDEN.isdisjoint(value):
        raise LineProtocolError(f"{what} {value!r} contains a newline or NUL")


def escape_measurement(name: str) -> str:
    _check(name, "measurement")
    return name.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def escape_key(key: str) -> str:
    """Tag keys, tag values and field keys: commas, equals signs and spaces are escaped."""
    _check(key, "tag or field")
    return key.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def escape_string_field(value: str) -> str:
    if not _FORBIDDEN.isdisjoint(value):
        raise LineProtocolError(f"string field {value!r} contains a newline or NUL")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_field(value: float | int | bool | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LineProtocolError(f"field value {value} is not finite")
        return repr(value)
    return escape_string_field(value)


def point(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, float | int | bool | str],
    ts: int | None = None,
) -> str:
    """One line of line protocol. Tags are sorted by key, as InfluxDB recommends for write performance."""
    if not fields:
        raise LineProtocolError("a point needs at least one field")
    head = escape_measurement(measurement)
    for k in sorted(tags):
        head += f",{escape_key(k)}={escape_key(tags[k])}"
    body = ",".join(f"{escape_key(k)}={format_field(v)}" for k, v in fields.items())
    return f"{head} {body}" if ts is None else f"{head} {body} {ts}"


def reading_line(site: str, gateway: str, r: Reading) -> str:
    """The line for one reading (timestamp in ms). Hot path of ingest: formatted directly, ids escaped."""
    for v in (r.vrms, r.irms, r.p, r.s, r.pf, r.freq):
        if not math.isfinite(v):
            raise LineProtocolError(f"reading {r.device}/{r.boot}/{r.seq} has a non-finite value")
    return (
        f"{READINGS_MEASUREMENT},device={escape_key(r.device)},gateway={escape_key(gateway)},"
        f"site={escape_key(site)} vrms={r.vrms!r},irms={r.irms!r},p={r.p!r},s={r.s!r},pf={r.pf!r},"
        f"freq={r.freq!r},energy_mwh={r.energy_mwh}i,boot={r.boot}i,seq={r.seq}i,flags={r.flags}i,"
        f"energy_export_mwh={r.energy_export_mwh}i {r.ts}"
    )


def reading_formatter(site: str, gateway: str) -> Callable[[Reading], str]:
    """A fast ``reading_line`` for many readings of one gateway: the escaped tag prefix is built once per
    device, and finiteness is checked with one ``isfinite`` on the sum (NaN and infinities propagate through
    a sum; contract values are bounded by 1e9, so a finite sum cannot overflow). Same output as reading_line."""
    tail = f",gateway={escape_key(gateway)},site={escape_key(site)} vrms="
    prefixes: dict[str, str] = {}

    def fmt(r: Reading) -> str:
        if not math.isfinite(r.vrms + r.irms + r.p + r.s + r.pf + r.freq):
            raise LineProtocolError(f"reading {r.device}/{r.boot}/{r.seq} has a non-finite value")
        prefix = prefixes.get(r.device)
        if prefix is None:
            prefix = prefixes[r.device] = f"{READINGS_MEASUREMENT},device={escape_key(r.device)}{tail}"
        return (f"{prefix}{r.vrms!r},irms={r.irms!r},p={r.p!r},s={r.s!r},pf={r.pf!r},freq={r.freq!r},"
                f"energy_mwh={r.energy_mwh}i,boot={r.boot}i,seq={r.seq}i,flags={r.flags}i,"
                f"energy_export_mwh={r.energy_export_mwh}i {r.ts}")

    return fmt


def reading_lines(site: str, gateway: str, readings: Iterable[Reading]) -> str:
    """Newline-joined lines for a batch, ready for one ``/write`` body."""
    return "\n".join(reading_line(site, gateway, r) for r in readings)
