"""The OpenAPI document as fuzzers and client generators read it (backend/api/openapi.py): valid OpenAPI 3.1 whose
schemas are JSON Schema 2020-12 with ECMA-262 patterns; every status an operation can answer documented with the
error body the app really sends; ids, dates and choices constrained; the HTTP ingest's body described.

Most tests read the document served by an app built without its services (the document needs none); the last one
checks what the running app sends against it. That the app answers nothing the document does not promise, for
about a thousand generated requests, is tests/backend/test_api_fuzz.py's job.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema_rs  # what schemathesis validates with (ECMA-262 regexes)
import msgspec
import pytest
from litestar.serialization import encode_json

from backend.api.app import create_app
from backend.api.openapi import ErrorOut
from backend.settings import Settings
from protocol import ids
from tests.backend.conftest import JWT_SECRET, token

schemathesis = pytest.importorskip("schemathesis")

Operation = tuple[str, str, dict[str, Any]]
METHODS = ("get", "put", "post", "delete", "patch")
ADMIN_ONLY = {("post", "/api/v1/consultas/influxql"), ("post", "/api/v1/aneel/sync"), ("post", "/api/v1/ons/sync")}
OPERATOR_ONLY = {("post", "/api/v1/aicss/dados"), ("put", "/api/v1/aicss/config"),
                 ("put", "/api/v1/medidores/{device}/nome")}
PUBLIC = {("get", "/health"), ("get", "/ready"), ("get", "/metrics"), ("post", "/api/v1/auth/token")}


def _ecma(pattern: str) -> str:
    return pattern.removesuffix(r"\Z") + "$"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    """The document as ``/docs/openapi.json`` serves it, from an app that is built but not started."""
    app = create_app(Settings(jwt_secret=JWT_SECRET))
    return msgspec.json.decode(encode_json(app.openapi_schema.to_schema()))  # type: ignore[no-any-return]


def operations(doc: dict[str, Any]) -> Iterator[Operation]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def statuses(op: dict[str, Any]) -> set[int]:
    return {int(s) for s in op["responses"]}


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(doc).validate()  # the OpenAPI 3.1 meta-schema, as schemathesis loads it


def test_every_schema_is_json_schema_2020_12_with_ecma_patterns(doc: dict[str, Any]) -> None:
    found = [schema for schema in doc["components"]["schemas"].values()]
    for _, _, op in operations(doc):
        found += [p["schema"] for p in op.get("parameters", [])]
        for holder in [op.get("requestBody", {}), *op["responses"].values()]:
            found += [m["schema"] for m in holder.get("content", {}).values() if "schema" in m]
    assert len(found) > 100
    for schema in found:
        # Compiling checks the schema against its meta-schema, ECMA-262 regexes included (Python's \Z is not one).
        jsonschema_rs.validator_for({**schema, "components": doc["components"]})
        assert r"\Z" not in msgspec.json.encode(schema).decode()


def test_every_operation_has_a_summary_and_a_description(doc: dict[str, Any]) -> None:
    for method, path, op in operations(doc):
        # A sentence from the docstring, not Litestar's default (the handler's name: "Readings", "IssueToken").
        assert " " in op["summary"] and " ".join(op["description"].split()).startswith(op["summary"]), (method, path)


def test_token_operations_document_401_and_503_and_public_ones_need_no_token(doc: dict[str, Any]) -> None:
    assert doc["security"] == [{"BearerToken": []}]
    assert doc["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
    for method, path, op in operations(doc):
        if (method, path) in PUBLIC:
            assert op["security"] == [], path
        else:
            assert "security" not in op and {401, 503} <= statuses(op), (method, path)


def test_operations_beyond_the_viewer_role_document_403_and_the_others_do_not(doc: dict[str, Any]) -> None:
    guarded = ADMIN_ONLY | OPERATOR_ONLY
    for method, path, op in operations(doc):
        if path.startswith("/api/v1/admin/") or (method, path) in guarded:
            assert 403 in statuses(op), (method, path)
        elif (method, path) not in PUBLIC:
            assert 403 not in statuses(op), (method, path)  # a viewer's token is enough: nothing to refuse


def test_path_parameters_have_a_pattern_and_document_404(doc: dict[str, Any]) -> None:
    seen = 0
    for method, path, op in operations(doc):
        for param in op.get("parameters", []):
            if param["in"] == "path":
                seen += 1
                assert param["required"] and param["schema"]["pattern"].startswith("^"), (method, path, param)
                assert 404 in statuses(op) and 400 in statuses(op), (method, path)
    assert seen >= 10


def test_id_parameters_carry_the_protocol_patterns_and_document_404(doc: dict[str, Any]) -> None:
    wanted = {"site": _ecma(ids.ID_PATTERN), "gateway": _ecma(ids.ID_PATTERN), "device": _ecma(ids.DEVICE_ID_PATTERN),
              "medidor": _ecma(ids.DEVICE_ID_PATTERN)}
    checked = set()
    for method, path, op in operations(doc):
        for param in op.get("parameters", []):
            if param["name"] in wanted:
                checked.add(param["name"])
                assert param["schema"]["pattern"] == wanted[param["name"]], (method, path, param)
                assert param["schema"]["type"] == "string" and 404 in statuses(op), (method, path, param)
    assert checked >= {"site", "gateway", "device"}
    config = doc["components"]["schemas"]["ConfigIn"]["properties"]
    assert config["device"]["pattern"] == _ecma(ids.DEVICE_ID_PATTERN)


def test_body_operations_document_400_and_413(doc: dict[str, Any]) -> None:
    bodies = [(m, p, op) for m, p, op in operations(doc) if "requestBody" in op]
    assert len(bodies) >= 8
    for method, path, op in bodies:
        assert op["requestBody"]["required"] and {400, 413} <= statuses(op), (method, path)


def test_ingest_documents_the_batch_body_and_every_refusal(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/api/v1/aicss/dados"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ReadingBatch"}
    batch = doc["components"]["schemas"]["ReadingBatch"]
    assert set(batch["required"]) == {"site", "gateway", "readings"}
    assert batch["properties"]["site"]["pattern"] == _ecma(ids.ID_PATTERN)
    assert batch["properties"]["readings"]["items"] == {"$ref": "#/components/schemas/Reading"}
    assert doc["components"]["schemas"]["Reading"]["properties"]["device"]["pattern"] == _ecma(ids.DEVICE_ID_PATTERN)
    assert {200, 400, 401, 403, 404, 413, 422, 429, 503} <= statuses(op)
    unusable = op["responses"]["422"]["content"]["application/json"]["schema"]["oneOf"]
    assert unusable == [{"$ref": "#/components/schemas/DadosOut"}, {"$ref": "#/components/schemas/ErrorOut"}]
    assert op["responses"]["429"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}


def test_login_documents_wrong_credentials_and_throttling(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/api/v1/auth/token"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TokenRequest"}
    assert {200, 400, 401, 413, 429, 503} <= statuses(op)
    assert "Retry-After" in op["responses"]["429"]["headers"]


def test_error_responses_are_the_error_body(doc: dict[str, Any]) -> None:
    error = {"$ref": "#/components/schemas/ErrorOut"}
    for method, path, op in operations(doc):
        for status, response in op["responses"].items():
            if int(status) < 400:
                continue
            schema = response["content"]["application/json"]["schema"]
            if (method, path, status) == ("get", "/ready", "503"):
                assert schema == {"$ref": "#/components/schemas/ReadyOut"}  # the checks, not an error
            else:
                assert schema == error or error in schema.get("oneOf", []), (method, path, status)
            assert response["description"] and "Request" not in response["description"], (method, path, status)
    body = doc["components"]["schemas"]["ErrorOut"]
    assert set(body["required"]) == {"status_code", "detail"}


def test_choices_and_dates_are_documented(doc: dict[str, Any]) -> None:
    def param(path: str, name: str) -> dict[str, Any]:
        found = [p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == name]
        assert found, (path, name)
        return found[0]["schema"]  # type: ignore[no-any-return]

    assert param("/api/v1/devices/{device}/readings", "resolution")["enum"] == ["auto", "raw", "1m", "1h"]
    assert param("/api/v1/analytics/consumo", "granularidade")["enum"] == ["15min", "hour", "day", "week", "month"]
    assert param("/api/v1/analytics/relatorios", "formato")["enum"] == ["json", "csv"]
    assert param("/api/v1/ons/balanco", "subsistema")["enum"] == ["SE", "S", "NE", "N", "SIN"]
    assert param("/api/v1/ons/cmo", "subsistema")["enum"] == ["SE", "S", "NE", "N"]
    assert param("/api/v1/conhecimento", "limite") == {**param("/api/v1/conhecimento", "limite"), "type": "integer",
                                                         "minimum": 1, "maximum": 20}
    for path in ("/api/v1/analytics/consumo", "/api/v1/analytics/custo", "/api/v1/ons/balanco", "/api/v1/ons/cmo"):
        assert param(path, "inicio")["format"] == param(path, "fim")["format"] == "date", path
    assert param("/api/v1/aneel/tarifas", "data")["format"] == "date"
    for name in ("start", "end"):
        assert param("/api/v1/devices/{device}/readings", name)["format"] == "date-time"
    for method, path, op in operations(doc):
        for p in op.get("parameters", []):
            assert "oneOf" not in p["schema"], (method, path, p)  # a query string is absent or text, never null
            if p["schema"].get("format") == "date-time":
                assert 422 in statuses(op), (method, path)  # a date outside what CDS stores


def test_other_representations_and_closed_bodies_are_documented(doc: dict[str, Any]) -> None:
    report = doc["paths"]["/api/v1/analytics/relatorios"]["get"]["responses"]["200"]["content"]
    assert set(report) == {"application/json", "text/csv"}
    assert doc["components"]["schemas"]["InfluxQLIn"]["additionalProperties"] is False


@pytest.mark.asyncio
async def test_errors_are_sent_as_documented(app_client: Any) -> None:
    no_token = await app_client.get("/api/v1/sites")
    assert no_token.status_code == 401
    error = msgspec.json.decode(no_token.content, type=ErrorOut)
    assert error.status_code == 401 and error.extra is None and "extra" not in no_token.json()
    wrong_type = await app_client.get("/api/v1/admin/auditoria", params={"limite": "muitos"},
                                      headers=token(app_client, "admin"))
    assert wrong_type.status_code == 400
    error = msgspec.json.decode(wrong_type.content, type=ErrorOut)
    assert error.extra and error.extra[0].key == "limite" and error.extra[0].source == "query"
    served = (await app_client.get("/docs/openapi.json")).json()
    validator = jsonschema_rs.validator_for({"$ref": "#/components/schemas/ErrorOut",
                                             "components": served["components"]})
    for response in (no_token, wrong_type):
        validator.validate(response.json())
