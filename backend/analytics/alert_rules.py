"""Alert rules as pure functions: what is wrong with a meter, a gateway or the data a site is priced with.

Each rule takes numbers (and the clock as ``now_ms`` or a date) and returns an :class:`Alert` or None; the engine
in :mod:`backend.analytics.alerts` feeds them from InfluxDB, the broker's retained gateway statuses and ANEEL's
bandeiras. Messages are pt-BR, with ANEEL's and PRODIST's terms and the decimal comma.

Voltage classes (PRODIST Módulo 8, tensão nominal ≤ 1 kV, sistemas 220/127 V), on the mean of the last 10 min
(the module's 10-minute integration):

=========  =====================  ====================================  ======================
Nominal    Adequada               Precária                              Crítica
=========  =====================  ====================================  ======================
220 V      202 ≤ V ≤ 231          191 ≤ V < 202 ou 231 < V ≤ 233        V < 191 ou V > 233
127 V      117 ≤ V ≤ 133          110 ≤ V < 117 ou 133 < V ≤ 135        V < 110 ou V > 135
=========  =====================  ====================================  ======================

Subjects: a meter's alert names it in ``device``; ``fila_gateway`` names its gateway in ``gateway`` and leaves
``device`` empty; ``dados_desatualizados`` and ``bandeira`` are about the whole site, so both are empty. Every id
is ``{site}:{subject}:{kind}`` (the subject being the meter, the gateway, ``aneel``/``ons`` or the bandeira's
month), stable while the condition lasts, so a notifier can tell a new alert from one still open.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Sequence
from decimal import Decimal
from typing import Final, Literal

import msgspec

from backend.aneel.tariffs import BandeiraBook, FlagChoice, TariffNotFound
from protocol.mqtt import GatewayStatus
from protocol.timebase import TZ

Kind = Literal["offline", "consumo_anormal", "tensao", "fator_potencia", "fila_gateway", "dados_desatualizados",
               "bandeira"]
Severity = Literal["aviso", "critico"]
DataSource = Literal["aneel", "ons"]
LIMITS: Final = {220: ((202.0, 231.0), (191.0, 233.0)), 127: ((117.0, 133.0), (110.0, 135.0))}
MIN_LOAD_W: Final = 100.0
"""Power factor is only meaningful with a real load: below this mean power it is not judged."""
FLAG_NAMES: Final = {"Verde": "verde", "Amarela": "amarela", "Vermelha P1": "vermelha patamar 1",
                     "Vermelha P2": "vermelha patamar 2", "Escassez Hídrica": "escassez hídrica"}
"""ANEEL's dataset spells the patamares ``P1``/``P2``; its announcements say "bandeira vermelha patamar 1"."""
_WHAT: Final[dict[DataSource, tuple[str, str, str]]] = {
    "aneel": ("Tarifas e bandeiras da ANEEL", "obtidas", "os custos usam a última cópia"),
    "ons": ("Dados da rede do ONS", "obtidos", "a participação renovável e o quadro da rede usam dados antigos"),
}
"""What each source is, its participle's gender, and what its staleness affects."""


class Alert(msgspec.Struct, frozen=True):
    id: str
    site: str
    device: str
    """The meter the alert is about; empty for a gateway's or the site's alert."""
    kind: Kind
    severity: Severity
    message: str
    value: float | None = None
    limit: str = ""
    since: str | None = None
    gateway: str = ""
    """The gateway a ``fila_gateway`` alert is about; empty for every other kind."""


class AlertList(msgspec.Struct):
    site: str
    evaluated_at: str
    alerts: list[Alert]
    v: int = 1


def _number(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}".replace(".", ",")


def _duration(seconds: float) -> str:
    """A pt-BR age: minutes up to 2 h, hours up to 2 days, then days."""
    if seconds < 7200:
        return f"{seconds // 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600:.0f} h"
    return f"{seconds // 86400:.0f} dias"


def _local(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, TZ)


# --- meters ---------------------------------------------------------------------------------------------------------

def nominal_voltage(v: float) -> int:
    """127 or 220 V: whichever nominal the measured voltage is closer to."""
    return 220 if abs(v - 220) < abs(v - 127) else 127


def voltage_class(v: float, nominal: int) -> Literal["adequada", "precaria", "critica"]:
    (a_lo, a_hi), (p_lo, p_hi) = LIMITS[nominal]
    if a_lo <= v <= a_hi:
        return "adequada"
    if p_lo <= v <= p_hi:
        return "precaria"
    return "critica"


def check_voltage(site: str, device: str, v: float, nominal: int = 0) -> Alert | None:
    nom = nominal or nominal_voltage(v)
    cls = voltage_class(v, nom)
    if cls == "adequada":
        return None
    (a_lo, a_hi), _ = LIMITS[nom]
    label = "precária" if cls == "precaria" else "crítica"
    return Alert(id=f"{site}:{device}:tensao", site=site, device=device, kind="tensao",
                 severity="aviso" if cls == "precaria" else "critico",
                 message=f"Tensão {label}: {v:.1f} V (nominal {nom} V; adequada {a_lo:.0f}–{a_hi:.0f} V, "
                         "PRODIST Módulo 8)".replace(".", ","),
                 value=round(v, 1), limit=f"{a_lo:.0f}-{a_hi:.0f} V")


def check_power_factor(site: str, device: str, pf: float, p_w: float, pf_min: float = 0.92) -> Alert | None:
    if p_w < MIN_LOAD_W or abs(pf) >= pf_min:
        return None
    return Alert(id=f"{site}:{device}:fator_potencia", site=site, device=device, kind="fator_potencia",
                 severity="aviso", message=f"Fator de potência {abs(pf):.2f} abaixo de {pf_min:.2f} "
                 "(referência ANEEL)".replace(".", ","), value=round(abs(pf), 3), limit=f">= {pf_min}")


def check_offline(site: str, device: str, last_seen_ms: int | None, now_ms: int, offline_s: int) -> Alert | None:
    if last_seen_ms is not None and now_ms - last_seen_ms <= offline_s * 1000:
        return None
    since = _local(last_seen_ms).isoformat() if last_seen_ms else None
    minutes = (now_ms - last_seen_ms) // 60_000 if last_seen_ms else None
    msg = (f"Medidor sem comunicação há {minutes} min" if minutes is not None
           else "Medidor sem nenhuma medição registrada")
    return Alert(id=f"{site}:{device}:offline", site=site, device=device, kind="offline", severity="critico",
                 message=msg, value=float(minutes) if minutes is not None else None, limit=f"{offline_s} s",
                 since=since)


def check_profile(site: str, device: str, kwh: float, usual: Sequence[float], hour_label: str) -> Alert | None:
    """Far above the usual profile: above max(2 × median, median + 4 × robust σ) and at least 0,2 kWh more,
    judged against at least 7 earlier values of the same hour and day type."""
    if len(usual) < 7:
        return None
    med = statistics.median(usual)
    mad = statistics.median(abs(x - med) for x in usual) * 1.4826
    threshold = max(2 * med, med + 4 * mad, med + 0.2)
    if kwh <= threshold:
        return None
    return Alert(id=f"{site}:{device}:consumo_anormal", site=site, device=device, kind="consumo_anormal",
                 severity="aviso", message=f"Consumo de {kwh:.2f} kWh às {hour_label}, acima do habitual "
                 f"({med:.2f} kWh; limite {threshold:.2f} kWh)".replace(".", ","),
                 value=round(kwh, 3), limit=f"{threshold:.3f} kWh")


# --- gateways -------------------------------------------------------------------------------------------------------

class QueueHistory:
    """``(ts, queued)`` of the distinct statuses each gateway published, as far back as the growth window needs.

    The registry keeps only a gateway's latest status, and "growing" needs earlier ones. Times are the gateway's
    own ``ts`` (one clock per gateway, so differences are sound even when that clock is off); a status with the
    same ``ts`` is the same status seen again, and a ``ts`` going back (the Pi's clock corrected at boot) starts
    the history over. No I/O: the engine calls :meth:`observe` at each evaluation.
    """

    def __init__(self, window_s: int) -> None:
        self.window_ms = window_s * 1000
        self._seen: dict[tuple[str, str], list[tuple[int, int]]] = {}

    def observe(self, site: str, gateway: str, status: GatewayStatus) -> list[tuple[int, int]]:
        """Add ``status`` and return the history, oldest first: the newest sample at or before the window's start
        (so its span can be judged), then every later one."""
        h = self._seen.setdefault((site, gateway), [])
        if h and status.ts < h[-1][0]:
            h.clear()
        if not h or status.ts > h[-1][0]:
            h.append((status.ts, status.queued))
        start = h[-1][0] - self.window_ms
        while len(h) > 1 and h[1][0] <= start:
            del h[0]
        return list(h)

    def keep_only(self, present: set[tuple[str, str]]) -> None:
        """Forget gateways whose retained status was cleared (decommissioned)."""
        for key in set(self._seen) - present:
            del self._seen[key]


def check_gateway_queue(site: str, gateway: str, status: GatewayStatus, history: Sequence[tuple[int, int]], *,
                        age_s: int, critical_s: int, rows: int, window_s: int) -> Alert | None:
    """A gateway online whose readings do not leave: ``aviso`` when its oldest unsent reading is older than
    ``age_s`` and the queue did not shrink since its previous status (a backlog after a reconnect drains in
    minutes and is not reported), or when it held more than ``rows`` readings at every status of the last
    ``window_s`` and more at the end than at the start (growing); ``critico`` when the oldest is older than
    ``critical_s``, draining or not (the gateway deletes readings older than its ``queue.max_age_days``).

    A gateway whose status says offline (its last will) is not judged: its queue is unknown, and every meter behind
    it is reported ``offline`` after ``alerts_offline_s``, which says what the user needs to know.
    """
    if not status.online or status.queued == 0:
        return None
    oldest_s = status.oldest_queued_ms / 1000
    shrinking = len(history) >= 2 and history[-1][1] < history[-2][1]
    spans = len(history) >= 2 and history[-1][0] - history[0][0] >= window_s * 1000
    growing = spans and all(q > rows for _, q in history) and history[-1][1] > history[0][1]
    critical = oldest_s > critical_s
    stuck = oldest_s > age_s and not shrinking
    if not (critical or growing or stuck):
        return None
    n = f"{status.queued:,}".replace(",", ".")
    msg = f"Fila do gateway {gateway}: {n} leitura(s) não enviada(s), a mais antiga aguarda há {_duration(oldest_s)}"
    if growing:
        msg += f"; a fila cresce há {_duration(window_s)} ou mais"
    if status.unconfirmed:
        msg += f"; {status.unconfirmed} enviada(s) aguardando confirmação do servidor"
    limit = f"{critical_s} s" if critical else f"{age_s} s" if stuck else f"> {rows} leituras"
    since = _local(status.ts - status.oldest_queued_ms).isoformat() if status.ts else None
    return Alert(id=f"{site}:{gateway}:fila_gateway", site=site, device="", gateway=gateway, kind="fila_gateway",
                 severity="critico" if critical else "aviso", message=msg, value=float(status.queued), limit=limit,
                 since=since)


# --- the site's data --------------------------------------------------------------------------------------------

def check_stale(site: str, source: DataSource, last_ok_ms: int | None, attempted: bool, now_ms: int,
                stale_s: int) -> Alert | None:
    """ANEEL's tariffs and bandeiras, or ONS's grid data, not pulled successfully for more than ``stale_s``.

    Never pulled is reported only once a pull was attempted and failed: a backend that has just started (or one
    whose schedule has not come yet) is not stale. The age is that of the last successful pull by any replica, as
    the sync log in InfluxDB records it (the health check and Prometheus read the same log).
    """
    what, obtained, effect = _WHAT[source]
    if last_ok_ms is None:
        if not attempted:
            return None
        return Alert(id=f"{site}:{source}:dados_desatualizados", site=site, device="", kind="dados_desatualizados",
                     severity="aviso", message=f"{what} nunca foram {obtained}: todas as tentativas falharam",
                     limit=f"{stale_s} s")
    age_s = (now_ms - last_ok_ms) / 1000
    if age_s <= stale_s:
        return None
    last = _local(last_ok_ms)
    return Alert(id=f"{site}:{source}:dados_desatualizados", site=site, device="", kind="dados_desatualizados",
                 severity="aviso", message=f"{what} sem atualização há {_duration(age_s)} (última em "
                 f"{last:%d/%m/%Y %H:%M}); {effect}", value=round(age_s / 3600, 1), limit=f"{stale_s} s",
                 since=last.isoformat())


def _cost(flag: FlagChoice) -> tuple[Decimal, str]:
    """The adder per 100 kWh, as ANEEL announces it (R$ with three decimals, before taxes)."""
    per_100 = (flag.adder_rs_mwh / 10).quantize(Decimal("0.001"))
    return per_100, ("sem acréscimo" if per_100 == 0 else
                     f"acréscimo de R$ {_number(float(per_100), 3)} a cada 100 kWh")


def check_bandeira(site: str, flags: BandeiraBook, today: dt.date) -> Alert | None:
    """Next month's bandeira published and different from this month's (ANEEL announces it in the last days of
    the month). The alert stays open until the month changes, when the new bandeira becomes this month's."""
    this = today.replace(day=1)
    following = (this + dt.timedelta(days=32)).replace(day=1)
    try:
        now, then = flags.flag_for(this), flags.flag_for(following)
    except TariffNotFound:
        return None
    if then.source != "acionamento" or then.flag == now.flag:
        return None
    per_100, cost_then = _cost(then)
    _, cost_now = _cost(now)
    return Alert(id=f"{site}:{following:%Y-%m}:bandeira", site=site, device="", kind="bandeira", severity="aviso",
                 message=f"Bandeira tarifária de {following:%m/%Y}: {FLAG_NAMES.get(then.flag, then.flag)} "
                 f"({cost_then}); em {this:%m/%Y} é {FLAG_NAMES.get(now.flag, now.flag)} ({cost_now})",
                 value=float(per_100), limit="R$/100 kWh")
