"""TLS, passwords and the sample ACL, against mosquitto running configs/mosquitto-acmon.conf."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from device.mqtt.publisher import make_publisher
from device.settings.config import config_from_dict
from device.settings.secret_files import resolve_mqtt_password
from tests.helpers import REPO, Subscriber, make_ca, require
from tests.mqtt_support import own_broker, sample_event, validate_messages, wait_until

pytestmark = pytest.mark.broker

PASSWORDS = {
    "plant-a-pump-7": "pump7-s3cret-Xq9",
    "plant-a-pump-8": "pump8-s3cret-Zr4",
    "dashboard": "dash-s3cret-Mv2",
    "operator": "oper-s3cret-Hn5",
}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(name: str, subject: str, cwd: Path, ext: str | None = None) -> None:
    """A P-256 key and a certificate for it signed by ca.crt (1 day)."""
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
        cwd=cwd,
    )
    extra = []
    if ext:
        (cwd / f"{name}.ext").write_text(ext + "\n")
        extra = ["-extfile", f"{name}.ext"]
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        f"{name}.crt",
        "-days",
        "1",
        *extra,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl CLI."""
    d = tmp_path_factory.mktemp("pki")
    make_ca(d)
    _issue("server", "/CN=127.0.0.1", d, "subjectAltName=IP:127.0.0.1")
    _issue("client", "/CN=plant-a-pump-7", d)
    # A second, unrelated CA: a broker certificate it did not sign must be refused.
    (d / "other").mkdir()
    make_ca(d / "other", "someone else")
    return d


def _secure_broker(workdir: Path, pki: Path, mutual_tls: bool):
    """mosquitto from the committed sample config and ACL; only paths and the port are changed."""
    require(shutil.which("mosquitto_passwd") is not None, "mosquitto_passwd is not installed (mosquitto package)")
    etc = workdir / "etc"
    etc.mkdir()
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copy(pki / name, etc / name)
    shutil.copy(REPO / "configs" / "mosquitto-acl.conf", etc / "acl.conf")
    passwd = etc / "passwd"
    passwd.touch()
    for user, password in PASSWORDS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True, capture_output=True)
    sample = (REPO / "configs" / "mosquitto-acmon.conf").read_text()
    assert "listener 8883\n" in sample and "require_certificate false" in sample
    template = (
        sample.replace("listener 8883\n", "listener {port} 127.0.0.1\n")
        .replace("/etc/mosquitto/acmon/", "{workdir}/etc/")
        .replace("require_certificate false", f"require_certificate {'true' if mutual_tls else 'false'}")
    )
    return own_broker(workdir, template=template + "\nlog_dest stderr\nlog_type all\n").start()


@pytest.fixture(scope="module")
def secure_broker(pki, tmp_path_factory):
    broker = _secure_broker(tmp_path_factory.mktemp("secure"), pki, mutual_tls=False)
    yield broker
    broker.stop()


def _device_config(port: int, tmp_path: Path, user: str, password: str, ca: Path, **tls) -> object:
    secret = tmp_path / f"{user}.password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return config_from_dict(
        {
            "device": {"id": user.split("-", 2)[-1], "site": "plant-a"},
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "username": user,
                "password_file": str(secret),
                "tls": {"ca_file": str(ca), **tls},
                "spool_dir": str(tmp_path / "spool"),
                "reconnect_min_seconds": 0.2,
                "reconnect_max_seconds": 1.0,
                "homeassistant_discovery": True,
            },
        }
    )


def _tls_subscriber(broker, pki: Path, user: str, topic: str) -> Subscriber:
    """A subscriber logged in as `user` over TLS."""

    def setup(client) -> None:
        client.username_pw_set(user, PASSWORDS[user])
        client.tls_set(ca_certs=str(pki / "ca.crt"))

    return Subscriber(broker.host, broker.port, topic, setup=setup)


def test_device_over_tls_with_password_delivers_and_never_logs_the_password(secure_broker, pki, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    sub = _tls_subscriber(secure_broker, pki, "dashboard", "#")
    try:
        cfg = _device_config(
            secure_broker.port, tmp_path, "plant-a-pump-7", PASSWORDS["plant-a-pump-7"], pki / "ca.crt"
        )
        pub = make_publisher(cfg, password=resolve_mqtt_password(cfg.mqtt), model_label="pump 1.0")
        pub.start()
        try:
            pub.publish_event(sample_event(0))
            assert pub.flush(15), pub.stats
            assert sub.wait_for(lambda s: len([t for t, _, _ in s.messages if t.endswith("/config")]) == 9, 10)
        finally:
            pub.stop()
        assert sub.wait_for(
            lambda s: (s.messages[-1][0], s.messages[-1][1]) == ("acmon/plant-a/pump-7/status", b"offline"), 10
        )
    finally:
        sub.close()
    assert validate_messages(sub.messages) == 1
    assert "MQTT: connected" in caplog.text
    assert PASSWORDS["plant-a-pump-7"] not in caplog.text


def test_wrong_password_is_refused_and_reported_not_connected(secure_broker, pki, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-password-Kp3"
    cfg = _device_config(secure_broker.port, tmp_path, "plant-a-pump-7", wrong, pki / "ca.crt")
    pub = make_publisher(cfg, password=resolve_mqtt_password(cfg.mqtt))
    pub.start()
    try:
        pub.publish_event(sample_event(0))
        assert wait_until(lambda: pub.stats.refused is not None, 10)
        assert not pub.stats.connected and pub.stats.pending == 1
    finally:
        pub.stop()
    assert "refused the connection" in caplog.text
    assert "MQTT: connected" not in caplog.text
    assert wrong not in caplog.text


def test_broker_certificate_from_another_ca_is_refused(secure_broker, pki, tmp_path, caplog):
    cfg = _device_config(
        secure_broker.port, tmp_path, "plant-a-pump-7", PASSWORDS["plant-a-pump-7"], pki / "other" / "ca.crt"
    )
    pub = make_publisher(cfg, password=resolve_mqtt_password(cfg.mqtt))
    pub.start()
    try:
        assert wait_until(lambda: "certificate verify failed" in caplog.text, 10), caplog.text
        assert not pub.stats.connected
    finally:
        pub.stop()


def test_mutual_tls_with_a_client_certificate(pki, tmp_path):
    broker = _secure_broker(tmp_path, pki, mutual_tls=True)
    try:
        # Without a client certificate the TLS handshake fails.
        import paho.mqtt.client as mqtt

        bare = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        bare.tls_set(ca_certs=str(pki / "ca.crt"))
        with pytest.raises((ssl.SSLError, OSError)):
            bare.connect(broker.host, broker.port)
            for _ in range(50):  # TLS 1.3 reports a missing client certificate on the first read
                if bare.loop(0.1) != mqtt.MQTT_ERR_SUCCESS:
                    raise OSError("connection closed by the broker")
        cfg = _device_config(
            broker.port,
            tmp_path,
            "plant-a-pump-7",
            PASSWORDS["plant-a-pump-7"],
            pki / "ca.crt",
            cert_file=str(pki / "client.crt"),
            key_file=str(pki / "client.key"),
        )
        pub = make_publisher(cfg, password=resolve_mqtt_password(cfg.mqtt))
        pub.start()
        try:
            pub.publish_event(sample_event(0))
            assert pub.flush(15), pub.stats
        finally:
            pub.stop()
    finally:
        broker.stop()


def test_acl_device_writes_only_its_own_prefix_dashboard_only_reads(secure_broker, pki):
    """The committed sample ACL: another device's prefix is forbidden, and a dashboard cannot publish.

    mosquitto handles one client's messages in order and delivers to one subscriber in order,
    so when an allowed marker arrives, a forbidden message sent before it would have arrived too.
    """
    dashboard = _tls_subscriber(secure_broker, pki, "dashboard", "acmon/#")
    device = _tls_subscriber(secure_broker, pki, "plant-a-pump-7", "acmon/plant-a/pump-7/cmd/+")
    operator = _tls_subscriber(secure_broker, pki, "operator", "acmon/plant-a/pump-7/status")
    try:
        device.client.publish("acmon/plant-a/pump-8/events", b'{"forged": true}', qos=1).wait_for_publish(5)
        device.client.publish("acmon/plant-a/pump-7/cmd/ping/result", b'{"own": "result"}', qos=1)
        device.client.publish("acmon/plant-a/pump-7/events", b'{"marker": 1}', qos=1)
        assert dashboard.wait_for(lambda s: any(p == b'{"marker": 1}' for _, p, _ in s.messages), 10)

        dashboard.client.publish("acmon/plant-a/pump-7/cmd/reload", b'{"from": "dashboard"}', qos=1).wait_for_publish(5)
        dashboard.client.publish("acmon/plant-a/pump-7/events", b'{"from": "dashboard"}', qos=1).wait_for_publish(5)
        operator.client.publish("acmon/plant-a/pump-7/cmd/ping", b'{"from": "operator"}', qos=1).wait_for_publish(5)
        assert device.wait_for(lambda s: any(b"operator" in p for _, p, _ in s.messages), 10)
        device.client.publish("acmon/plant-a/pump-7/events", b'{"marker": 2}', qos=1)
        assert dashboard.wait_for(lambda s: any(p == b'{"marker": 2}' for _, p, _ in s.messages), 10)
    finally:
        for client in (dashboard, device, operator):
            client.close()
    topics = [t for t, _, _ in dashboard.messages]
    assert "acmon/plant-a/pump-8/events" not in topics, "a device wrote into another device's prefix"
    assert "acmon/plant-a/pump-7/cmd/ping/result" in topics
    assert not any(b"dashboard" in p for _, p, _ in dashboard.messages + device.messages), "the dashboard published"
    assert [p for _, p, _ in device.messages] == [b'{"from": "operator"}']
