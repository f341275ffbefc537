"""``/api/v1/notificacoes``: own preferences (pt-BR 400s, destinations inside the server's network refused, 404 for
a site the caller cannot see, a generated webhook secret shown once), a test message through the notifier's outbox,
and deliveries visible in ``/entregas``."""

from __future__ import annotations

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from backend.api.app import create_app
from tests.backend.conftest import JWT_SECRET
from tests.backend.test_tenancy import create_user
from tests.notify.conftest import Receiver, Rig

pytestmark = [pytest.mark.services, pytest.mark.asyncio]


async def test_preferences_api_tenancy_errors_secret_and_a_test_message_delivered(
        rig: Rig, receiver: Receiver) -> None:
    settings = msgspec.structs.replace(rig.settings, jwt_secret=JWT_SECRET, ingest_enabled=False,
                                       rollup_enabled=False, aneel_sync_enabled=False, alerts_enabled=False,
                                       ons_sync_enabled=False, users=())
    async with AsyncTestClient(create_app(settings)) as c:
        carla = await create_user(c, "carla", {"casa-a": "viewer"})
        url = "/api/v1/notificacoes/preferencias"
        assert (await c.get(url, headers=carla)).json()["canais"] == []
        hook = {"nome": "hook", "tipo": "webhook", "destino": receiver.url}
        r = await c.put(url, headers=carla, json={"canais": [hook], "sites": [{"site": "casa-b"}]})
        assert r.status_code == 404 and r.json()["detail"] == "Site 'casa-b' não encontrado."
        for body, words in [
            ({"canais": [{"nome": "m", "tipo": "email", "destino": "nada"}]}, "endereço de e-mail inválido"),
            ({"canais": [hook, hook]}, "nome diferente"),
            ({"canais": [hook], "silencio": {"inicio": "25:00", "fim": "07:00"}}, "Horário de silêncio inválido"),
            ({"sites": [{"site": "casa-a", "orcamento_mensal_rs": "-1"}]}, "orçamento mensal"),
            ({"sites": [{"site": "casa-a", "canais": ["x"]}]}, "canal 'x' não existe"),
        ]:
            r = await c.put(url, headers=carla, json=body)
            assert r.status_code == 400 and words in r.json()["detail"], r.text
        assert (await c.put(url, headers=carla, json={"extra": 1})).status_code == 400
        assert (await c.post("/api/v1/notificacoes/teste", headers=carla)).status_code == 400

        r = await c.put(url, headers=carla, json={"canais": [hook], "sites": [{"site": "casa-a"}]})
        assert r.status_code == 200, r.text
        secret = r.json()["segredos_gerados"]["hook"]
        assert len(secret) >= 32 and r.json()["canais"][0]["segredo_definido"]
        again = (await c.get(url, headers=carla)).json()
        assert again["segredos_gerados"] == {} and secret not in str(again)

        receiver.secret = secret
        assert (await c.post("/api/v1/notificacoes/teste", headers=carla)).status_code == 202
        await rig.notifier.refresh()
        await rig.cycle()
        assert [b["evento"] for b in receiver.bodies] == ["teste"] and receiver.bad_signatures == 0
        await rig.notifier.refresh()  # the same request is not queued twice
        await rig.cycle()
        assert len(receiver.bodies) == 1
        (seen,) = (await c.get("/api/v1/notificacoes/entregas", headers=carla)).json()
        assert seen["situacao"] == "entregue" and seen["evento"] == "teste" and seen["tentativas"] == 1


async def test_preferences_refuse_destinations_inside_the_servers_network_in_pt_br(rig: Rig) -> None:
    """Defaults (no network allowed): a webhook or an ntfy server at localhost or at an internal address answers a
    pt-BR 400 and nothing is stored; a name is accepted (it is judged when it resolves, at each send)."""
    settings = msgspec.structs.replace(rig.settings, jwt_secret=JWT_SECRET, ingest_enabled=False,
                                       rollup_enabled=False, aneel_sync_enabled=False, alerts_enabled=False,
                                       ons_sync_enabled=False, users=(), notify_allowed_networks="")
    async with AsyncTestClient(create_app(settings)) as c:
        dani = await create_user(c, "dani", {"casa-a": "viewer"})
        url = "/api/v1/notificacoes/preferencias"
        refused = [({"tipo": "webhook", "destino": "http://localhost/x"}, "localhost"),
                   ({"tipo": "webhook", "destino": "http://127.0.0.1/x"}, "127.0.0.1"),
                   ({"tipo": "webhook", "destino": "http://[::1]/x"}, "::1"),
                   ({"tipo": "webhook", "destino": "http://169.254.169.254/latest"}, "169.254.169.254"),
                   ({"tipo": "webhook", "destino": "http://10.0.0.5:8086/query?q=DROP%20DATABASE%20cds"}, "10.0.0.5"),
                   ({"tipo": "ntfy", "destino": "t", "servidor": "http://192.168.0.10"}, "192.168.0.10")]
        for channel, shown in refused:
            r = await c.put(url, headers=dani, json={"canais": [{"nome": "c", **channel}]})
            assert r.status_code == 400, r.text
            assert r.json()["detail"] == (f"Canal 'c': destino em rede interna recusado: {shown} "
                                          "(BACKEND_NOTIFY_ALLOWED_NETWORKS); use um endereço público.")
        assert (await c.get(url, headers=dani)).json()["canais"] == []
        public = [{"nome": "hook", "tipo": "webhook", "destino": "https://hooks.example.com/x"},
                  {"nome": "celular", "tipo": "ntfy", "destino": "t", "servidor": "https://ntfy.example.com"}]
        r = await c.put(url, headers=dani, json={"canais": public})
        assert r.status_code == 200, r.text
        assert [ch["destino"] for ch in (await c.get(url, headers=dani)).json()["canais"]] == [
            "https://hooks.example.com/x", "t"]
