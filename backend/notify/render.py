"""The pt-BR text of a notification: a subject (e-mail subject, ntfy title) and a plain-text body, the same on
every channel, plus the ntfy priority and tags derived from the event (sans-IO).

Numbers and times are written the Brazilian way with babel's pt_BR data ("1.234,5", "R$ 1.234,50",
"05/05/2026 às 18:15", Brasília time). An alert's own ``message`` is already pt-BR (the analytics package writes
it) and is quoted as is; this module adds what a message read hours later needs: the site, the meter, when it
started and, for a "resolvido", how long it lasted.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Final, Literal

import msgspec
from babel.numbers import format_currency, format_decimal

from backend.notify.transitions import Event
from protocol.timebase import TZ

LOCALE: Final = "pt_BR"
Priority = Literal["default", "high", "urgent"]
KIND_LABEL: Final = {
    "offline": "Medidor sem comunicação",
    "consumo_anormal": "Consumo acima do habitual",
    "tensao": "Tensão fora da faixa adequada",
    "fator_potencia": "Fator de potência baixo",
    "fila_gateway": "Gateway com leituras represadas",
    "dados_desatualizados": "Dados de tarifas ou da rede desatualizados",
    "bandeira": "Mudança de bandeira tarifária",
    "orcamento": "Conta projetada acima do orçamento",
}
"""Headlines of the kinds known today; any other kind is shown by its name (a new kind needs no change here)."""


class Message(msgspec.Struct, frozen=True):
    subject: str
    body: str
    priority: Priority
    tags: list[str]


def brl(value: Decimal) -> str:
    """``Decimal("1234.5")`` -> ``"R$ 1.234,50"`` (plain spaces: e-mail clients and phones render them alike)."""
    return format_currency(value, "BRL", locale=LOCALE).replace("\xa0", " ")


def number(value: float) -> str:
    return format_decimal(Decimal(str(value)), format="#,##0.###", locale=LOCALE)


def when(ms: int) -> str:
    t = dt.datetime.fromtimestamp(ms / 1000, TZ)
    return f"{t:%d/%m/%Y} às {t:%H:%M}"


def duration(ms: int) -> str:
    minutes = max(ms // 60_000, 0)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {rest:02d} min"
    return f"{hours // 24} dias"


def render(event: Event) -> Message:
    """The message of ``event``."""
    a = event.alert
    label = KIND_LABEL.get(a.kind, a.kind or "Alerta")
    if event.type == "teste":
        return Message(subject="[CDS] Mensagem de teste",
                       body=f"Mensagem de teste pedida em {when(event.at_ms)}.\n\nSe você recebeu isto, o canal "
                            "está configurado corretamente e receberá os alertas dos seus sites.\n",
                       priority="default", tags=["white_check_mark"])
    lines = [a.message or label, "", f"Site: {a.site}"]
    if a.device:
        lines.append(f"Medidor: {a.device}")
    if a.gateway:
        lines.append(f"Gateway: {a.gateway}")
    if a.value is not None:
        lines.append(f"Valor medido: {number(a.value)}" + (f" (limite {a.limit})" if a.limit else ""))
    if event.type == "alerta":
        critical = a.severity == "critico"
        subject = f"[CDS] {'ALERTA CRÍTICO' if critical else 'Alerta'} em {a.site}: {label}"
        lines.append(f"Detectado em {when(event.at_ms)}.")
        priority: Priority = "urgent" if critical else "high"
        tags = ["rotating_light" if critical else "warning", a.kind]
    else:
        subject = f"[CDS] Resolvido em {a.site}: {label}"
        lines.append(f"Normalizado em {when(event.at_ms)}, após {duration(event.at_ms - event.opened_ms)}.")
        priority, tags = "default", ["white_check_mark", a.kind]
    lines += ["", f"Referência: {event.id}"]
    return Message(subject=subject, body="\n".join(lines) + "\n", priority=priority, tags=tags)
