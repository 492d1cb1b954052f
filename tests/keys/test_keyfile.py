"""Tests for mlguard.keys.keyfile: key-file format, MAC checks and HKDF derivations."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

import pytest

from mlguard.keys.keyfile import (
    FORMAT,
    VERSION,
    canonical_json,
    commitment,
    derive_key_bytes,
    derive_seed,
    new_nonce,
    new_secret,
    read_key_file,
    secret_from_hex,
    write_key_file,
)


def _body(secret: bytes | None = None) -> dict:
    return {
        "scheme": "trigger-set",
        "secret": (secret or new_secret()).hex(),
        "nonce": new_nonce().hex(),
        "num_classes": 10,
        "num_triggers": 100,
        "note": "caf\u00e9",
    }


def _rfc5869_hkdf_sha256(ikm: bytes, info: bytes, length: int) -> bytes:
    """Independent HKDF (RFC 5869) with salt=None, written with hashlib/hmac."""
    prk = hmac.new(b"\0" * 32, ikm, hashlib.sha256).digest()  # extract
    okm, block, counter = b"", b"", 1
    while len(okm) < length:  # expand
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


@pytest.fixture
def key_path(tmp_path: Path) -> tuple[Path, dict]:
    body = _body()
    path = tmp_path / "wm.key"
    write_key_file(path, body)
    return path, body


def _expect_error(path: Path, match: str, secret_hex: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        read_key_file(path)
    text = str(info.value)
    assert str(path) in text
    assert secret_hex not in text and secret_hex.upper() not in text


# --- round trip and file properties ---------------------------------------


def test_round_trip(key_path: tuple[Path, dict]) -> None:
    path, body = key_path
    assert read_key_file(path) == body
    assert read_key_file(str(path)) == body
    doc = json.loads(path.read_text())
    assert doc["format"] == FORMAT == "mlguard-key"
    assert doc["version"] == VERSION == 1
    assert set(doc) == {"format", "version", "body", "mac"}


def test_file_mode_is_0600(key_path: tuple[Path, dict]) -> None:
    path, _ = key_path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_existing_key_is_never_replaced_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "wm.key"
    first = _body()
    write_key_file(path, first)
    with pytest.raises(FileExistsError, match="wm.key' already exists.*overwrite=True"):
        write_key_file(path, _body())
    assert read_key_file(path) == first
    assert os.listdir(tmp_path) == ["wm.key"]


def test_overwrite_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "wm.key"
    write_key_file(path, _body())
    second = _body()
    write_key_file(path, second, overwrite=True)
    assert read_key_file(path) == second
    assert os.listdir(tmp_path) == ["wm.key"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_write_rejects_bad_bodies(tmp_path: Path) -> None:
    path = tmp_path / "wm.key"
    with pytest.raises(TypeError, match="body must be a dict, got list"):
        write_key_file(path, [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="body must contain the hex secret"):
        write_key_file(path, {"nonce": "00"})
    with pytest.raises(ValueError, match="secret must be 64 hex digits"):
        write_key_file(path, {"secret": "abcd"})
    with pytest.raises(ValueError, match="canonical JSON"):
        write_key_file(path, {**_body(), "x": float("nan")})
    assert not path.exists()


# --- derivations ----------------------------------------------------------


def test_derive_seed_properties() -> None:
    s1, s2 = new_secret(), new_secret()
    a = derive_seed(s1, "trigger-inputs")
    assert a == derive_seed(s1, "trigger-inputs")
    assert a != derive_seed(s1, "trigger-labels")
    assert a != derive_seed(s2, "trigger-inputs")
    for secret in (s1, s2, b"\0" * 32, b"\xff" * 32):
        for purpose in ("a", "trigger-inputs", "weights/layer.3"):
            seed = derive_seed(secret, purpose)
            assert isinstance(seed, int)
            assert -(2**63) <= seed < 2**63


@pytest.mark.parametrize("secret", [b"\0" * 32, bytes(range(32)), b"\xab" * 32])
@pytest.mark.parametrize("purpose", ["trigger-inputs", "key-file-mac", "x"])
def test_derive_seed_matches_independent_hkdf(secret: bytes, purpose: str) -> None:
    okm = _rfc5869_hkdf_sha256(secret, b"mlguard/v1/" + purpose.encode(), 8)
    u = int.from_bytes(okm, "big")
    expected = u - 2**64 if u >= 2**63 else u
    assert derive_seed(secret, purpose) == expected
    long = _rfc5869_hkdf_sha256(secret, b"mlguard/v1/" + purpose.encode(), 32)
    assert derive_key_bytes(secret, purpose) == long
    assert derive_key_bytes(secret, purpose, 8) == okm


def test_derive_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="secret must be 32 bytes, got 16 bytes"):
        derive_seed(b"\0" * 16, "x")
    with pytest.raises(TypeError, match="secret must be bytes, got str"):
        derive_seed("00" * 32, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="purpose must be a non-empty str, got ''"):
        derive_seed(new_secret(), "")
    with pytest.raises(ValueError, match="length must be an int"):
        derive_key_bytes(new_secret(), "x", 0)


def test_commitment_binds_every_field() -> None:
    body = _body()
    c = commitment(body)
    assert len(c) == 64 and int(c, 16) >= 0
    assert c == commitment(dict(reversed(list(body.items()))))  # order-independent
    expected = hashlib.sha256(b"mlguard-commitment-v1\0" + canonical_json(body)).hexdigest()
    assert c == expected
    for name in body:
        changed = dict(body)
        changed[name] = str(changed[name]) + "0" if isinstance(changed[name], str) else 11
        assert commitment(changed) != c, name
    assert commitment({**body, "extra": 1}) != c


def test_commitment_requires_secret_and_nonce() -> None:
    body = _body()
    del body["nonce"]
    with pytest.raises(ValueError, match="'nonce'"):
        commitment(body)


def test_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": [1, "\u00e9"]}) == b'{"a":[1,"\\u00e9"],"b":1}'
    with pytest.raises(ValueError, match="canonical JSON"):
        canonical_json({"a": float("inf")})


def test_secret_from_hex() -> None:
    s = new_secret()
    assert secret_from_hex(s.hex()) == s
    assert secret_from_hex(s.hex().upper()) == s
    with pytest.raises(ValueError, match="only hex digits"):
        secret_from_hex("zz" * 32)
    with pytest.raises(ValueError, match="only hex digits"):
        secret_from_hex(" " + s.hex()[1:])  # bytes.fromhex would accept spaces
    with pytest.raises(ValueError, match="got 62 hex digits"):
        secret_from_hex(s.hex()[:62])
    with pytest.raises(TypeError, match="got bytes"):
        secret_from_hex(s)  # type: ignore[arg-type]


# --- corruption and tampering ---------------------------------------------


def test_every_truncation_is_rejected(key_path: tuple[Path, dict]) -> None:
    path, body = key_path
    data = path.read_bytes()
    lengths = sorted(set(range(0, len(data), max(1, len(data) // 40))) | {1, len(data) - 2})
    assert len(lengths) >= 30
    for n in lengths:
        path.write_bytes(data[:n])
        if data[:n].rstrip() == data.rstrip():  # only whitespace was cut
            assert read_key_file(path) == body
        else:
            _expect_error(path, "not valid JSON; the file is corrupted or truncated",
                          body["secret"])


def test_a_model_file_given_as_a_key_is_named_as_one(tmp_path: Path) -> None:
    import safetensors.torch
    import torch

    secret = new_secret().hex()
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    safetensors.torch.save_file({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    for name in ("model.pt", "model.safetensors"):
        _expect_error(tmp_path / name, "is a model file .*, not a key file", secret)


def test_garbage_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "garbage.key"
    secret = new_secret().hex()
    for data in (b"\x00\xff\xfe garbage", b"hello", b"", b"{\"format\": NaN}"):
        path.write_bytes(data)
        _expect_error(path, "not valid JSON", secret)
    path.write_bytes(b"[1, 2]")
    _expect_error(path, "top level is not a JSON object", secret)


def test_missing_file(tmp_path: Path) -> None:
    _expect_error(tmp_path / "nope.key", "cannot be read", "unused")
    _expect_error(tmp_path, "cannot be read", "unused")  # a directory


def _rewrite(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def test_flipped_byte_in_body(key_path: tuple[Path, dict]) -> None:
    path, body = key_path
    data = bytearray(path.read_bytes())
    i = data.index(b"trigger-set") + 3
    data[i] ^= 0x01  # 'g' -> 'f': still valid JSON
    path.write_bytes(bytes(data))
    _expect_error(path, "has been modified or corrupted", body["secret"])


def test_edited_field_with_stale_mac(key_path: tuple[Path, dict]) -> None:
    path, body = key_path
    _rewrite(path, lambda d: d["body"].update(num_triggers=99))
    _expect_error(path, r"has been modified or corrupted \(MAC check failed\)", body["secret"])


def test_edited_secret_with_stale_mac(key_path: tuple[Path, dict]) -> None:
    path, body = key_path
    flipped = ("1" if body["secret"][0] == "0" else "0") + body["secret"][1:]
    _rewrite(path, lambda d: d["body"].update(secret=flipped))
    _expect_error(path, "has been modified or corrupted", body["secret"])
    with pytest.raises(ValueError) as info:
        read_key_file(path)
    assert flipped not in str(info.value)


def test_malformed_secret(key_path: tuple[Path, dict]) -> None:
    path, body = key_path
    _rewrite(path, lambda d: d["body"].update(secret=body["secret"][:-2]))
    _expect_error(path, "malformed secret: secret must be 64 hex digits", body["secret"][:-2])
    _rewrite(path, lambda d: d["body"].update(secret="g" + body["secret"][1:]))
    _expect_error(path, "malformed secret: .*only hex digits", body["secret"][1:])
    _rewrite(path, lambda d: d["body"].pop("secret"))
    _expect_error(path, "no 'secret' field", body["secret"])


def test_wrong_version(key_path: tuple[Path, dict]) -> None:
    path, body = key_path
    _rewrite(path, lambda d: d.update(version=3))
    _expect_error(path, "uses key-file version 3, but this mlguard supports versions 1, 2",
                  body["secret"])
    _rewrite(path, lambda d: d.update(version="1"))
    _expect_error(path, "non-integer 'version' field", body["secret"])
    _rewrite(path, lambda d: d.pop("version"))
    _expect_error(path, "missing or non-integer 'version'", body["secret"])


def test_wrong_format(key_path: tuple[Path, dict]) -> None:
    path, body = key_path
    _rewrite(path, lambda d: d.update(format="something-else"))
    _expect_error(path, "not an mlguard key file \\(format is 'something-else'", body["secret"])
    _rewrite(path, lambda d: d.pop("format"))
    _expect_error(path, "format is None", body["secret"])


def test_missing_or_ill_typed_fields(key_path: tuple[Path, dict]) -> None:
    path, body = key_path
    original = path.read_bytes()
    edits = [
        (lambda d: d.pop("body"), "non-object 'body'"),
        (lambda d: d.update(body=[1]), "non-object 'body'"),
        (lambda d: d.pop("mac"), "malformed 'mac'"),
        (lambda d: d.update(mac=123), "malformed 'mac'"),
        (lambda d: d.update(mac="zz" * 32), "malformed 'mac'"),
        (lambda d: d.update(mac=d["mac"][:-2]), "malformed 'mac'"),
        (lambda d: d.update(mac="00" * 32), "modified or corrupted"),
    ]
    for edit, match in edits:
        path.write_bytes(original)
        _rewrite(path, edit)
        _expect_error(path, match, body["secret"])
