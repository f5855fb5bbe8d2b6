"""The device's Ed25519 verification against RFC 8032's test vectors and against `cryptography` (OpenSSL)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from device.analysis.ed25519 import L, verify

# RFC 8032 section 7.1, tests 1, 2, 3 and SHA(abc): (public key, message, signature).
RFC_VECTORS = [
    (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        hashlib.sha512(b"abc").hexdigest(),
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
]


@pytest.mark.parametrize(("public", "message", "signature"), RFC_VECTORS)
def test_rfc8032_vectors(public, message, signature):
    pk, msg, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
    assert verify(pk, msg, sig)
    assert not verify(pk, msg + b"\0", sig)
    assert not verify(pk, msg, sig[:32] + (int.from_bytes(sig[32:], "little") + L).to_bytes(32, "little"))  # s >= L


def _pair(seed: bytes) -> tuple[Ed25519PrivateKey, bytes]:
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())
    return key, key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@settings(max_examples=60, deadline=None)
@given(seed=st.binary(min_size=1, max_size=8), message=st.binary(max_size=300), flip=st.integers(0, 64 * 8 - 1))
def test_agrees_with_openssl_on_valid_and_altered_signatures(seed, message, flip):
    key, public = _pair(seed)
    signature = key.sign(message)
    assert verify(public, message, signature)
    altered = bytearray(signature)
    altered[flip // 8] ^= 1 << (flip % 8)
    try:
        key.public_key().verify(bytes(altered), message)
        openssl = True
    except InvalidSignature:
        openssl = False
    assert verify(public, message, bytes(altered)) is openssl is False
    other = _pair(seed + b"x")[1]
    assert not verify(other, message, signature)


@pytest.mark.parametrize(
    ("public", "signature"),
    [(b"", b"\0" * 64), (b"\0" * 31, b"\0" * 64), (b"\xff" * 32, b"\0" * 64), (b"\1" + b"\0" * 31, b"\xff" * 64)],
)
def test_malformed_keys_and_signatures_are_false_not_errors(public, signature):
    assert verify(public, b"m", signature) is False
