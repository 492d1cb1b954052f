"""The scan journal: an SQLite database of finished (file, key) rows, for resuming.

One row per (absolute path, key commitment), holding the file's stamp when it was read and
the row as JSON (before the scan-wide correction, which is recomputed at the end). All rows
of a file are committed in one transaction as soon as the file is checked, in WAL mode: a
scan killed at any point (SIGKILL) leaves only whole files behind, and a rerun with the same
journal skips every file whose rows are all there for the current keys and whose stamp is
unchanged. With synchronous=NORMAL a power loss can drop the last few commits (never corrupt
the database); those files are simply checked again.

The stamp is (size, mtime, ctime, inode, device). Size and mtime alone are not enough: a
copy of another file of the same size with its mtime reset (`touch -d`, `cp -p`, `tar`,
`rsync -t`) keeps both, and the journal would report the old file's rows for new bytes.
No user call sets ctime (every write, rename or utime sets it to now) and a replacement by
rename is a new inode, so any such change makes the file's rows be redone. Rows journaled
before these columns existed have NULLs there, match no stamp and are redone.

The journal also records the scan settings that change results (architecture, precision,
TorchScript trust); reusing it with different settings is refused.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable

from .rows import COLUMNS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    path TEXT NOT NULL,
    commitment TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    file_sha256 TEXT,
    row TEXT NOT NULL,
    ctime_ns INTEGER,
    inode INTEGER,
    device INTEGER,
    PRIMARY KEY (path, commitment)
);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


# Added after the first release: an older journal gains them (NULL, so its rows are redone).
_STAMP_COLUMNS = ("ctime_ns", "inode", "device")

Stamp = tuple[int, int, int, int, int]


def file_stamp(path: str) -> Stamp:
    """(size, mtime_ns, ctime_ns, inode, device): what tells the journal a file has not
    changed since it was read (see the module docstring)."""
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, _int64(st.st_ino), _int64(st.st_dev))


def _int64(value: int) -> int:
    """An unsigned 64-bit inode or device number as the signed integer SQLite stores."""
    return value - (1 << 64) if value >= 1 << 63 else value


class Journal:
    """Rows already computed, by (path, commitment); see the module docstring."""

    def __init__(self, path: str | os.PathLike, settings: dict):
        self.path = os.fspath(path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)  # explicit transactions
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            have = {r[1] for r in self.db.execute("PRAGMA table_info(rows)")}
            for column in _STAMP_COLUMNS:
                if column not in have:
                    self.db.execute(f"ALTER TABLE rows ADD COLUMN {column} INTEGER")
        except sqlite3.DatabaseError as e:
            raise ValueError(f"journal '{self.path}' is not a usable SQLite database: {e}") \
                from None
        self._check_settings(settings)

    def _check_settings(self, settings: dict) -> None:
        wanted = {k: json.dumps(v, sort_keys=True) for k, v in settings.items()}
        stored = dict(self.db.execute("SELECT name, value FROM settings"))
        changed = sorted(k for k in wanted.keys() & stored.keys() if wanted[k] != stored[k])
        if changed:
            raise ValueError(
                f"journal '{self.path}' was written by a scan with other settings "
                f"({', '.join(f'{k}={stored[k]}' for k in changed)}); use a new journal file")
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR IGNORE INTO settings VALUES (?, ?)", wanted.items())

    def done(self) -> dict[tuple[str, tuple], set[str]]:
        """(path, stamp) -> commitments done, for every file in the journal (an old row's
        stamp holds None, which no file's stamp equals)."""
        out: dict[tuple[str, tuple], set[str]] = {}
        for path, commitment, *stamp in self.db.execute(
                "SELECT path, commitment, size, mtime_ns, ctime_ns, inode, device FROM rows"):
            out.setdefault((path, tuple(stamp)), set()).add(commitment)
        return out

    def rows(self, paths: Iterable[str], commitments: Iterable[str]) -> list[dict]:
        """The stored rows for these paths and key commitments."""
        paths, commitments = set(paths), set(commitments)
        found = self.db.execute("SELECT path, commitment, row FROM rows")
        # Columns added since a row was journaled (weights_sha256) read as None.
        return [{**dict.fromkeys(COLUMNS), **json.loads(row)} for path, commitment, row in found
                if path in paths and commitment in commitments]

    def record(self, path: str, stamp: Stamp, rows: list[dict]) -> None:
        """Commits all rows of one file at once (replacing rows from an older version of it)."""
        size, mtime, ctime, inode, device = stamp
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "DELETE FROM rows WHERE path = ? AND NOT (size = ? AND mtime_ns = ? AND "
                "ctime_ns IS ? AND inode IS ? AND device IS ?)", (path, *stamp))
            self.db.executemany(
                "INSERT OR REPLACE INTO rows (path, commitment, size, mtime_ns, file_sha256, "
                "row, ctime_ns, inode, device) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(path, r["commitment"], size, mtime, r["file_sha256"],
                  json.dumps(r, allow_nan=False), ctime, inode, device) for r in rows])

    def close(self) -> None:
        self.db.close()
