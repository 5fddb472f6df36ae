"""Child process of tests/test_crash.py: aggregate upload files into a crash-safe round.

Usage: python -m tests._crash_worker MODE CONTEXT_FILE STATE_DIR PAUSE_S UPLOAD_FILE...
MODE is "enrolled" (EnrolledAggregator) or "public" (the public-key Aggregator).
Prints "READY" once the round is open, then "ACK <client id>" after each add returned
(i.e. after the upload is durable), "DUP <client id>" for a refused duplicate.
``PAUSE_S`` seconds are slept inside each durability window (ledger row committed,
checkpoint written but not renamed, renamed but directory not fsynced) so that the
parent's SIGKILL lands there too.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import he_agg
from he_agg import ledger
from he_agg.errors import DuplicateContributionError


def main(argv: list[str]) -> None:
    mode, argv = argv[0], argv[1:]
    enrolled = mode == "enrolled"
    kind = he_agg.EnrolledContext if enrolled else he_agg.PublicContext
    context = kind.from_bytes(Path(argv[0]).read_bytes())
    state_dir, pause = Path(argv[1]), float(argv[2])
    if pause > 0:
        def stage(name: str) -> None:
            print("STAGE", name, flush=True)  # the parent learns where its kill landed
            time.sleep(pause)

        ledger._pause = stage
    if (state_dir / ledger.LEDGER_NAME).exists():
        agg = (he_agg.EnrolledAggregator if enrolled else he_agg.Aggregator).open(state_dir, context)
    else:
        agg = he_agg.Aggregator(context, 1, min_clients=1, state_dir=state_dir)
    print("READY", flush=True)
    for name in argv[3:]:
        data = Path(name).read_bytes()
        try:
            ticket = agg.add(data)
        except DuplicateContributionError:
            print("DUP", Path(name).stem, flush=True)
            continue
        print("ACK", ticket.client_id, flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
