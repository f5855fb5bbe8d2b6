"""`bundle`, `keygen`, `sign` and `unpack`: one file per trained model, that a device can trust.

The format and its checks are device/analysis/bundle.py's (the daemon reads bundles with the
same code); this module writes them. `verify` (inspect_model.py) checks a bundle as the device
will, then loads and runs its model.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import json
import os
import stat
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from device import __version__
from device.analysis import bundle as fmt
from device.analysis.model_file import MODEL_FILENAME, load_metadata, read_regular_file, sha256_hex
from device.errors import AcmonError, ModelError
from device.settings.yaml_files import read_yaml_file

PRIVATE_KEY_MAX_BYTES = 4096


class ToolError(AcmonError):
    """A firmware_tools command cannot do what was asked (one line, no traceback)."""


# -- bundle --------------------------------------------------------------------


def build_bundle(model: Path, config: Path | None = None, calibration: Path | None = None) -> bytes:
    """The bytes of a new (unsigned) bundle: the model, optional config template and calibration, and a manifest.

    Args:
        model: a model folder (model.tflite, and training_summary.json when there is one) or a .tflite file.
        config: a config template, checked to be YAML that maps keys to values.
        calibration: a calibration.yaml written by `python -m device calibrate`; the site statistics
            file it names (beside it) goes in too.

    Raises:
        ModelError, ToolError: a part is missing, damaged or not what it claims to be.
    """
    path, model_bytes, meta = load_metadata(model)  # checks the model's own content checksum
    members: list[tuple[str, bytes]] = [(MODEL_FILENAME, model_bytes)]
    summary = path.parent / fmt.SUMMARY_NAME
    if summary.is_file():
        members.append((fmt.SUMMARY_NAME, _read_part(summary, "training summary")))
    if config is not None:
        read_yaml_file(config, "config template")  # a template that does not parse is refused here, not on the Pi
        members.append((fmt.CONFIG_NAME, _read_part(config, "config template")))
    if calibration is not None:
        document = read_yaml_file(calibration, "calibration file") or {}
        members.append((fmt.CALIBRATION_NAME, _read_part(calibration, "calibration file")))
        statistics = ((document.get("model") or {}) if isinstance(document, dict) else {}).get("site_statistics")
        if statistics:
            name = Path(str(statistics)).name
            if not fmt.SITE_STATISTICS_PATTERN.fullmatch(name):
                raise ToolError(f"{calibration}: model.site_statistics {statistics!r} is not a site-*.npz file")
            members.append((name, _read_part(calibration.parent / name, "site statistics")))
    p = meta.feature_params
    manifest: dict[str, Any] = {
        "format": fmt.FORMAT,
        "format_version": fmt.FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "acmon_version": __version__,
        "model": {
            "name": meta.name,
            "version": meta.version,
            "sha256": sha256_hex(model_bytes),
            "score_kind": meta.score_kind,
            "threshold": meta.threshold,
        },
        "feature_params": {f.name: getattr(p, f.name) for f in dataclasses.fields(p)},
        "training": meta.training or {},
        "members": fmt.manifest_entries(members),
    }
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    return _zip([(fmt.MANIFEST_NAME, manifest_bytes), *members])


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # same content, same bytes
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return out.getvalue()


def _read_part(path: Path, what: str) -> bytes:
    return read_regular_file(
        path,
        fmt.OTHER_MEMBER_MAX_BYTES,
        what=what,
        missing_hint="check the path",
        kind_hint="give a regular file",
        size_hint=f"a {what} is small: check the path",
    )


def write_file_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write via a temporary file in the same folder and rename, so a reader never sees half a file."""
    if path.is_dir():
        raise ToolError(f"{path}: is a folder; give the path of the file to write")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ToolError(f"{path}: cannot write: {exc.strerror or exc}") from None


def cmd_bundle(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not out.name.endswith(fmt.BUNDLE_SUFFIX):
        raise ToolError(f"{out}: a bundle's name ends in {fmt.BUNDLE_SUFFIX} (the daemon recognises it by that)")
    data = build_bundle(Path(args.model), _opt_path(args.config), _opt_path(args.calibration))
    write_file_atomically(out, data)
    b = fmt.parse_bundle(data, str(out))  # read back with the device's own checks
    model = b.manifest["model"]
    print(
        f"{out}: {len(data) / 1024:.1f} KiB, model {model['name']} {model['version']} "
        f"(sha256 {model['sha256'][:16]}...), members {', '.join(sorted(b.members))}; unsigned "
        "(sign it with: python -m firmware_tools sign BUNDLE --key KEY)"
    )
    return 0


def _opt_path(value: str | None) -> Path | None:
    return Path(value) if value else None


# -- keys and signatures ---------------------------------------------------------


def _crypto_private():
    try:
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - only these commands need it
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415
    except ImportError:
        raise ToolError("signing needs the cryptography package: pip install cryptography") from None
    return serialization, Ed25519PrivateKey


def _raw_public(private_key: Any) -> bytes:
    serialization, _ = _crypto_private()
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def cmd_keygen(args: argparse.Namespace) -> int:
    serialization, Ed25519PrivateKey = _crypto_private()
    stem = Path(args.out)
    private_path, public_path = stem.with_name(stem.name + ".key"), stem.with_name(stem.name + ".pub")
    for p in (private_path, public_path):
        if p.exists() and not args.force:
            raise ToolError(f"{p}: already exists; choose another name or pass --force to replace the key pair")
    if not stem.parent.is_dir():
        raise ToolError(f"{stem.parent}: no such folder for the key pair; create it first")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    raw = _raw_public(key)
    write_file_atomically(private_path, pem, mode=0o600)
    os.chmod(private_path, 0o600)
    write_file_atomically(public_path, fmt.format_public_key(raw, stem.name).encode())
    print(
        f"key id {fmt.key_id(raw)}: private key {private_path} (mode 600: keep it off the devices), "
        f"public key {public_path} (copy it to each device's trusted keys: model.trusted_keys)"
    )
    return 0


def load_private_key(path: Path) -> Any:
    serialization, Ed25519PrivateKey = _crypto_private()
    data = read_regular_file(
        path,
        PRIVATE_KEY_MAX_BYTES,
        what="private key",
        missing_hint="make a key pair with python -m firmware_tools keygen --out NAME",
        kind_hint="give the .key file made by keygen",
        size_hint="an Ed25519 key file is a few lines",
    )
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(
            f"warning: {path} can be read by other users (mode {stat.S_IMODE(mode):o}); chmod 600 it", file=sys.stderr
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ToolError(f"{path}: not an unencrypted PEM private key ({exc}); use a key made by keygen") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ToolError(f"{path}: a {type(key).__name__}, not an Ed25519 key; make one with keygen")
    return key


def cmd_sign(args: argparse.Namespace) -> int:
    path = Path(args.bundle)
    b = fmt.read_bundle(path)  # never sign a bundle whose manifest does not match its members
    key = load_private_key(Path(args.key))
    raw = _raw_public(key)
    signature = {
        "algorithm": "ed25519",
        "key_id": fmt.key_id(raw),
        "signature": base64.b64encode(key.sign(b.manifest_bytes)).decode(),
        "signed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    members = [(fmt.MANIFEST_NAME, b.manifest_bytes), *sorted(b.members.items())]
    members.append((fmt.SIGNATURE_NAME, json.dumps(signature, indent=2).encode() + b"\n"))
    data = _zip(members)
    fmt.parse_bundle(data, str(path), {signature["key_id"]: raw})  # check the result as a device would
    write_file_atomically(path, data)
    replaced = f" (replacing the signature by key {b.signature['key_id']})" if b.signature else ""
    print(f"{path}: signed with key {signature['key_id']}{replaced}")
    return 0


# -- unpack --------------------------------------------------------------------


def cmd_unpack(args: argparse.Namespace) -> int:
    keys = fmt.trusted_keys_from(args.trusted_keys)
    b = fmt.read_bundle(Path(args.bundle), keys)
    load_metadata_from_bundle(b)
    target = Path(args.to)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolError(f"{target}: cannot create the folder: {exc.strerror or exc}") from None
    if not target.is_dir():
        raise ToolError(f"{target}: not a folder")
    for name, data in [(fmt.MANIFEST_NAME, b.manifest_bytes), *sorted(b.members.items())]:
        write_file_atomically(target / name, data)
    checked = f"signature by key {b.signed_by} verified" if b.signed_by else "manifest verified (signature not checked)"
    print(f"{args.bundle}: {checked}; wrote {', '.join([fmt.MANIFEST_NAME, *sorted(b.members)])} to {target}")
    return 0


def load_metadata_from_bundle(b: fmt.Bundle) -> None:
    """Check the bundle's model carries valid acmon metadata (the model's own checksum included)."""
    from device.analysis.model_file import read_document  # noqa: PLC0415

    read_document(b.model_bytes, f"{b.path}:{MODEL_FILENAME}")


def describe(b: fmt.Bundle) -> str:
    """One line about a checked bundle, for verify and inspect."""
    if b.signed_by:
        signed = f"signature by trusted key {b.signed_by} verified"
    elif b.signature:
        signed = f"signed by key {b.signature['key_id']} (not checked: no --trusted-keys given)"
    else:
        signed = "not signed"
    return (
        f"bundle {b.path}: manifest matches all {len(b.members)} member(s) ({', '.join(sorted(b.members))}); {signed}"
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bundle", help="package a trained model (and optionally a config template and calibration) into one .acmon file"
    )
    p.add_argument("model", help="the model folder written by training fit (or its model.tflite)")
    p.add_argument("--config", help="a config template to carry (configs/device.yaml edited for the site)")
    p.add_argument("--calibration", help="a calibration.yaml from python -m device calibrate (its site statistics too)")
    p.add_argument("-o", "--out", required=True, help="the bundle to write, e.g. pump-7.acmon")
    p.set_defaults(func=cmd_bundle)
    p = subparsers.add_parser("keygen", help="make an Ed25519 key pair for signing bundles: NAME.key and NAME.pub")
    p.add_argument("--out", required=True, help="path and name of the pair without suffix, e.g. keys/site-a")
    p.add_argument("--force", action="store_true", help="replace an existing pair")
    p.set_defaults(func=cmd_keygen)
    p = subparsers.add_parser("sign", help="sign a bundle (in place) with a private key from keygen")
    p.add_argument("bundle", help="the .acmon file")
    p.add_argument("--key", required=True, help="the private key file (NAME.key)")
    p.set_defaults(func=cmd_sign)
    p = subparsers.add_parser("unpack", help="check a bundle and write its members into a folder")
    p.add_argument("bundle", help="the .acmon file")
    p.add_argument("--to", required=True, help="the folder to write into (created if missing)")
    p.add_argument("--trusted-keys", help="a .pub file or folder of them: the signature must verify with one")
    p.set_defaults(func=cmd_unpack)


__all__ = ["ModelError", "build_bundle", "register"]
