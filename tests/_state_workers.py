"""Worker processes for tests/test_state.py (kept apart so 'spawn' children import little)."""

from __future__ import annotations

import os
from typing import Any

from he_agg.errors import HeAggError
from he_agg.state import MemberState

OWNER = bytes(range(32))


def race_worker(me: int, jobs: Any, results: Any, barrier: Any) -> None:
    """For each (kind, path) from ``jobs``: open, meet the other worker, race, report."""
    while True:
        job = jobs.get()
        if job is None:
            return
        kind, path = job
        if kind == "open":  # both open one fresh file at the same instant (the WAL switch races)
            barrier.wait()
            try:
                MemberState.open(path, owner=OWNER).close()
                results.put((me, ("opened",), []))
            except HeAggError as exc:
                results.put((me, ("refused", str(exc)[:120]), []))
            continue
        state = MemberState.open(path, owner=OWNER)
        signed: list[bytes] = []

        def sign(me: int = me) -> bytes:
            signed.append(os.urandom(64))
            return signed[-1]

        barrier.wait()
        try:
            if kind == "release":
                outcome: tuple[Any, ...] = ("won", state.release(b"key-%d" % me, 1, 1))
            else:
                outcome = ("signed", state.approve(7, bytes([me]) * 32, sign))
        except HeAggError as exc:  # the expected refusal, or a failure the test reports
            outcome = ("refused", type(exc).__name__)
        finally:
            state.close()
        results.put((me, outcome, signed))


# -- scripts run with ``python -c`` (a fresh interpreter that can be killed) --------------

KILL_LOOP = """
import os, sys
from he_agg.state import MemberState
state = MemberState.open(sys.argv[1], owner=bytes(range(32)))
for i in range(100000):
    assert state.release(i.to_bytes(8, "big"), 1, 10**9)
    signature = state.approve(i, i.to_bytes(32, "big"), lambda: os.urandom(64))
    print(i, signature.hex(), flush=True)   # "sent" only after both calls returned
"""

FSIZE_FAULT = """
import json, os, resource, signal, sys
from he_agg.errors import StateError
from he_agg.state import MemberState
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # EFBIG instead of death
path = sys.argv[1]
state = MemberState.open(path, owner=bytes(range(32)))
state.put("warm", "up", b"x")                    # the WAL now exists; it grows at the next commit
out = {}
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path + "-wal"), resource.RLIM_INFINITY))
try:
    state.release(b"share", 1, 1)
    out["faulted"] = None
except StateError as exc:
    out["faulted"] = str(exc)
out["after_fault"] = [state.released(b"share"), state.spent()]
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
out["retry"] = state.release(b"share", 1, 1)
out["again"] = state.release(b"share", 1, 1)
print(json.dumps(out), flush=True)
"""

STALL_WRITE = """
import os, sys, time
from he_agg.hazmat import files
def stall(fd):
    print("ready", flush=True)
    time.sleep(60)
os.fsync = stall
files.write_private(sys.argv[1], b"N" * (8 << 20), insecure_plaintext=True)
"""

CLIENT_KILL = """
import sys
from he_agg.state import ClientRounds
rounds = ClientRounds.open(sys.argv[1], owner=bytes(range(32)))
def make(r):
    data = bytes([r % 251]) * (1 << 20)
    print("made", r, flush=True)
    return data
for r in range(1, 100000):
    rounds.record(0, r, lambda r=r: make(r))
"""


def expected_upload(round_id: int) -> bytes:
    return bytes([round_id % 251]) * (1 << 20)

