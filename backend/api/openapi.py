"""The OpenAPI document as fuzzers and client generators need it: every status an operation can answer, with the
error body the API really sends, and the constraints the handlers check themselves.

Litestar infers a schema from each handler's signature, which leaves out most of what a client must know here.
The handlers check ids, dates and choices themselves (to answer in pt-BR), so the signature says ``str``; guards,
the tenancy rule and the exception handlers in ``app.py`` answer 401, 403, 404, 503 that no signature shows; the
HTTP ingest reads its body raw (to apply the MQTT path's size limit and reasons), so Litestar sees no body at all.
Repeating those facts in every handler would drift, so :func:`document` derives them once per route, from what
the route itself says, right after the app is built (covering every controller, present and future):

========  ==============================================================================================
status    documented on
========  ==============================================================================================
400       every operation with parameters or a body (a malformed value; the handlers' pt-BR checks)
401, 503  every operation that needs a token (no or bad token; the accounts store or InfluxDB down)
403       every operation with a guard beyond the app-wide one (``requires_role``)
404       every operation with a path parameter or a ``site``/``gateway``/``device``/``grupo`` query
          parameter: the tenancy rule answers a hidden site or meter as one that does not exist
409       every change under ``/api/v1/admin`` (an existing name, a bootstrap user, a grant for an admin)
413       every operation with a body (Litestar's body size limit, the ingest's own)
422       every operation with a date-time parameter (``DateOutOfRangeError``, checked before any arithmetic)
========  ==============================================================================================

What no route shows is declared once, on its handler: ``responses=errors(429)`` for another status,
``opt=raw_body(ReadingBatch)`` for a body the handler decodes itself, ``opt=also_as("text/csv")`` for another
representation of the 200 answer, :func:`local_day` and :func:`choice` for a date or a choice the handler
checks. Every 4xx/5xx is an :class:`ErrorOut` unless the handler declared another container for it (``/ready``
answers 503 with its checks). Parameters named ``site``, ``gateway``, ``device`` or ``medidor`` get the patterns
of ``protocol/ids.py``, path parameter ``usuario`` that of user names. ``\\Z`` (Python's end of string, which
those patterns use so that a trailing newline never passes) becomes ``$``, its meaning in the ECMA-262 regexes of
JSON Schema, where ``\\Z`` is an error. Public operations get ``security: []``. Summaries are the first sentence
of the handler's docstring, descriptions the whole of it.

Building the schema with the app rather than at the first request to ``/docs`` costs about 0.1 s per app.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping
from inspect import cleandoc
from typing import Any, Final, Literal

import msgspec
from litestar import Litestar
from litestar.enums import HttpMethod
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    Reference,
    RequestBody,
    Schema,
)
from litestar.params import QueryParameter
from litestar.routes import HTTPRoute
from litestar.utils.helpers import unwrap_partial

from backend.accounts.store import USERNAME_RE
from protocol import ids

# --- the error body ---------------------------------------------------------------------------------------------


class ValidationIssue(msgspec.Struct, omit_defaults=True):
    """One value Litestar's own validation refused (a wrong type, a missing field)."""

    message: str
    key: str | None = None
    """The parameter or body field (dotted for nested fields); absent when Litestar cannot tell."""
    source: Literal["body", "path", "query", "cookie", "header", "dependency"] | None = None


class ErrorOut(msgspec.Struct, omit_defaults=True):
    """Every error of the API: the HTTP status again and a pt-BR message for people."""

    status_code: int
    detail: str
    extra: list[ValidationIssue] | None = None
    """Only on a 400 from Litestar's validation: what was refused, field by field."""


# --- declarations for what a route does not show ----------------------------------------------------------------

STATUS_PT: Final[dict[int, str]] = {
    400: "Requisição inválida: parâmetro, corpo ou identificador fora do formato (o motivo em 'detail').",
    401: "Autenticação necessária: token ausente, inválido ou expirado, ou usuário desativado.",
    403: "Permissão insuficiente: o perfil do usuário não permite esta operação (ou neste site).",
    404: "Não encontrado: site, medidor ou recurso inexistente ou de um site que o usuário não vê.",
    409: "Conflito com o estado atual (por exemplo, um nome que já existe ou um usuário da configuração).",
    413: "Corpo da requisição grande demais.",
    422: "Entrada bem formada mas inutilizável: data fora do intervalo guardado ou nada aproveitável no lote.",
    429: "Requisições demais: tente de novo depois dos segundos indicados em Retry-After.",
    503: "Serviço temporariamente indisponível (banco de medições, cadastro de usuários ou broker MQTT).",
    504: "A consulta excedeu o tempo limite e foi interrompida.",
}

RAW_BODY: Final = "openapi_raw_body"
ALSO_AS: Final = "openapi_also_as"


def errors(*statuses: int) -> dict[int, ResponseSpec]:
    """``responses=`` for statuses :func:`document` cannot derive from the route (their body is an ErrorOut)."""
    return {s: ResponseSpec(data_container=None, description=STATUS_PT[s]) for s in statuses}


def raw_body(struct: type[msgspec.Struct]) -> dict[str, object]:
    """``opt=`` for a handler that decodes its JSON body itself: document it as ``struct``."""
    return {RAW_BODY: struct}


def also_as(*media_types: str) -> dict[str, object]:
    """``opt=`` for a handler whose 200 answer may also be text in another media type (a CSV report)."""
    return {ALSO_AS: media_types}


def local_day(description: str, *, name: str | None = None) -> QueryParameter:
    """A query parameter holding a date, checked by the handler (``AAAA-MM-DD``, pt-BR errors); ``name`` when the
    query's name is not the handler's parameter's."""
    return QueryParameter(name=name, description=description, schema_extra={"format": OpenAPIFormat.DATE})


def choice(values: Iterable[str], description: str) -> QueryParameter:
    """A query parameter holding one of ``values``, checked by the handler (so its error is in pt-BR)."""
    return QueryParameter(description=description, schema_extra={"enum": list(values)})


# --- what is derived from the route ------------------------------------------------------------------------------

_NAMED: Final[dict[str, tuple[str, str]]] = {
    "site": (ids.ID_PATTERN, "Id do site: letras minúsculas, dígitos, '_' ou '-' (até 63 caracteres)."),
    "gateway": (ids.ID_PATTERN, "Id do gateway: letras minúsculas, dígitos, '_' ou '-' (até 63 caracteres)."),
    "device": (ids.DEVICE_ID_PATTERN, "Id do medidor: 16 dígitos hexadecimais minúsculos."),
    "medidor": (ids.DEVICE_ID_PATTERN, "Id do medidor: 16 dígitos hexadecimais minúsculos."),
}
"""Parameters named for an id, wherever they are (path or query): pattern and description."""
_NAMED_PATH: Final[dict[str, tuple[str, str]]] = {
    "usuario": (USERNAME_RE.pattern, "Nome de usuário: 2 a 64 caracteres a-z, 0-9, '.', '_' ou '-'."),
}
"""Path parameters only: a ``usuario`` query filter may name whatever a failed login tried."""
_SCOPE_QUERY: Final = frozenset({"site", "gateway", "device", "grupo"})
_CONFLICTS_UNDER: Final = "/api/v1/admin/"
_JSON: Final = "application/json"
_ERROR_REF: Final = Reference(ref="#/components/schemas/ErrorOut")


def document(app: Litestar) -> None:
    """Complete ``app``'s OpenAPI schema in place (see the module docstring); call once, after the app is built."""
    spec = app.openapi_schema
    if spec.components.schemas is None:
        spec.components.schemas = {}
    schemas = spec.components.schemas
    structs: list[type[msgspec.Struct]] = [ErrorOut]
    for route, method, handler, item, operation in _operations(app):
        body = handler.opt.get(RAW_BODY)
        if isinstance(body, type) and issubclass(body, msgspec.Struct):
            structs.append(body)
            operation.request_body = RequestBody(
                content={_JSON: OpenAPIMediaType(schema=Reference(ref=f"#/components/schemas/{body.__name__}"))},
                required=True)
        _describe(operation, handler)
        _parameters(operation)
        _responses(operation, handler, route, method, app)
        _closed_body(operation, handler, schemas)
        if handler.opt.get("public"):
            # An empty requirement overrides the document's bearer token.
            setattr(item, method.lower(), dataclasses.replace(operation, security=[]))
    schemas.update(_components(structs))
    _ecma_patterns(spec)


def _operations(app: Litestar) -> Iterator[tuple[HTTPRoute, HttpMethod, HTTPRouteHandler, PathItem, Operation]]:
    paths = app.openapi_schema.paths or {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or (item := paths.get(route.path_format or "/")) is None:
            continue
        for method, (handler, _) in route.route_handler_map.items():
            operation = getattr(item, method.lower(), None)
            if isinstance(operation, Operation):
                yield route, HttpMethod(method), handler, item, operation


def _describe(operation: Operation, handler: HTTPRouteHandler) -> None:
    doc = unwrap_partial(handler.fn).__doc__
    if handler.summary is None and doc:
        operation.summary = _first_sentence(" ".join(cleandoc(doc).split("\n\n", 1)[0].split()))


def _first_sentence(text: str) -> str:
    """Up to the first ``.``, ``:`` or ``;`` that ends a clause, outside parentheses (``('desativado': true)``)."""
    depth = 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and char in ".:;" and text[i + 1:i + 2] in ("", " "):
            return text[:i]
    return text


def _parameters(operation: Operation) -> None:
    for param in operation.parameters or []:
        if not isinstance(param, Parameter) or not isinstance(param.schema, Schema):
            continue
        if not param.required:
            param.schema = _without_null(param.schema)
        named = _NAMED.get(param.name) or (_NAMED_PATH.get(param.name) if param.param_in == "path" else None)
        if named and isinstance(param.schema, Schema):
            param.schema.pattern, default_description = named
            param.description = param.description or default_description


def _without_null(schema: Schema) -> Schema:
    """A query string has no null: ``str | None`` means absent or a string."""
    branches = [b for b in schema.one_of or () if not (isinstance(b, Schema) and b.type == OpenAPIType.NULL)]
    if len(branches) != 1 or len(schema.one_of or ()) != 2 or not isinstance(branches[0], Schema):
        return schema
    outer = {f.name: v for f in dataclasses.fields(schema)
             if f.name != "one_of" and (v := getattr(schema, f.name)) is not None}
    return dataclasses.replace(branches[0], **outer)


def _responses(operation: Operation, handler: HTTPRouteHandler, route: HTTPRoute, method: HttpMethod,
               app: Litestar) -> None:
    params = [p for p in operation.parameters or [] if isinstance(p, Parameter)]
    has_body = operation.request_body is not None
    statuses = set(handler.responses or {})
    if params or has_body:
        statuses.add(400)
    if not handler.opt.get("public"):
        statuses |= {401, 503}
    if any(g not in app.guards for g in handler.resolve_guards()):
        statuses.add(403)
    if any(p.param_in == "path" or p.name in _SCOPE_QUERY for p in params):
        statuses.add(404)
    if route.path.startswith(_CONFLICTS_UNDER) and method != HttpMethod.GET:
        statuses.add(409)
    if has_body:
        statuses.add(413)
    if any(OpenAPIFormat.DATE_TIME in _formats(p.schema) for p in params):
        statuses.add(422)
    responses = operation.responses or {}
    for status in sorted(statuses):
        declared = (handler.responses or {}).get(status)
        if declared is not None and declared.data_container is not None:
            continue  # the handler's own body for this status, documented by Litestar
        headers: dict[str, OpenAPIHeader | Reference] | None = None
        if status == 429:
            headers = {"Retry-After": OpenAPIHeader(schema=Schema(type=OpenAPIType.INTEGER), required=True,
                                                    description="Segundos até a próxima tentativa.")}
        responses[str(status)] = OpenAPIResponse(description=STATUS_PT[status], headers=headers,
                                                 content={_JSON: OpenAPIMediaType(schema=_ERROR_REF)})
    ok = responses.get(str(handler.status_code))
    media_types = handler.opt.get(ALSO_AS) or ()
    if isinstance(ok, OpenAPIResponse) and ok.content is not None:
        for media_type in media_types:
            ok.content[media_type] = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))
    operation.responses = responses


def _formats(schema: Schema | Reference | None) -> set[OpenAPIFormat]:
    if not isinstance(schema, Schema):
        return set()
    found = {schema.format} if schema.format else set()
    for branch in schema.one_of or ():
        found |= _formats(branch)
    return found


def _closed_body(operation: Operation, handler: HTTPRouteHandler, schemas: dict[str, Schema]) -> None:
    """A body Struct that refuses unknown fields says so (``additionalProperties: false``), or generated bodies
    with extra members would all be refused for a reason the schema does not tell."""
    data = handler.parsed_fn_signature.parameters.get("data")
    struct = data.annotation if data is not None else None
    if not (isinstance(struct, type) and issubclass(struct, msgspec.Struct)
            and struct.__struct_config__.forbid_unknown_fields):
        return
    media = operation.request_body.content.get(_JSON) if isinstance(operation.request_body, RequestBody) else None
    if media is not None and isinstance(media.schema, Reference):
        name = media.schema.ref.rsplit("/", 1)[-1]
        if name in schemas:
            schemas[name] = dataclasses.replace(schemas[name], additional_properties=False)


def _components(structs: list[type[msgspec.Struct]]) -> dict[str, Schema]:
    """Components for Structs Litestar never sees (the error body, raw bodies), from msgspec's JSON Schema, which
    is the 2020-12 dialect OpenAPI 3.1 uses."""
    _, found = msgspec.json.schema_components(structs, ref_template="#/components/schemas/{name}")
    return {name: schema for name, node in found.items() if isinstance(schema := _schema(node), Schema)}


_CAMEL: Final = re.compile(r"[A-Z]")
_SUBSCHEMA_LISTS: Final = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SUBSCHEMA: Final = frozenset({"items", "additionalProperties", "not"})


def _schema(node: Mapping[str, Any]) -> Schema | Reference:
    """msgspec's JSON Schema (a dict) as Litestar's spec objects, key by key."""
    if "$ref" in node:
        return Reference(ref=str(node["$ref"]))
    fields: dict[str, Any] = {}
    for key, value in node.items():
        name = {"not": "schema_not"}.get(key) or _CAMEL.sub(lambda m: "_" + m.group().lower(), key)
        if key == "properties":
            value = {k: _schema(v) for k, v in value.items()}
        elif key in _SUBSCHEMA_LISTS:
            value = [_schema(v) for v in value]
        elif key in _SUBSCHEMA and isinstance(value, dict):
            value = _schema(value)
        elif key == "type":
            value = [OpenAPIType(v) for v in value] if isinstance(value, list) else OpenAPIType(value)
        elif key == "format":
            value = OpenAPIFormat(value)
        fields[name] = value
    return Schema(**fields)


def _ecma_patterns(node: object) -> None:
    r"""``\Z`` (end of string in Python) is ``$`` in ECMA-262 without the multiline flag; elsewhere ``\Z`` would
    be an error or a literal ``Z``."""
    if isinstance(node, Schema) and node.pattern and node.pattern.endswith(r"\Z"):
        node.pattern = node.pattern.removesuffix(r"\Z") + "$"
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            _ecma_patterns(getattr(node, f.name))
    elif isinstance(node, dict):
        for value in node.values():
            _ecma_patterns(value)
    elif isinstance(node, list | tuple):
        for value in node:
            _ecma_patterns(value)
