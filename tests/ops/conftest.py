"""The backend tests' process and publisher fixtures, for the operations tests that drive a running backend."""

from tests.backend.conftest import _purge_backend_sessions, backend_process, publisher_factory  # noqa: F401
