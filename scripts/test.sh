#!/usr/bin/env bash
# Set up everything (apt packages, .venv) and run the whole test suite: codec, simulator, firmware (host build
# and the real AVR binary in simavr), gateway, backend and analytics, against real Mosquitto and InfluxDB
# instances that the fixtures start on free ports in temporary folders.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_frames.py -x`.
#
# The tests run on every core (pytest-xdist, at most 4 workers; CDS_TEST_WORKERS overrides, 0 runs them in this
# process). Each worker starts its own Mosquitto and InfluxDB on free ports, and every test already works in a
# database, topic and folder of its own, so they do not meet. Most of a test's time is waiting on those processes,
# which is why two workers nearly halve the run even on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest --numprocesses "${CDS_TEST_WORKERS:-auto}" --maxprocesses 4 "$@"
