"""Model updates over the air, for real: a running daemon, mosquitto and an HTTP server on loopback.

`cmd/update_model {url, sha256}` fetches a signed bundle, swaps it in and watches it; a good one is
confirmed, one that floods alarms rolls back by itself, refused ones change nothing, and every step
shows on the retained `<base>/model` topic (validated against its JSON Schema).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from tests.helpers import DeviceProcess, calibrate_on_files, run_cli, write_config
from tests.mqtt_support import validate_messages

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _variant(trained_model: Path, folder: Path, **changes) -> Path:
    """A copy of the trained model with its metadata changed (a new version, another threshold)."""
    from device.analysis.model_file import MODEL_FILENAME, embedded_metadata, load_metadata
    from training.export import embed_metadata

    _, data, meta = load_metadata(trained_model)
    buffers = {k: v for k, v in embedded_metadata(data, "m").items() if k != "acmon"}
    folder.mkdir()
    (folder / MODEL_FILENAME).write_bytes(embed_metadata(data, meta.replaced(**changes), buffers))
    return folder


@pytest.fixture(scope="module")
def served(trained_model, demo_data, tmp_path_factory):
    """Signed bundles v1 (the trained model), v2 and 'flood' (alarms on everything) and an unsigned v2, served
    over HTTP on loopback."""
    from device.analysis.features import FeatureParams
    from device.analysis.model_file import load_metadata
    from firmware_tools.bundles import build_bundle
    from training.fit import FitOptions, fit

    work = tmp_path_factory.mktemp("updates")
    www = work / "www"
    www.mkdir()
    assert run_cli("firmware_tools", "keygen", "--out", str(work / "site")).returncode == 0
    bundles = {}
    # v2: another model (trained again, another seed: its own version); flood: v1 with a threshold that alarms on
    # everything (same graph and version, so its scorer statistics still belong to it).
    v2 = work / "v2-model"
    fit(demo_data / "pump", v2, FeatureParams(), FitOptions(seed=1, cache_dir=str(work / "cache")), progress=False)
    for name, model in (
        ("v1", trained_model),
        ("v2", v2),
        ("flood", _variant(trained_model, work / "flood", threshold=1e-6)),
    ):
        path = www / f"{name}.acmon"
        path.write_bytes(build_bundle(model))
        if name == "v2":
            (www / "v2-unsigned.acmon").write_bytes(path.read_bytes())
        signed = run_cli("firmware_tools", "sign", str(path), "--key", str(work / "site.key"))
        assert signed.returncode == 0, signed.stderr
    for path in www.glob("*.acmon"):
        bundles[path.stem] = hashlib.sha256(path.read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {
            "versions": {n: load_metadata(m)[2].version for n, m in (("v1", trained_model), ("v2", v2))},
            "url": f"http://127.0.0.1:{server.server_address[1]}",
            "sha": bundles,
            "key": work / "site.pub",
            "v1": www / "v1.acmon",
        }
    finally:
        server.shutdown()


def _device_on_v1(tmp_path, served, broker, prefix: str, device_id: str, clip, updates: dict, **sections):
    """The config of a device at site 'lab' running the signed bundle v1 (its key trusted), replaying a normal clip
    in real time, evidence off, MQTT on, with these update settings."""
    return write_config(
        tmp_path,
        served["v1"],
        {"host": broker.host, "port": broker.port, "topic_prefix": prefix},
        device={"id": device_id, "site": "lab"},
        model={"trusted_keys": str(served["key"])},
        audio={"source": "wav", "wav_paths": [str(clip)] * 60, "realtime": True},
        evidence={"enabled": False},
        updates=updates,
        **sections,
    )


def test_update_confirms_a_good_model_rolls_back_a_flooding_one_and_refuses_bad_ones(
    broker, subscribe, unique_prefix, trained_model, demo_data, served, tmp_path
):
    normal = sorted((demo_data / "pump" / "test").glob("normal_id_00_*.wav"))[0]
    cfg = _device_on_v1(
        tmp_path,
        served,
        broker,
        unique_prefix,
        "pump-9",
        normal,
        {"enabled": True, "watch_minutes": 0.05, "max_alarms_while_watching": 0},
        detector={"cooldown_seconds": 0},
    )
    base = f"{unique_prefix}/lab/pump-9"
    sub = subscribe(broker.host, broker.port, f"{base}/#")
    log_path = tmp_path / "daemon.log"
    daemon: DeviceProcess | None = None

    def start() -> DeviceProcess:
        return DeviceProcess(cfg, log_path, broker, sub, base)

    def command(name: str, args: dict) -> dict:
        assert daemon is not None
        return daemon.command(name, args)

    def model_says(predicate, timeout: float = 30) -> dict:
        assert sub.wait_for(lambda s: s.json_on("/model") and predicate(s.json_on("/model")[-1]), timeout), (
            sub.json_on("/model")[-3:],
            log_path.read_text()[-3000:],
        )
        return sub.json_on("/model")[-1]

    def update(name: str, sha: str | None = None) -> dict:
        return command("update_model", {"url": f"{served['url']}/{name}.acmon", "sha256": sha or served["sha"][name]})

    daemon = start()
    try:
        first = model_says(lambda m: m["model"]["source"] == "config")
        original, v2 = served["versions"]["v1"], served["versions"]["v2"]
        assert first["model"]["version"] == original and original != v2
        # Refused before anything changes: wrong hash, unsigned, missing file, not http(s).
        wrong = update("v2", sha="0" * 64)
        assert not wrong["ok"] and "SHA-256" in wrong["error"], wrong
        unsigned = update("v2-unsigned")
        assert not unsigned["ok"] and "not signed" in unsigned["error"], unsigned
        missing = update("nothing-here", sha="1" * 64)
        assert not missing["ok"] and "404" in missing["error"], missing
        scheme = command("update_model", {"url": "file:///etc/passwd", "sha256": "2" * 64})
        assert not scheme["ok"] and "http" in scheme["error"], scheme
        assert model_says(lambda m: m["last_update"]["status"] == "refused")["model"]["version"] == original
        # A good model: swapped in, watched, confirmed.
        good = update("v2")
        assert good["ok"] and good["result"]["model_version"] == v2 and good["result"]["status"] == "watching", good
        confirmed = model_says(lambda m: m["last_update"]["status"] == "confirmed")
        assert confirmed["model"] == {**confirmed["model"], "version": v2, "source": "update", "status": "confirmed"}
        assert confirmed["model"]["bundle_sha256"] == served["sha"]["v2"]
        # One that alarms on normal sound: it raises an alarm while watched and v2 comes back by itself.
        flood = update("flood")
        assert flood["ok"], flood
        back = model_says(lambda m: m["last_update"]["status"] == "rolled_back")
        assert "alarms" in back["last_update"]["reason"] and back["model"]["version"] == v2, back
        assert any(e["state"] == "start" and e["model"]["version"] == original for e in sub.json_on("/events"))
    finally:
        assert daemon.stop() == 0, daemon.log()
    # A restart keeps the confirmed update.
    daemon = start()
    try:
        again = model_says(lambda m: m["time"] > back["time"] and m["last_update"] is None)
        assert again["model"]["version"] == v2 and again["model"]["source"] == "update", again
        # The operator goes back to the config's model.
        rolled = command("rollback_model", {})
        assert rolled["ok"] and rolled["result"]["model_version"] == original, rolled
        assert model_says(lambda m: m["model"]["source"] == "config")["model"]["version"] == original
        nothing = command("rollback_model", {})
        assert not nothing["ok"] and "no update to roll back" in nothing["error"]
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert validate_messages(sub.messages) > 10


def test_updates_are_off_by_default(broker, subscribe, unique_prefix, trained_model, demo_data, served, tmp_path):
    normal = sorted((demo_data / "pump" / "test").glob("normal_id_00_*.wav"))[0]
    cfg = write_config(
        tmp_path,
        trained_model,
        {"host": broker.host, "port": broker.port, "topic_prefix": unique_prefix},
        audio={"source": "wav", "wav_paths": [str(normal)] * 20, "realtime": True},
    )
    base = f"{unique_prefix}/testsite/pump-7"
    sub = subscribe(broker.host, broker.port, f"{base}/#")
    daemon = DeviceProcess(cfg, tmp_path / "daemon.log", broker, sub, base)
    try:
        assert sub.wait_for(lambda s: s.json_on("/model"), 30), daemon.log()
        result = daemon.command("update_model", {"url": f"{served['url']}/v2.acmon", "sha256": served["sha"]["v2"]})
        assert not result["ok"] and "updates.enabled" in result["error"], result
    finally:
        daemon.stop()


def test_a_site_calibration_is_set_aside_only_when_asked_and_comes_back_with_the_old_model(
    broker, subscribe, unique_prefix, demo_data, served, tmp_path
):
    """A calibrated device: an update to another model is refused (site statistics of the old one), accepted with
    drop_calibration (the new model runs on its training statistics), and a rollback restores the calibration."""
    from device.daemon.site_config import calibration_paths

    normal = sorted((demo_data / "pump" / "test").glob("normal_id_00_*.wav"))[0]
    cfg = _device_on_v1(
        tmp_path, served, broker, unique_prefix, "pump-3", normal, {"enabled": True, "watch_minutes": 60}
    )
    calibrated = calibrate_on_files(cfg, demo_data / "pump" / "train", 3)
    assert calibrated.returncode == 0, calibrated.stderr
    site_calibration = calibration_paths(cfg)[0].read_text()
    assert "site_statistics" in site_calibration
    base = f"{unique_prefix}/lab/pump-3"
    sub = subscribe(broker.host, broker.port, f"{base}/#")
    daemon = DeviceProcess(cfg, tmp_path / "daemon.log", broker, sub, base)
    command = daemon.command

    v2 = {"url": f"{served['url']}/v2.acmon", "sha256": served["sha"]["v2"]}
    try:
        assert sub.wait_for(lambda s: s.json_on("/model"), 30), daemon.log()
        refused = command("update_model", v2)
        assert not refused["ok"] and "drop_calibration" in refused["error"], refused
        assert calibration_paths(cfg)[0].read_text() == site_calibration  # nothing changed
        accepted = command("update_model", {**v2, "drop_calibration": True})
        assert accepted["ok"] and accepted["result"]["model_version"] == served["versions"]["v2"], accepted
        current, previous = calibration_paths(cfg)
        assert "site_statistics" not in current.read_text() and previous.read_text() == site_calibration
        back = command("rollback_model", {})
        assert back["ok"] and back["result"]["model_version"] == served["versions"]["v1"], back
        assert calibration_paths(cfg)[0].read_text() == site_calibration  # the site calibration is in force again
        assert sub.wait_for(lambda s: s.json_on("/model")[-1]["model"]["source"] == "config", 20)
    finally:
        assert daemon.stop() == 0, daemon.log()
