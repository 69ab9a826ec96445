"""The job queue: one SQLite table in WAL mode, every state change one short transaction.

States: queued -> running -> done | failed | cancelled; running -> queued when a server or worker stops mid-render
(the render's own checkpoints make the next run a resume). A job is claimed with one `UPDATE ... RETURNING` under
BEGIN IMMEDIATE, so two workers never run the same job; only the server that holds the data directory's lock
touches the queue, so at its start-up any 'running' row belongs to a dead process.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")
MAX_WORKER_DEATHS = 3  # a job that kills its worker this often (out of memory, a crash in a library) fails

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,       -- queue order
    id TEXT NOT NULL UNIQUE,                     -- random hex: the name in URLs and under jobs/
    kind TEXT NOT NULL CHECK (kind IN ('video', 'image')),
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    params TEXT NOT NULL,                        -- JSON: preset, overrides, style, input and output file names
    created REAL NOT NULL,
    started REAL,                                -- the first claim (a job that runs again keeps it)
    finished REAL,
    frames_done INTEGER NOT NULL DEFAULT 0,
    frames_total INTEGER,
    progress REAL NOT NULL DEFAULT 0,            -- 0..1, iterations included, for a smooth bar
    eta REAL,                                    -- seconds left, estimated from this run's frames
    preview_frame INTEGER,                       -- index of the frame in preview.jpg
    resumed INTEGER,                             -- frames an earlier run had finished when the latest run began
    error TEXT,
    cancel INTEGER NOT NULL DEFAULT 0,           -- asked to stop; the worker polls it
    worker TEXT,                                 -- the slot running it
    attempts INTEGER NOT NULL DEFAULT 0,         -- claims so far
    deaths INTEGER NOT NULL DEFAULT 0            -- workers that died while running it
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""


@dataclass(frozen=True)
class Job:
    """One row of the queue."""

    seq: int
    id: str
    kind: str
    state: str
    params: dict[str, Any]
    created: float
    started: float | None
    finished: float | None
    frames_done: int
    frames_total: int | None
    progress: float
    eta: float | None
    preview_frame: int | None
    resumed: int | None
    error: str | None
    cancel: bool
    worker: str | None
    attempts: int
    deaths: int

    @staticmethod
    def from_row(row: sqlite3.Row) -> Job:
        values = dict(row)
        values["params"] = json.loads(values["params"])
        values["cancel"] = bool(values["cancel"])
        return Job(**values)


class QueueFull(Exception):
    """A job was not added: `limit` jobs were already waiting."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} jobs are waiting")
        self.limit = limit


def new_job_id() -> str:
    """Unguessable, and safe as a directory name."""
    return uuid.uuid4().hex


def is_job_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


class JobQueue:
    """The jobs table; one connection per thread (sqlite3 connections are not shared between threads)."""

    @staticmethod
    def error_code(exc: sqlite3.OperationalError) -> int:
        """SQLite's primary result code of a failed statement (the primary code of an extended one; 0: none)."""
        return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF

    @staticmethod
    def is_busy(exc: sqlite3.OperationalError) -> bool:
        """The database stayed locked past the busy timeout (another program holding it): worth trying again."""
        return JobQueue.error_code(exc) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)

    def __init__(self, path: Path, busy_timeout: float = 30.0) -> None:
        """`busy_timeout`: seconds a write waits for another connection's lock before it fails."""
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._connection().executescript(_SCHEMA)  # idempotent; executescript runs outside any open transaction

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # autocommit mode (isolation_level=None): transactions are exactly the BEGIN ... COMMIT written here
            db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")  # readers (the web server) never wait for the worker's writes
            db.execute("PRAGMA synchronous=NORMAL")  # durable across a process kill; WAL keeps it consistent
            db.execute(f"PRAGMA busy_timeout={round(self.busy_timeout * 1000)}")
            self._local.db = db
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front, so a read-then-write never races another writer."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            # Only if one is still open: SQLite ends some failed transactions itself (a full disk), and a ROLLBACK
            # then would hide the real error; one left open (a COMMIT that failed) would keep the write lock.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # --- the web server's side ---

    def add(self, job_id: str, kind: str, params: dict[str, Any], limit: int | None = None) -> Job:
        """Queue a job; with a `limit`, only while fewer jobs than that are queued (else QueueFull, nothing added).

        The count and the insert share one write transaction, so uploads checked at the same time cannot together
        take the queue past its limit.
        """
        with self._write() as db:
            if limit is not None and self._count(db, "queued") >= limit:
                raise QueueFull(limit)
            row = db.execute("INSERT INTO jobs (id, kind, state, params, created) VALUES (?, ?, 'queued', ?, ?) "
                             "RETURNING *", (job_id, kind, json.dumps(params), time.time())).fetchone()
        return Job.from_row(row)

    def get(self, job_id: str) -> Job | None:
        row = self._connection().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def jobs(self, state: str | None = None, limit: int = 100, newest_first: bool = True) -> list[Job]:
        order = "DESC" if newest_first else "ASC"
        where, args = ("WHERE state = ?", [state]) if state else ("", [])
        order_by = "finished DESC, seq DESC" if state == "done" else f"seq {order}"
        rows = self._connection().execute(f"SELECT * FROM jobs {where} ORDER BY {order_by} LIMIT ?",
                                          (*args, limit)).fetchall()
        return [Job.from_row(r) for r in rows]

    def count(self, state: str) -> int:
        """Jobs in one state: a look at the (state, seq) index, cheap enough for every upload."""
        return self._count(self._connection(), state)

    @staticmethod
    def _count(db: sqlite3.Connection, state: str) -> int:
        return int(db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (state,)).fetchone()[0])

    def counts(self) -> dict[str, int]:
        rows = self._connection().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: 0 for state in STATES} | {r[0]: r[1] for r in rows}

    def cancel(self, job_id: str) -> Job | None:
        """A queued job is cancelled at once; a running one is flagged, and its worker stops it within a second."""
        with self._write() as db:
            db.execute("UPDATE jobs SET state = 'cancelled', finished = ?, eta = NULL "
                       "WHERE id = ? AND state = 'queued'", (time.time(), job_id))
            db.execute("UPDATE jobs SET cancel = 1 WHERE id = ? AND state = 'running'", (job_id,))
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def delete(self, job_id: str) -> str | None:
        """Remove a job that is not running; returns the state it had, 'running' (kept), or None (no such job)."""
        with self._write() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row[0] == "running":
                return row[0] if row else None
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return str(row[0])

    def recover(self) -> int:
        """At start-up: jobs left 'running' by a dead server go back to the queue (or end, if cancelled)."""
        with self._write() as db:
            db.execute("UPDATE jobs SET state = 'cancelled', finished = ?, worker = NULL, eta = NULL "
                       "WHERE state = 'running' AND cancel = 1", (time.time(),))
            return db.execute("UPDATE jobs SET state = 'queued', worker = NULL, eta = NULL "
                              "WHERE state = 'running'").rowcount

    def requeue_worker(self, worker: str, died: bool) -> None:
        """A worker process ended: its job runs again (resuming), unless it has killed workers too often.

        `died`: it ended by itself (crashed, killed by the kernel); not when the server stopped it.
        """
        with self._write() as db:
            if died:
                db.execute("UPDATE jobs SET deaths = deaths + 1 WHERE state = 'running' AND worker = ?", (worker,))
            db.execute("UPDATE jobs SET state = 'failed', finished = ?, worker = NULL, eta = NULL, "
                       "error = 'the worker process died on this job ' || deaths || ' times (out of memory?)' "
                       "WHERE state = 'running' AND worker = ? AND deaths >= ?",
                       (time.time(), worker, MAX_WORKER_DEATHS))
            db.execute("UPDATE jobs SET state = CASE cancel WHEN 1 THEN 'cancelled' ELSE 'queued' END, "
                       "worker = NULL, eta = NULL WHERE state = 'running' AND worker = ?", (worker,))

    def running_on(self, worker: str) -> Job | None:
        """The job `worker` runs, for the supervisor's watchdog: a look at the few running rows."""
        row = self._connection().execute("SELECT * FROM jobs WHERE state = 'running' AND worker = ?",
                                         (worker,)).fetchone()
        return Job.from_row(row) if row else None

    # --- the worker's side ---

    def claim(self, worker: str) -> Job | None:
        """The oldest queued job, now running on `worker`; None when the queue is empty. A job that runs again (its
        worker or the server stopped) keeps the time it first started."""
        with self._write() as db:
            row = db.execute("UPDATE jobs SET state = 'running', worker = ?, started = COALESCE(started, ?), "
                             "attempts = attempts + 1, "
                             "error = NULL WHERE seq = (SELECT seq FROM jobs WHERE state = 'queued' "
                             "ORDER BY seq LIMIT 1) RETURNING *", (worker, time.time())).fetchone()
        return Job.from_row(row) if row else None

    def report(self, job_id: str, frames_done: int, frames_total: int | None, progress: float, eta: float | None,
               preview_frame: int | None, resumed: int | None) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET frames_done = ?, frames_total = ?, progress = ?, eta = ?, "
                       "preview_frame = COALESCE(?, preview_frame), resumed = COALESCE(?, resumed) "
                       "WHERE id = ? AND state = 'running'",
                       (frames_done, frames_total, progress, eta, preview_frame, resumed, job_id))

    def cancel_requested(self, job_id: str) -> bool:
        row = self._connection().execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row is None or bool(row[0])  # a row deleted under us counts as cancelled

    def finish(self, job_id: str, state: str, error: str | None = None) -> None:
        """End a running job: done, failed (with its reason), cancelled, or back to queued (the server stops)."""
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        final = state in FINAL_STATES
        with self._write() as db:
            # A done job made all of its frames, whatever the last report said (a server killed between the
            # finished video and its last report finishes it from its result).
            db.execute("UPDATE jobs SET state = ?, error = ?, worker = NULL, eta = NULL, finished = ?, "
                       "progress = CASE WHEN ? = 'done' THEN 1 ELSE progress END, "
                       "frames_done = CASE WHEN ? = 'done' AND frames_total IS NOT NULL THEN frames_total "
                       "ELSE frames_done END "
                       "WHERE id = ? AND state = 'running'",
                       (state, error, time.time() if final else None, state, state, job_id))
