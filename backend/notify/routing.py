"""Who gets an event, on which channels, and when: users' preferences applied to one event (sans-IO).

A user receives an event of a site when they follow that site (a rule for it in their preferences) and are
still allowed to see it, the rule takes its kind (``tipos``, empty = all) and its severity reaches the rule's
minimum; a "resolvido" only when the rule asks for it (``resolvidos``). Budget and test events name their user
and go to nobody else. Each (event, user, channel) becomes one delivery with a stable id, so routing the same
event twice queues nothing more.

Quiet hours (``silencio``, Brasília time): a non-critical event that falls inside them is *held*, not dropped —
its delivery is due when the quiet hours end, and it goes out then, with its original time in the text. A
critical alert ("alerta" of severity ``critico``) goes through at once, and so does a test message, which the user
asked for that moment. A "resolvido" is good news that can wait, so it is held like any non-critical event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

import msgspec

from backend.notify.preferences import Canal, Preferencias, RegraSite, in_quiet_hours, minutes
from backend.notify.transitions import SEVERITY_RANK, Event
from protocol.timebase import TZ


class Delivery(msgspec.Struct, frozen=True):
    """One message to send: an event, to one channel of one user, not before ``due_ms``."""

    id: str
    username: str
    channel: Canal
    event: Event
    due_ms: int


def delivery_id(event_id: str, username: str, channel: str) -> str:
    return f"{event_id}/{username}/{channel}"


def wants(rule: RegraSite, event: Event) -> bool:
    """Whether ``rule`` takes ``event`` (kind, severity, resolved ones)."""
    if event.type == "teste":
        return True
    if rule.tipos and event.alert.kind not in rule.tipos:
        return False
    if event.type == "resolvido" and not rule.resolvidos:
        return False
    return SEVERITY_RANK.get(event.alert.severity, 1) >= SEVERITY_RANK[rule.severidade_minima]


def quiet_end_ms(prefs: Preferencias, now_ms: int) -> int:
    """When the quiet hours around ``now_ms`` end (``now_ms`` itself when it is not in them)."""
    quiet = prefs.silencio
    at = dt.datetime.fromtimestamp(now_ms / 1000, TZ)
    if quiet is None or not in_quiet_hours(quiet, at):
        return now_ms
    end = minutes(quiet.fim)
    day = at.date() if at.hour * 60 + at.minute < end else at.date() + dt.timedelta(days=1)
    local = dt.datetime.combine(day, dt.time(end // 60, end % 60), TZ)
    return int(local.timestamp() * 1000)


def route(event: Event, prefs: Mapping[str, Preferencias], may_see: Callable[[str, str], bool],
          now_ms: int) -> list[Delivery]:
    """The deliveries of ``event`` under every user's preferences; ``may_see(user, site)`` is the tenancy rule
    as of now (a user who lost the site hears nothing more of it)."""
    out: list[Delivery] = []
    users = [event.user] if event.user else sorted(prefs)
    for username in users:
        p = prefs.get(username)
        if p is None:
            continue
        channels = p.canais
        if event.type != "teste":  # a test goes to every channel, even while paused: the user asked for it now
            if not p.ativo or not may_see(username, event.alert.site):
                continue
            rule = next((r for r in p.sites if r.site == event.alert.site), None)
            if rule is None or not wants(rule, event):
                continue
            channels = [c for c in p.canais if not rule.canais or c.nome in rule.canais]
        urgent = event.type == "teste" or (event.type == "alerta" and event.alert.severity == "critico")
        due = now_ms if urgent else quiet_end_ms(p, now_ms)
        out += [Delivery(id=delivery_id(event.id, username, c.nome), username=username, channel=c, event=event,
                         due_ms=due) for c in channels]
    return out
