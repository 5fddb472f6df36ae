"""Write each target's seed corpus from valid objects: fuzz/corpus/<target>/seed-<i>.

    python fuzz/seeds.py [target …]      # all targets when none is named

Envelope targets get every seed twice: mode byte 0 (parsed as is) and 1 (checksum
recomputed after mutation), see fuzz/targets.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from fuzz.targets import Target

CORPUS = ROOT / "fuzz" / "corpus"


def write_seeds(name: str, corpus: Path = CORPUS) -> int:
    """Write ``name``'s seeds into ``corpus/name``; returns how many.

    Seeds bound to keys (uploads, requests, shares… of a committee made for them) only pass
    a parser built around the same committee: :mod:`fuzz.run` therefore rewrites the seeds of
    its own target at start-up (:func:`write_target_seeds`); these files serve inspection,
    replay and the key-free targets."""
    from fuzz.targets import TARGETS

    return write_target_seeds(TARGETS[name](), corpus / name)


def write_target_seeds(target: "Target", out: Path) -> int:
    """Write ``target``'s seeds into ``out`` (``seed-<i>-<mode>``, replacing older seed files)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("seed-*"):
        old.unlink()
    count = 0
    for i, seed in enumerate(target.seeds):
        for mode in ((b"\x00", b"\x01") if target.envelope else (b"",)):
            (out / f"seed-{i}-{mode.hex() or 'raw'}").write_bytes(mode + seed)
            count += 1
    return count


def main(argv: list[str]) -> None:
    from fuzz.targets import TARGETS

    for name in argv or list(TARGETS):
        print(f"{name}: {write_seeds(name)} seeds")


if __name__ == "__main__":
    main(sys.argv[1:])
