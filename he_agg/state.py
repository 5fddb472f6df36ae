"""Durable state that must never be lost or raced: member approvals and releases, client rounds.

One SQLite database per member (or per enrolled client), opened in WAL mode with
``synchronous=FULL``. Every read-modify-write is one ``BEGIN IMMEDIATE`` transaction: the
write lock is taken *before* the read, so two processes on one file are serialised, and
the method returns only after ``COMMIT`` came back — i.e. after the write-ahead log was
fsynced. Nothing is kept in memory between calls: each call reads what is on disk under
its transaction, so there is no copy to go stale, and a failed commit leaves nothing
behind (the transaction is rolled back; retrying is safe).

* :class:`MemberState`: at most one statement approved per round (the signature is made
  and stored under the lock, before it can leave), distinct releases against a budget, and
  a small key-value area for other modules (enrollment registry, privacy accountant).
* :class:`ClientRounds`: a client's one upload per (epoch, round), stored so a retry
  re-sends the identical bytes instead of encrypting twice.

See docs/STATE.md for what "durable" means here (and what fsync does not promise).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import time
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar
from urllib.parse import quote

from .errors import (
    BudgetExhaustedError,
    ClientStateError,
    EquivocationError,
    InsecureFileError,
    ReplayError,
    StateError,
)

__all__ = [
    "BUSY_TIMEOUT_S",
    "MAX_ROUND_STEP",
    "ClientRounds",
    "MemberState",
    "StateInputError",
]

MAX_ROUND_STEP = 1 << 20  # a round id may be at most this far above the highest one used
MAX_ROUND_ID = (1 << 63) - 1  # SQLite's INTEGER
MAX_RELEASE_KEY_BYTES = 64
MAX_DIGEST_BYTES = 64
MAX_SIGNATURE_BYTES = 4096
MAX_VALUE_BYTES = 1 << 20
MAX_UPLOAD_BYTES = 1 << 29
MAX_NAME_CHARS = 256
OWNER_BYTES = 32
_OPEN_ATTEMPTS = 6
BUSY_TIMEOUT_S = 30.0  # generous: a loaded machine can stall an fsync for seconds
SCHEMA_VERSION = 1

_T = TypeVar("_T")
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

# SQLite primary result codes (sqlite3.h).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26


class StateInputError(StateError, ValueError):
    """An argument a state method cannot store: wrong type, empty, too long, negative."""


# -- opening the database ----------------------------------------------------------------


def _check_mode(path: Path, *, must_exist: bool) -> bool:
    """Refuse a symlink, a non-regular file or one accessible by group/others; True if it exists."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if must_exist:
            raise StateError(f"{path} does not exist") from None
        return False
    if stat.S_ISLNK(info.st_mode):
        raise InsecureFileError(f"{path} is a symbolic link; the state file must be a regular file")
    if not stat.S_ISREG(info.st_mode):
        raise StateError(f"{path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise InsecureFileError(
            f"{path} is accessible by group or others (mode {mode:03o}); run `chmod 600 {path}` and check "
            "who could have changed it"
        )
    return True


def _create_private(path: Path) -> None:
    """Create an empty 0600 file unless it exists (another process may win the race)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StateError(f"cannot create the state file {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _connect_file(path: Path, *, check: bool) -> sqlite3.Connection:
    if not _check_mode(path, must_exist=False):
        _create_private(path)
    _check_mode(path, must_exist=True)
    for suffix in ("-wal", "-shm"):
        sidecar = path.with_name(path.name + suffix)
        if os.path.lexists(sidecar):
            _check_mode(sidecar, must_exist=False)
    uri = "file:" + quote(os.path.abspath(path)) + "?mode=rw"  # never creates: we did, 0600
    conn = _guard(lambda: sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                          check_same_thread=False), path, "open")
    try:
        _guard(lambda: _configure(conn, path, check), path, "open")
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection, path: Path, check: bool) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    mode = _switch_to_wal(conn)
    if str(mode).lower() != "wal":
        raise StateError(f"{path}: SQLite could not switch to WAL mode (got {mode!r}); put the state file on a "
                         "local file system")
    conn.execute("PRAGMA synchronous = FULL")  # fsync the WAL at every commit
    conn.execute("PRAGMA fullfsync = ON")  # macOS: F_FULLFSYNC, i.e. flush the disk's write cache too
    conn.execute("PRAGMA checkpoint_fullfsync = ON")
    conn.execute("PRAGMA trusted_schema = OFF")
    if check and conn.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
        raise sqlite3.DatabaseError("database disk image is malformed (quick_check failed)")


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """``PRAGMA journal_mode = WAL``, retried until the busy timeout. The switch needs an
    exclusive lock, and when two processes open a new file at once SQLite can answer
    "database is locked" at once, without running its busy handler (seen in CI: two
    members opening one fresh state file)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.002
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.1)


def _connect_memory() -> sqlite3.Connection:
    return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)


def _guard(action: Callable[[], _T], where: Path | None, doing: str) -> _T:
    """Run ``action``; a sqlite3 error becomes a :class:`StateError` saying what to do."""
    try:
        return action()
    except sqlite3.Error as exc:
        raise _translate(exc, where, doing) from exc


def _translate(exc: sqlite3.Error, where: Path | None, doing: str) -> StateError:
    name = str(where) if where is not None else "the in-memory state"
    code = getattr(exc, "sqlite_errorcode", -1) & 0xFF
    text = str(exc).lower()
    if code in (_BUSY, _LOCKED) or "locked" in text or "busy" in text:
        advice = (f"another process held {name} locked for more than {BUSY_TIMEOUT_S:g} s; retry, or find the "
                  "process that keeps it locked")
    elif code == _FULL or "full" in text:
        advice = f"the disk holding {name} is full; nothing was recorded — free space and retry"
    elif code == _IOERR or "i/o" in text:
        advice = f"a disk error occurred on {name}; nothing was recorded — check the disk and retry"
    elif code in (_CORRUPT, _NOTADB) or "malformed" in text or "not a database" in text:
        advice = (f"{name} is corrupt or not a he_agg state file: restore it from a backup. Do not replace it "
                  "with a fresh one: a member that forgets its approvals and releases can equivocate or overspend")
    elif code == _READONLY or "readonly" in text or "read-only" in text:
        advice = f"{name} (or its directory) is read-only; make it writable by this user and retry"
    elif code == _CANTOPEN or "unable to open" in text:
        advice = f"cannot open {name} or its -wal/-shm files; check the path and the directory's permissions"
    else:
        advice = f"SQLite failed on {name}; nothing was recorded"
    return StateError(f"state {doing} failed ({exc}): {advice}")


# -- argument checks -----------------------------------------------------------------------


def _check_int(value: Any, what: str, *, upper: int = MAX_ROUND_ID) -> int:
    if type(value) is not int or not 0 <= value <= upper:
        raise StateInputError(f"{what} must be an int in [0, {upper}]")
    return value


def _check_bytes(value: Any, what: str, *, limit: int, allow_empty: bool = False) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise StateInputError(f"{what} must be bytes")
    value = bytes(value)
    if len(value) > limit or (not value and not allow_empty):
        raise StateInputError(f"{what} must be {'0' if allow_empty else '1'} to {limit} bytes, not {len(value)}")
    return value


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS:
        raise StateInputError(f"{what} must be a non-empty str of at most {MAX_NAME_CHARS} characters")
    return value


# -- the shared store ----------------------------------------------------------------------


class _Store:
    """One SQLite connection, its lock and the transaction discipline shared by both stores."""

    _KIND = ""
    _CHECK_ON_OPEN = True  # PRAGMA quick_check reads every page: cheap for small member files
    _SCHEMA: Sequence[str] = ()
    __slots__ = ("_conn", "_path", "_lock", "_depth", "_pid", "__weakref__")

    def __init__(self, conn: sqlite3.Connection, path: Path | None) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._lock = threading.RLock()
        self._depth = 0
        self._pid = os.getpid()

    @classmethod
    def _open(cls, path: str | os.PathLike[str] | None, owner: bytes) -> Any:
        if not isinstance(owner, (bytes, bytearray)) or len(owner) != OWNER_BYTES:
            raise StateInputError(f"owner must be {OWNER_BYTES} bytes")
        where = None if path is None else Path(path)
        for attempt in range(_OPEN_ATTEMPTS):
            conn = _connect_memory() if where is None else _connect_file(where, check=cls._CHECK_ON_OPEN)
            store = cls(conn, where)
            try:
                store._initialise(bytes(owner))
                return store
            except StateError as exc:
                conn.close()
                store._conn = None
                # Two processes creating one file at once can meet SQLite's deadlock guard
                # (SQLITE_BUSY without waiting, while one switches the new file to WAL): retry.
                if "locked" not in str(exc) or attempt == _OPEN_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * 2**attempt)
            except BaseException:
                conn.close()
                store._conn = None
                raise
        raise AssertionError("unreachable")

    def _initialise(self, owner: bytes) -> None:
        with self.transaction():
            self._run("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
            rows = dict(self._all("SELECT name, value FROM meta"))
            if not rows:
                for statement in self._SCHEMA:
                    self._run(statement)
                for name, value in (("kind", self._KIND.encode()), ("owner", owner),
                                    ("schema", str(SCHEMA_VERSION).encode())):
                    self._run("INSERT INTO meta VALUES (?, ?)", (name, value))
                return
            if rows.get("kind") != self._KIND.encode():
                raise StateError(f"{self._name()} is not a {self._KIND} state file (it holds "
                                 f"{bytes(rows.get('kind', b'?')).decode(errors='replace')!r}); check the path")
            if rows.get("schema") != str(SCHEMA_VERSION).encode():
                raise StateError(f"{self._name()} has state schema {rows.get('schema')!r}; this he_agg reads "
                                 f"schema {SCHEMA_VERSION}: upgrade he_agg")
            if not hmac.compare_digest(rows.get("owner", b""), owner):
                raise StateError(f"{self._name()} belongs to another owner (another committee, member or "
                                 "client); open the file made for this one")

    # -- transactions ----------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """An exclusive transaction (``BEGIN IMMEDIATE``): other processes wait for it.

        Calls inside it join it (nested blocks are savepoints: an exception rolls back its
        own block only). Everything in the outermost block becomes durable together when
        it exits; nothing may leave the process before that.
        """
        with self._lock:
            conn = self._connection()
            depth = self._depth
            statement = "BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT s{depth}"
            _guard(lambda: conn.execute(statement), self._path, "lock")
            self._depth = depth + 1
            try:
                yield
            except BaseException:
                self._depth = depth
                self._undo(conn, depth)
                raise
            self._depth = depth
            if depth == 0:
                self._commit(conn)
            else:
                _guard(lambda: conn.execute(f"RELEASE s{depth}"), self._path, "write")

    def _commit(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._undo(conn, 0)
            raise _translate(exc, self._path, "commit") from exc

    def _undo(self, conn: sqlite3.Connection, depth: int) -> None:
        try:
            if depth == 0:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            else:
                conn.execute(f"ROLLBACK TO s{depth}")
                conn.execute(f"RELEASE s{depth}")
        except sqlite3.Error:
            pass  # SQLite already rolled back (I/O and full-disk errors do); nothing was committed

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"{self._name()} is closed")
        if os.getpid() != self._pid:
            raise StateError(f"{self._name()} was opened by another process (fork); open it again in this one")
        return self._conn

    def _run(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            conn = self._connection()
            return _guard(lambda: conn.execute(sql, args), self._path, "write" if self._depth else "read")

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        with self._lock:
            return _guard(lambda: self._run(sql, args).fetchone(), self._path, "read")

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return _guard(lambda: self._run(sql, args).fetchall(), self._path, "read")

    def _name(self) -> str:
        return str(self._path) if self._path is not None else "the in-memory state"

    # -- lifetime and hygiene --------------------------------------------------------------

    def close(self) -> None:
        """Close the database (an open transaction is rolled back). Idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and os.getpid() == self._pid:
                if conn.in_transaction:
                    self._undo(conn, 0)
                conn.close()

    def __enter__(self: Any) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"{type(self).__name__}({self._name()}, {state})"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError(f"a {type(self).__name__} cannot be pickled; open the state file in each process")


# -- committee members ---------------------------------------------------------------------


class MemberState(_Store):
    """A committee member's approvals (one statement per round), releases and budget."""

    _KIND = "member"
    _SCHEMA = (
        "CREATE TABLE approvals (round_id INTEGER PRIMARY KEY, digest BLOB NOT NULL, signature BLOB NOT NULL)",
        "CREATE TABLE releases (key BLOB PRIMARY KEY, cost INTEGER NOT NULL CHECK (cost >= 0))",
        "CREATE TABLE kv (namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
        "PRIMARY KEY (namespace, key))",
    )
    __slots__ = ()

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None, *, owner: bytes) -> "MemberState":
        """Open (or create, 0600) the state file at ``path``; None → a private in-memory database.

        ``owner`` (32 bytes, e.g. BLAKE3 of committee id + member index) is recorded at
        creation; a file made for another owner raises :class:`StateError`, one accessible
        by group or others :class:`InsecureFileError`.
        """
        return cls._open(path, owner)

    # -- approvals -------------------------------------------------------------------------

    def approve(self, round_id: int, statement_digest: bytes, sign: Callable[[], bytes]) -> bytes:
        """The member's signature on ``statement_digest`` for ``round_id``; at most one statement per round.

        First time: ``sign()`` is called under the lock, and (round, digest, signature) is
        committed before the signature is returned. The same digest again returns the stored
        signature without calling ``sign``; another digest raises :class:`EquivocationError`.
        A round more than MAX_ROUND_STEP above the highest approved one raises
        :class:`ReplayError`; lower unused rounds are allowed.
        """
        round_id = _check_int(round_id, "round_id")
        digest = _check_bytes(statement_digest, "statement_digest", limit=MAX_DIGEST_BYTES)
        with self.transaction():
            row = self._one("SELECT digest, signature FROM approvals WHERE round_id = ?", (round_id,))
            if row is not None:
                if hmac.compare_digest(row[0], digest):
                    return bytes(row[1])
                raise EquivocationError(
                    f"round {round_id} was already approved for statement {bytes(row[0])[:6].hex()}…; "
                    f"refusing to approve a different statement ({digest[:6].hex()}…) for the same round"
                )
            highest = self._one("SELECT MAX(round_id) FROM approvals")[0]
            ceiling = (highest or 0) + MAX_ROUND_STEP
            if round_id > ceiling:
                raise ReplayError(
                    f"round {round_id} is more than {MAX_ROUND_STEP} rounds above the highest approved round "
                    f"({highest or 0}); refused so that a bogus round id cannot exhaust the round space"
                )
            signature = sign()
            signature = _check_bytes(signature, "the signature sign() returned", limit=MAX_SIGNATURE_BYTES)
            self._run("INSERT INTO approvals VALUES (?, ?, ?)", (round_id, digest, signature))
        return signature

    def approval(self, round_id: int) -> tuple[bytes, bytes] | None:
        """(statement digest, signature) approved for ``round_id``, or None."""
        round_id = _check_int(round_id, "round_id")
        row = self._one("SELECT digest, signature FROM approvals WHERE round_id = ?", (round_id,))
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def highest_round(self) -> int | None:
        """The highest round approved so far, or None."""
        value = self._one("SELECT MAX(round_id) FROM approvals")[0]
        return None if value is None else int(value)

    # -- releases and budget ---------------------------------------------------------------

    def release(self, key: bytes, cost: int, limit: int) -> bool:
        """Record the release ``key`` (≤ 64 bytes) costing ``cost`` units, before the share leaves.

        Returns False when ``key`` was already recorded (a retry: free), True when it was
        recorded now; raises :class:`BudgetExhaustedError` when spent + cost > limit.
        """
        key = _check_bytes(key, "the release key", limit=MAX_RELEASE_KEY_BYTES)
        cost = _check_int(cost, "cost")
        limit = _check_int(limit, "limit")
        with self.transaction():
            if self._one("SELECT 1 FROM releases WHERE key = ?", (key,)) is not None:
                return False
            spent = self._spent()
            if spent + cost > limit:
                raise BudgetExhaustedError(
                    f"budget exhausted: {spent} of {limit} units spent and this release costs {cost}; nothing "
                    "was released. Retries of earlier releases stay free; to release more the committee must "
                    "re-key (a new key share comes with a fresh budget)"
                )
            self._run("INSERT INTO releases VALUES (?, ?)", (key, cost))
        return True

    def _spent(self) -> int:
        return int(self._one("SELECT COALESCE(SUM(cost), 0) FROM releases")[0])

    def spent(self) -> int:
        """Units of budget spent by all recorded releases."""
        return self._spent()

    def released(self, key: bytes) -> bool:
        """Whether the release ``key`` is recorded."""
        key = _check_bytes(key, "the release key", limit=MAX_RELEASE_KEY_BYTES)
        return self._one("SELECT 1 FROM releases WHERE key = ?", (key,)) is not None

    # -- key-value area --------------------------------------------------------------------

    def get(self, namespace: str, key: str) -> bytes | None:
        """The value stored under (namespace, key), or None."""
        row = self._one("SELECT value FROM kv WHERE namespace = ? AND key = ?",
                        (_check_name(namespace, "namespace"), _check_name(key, "key")))
        return None if row is None else bytes(row[0])

    def put(self, namespace: str, key: str, value: bytes) -> None:
        """Store ``value`` (≤ 1 MiB) under (namespace, key), durably, replacing any earlier value."""
        args = (_check_name(namespace, "namespace"), _check_name(key, "key"),
                _check_bytes(value, "value", limit=MAX_VALUE_BYTES, allow_empty=True))
        with self.transaction():
            self._run("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", args)

    def delete(self, namespace: str, key: str) -> bool:
        """Remove (namespace, key); True if it existed."""
        args = (_check_name(namespace, "namespace"), _check_name(key, "key"))
        with self.transaction():
            return self._run("DELETE FROM kv WHERE namespace = ? AND key = ?", args).rowcount > 0

    def items(self, namespace: str) -> list[tuple[str, bytes]]:
        """All (key, value) pairs of ``namespace``, sorted by key."""
        rows = self._all("SELECT key, value FROM kv WHERE namespace = ? ORDER BY key",
                         (_check_name(namespace, "namespace"),))
        return [(str(k), bytes(v)) for k, v in rows]


# -- clients -------------------------------------------------------------------------------


class ClientRounds(_Store):
    """An enrolled client's record of the rounds it uploaded to.

    It must never encrypt twice under one round's public polynomial, and a retry must
    resend the identical bytes: :meth:`record` makes and stores the one upload of a round,
    :meth:`upload` returns it for a retry.
    """

    _KIND = "client"
    _CHECK_ON_OPEN = False  # uploads can be large; corrupt pages still fail on read
    _SCHEMA = (
        "CREATE TABLE uploads (epoch INTEGER NOT NULL, round_id INTEGER NOT NULL, data BLOB, "
        "PRIMARY KEY (epoch, round_id))",
    )
    __slots__ = ()

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None, *, owner: bytes) -> "ClientRounds":
        """Open (or create, 0600) the client's state file; None → a private in-memory database."""
        return cls._open(path, owner)

    def record(self, epoch: int, round_id: int, make: Callable[[], bytes]) -> bytes:
        """Make, durably store and return the one upload for (epoch, round_id).

        Raises :class:`ClientStateError` if the round already has an upload (resend it with
        :meth:`upload`), if ``round_id`` is not above every recorded round of the epoch, or
        if it jumps more than MAX_ROUND_STEP ahead. ``make()`` runs under the lock.
        """
        epoch = _check_int(epoch, "epoch")
        round_id = _check_int(round_id, "round_id")
        with self.transaction():
            if self._one("SELECT 1 FROM uploads WHERE epoch = ? AND round_id = ?", (epoch, round_id)) is not None:
                raise ClientStateError(
                    f"round {round_id} of epoch {epoch} already has an upload: resend it with upload(); "
                    "encrypting twice under one round's key is refused"
                )
            highest = self._one("SELECT MAX(round_id) FROM uploads WHERE epoch = ?", (epoch,))[0]
            if highest is not None and round_id <= highest:
                raise ClientStateError(
                    f"round {round_id} is not after round {highest}, the last one uploaded in epoch {epoch}: "
                    "rounds only go forward"
                )
            if round_id > (highest or 0) + MAX_ROUND_STEP:
                raise ClientStateError(
                    f"round {round_id} is more than {MAX_ROUND_STEP} rounds after round {highest or 0} of epoch "
                    f"{epoch}; refused so that a bogus round id cannot lock this client out"
                )
            data = _check_bytes(make(), "the upload make() returned", limit=MAX_UPLOAD_BYTES)
            self._run("INSERT INTO uploads VALUES (?, ?, ?)", (epoch, round_id, data))
        return data

    def upload(self, epoch: int, round_id: int) -> bytes | None:
        """The stored upload of (epoch, round_id) for a retry, or None (never made, or pruned)."""
        row = self._one("SELECT data FROM uploads WHERE epoch = ? AND round_id = ?",
                        (_check_int(epoch, "epoch"), _check_int(round_id, "round_id")))
        return None if row is None or row[0] is None else bytes(row[0])

    def highest_round(self, epoch: int) -> int | None:
        """The last round uploaded in ``epoch``, or None."""
        value = self._one("SELECT MAX(round_id) FROM uploads WHERE epoch = ?", (_check_int(epoch, "epoch"),))[0]
        return None if value is None else int(value)

    def prune(self, epoch: int, below_round: int) -> int:
        """Drop the stored bytes of rounds < ``below_round`` (they stay *used*); returns how many."""
        args = (_check_int(epoch, "epoch"), _check_int(below_round, "below_round"))
        with self.transaction():
            return self._run("UPDATE uploads SET data = NULL WHERE epoch = ? AND round_id < ? AND data IS NOT NULL",
                             args).rowcount
