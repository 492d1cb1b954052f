"""mlguard.Identity: Ed25519 owner keys, encrypted identity files, signed documents."""

import json
import os

import pytest
from cryptography.hazmat.primitives import serialization

from mlguard.ownership.identity import (Identity, document_signature_problems, load_public_key,
                              sign_document, verify_signature)

FAST = (10, 8, 1)


def test_save_load_round_trip(tmp_path):
    me = Identity.generate()
    path = tmp_path / "me.json"
    me.save(path, "pass phrase", scrypt=FAST)
    assert os.stat(path).st_mode & 0o777 == 0o600
    text = path.read_text()
    assert me.public_key_hex in text  # public part readable without the passphrase
    back = Identity.load(path, "pass phrase")
    assert back.public_key_hex == me.public_key_hex
    sig = back.sign(b"hello")
    assert verify_signature(me.public_key_hex, b"hello", sig)
    assert not verify_signature(me.public_key_hex, b"hellO", sig)
    assert load_public_key(path).public_bytes_raw().hex() == me.public_key_hex
    assert me.public_key_hex[:16] in repr(me)


def test_wrong_passphrase_and_tampering(tmp_path):
    path = tmp_path / "me.json"
    Identity.generate().save(path, "right", scrypt=FAST)
    with pytest.raises(ValueError, match="wrong passphrase, or the file has been modified"):
        Identity.load(path, "wrong")
    doc = json.loads(path.read_text())
    doc["public_key"] = Identity.generate().public_key_hex
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="public key does not match the private key"):
        Identity.load(path, "right")
    path.write_text("{}")
    with pytest.raises(ValueError, match="not an mlguard identity file"):
        Identity.load(path, "right")


def test_pkcs8_export_is_standard():
    me = Identity.generate()
    pem = me.private_pem("pw")
    key = serialization.load_pem_private_key(pem.encode(), password=b"pw")
    assert Identity(key).public_key_hex == me.public_key_hex
    assert load_public_key(me.public_key_pem()).public_bytes_raw().hex() == me.public_key_hex


def test_signed_document_detects_any_change():
    me = Identity.generate()
    doc = sign_document({"a": 1, "b": [1.5, "x"], "c": {"d": None}}, me)
    assert document_signature_problems(doc) == []
    assert document_signature_problems(doc, me.public_key_hex) == []
    assert document_signature_problems(json.loads(json.dumps(doc))) == []
    for edit in ({"a": 2}, {"b": [1.5, "y"]}, {"c": {"d": 0}}, {"e": 1}):
        bad = {**doc, **edit}
        assert any("modified after signing" in p for p in document_signature_problems(bad))
    other = Identity.generate()
    assert "not by the expected key" in document_signature_problems(doc, other)[0]
    assert document_signature_problems({**doc, "signature": "00"}) == [
        "signature is missing or malformed (expected 128 hex digits)"]
    # Re-signing by someone else is detected only against the owner's known key.
    stolen = sign_document(doc, other)
    assert document_signature_problems(stolen) == []
    assert document_signature_problems(stolen, me) != []


def test_bad_public_keys():
    with pytest.raises(ValueError, match="public_key must be 64 hex digits"):
        load_public_key("abcd")
    with pytest.raises(TypeError, match="public_key must be hex, PEM"):
        load_public_key(3)
