"""Provisioned devices: the site and gateway each meter belongs to, and the verdict on every uplink message.

Why: the broker's ACL only proves *which gateway* published a message, not that the meters it names are that
gateway's. Without a book of owners, a gateway holding valid credentials could store readings as another site's
meter, redirect that meter's CONFIG downlinks to itself, or invent thousands of device ids that each become an
InfluxDB tag value (the cardinality flood: past ``max-values-per-tag`` every new real meter is refused).

The rule, applied to readings, DeviceInfo and ConfigResults alike (:meth:`Book.verdict`):

* a meter provisioned to (site, gateway) is accepted from that gateway only; from any other it is ``not_owner``
  — except that an automatically claimed meter may move to another gateway *of the same site* (a meter re-plugged
  into the next gateway of a condominium keeps reporting; an administrator's assignment never moves by itself);
* a disabled meter, gateway or site is refused whoever sends it;
* an unknown meter is ``unknown``: the I/O shell (``devicebook.py``) then claims it for the gateway that saw it
  when the settings allow, the gateway owns fewer than its device limit and its new-device budget for the hour
  is not spent — or when the sites file lists it under that gateway's site — else it is refused. So unknown ids
  never become tag values beyond a bounded, per-gateway number.

This module is the sans-IO core: records, the in-memory book and the verdict. Storage, claims and admin changes
live in ``devicebook.py``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Origin = Literal["admin", "auto", "sites_file"]
"""Who assigned a meter: an administrator (never moved automatically), an automatic claim at first sight, or
a claim of a meter the sites file lists under the site."""

Verdict = Literal["owned", "moved", "unknown", "not_owner", "device_disabled", "gateway_disabled", "site_disabled"]
"""``moved``: an automatically claimed meter now reporting from another gateway of its site (re-claimed)."""

Refusal = Literal["not_owner", "device_disabled", "gateway_disabled", "site_disabled", "unprovisioned",
                  "device_limit"]
"""Why a meter's message is refused (a metrics label): a refusing verdict, ``unprovisioned`` (automatic claims
are off) or ``device_limit`` (the gateway owns as many meters as it may, or claimed its hour's budget)."""

REFUSING: dict[Verdict, Refusal] = {"not_owner": "not_owner", "device_disabled": "device_disabled",
                                    "gateway_disabled": "gateway_disabled", "site_disabled": "site_disabled"}


class DeviceRecord(msgspec.Struct, frozen=True):
    """Who a meter belongs to. ``disabled``: refused from everyone, kept so its history stays attributed."""

    device: str
    site: str
    gateway: str
    origin: Origin
    disabled: bool = False
    changed_ms: int = 0


class GatewayRecord(msgspec.Struct, frozen=True):
    """A gateway an administrator registered or disabled; ``max_devices`` 0 = the settings' default."""

    site: str
    gateway: str
    disabled: bool = False
    max_devices: int = 0
    changed_ms: int = 0


class SiteRecord(msgspec.Struct, frozen=True):
    site: str
    name: str = ""
    disabled: bool = False
    changed_ms: int = 0


Record = DeviceRecord | GatewayRecord | SiteRecord


class Book:
    """Every provisioned meter, gateway and site, with a per-gateway count of owned meters."""

    def __init__(self, declared: dict[str, str] | None = None) -> None:
        self.devices: dict[str, DeviceRecord] = {}
        self.gateways: dict[tuple[str, str], GatewayRecord] = {}
        self.sites: dict[str, SiteRecord] = {}
        self.declared: dict[str, str] = dict(declared or {})
        """Meter → site, from the sites file: claimed by the first gateway of that site, outside any limit."""
        self._owned: dict[tuple[str, str], int] = {}

    def replace(self, devices: list[DeviceRecord], gateways: list[GatewayRecord], sites: list[SiteRecord]) -> None:
        """Load a whole new copy (a reload from storage)."""
        self.devices = {}
        self._owned = {}
        for d in devices:
            self.put_device(d)
        self.gateways = {(g.site, g.gateway): g for g in gateways}
        self.sites = {s.site: s for s in sites}

    def put_device(self, record: DeviceRecord) -> None:
        old = self.devices.get(record.device)
        if old is not None and not old.disabled:
            self._owned[(old.site, old.gateway)] -= 1
        self.devices[record.device] = record
        if not record.disabled:
            key = (record.site, record.gateway)
            self._owned[key] = self._owned.get(key, 0) + 1

    def put(self, record: Record) -> None:
        """Add or replace one meter's, gateway's or site's record."""
        match record:
            case DeviceRecord():
                self.put_device(record)
            case GatewayRecord():
                self.gateways[(record.site, record.gateway)] = record
            case SiteRecord():
                self.sites[record.site] = record

    def held(self, record: Record) -> Record | None:
        """The record this copy holds for the same meter, gateway or site as ``record``."""
        match record:
            case DeviceRecord():
                return self.devices.get(record.device)
            case GatewayRecord():
                return self.gateways.get((record.site, record.gateway))
            case SiteRecord():
                return self.sites.get(record.site)

    def owned_by(self, site: str, gateway: str) -> int:
        """Meters (not disabled) provisioned to the gateway."""
        return self._owned.get((site, gateway), 0)

    def device_limit(self, site: str, gateway: str, default: int) -> int:
        record = self.gateways.get((site, gateway))
        return record.max_devices if record is not None and record.max_devices > 0 else default

    def owner(self, device: str) -> DeviceRecord | None:
        """The meter's record when it is provisioned and enabled."""
        record = self.devices.get(device)
        return record if record is not None and not record.disabled else None

    def site_of(self, device: str) -> str:
        """The site a meter belongs to ("" when unknown): its record, else the sites file."""
        record = self.devices.get(device)
        return record.site if record is not None else self.declared.get(device, "")

    def blocked(self, site: str, gateway: str) -> Verdict | None:
        """``site_disabled`` / ``gateway_disabled`` when everything from this gateway is refused."""
        s = self.sites.get(site)
        if s is not None and s.disabled:
            return "site_disabled"
        g = self.gateways.get((site, gateway))
        if g is not None and g.disabled:
            return "gateway_disabled"
        return None

    def verdict(self, site: str, gateway: str, device: str) -> Verdict:
        """What to do with a message of ``device`` published under ``site``/``gateway`` (module docstring)."""
        blocked = self.blocked(site, gateway)
        if blocked is not None:
            return blocked
        record = self.devices.get(device)
        if record is None:
            declared = self.declared.get(device)
            return "unknown" if declared in (None, site) else "not_owner"
        if record.disabled:
            return "device_disabled"
        if record.site != site:
            return "not_owner"
        if record.gateway == gateway:
            return "owned"
        return "not_owner" if record.origin == "admin" else "moved"
