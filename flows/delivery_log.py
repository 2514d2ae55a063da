"""The receiver's delivery log: which deliveries (GitHub ids, Event Grid ids) were already turned into events.

Kept in SQLite under the state folder, so the gunicorn workers share it and a restart keeps it.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


class DeliveryLog:
    """Delivery ids seen, in SQLite (safe across gunicorn workers), the newest `keep` kept.

    `claim` marks an id pending; `confirm` marks it done after the event was taken; `release`
    forgets it after a failed emission. A pending claim older than `stale` seconds (a worker died)
    can be claimed again.
    """

    def __init__(self, path: Path, keep: int = 10_000, stale: float = 60.0) -> None:
        self.path, self.keep, self.stale = Path(path), keep, stale
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS deliveries (key TEXT PRIMARY KEY, state TEXT NOT NULL, at REAL NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def claim(self, key: str) -> str:
        """'new' when this caller now owns `key`, else 'done' or 'pending' (another worker has it)."""
        now = time.time()
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time across processes: check-and-set is atomic
            row = db.execute("SELECT state, at FROM deliveries WHERE key = ?", (key,)).fetchone()
            if row and (row[0] == "done" or now - row[1] < self.stale):
                db.execute("COMMIT")
                return row[0]
            db.execute("INSERT OR REPLACE INTO deliveries (key, state, at) VALUES (?, 'pending', ?)", (key, now))
            db.execute("DELETE FROM deliveries WHERE key IN (SELECT key FROM deliveries ORDER BY at DESC LIMIT -1 OFFSET ?)", (self.keep,))
            db.execute("COMMIT")
            return "new"
        finally:
            db.close()

    def confirm(self, key: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE deliveries SET state = 'done', at = ? WHERE key = ?", (time.time(), key))

    def release(self, key: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM deliveries WHERE key = ? AND state = 'pending'", (key,))
