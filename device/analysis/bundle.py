"""Model bundles: one `.acmon` file with a model, what goes with it, and a manifest that vouches for each part.

A bundle is a zip file (members stored or deflated) holding

- `manifest.json`: the format and its version, the acmon version, the model's name, version,
  feature parameters and training record, and the SHA-256 and size of every other member;
- `model.tflite`, and optionally `config.yaml` (a config template), `calibration.yaml` with
  the site statistics it names, and `training_summary.json`;
- after `python -m firmware_tools sign`, `signature.json`: an Ed25519 signature of the exact
  bytes of manifest.json and the id of the key that made it.

Reading one (`read_bundle`) always checks the manifest against every member, and the signature
against the trusted public keys when any are given: with keys, an unsigned bundle or one signed
by another key is refused. Everything is bounded before it is read (the file, the number of
members, each member's size as declared and as inflated), member names come from a fixed list
(no paths), and every refusal is one line naming the bundle and what to do.

Signatures are checked by device/analysis/ed25519.py (plain Python, a few milliseconds): the device
needs no crypto library; `python -m firmware_tools keygen` and `sign` use `cryptography`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from . import ed25519
from .model_file import MODEL_FILENAME, MODEL_MAX_BYTES, json_depth, read_regular_file

BUNDLE_SUFFIX = ".acmon"
FORMAT = "acmon-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "signature.json"
CONFIG_NAME = "config.yaml"
CALIBRATION_NAME = "calibration.yaml"
SUMMARY_NAME = "training_summary.json"
# Site statistics named by calibration.yaml: site-<something>.npz (as the daemon's calibrate writes them).
SITE_STATISTICS_PATTERN = re.compile(r"site-[A-Za-z0-9_.-]{1,80}\.npz")
FIXED_MEMBERS = (MODEL_FILENAME, CONFIG_NAME, CALIBRATION_NAME, SUMMARY_NAME)

MIB = 1024 * 1024
BUNDLE_MAX_BYTES = 64 * MIB
MEMBER_MAX_BYTES = {MODEL_FILENAME: MODEL_MAX_BYTES, MANIFEST_NAME: MIB, SIGNATURE_NAME: 64 * 1024}
OTHER_MEMBER_MAX_BYTES = 16 * MIB
MAX_MEMBERS = 16
KEY_ID_HEX = 16  # the key id: the first 16 hex digits of the SHA-256 of the raw 32-byte public key
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
KEY_ID_PATTERN = re.compile(r"[0-9a-f]{16}")


class BundleError(ModelError):
    """A bundle is damaged, altered, unsigned where a signature is required, or signed by an untrusted key."""


@dataclass(frozen=True)
class Bundle:
    """A bundle whose manifest matched every member (and whose signature, if keys were given, verified)."""

    path: Path
    manifest: dict[str, Any]
    manifest_bytes: bytes
    members: dict[str, bytes]  # every member but manifest.json and signature.json
    signature: dict[str, Any] | None
    signed_by: str | None  # the trusted key id that verified the signature; None when not checked

    @property
    def model_bytes(self) -> bytes:
        return self.members[MODEL_FILENAME]

    @property
    def sha256(self) -> str:
        """The SHA-256 of the manifest: names this exact bundle content (members included, by their hashes)."""
        return hashlib.sha256(self.manifest_bytes).hexdigest()


def is_bundle_path(path: str | Path) -> bool:
    return str(path).endswith(BUNDLE_SUFFIX)


def member_allowed(name: str) -> bool:
    return name in FIXED_MEMBERS or bool(SITE_STATISTICS_PATTERN.fullmatch(name))


def member_limit(name: str) -> int:
    return MEMBER_MAX_BYTES.get(name, OTHER_MEMBER_MAX_BYTES)


# -- reading -------------------------------------------------------------------


def read_bundle(path: str | Path, trusted_keys: Mapping[str, bytes] | None = None) -> Bundle:
    """Read a bundle file and check it.

    Args:
        path: the .acmon file.
        trusted_keys: {key id: raw 32-byte Ed25519 public key} (see load_public_keys); None or empty:
            the signature is not checked (the manifest always is).

    Raises:
        BundleError: one line naming the bundle, what is wrong and what to do.
    """
    p = Path(path)
    raw = read_regular_file(
        p,
        BUNDLE_MAX_BYTES,
        what="model bundle",
        missing_hint="make one with: python -m firmware_tools bundle MODEL_DIR -o NAME.acmon",
        kind_hint="give the path of a .acmon bundle file",
        size_hint="a bundle holds a model of a few hundred KiB: check the path",
    )
    return parse_bundle(raw, str(p), trusted_keys, path=p)


def parse_bundle(
    raw: bytes, source: str, trusted_keys: Mapping[str, bytes] | None = None, path: Path | None = None
) -> Bundle:
    """Check a bundle's bytes (see read_bundle); source names it in messages."""
    members, manifest_bytes, signature_bytes = _unzip(raw, source)
    manifest = _parse_manifest(manifest_bytes, source)
    listed = manifest["members"]
    for name in sorted(set(members) | set(listed)):
        if name not in listed:
            raise BundleError(f"{source}: member {name} is not in the manifest: the bundle was altered; rebuild it")
        if name not in members:
            raise BundleError(f"{source}: member {name} listed in the manifest is missing: the bundle is incomplete")
        data, entry = members[name], listed[name]
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise BundleError(
                f"{source}: member {name} does not match its SHA-256 in the manifest: the bundle was altered or "
                "damaged; copy it again or rebuild it"
            )
    if MODEL_FILENAME not in members:
        raise BundleError(f"{source}: no {MODEL_FILENAME} in the bundle; rebuild it from a model folder")
    signature = _parse_signature(signature_bytes, source) if signature_bytes is not None else None
    signed_by = None
    if trusted_keys:
        if signature is None:
            raise BundleError(
                f"{source}: the bundle is not signed and trusted keys are configured; sign it with "
                "python -m firmware_tools sign BUNDLE --key KEY"
            )
        signed_by = _check_signature(signature, manifest_bytes, trusted_keys, source)
    return Bundle(path or Path(source), manifest, manifest_bytes, members, signature, signed_by)


def _unzip(raw: bytes, source: str) -> tuple[dict[str, bytes], bytes, bytes | None]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise BundleError(f"{source}: not a bundle (not a readable zip file: {exc}); copy it again") from None
    if len(infos) > MAX_MEMBERS:
        raise BundleError(
            f"{source}: {len(infos)} members, more than a bundle has ({MAX_MEMBERS}); not an acmon bundle"
        )
    members: dict[str, bytes] = {}
    manifest = signature = None
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        if name in seen:
            raise BundleError(f"{source}: member {name!r} appears twice; the bundle was altered")
        seen.add(name)
        if name not in (MANIFEST_NAME, SIGNATURE_NAME) and not member_allowed(name):
            raise BundleError(
                f"{source}: unexpected member {name[:80]!r}; a bundle holds only "
                f"{', '.join((MANIFEST_NAME, SIGNATURE_NAME, *FIXED_MEMBERS))} and site-*.npz"
            )
        limit = member_limit(name)
        if info.file_size > limit:
            raise BundleError(f"{source}: member {name} declares {info.file_size} bytes, over its limit of {limit}")
        try:
            with archive.open(info) as f:
                data = f.read(limit + 1)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError, ValueError) as exc:
            raise BundleError(f"{source}: member {name} cannot be read ({exc}); copy the bundle again") from None
        if len(data) > limit:  # inflated past what it declared
            raise BundleError(f"{source}: member {name} inflates past its limit of {limit} bytes; not an acmon bundle")
        if name == MANIFEST_NAME:
            manifest = data
        elif name == SIGNATURE_NAME:
            signature = data
        else:
            members[name] = data
    if manifest is None:
        raise BundleError(
            f"{source}: no {MANIFEST_NAME}; not an acmon bundle (make one with python -m firmware_tools bundle)"
        )
    return members, manifest, signature


def _json_object(raw: bytes, source: str, what: str) -> dict[str, Any]:
    if json_depth(raw) > 32:
        raise BundleError(f"{source}: {what} is nested too deeply; the bundle was altered")
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{source}: {what} is not valid JSON ({exc}); the bundle was altered or damaged") from None
    if not isinstance(value, dict):
        raise BundleError(f"{source}: {what} is not a JSON object; the bundle was altered or damaged")
    return value


def _parse_manifest(raw: bytes, source: str) -> dict[str, Any]:
    manifest = _json_object(raw, source, MANIFEST_NAME)
    if manifest.get("format") != FORMAT:
        raise BundleError(
            f"{source}: {MANIFEST_NAME} is not an acmon bundle manifest (format {manifest.get('format')!r})"
        )
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{source}: bundle format version {version!r}, this acmon reads version {FORMAT_VERSION}; "
            "update acmon or rebuild the bundle with this version"
        )
    listed = manifest.get("members")
    if not isinstance(listed, dict) or not listed:
        raise BundleError(f"{source}: {MANIFEST_NAME} has no members table; the bundle was altered")
    for name, entry in listed.items():
        if not isinstance(name, str) or not member_allowed(name):
            raise BundleError(f"{source}: {MANIFEST_NAME} lists an unexpected member {str(name)[:80]!r}")
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not SHA256_PATTERN.fullmatch(entry["sha256"])
            or type(entry.get("size")) is not int
            or not 0 <= entry["size"] <= member_limit(name)
        ):
            raise BundleError(f"{source}: {MANIFEST_NAME} entry for {name} needs a sha256 (64 hex digits) and a size")
    return manifest


def _parse_signature(raw: bytes, source: str) -> dict[str, Any]:
    signature = _json_object(raw, source, SIGNATURE_NAME)
    if signature.get("algorithm") != "ed25519":
        raise BundleError(f"{source}: signature algorithm {signature.get('algorithm')!r}; acmon signs with ed25519")
    key_id, value = signature.get("key_id"), signature.get("signature")
    if not isinstance(key_id, str) or not KEY_ID_PATTERN.fullmatch(key_id) or not isinstance(value, str):
        raise BundleError(f"{source}: {SIGNATURE_NAME} needs a key_id (16 hex digits) and a base64 signature")
    try:
        signature["_bytes"] = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{source}: the signature is not base64; sign the bundle again") from None
    if len(signature["_bytes"]) != 64:
        raise BundleError(f"{source}: the signature is {len(signature['_bytes'])} bytes, an Ed25519 one is 64")
    return signature


def _check_signature(signature: dict[str, Any], message: bytes, keys: Mapping[str, bytes], source: str) -> str:
    key_id = signature["key_id"]
    if key_id not in keys:
        raise BundleError(
            f"{source}: signed by key {key_id}, which is not among the trusted keys ({', '.join(sorted(keys))}); "
            "add its .pub file to the trusted keys or sign with a trusted key"
        )
    if not ed25519.verify(keys[key_id], message, signature["_bytes"]):
        raise BundleError(
            f"{source}: the signature does not match the manifest (key {key_id}): the bundle was altered after signing"
        )
    return key_id


# -- keys ----------------------------------------------------------------------

PUBLIC_KEY_HEADER = "acmon-ed25519"
PUBLIC_KEY_MAX_BYTES = 4096
MAX_TRUSTED_KEYS = 64


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:KEY_ID_HEX]


def format_public_key(raw_public: bytes, comment: str) -> str:
    """The .pub file's text: one line, `acmon-ed25519 <base64 of the 32-byte key> <comment>`."""
    return f"{PUBLIC_KEY_HEADER} {base64.b64encode(raw_public).decode()} {comment}\n"


def parse_public_key(text: str, source: str) -> bytes:
    """The raw 32-byte key of one .pub file's text (see format_public_key)."""
    parts = text.strip().split(maxsplit=2)
    if len(parts) < 2 or parts[0] != PUBLIC_KEY_HEADER:
        raise BundleError(
            f"{source}: not an acmon public key (expected '{PUBLIC_KEY_HEADER} <base64> [comment]'); "
            "make one with python -m firmware_tools keygen"
        )
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{source}: the public key is not base64") from None
    if len(raw) != 32:
        raise BundleError(f"{source}: the public key is {len(raw)} bytes, an Ed25519 key is 32")
    return raw


def load_public_keys(location: str | Path) -> dict[str, bytes]:
    """{key id: raw key} from a .pub file, or from every *.pub file in a folder.

    Raises:
        BundleError: missing, unreadable, not a key, or a folder with no .pub file.
    """
    p = Path(location)
    if p.is_dir():
        files = sorted(p.glob("*.pub"))[: MAX_TRUSTED_KEYS + 1]
        if not files:
            raise BundleError(f"{p}: no *.pub file in the trusted keys folder; copy the signing key's .pub file there")
        if len(files) > MAX_TRUSTED_KEYS:
            raise BundleError(f"{p}: more than {MAX_TRUSTED_KEYS} .pub files in the trusted keys folder")
    else:
        files = [p]
    keys = {}
    for f in files:
        data = read_regular_file(
            f,
            PUBLIC_KEY_MAX_BYTES,
            what="public key",
            missing_hint="give a .pub file made by python -m firmware_tools keygen, or a folder of them",
            kind_hint="give a .pub file or a folder of .pub files",
            size_hint="a public key file is one short line",
        )
        raw = parse_public_key(data.decode("utf-8", errors="replace"), str(f))
        keys[key_id(raw)] = raw
    return keys


def trusted_keys_from(location: str | Path | None) -> dict[str, bytes] | None:
    return load_public_keys(location) if location else None


def manifest_entries(members: Iterable[tuple[str, bytes]]) -> dict[str, dict[str, Any]]:
    """The manifest's members table for (name, content) pairs."""
    return {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for name, data in members}
