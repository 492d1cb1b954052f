"""What every key type shares: its commitment and id, the name people see, a relabelled
copy and its file. A key type is a frozen dataclass with `label` and `path` metadata fields
(keys.metadata) that subclasses Key and gives `to_body()`, its scheme-specific body."""

from __future__ import annotations

import os
from functools import cached_property

from . import keyfile
from .metadata import display_name, file_meta, with_metadata


class Key:
    """Shared methods of TriggerKey and WeightKey (everything here reads `to_body()`)."""

    def to_body(self) -> dict:
        raise NotImplementedError

    def commitment(self) -> str:
        """Hex SHA-256 commitment to the whole key; safe to publish (hides the secret)."""
        return self._commitment

    @cached_property
    def _commitment(self) -> str:
        # Computed once: the body of an image-carrying key is hundreds of kB of JSON.
        return keyfile.commitment(self.to_body())

    @property
    def key_id(self) -> str:
        return self.commitment()[:16]

    @property
    def display_name(self) -> str:
        """The label, else the key file's stem, else the 16-hex key id."""
        return display_name(self.label, self.path, self.key_id)

    def with_label(self, label: str | None):
        """This key with another label (None removes it); the commitment is unchanged."""
        return with_metadata(self, label=label)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Writes the key file (mode 0600: it holds the secret). Format: mlguard.keys.keyfile.

        An existing file is never replaced unless `overwrite=True`: it may hold the only copy
        of another secret."""
        keyfile.write_key_file(path, self.to_body(), overwrite=overwrite, meta=file_meta(self))
