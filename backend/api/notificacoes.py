"""``/api/v1/notificacoes/...``: each user's own alert notifications — preferences, a test message, deliveries.

A thin pt-BR layer over backend/notify: preferences are stored in the accounts database
(:class:`~backend.notify.preferences.PreferenceStore`), where the notifier process reads them; a test request and
the delivery records go through :class:`~backend.notify.deliveries.DeliveryLog`. Nothing here sends anything: the
notifier does, through its outbox, so a test message takes the very path an alert takes.

Tenancy: a user may follow only sites they see; naming any other answers 404 with the words of a site that does
not exist (backend/api/access.py). Every user edits only their own preferences: there is no user in the path.
"""

from __future__ import annotations

import time
from typing import Any

from litestar import Controller, Request, get, post, put
from litestar.params import JSONBody

from backend.api.access import hidden_site
from backend.api.auth import caller_of
from backend.api.openapi import errors
from backend.api.state import influx_of, services_of
from backend.errors import BadRequestError
from backend.notify.deliveries import DeliveryLog, DeliveryOut
from backend.notify.preferences import PreferenceStore, Preferencias, PreferenciasOut, check, keep_secrets, view


def _stores(request: Request[Any, Any, Any]) -> tuple[PreferenceStore, DeliveryLog]:
    settings = services_of(request).settings
    influx = influx_of(request)
    return PreferenceStore(influx, settings), DeliveryLog(influx, settings)


class NotificationsController(Controller):
    path = "/api/v1/notificacoes"
    tags = ["notificacoes"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/preferencias")
    async def preferencias(self, request: Request[Any, Any, Any]) -> PreferenciasOut:
        """As preferências de notificação do próprio usuário: canais, regras por site e horário de silêncio.

        Segredos de webhook e tokens do ntfy nunca voltam: só se estão definidos."""
        prefs, _ = _stores(request)
        return view(await prefs.get((await caller_of(request)).username))

    @put("/preferencias")
    async def salvar(self, request: Request[Any, Any, Any], data: JSONBody[Preferencias]) -> PreferenciasOut:
        """Substitui as preferências de notificação do próprio usuário.

        Só sites que o usuário pode ver. Um webhook sem ``segredo`` mantém o segredo guardado (mesmo nome e URL) ou
        recebe um novo, gerado pelo servidor e mostrado apenas nesta resposta (``segredos_gerados``). Silêncio em
        horário de Brasília: alertas não críticos são retidos e enviados quando o silêncio termina. URLs de webhook e
        servidores do ntfy na rede interna do servidor (``localhost``, 127.0.0.1, 10.x, 192.168.x, 169.254.x...) são
        recusados, salvo as redes liberadas pelo administrador."""
        caller = await caller_of(request)
        for rule in data.sites:
            if not caller.can_see(rule.site):
                raise hidden_site(rule.site)
        check(data, caller.can_see, services_of(request).settings.notify_networks())
        prefs, _ = _stores(request)
        merged, generated = keep_secrets(data, await prefs.get(caller.username))
        await prefs.put(caller.username, merged, int(time.time() * 1000))
        return view(merged, generated)

    @post("/teste", status_code=202, responses=errors(400))
    async def teste(self, request: Request[Any, Any, Any]) -> PreferenciasOut:
        """Pede uma mensagem de teste em todos os canais do próprio usuário.

        A mensagem passa pela fila do notificador, como um alerta; o resultado aparece em ``/entregas``."""
        caller = await caller_of(request)
        prefs, records = _stores(request)
        current = await prefs.get(caller.username)
        if not current.canais:
            raise BadRequestError("Nenhum canal configurado: cadastre um em /api/v1/notificacoes/preferencias.")
        await records.request_test(caller.username, int(time.time() * 1000))
        return view(current)

    @get("/entregas")
    async def entregas(self, request: Request[Any, Any, Any]) -> list[DeliveryOut]:
        """As entregas recentes do próprio usuário (as 100 mais novas): situação, tentativas e último erro."""
        _, records = _stores(request)
        return await records.recent((await caller_of(request)).username)
