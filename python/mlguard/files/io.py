"""Small file helpers shared by every capability: atomic writes, hashing, JSON files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

_READ_BLOCK = 1 << 20


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: int | None = None, *,
                 overwrite: bool = True) -> Iterator[Any]:
    """Yields a binary file that replaces `path` only if the block finishes without error.

    The temporary file lives in the destination folder (so the rename is atomic) and is
    removed on failure; readers never see a half-written file. `mode` (e.g. 0o600 for
    secrets) is set before any data is written. With overwrite=False an existing `path` is
    never replaced (FileExistsError naming it), checked before and again, atomically, at
    the end.
    """
    path = os.fspath(path)
    if not overwrite and os.path.lexists(path):
        raise _exists(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".mlguard-", suffix=".partial")
    except OSError as e:  # name the user's path, not our temporary file's
        raise type(e)(e.errno, f"cannot write {path!r}: {e.strerror}") from None
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        else:  # mkstemp's 0600 is right for secrets only; otherwise what open() would give
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _place_new(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _exists(path: str) -> FileExistsError:
    return FileExistsError(f"{path!r} already exists; refusing to overwrite it (pass "
                           "overwrite=True to replace it)")


def _place_new(tmp: str, path: str) -> None:
    """Renames `tmp` to `path` unless `path` exists, atomically (a hard link never clobbers)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists(path) from None
    except OSError:  # no hard links here: claim the name first, then replace the claim
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise _exists(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race with threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (any file size)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        block = bytearray(_READ_BLOCK)
        view = memoryview(block)
        while n := f.readinto(block):
            h.update(view[:n])
    return h.hexdigest()


def write_json(path: str | os.PathLike, obj: Any, mode: int | None = None, *,
               overwrite: bool = True) -> None:
    """Pretty JSON (sorted keys), written atomically (see atomic_write for `overwrite`)."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    with atomic_write(path, mode, overwrite=overwrite) as f:
        f.write(text.encode("utf-8"))


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parses a JSON file; any failure is a ValueError naming `what` and the path."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise ValueError(f"{what} {path!r} cannot be read ({e.strerror or e})") from e
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{what} {path!r} is not valid JSON ({e})") from e
