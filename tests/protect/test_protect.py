"""mlguard.protect: encrypted model files, detached signatures, copyright stamps."""

import io
import json
import os
import struct
import tempfile

import pytest
import safetensors.torch
import torch

from mlguard import protect
from mlguard.ownership.identity import Identity
from mlguard.files import container
from mlguard.protect import DecryptionError

FAST = (10, 8, 1)  # scrypt cost for tests: 1 MiB, about a millisecond
CHUNK = 64
HEADER, TAG = container.HEADER_SIZE, container.TAG


def seal(data: bytes, chunk_size: int = CHUNK, **secret) -> bytes:
    out = io.BytesIO()
    container.encrypt_stream(io.BytesIO(data), out, chunk_size=chunk_size, scrypt=FAST, **secret)
    return out.getvalue()


def state_dict() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(8, 3, 3, 3, generator=g),
            "fc.weight": torch.randn(10, 40, generator=g).to(torch.bfloat16),
            "fc.bias": torch.randn(10, generator=g).half(),
            "steps": torch.tensor(7), "mask": torch.rand(5, generator=g) > 0.5,
            "ids": torch.arange(33, dtype=torch.int64), "empty": torch.empty(0, 4)}


def assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


# -- encryption ----------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 200])
def test_round_trip_every_length_class(size):
    data = os.urandom(size)
    key = protect.new_file_key()
    sealed = seal(data, key=key)
    chunks = max(1, -(-size // CHUNK))
    assert len(sealed) == HEADER + size + TAG * chunks
    assert protect.decrypt_bytes(sealed, key=key) == data
    assert protect.decrypt_bytes(seal(data, passphrase="pw ü"), passphrase="pw ü") == data


def test_file_round_trip_with_passphrase(tmp_path):
    src, enc, dec = tmp_path / "m.bin", tmp_path / "m.enc", tmp_path / "m.dec"
    data = os.urandom(5000)
    src.write_bytes(data)
    assert protect.encrypt_file(src, enc, passphrase="s3cret", chunk_size=1000,
                                scrypt=FAST) == 5000
    assert data not in enc.read_bytes() and enc.read_bytes()[:8] == container.MAGIC
    assert protect.decrypt_file(enc, dec, passphrase="s3cret") == 5000
    assert dec.read_bytes() == data
    assert os.stat(dec).st_mode & 0o777 == 0o600  # plaintext model: owner only
    # Encrypting twice gives different files (fresh salt and nonce each time).
    protect.encrypt_file(src, tmp_path / "again.enc", passphrase="s3cret", scrypt=FAST)
    assert (tmp_path / "again.enc").read_bytes() != enc.read_bytes()


@pytest.mark.parametrize("chunk_size", [1000, container.DEFAULT_CHUNK_SIZE])
def test_load_encrypted_torch_and_safetensors(tmp_path, chunk_size):
    sd = state_dict()
    key = protect.new_file_key()
    torch.save(sd, tmp_path / "m.pt")
    safetensors.torch.save_file(sd, tmp_path / "m.safetensors", metadata={"a": "b"})
    for name in ("m.pt", "m.safetensors"):
        protect.encrypt_file(tmp_path / name, tmp_path / (name + ".enc"), key=key,
                             chunk_size=chunk_size)
        assert_same(protect.load_encrypted(tmp_path / (name + ".enc"), key=key), sd)
    # The stream parser agrees with the safetensors library itself.
    assert_same(protect.load_encrypted(tmp_path / "m.safetensors.enc", key=key,
                                       format="safetensors"),
                safetensors.torch.load_file(tmp_path / "m.safetensors"))


def test_every_flipped_byte_is_detected():
    key = protect.new_file_key()
    sealed = seal(os.urandom(200), key=key)  # 4 chunks of 64 bytes (the last one 8)
    for i in range(len(sealed)):
        for mask in (0x01, 0x80):
            bad = bytearray(sealed)
            bad[i] ^= mask
            with pytest.raises(ValueError):
                protect.decrypt_bytes(bytes(bad), key=key)
            if i >= 8:  # past the magic bytes: authentication, or a rejected header
                with pytest.raises(ValueError, match="cannot decrypt|corrupted header|version"):
                    protect.decrypt_bytes(bytes(bad), key=key)


def test_truncation_anywhere_is_detected():
    key = protect.new_file_key()
    sealed = seal(os.urandom(3 * CHUNK), key=key)  # exactly 3 full chunks
    boundaries = [HEADER + k * (CHUNK + TAG) for k in range(3)]
    assert all(b < len(sealed) for b in boundaries)
    for length in range(len(sealed)):
        with pytest.raises(DecryptionError):
            protect.decrypt_bytes(sealed[:length], key=key)


def test_reordered_dropped_duplicated_or_appended_chunks_are_detected():
    key = protect.new_file_key()
    sealed = seal(os.urandom(4 * CHUNK), key=key)
    head, body = sealed[:HEADER], sealed[HEADER:]
    c = [body[i:i + CHUNK + TAG] for i in range(0, len(body), CHUNK + TAG)]
    other = seal(os.urandom(4 * CHUNK), key=key)
    variants = {
        "swap": head + c[1] + c[0] + c[2] + c[3],
        "drop middle": head + c[0] + c[2] + c[3],
        "duplicate": head + c[0] + c[0] + c[1] + c[2] + c[3],
        "append garbage": sealed + b"\0",
        "append chunk": sealed + c[3],
        "splice files": head + other[HEADER:],
    }
    for name, data in variants.items():
        with pytest.raises(DecryptionError):
            protect.decrypt_bytes(data, key=key)
        assert name  # (keeps the variant's name in the failure traceback)


def test_wrong_secret_and_tampering_give_one_message(tmp_path):
    src, enc, bad = tmp_path / "m.bin", tmp_path / "m.enc", tmp_path / "bad.enc"
    src.write_bytes(os.urandom(300))
    protect.encrypt_file(src, enc, passphrase="correct horse", scrypt=FAST, chunk_size=100)
    tampered = bytearray(enc.read_bytes())
    tampered[-1] ^= 1
    messages = []
    for path, passphrase in ((enc, "wrong horse"), (enc, "correct hors"), (bad, "correct horse")):
        bad.write_bytes(tampered)
        with pytest.raises(DecryptionError) as e:
            protect.decrypt_bytes(path, passphrase=passphrase)
        messages.append(str(e.value).replace(str(bad), str(enc)))
    assert len(set(messages)) == 1
    assert "wrong passphrase or key, or the file has been modified" in messages[0]
    assert "horse" not in messages[0]

    key = protect.new_file_key()
    protect.encrypt_file(src, enc, key=key)
    with pytest.raises(DecryptionError) as wrong_key:
        protect.load_encrypted(enc, key=protect.new_file_key())
    assert str(wrong_key.value) == messages[0]
    with pytest.raises(ValueError, match="encrypted with a raw key; pass key="):
        protect.decrypt_bytes(enc, passphrase="correct horse")


def test_tampered_checkpoint_fails_inside_the_loader(tmp_path):
    key = protect.new_file_key()
    torch.save({"w": torch.randn(64, 64)}, tmp_path / "m.pt")
    protect.encrypt_file(tmp_path / "m.pt", tmp_path / "m.enc", key=key, chunk_size=4096)
    data = bytearray((tmp_path / "m.enc").read_bytes())
    data[len(data) // 2] ^= 4  # inside a tensor's bytes, read by torch's C++ reader
    (tmp_path / "m.enc").write_bytes(data)
    with pytest.raises(DecryptionError):
        protect.load_encrypted(tmp_path / "m.enc", key=key)


def _listing(*roots) -> set:
    return {os.path.join(d, f) for r in roots for d, _, fs in os.walk(r) for f in fs}


def test_load_encrypted_writes_no_files(tmp_path, monkeypatch):
    models, tmp, cwd = tmp_path / "models", tmp_path / "tmp", tmp_path / "cwd"
    for d in (models, tmp, cwd):
        d.mkdir()
    key = protect.new_file_key()
    torch.save(state_dict(), models / "m.pt")
    safetensors.torch.save_file(state_dict(), models / "m.safetensors")
    for name in ("m.pt", "m.safetensors"):
        protect.encrypt_file(models / name, models / (name + ".enc"), key=key, chunk_size=512)
    # Whatever Python or torch would create as a temporary file now lands in `tmp`.
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.chdir(cwd)
    before = _listing(tmp_path)
    for name in ("m.pt.enc", "m.safetensors.enc"):
        assert_same(protect.load_encrypted(models / name, key=key), state_dict())
    assert tempfile.gettempdir() == str(tmp)
    assert _listing(tmp_path) == before


def test_bad_arguments_and_files(tmp_path):
    src = tmp_path / "m.bin"
    src.write_bytes(b"x" * 10)
    with pytest.raises(ValueError, match="exactly one of passphrase= or key="):
        protect.encrypt_file(src, tmp_path / "e", passphrase="a", key=bytes(32))
    with pytest.raises(ValueError, match="exactly one of passphrase= or key="):
        protect.encrypt_file(src, tmp_path / "e")
    with pytest.raises(ValueError, match="key must be 32 bytes, got 16 bytes"):
        protect.encrypt_file(src, tmp_path / "e", key=bytes(16))
    with pytest.raises(ValueError, match="passphrase must not be empty"):
        protect.encrypt_file(src, tmp_path / "e", passphrase="")
    with pytest.raises(ValueError, match="chunk size 0 not in"):
        protect.encrypt_file(src, tmp_path / "e", key=bytes(32), chunk_size=0)
    with pytest.raises(ValueError, match="dst must differ from src"):
        protect.encrypt_file(src, src, key=bytes(32))
    assert not (tmp_path / "e").exists()
    assert sorted(os.listdir(tmp_path)) == ["m.bin"]  # no partial files left behind
    with pytest.raises(ValueError, match="not an mlguard encrypted file"):
        protect.load_encrypted(src, key=bytes(32))
    sealed = bytearray(seal(b"abc", key=bytes(32)))
    sealed[8:10] = struct.pack(">H", 9)
    with pytest.raises(ValueError, match="container version 9; this mlguard reads version 1"):
        protect.decrypt_bytes(bytes(sealed), key=bytes(32))


def test_hostile_kdf_parameters_are_refused_before_use():
    sealed = bytearray(seal(b"abc", passphrase="pw"))
    sealed[11] = 30  # log2 N = 30: 128 GiB of scrypt memory if obeyed
    with pytest.raises(ValueError, match="corrupted header .*scrypt"):
        protect.decrypt_bytes(bytes(sealed), passphrase="pw")


# -- signatures ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def owner():
    return Identity.generate()


def test_sign_and_verify_file(tmp_path, owner):
    path = tmp_path / "model.bin"
    data = os.urandom(48)
    path.write_bytes(data)
    sig = protect.sign_file(path, owner)
    assert sig["sha256"] == protect.file_sha256(path)
    assert protect.verify_file(path, sig, owner.public_key_hex)
    assert protect.verify_file(path, sig, owner.public_key_pem())
    (tmp_path / "sig.json").write_text(json.dumps(sig))
    assert protect.verify_file(path, tmp_path / "sig.json", owner)
    assert not protect.verify_file(path, sig, Identity.generate().public_key_hex)
    for i in range(len(data)):  # any change to the file
        bad = bytearray(data)
        bad[i] ^= 1
        path.write_bytes(bad)
        assert not protect.verify_file(path, sig, owner)
    path.write_bytes(data + b"\0")
    assert not protect.verify_file(path, sig, owner)
    path.write_bytes(data)
    for field, value in sig.items():  # any change to the record
        forged = dict(sig)
        forged[field] = value + 1 if isinstance(value, int) else (
            value[:-1] + ("0" if value[-1] != "0" else "1") if isinstance(value, str) else None)
        if field == "format":
            with pytest.raises(ValueError, match="not an mlguard file signature"):
                protect.verify_file(path, forged, owner)
        elif field == "version":
            with pytest.raises(ValueError, match="unsupported version"):
                protect.verify_file(path, forged, owner)
        else:
            assert not protect.verify_file(path, forged, owner), field
    assert protect.verify_file(path, sig, owner)


# -- stamps --------------------------------------------------------------------------------

def test_stamp_safetensors_keeps_tensors_and_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    sd = state_dict()
    safetensors.torch.save_file(sd, path, metadata={"format": "pt"})
    raw = path.read_bytes()
    data_before = raw[8 + struct.unpack("<Q", raw[:8])[0]:]
    assert protect.read_stamp(path) is None
    commitment = "ab" * 32
    got = protect.stamp(path, owner="ACME Corp", license="CC-BY-NC-4.0", commitment=commitment)
    assert got["owner"] == "ACME Corp" and got["license"] == "CC-BY-NC-4.0"
    assert got["commitment"] == commitment and got["source"] == "safetensors-metadata"
    raw = path.read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]
    assert header_len % 8 == 0 and raw[8 + header_len:] == data_before  # tensor bytes untouched
    with safetensors.safe_open(path, "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and meta["mlguard.owner"] == "ACME Corp"
    assert_same(safetensors.torch.load_file(path), sd)
    again = protect.stamp(path, owner="New Owner")
    assert again["owner"] == "New Owner" and "license" not in again  # replaced, not merged
    assert not list(tmp_path.glob("*.mlguard-stamp.json"))


def test_stamp_sidecar_for_other_formats(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(state_dict(), path)
    got = protect.stamp(path, owner="ACME", commitment="0" * 64)
    assert got["source"] == "sidecar" and got["file_matches"] and got["owner"] == "ACME"
    assert (tmp_path / "m.pt.mlguard-stamp.json").exists()
    assert protect.read_stamp(path) == got
    with open(path, "ab") as f:
        f.write(b"\0")
    assert protect.read_stamp(path)["file_matches"] is False


def test_stamp_bad_arguments(tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="commitment must be 64 lowercase hex digits"):
        protect.stamp(path, commitment="abc")
    with pytest.raises(TypeError, match="stamp field 'owner' must be a str"):
        protect.stamp(path, owner=3)
    with pytest.raises(ValueError, match="give at least one of owner="):
        protect.stamp(path)
