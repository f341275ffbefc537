"""REST controllers of the backend (``/api/v1/...``); thin: logic lives in the service modules."""
