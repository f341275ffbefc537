#!/usr/bin/env bash
# Create ./secrets/ for compose.yaml: random passwords, Mosquitto's dynamic-security file (the backend, ops, the
# plugin's admin and the gateways of gateways.toml), a self-signed CA + server certificate for the TLS listener,
# and one API admin user. Idempotent: existing secrets are kept; the dynamic-security file is regenerated from
# gateways.toml on every run (with the same passwords), so edit the list and run this again.
# Needs openssl and the backend's Python environment (.venv of the repository, or python3 with its packages).
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)
umask 077
mkdir -p secrets/certs
rand() { openssl rand -base64 32 | tr -d '/+=\n' | cut -c1-32; }
py=${PYTHON:-$(cd ../.. && pwd)/.venv/bin/python}; [ -x "$py" ] || py=python3
[ -s secrets/jwt_secret ] || rand > secrets/jwt_secret
[ -s secrets/mqtt_backend_password ] || rand > secrets/mqtt_backend_password
[ -s secrets/influx_password ] || rand > secrets/influx_password
# The influxdb image reads its first admin's password from the environment (env_file), not from a file.
[ -s secrets/influx.env ] || printf 'INFLUXDB_ADMIN_PASSWORD=%s\n' "$(cat secrets/influx_password)" > secrets/influx.env
# The backend's MQTT user and share group are read from compose.yaml, so the broker grants exactly the group the
# replicas subscribe with; its password is secrets/mqtt_backend_password (BACKEND_MQTT_PASSWORD_FILE).
compose_env() { sed -n "s/^ *$1: *//p" compose.yaml | head -n 1 | tr -d "\"'"; }
backend_user=$(compose_env BACKEND_MQTT_USERNAME)
share_group=$(compose_env BACKEND_MQTT_SHARE_GROUP)
(cd ../.. && env -u BACKEND_MQTT_PASSWORD BACKEND_MQTT_USERNAME="$backend_user" \
    BACKEND_MQTT_SHARE_GROUP="$share_group" BACKEND_MQTT_PASSWORD_FILE="$here/secrets/mqtt_backend_password" \
    "$py" -m backend broker-users --gateways "$here/gateways.toml" --out "$here/secrets/dynamic-security.json")
# mosquitto_ctrl's connection options inside the mosquitto container, for the admin user of gateways.toml.
admin=$(sed -n 's/^admin_username *= *"\(.*\)"/\1/p' gateways.toml)
grep -q '^admin_username' gateways.toml || admin=cds-admin   # the list's default
if [ -n "$admin" ] && [ -s "secrets/mqtt/$admin" ] && [ ! -s secrets/mosquitto_ctrl.conf ]; then
    printf -- '-h localhost\n-p 1883\n-u %s\n-P %s\n' "$admin" "$(cat "secrets/mqtt/$admin")" > secrets/mosquitto_ctrl.conf
fi
[ -e secrets/mosquitto_ctrl.conf ] || : > secrets/mosquitto_ctrl.conf   # compose mounts it even without an admin
echo "MQTT passwords in $here/secrets/mqtt/ (gateway <site>/<gateway>: file <site>.<gateway>, for its mqtt.password_file)"
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
    hash=$(printf "%s\n" "$admin_pass" | (cd ../.. && "$py" -m backend hash-password --stdin))
    printf '[{"username": "admin", "role": "admin", "password_hash": "%s"}]\n' "$hash" > secrets/api_users.json
    echo "API user admin password: $admin_pass"
fi
# The containers run as non-root users: let them read the files they mount (the folder stays private).
# (dynamic-security.json and mosquitto_ctrl.conf stay 600: only root in the mosquitto container reads them.)
chmod 644 secrets/jwt_secret secrets/mqtt_backend_password secrets/influx_password secrets/api_users.json \
    secrets/certs/ca.crt secrets/certs/server.crt secrets/certs/server.key
chmod 755 secrets/certs   # ca.key stays 600: only needed to sign new server certificates
echo "secrets ready in $(pwd)/secrets"
