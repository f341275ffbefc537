"""Alert lists in, transitions out: the sans-IO core of the notifier.

The replicas publish each site's whole alert list, retained, after every evaluation (backend/analytics/alerts.py),
and there are several replicas. A user wants to hear when something *changes*, once: an alert that opens
("alerta") and, later, that it is over ("resolvido"). :func:`step` turns one list into those events against the
state the notifier kept for the site, and is written so that the replicas' copies cancel out:

- every list carries ``evaluated_at``; a list not newer than the last one taken for its site is the other
  replica's copy of the same evaluation, or an older one arriving late, and changes nothing;
- an alert is opened by the first list that shows it, keyed by its ``id`` (``site:device:kind``), so two replicas
  showing it open it once;
- an alert is resolved only after it has been missing for ``absent_ms`` (the evaluation interval): two replicas
  evaluate at different moments, and a single list without it (a replica whose InfluxDB read came back just
  before the newest readings) must not produce a "resolvido" immediately followed by a new "alerta".

Events get stable ids (``<alert id>@<opened ms>:<type>``): the outbox inserts each once whatever repeats it, and
every delivery made of it carries that id, so a receiver can drop a repeat.

Alerts are read generically (:class:`AlertIn`: kind and severity are plain strings), so a new alert kind in the
analytics package needs no change here.
"""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal

import msgspec

SEVERITY_RANK: Final = {"info": 0, "aviso": 1, "critico": 2}
"""Order of the severities a preference's minimum is compared with; an unknown one counts as ``aviso``."""
EventType = Literal["alerta", "resolvido", "teste"]


class AlertIn(msgspec.Struct, frozen=True):
    """One alert as published on ``cds/v1/{site}/alerts`` (the ``Alert`` of backend/analytics/alerts.py)."""

    id: str
    site: str
    device: str = ""
    kind: str = ""
    severity: str = "aviso"
    message: str = ""
    value: float | None = None
    limit: str = ""
    since: str | None = None
    gateway: str = ""
    """The gateway a ``fila_gateway`` alert is about (``device`` is empty then)."""


class AlertListIn(msgspec.Struct, frozen=True):
    """A site's alert list (``AlertList``); unknown fields are ignored, as on every MQTT payload."""

    site: str
    evaluated_at: str
    alerts: list[AlertIn]
    v: int = 1


class OpenAlert(msgspec.Struct, frozen=True):
    alert: AlertIn
    opened_ms: int
    missing_since_ms: int | None = None
    """Evaluation time of the first list that no longer showed it (None: shown by the latest list)."""


class SiteState(msgspec.Struct, frozen=True):
    """What the notifier remembers of one site (or of one user's budget of a site)."""

    last_evaluated_ms: int
    open: dict[str, OpenAlert]


class Event(msgspec.Struct, frozen=True):
    """A transition to tell users about."""

    id: str
    type: EventType
    alert: AlertIn
    at_ms: int
    opened_ms: int
    """When the alert opened (``at_ms`` for an "alerta"): a "resolvido" says how long it lasted."""
    user: str = ""
    """Only this user ("" = every user following the site): budget and test events are someone's own."""


class BadAlertList(ValueError):
    """A payload on an alerts topic that is not an alert list of that topic's site."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"{topic}: {reason}")
        self.topic = topic


_decoder: Final = msgspec.json.Decoder(AlertListIn)


def parse_list(topic: str, payload: bytes) -> tuple[AlertListIn, int]:
    """The list and its evaluation time in ms; BadAlertList when the payload or its site does not fit the topic
    (``cds/v1/{site}/alerts``), so a list can never move alerts between sites."""
    try:
        lst = _decoder.decode(payload)
        at = dt.datetime.fromisoformat(lst.evaluated_at)
    except (msgspec.DecodeError, ValueError) as exc:
        raise BadAlertList(topic, str(exc)[:200]) from exc
    parts = topic.split("/")
    if len(parts) != 4 or parts[2] != lst.site or any(a.site != lst.site for a in lst.alerts):
        raise BadAlertList(topic, f"site {lst.site!r} does not match the topic")
    if at.tzinfo is None:
        raise BadAlertList(topic, "evaluated_at has no UTC offset")
    return lst, int(at.timestamp() * 1000)


def event_id(alert_id: str, opened_ms: int, kind: EventType) -> str:
    return f"{alert_id}@{opened_ms}:{kind}"


def step(state: SiteState | None, alerts: list[AlertIn], evaluated_ms: int, absent_ms: int,
         user: str = "") -> tuple[SiteState, list[Event]]:
    """The site's next state and the events of one evaluation's list (see the module's rules)."""
    if state is not None and evaluated_ms <= state.last_evaluated_ms:
        return state, []
    before = state.open if state is not None else {}
    now: dict[str, OpenAlert] = {}
    events: list[Event] = []
    shown = {a.id: a for a in alerts}
    for aid, alert in shown.items():
        known = before.get(aid)
        if known is None:
            now[aid] = OpenAlert(alert=alert, opened_ms=evaluated_ms)
            events.append(Event(id=event_id(aid, evaluated_ms, "alerta"), type="alerta", alert=alert,
                                at_ms=evaluated_ms, opened_ms=evaluated_ms, user=user))
        else:  # still open: keep its opening time, take the newest figures
            now[aid] = OpenAlert(alert=alert, opened_ms=known.opened_ms)
    for aid, known in before.items():
        if aid in shown:
            continue
        since = known.missing_since_ms if known.missing_since_ms is not None else evaluated_ms
        if evaluated_ms - since >= absent_ms:
            events.append(Event(id=event_id(aid, known.opened_ms, "resolvido"), type="resolvido",
                                alert=known.alert, at_ms=evaluated_ms, opened_ms=known.opened_ms, user=user))
        else:
            now[aid] = msgspec.structs.replace(known, missing_since_ms=since)
    return SiteState(last_evaluated_ms=evaluated_ms, open=now), events
