"""Model bundles end to end: bundle, keygen, sign, verify, unpack; the daemon reads a bundle and refuses a bad one.

Real models (trained in the session), the real `cryptography` Ed25519, the CLIs as a technician runs them.
Every hostile bundle must be refused with one line naming the bundle, never a traceback.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from device.analysis.bundle import MEMBER_MAX_BYTES, parse_bundle
from tests.helpers import run_cli, write_config


def _tools(*args: str):
    return run_cli("firmware_tools", *args)


def _device(*args: str):
    return run_cli("device", *args)


def _one_line_error(result, *needles: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def signed(trained_model, tmp_path_factory) -> dict[str, Path]:
    """A bundle with a config template, signed by key 'site'; a second key 'other' that did not sign it."""
    folder = tmp_path_factory.mktemp("bundles")
    template = folder / "template.yaml"
    template.write_text("device:\n  id: pump-7\n  site: plant-a\n")
    bundle = folder / "pump-7.acmon"
    made = _tools("bundle", str(trained_model), "--config", str(template), "-o", str(bundle))
    assert made.returncode == 0, made.stderr
    assert "unsigned" in made.stdout
    for name in ("site", "other"):
        assert _tools("keygen", "--out", str(folder / name)).returncode == 0
    assert (folder / "site.key").stat().st_mode & 0o077 == 0  # the private key is the owner's only
    signed = _tools("sign", str(bundle), "--key", str(folder / "site.key"))
    assert signed.returncode == 0, signed.stderr
    return {"bundle": bundle, "site": folder / "site.pub", "other": folder / "other.pub", "folder": folder}


def test_signed_bundle_verifies_unpacks_and_scores_like_its_model(signed, trained_model, demo_data, tmp_path):
    ok = _tools("verify", str(signed["bundle"]), "--trusted-keys", str(signed["site"]))
    assert ok.returncode == 0, ok.stderr
    assert "signature by trusted key" in ok.stdout and "OK with" in ok.stdout
    out = tmp_path / "unpacked"
    assert (
        _tools("unpack", str(signed["bundle"]), "--to", str(out), "--trusted-keys", str(signed["site"])).returncode == 0
    )
    assert (out / "model.tflite").read_bytes() == (trained_model / "model.tflite").read_bytes()
    assert (out / "config.yaml").read_text().startswith("device:")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "acmon-bundle" and manifest["feature_params"]["sample_rate_hz"] > 0
    # The daemon's scoring path reads the bundle itself: the same scores as the model folder.
    wav = sorted((demo_data / "pump" / "test").glob("anomaly_*.wav"))[0]
    plain = _device("score", "--model", str(trained_model), str(wav))
    cfg = write_config(tmp_path, signed["bundle"], model={"trusted_keys": str(signed["site"])})
    from_bundle = _device("score", "--model", str(signed["bundle"]), "--config", str(cfg), str(wav))
    assert plain.returncode == 0 and from_bundle.returncode == 0, from_bundle.stderr
    assert json.loads(from_bundle.stdout)["score"] == json.loads(plain.stdout)["score"]


def test_keys_refuse_unsigned_foreign_and_plain_models(signed, trained_model, tmp_path):
    unsigned = tmp_path / "unsigned.acmon"
    assert _tools("bundle", str(trained_model), "-o", str(unsigned)).returncode == 0
    _one_line_error(_tools("verify", str(unsigned), "--trusted-keys", str(signed["site"])), "not signed")
    _one_line_error(
        _tools("verify", str(signed["bundle"]), "--trusted-keys", str(signed["other"])), "not among the trusted keys"
    )
    _one_line_error(_tools("verify", str(trained_model), "--trusted-keys", str(signed["site"])), "signed .acmon bundle")
    # The daemon's own check, through check-config: one line naming the bundle.
    cfg = write_config(tmp_path, unsigned, model={"trusted_keys": str(signed["folder"])})
    result = _device("check-config", str(cfg))
    assert result.returncode != 0 and "not signed" in result.stderr and "Traceback" not in result.stderr
    # Without keys the manifest is still checked, and an unsigned bundle runs.
    assert _tools("verify", str(unsigned)).returncode == 0


def _rezip(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
    return out.getvalue()


def _members(bundle: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(bundle) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def _hostile(signed) -> dict[str, tuple[bytes, str]]:
    """name -> (bundle bytes, words the refusal must contain)."""
    members = _members(signed["bundle"])
    named = dict(members)
    model = bytearray(named["model.tflite"])
    model[len(model) // 2] ^= 1
    manifest = json.loads(named["manifest.json"])
    signature = json.loads(named["signature.json"])
    flipped_sig = {
        **signature,
        "signature": signature["signature"][:-4] + ("AAA=" if not signature["signature"].endswith("AAA=") else "BBB="),
    }

    def with_(name: str, data: bytes) -> bytes:
        return _rezip([(n, data if n == name else d) for n, d in members])

    return {
        "member changed": (with_("model.tflite", bytes(model)), "does not match its SHA-256"),
        "manifest changed after signing": (
            with_("manifest.json", json.dumps({**manifest, "created": "2000-01-01T00:00:00Z"}).encode()),
            "signature does not match",
        ),
        "signature bytes changed": (with_("signature.json", json.dumps(flipped_sig).encode()), "signature"),
        "member added": (
            _rezip([*members, ("training_summary.json", b"{}")])
            if "training_summary.json" not in named
            else _rezip([*members, ("calibration.yaml", b"x: 1")]),
            "not in the manifest",
        ),
        "path in a name": (_rezip([*members, ("../../etc/passwd", b"x")]), "unexpected member"),
        "duplicate member": (_rezip([*members, ("model.tflite", named["model.tflite"])]), "twice"),
        "member missing": (_rezip([(n, d) for n, d in members if n != "model.tflite"]), "missing"),
        "manifest not JSON": (with_("manifest.json", b"{not json"), "not valid JSON"),
        "manifest nested deep": (with_("manifest.json", b"[" * 5000 + b"]" * 5000), "nested too deeply"),
        "other format version": (
            with_("manifest.json", json.dumps({**manifest, "format_version": 99}).encode()),
            "format version 99",
        ),
        "inflates past its limit": (
            with_("manifest.json", b" " * (MEMBER_MAX_BYTES["manifest.json"] + 10)),
            "limit",
        ),
        "not a zip": (b"PK\x03\x04" + b"\0" * 100, "not a readable zip"),
        "empty file": (b"", "not a readable zip"),
    }


def test_hostile_bundles_are_refused_with_one_line(signed, tmp_path):
    keys = {"site": signed["site"]}
    for name, (data, needle) in _hostile(signed).items():
        path = tmp_path / f"{name.replace(' ', '-')}.acmon"
        path.write_bytes(data)
        line = _one_line_error(_tools("verify", str(path), "--trusted-keys", str(keys["site"])), needle)
        assert str(path) in line, (name, line)


def test_parse_bundle_refuses_every_hostile_bundle_in_process(signed):
    """The same refusals through the library the daemon uses (no subprocess per case)."""
    from device.analysis.bundle import BundleError, load_public_keys

    keys = load_public_keys(signed["site"])
    for name, (data, needle) in _hostile(signed).items():
        with pytest.raises(BundleError, match=None) as caught:
            parse_bundle(data, "x.acmon", keys)
        assert needle in str(caught.value) and "\n" not in str(caught.value), (name, caught.value)


def test_tool_refusals_are_one_line(signed, trained_model, tmp_path):
    _one_line_error(_tools("keygen", "--out", str(signed["folder"] / "site")), "already exists")
    not_key = tmp_path / "k.key"
    not_key.write_text("hello")
    _one_line_error(_tools("sign", str(signed["bundle"]), "--key", str(not_key)), "private key")
    _one_line_error(_tools("bundle", str(trained_model), "-o", str(tmp_path / "x.zip")), ".acmon")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("a: [1,\n")
    _one_line_error(_tools("bundle", str(trained_model), "--config", str(bad_yaml), "-o", str(tmp_path / "b.acmon")))
    not_pub = tmp_path / "x.pub"
    not_pub.write_text("ssh-ed25519 AAAA")
    _one_line_error(_tools("verify", str(signed["bundle"]), "--trusted-keys", str(not_pub)), "not an acmon public key")
    _one_line_error(_tools("verify", str(tmp_path / "missing.acmon")), "no such model bundle")
