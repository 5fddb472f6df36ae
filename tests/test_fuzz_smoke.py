"""The atheris harness (fuzz/): seconds-long smoke runs, and the checksum re-sealing it relies on.

The long campaign (``make fuzz``, docs/FUZZING.md) is not run here; CI keeps the
hypothesis fuzzing of tests/test_wire_fuzz.py and tests/test_protocol_fuzz.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from he_agg.errors import ChecksumError
from he_agg.hazmat.wire.envelope import Kind, open_envelope, seal_envelope

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fuzz.targets import TARGETS, reseal_checksum  # noqa: E402


def test_reseal_checksum_makes_mutations_reach_the_meta_checks() -> None:
    valid = seal_envelope(Kind.CIPHERTEXT_BATCH, {"a": 1}, bytes(64))
    mutated = bytearray(valid)
    mutated[24:31] = b'{"a":2}'
    with pytest.raises(ChecksumError):
        open_envelope(bytes(mutated), Kind.CIPHERTEXT_BATCH, "t")
    env = open_envelope(reseal_checksum(bytes(mutated)), Kind.CIPHERTEXT_BATCH, "t")
    assert env.meta.integer("a") == 2
    assert reseal_checksum(valid) == valid
    for junk in (b"", b"HEAG", valid[:-1], valid + b"x"):  # inconsistent lengths: left as they are
        assert reseal_checksum(junk) == junk


def _run(target: str, corpus: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "fuzz" / "run.py"), "--target", target, str(corpus),
                           f"-artifact_prefix={corpus}/", *extra], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("target", ["envelope", pytest.param("tenseal_sum", marks=pytest.mark.slow),
                                    pytest.param("enrolled_upload", marks=pytest.mark.slow)])
def test_atheris_smoke(tmp_path: Path, target: str) -> None:
    pytest.importorskip("atheris")
    from fuzz.seeds import write_seeds

    assert write_seeds(target, tmp_path) >= 1
    stale = tmp_path / target / "seed-9-stale"
    stale.write_bytes(b"\0seed of another process's committee")
    done = _run(target, tmp_path / target, "-runs=300")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Done 300 runs" in done.stderr
    # the runner rewrote the seeds with its own objects (campaign finding: seeds bound to the
    # seed writer's committee only exercised the refusal in the fuzzing process)
    assert not stale.exists() and list((tmp_path / target).glob("seed-*"))


def test_atheris_reports_a_foreign_exception(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    from fuzz.seeds import write_seeds

    write_seeds("ticket", tmp_path)
    done = _run("ticket", tmp_path / "ticket", "-runs=50", "--canary")
    assert done.returncode != 0 and "canary: not a HeAggError" in done.stdout + done.stderr
    assert list((tmp_path / "ticket").glob("crash-*")), "no crash input was saved"


def test_every_target_builds_and_accepts_its_seeds() -> None:
    """What the harness checks before fuzzing: each target's seeds parse (cheap targets here)."""
    for name in ("tenseal_context", "public_context", "ticket", "approval"):
        target = TARGETS[name]()
        assert target.seeds
        for seed in target.seeds:
            target.parse(seed)


def test_the_memory_cap_is_per_input() -> None:
    """One input allocating far more than any legitimate one trips the cap; a small one does not,
    however much the process grew before (campaign finding: a cumulative cap fired on libFuzzer's
    own slow growth)."""
    import numpy as np

    from fuzz.run import MemoryCapExceeded, run_capped

    def greedy(data: bytes) -> None:
        np.ones(len(data) << 20, dtype=np.uint8).sum()  # sized by the input, as an unchecked field would be

    def refusing(data: bytes) -> None:
        raise ChecksumError("refused")

    run_capped(refusing, b"x" * 10, 64)  # HeAggError: fine
    run_capped(greedy, b"x" * 8, 64)  # 8 MB
    with pytest.raises(MemoryCapExceeded, match="raised the peak RSS"):
        run_capped(greedy, b"x" * 400, 64)  # 400 MB in one input
    run_capped(greedy, b"x" * 8, 64)  # the peak is now high, but this input adds nothing
    with pytest.raises(KeyError):
        run_capped(lambda d: {}[d], b"k", 64)
