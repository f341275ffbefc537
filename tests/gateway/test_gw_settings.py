"""Settings: TOML + GATEWAY_* overrides through one loader; bad configuration gives a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import settings
from gateway.__main__ import main
from gateway.errors import SettingsError

EXAMPLE = Path(__file__).parents[2] / "deploy" / "gateway" / "gateway.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_file_gets_documented_defaults(tmp_path: Path) -> None:
    s = settings.load(write(tmp_path, 'site = "casa-1"\ngateway = "gw-1"\n'), environ={})
    assert s.serial.ports == ["/dev/serial/by-id/*"]
    assert s.queue.full_policy == "drop-oldest" and s.queue.synchronous == "full"
    assert s.mqtt.batch_size == 500 and s.mqtt.port == 1883
    assert s.client_id == "cds-gw-casa-1-gw-1"
    assert s.status.port == 8080 and s.status.password == ""


def test_environment_overrides_file_values(tmp_path: Path) -> None:
    path = write(tmp_path, 'site = "casa-1"\ngateway = "gw-1"\n[mqtt]\nhost = "broker.lan"\nport = 1883\n')
    env = {
        "GATEWAY_MQTT__PORT": "8883",
        "GATEWAY_MQTT__TLS": "true",
        "GATEWAY_SERIAL__PORTS": "/dev/a, /dev/serial/by-id/*",
        "GATEWAY_QUEUE__MAX_ROWS": "1000",
        "GATEWAY_GATEWAY": "gw-2",
        "GATEWAY_CONFIG": "/ignored/by/settings",
        "OTHER": "x",
    }
    s = settings.load(path, environ=env)
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.tls) == ("broker.lan", 8883, True)
    assert s.serial.ports == ["/dev/a", "/dev/serial/by-id/*"]
    assert s.queue.max_rows == 1000 and s.gateway == "gw-2"


def test_environment_alone_is_enough() -> None:
    s = settings.load(None, environ={"GATEWAY_SITE": "s", "GATEWAY_GATEWAY": "g"})
    assert s.site == "s"


def test_password_files_are_read(tmp_path: Path) -> None:
    (tmp_path / "mqtt.pw").write_text("s3cret\n")
    (tmp_path / "page.pw").write_text("olá\n")
    path = write(
        tmp_path,
        f'site = "a"\ngateway = "b"\n[mqtt]\npassword_file = "{tmp_path / "mqtt.pw"}"\n'
        f'[status]\npassword_file = "{tmp_path / "page.pw"}"\n',
    )
    s = settings.load(path, environ={})
    assert s.mqtt.password == "s3cret" and s.status.password == "olá"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        pytest.param('gateway = "g"\n', {}, "site", id="missing-site"),
        pytest.param('site = "Casa 1"\ngateway = "g"\n', {}, "site", id="bad-site-id"),
        pytest.param('site = "a"\ngateway = "g"\n[mqtt]\nbatch_size = 501\n', {}, "batch_size", id="batch-too-big"),
        pytest.param('site = "a"\ngateway = "g"\n[mqtt]\nprot = 1\n', {}, "prot", id="typo-field"),
        pytest.param('site = "a"\ngateway = "g"\n[queue]\nfull_policy = "yolo"\n', {}, "full_policy", id="policy"),
        pytest.param('site = "a"\ngateway = "g"\n[serial]\nports = []\n', {}, "ports", id="no-ports"),
        pytest.param('site = "a"\ngateway = "g\n', {}, "invalid TOML", id="toml-syntax"),
        pytest.param('site = "a"\ngateway = "g"\n', {"GATEWAY_MQTT__PORT": "abc"}, "port", id="env-not-int"),
        pytest.param('site = "a"\ngateway = "g"\n', {"GATEWAY_MQTT__NOPE": "1"}, "mqtt.nope", id="env-unknown"),
        pytest.param('site = "a"\ngateway = "g"\n', {"GATEWAY_FOO": "1"}, "foo", id="env-unknown-top"),
        pytest.param(
            'site = "a"\ngateway = "g"\n[serial]\nreopen_min_s = 9\nreopen_max_s = 1\n', {}, "reopen", id="backoff"
        ),
        pytest.param('site = "a"\ngateway = "g"\n[mqtt]\nca_file = "/nonexistent.pem"\n', {}, "ca_file", id="ca"),
        pytest.param(
            'site = "a"\ngateway = "g"\n[status]\npassword_file = "/nonexistent"\n', {}, "password_file", id="pwfile"
        ),
    ],
)
def test_bad_configuration_is_a_clear_error(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        settings.load(write(tmp_path, text), environ=env)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        settings.load(tmp_path / "nope.toml", environ={})


def test_shipped_example_is_valid_and_documents_every_field() -> None:
    s = settings.load(EXAMPLE, environ={})
    assert s.site and s.gateway
    text = EXAMPLE.read_text(encoding="utf-8")
    for section, cls in (("serial", settings.SerialSettings), ("queue", settings.QueueSettings),
                         ("mqtt", settings.MqttSettings), ("status", settings.StatusSettings)):  # fmt: skip
        assert f"[{section}]" in text
        for field in cls.__struct_fields__:
            assert f"{field} =" in text, f"{section}.{field} is not in the example"


def test_cli_check_prints_settings_with_passwords_hidden(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'site = "a"\ngateway = "g"\n[mqtt]\npassword = "hunter2"\n')
    assert main(["run", "--config", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert '"batch_size": 500' in out and "hunter2" not in out


def test_cli_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'site = "a"\n')
    assert main(["run", "--config", str(path)]) == 2
    assert "configuration error" in capsys.readouterr().err


def test_config_path_may_come_from_the_environment() -> None:
    assert settings.config_path_from_env({"GATEWAY_CONFIG": "/etc/cds-gateway/gateway.toml"}) == (
        "/etc/cds-gateway/gateway.toml"
    )
    assert settings.config_path_from_env({}) is None
