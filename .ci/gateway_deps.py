"""Packaging check for CI: what `pip install .[gateway]` would bring onto a Raspberry Pi.

Resolves the gateway extra with pip's dry run (nothing is installed) and fails when the web stack or any other
backend-only package is among the results: the Pi runs the gateway and must not carry Litestar and friends.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BACKEND_ONLY = {"litestar", "uvicorn", "holidays", "pyjwt", "httpx"}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), f"{ROOT}[gateway]"], check=True)
        names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    print(f"gateway install set: {', '.join(sorted(names))}")
    bad = names & BACKEND_ONLY
    if bad:
        print(f"gateway extra pulls backend-only packages: {', '.join(sorted(bad))}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
