"""Structured logs: one JSON object per line on stderr.

Every record carries ``ts``, ``level``, ``logger`` and ``msg``; keyword context passed as
``log.info("...", extra={"topic": t, "device": d})`` becomes top-level keys, so log pipelines can filter on
them without parsing prose.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Final

import msgspec

_STANDARD_ATTRS: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message", "asctime", "taskName",
}
_encoder: Final = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line; unknown objects are rendered with ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        try:
            return _encoder.encode(out).decode()
        except (TypeError, msgspec.EncodeError):
            return _encoder.encode({k: str(v) for k, v in out.items()}).decode()


def configure_logging(level: str = "INFO") -> None:
    """Route the root logger (and uvicorn's) to stderr as JSON lines. Idempotent."""
    root = logging.getLogger()
    # Replace plain stream handlers (basicConfig's, an earlier call's); keep others, e.g. pytest's capture.
    root.handlers[:] = [h for h in root.handlers if type(h) is not logging.StreamHandler]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
