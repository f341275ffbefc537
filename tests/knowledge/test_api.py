"""``GET /api/v1/conhecimento`` end to end: the app with its lifespan (real InfluxDB), tokens, pt-BR 400s."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from backend.api.app import create_app
from backend.settings import Settings
from devstack.influxdb import InfluxService

JWT = "knowledge-test-secret-" + "k" * 20


def api_settings(influx: InfluxService, db: str, **overrides: Any) -> Settings:
    """An API-only backend: no MQTT ingest, no rollups, no scheduled pulls."""
    base: dict[str, Any] = dict(influx_url=influx.url, influx_db=db, jwt_secret=JWT, ingest_enabled=False,
                                rollup_enabled=False, aneel_sync_enabled=False, alerts_enabled=False,
                                ons_sync_enabled=False, log_level="WARNING")
    base.update(overrides)
    return Settings(**{k: v for k, v in base.items() if k in Settings.__struct_fields__})


@pytest_asyncio.fixture
async def client(influx: InfluxService, unique_id: str) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(create_app(api_settings(influx, unique_id))) as c:
        yield c
    influx.query(f'DROP DATABASE "{unique_id}"', epoch=None)


def auth(client: AsyncTestClient[Any], role: str = "viewer") -> dict[str, str]:
    return {"Authorization": f"Bearer {client.app.state.authenticator.issue('tester', role)}"}


@pytest.mark.asyncio
async def test_search_returns_ranked_passages_with_citations(client: AsyncTestClient[Any]) -> None:
    r = await client.get("/api/v1/conhecimento", params={"q": "o que é bandeira vermelha", "limite": "3"},
                         headers=auth(client))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["q"] == "o que é bandeira vermelha"
    assert body["terms"] == ["bandeir", "vermelh"]
    passages = body["passages"]
    assert len(passages) == 3
    top = passages[0]
    assert top["id"] == "artigo:bandeiras-tarifarias"
    assert top["title"] == "Bandeiras tarifárias"
    assert "REN nº 1.000/2021" in top["source"]
    assert top["snippet"] and top["score"] > passages[1]["score"]
    assert set(top) == {"id", "kind", "title", "snippet", "source", "ref", "score"}


@pytest.mark.asyncio
async def test_docs_sections_are_served_too(client: AsyncTestClient[Any]) -> None:
    r = await client.get("/api/v1/conhecimento", params={"q": "shared subscription replicas"}, headers=auth(client))
    assert r.status_code == 200
    assert any(p["kind"] == "doc" and p["ref"].startswith("docs/") for p in r.json()["passages"])


@pytest.mark.asyncio
async def test_nothing_found_is_an_empty_list(client: AsyncTestClient[Any]) -> None:
    r = await client.get("/api/v1/conhecimento", params={"q": "o que é"}, headers=auth(client))
    assert r.status_code == 200
    assert r.json()["passages"] == []


@pytest.mark.asyncio
@pytest.mark.parametrize(("params", "detail"), [
    ({}, "Informe o que procurar"),
    ({"q": ""}, "Informe o que procurar"),
    ({"q": "   "}, "Informe o que procurar"),
    ({"q": "x" * 201}, "no máximo 200 caracteres"),
    ({"q": "bandeira", "limite": "0"}, "'limite' deve ser um número inteiro de 1 a 20"),
    ({"q": "bandeira", "limite": "21"}, "'limite' deve ser um número inteiro de 1 a 20"),
    ({"q": "bandeira", "limite": "dez"}, "'limite' deve ser um número inteiro de 1 a 20"),
    ({"q": "bandeira", "limite": "-1"}, "'limite' deve ser um número inteiro de 1 a 20"),
    ({"q": "bandeira", "limite": "²"}, "'limite' deve ser um número inteiro de 1 a 20"),
], ids=["no-q", "empty-q", "blank-q", "q-too-long", "limit-0", "limit-21", "limit-word", "limit-negative",
        "limit-superscript"])
async def test_bad_requests_are_400_in_portuguese(client: AsyncTestClient[Any], params: dict[str, str],
                                                  detail: str) -> None:
    r = await client.get("/api/v1/conhecimento", params=params, headers=auth(client))
    assert r.status_code == 400, r.text
    assert detail in r.json()["detail"]


@pytest.mark.asyncio
async def test_a_200_character_query_is_accepted(client: AsyncTestClient[Any]) -> None:
    r = await client.get("/api/v1/conhecimento", params={"q": ("bandeira " * 30)[:200]}, headers=auth(client))
    assert r.status_code == 200
    assert r.json()["passages"][0]["id"] == "artigo:bandeiras-tarifarias"


@pytest.mark.asyncio
async def test_a_token_is_required(client: AsyncTestClient[Any]) -> None:
    r = await client.get("/api/v1/conhecimento", params={"q": "bandeira"})
    assert r.status_code == 401
