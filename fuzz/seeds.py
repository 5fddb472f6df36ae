"""Write each target's seed corpus from valid objects: fuzz/corpus/<target>/seed-<i>.

    python fuzz/seeds.py [target …]      # all targets when none is named

Envelope targets get every seed twice: mode byte 0 (parsed as is) and 1 (checksum
recomputed after mutation), see fuzz/targets.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CORPUS = ROOT / "fuzz" / "corpus"


def write_seeds(name: str, corpus: Path = CORPUS) -> int:
    """Write ``name``'s seeds into ``corpus/name``; returns how many."""
    from fuzz.targets import TARGETS

    target = TARGETS[name]()
    out = corpus / name
    out.mkdir(parents=True, exist_ok=True)
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
