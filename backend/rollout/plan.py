"""A rolling upgrade's plan: the replica slots, how to start and stop each version, and the time limits.

Why a plan file and commands instead of talking to systemd or Docker directly: CDS runs under systemd units,
compose or anything else an operator chooses; what the procedure needs is only "start the new replica of this
slot", "stop the old one" (gracefully: SIGTERM drains the replica's pending writes and acknowledgements) and each
replica's URL. The shipped example (deploy/backend/rollout.example.toml) uses systemd template units.

Blue-green per slot: a slot's two versions run under two MQTT client ids (e.g. ``cds-backend-1-blue`` and
``-green``), so the new replica and the old one both serve while the new one proves itself, and the next upgrade
goes back to the first id and resumes its session: the sessions a rollout leaves behind stay bounded at two per
slot (an absent replica's session is adopted by a surviving peer meanwhile, so nothing waits in it).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec


class PlanError(ValueError):
    """The plan file is missing, unreadable or inconsistent."""


class Command(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    argv: list[str]
    env: dict[str, str] = {}
    """Added to the rollout's own environment for this command."""


class Slot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    old_url: str
    new_url: str
    start_new: Command
    stop_new: Command
    stop_old: Command
    start_old: Command
    """Used only by a rollback, for a slot whose old replica was already stopped."""


class Plan(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    slot: list[Slot]
    ready_timeout_s: float = 60.0
    """How long a started replica has to answer ``/ready`` with 200 (and an old one, when rolling back)."""
    smoke_timeout_s: float = 30.0
    """How long the smoke check may take on a ready new replica."""
    smoke_site: str = "cds-rollout"
    """The site the smoke check's one reading is posted under (a real write: keep it apart from real sites)."""
    smoke_gateway: str = "rollout"
    smoke_device: str = "00000000c0de0001"
    command_timeout_s: float = 120.0


def parse_plan(text: str) -> Plan:
    try:
        plan = msgspec.convert(tomllib.loads(text), Plan)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise PlanError(f"invalid rollout plan: {exc}") from exc
    if not plan.slot:
        raise PlanError("the plan names no slot")
    names = [s.name for s in plan.slot]
    if len(set(names)) != len(names):
        raise PlanError(f"slot names repeat: {names}")
    for s in plan.slot:
        if s.old_url.rstrip("/") == s.new_url.rstrip("/"):
            raise PlanError(f"slot {s.name}: the new replica needs its own URL (both versions serve at once)")
        for cmd in (s.start_new, s.stop_new, s.stop_old, s.start_old):
            if not cmd.argv:
                raise PlanError(f"slot {s.name}: an empty command")
    return plan


def load_plan(path: Path) -> Plan:
    try:
        return parse_plan(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(f"cannot read {path}: {exc}") from exc
