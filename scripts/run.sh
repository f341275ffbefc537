#!/usr/bin/env bash
# Set up everything (apt packages, .venv) and run the whole CDS system on local defaults: Mosquitto, InfluxDB,
# a fake ANEEL server, simulated meters, the gateway, the backend and the dashboard. Prints where to look.
# Extra arguments go to `python -m devstack` (e.g. --meters 8 --voltage 220); Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m devstack "$@"
