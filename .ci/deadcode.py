"""Dead-code check for CI: vulture over the product, the tests and the benchmarks, minus what only a framework
or a serializer uses.

vulture cannot see two kinds of use, so they are taken out here and nothing else is:
- fields of msgspec Structs, dataclasses and NamedTuples, read by the JSON encoder or set by keyword
  (a field vulture calls unused is still part of a payload);
- framework entry points, listed in ENTRY_POINTS with who calls them, and functions registered by decorator.
Exits 1 and lists the findings when anything else is unused.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from vulture import Vulture

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["protocol", "gateway", "backend", "sim", "devstack", "tests", "bench"]
ENTRY_POINTS = {
    # paho-mqtt calls these callbacks (with these parameters) and reads these MQTT 5 properties
    "on_publish", "on_subscribe", "on_disconnect", "userdata", "rcs", "SessionExpiryInterval", "ReceiveMaximum",
    # http.server reads these on a request handler / server class
    "do_HEAD", "do_POST", "do_PUT", "do_DELETE", "do_PATCH", "log_message", "daemon_threads", "close_connection",
    "protocol_version", "server_version", "request_queue_size", "process_request",
    # signal handlers and context managers have fixed signatures
    "signum", "et",
    # tarfile reads a member's link target from it
    "linkname",
    # aiosmtpd calls an SMTP handler's hooks by name
    "handle_DATA",
    # pytest hooks and markers
    "pytest_collection_modifyitems", "pytest_runtest_logreport", "pytest_terminal_summary", "pytestmark",
}
DECORATORS = [
    "@get", "@post", "@put", "@delete",  # Litestar routes
    "@pytest.fixture", "@pytest_asyncio.fixture", "@atexit.register",
]
FIELD_BASES = {"Struct", "NamedTuple", "TypedDict"}


def _is_record(cls: ast.ClassDef) -> bool:
    bases = {b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in cls.bases}
    decorated = any("dataclass" in ast.unparse(d) for d in cls.decorator_list)
    return decorated or bool(bases & FIELD_BASES)


def field_names(files: list[Path]) -> set[str]:
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and _is_record(node):
                names |= {s.target.id for s in node.body
                          if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    return names


def main() -> int:
    files = [p for d in PATHS for p in (ROOT / d).rglob("*.py")]
    fields = field_names(files)
    v = Vulture(ignore_names=sorted(ENTRY_POINTS), ignore_decorators=DECORATORS)
    v.scavenge([str(ROOT / d) for d in PATHS])
    found = [item for item in v.get_unused_code(min_confidence=60)
             if not (item.typ in ("variable", "attribute") and item.name in fields)]
    for item in found:
        print(item.get_report())
    print(f"deadcode: {len(found)} unused name(s) in {len(files)} files")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
