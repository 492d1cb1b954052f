"""Model-file protection: encryption that decrypts only into memory, detached signatures, and
copyright/licence stamps.

    from mlguard import protect
    protect.encrypt_file("model.safetensors", "model.mlgenc", passphrase=pw)
    state = protect.load_encrypted("model.mlgenc", passphrase=pw)   # nothing written to disk
    sig = protect.sign_file("model.safetensors", identity)
    protect.verify_file("model.safetensors", sig, identity.public_key_hex)
    protect.stamp("model.safetensors", owner="ACME", license="CC-BY-NC-4.0")
"""

from ..files.container import DecryptionError, new_file_key
from ..files.io import file_sha256
from ..files.state_dict import load_state_dict_file
from .encrypted import decrypt_bytes, decrypt_file, encrypt_file, load_encrypted
from .signing import file_signature_problems, sign_file, verify_file
from .stamp import read_stamp, stamp

__all__ = ["encrypt_file", "decrypt_file", "decrypt_bytes", "load_encrypted", "DecryptionError",
           "new_file_key", "sign_file", "verify_file", "file_signature_problems", "stamp",
           "read_stamp", "file_sha256", "load_state_dict_file"]
