"""Identifier rules shared by the gateway, the backend and the simulator.

Site, gateway and device ids become MQTT topic levels, InfluxDB tag values and file names, so they are kept
boring: lower-case ASCII, digits, ``_`` and ``-``. The patterns are anchored with ``\\Z`` rather than ``$``
because ``$`` also matches before a trailing newline, and msgspec's ``pattern`` uses ``re.search``: with ``$`` an
id like ``"site\\n"`` would pass validation and then break a topic or a line-protocol record.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

import msgspec

ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,62}\Z"
"""A site or gateway id."""
DEVICE_ID_PATTERN: Final = r"^[0-9a-f]{16}\Z"
"""A meter id: its 64-bit serial as 16 lower-case hex digits."""

_ID_RE: Final = re.compile(ID_PATTERN)
_DEVICE_RE: Final = re.compile(DEVICE_ID_PATTERN)

Ident = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
DeviceId = Annotated[str, msgspec.Meta(pattern=DEVICE_ID_PATTERN)]


def is_ident(value: str) -> bool:
    """True when ``value`` may be used as a site or gateway id."""
    return _ID_RE.match(value) is not None


def is_device_id(value: str) -> bool:
    """True when ``value`` is a well-formed meter id."""
    return _DEVICE_RE.match(value) is not None
