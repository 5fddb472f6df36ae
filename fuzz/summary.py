"""A markdown table of a campaign's libFuzzer logs: python fuzz/summary.py [fuzz/out]."""

from __future__ import annotations

import re
import sys
from pathlib import Path


def summarize(log: Path) -> dict[str, str]:
    """Executions, seconds, final coverage, corpus size and outcome of one target's log."""
    text = log.read_text(errors="replace")
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", text)
    done = re.search(r"Done (\d+) runs in (\d+) second", text)
    cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)/", text)
    peak = re.search(r"stat::peak_rss_mb:\s*(\d+)", text)
    failure = re.search(r"=== Uncaught Python exception: ===\n([^\n]+)", text)
    other = "ERROR: libFuzzer" in text and not failure
    return {
        "target": log.stem,
        "executions": f"{int(runs.group(1)):,}" if runs else "?",
        "seconds": done.group(2) if done else "?",
        "coverage": f"{cov[-1][0]} / {cov[-1][1]}" if cov else "?",
        "corpus": cov[-1][2] if cov else "?",
        "peak RSS MB": peak.group(1) if peak else "?",
        "outcome": failure.group(1)[:80] if failure else ("libFuzzer error" if other else "clean"),
    }


def main(folder: str = "fuzz/out") -> None:
    rows = [summarize(p) for p in sorted(Path(folder).glob("*.log")) if not p.name.endswith(".smoke.log")]
    if not rows:
        return
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(row[k] for k in keys) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:])
