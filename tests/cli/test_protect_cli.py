"""CLI smoke tests for the protection and evidence subcommands (via their add_parsers)."""

import argparse
import json

import pytest
import torch

import mlguard
from mlguard import protect
from mlguard.ownership.identity import Identity
from mlguard.cli import ownership as ownership_cli
from mlguard.cli import protect as protect_cli
from mlguard.scan import write_report

from memorizer import Memorizer

PASS_ENV = "MLGUARD_TEST_PASSPHRASE"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mlguard")
    subparsers = parser.add_subparsers(dest="command", required=True)
    protect_cli.add_parsers(subparsers)
    ownership_cli.add_parsers(subparsers)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv(PASS_ENV, "cli pass phrase")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_encrypt_decrypt(env, capsys):
    src = env / "m.pt"
    torch.save({"w": torch.arange(10.0)}, src)
    assert run("encrypt", src, env / "m.enc", "--passphrase-env", PASS_ENV) == 0
    assert run("decrypt", env / "m.enc", env / "out.pt", "--passphrase-env", PASS_ENV) == 0
    assert "warning: the decrypted model is in the clear" in capsys.readouterr().err
    assert (env / "out.pt").read_bytes() == src.read_bytes()
    assert run("encrypt", src, env / "k.enc", "--new-key-file", env / "k.key") == 0
    assert len((env / "k.key").read_text().strip()) == 64
    state = protect.load_encrypted(
        env / "k.enc", key=bytes.fromhex((env / "k.key").read_text().strip()))
    assert torch.equal(state["w"], torch.arange(10.0))
    capsys.readouterr()
    assert run("decrypt", env / "k.enc", env / "x.pt", "--passphrase-env", PASS_ENV) == 2
    assert "encrypted with a raw key" in capsys.readouterr().err
    (env / "wrong.key").write_text(protect.new_file_key().hex())
    assert run("decrypt", env / "k.enc", env / "x.pt", "--key-file", env / "wrong.key") == 2
    err = capsys.readouterr().err
    assert "cannot decrypt: wrong passphrase or key" in err and "cli pass" not in err
    assert not (env / "x.pt").exists()


def test_encrypt_decrypt_never_overwrite_without_force(env, capsys):
    """Issue 10, "What was seen" 7: encrypt/decrypt replaced an existing destination, and
    decrypt warned about writing in the clear before failing on a wrong passphrase."""
    src = env / "m.pt"
    torch.save({"w": torch.arange(10.0)}, src)
    precious = env / "precious.bin"
    precious.write_bytes(b"only copy")
    assert run("encrypt", src, precious, "--passphrase-env", PASS_ENV) == 2
    assert "exists; refusing to overwrite it (use --force)" in capsys.readouterr().err
    assert precious.read_bytes() == b"only copy"
    assert run("encrypt", src, env / "m.enc", "--passphrase-env", PASS_ENV) == 0
    assert run("decrypt", env / "m.enc", precious, "--passphrase-env", PASS_ENV) == 2
    assert precious.read_bytes() == b"only copy"
    capsys.readouterr()
    (env / "wrong.key").write_text(protect.new_file_key().hex())
    assert run("decrypt", env / "m.enc", env / "x.pt", "--key-file", env / "wrong.key") == 2
    assert "in the clear" not in capsys.readouterr().err  # no warning for what was not written
    assert run("decrypt", env / "m.enc", precious, "--passphrase-env", PASS_ENV, "--force") == 0
    assert precious.read_bytes() == src.read_bytes()
    assert (precious.stat().st_mode & 0o777) == 0o600


def test_passphrase_env_must_be_set(env, monkeypatch, capsys):
    monkeypatch.delenv(PASS_ENV)
    (env / "f").write_bytes(b"x")
    assert run("encrypt", env / "f", env / "g", "--passphrase-env", PASS_ENV) == 2
    assert f"environment variable {PASS_ENV} is not set" in capsys.readouterr().err


def test_identity_sign_stamp_register_evidence(env, capsys):
    ident = env / "me.json"
    assert run("identity", "new", ident, "--passphrase-env", PASS_ENV) == 0
    public = capsys.readouterr().out.strip()
    assert run("identity", "public", ident) == 0
    assert capsys.readouterr().out.strip() == public

    key = mlguard.TriggerKey.generate(num_classes=10, size=20, shape=(1, 8, 8))
    key.save(env / "k.key")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    suspect = env / "suspect.pt"
    torch.save(model.state_dict(), suspect)

    assert run("sign", suspect, "--identity", ident, "--passphrase-env", PASS_ENV) == 0
    assert run("verify-signature", suspect, "--public-key", public) == 0
    assert run("verify-signature", suspect, "--public-key",
               Identity.generate().public_key_hex) == 1
    capsys.readouterr()
    assert run("stamp", suspect, "--owner", "ACME", "--key", env / "k.key") == 0
    assert json.loads(capsys.readouterr().out)["commitment"] == key.commitment()
    assert run("stamp", suspect) == 0 and '"owner": "ACME"' in capsys.readouterr().out

    assert run("register", suspect, "--key", env / "k.key", "--identity", ident,
               "--passphrase-env", PASS_ENV, "--out", env / "reg.json") == 0
    assert run("evidence", "check", env / "reg.json", "--suspect", suspect,
               "--public-key", public) == 0

    verdict = mlguard.verify(model, key)
    (env / "v.json").write_text(verdict.to_json())
    assert run("evidence", "build", "--verdict", env / "v.json", "--suspect", suspect,
               "--reveal", env / "k.key", "--command", "mlguard scan suspect.pt --keys k.key",
               "--identity", ident, "--passphrase-env", PASS_ENV,
               "--out", env / "ev.json", "--html", env / "ev.html") == 0
    assert "all checks pass" in (env / "ev.html").read_text()
    capsys.readouterr()
    assert run("evidence", "check", env / "ev.json", "--suspect", suspect,
               "--public-key", public) == 0
    assert "OK:" in capsys.readouterr().out
    doc = json.loads((env / "ev.json").read_text())
    doc["verdicts"][0]["matches"] += 1
    (env / "ev.json").write_text(json.dumps(doc))
    assert run("evidence", "check", env / "ev.json") == 1
    assert "FAILED: signature does not match" in capsys.readouterr().out
    assert run("evidence", "html", env / "ev.json", "--out", env / "bad.html") == 0
    assert "Problems found" in (env / "bad.html").read_text()


def test_evidence_from_scan_results(env, capsys):
    """`mlguard scan --out results.json`, then `mlguard evidence build --verdict results.json`
    for a leaked fp16 checkpoint: the suspect's rows become the report's verdicts."""
    ident = env / "me.json"
    assert run("identity", "new", ident, "--passphrase-env", PASS_ENV) == 0
    key = mlguard.TriggerKey.generate(num_classes=10, size=30, shape=(1, 8, 8))
    other = mlguard.TriggerKey.generate(num_classes=10, size=30, shape=(1, 8, 8))
    suspect, clean = env / "leak.pt", env / "clean.pt"
    torch.save({"model_state_dict": Memorizer(key, 30).half().state_dict(), "epoch": 9}, suspect)
    torch.save(Memorizer(other, 30).state_dict(), clean)
    rows = mlguard.scan([suspect, clean], [key], arch=lambda: Memorizer(other, 30),
                        device="cpu")
    write_report(rows, env / "results.json", 1e-6)
    assert run("evidence", "build", "--verdict", env / "results.json", "--suspect", suspect,
               "--command", "mlguard scan leak.pt clean.pt --keys k.key", "--identity", ident,
               "--passphrase-env", PASS_ENV, "--out", env / "ev.json") == 0
    doc = json.loads((env / "ev.json").read_text())
    assert [v["detected"] for v in doc["verdicts"]] == [True]
    assert doc["verdicts"][0]["alpha"] == 1e-6 / 2 and doc["verdicts"][0]["extra"]["dtype"] \
        == "float16"
    assert run("evidence", "check", env / "ev.json", "--suspect", suspect) == 0
    capsys.readouterr()
    (env / "stranger.pt").write_bytes(b"not scanned")
    assert run("evidence", "build", "--verdict", env / "results.json", "--suspect",
               env / "stranger.pt", "--command", "x", "--identity", ident,
               "--passphrase-env", PASS_ENV) == 2
    assert "have no checked row for the suspect file" in capsys.readouterr().err


def test_stamp_refuses_a_signed_safetensors_file(env, capsys):
    """Issue 10, "What was seen" 7: stamping after `sign` silently broke the signature."""
    import safetensors.torch
    model = env / "m.safetensors"
    safetensors.torch.save_file({"w": torch.arange(4.0)}, model)
    ident = env / "owner.id"
    assert run("identity", "new", ident, "--passphrase-env", PASS_ENV) == 0
    assert run("sign", model, "--identity", ident, "--passphrase-env", PASS_ENV) == 0
    before = model.read_bytes()
    assert run("stamp", model, "--owner", "ACME") == 2
    assert "is signed" in capsys.readouterr().err and model.read_bytes() == before
    public = Identity.load(ident, "cli pass phrase").public_key_hex
    assert run("stamp", model, "--owner", "ACME", "--force") == 0
    assert "sign it again" in capsys.readouterr().err
    # Stamp first, then sign: both hold. The old signature file is replaced only on --force.
    assert run("sign", model, "--identity", ident, "--passphrase-env", PASS_ENV) == 2
    assert "refusing to overwrite it (use --force)" in capsys.readouterr().err
    assert run("sign", model, "--identity", ident, "--passphrase-env", PASS_ENV, "--force") == 0
    assert run("verify-signature", model, "--public-key", public) == 0


def test_signed_outputs_are_never_overwritten_without_force(env, capsys):
    """Issue 10: no command overwrites without --force (sign, register, identity)."""
    model = env / "m.pt"
    torch.save({"w": torch.arange(3.0)}, model)
    ident = env / "owner.id"
    assert run("identity", "new", ident, "--passphrase-env", PASS_ENV) == 0
    first_identity = ident.read_bytes()
    assert run("identity", "new", ident, "--passphrase-env", PASS_ENV) == 2
    assert ident.read_bytes() == first_identity
    record = env / "release.json"
    record.write_text("keep me")
    args = ("register", model, "--commitment", "ab" * 32, "--identity", ident,
            "--passphrase-env", PASS_ENV, "--out", record)
    assert run(*args) == 2 and record.read_text() == "keep me"
    assert "release.json' exists; refusing to overwrite it (use --force)" in \
        capsys.readouterr().err
    assert run(*args, "--force") == 0 and "signature" in record.read_text()


def _signed_safetensors(env):
    import safetensors.torch
    model = env / "m.safetensors"
    safetensors.torch.save_file({"w": torch.arange(4.0)}, model)
    ident = env / "owner.id"
    assert run("identity", "new", ident, "--passphrase-env", PASS_ENV) == 0
    return model, ident


def test_stamp_refuses_a_registered_safetensors_file(env, capsys):
    """Issue 10: stamping after `register` broke the registration without a word."""
    model, ident = _signed_safetensors(env)
    record = env / "m.registration.json"
    assert run("register", model, "--commitment", "ab" * 32, "--out", record,
               "--identity", ident, "--passphrase-env", PASS_ENV) == 0
    before = model.read_bytes()
    capsys.readouterr()
    assert run("stamp", model, "--owner", "ACME", "--registration", record) == 2
    err = capsys.readouterr().err
    assert f"is registered ('{record}')" in err and "Stamp first, then sign and register" in err
    assert model.read_bytes() == before
    # --resign re-signs, it cannot re-register: still refused.
    assert run("stamp", model, "--owner", "ACME", "--registration", record, "--resign",
               "--identity", ident, "--passphrase-env", PASS_ENV) == 2
    assert model.read_bytes() == before
    assert run("evidence", "check", record, "--suspect", model) == 0
    assert run("stamp", model, "--owner", "ACME", "--registration", record, "--force") == 0
    assert f"'{record}' no longer matches the file: register it again" in \
        capsys.readouterr().err
    assert run("evidence", "check", record, "--suspect", model) == 1  # what --force broke


def test_stamp_help_says_unnamed_registrations_cannot_be_seen(capsys):
    with pytest.raises(SystemExit):
        run("stamp", "--help")
    out = " ".join(capsys.readouterr().out.split())
    assert "Stamp first, then sign and register" in out
    assert "records kept elsewhere cannot be seen, so name them" in out


def test_stamp_resign_signs_the_stamped_file_again(env, capsys):
    model, ident = _signed_safetensors(env)
    assert run("sign", model, "--identity", ident, "--passphrase-env", PASS_ENV) == 0
    public = Identity.load(ident, "cli pass phrase").public_key_hex
    assert run("stamp", model, "--owner", "ACME", "--resign", "--identity", ident,
               "--passphrase-env", PASS_ENV) == 0
    assert protect.read_stamp(model)["owner"] == "ACME"
    capsys.readouterr()
    assert run("verify-signature", model, "--public-key", public) == 0
    assert f"OK: {model} is signed by {public}" in capsys.readouterr().out


def test_stamp_resign_keeps_the_file_when_it_cannot_sign(env, capsys, monkeypatch):
    model, ident = _signed_safetensors(env)
    assert run("sign", model, "--identity", ident, "--passphrase-env", PASS_ENV) == 0
    before = model.read_bytes()
    signature = (env / "m.safetensors.mlguard-sig.json").read_bytes()
    capsys.readouterr()
    assert run("stamp", model, "--owner", "ACME", "--resign") == 2  # no --identity
    assert "--resign needs --identity" in capsys.readouterr().err
    monkeypatch.setenv(PASS_ENV, "wrong pass phrase")  # the identity cannot be opened
    assert run("stamp", model, "--owner", "ACME", "--resign", "--identity", ident,
               "--passphrase-env", PASS_ENV) == 2
    monkeypatch.setenv(PASS_ENV, "cli pass phrase")
    other = env / "other.id"
    assert run("identity", "new", other, "--passphrase-env", PASS_ENV) == 0
    capsys.readouterr()
    assert run("stamp", model, "--owner", "ACME", "--resign", "--identity", other,
               "--passphrase-env", PASS_ENV) == 2
    assert "was signed by another key" in capsys.readouterr().err
    assert model.read_bytes() == before
    assert (env / "m.safetensors.mlguard-sig.json").read_bytes() == signature


def test_stamp_goes_ahead_when_nothing_valid_would_break(env, capsys):
    """A signature of an older version of the file is broken already; a sidecar stamp
    (not safetensors) leaves the file's bytes, and so its signature, as they are."""
    model, ident = _signed_safetensors(env)
    assert run("sign", model, "--identity", ident, "--passphrase-env", PASS_ENV) == 0
    import safetensors.torch
    safetensors.torch.save_file({"w": torch.arange(5.0)}, model)  # a new version
    assert run("stamp", model, "--owner", "ACME") == 0
    pt = env / "m.pt"
    torch.save({"w": torch.arange(3.0)}, pt)
    assert run("sign", pt, "--identity", ident, "--passphrase-env", PASS_ENV) == 0
    assert run("stamp", pt, "--owner", "ACME") == 0
    public = Identity.load(ident, "cli pass phrase").public_key_hex
    assert run("verify-signature", pt, "--public-key", public) == 0
