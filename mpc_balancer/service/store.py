"""The service's state in SQLite (stdlib): checkpoint, decisions, pending reports, ticks, audit log.

One database file, WAL journal, ``synchronous=NORMAL``: a committed transaction survives
the process being killed (``kill -9``); only an operating-system crash or power loss can take
back the last ones (syncing every commit halved the reports a loaded service took per second).
A tick's decision, the Balancer's checkpoint taken right after
it, the tick's aggregate and the removal of its (now consumed) node reports are one transaction:
after a crash the database holds either all of them or none, so a restart restores exactly the
state that produced the last stored decision. Node reports are stored as they are accepted, so
the reports of a tick still open when the process dies are aggregated after the restart.

Tables: ``meta`` (key/value: the config fingerprint, the active override, the history cut of a
``source = "store"`` history), ``decisions`` (every published decision, by version),
``checkpoint`` (one row), ``reports`` (accepted reports of open ticks), ``ticks`` (each stepped
tick's time, QPS and report count: the ``store`` history source), ``audit`` (override log).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (version INTEGER PRIMARY KEY, tick_time TEXT, status TEXT NOT NULL,
    issued_at TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoint (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL,
    tick_time TEXT NOT NULL, written_at REAL NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reports (tick_time TEXT NOT NULL, node TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (tick_time, node));
CREATE TABLE IF NOT EXISTS ticks (tick_time TEXT PRIMARY KEY, qps REAL NOT NULL, reports INTEGER NOT NULL,
    version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, action TEXT NOT NULL,
    by TEXT NOT NULL, lam TEXT, until TEXT, reason TEXT NOT NULL);
"""


class StateStore:
    """SQLite access for one service process (one connection, serialised by a lock)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def open(self) -> StateStore:
        """Open (or create) the database in WAL mode; returns ``self``."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a parent that is a file, or not writable
            raise ValueError(f"state_db {self.path}: cannot create its directory {self.path.parent} "
                             f"({type(e).__name__}: {e.strerror or e})") from None
        try:
            self.db_ = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.db_.execute("PRAGMA journal_mode=WAL")
            self.db_.execute("PRAGMA synchronous=NORMAL")
            self.db_.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise ValueError(f"state_db {self.path}: cannot open the database ({e})") from None
        self.lock_ = threading.Lock()
        return self

    def close(self) -> None:
        """Close the database."""
        with self.lock_:
            self.db_.close()

    def _one(self, sql: str, args=()):
        with self.lock_:
            return self.db_.execute(sql, args).fetchone()

    def _all(self, sql: str, args=()):
        with self.lock_:
            return self.db_.execute(sql, args).fetchall()

    def _transaction(self, statements: list[tuple[str, tuple]]) -> None:
        with self.lock_:
            self.db_.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self.db_.execute(sql, args)
            except BaseException:
                self.db_.execute("ROLLBACK")
                raise
            self.db_.execute("COMMIT")

    # -- meta ---------------------------------------------------------------------------------
    def get_meta(self, key: str):
        """The JSON value stored under ``key`` (None if absent)."""
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value) -> None:
        """Store a JSON value under ``key``."""
        self._transaction([("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))])

    def check_fingerprint(self, fingerprint: dict) -> None:
        """Bind the database to one configuration: a checkpoint is only valid for the Balancer it came from."""
        stored = self.get_meta("fingerprint")
        fp = json.loads(json.dumps(fingerprint))
        if stored is None:
            self.set_meta("fingerprint", fp)
        elif stored != fp:
            diff = sorted(k for k in set(fp) | set(stored) if fp.get(k) != stored.get(k))
            raise ValueError(f"state_db {self.path} was written by a service configured differently ({', '.join(diff)} "
                             "changed): use another state_db, or start with --refit to discard its checkpoint")

    # -- decisions and checkpoints --------------------------------------------------------------
    def last_decision(self) -> dict | None:
        """The latest stored decision (None if none)."""
        row = self._one("SELECT body FROM decisions ORDER BY version DESC LIMIT 1")
        return None if row is None else json.loads(row[0])

    def decisions(self, after: int = 0, limit: int = 100) -> list[dict]:
        """Decisions with version above ``after``, oldest first, at most ``limit``."""
        rows = self._all("SELECT body FROM decisions WHERE version > ? ORDER BY version LIMIT ?", (after, limit))
        return [json.loads(r[0]) for r in rows]

    @staticmethod
    def _decision_row(body: dict) -> tuple[str, tuple]:
        return ("INSERT INTO decisions (version, tick_time, status, issued_at, body) VALUES (?, ?, ?, ?, ?)",
                (body["version"], body["time"], body["status"], body["issued_at"], json.dumps(body)))

    def add_decision(self, body: dict) -> None:
        """Store one decision in its own transaction."""
        self._transaction([self._decision_row(body)])

    def commit_step(self, body: dict, state: dict, qps: float, n_reports: int) -> None:
        """A stepped tick: decision, checkpoint, tick aggregate and report clean-up in one transaction."""
        t = body["time"]
        self._transaction([
            self._decision_row(body),
            ("INSERT OR REPLACE INTO checkpoint (id, version, tick_time, written_at, state) VALUES (1, ?, ?, ?, ?)",
             (body["version"], t, time.time(), json.dumps(state))),
            ("INSERT OR REPLACE INTO ticks (tick_time, qps, reports, version) VALUES (?, ?, ?, ?)",
             (t, qps, n_reports, body["version"])),
            ("DELETE FROM reports WHERE tick_time <= ?", (t,)),
        ])

    def checkpoint(self) -> tuple[dict, str, float] | None:
        """(Balancer state, tick time, wall time written) of the last stepped tick, or None."""
        row = self._one("SELECT state, tick_time, written_at FROM checkpoint WHERE id = 1")
        return None if row is None else (json.loads(row[0]), row[1], row[2])

    def discard_checkpoint(self) -> None:
        """Drop the checkpoint and what binds it (fingerprint, history end): the next start refits."""
        self._transaction([("DELETE FROM checkpoint", ()), ("DELETE FROM meta WHERE key IN ('fingerprint', 'history_until')", ())])

    # -- reports and ticks ----------------------------------------------------------------------
    def add_report(self, tick_time: str, node: str, body: dict) -> None:
        """Store a node's report for the open tick ``tick_time`` (replacing that node's earlier one)."""
        self._transaction([("INSERT OR REPLACE INTO reports (tick_time, node, body) VALUES (?, ?, ?)",
                            (tick_time, node, json.dumps(body)))])

    def pending_reports(self) -> list[dict]:
        """The reports of ticks not stepped yet, by tick time and node (restored after a restart)."""
        return [json.loads(r[0]) for r in self._all("SELECT body FROM reports ORDER BY tick_time, node")]

    def ticks(self, until: str | None = None) -> list[tuple[str, float]]:
        """(time, qps) of the stepped ticks, in time order; with ``until``, those up to it (inclusive)."""
        if until is None:
            return [(t, q) for t, q in self._all("SELECT tick_time, qps FROM ticks ORDER BY tick_time")]
        return [(t, q) for t, q in self._all("SELECT tick_time, qps FROM ticks WHERE tick_time <= ? ORDER BY tick_time",
                                             (until,))]

    # -- overrides ------------------------------------------------------------------------------
    def audit(self, at: str, action: str, by: str, lam: dict | None, until: str | None, reason: str,
              override: dict | None) -> None:
        """Record an override action and set (or clear) the active override, in one transaction."""
        self._transaction([
            ("INSERT INTO audit (at, action, by, lam, until, reason) VALUES (?, ?, ?, ?, ?, ?)",
             (at, action, by, None if lam is None else json.dumps(lam), until, reason)),
            ("INSERT OR REPLACE INTO meta (key, value) VALUES ('override', ?)", (json.dumps(override),)),
        ])

    def audit_log(self, limit: int = 100) -> list[dict]:
        """The last ``limit`` audit entries, newest first."""
        rows = self._all("SELECT id, at, action, by, lam, until, reason FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [{"id": i, "at": at, "action": a, "by": by, "lam": None if lam is None else json.loads(lam), "until": u,
                 "reason": r} for i, at, a, by, lam, u, r in rows]
