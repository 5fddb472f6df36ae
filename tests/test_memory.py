"""Bounded server memory (issue 12, part 3): summing uploads read one by one from files keeps the
peak RSS within 3x one client's upload above the baseline, measured in a fresh process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from he_agg.bench.memory import measure_aggregation, write_uploads
from he_agg.cli import main

CLIENTS, VALUES = 50, 65536


@pytest.mark.parametrize(("packing", "packed"), [("slots", False), ("dense", False), ("slots", True), ("dense", True)])
def test_peak_rss_within_three_uploads(tmp_path: Path, packing: str, packed: bool) -> None:
    """Packed uploads too: their digest unpacks into a bounded scratch (was 16 rows — a whole
    upload at this size — and 3.3-3.5x)."""
    written = write_uploads(tmp_path, CLIENTS, VALUES, packing=packing, packed=packed, seed=1)
    figures = measure_aggregation(tmp_path)
    if not figures["peak_reset"]:
        pytest.skip("the kernel's RSS high-water mark cannot be reset here (Linux >= 4.0 only)")
    assert figures["summed"] == CLIENTS
    above = figures["peak_rss"] - figures["baseline_rss"]
    # the accumulator alone is one upload's residues: a run that kept every upload would show ~CLIENTS x
    assert figures["accumulator_bytes"] <= above <= 3 * written["file_bytes"], (above, written["file_bytes"])


def test_bench_memory_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["bench", "memory", "--clients", "3", "--values", "4096", "--dir", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["summed"] == 3 and result["upload_bytes"] > result["residue_bytes"] == 2 * 8192 * 8
    assert result["ratio"] == result["peak_above_baseline"] / result["upload_bytes"]
    assert list(tmp_path.iterdir()) == []  # the upload files are removed afterwards
    assert main(["bench", "memory", "--clients", "3", "--dir", str(tmp_path / "missing"), "--json"]) == 2
