"""he-agg bench all on a tiny plan: results.json holds every run and the machine, the PNGs are real PNGs."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("matplotlib")

from he_agg.bench import all as bench_all  # noqa: E402
from he_agg.cli import build_parser  # noqa: E402

TINY = bench_all.Plan(clients=(1, 2), values=(4096, 8192), base_clients=2, base_values=4096, e2e=((3, 4096),))


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def test_tiny_plan_writes_json_and_pngs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bench_all.run_plan(TINY, tmp_path / "report", seed=1)
    data = json.loads((tmp_path / "report" / "results.json").read_text())
    assert data["plan"]["clients"] == [1, 2]
    assert [(r["clients"], r["values"]) for r in data["aggregate"]] == TINY.aggregate_points()
    assert [r["values"] for r in data["decrypt"]] == [4096, 8192]
    assert [(r["clients"], r["values"]) for r in data["e2e"]] == [(3, 4096)]
    for run in data["aggregate"]:
        assert run["native_s"] > 0 and run["tenseal_s"] > 0 and run["floor_s"] > 0
        assert run["max_abs_error"] < 1e-3
    for run in data["decrypt"]:
        assert run["committee_s"] > 0 and run["tenseal_decrypt_s"] > 0
    machine = data["machine"]
    assert machine["cpu_count"] >= 1 and machine["cpu_model"] and isinstance(machine["cpu_flags"], list)
    assert _finite(data) and data["elapsed_s"] > 0
    assert len(data["plots"]) == len(bench_all.PLOTS)
    for name in bench_all.PLOTS:
        blob = (tmp_path / "report" / name).read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5000


def test_plan_points_and_cli_registration() -> None:
    assert bench_all.QUICK.steps() == len(bench_all.QUICK.aggregate_points()) + len(bench_all.QUICK.values) + 1
    assert len(set(TINY.aggregate_points())) == len(TINY.aggregate_points()) == 3
    args = build_parser().parse_args(["bench", "all", "--out", "x", "--quick"])
    assert args._module is bench_all and args.quick and args.out == "x"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "all"])  # --out is required
