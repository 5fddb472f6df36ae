"""Durable member and client state (he_agg.state) and private files (he_agg.hazmat.files).

Races and crashes use real processes: 'spawn' workers meeting at a barrier, and fresh
interpreters killed with SIGKILL. Disk faults are real (RLIMIT_FSIZE makes the WAL append
fail with EFBIG) or injected at COMMIT.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import nacl.pwhash.argon2id as argon2id
import pytest
from hypothesis import given
from hypothesis import strategies as st

from he_agg import state as state_module
from he_agg.errors import (
    AuthenticationError,
    BudgetExhaustedError,
    ClientStateError,
    EquivocationError,
    FormatError,
    HeAggError,
    InsecureFileError,
    ReplayError,
    ResourceLimitError,
    StateError,
)
from he_agg.hazmat import files
from he_agg.state import MAX_ROUND_STEP, ClientRounds, MemberState, StateInputError

from . import _state_workers as workers

ROOT = Path(__file__).resolve().parent.parent
OWNER = workers.OWNER
RACES = 20


def _open(path: Path | None) -> MemberState:
    return MemberState.open(path, owner=OWNER)


def _never() -> bytes:
    raise AssertionError("sign()/make() must not be called again")


def _python(script: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()


# -- (a), (b): two processes race on one file ----------------------------------------------


@pytest.fixture(scope="module")
def racers() -> Any:
    """Two 'spawn' workers that stay up for all races of this module."""
    ctx = multiprocessing.get_context("spawn")
    jobs, results, barrier = ctx.Queue(), ctx.Queue(), ctx.Barrier(2, timeout=60)
    procs = [ctx.Process(target=workers.race_worker, args=(me, jobs, results, barrier), daemon=True) for me in (0, 1)]
    for proc in procs:
        proc.start()

    def race(kind: str, path: Path) -> list[tuple[int, tuple[Any, ...], list[bytes]]]:
        jobs.put((kind, str(path)))
        jobs.put((kind, str(path)))
        return sorted(results.get(timeout=60) for _ in procs)

    yield race
    for _ in procs:
        jobs.put(None)
    for proc in procs:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()


def test_two_processes_race_to_release_with_budget_one(racers: Any, tmp_path: Path) -> None:
    winners = []
    for i in range(RACES):
        path = tmp_path / f"race-{i}.db"
        outcomes = [outcome for _, outcome, _ in racers("release", path)]
        assert sorted(outcomes) == [("refused", "BudgetExhaustedError"), ("won", True)], outcomes
        winner = outcomes.index(("won", True))
        winners.append(winner)
        with _open(path) as state:
            assert state.spent() == 1
            assert [state.released(b"key-%d" % me) for me in (0, 1)] == [me == winner for me in (0, 1)]


def test_two_processes_open_one_fresh_file_at_once(racers: Any, tmp_path: Path) -> None:
    """Switching a new file to WAL needs an exclusive lock, and SQLite can answer "locked"
    at once without its busy handler: the open retries until the busy timeout (CI once
    failed the races above on exactly this; 10 of 300 three-process opens failed before)."""
    for i in range(3 * RACES):
        reports = racers("open", tmp_path / f"open-{i}.db")
        assert [outcome for _, outcome, _ in reports] == [("opened",), ("opened",)], reports


def test_two_processes_race_to_approve_round_7(racers: Any, tmp_path: Path) -> None:
    for i in range(RACES):
        path = tmp_path / f"approve-{i}.db"
        reports = racers("approve", path)
        signed = [(me, outcome[1], made) for me, outcome, made in reports if outcome[0] == "signed"]
        refused = [outcome for _, outcome, _ in reports if outcome[0] == "refused"]
        assert len(signed) == 1 and refused == [("refused", "EquivocationError")], reports
        me, signature, made = signed[0]
        assert made == [signature]  # the winner signed once; the loser never called sign()
        assert sum(len(m) for _, _, m in reports) == 1
        with _open(path) as state:
            assert state.approval(7) == (bytes([me]) * 32, signature)


# -- (c): kill -9 after the call returned, before the result was sent ---------------------


def test_kill_after_return_keeps_every_reported_record(tmp_path: Path) -> None:
    path = tmp_path / "member.db"
    proc = _python(workers.KILL_LOOP, str(path))
    assert proc.stdout is not None
    sent = {}
    for line in proc.stdout:
        i, signature = line.split()
        sent[int(i)] = bytes.fromhex(signature)
        if len(sent) == 25:
            break
    _kill(proc)  # mid-loop: the child may be inside the next release()/approve()
    with _open(path) as state:
        for i, signature in sent.items():
            assert state.release(i.to_bytes(8, "big"), 1, 10**9) is False  # a retry is free
            assert state.approve(i, i.to_bytes(32, "big"), _never) == signature
        with pytest.raises(EquivocationError):
            state.approve(3, b"another statement", _never)
        recorded = [i for i in range(len(sent) + 2) if state.released(i.to_bytes(8, "big"))]
        assert recorded == list(range(len(recorded))) and len(sent) <= len(recorded) <= len(sent) + 1
        assert state.spent() == len(recorded)
        highest = state.highest_round()
        assert highest is not None and len(sent) - 1 <= highest <= len(sent)


# -- (d): a failed commit records nothing; the retry after the fault succeeds once ---------


def test_disk_full_during_commit_records_nothing(tmp_path: Path) -> None:
    """A real write failure: RLIMIT_FSIZE stops the WAL from growing (EFBIG)."""
    path = tmp_path / "member.db"
    proc = _python(workers.FSIZE_FAULT, str(path))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["faulted"] is not None and "nothing was recorded" in report["faulted"]
    assert report["after_fault"] == [False, 0]
    assert report["retry"] is True and report["again"] is False
    with _open(path) as state:
        assert state.released(b"share") and state.spent() == 1


class _FailingCommit:
    """Wraps a sqlite3 connection; the next ``failures`` COMMITs fail like a full disk would."""

    def __init__(self, conn: sqlite3.Connection, failures: int) -> None:
        self.conn, self.failures = conn, failures

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def execute(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, args)

    def close(self) -> None:
        self.conn.close()


def test_injected_commit_failure_leaves_no_record(tmp_path: Path) -> None:
    path = tmp_path / "member.db"
    state = _open(path)
    state._conn = _FailingCommit(state._conn, failures=2)  # type: ignore[assignment]
    with pytest.raises(StateError, match="disk .* is full; nothing was recorded"):
        state.release(b"share", 1, 1)
    with pytest.raises(StateError):
        state.approve(7, b"d" * 32, lambda: b"signature")
    with _open(path) as other:  # what another process would see
        assert other.spent() == 0 and not other.released(b"share") and other.approval(7) is None
    assert state.spent() == 0 and state.approval(7) is None
    assert state.release(b"share", 1, 1) is True
    assert state.approve(7, b"d" * 32, lambda: b"signature") == b"signature"
    assert state.release(b"share", 1, 1) is False
    state.close()
    with _open(path) as state:
        assert state.spent() == 1 and state.approval(7) == (b"d" * 32, b"signature")


def test_sign_failure_records_nothing(tmp_path: Path) -> None:
    with _open(tmp_path / "m.db") as state:
        with pytest.raises(ZeroDivisionError):
            state.approve(1, b"d", lambda: 1 // 0)  # type: ignore[arg-type, return-value]
        assert state.approval(1) is None
        with pytest.raises(StateInputError):
            state.approve(1, b"d", lambda: "not bytes")  # type: ignore[arg-type, return-value]
        assert state.approve(1, b"d", lambda: b"s") == b"s"


# -- MemberState semantics -----------------------------------------------------------------


def test_approve_rules(tmp_path: Path) -> None:
    with _open(tmp_path / "m.db") as state:
        assert state.approval(7) is None and state.highest_round() is None
        assert state.approve(7, b"a" * 32, lambda: b"sig7") == b"sig7"
        assert state.approve(7, b"a" * 32, _never) == b"sig7"
        with pytest.raises(EquivocationError, match="round 7 was already approved"):
            state.approve(7, b"b" * 32, _never)
        assert state.approve(3, b"c", lambda: b"sig3") == b"sig3"  # a lower unused round is fine
        assert state.approve(7 + MAX_ROUND_STEP, b"d", lambda: b"far") == b"far"
        with pytest.raises(ReplayError, match="more than"):
            state.approve(2 * MAX_ROUND_STEP + 8, b"e", _never)
        with pytest.raises(ReplayError):
            state.approve(2**62, b"e", _never)
        assert state.approve(8, b"f", lambda: b"sig8") == b"sig8"  # not locked out
        for bad in (-1, True, 1.0, "3", 2**63):
            with pytest.raises(StateInputError):
                state.approve(bad, b"x", _never)  # type: ignore[arg-type]
        for digest in (b"", "str", b"x" * 65):
            with pytest.raises(StateInputError):
                state.approve(9, digest, _never)  # type: ignore[arg-type]


def test_release_rules(tmp_path: Path) -> None:
    with _open(tmp_path / "m.db") as state:
        assert state.release(b"a", 2, 3) is True and state.spent() == 2
        assert state.release(b"a", 2, 3) is False and state.spent() == 2
        with pytest.raises(BudgetExhaustedError, match=r"2 of 3 units spent and this release costs 2"):
            state.release(b"b", 2, 3)
        assert not state.released(b"b")
        assert state.release(b"c", 1, 3) is True and state.spent() == 3
        assert state.release(b"a", 2, 0) is False  # a retry stays free even past the limit
        for key in (b"", b"k" * 65, "k"):
            with pytest.raises(StateInputError):
                state.release(key, 1, 3)  # type: ignore[arg-type]
        with pytest.raises(StateInputError):
            state.release(b"d", -1, 3)


def test_key_value_area_persists(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with _open(path) as state:
        assert state.get("enrolled", "alice") is None
        state.put("enrolled", "bob", b"2")
        state.put("enrolled", "alice", b"1")
        state.put("enrolled", "alice", b"1b")
        state.put("dp", "alice", b"")
        assert state.delete("dp", "alice") and not state.delete("dp", "alice")
        with pytest.raises(StateInputError):
            state.put("", "k", b"v")
        with pytest.raises(StateInputError):
            state.put("n", "k", "v")  # type: ignore[arg-type]
    with _open(path) as state:
        assert state.items("enrolled") == [("alice", b"1b"), ("bob", b"2")]
        assert state.get("enrolled", "bob") == b"2" and state.items("dp") == []


def test_transaction_is_atomic_and_nests(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with _open(path) as state:
        with pytest.raises(KeyError):
            with state.transaction():
                assert state.release(b"a", 1, 5) and state.approve(1, b"d", lambda: b"s")
                state.put("n", "k", b"v")
                raise KeyError("abort")
        assert state.spent() == 0 and state.approval(1) is None and state.get("n", "k") is None
        with state.transaction():
            state.release(b"a", 1, 5)
            with pytest.raises(BudgetExhaustedError):
                state.release(b"b", 5, 5)  # the inner failure rolls back only itself
            with pytest.raises(EquivocationError):
                with state.transaction():
                    state.put("n", "k", b"inner")
                    state.approve(2, b"x", lambda: b"s2")
                    state.approve(2, b"y", _never)
            state.put("n", "k", b"outer")
        with _open(path) as other:
            assert other.spent() == 1 and other.approval(2) is None and other.get("n", "k") == b"outer"


def test_a_held_transaction_blocks_other_writers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.db"
    monkeypatch.setattr(state_module, "BUSY_TIMEOUT_S", 0.2)
    with _open(path) as holder, _open(path) as waiter:
        with holder.transaction():
            holder.release(b"a", 1, 1)
            with pytest.raises(StateError, match="locked"):
                waiter.release(b"b", 1, 1)
            assert waiter.spent() == 0  # readers see the last commit, never a half-done one
        assert waiter.spent() == 1
        with pytest.raises(BudgetExhaustedError):
            waiter.release(b"b", 1, 1)


def test_threads_share_one_handle(tmp_path: Path) -> None:
    with _open(tmp_path / "m.db") as state:
        outcomes: list[Any] = []

        def go(i: int) -> None:
            try:
                outcomes.append(state.release(b"%d" % i, 1, 5))
            except BudgetExhaustedError:
                outcomes.append("refused")

        threads = [threading.Thread(target=go, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count(True) == 5 and outcomes.count("refused") == 7 and state.spent() == 5


def test_file_checks(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "m.db"
    _open(path).close()
    assert (path.stat().st_mode & 0o777) == 0o600
    with pytest.raises(StateError, match="another owner"):
        MemberState.open(path, owner=b"\x01" * 32)
    with pytest.raises(StateError, match="not a client state file"):
        ClientRounds.open(path, owner=OWNER)
    with pytest.raises(StateInputError):
        MemberState.open(path, owner=b"short")
    link = tmp_path / "link.db"
    link.symlink_to(path)
    with pytest.raises(InsecureFileError, match="symbolic link"):
        _open(link)
    with _open(path) as held:  # while a handle is open the -wal and -shm files exist, 0600 too
        held.put("n", "k", b"v")
        wal = path.with_name("m.db-wal")
        assert (wal.stat().st_mode & 0o777) == 0o600
        wal.chmod(0o644)
        with pytest.raises(InsecureFileError, match="chmod 600"):
            _open(path)
        wal.chmod(0o600)
    path.chmod(0o640)
    with pytest.raises(InsecureFileError, match="chmod 600"):
        _open(path)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    garbage.chmod(0o600)
    with pytest.raises(StateError, match="restore it from a backup"):
        _open(garbage)


def test_hygiene(tmp_path: Path) -> None:
    state = _open(tmp_path / "m.db")
    assert "m.db" in repr(state) and OWNER.hex() not in repr(state)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(state)
    state.close()
    state.close()
    with pytest.raises(StateError, match="closed"):
        state.spent()
    with _open(None) as memory:  # in-memory: same semantics, one process
        assert memory.release(b"k", 1, 1) and not memory.release(b"k", 1, 1)
        assert "in-memory" in repr(memory)


# -- laws (hypothesis): several handles on one file, any interleaving -----------------------

_handle = st.integers(0, 2)
_approve_ops = st.lists(st.tuples(st.sampled_from(["approve", "reopen"]), _handle, st.integers(0, 3),
                                  st.integers(0, 2)), max_size=25)


@given(_approve_ops)
def test_law_one_statement_per_round(ops: list[tuple[str, int, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.db"
        handles = [_open(path) for _ in range(3)]
        first: dict[int, tuple[bytes, bytes]] = {}
        for op, h, round_id, d in ops:
            if op == "reopen":
                handles[h].close()
                handles[h] = _open(path)
                continue
            digest, fresh = bytes([d]) * 32, os.urandom(64)
            try:
                signature = handles[h].approve(round_id, digest, lambda: fresh)
            except EquivocationError:
                assert round_id in first and first[round_id][0] != digest
                continue
            expected = first.setdefault(round_id, (digest, fresh))
            assert (digest, signature) == expected
        for handle in handles:
            assert {r: handle.approval(r) for r in range(4) if handle.approval(r)} == first
            handle.close()


@given(st.integers(0, 6), st.lists(st.tuples(_handle, st.integers(0, 5), st.integers(0, 3)), max_size=25))
def test_law_budget_never_exceeded(limit: int, ops: list[tuple[int, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.db"
        handles = [_open(path) for _ in range(3)]
        recorded: dict[bytes, int] = {}
        for h, k, cost in ops:
            key = b"k%d" % k
            try:
                fresh = handles[h].release(key, cost, limit)
            except BudgetExhaustedError:
                assert key not in recorded and sum(recorded.values()) + cost > limit
                continue
            assert fresh == (key not in recorded)
            recorded.setdefault(key, cost)
            assert handles[(h + 1) % 3].spent() == sum(recorded.values()) <= limit
        for handle in handles:
            assert handle.spent() == sum(recorded.values())
            handle.close()


# -- ClientRounds (f) ----------------------------------------------------------------------


def test_client_rounds_rules(tmp_path: Path) -> None:
    path = tmp_path / "client.db"
    with ClientRounds.open(path, owner=OWNER) as rounds:
        assert rounds.upload(0, 5) is None and rounds.highest_round(0) is None
        assert rounds.record(0, 5, lambda: b"five") == b"five"
        with pytest.raises(ClientStateError, match="already has an upload"):
            rounds.record(0, 5, _never)
        with pytest.raises(ClientStateError, match="only go forward"):
            rounds.record(0, 4, _never)
        with pytest.raises(ClientStateError, match="more than"):
            rounds.record(0, 6 + MAX_ROUND_STEP, _never)
        assert rounds.record(1, 2, lambda: b"epoch 1") == b"epoch 1"  # each epoch has its own rounds
        with pytest.raises(ZeroDivisionError):
            rounds.record(0, 6, lambda: 1 // 0)  # type: ignore[arg-type, return-value]
        assert rounds.record(0, 6, lambda: b"six") == b"six"
    with ClientRounds.open(path, owner=OWNER) as rounds:
        assert rounds.upload(0, 5) == b"five" and rounds.upload(0, 6) == b"six" and rounds.upload(1, 2) == b"epoch 1"
        assert rounds.prune(0, 6) == 1 and rounds.upload(0, 5) is None
        with pytest.raises(ClientStateError):
            rounds.record(0, 5, _never)  # pruned rounds stay used
        assert rounds.highest_round(0) == 6
    with pytest.raises(StateError, match="not a member state file"):
        MemberState.open(path, owner=OWNER)


@pytest.mark.parametrize("delay", [0.0, 0.002, 0.01])
def test_client_kill_between_make_and_return(tmp_path: Path, delay: float) -> None:
    path = tmp_path / "client.db"
    proc = _python(workers.CLIENT_KILL, str(path))
    assert proc.stdout is not None
    made = 0
    for line in proc.stdout:
        made = int(line.split()[1])
        if made == 4:
            break
    time.sleep(delay)
    _kill(proc)
    with ClientRounds.open(path, owner=OWNER) as rounds:
        stored = {r: rounds.upload(0, r) for r in range(1, made + 3)}
        for r, data in stored.items():
            assert data is None or data == workers.expected_upload(r), r
        present = [r for r, data in stored.items() if data is not None]
        assert present == list(range(1, len(present) + 1)) and made - 1 <= len(present) <= made + 1


# -- hazmat.files (e) ----------------------------------------------------------------------


@pytest.fixture
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "_KDF_OPS", argon2id.OPSLIMIT_MIN)
    monkeypatch.setattr(files, "_KDF_MEM", argon2id.MEMLIMIT_MIN * 8)


def test_files_plain_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "share.bin"
    with pytest.raises(InsecureFileError, match="passphrase"):
        files.write_private(path, b"secret")
    assert not path.exists()
    files.write_private(path, b"secret", insecure_plaintext=True)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert files.read_private(path) == b"secret"
    files.write_private(path, b"second", insecure_plaintext=True)
    assert files.read_private(path) == b"second"
    with pytest.raises(AuthenticationError, match="not sealed"):
        files.read_private(path, passphrase=b"pw")
    with pytest.raises(FormatError):
        files.write_private(path, files.SEALED_MAGIC + b"x", insecure_plaintext=True)
    assert sorted(p.name for p in path.parent.iterdir()) == ["share.bin"]


def test_files_sealed_default_parameters(tmp_path: Path) -> None:
    path = tmp_path / "share.sealed"
    files.write_private(path, b"key material", passphrase=b"correct horse")
    raw = path.read_bytes()
    assert raw.startswith(files.SEALED_MAGIC) and b"key material" not in raw
    _, ops, mem, *_ = files._HEADER.unpack(raw[: files._HEADER.size])
    assert (ops, mem) == (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)
    assert files.read_private(path, passphrase=b"correct horse") == b"key material"


def test_files_sealed_refusals(tmp_path: Path, fast_kdf: None) -> None:
    path = tmp_path / "share.sealed"
    files.write_private(path, b"key material", passphrase=b"pw")
    assert files.read_private(path, passphrase=b"pw") == b"key material"
    with pytest.raises(AuthenticationError, match="wrong passphrase"):
        files.read_private(path, passphrase=b"pW")
    with pytest.raises(AuthenticationError, match="is sealed"):
        files.read_private(path)
    raw = path.read_bytes()
    nonce_at = files._HEADER.size - 16 - 24
    for index in (len(raw) - 1, files._HEADER.size, nonce_at):  # tag, ciphertext, nonce (associated data)
        flipped = bytearray(raw)
        flipped[index] ^= 1
        path.write_bytes(bytes(flipped))
        with pytest.raises(AuthenticationError, match="altered or corrupted"):
            files.read_private(path, passphrase=b"pw")
    salted = bytearray(raw)
    salted[nonce_at - 1] ^= 1  # the salt: another key, reported like a wrong passphrase
    path.write_bytes(bytes(salted))
    with pytest.raises(AuthenticationError, match="or its header was altered"):
        files.read_private(path, passphrase=b"pw")
    path.write_bytes(raw[:40])
    with pytest.raises(FormatError, match="truncated"):
        files.read_private(path, passphrase=b"pw")
    with pytest.raises(InsecureFileError):
        files.write_private(path, b"x", passphrase=b"")


def test_files_refuse_shared_symlinked_and_huge(tmp_path: Path) -> None:
    path = tmp_path / "share.bin"
    files.write_private(path, b"secret", insecure_plaintext=True)
    path.chmod(0o644)
    with pytest.raises(InsecureFileError, match="chmod 600"):
        files.read_private(path)
    path.chmod(0o600)
    link = tmp_path / "link.bin"
    link.symlink_to(path)
    with pytest.raises(InsecureFileError, match="symbolic link"):
        files.read_private(link)
    with pytest.raises(ResourceLimitError):
        files.read_private(path, max_bytes=5)
    with pytest.raises(StateError, match="cannot open"):
        files.read_private(tmp_path / "missing")
    assert all(isinstance(e, HeAggError) for e in (InsecureFileError("x"), AuthenticationError("x")))


def test_files_stale_temporary_removed_after_kill(tmp_path: Path) -> None:
    path = tmp_path / "share.bin"
    files.write_private(path, b"old", insecure_plaintext=True)
    live = tmp_path / f".share.bin.tmp-{os.getpid()}-000000000000"  # a live writer's file is kept
    live.write_bytes(b"in progress")
    for reader in (lambda: files.read_private(path), lambda: files.write_private(path, b"new", insecure_plaintext=True)):
        proc = _python(workers.STALL_WRITE, str(path))
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".share.bin.tmp-") and p != live]
        assert len(temps) == 1 and temps[0].stat().st_size == 8 << 20 and (temps[0].stat().st_mode & 0o777) == 0o600
        _kill(proc)
        assert temps[0].exists()  # the killed writer left its key material behind…
        assert reader() in (b"old", None)  # …the target was never touched…
        assert not temps[0].exists() and live.exists()  # …and the next access removed it
    assert files.read_private(path) == b"new"
