"""Time units and the local time zone, one definition for every side.

Timestamps travel and are stored as integer milliseconds since the Unix epoch (UTC); the buckets people see
(days, postos tarifários, billing cycles) are in Brasília time, which has had no daylight saving since 2019 but
did before, so code converts through ``zoneinfo`` and never adds a fixed offset.
"""

from __future__ import annotations

from datetime import date
from typing import Final
from zoneinfo import ZoneInfo

MINUTE_MS: Final = 60_000
QUARTER_MS: Final = 900_000
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000

TZ: Final = ZoneInfo("America/Sao_Paulo")
"""The local time zone of every site (Brasília time)."""

FIRST_DATE: Final = date(1970, 1, 1)
LAST_DATE: Final = date(2199, 12, 31)
"""The dates CDS accepts in queries: no reading predates the Unix epoch, and InfluxDB keeps times only up to
2262 (so a range, its padding and its local offsets must stay well inside)."""
