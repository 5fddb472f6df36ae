"""Crash-safe rounds (he_agg.ledger), enrolled and public-key: kill -9 at random instants, resume,
compare bit for bit.

A child process aggregates 100 prepared upload files into a round kept in a state
directory and is killed with SIGKILL at a random instant (sleeps inside the durability
windows make kills land in the ledger commit and the checkpoint write too). A fresh
process reopens the round and is fed everything the child did not acknowledge plus some
acknowledged uploads (which must be refused); Σc0 and the decryption request bytes must
equal an uninterrupted run's (the full (c0, c1) sum for a public-key round). Every test
runs in both modes (the ``setup`` fixture is parametrized).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import he_agg
from he_agg import ledger
from he_agg.errors import AggregationError, DuplicateContributionError, LayoutMismatchError, StateError

CLIENTS = 100
VALUES = 4096
RUNS = 20
ROOT = Path(__file__).resolve().parent.parent
PAUSE_S = 0.001


@pytest.fixture(scope="module", params=["enrolled", "public"])
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    mode = request.param
    base = tmp_path_factory.mktemp(f"crash-{mode}")
    if mode == "enrolled":
        committee = he_agg.EnrolledCommittee.generate(3, 2)
    else:
        committee = he_agg.Committee.generate(3, 2)
    context = committee.public_context
    (base / "context.bin").write_bytes(context.to_bytes())
    files = []
    for k in range(CLIENTS):
        values = np.linspace(-1, 1, VALUES) * (k % 7) / 7
        if mode == "enrolled":
            client = committee.client(f"c{k:03d}")
            blob = client.encrypt(values, round_id=1)
        else:
            blob = he_agg.encrypt(context, values, client_id=f"c{k:03d}", round_id=1).to_bytes()
        path = base / f"c{k:03d}.bin"
        path.write_bytes(blob)
        files.append(path)
    reference = he_agg.Aggregator(context, 1, min_clients=1)
    for path in files:
        reference.add(path.read_bytes())
    return {"mode": mode, "base": base, "committee": committee, "context": context, "files": files,
            "cls": he_agg.EnrolledAggregator if mode == "enrolled" else he_agg.Aggregator,
            "sum": _sum(reference), "request": reference.decryption_request().to_bytes()}


def _sum(agg: Any) -> np.ndarray:
    """The round's running sum: Σc0 (enrolled) or the whole ciphertext sum (public-key)."""
    acc = agg._accumulator
    return np.array(acc.sum if isinstance(agg, he_agg.EnrolledAggregator) else acc.data)


def _reopen(setup: dict[str, Any], state: Path) -> Any:
    return setup["cls"].open(state, setup["context"])


def _worker(setup: dict[str, Any], state: Path, files: list[Path], pause: float) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "tests._crash_worker", setup["mode"],
                             str(setup["base"] / "context.bin"), str(state), str(pause), *map(str, files)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _ready_line(child: subprocess.Popen[str]) -> str:
    """The child's first line, read byte by byte from the pipe. A buffered ``readline`` could pull
    later ACK lines into the text wrapper's buffer, where ``communicate(timeout=…)`` (which
    reads the raw descriptor) never sees them: under load the test then counted acknowledged
    uploads as unacknowledged (a flaky "more than one durable unacknowledged upload")."""
    assert child.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        byte = os.read(child.stdout.fileno(), 1)
        if not byte:
            break
        line += byte
    return line.decode().strip()


def _complete(out: str) -> list[str]:
    """The lines a killed child finished writing (a kill can cut the last one short)."""
    return [line for line in out.split("\n")[:-1] if len(line.split()) == 2]


def _lines(out: str, word: str) -> list[str]:
    return [line.split()[1] for line in _complete(out) if line.startswith(word + " ")]


def _one_run(setup: dict[str, Any], seed: int) -> str | None:
    """Kill, resume, compare; returns the stage the kill landed in (None: between stages)."""
    rng = random.Random(seed)  # test scheduling only, no secret
    state = setup["base"] / f"run{seed}"
    files = list(setup["files"])
    rng.shuffle(files)  # arrival order differs run to run; the request must not
    child = _worker(setup, state, files, PAUSE_S)
    assert child.stdout is not None
    assert _ready_line(child) == "READY"
    time.sleep(rng.uniform(0.0, CLIENTS * (3 * PAUSE_S + 0.004)))
    child.send_signal(signal.SIGKILL)
    out, err = child.communicate(timeout=30)
    assert child.returncode in (-signal.SIGKILL, 0), err
    acked = set(_lines(out, "ACK"))
    stages = [line for line in _complete(out) if line.startswith(("STAGE", "ACK"))]
    landed = stages[-1].split()[1] if stages and stages[-1].startswith("STAGE") else None

    again = [f for f in files if f.stem not in acked]
    replayed = rng.sample(sorted(acked), min(5, len(acked)))
    again += [f for f in setup["files"] if f.stem in replayed]
    resume = _worker(setup, state, again, 0.0)
    out, err = resume.communicate(timeout=60)
    assert resume.returncode == 0, err
    dups = set(_lines(out, "DUP"))
    assert set(replayed) <= dups, "a resubmitted acknowledged upload was not refused"
    # At most one unacknowledged upload can be durable already: the one whose ACK the kill cut off.
    assert len(dups - set(replayed)) <= 1
    assert acked | set(_lines(out, "ACK")) | dups == {f.stem for f in setup["files"]}

    agg = _reopen(setup, state)
    try:
        assert sorted(agg.contributors) == sorted(f.stem for f in setup["files"])
        assert np.array_equal(_sum(agg), setup["sum"])
        assert agg.decryption_request().to_bytes() == setup["request"]
    finally:
        agg.close()
    assert not [p for p in os.listdir(state) if ".tmp-" in p], "a stale checkpoint temporary survived the reopen"
    return landed


def test_kill9_at_random_instants_resumes_bit_identically(setup: dict[str, Any]) -> None:
    with ThreadPoolExecutor(2) as pool:
        landed = list(pool.map(lambda seed: _one_run(setup, seed), range(RUNS)))
    assert len(landed) == RUNS
    # The kills must reach the durability windows, the checkpoint write among them.
    print("kills landed in:", landed)
    assert any(stage in ("checkpoint-written", "checkpoint-renamed") for stage in landed), landed


# -- unit tests --------------------------------------------------------------------------------


def _round(setup: dict[str, Any], state: Path, count: int) -> Any:
    agg = he_agg.Aggregator(setup["context"], 1, min_clients=1, state_dir=state)
    for path in setup["files"][:count]:
        agg.add(path.read_bytes())
    return agg


def test_resume_in_process_and_duplicates(setup: dict[str, Any], tmp_path: Path) -> None:
    agg = _round(setup, tmp_path, 30)
    with pytest.raises(StateError, match="in use"):
        _reopen(setup, tmp_path)
    agg.close()
    with pytest.raises(StateError, match="another round"):
        he_agg.Aggregator(setup["context"], 2, min_clients=1, state_dir=tmp_path)
    with _reopen(setup, tmp_path) as agg:
        assert len(agg) == 30
        with pytest.raises(DuplicateContributionError):
            agg.add(setup["files"][7].read_bytes())
        for path in setup["files"][30:]:
            agg.add(path.read_bytes())
        request = agg.decryption_request().to_bytes()
        assert request == setup["request"]
    with _reopen(setup, tmp_path) as agg:  # a closed round stays closed
        assert agg.decryption_request().to_bytes() == request
        with pytest.raises(AggregationError, match="closed"):
            agg.add(setup["files"][0].read_bytes())
        extra = {} if setup["mode"] == "enrolled" else {"contributions": agg.contributions}  # members verify
        value = agg.finalize(setup["committee"].shares(agg.decryption_request(), **extra))
        assert np.asarray(value).shape == (VALUES,)


def test_a_failed_checkpoint_write_is_not_acknowledged(setup: dict[str, Any], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    agg = _round(setup, tmp_path, 3)

    def fail(stage: str) -> None:
        if stage == "checkpoint-written":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(ledger, "_pause", fail)
    with pytest.raises(StateError, match="previous one is intact"):
        agg.add(setup["files"][3].read_bytes())
    assert len(agg) == 3  # the in-memory round was reloaded from disk
    monkeypatch.setattr(ledger, "_pause", None)
    agg.add(setup["files"][3].read_bytes())  # the refused upload may come again: counted once
    agg.close()
    with _reopen(setup, tmp_path) as again:
        assert again.contributors == tuple(f.stem for f in setup["files"][:4])


def test_unacknowledged_ledger_rows_are_dropped(setup: dict[str, Any], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A row committed without its checkpoint (a crash between the two) is discarded on reopen."""
    agg = _round(setup, tmp_path, 2)
    monkeypatch.setattr(ledger, "write_checkpoint", lambda *a: None)  # the process "dies" before the checkpoint
    agg.add(setup["files"][2].read_bytes())
    monkeypatch.undo()
    agg._store._ledger.close()  # no cleanup of any kind, as after kill -9
    agg._store._release()
    with _reopen(setup, tmp_path) as again:
        assert len(again) == 2
        again.add(setup["files"][2].read_bytes())
        assert len(again) == 3


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend", "header", "other-round"])
def test_a_damaged_checkpoint_is_refused(setup: dict[str, Any], tmp_path: Path, damage: str) -> None:
    _round(setup, tmp_path / "a", 3).close()
    path = tmp_path / "a" / ledger.CHECKPOINT_NAME
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 1
    elif damage == "truncate":
        raw = raw[: len(raw) - 100]
    elif damage == "extend":
        raw += b"\0"
    elif damage == "header":
        raw[50] ^= 0x80  # the position field
    else:
        other = he_agg.Aggregator(setup["context"], 2, min_clients=1, state_dir=tmp_path / "b")
        other.close()
        _round(setup, tmp_path / "c", 3).close()
        raw = bytearray((tmp_path / "c" / ledger.CHECKPOINT_NAME).read_bytes())
        raw[8:40] = ledger.round_tag(b"x", b"y", 0, 2)  # then checksum fails too; both are refusals
    path.write_bytes(bytes(raw))
    with pytest.raises(StateError):
        _reopen(setup, tmp_path / "a")


def test_a_round_made_for_another_layout_is_refused(setup: dict[str, Any], tmp_path: Path) -> None:
    from he_agg.packing import Layout, flatten

    _round(setup, tmp_path, 1).close()
    _, other = flatten(np.zeros(VALUES + 1))
    with pytest.raises(LayoutMismatchError):
        he_agg.Aggregator(setup["context"], 1, min_clients=1, layout=other, state_dir=tmp_path)
    assert isinstance(other, Layout)


def test_public_round_keeps_its_retain_choice(setup: dict[str, Any], tmp_path: Path) -> None:
    """A public-key round records ``retain``: reopened, it reloads the kept uploads (or has none)."""
    if setup["mode"] != "public":
        pytest.skip("public-key rounds only")
    lean = he_agg.Aggregator(setup["context"], 1, min_clients=1, retain=False, state_dir=tmp_path / "lean")
    lean.add(setup["files"][0].read_bytes())
    lean.close()
    assert not (tmp_path / "lean" / ledger.UPLOADS_NAME).exists()
    with pytest.raises(StateError, match="retain"):
        he_agg.Aggregator(setup["context"], 1, min_clients=1, retain=True, state_dir=tmp_path / "lean")
    with he_agg.Aggregator.open(tmp_path / "lean", setup["context"]) as again:
        assert again.contributors == ("c000",)
        with pytest.raises(AggregationError, match="retain"):
            again.contributions
    kept = _round(setup, tmp_path / "kept", 2)
    kept.close()
    with he_agg.Aggregator.open(tmp_path / "kept", setup["context"]) as again:
        assert again.contributions == {f.stem: f.read_bytes() for f in setup["files"][:2]}


def test_c0_accumulator_restore(setup: dict[str, Any]) -> None:
    """restore() takes a saved Σc0 and tickets, refuses another round's or a doubled ticket atomically."""
    if setup["mode"] != "enrolled":
        pytest.skip("enrolled rounds only")
    from he_agg.enrolled import C0Accumulator

    context = setup["context"]
    full = _round(setup, Path(setup["base"]) / "restore-src", 3)
    src = full._accumulator
    tickets = [t.to_bytes() for t in src.tickets]
    full.close()

    def fresh(round_id: int = 1) -> C0Accumulator:
        return C0Accumulator(context.params, src.length, committee_id=context.committee_id, epoch=0,
                             round_id=round_id, layout=src.layout)

    acc = fresh()
    acc.restore(src._acc, tickets)
    assert acc.contributors == src.contributors and np.array_equal(acc.sum, src.sum)
    with pytest.raises(DuplicateContributionError):
        acc.add(setup["files"][0].read_bytes())
    acc.add(setup["files"][3].read_bytes())  # and it goes on summing
    for bad_acc, bad_tickets, error in [(src._acc[..., :1], tickets, StateError),
                                        (src._acc.astype(np.int64), tickets, StateError),
                                        (src._acc, tickets + tickets[:1], StateError),
                                        (src._acc, [b"junk"], he_agg.errors.FormatError)]:
        target = fresh()
        with pytest.raises(error):
            target.restore(bad_acc, bad_tickets)
        assert len(target) == 0 and not target._acc.any()  # untouched
    with pytest.raises(he_agg.errors.HeAggError):
        fresh(round_id=2).restore(src._acc, tickets)  # another round's tickets


def test_aggregator_open_dispatches_on_the_context(setup: dict[str, Any], tmp_path: Path) -> None:
    _round(setup, tmp_path, 2).close()
    with he_agg.Aggregator.open(tmp_path, setup["context"]) as again:
        assert type(again) is setup["cls"] and len(again) == 2
