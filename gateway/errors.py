"""The gateway's exception hierarchy.

Library errors (sqlite3, pyserial, paho, OSError) are translated at the edge into these, keeping the context the
operator needs (the port, the device, the setting) as attributes.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""


class SettingsError(GatewayError):
    """The configuration file or a GATEWAY_* variable is invalid; ``source`` says where it came from."""

    def __init__(self, message: str, source: str = "") -> None:
        super().__init__(f"{source}: {message}" if source else message)
        self.source = source


class QueueError(GatewayError):
    """The durable queue could not be opened or written; ``path`` is the SQLite file."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class LinkError(GatewayError):
    """A serial port failed (unplugged, EIO, permission); ``port`` is the configured path."""

    def __init__(self, message: str, port: str = "") -> None:
        super().__init__(message)
        self.port = port
