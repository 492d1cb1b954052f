"""Weight keys name how their bits are read (docs/projection.md): keys made before the exact
read (bodies without a "projection" field) keep their bodies, commitments and verdicts."""

import torch
import pytest

from mlguard import Fingerprints, WeightKey, load_key
from mlguard.keys import keyfile
from mlguard.ops.keyed_projection import keyed_projection_sums, read_bits
from mlguard.reference import projection_matrix
from mlguard.verification import verify_weights, verify_weights_many

# A key body as the code before projection 2 wrote it, the commitment it gave, and the bits
# it read from OLD_WEIGHTS: all three computed with that code (commit a4cb527).
OLD_BODY = {"scheme": "weight", "secret": "11" * 32,
            "nonce": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "bits": 64, "targets": ["w"], "reduce": "none",
            "message": "0110111100011100001101111010100011111011000011010011011110110011"}
OLD_COMMITMENT = "14ea6f8b3a5b4a69e9ea95993bc264f07e63bcf5be7cfc89713d852d1753f7e7"
OLD_BITS = "0110110010011001101110110100001111010000101100111110111000001100"
OLD_MATCHES = 28
OLD_FINGERPRINT_COMMITMENT = "281c34a7731ad9b67c54dda16deb99e4bb1fb29d3cad704b1d58c5333eee62e3"


def old_weights():
    return {"w": torch.sin(torch.arange(5000, dtype=torch.float64) * 0.37).float().reshape(50, 100)}


def test_old_bodies_keep_their_commitment_and_read_as_before(tmp_path):
    key = WeightKey.from_body(dict(OLD_BODY))
    assert key.projection == 1
    assert key.to_body() == OLD_BODY and key.commitment() == OLD_COMMITMENT
    keyfile.write_key_file(tmp_path / "old.key", dict(OLD_BODY))
    assert load_key(tmp_path / "old.key").commitment() == OLD_COMMITMENT
    w = old_weights()["w"].reshape(1, -1)
    bits = read_bits(w, torch.tensor([key.seed]), 64, key.projection)[0, 0]
    assert "".join(str(int(b)) for b in bits) == OLD_BITS
    assert verify_weights(old_weights(), key).matches == OLD_MATCHES


def test_new_keys_name_projection_2_in_their_body(tmp_path):
    key = WeightKey.generate(bits=16, targets=("w",))
    assert key.projection == 2 and key.to_body()["projection"] == 2
    key.save(tmp_path / "new.key")
    loaded = load_key(tmp_path / "new.key")
    assert loaded == key and loaded.commitment() == key.commitment()
    legacy = WeightKey.generate(bits=16, targets=("w",), secret=key.secret, nonce=key.nonce,
                                projection=1)
    assert "projection" not in legacy.to_body() and legacy.commitment() != key.commitment()


@pytest.mark.parametrize("value", [0, 3, "2", True, None])
def test_bad_projection_in_a_body_is_refused(value):
    with pytest.raises(ValueError, match="projection must be one of"):
        WeightKey.from_body(dict(OLD_BODY, projection=value))


def test_the_definitions_differ_near_zero_so_the_version_matters():
    # Row 0 of R w is exactly 2^-17 / sqrt(M) > 0: 1 + 2^-17 - 1 in float32 (projection 1)
    # keeps it; projection 2 quantizes 2^-17 to 0 at this scale (amax = 1) and reads S = 0.
    M, seed = 256, 99
    s = projection_matrix(seed, 1, M)[0].sign()
    w = torch.zeros(1, M)
    w[0, 3], w[0, 10], w[0, 20] = s[3], s[10] * 2.0**-17, -s[20]
    assert read_bits(w, torch.tensor([seed]), 1, 1).item() is True
    assert read_bits(w, torch.tensor([seed]), 1, 2).item() is False
    assert keyed_projection_sums(w, torch.tensor([seed]), 1)[0].item() == 0


def test_verify_reads_each_key_by_its_own_definition():
    state = old_weights()
    old = WeightKey.from_body(dict(OLD_BODY))
    new = WeightKey.generate(bits=64, targets=("w",), secret=bytes.fromhex(OLD_BODY["secret"]),
                             nonce=bytes(32))
    both = verify_weights_many(state, [old, new, old])
    assert [v.matches for v in both] == [verify_weights(state, k).matches for k in (old, new, old)]
    assert both[0].matches == OLD_MATCHES
    seeds = torch.tensor([new.seed])
    expected = (keyed_projection_sums(state["w"].reshape(1, -1), seeds, 64)[0][0, 0] > 0).long()
    assert both[1].matches == int((expected == new.message_tensor()).sum())


def test_fingerprint_keys_stay_reproducible():
    # A registry made with mlguard 0.1 re-derives the same keys and commitments with
    # projection=1; new registries read exactly (projection 2) by default.
    old = Fingerprints(bytes(range(32)), bits=32, targets=("0.weight",), projection=1)
    assert old.key_for("acme").projection == 1
    assert old.key_for("acme").commitment() == OLD_FINGERPRINT_COMMITMENT
    new = Fingerprints(bytes(range(32)), bits=32, targets=("0.weight",))
    assert new.key_for("acme").projection == 2
    assert new.key_for("acme") == new.key_for("acme")
