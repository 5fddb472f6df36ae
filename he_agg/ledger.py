"""Crash-safe aggregation rounds: an SQLite ledger of accepted uploads plus an atomic checkpoint of Σc0.

A round kept in ``state_dir`` (``EnrolledAggregator(..., state_dir=PATH)``) is three files:

* ``ledger.sqlite`` — WAL, ``synchronous=FULL`` (the discipline of :mod:`he_agg.state`):
  the round's identity (committee, parameters, epoch, round, layout, minimum clients),
  one row per accepted upload (arrival position, client id, ticket bytes, c0 digest, and
  a hash chain over all rows so far), and, once issued, the request's active sets;
* ``accumulator.ckpt`` — Σc0 together with the ledger position P it covers and the chain
  value of row P, replaced atomically (temporary file, fsync, rename, fsync directory)
  and sealed by a BLAKE3 checksum: a truncated or altered file raises :class:`StateError`,
  it is never used;
* ``lock`` — an exclusive ``flock`` held while the round is open (one process per round);
* ``uploads/`` — public-key rounds that retain submissions (members verify the aggregate):
  each accepted upload's bytes, named by digest, written before its row.

Both aggregators use it: ``EnrolledAggregator`` checkpoints Σc0 and records tickets;
the public-key ``Aggregator`` checkpoints the full (c0, c1) sum and records
digest ‖ client id per row (the request lists contributions in arrival order, so a
resumed round issues the same bytes).

Design: **checkpoint on every add.** :meth:`RoundStore.record` commits the upload's ledger
row, then writes the checkpoint for the new position; ``add`` returns (acknowledges) only
after both. On reopen the checkpoint's position P is authoritative: rows 1…P must reproduce
its chain value, and rows after P (committed, checkpoint not written: never acknowledged)
are deleted, so their clients may resubmit and are counted once. An acknowledged client
that resubmits is refused (``DuplicateContributionError``). The alternative — each upload
stored in a content-addressed file, the accumulator checkpointed every K uploads and the
tail re-added on reopen — writes about as many bytes per add (an upload is as large as
Σc0, packed ones ~0.8x) and adds a replay path and up to K uploads of disk; see
docs/STATE.md for the measured figures. Disk: one checkpoint (plus its temporary copy
during a write); memory: nothing beyond the accumulator (written from its own buffer).

What fsync guarantees (docs/STATE.md, "What fsync does not guarantee"): after ``add``
returned, the row and the checkpoint survive ``kill -9`` and an operating-system crash,
and survive power loss only if the disk honours cache flushes — a drive or controller
that acknowledges a flush from a volatile write cache can lose the last acknowledged
uploads (which would then be refused by no one and may be resubmitted).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import numpy as np

from .errors import DuplicateContributionError, StateError
from .hazmat.files import _fsync_directory, _unlink_quietly, remove_stale_temporaries
from .state import _Store

__all__ = ["CHECKPOINT_NAME", "LEDGER_NAME", "Recovered", "RoundStore", "read_checkpoint", "write_checkpoint"]

LEDGER_NAME = "ledger.sqlite"
CHECKPOINT_NAME = "accumulator.ckpt"
LOCK_NAME = "lock"
UPLOADS_NAME = "uploads"
CHECKPOINT_MAGIC = b"HEAGCKP\x01"
_HEADER = struct.Struct("<8s32sQ32sIIII")  # magic, round tag, position, chain, count, polys, nmod, n
_TRAILER = 32  # BLAKE3(header ‖ body)
_CHAIN_DOMAIN = b"he_agg.ledger.chain.v1\0"
_TAG_DOMAIN = b"he_agg.ledger.round.v1\0"
_OWNER_DOMAIN = b"he_agg.ledger.owner.v1\0"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

#: Test hook: called with a stage name inside the durability windows ("row-committed",
#: "checkpoint-written", "checkpoint-renamed"), so a crash test can make kills land there.
_pause: Callable[[str], None] | None = None


def _stage(name: str) -> None:
    if _pause is not None:
        _pause(name)


def round_tag(committee_id: bytes, fingerprint: bytes, epoch: int, round_id: int) -> bytes:
    """32 bytes naming one round of one committee under one parameter set."""
    return blake3.blake3(_TAG_DOMAIN + struct.pack("<QQH", epoch, round_id, len(committee_id)) + committee_id
                         + fingerprint).digest()


def chain_next(previous: bytes, position: int, client_id: str, ticket: bytes) -> bytes:
    """The ledger's hash chain: row P's value binds every row up to P, in order."""
    who = client_id.encode()
    return blake3.blake3(_CHAIN_DOMAIN + previous + struct.pack("<QHI", position, len(who), len(ticket)) + who
                         + ticket).digest()


GENESIS = bytes(32)


# -- the checkpoint file ---------------------------------------------------------------------


def write_checkpoint(path: Path, tag: bytes, position: int, chain: bytes, acc: np.ndarray) -> None:
    """Atomically replace ``path`` with (tag, position, chain, acc) and its checksum; fsynced.

    ``acc`` (uint64, C-contiguous, 4-D) is written from its own buffer (no copy).
    Raises :class:`StateError` if it cannot be written; the previous checkpoint is then intact.
    """
    if acc.dtype != np.uint64 or acc.ndim != 4 or not acc.flags.c_contiguous:
        raise StateError("the accumulator to checkpoint must be a C-contiguous 4-D uint64 array")
    header = _HEADER.pack(CHECKPOINT_MAGIC, tag, position, chain, *acc.shape)
    body = memoryview(acc).cast("B")
    hasher = blake3.blake3(header)
    hasher.update(body)
    directory = path.parent
    remove_stale_temporaries(path)
    tmp = directory / f".{path.name}.tmp-{os.getpid()}-{os.urandom(6).hex()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o600)
        try:
            for part in (memoryview(header), body, memoryview(hasher.digest())):
                while part:
                    part = part[os.write(fd, part):]
            _stage("checkpoint-written")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _stage("checkpoint-renamed")
        _fsync_directory(directory)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise StateError(f"could not write the checkpoint {path} ({exc.strerror or exc}); the previous one is "
                         "intact — free disk space and retry") from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise


def read_checkpoint(path: Path, tag: bytes, shape: tuple[int, int, int, int]) -> tuple[int, bytes, np.ndarray]:
    """(position, chain, acc) from a checkpoint of this round and shape; :class:`StateError` if it is
    missing, truncated, altered, of another round or of another shape."""
    remove_stale_temporaries(path)
    expected = _HEADER.size + int(np.prod(shape)) * 8 + _TRAILER
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
    except OSError as exc:
        raise StateError(f"cannot open the checkpoint {path}: {exc.strerror}") from exc
    try:
        size = os.fstat(fd).st_size
        if size != expected:
            raise StateError(f"the checkpoint {path} has {size} bytes, not {expected}: truncated or not this "
                             "round's; restore the state directory from a backup or start the round again")
        header = _read_exact(fd, _HEADER.size, path)
        acc = np.empty(shape, dtype=np.uint64)
        view = memoryview(acc).cast("B")
        while view:
            got = os.readv(fd, [view])
            if got == 0:
                raise StateError(f"the checkpoint {path} shrank while being read")
            view = view[got:]
        trailer = _read_exact(fd, _TRAILER, path)
    except OSError as exc:
        raise StateError(f"cannot read the checkpoint {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    hasher = blake3.blake3(header)
    hasher.update(memoryview(acc).cast("B"))
    if hasher.digest() != trailer:
        raise StateError(f"the checkpoint {path} is corrupt (checksum mismatch); it was not used")
    magic, got_tag, position, chain, *got_shape = _HEADER.unpack(header)
    if magic != CHECKPOINT_MAGIC or got_tag != tag or tuple(got_shape) != tuple(shape):
        raise StateError(f"the checkpoint {path} belongs to another round or accumulator shape")
    return position, chain, acc


def _read_exact(fd: int, count: int, path: Path) -> bytes:
    data = b""
    while len(data) < count:
        chunk = os.read(fd, count - len(data))
        if not chunk:
            raise StateError(f"the checkpoint {path} is truncated")
        data += chunk
    return data


# -- the ledger ---------------------------------------------------------------------------------


class _Ledger(_Store):
    """The SQLite side: round identity and one row per accepted upload."""

    _KIND = "round"
    _SCHEMA = (
        "CREATE TABLE round (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
        "CREATE TABLE contributions (position INTEGER PRIMARY KEY CHECK (position >= 1), "
        "client_id TEXT NOT NULL UNIQUE, ticket BLOB NOT NULL, digest BLOB NOT NULL, chain BLOB NOT NULL)",
    )
    __slots__ = ()

    def get(self, name: str) -> bytes | None:
        row = self._one("SELECT value FROM round WHERE name = ?", (name,))
        return None if row is None else bytes(row[0])

    def put(self, name: str, value: bytes) -> None:
        self._run("INSERT OR REPLACE INTO round VALUES (?, ?)", (name, value))

    def drop(self, name: str) -> None:
        self._run("DELETE FROM round WHERE name = ?", (name,))


@dataclass(frozen=True)
class Recovered:
    """What a reopened round resumes from."""

    layout: str | None  # the round's layout (JSON), once known
    tickets: tuple[bytes, ...]  # the acknowledged uploads' tickets, in arrival order
    acc: np.ndarray | None  # Σc0 (the checkpoint), None before the first upload
    active_sets: list[list[int]] | None  # the issued request's active sets, None while open
    discarded: tuple[str, ...]  # clients whose rows were committed but never acknowledged


class RoundStore:
    """The durable side of one aggregation round in ``state_dir``. One process at a time."""

    def __init__(self, state_dir: str | os.PathLike[str], *, committee_id: bytes, fingerprint: bytes,
                 identity: dict[str, Any] | None = None) -> None:
        """Open (or create, 0700) ``state_dir`` and lock it.

        ``identity`` (epoch, round, min_clients, layout…): recorded at creation, compared on
        reopen (a mismatch raises :class:`StateError`); None opens an existing round as it is.
        """
        self.dir = Path(state_dir)
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the round directory {self.dir}: {exc.strerror}") from exc
        self._lock_fd = _lock(self.dir / LOCK_NAME)
        try:
            owner = blake3.blake3(_OWNER_DOMAIN + committee_id + fingerprint).digest()
            exists = (self.dir / LEDGER_NAME).exists()
            if not exists and identity is None:
                raise StateError(f"{self.dir} holds no aggregation round; create it with the aggregator's constructor")
            self._ledger = _Ledger._open(self.dir / LEDGER_NAME, owner)
            self.identity = self._settle_identity(identity)
        except BaseException:
            self._release()
            raise
        self.tag = round_tag(committee_id, fingerprint, int(self.identity["epoch"]), int(self.identity["round"]))
        self.position = 0
        self.chain = GENESIS

    def _settle_identity(self, identity: dict[str, Any] | None) -> dict[str, Any]:
        with self._ledger.transaction():
            stored = self._ledger.get("identity")
            if stored is None:
                if identity is None:
                    raise StateError(f"{self.dir}: the ledger names no round")
                self._ledger.put("identity", json.dumps(identity, sort_keys=True).encode())
                return dict(identity)
            recorded = json.loads(stored)
            if identity is not None:
                for key, value in identity.items():
                    if value is not None and recorded.get(key) != value:
                        raise StateError(f"{self.dir} holds {key} {recorded.get(key)!r}, not {value!r}: it is another "
                                         "round's state directory")
            return dict(recorded)

    # -- recovery ----------------------------------------------------------------------------

    def recover(self, shape_of: Callable[[str], tuple[int, int, int, int]]) -> Recovered:
        """Load the checkpoint, check the ledger against it, delete the unacknowledged tail.

        ``shape_of(layout_json)``: the accumulator's shape for the round's layout.
        """
        ledger = self._ledger
        with ledger.transaction():
            rows = ledger._all("SELECT position, client_id, ticket, chain FROM contributions ORDER BY position")
            layout = ledger.get("layout")
            path = self.dir / CHECKPOINT_NAME
            if os.path.lexists(path):
                if layout is None:
                    raise StateError(f"{self.dir}: a checkpoint exists but the ledger names no layout")
                position, chain, acc = read_checkpoint(path, self.tag, shape_of(layout.decode()))
            else:
                remove_stale_temporaries(path)
                position, chain, acc = 0, GENESIS, None
            if position > len(rows) or [r[0] for r in rows[:position]] != list(range(1, position + 1)):
                raise StateError(f"{self.dir}: the checkpoint covers {position} uploads but the ledger holds "
                                 f"{len(rows)}; the ledger was rolled back — restore the whole directory")
            if position and bytes(rows[position - 1][3]) != chain:
                raise StateError(f"{self.dir}: the checkpoint and the ledger disagree on the uploads they cover")
            running = GENESIS
            for pos, client_id, ticket, stored_chain in rows[:position]:
                running = chain_next(running, pos, client_id, bytes(ticket))
                if running != bytes(stored_chain):
                    raise StateError(f"{self.dir}: the ledger's hash chain breaks at position {pos}")
            discarded = tuple(r[1] for r in rows[position:])
            ledger._run("DELETE FROM contributions WHERE position > ?", (position,))
            if position == 0 and ledger.get("layout_given") is None:
                ledger.drop("layout")
                layout = None
            sets = ledger.get("active_sets")
        self.position, self.chain = position, chain
        return Recovered(None if layout is None else layout.decode(), tuple(bytes(r[2]) for r in rows[:position]),
                         acc, None if sets is None else json.loads(sets), discarded)

    # -- recording -------------------------------------------------------------------------

    def fix_layout(self, layout_json: str) -> None:
        """Record a layout given at creation (it survives a round with no upload yet)."""
        with self._ledger.transaction():
            if self._ledger.get("layout") is None:
                self._ledger.put("layout", layout_json.encode())
                self._ledger.put("layout_given", b"1")

    def record(self, client_id: str, ticket: bytes, digest: bytes, layout_json: str, acc: np.ndarray) -> None:
        """Make one accepted upload durable: its ledger row, then the checkpoint of ``acc`` covering it.

        Returns only when both are on disk (the upload may then be acknowledged). Raises
        :class:`DuplicateContributionError` for a client already in the ledger and
        :class:`StateError` when a write fails (the row is then removed again, best effort;
        a reopen removes it anyway, since no checkpoint covers it).
        """
        position = self.position + 1
        chain = chain_next(self.chain, position, client_id, ticket)
        ledger = self._ledger
        with ledger.transaction():
            if ledger._one("SELECT 1 FROM contributions WHERE client_id = ?", (client_id,)) is not None:
                raise DuplicateContributionError(f"client {client_id!r} already contributed to this round")
            if ledger.get("layout") is None:
                ledger.put("layout", layout_json.encode())
            ledger._run("INSERT INTO contributions VALUES (?, ?, ?, ?, ?)", (position, client_id, ticket, digest, chain))
        _stage("row-committed")
        try:
            write_checkpoint(self.dir / CHECKPOINT_NAME, self.tag, position, chain, acc)
        except BaseException:
            try:
                with ledger.transaction():
                    ledger._run("DELETE FROM contributions WHERE position = ?", (position,))
            except StateError:
                pass
            raise
        self.position, self.chain = position, chain

    def keep_upload(self, digest: bytes, data: bytes) -> None:
        """Store an accepted upload's bytes (``uploads/<digest>``, atomic, fsynced) before its row is
        recorded: a round whose members verify the aggregate needs every upload after a restart."""
        from .hazmat.files import _atomic_replace

        _atomic_replace(self.dir / UPLOADS_NAME / digest.hex(), data)

    def load_upload(self, digest: bytes) -> bytes:
        """The bytes :meth:`keep_upload` stored; :class:`StateError` if missing or not of ``digest``'s upload."""
        path = self.dir / UPLOADS_NAME / digest.hex()
        try:
            return path.read_bytes()
        except OSError as exc:
            raise StateError(f"{self.dir}: the retained upload {digest.hex()[:12]}… is missing ({exc.strerror}); "
                             "restore the whole directory") from exc

    def close_round(self, active_sets: list[list[int]]) -> None:
        """Record the issued request's active sets (durable before the request leaves)."""
        with self._ledger.transaction():
            stored = self._ledger.get("active_sets")
            encoded = json.dumps(active_sets).encode()
            if stored is not None and stored != encoded:
                raise StateError(f"{self.dir}: the round's request already names other active sets")
            self._ledger.put("active_sets", encoded)

    def close(self) -> None:
        """Close the ledger and release the directory lock. Idempotent."""
        ledger = getattr(self, "_ledger", None)
        if ledger is not None:
            ledger.close()
        self._release()

    def _release(self) -> None:
        fd, self._lock_fd = getattr(self, "_lock_fd", None), None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"RoundStore({self.dir}, {self.position} uploads)"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a RoundStore cannot be pickled; open the state directory in each process")


def _lock(path: Path) -> int:
    """An exclusive, non-blocking flock on ``path`` (0600): a second process on one round is refused."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(f"cannot open the round lock {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise StateError(f"{path.parent} is in use by another aggregator process; one process per round") from exc
        raise StateError(f"cannot lock {path}: {exc.strerror}") from exc
    return fd
