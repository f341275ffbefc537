#!/usr/bin/env bash
# Set up everything (apt packages, .venv) and run the whole test suite: codec, simulator, firmware (host build
# and the real AVR binary in simavr), gateway, backend and analytics, against real Mosquitto and InfluxDB
# instances that the fixtures start on free ports in temporary folders.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_frames.py -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
