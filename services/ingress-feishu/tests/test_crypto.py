"""Feishu's webhook crypto against the protocol doc's vectors (platform-protocols.md §5)."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from zhongshu.ingress_feishu import crypto

VECTOR_ENCRYPT = "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="
VECTOR_BODY = b'{"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="}'


def test_the_documented_sample_decrypts_to_hello_world() -> None:
    assert crypto.aes_key("test key").hex() == (
        "fa2bdca424f01f01ffb48df93acc35d439c7fd331a1a7fba6ac2fd83aa9ab31a"
    )
    assert crypto.decrypt("test key", VECTOR_ENCRYPT) == b"hello world"


def test_reencrypting_with_the_same_iv_gives_the_sample_back() -> None:
    iv = base64.b64decode(VECTOR_ENCRYPT)[:16]
    assert crypto.encrypt("test key", b"hello world", iv) == VECTOR_ENCRYPT


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 100, 1024, 70_000])
def test_decryption_agrees_with_the_library_cbc_mode(size: int) -> None:
    # decrypt() chains blocks itself over a reusable ECB context; the library's own CBC mode
    # (with its own padding) must read the same plaintext, for every length and a fresh IV.
    plain, iv = os.urandom(size), os.urandom(16)
    pad = 16 - size % 16
    enc = Cipher(algorithms.AES(crypto.aes_key("k")), modes.CBC(iv)).encryptor()
    encrypted = base64.b64encode(iv + enc.update(plain + bytes([pad]) * pad) + enc.finalize())
    assert crypto.decrypt("k", encrypted.decode()) == plain
    assert crypto.decrypt("k", crypto.encrypt("k", plain, iv)) == plain


def test_non_ascii_input_is_refused() -> None:
    with pytest.raises(crypto.CryptoError):
        crypto.decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=é")


def test_event_signature_matches_the_vector() -> None:
    assert crypto.event_signature("1700000000", "nonce-123", "test key", VECTOR_BODY) == (
        "52548f4f20dde17246606993fb478dd311c7de7de12dafc34a32996f8430d29b"
    )


def test_legacy_card_signature_matches_the_vector() -> None:
    assert crypto.legacy_card_signature("1700000000", "nonce-123", "vtoken", VECTOR_BODY) == (
        "e1c88d7ec0f1df97bc8a026c81fcfabdf4bf9234"
    )


@pytest.mark.parametrize(
    "encrypted",
    [
        "not base64!",
        base64.b64encode(b"\0" * 16).decode(),  # an iv and no block
        base64.b64encode(b"\0" * 40).decode(),  # not whole blocks
    ],
)
def test_undecryptable_input_is_refused(encrypted: str) -> None:
    with pytest.raises(crypto.CryptoError):
        crypto.decrypt("test key", encrypted)


def test_a_wrong_key_fails_the_strict_padding_check() -> None:
    # With the wrong key the last block decrypts to noise; every pad byte is checked, so this
    # is refused rather than returned as garbage (a lone last byte 0x01 would pass; this
    # sample's does not).
    with pytest.raises(crypto.CryptoError):
        crypto.decrypt("another key", VECTOR_ENCRYPT)


def test_padding_bytes_are_all_checked() -> None:
    # A last block whose final byte says 5 but whose other pad bytes differ.
    iv = bytes(16)
    plain = b"hello world" + b"\x01\x02\x03\x04\x05"
    enc = Cipher(algorithms.AES(crypto.aes_key("k")), modes.CBC(iv)).encryptor()
    forged = base64.b64encode(iv + enc.update(plain) + enc.finalize()).decode()
    with pytest.raises(crypto.CryptoError):
        crypto.decrypt("k", forged)


def test_timestamps_outside_the_window_are_stale() -> None:
    assert crypto.timestamp_fresh("1700000000", 1700000000 + 3600, 3600)
    assert not crypto.timestamp_fresh("1700000000", 1700000000 + 3601, 3600)
    assert not crypto.timestamp_fresh("1700000000", 1700000000 - 3601, 3600)
    assert not crypto.timestamp_fresh("soon", 1700000000, 3600)


def test_token_is_read_from_both_schemas() -> None:
    assert crypto.payload_token({"schema": "2.0", "header": {"token": "a"}}) == "a"
    assert crypto.payload_token({"type": "event_callback", "token": "b"}) == "b"
    assert crypto.payload_token({"event": {}}) is None


def test_signature_comparison_is_exact() -> None:
    good = hashlib.sha256(b"x").hexdigest()
    assert crypto.same(good, good)
    assert not crypto.same(good, good.upper())
