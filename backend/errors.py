"""The backend's exception hierarchy.

Library errors (httpx, paho, msgspec) are translated at the edge with ``raise ... from`` so callers catch one
family and keep the context (database, device, topic) as attributes. :class:`ApiError` subclasses carry a
pt-BR message for users and an HTTP status; ``backend.app`` maps them to responses.
"""

from __future__ import annotations

from protocol.timebase import FIRST_DATE, LAST_DATE


class BackendError(Exception):
    """Base class of every error the backend raises on purpose."""


class ConfigError(BackendError):
    """The settings (environment variables, secret files, users) are invalid."""


class InfluxError(BackendError):
    """InfluxDB answered with an error or could not be reached."""

    def __init__(self, message: str, *, status: int = 0, body: str = "", db: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.db = db


class InfluxUnavailableError(InfluxError):
    """Transport failure, timeout or 5xx: worth retrying later."""


class InfluxTimeoutError(InfluxUnavailableError):
    """No answer within the client's timeout. InfluxDB may still be working on the request (a ``SELECT ... INTO``
    runs on after the client gave up), so repeating the same request only adds to its load: ask for less."""


class InfluxRejectedError(InfluxError):
    """A 4xx answer (bad line protocol, field type conflict, bad query): retrying the same request is useless."""


class InfluxQueryError(InfluxRejectedError):
    """A statement of an InfluxQL query failed (the ``error`` member of its result)."""


class MqttUnavailableError(BackendError):
    """The broker is not connected or did not accept a publish in time."""


class ApiError(BackendError):
    """An error shown to an API user: ``detail`` is in pt-BR, ``status_code`` is the HTTP status."""

    status_code = 400

    def __init__(self, detail: str, *, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code


class BadRequestError(ApiError):
    status_code = 400


class DateOutOfRangeError(ApiError):
    """A date outside what CDS stores and InfluxDB can represent (protocol.timebase FIRST_DATE..LAST_DATE)."""

    status_code = 422

    def __init__(self) -> None:
        super().__init__(f"Data fora do intervalo aceito: de {FIRST_DATE:%d/%m/%Y} a {LAST_DATE:%d/%m/%Y}.")


class NotFoundError(ApiError):
    status_code = 404


class UnavailableError(ApiError):
    status_code = 503
