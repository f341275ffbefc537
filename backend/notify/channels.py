"""The senders: e-mail (SMTP), webhook (signed JSON POST) and ntfy — the notifier's thin I/O shell.

Each send either returns (the receiver accepted the message) or raises :class:`SendError`, which says whether
trying again can help (``permanent``: a 4xx other than 408/429, an address the SMTP server refuses). Every send
carries the delivery's stable id (``X-CDS-Delivery`` and the webhook body's ``id``; the e-mail's Message-ID and
``X-CDS-Delivery``), because delivery is at least once: a receiver that got an id before drops the repeat.

Webhook signature: ``X-CDS-Signature: sha256=<hex>`` is HMAC-SHA256 over the *raw* request body with the
channel's secret. The body holds the delivery id and ``enviado_em_ms``, so the signature covers them too; a
receiver recomputes the HMAC over the bytes it received (before any JSON parsing), compares in constant time,
and may refuse bodies whose ``enviado_em_ms`` is too old (``X-CDS-Timestamp`` repeats it for logging).

Webhook URLs and ntfy channels' own servers are users' choices, so they are sent through egress.py: to the address
that was checked, never into the operator's network unless ``BACKEND_NOTIFY_ALLOWED_NETWORKS`` lets them, never
after a redirect. A refused destination is a permanent failure the user sees in their deliveries.

E-mail goes through the standard library's smtplib in a worker thread (no extra dependency; one connection per
message is plenty for alerts), with SMTPS or STARTTLS and login as the settings say.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import smtplib
import ssl
from base64 import b64encode
from email.message import EmailMessage
from email.utils import formatdate
from typing import Final

import httpx
import msgspec

from backend.notify.egress import Refused, Resolver, pin, system_resolver
from backend.notify.preferences import Canal
from backend.notify.render import Message
from backend.notify.transitions import AlertIn, Event
from backend.settings import Settings

SIGNATURE_HEADER: Final = "X-CDS-Signature"
DELIVERY_HEADER: Final = "X-CDS-Delivery"
TIMESTAMP_HEADER: Final = "X-CDS-Timestamp"
_NTFY_PRIORITY: Final = {"default": "3", "high": "4", "urgent": "5"}


class SendError(Exception):
    """A send that failed; ``permanent`` when retrying the same message cannot succeed."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class WebhookBody(msgspec.Struct, frozen=True):
    """The JSON a webhook receives (and the bytes its signature covers)."""

    id: str
    evento: str
    assunto: str
    texto: str
    alerta: AlertIn
    usuario: str
    enviado_em_ms: int
    v: int = 1


def sign(secret: str, body: bytes) -> str:
    """The ``X-CDS-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def message_id(delivery_id: str) -> str:
    """A Message-ID that is the same for every attempt of one delivery (mail clients thread and dedup by it)."""
    return f"<{hashlib.sha256(delivery_id.encode()).hexdigest()[:32]}@cds.notify>"


def _http_error(response: httpx.Response) -> SendError:
    code = response.status_code
    return SendError(f"HTTP {code}: {response.text[:200]}", permanent=400 <= code < 500 and code not in (408, 429))


class Senders:
    """Sends one message on one channel; holds the HTTP client, the resolver of users' URLs and the settings."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient, resolve: Resolver = system_resolver) -> None:
        self.settings = settings
        self.http = http
        self.resolve = resolve
        self._encoder = msgspec.json.Encoder()

    async def send(self, delivery_id: str, username: str, channel: Canal, event: Event, msg: Message,
                   now_ms: int) -> None:
        try:
            if channel.tipo == "email":
                await asyncio.to_thread(self._email, delivery_id, channel.destino, msg)
            elif channel.tipo == "webhook":
                await self._webhook(delivery_id, username, channel, event, msg, now_ms)
            else:
                await self._ntfy(delivery_id, channel, msg)
        except Refused as exc:
            raise SendError(str(exc)[:300], permanent=exc.permanent) from exc
        except httpx.HTTPError as exc:
            raise SendError(f"{type(exc).__name__}: {exc}"[:300]) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise SendError(f"endereço recusado pelo servidor SMTP: {exc}"[:300], permanent=True) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise SendError(f"SMTP: {type(exc).__name__}: {exc}"[:300]) from exc

    async def _webhook(self, delivery_id: str, username: str, channel: Canal, event: Event, msg: Message,
                       now_ms: int) -> None:
        body = self._encoder.encode(WebhookBody(id=delivery_id, evento=event.type, assunto=msg.subject,
                                                texto=msg.body, alerta=event.alert, usuario=username,
                                                enviado_em_ms=now_ms))
        await self._post(channel.destino, body, {
            "Content-Type": "application/json", DELIVERY_HEADER: delivery_id, TIMESTAMP_HEADER: str(now_ms),
            SIGNATURE_HEADER: sign(channel.segredo, body)}, screen=True)

    async def _ntfy(self, delivery_id: str, channel: Canal, msg: Message) -> None:
        server = (channel.servidor or self.settings.notify_ntfy_server).rstrip("/")
        # HTTP headers are Latin-1; ntfy decodes RFC 2047 encoded words, so the pt-BR title survives intact.
        title = "=?UTF-8?B?" + b64encode(msg.subject.encode()).decode() + "?="
        headers = {"Title": title, "Priority": _NTFY_PRIORITY[msg.priority], "Tags": ",".join(msg.tags),
                   DELIVERY_HEADER: delivery_id}
        if channel.token:
            headers["Authorization"] = f"Bearer {channel.token}"
        # the operator's default server is the operator's choice (it may well be internal); a user's own is not
        await self._post(f"{server}/{channel.destino}", msg.body.encode(), headers, screen=bool(channel.servidor))

    async def _post(self, url: str, body: bytes, headers: dict[str, str], *, screen: bool) -> None:
        """POST ``body``; a user's URL (``screen``) goes to the address egress.py checked, or not at all."""
        extensions: dict[str, str] = {}
        if screen:
            target = await pin(url, self.settings.notify_networks(), self.resolve)
            url, headers, extensions = target.url, headers | target.headers, target.extensions
        # Stated here rather than trusted to the client's default: a redirect would lead past the check above.
        response = await self.http.post(url, content=body, headers=headers, extensions=extensions,
                                        follow_redirects=False)
        if response.status_code >= 300:
            raise _http_error(response)

    def _email(self, delivery_id: str, to: str, msg: Message) -> None:
        s = self.settings
        if not s.notify_smtp_host:
            raise SendError("e-mail não configurado no servidor (BACKEND_NOTIFY_SMTP_HOST)", permanent=True)
        mail = EmailMessage()
        mail["From"] = s.notify_smtp_from
        mail["To"] = to
        mail["Subject"] = msg.subject
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = message_id(delivery_id)
        mail[DELIVERY_HEADER] = delivery_id
        mail.set_content(msg.body)
        timeout = s.notify_timeout_s
        context = ssl.create_default_context()
        smtp: smtplib.SMTP = (smtplib.SMTP_SSL(s.notify_smtp_host, s.notify_smtp_port, timeout=timeout,
                                               context=context) if s.notify_smtp_security == "ssl"
                              else smtplib.SMTP(s.notify_smtp_host, s.notify_smtp_port, timeout=timeout))
        with smtp:
            if s.notify_smtp_security == "starttls":
                smtp.starttls(context=context)
            if s.notify_smtp_username:
                smtp.login(s.notify_smtp_username, s.notify_smtp_password)
            smtp.send_message(mail)
