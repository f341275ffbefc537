#!/usr/bin/env bash
# Install everything CDS needs on a fresh Debian/Ubuntu machine: system packages (Mosquitto, InfluxDB 1.x,
# the AVR toolchain and simavr, Chromium for the dashboard's browser test) and a virtualenv in .venv with the
# project and its dev tools.
# Idempotent: re-running it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    python3 python3-venv python3-dev build-essential pkg-config openssl
    mosquitto mosquitto-clients influxdb influxdb-client
    gcc-avr avr-libc binutils-avr simavr libsimavr-dev libelf-dev
    chromium
    prometheus prometheus-blackbox-exporter nginx-light stress-ng systemd docker-compose
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages enable system-wide services; CDS starts its own instances on its own ports instead.
for svc in mosquitto influxdb; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        echo "setup: note: a system-wide $svc service is running; CDS does not use it"
    fi
done

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[dev]"
echo "setup: ready (.venv)"
