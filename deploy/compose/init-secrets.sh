#!/usr/bin/env bash
# Create ./secrets/ for compose.yaml: random passwords, the Mosquitto password file (backend + one example
# gateway), a self-signed CA + server certificate for the TLS listener, and one API admin user.
# Idempotent: existing files are kept. Needs openssl and mosquitto_passwd (Debian: mosquitto package), python3.
set -euo pipefail
cd "$(dirname "$0")"
umask 077
mkdir -p secrets/certs
rand() { openssl rand -base64 32 | tr -d '/+=\n' | cut -c1-32; }
[ -s secrets/jwt_secret ] || rand > secrets/jwt_secret
[ -s secrets/mqtt_backend_password ] || rand > secrets/mqtt_backend_password
[ -s secrets/influx_password ] || rand > secrets/influx_password
# The influxdb image reads its first admin's password from the environment (env_file), not from a file.
[ -s secrets/influx.env ] || printf 'INFLUXDB_ADMIN_PASSWORD=%s\n' "$(cat secrets/influx_password)" > secrets/influx.env
if [ ! -s secrets/mosquitto_passwd ]; then
    : > secrets/mosquitto_passwd
    mosquitto_passwd -b secrets/mosquitto_passwd backend "$(cat secrets/mqtt_backend_password)"
    gw_pass=$(rand)
    mosquitto_passwd -b secrets/mosquitto_passwd "casa-1/gw-1" "$gw_pass"
    echo "gateway user casa-1/gw-1 password: $gw_pass (put it in that gateway's gateway.toml)"
fi
if [ ! -s secrets/certs/server.crt ]; then
    host=${CDS_MQTT_HOSTNAME:-localhost}
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=CDS MQTT CA" \
        -keyout secrets/certs/ca.key -out secrets/certs/ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$host" -keyout secrets/certs/server.key \
        -out secrets/certs/server.csr 2>/dev/null
    printf "subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n" "$host" > secrets/certs/san.ext
    openssl x509 -req -in secrets/certs/server.csr -CA secrets/certs/ca.crt -CAkey secrets/certs/ca.key \
        -CAcreateserial -days 825 -extfile secrets/certs/san.ext -out secrets/certs/server.crt 2>/dev/null
    echo "TLS: give gateways secrets/certs/ca.crt; server name $host"
fi
if [ ! -s secrets/api_users.json ]; then
    admin_pass=$(rand)
    py=${PYTHON:-$(cd ../.. && pwd)/.venv/bin/python}; [ -x "$py" ] || py=python3
    hash=$(printf "%s\n" "$admin_pass" | (cd ../.. && "$py" -m backend hash-password --stdin))
    printf '[{"username": "admin", "role": "admin", "password_hash": "%s"}]\n' "$hash" > secrets/api_users.json
    echo "API user admin password: $admin_pass"
fi
# The containers run as non-root users: let them read the files they mount (the folder stays private).
chmod 644 secrets/jwt_secret secrets/mqtt_backend_password secrets/influx_password secrets/api_users.json \
    secrets/mosquitto_passwd secrets/certs/ca.crt secrets/certs/server.crt secrets/certs/server.key
chmod 755 secrets/certs   # ca.key stays 600: only needed to sign new server certificates
echo "secrets ready in $(pwd)/secrets"
