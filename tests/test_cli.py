"""The ``he-agg`` command line: end-to-end runs on a tiny size, help, errors, the command registry."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from he_agg import cli
from he_agg.bench import aggregate, common
from he_agg.errors import FormatError

TINY = ["bench", "aggregate", "--clients", "3", "--values", "5000", "--repeat", "1", "--seed", "7"]
TIMES = ["tenseal_s", "native_s", "numba_s", "floor_s", "parse_s", "kernel_s"]
REQUIRED = TIMES + ["speedup_vs_tenseal", "fraction_of_floor", "numba_fraction_of_floor",
                    "bytes_per_value", "tenseal_bytes_per_value", "he_agg_bytes_per_value",
                    "max_abs_error", "backends_bit_identical", "clients", "values",
                    "ciphertexts_per_client", "format", "repeat", "cpu_count", "he_agg_version",
                    "tenseal_version", "floor_method"]


@pytest.fixture(scope="module")
def json_run() -> dict[str, Any]:
    """The real entry point in a fresh process: stdout must be exactly one JSON object."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "he_agg.cli", *TINY, "--format", "tenseal-raw", "--json"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # fails if TenSEAL's C++ warning leaked into stdout


def test_json_has_the_figures(json_run: dict[str, Any]) -> None:
    assert set(REQUIRED) <= json_run.keys()
    for key in TIMES:
        assert math.isfinite(json_run[key]) and json_run[key] > 0, key
    assert json_run["max_abs_error"] < 1e-6
    assert json_run["bytes_per_value"] > 0 and json_run["he_agg_bytes_per_value"] > 0
    assert json_run["backends_bit_identical"] is True
    assert (json_run["clients"], json_run["values"], json_run["ciphertexts_per_client"]) == (3, 5000, 2)
    assert json_run["format"] == "tenseal-raw" and json_run["seed"] == 7
    assert json_run["speedup_vs_tenseal"] == pytest.approx(json_run["tenseal_s"] / json_run["native_s"])
    assert json_run["fraction_of_floor"] == pytest.approx(json_run["floor_s"] / json_run["native_s"])
    assert json_run["floor_s"] == min(json_run["floor_candidates_s"].values())


def test_table_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "aggregate.png"
    assert cli.main([*TINY, "--format", "he_agg", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "native" in out and "floor" in out and "max_abs_error" in out
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["bench", "--help"], ["bench", "aggregate", "--help"], ["--version"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "bench" in out and "--clients" in out and "--json" in out and "--plot" in out
    assert "he-agg " in out  # --version


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "aggregate", "--clients", "0"], "--clients: must be at least 1"),
        (["bench", "aggregate", "--values", "many"], "expected a whole number"),
        (["bench", "aggregate", "--format", "protobuf"], "invalid choice: 'protobuf'"),
        (["bench"], "required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _refuse_to_run(args: Any) -> dict[str, Any]:
    raise AssertionError("the command should have been refused before running")


def test_he_agg_error_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def broken(args: Any) -> dict[str, Any]:
        raise FormatError("input 3: truncated protobuf varint")

    monkeypatch.setattr(aggregate, "run", broken)
    assert cli.main(["bench", "aggregate"]) == 2
    err = capsys.readouterr().err
    assert err == "he-agg: error: input 3: truncated protobuf varint\n"


def test_missing_matplotlib_fails_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setattr(aggregate, "run", _refuse_to_run)
    assert cli.main(["bench", "aggregate", "--plot", str(tmp_path / "x.png")]) == 2
    assert "pip install he_agg[plot]" in capsys.readouterr().err


def test_unwritable_plot_path_fails_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(aggregate, "run", _refuse_to_run)
    assert cli.main(["bench", "aggregate", "--plot", str(tmp_path / "missing" / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_too_little_memory_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(common, "available_memory", lambda: 1 << 20)
    assert cli.main(["bench", "aggregate", "--clients", "2", "--values", "10"]) == 2
    assert "lower --clients or --values" in capsys.readouterr().err


def test_a_command_is_one_registry_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    module = types.ModuleType("he_agg_fake_command", "Say how many (a test command).")
    module.add_arguments = lambda parser: parser.add_argument("--count", type=int, default=1)  # type: ignore[attr-defined]
    module.run = lambda args: {"count": args.count}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, ("demo",), module.__name__)
    assert cli.main(["demo", "--count", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"count": 5}
    assert cli.main(["demo"]) == 0  # default view: a key/value table
    assert "count" in capsys.readouterr().out


def test_registered_commands_have_the_interface() -> None:
    for words, name in cli.COMMANDS.items():
        module = __import__(name, fromlist=["run"])
        assert callable(module.add_arguments) and callable(module.run), words
        assert (module.__doc__ or "").strip(), f"{name} needs a docstring: its first line is the help"


def test_quiet_stdout_silences_native_writes(capfd: pytest.CaptureFixture[str]) -> None:
    with common.quiet_stdout():
        os.write(1, b"WARNING from C++\n")
    os.write(1, b"after\n")
    assert capfd.readouterr().out == "after\n"


def test_measure_reports_min_and_median() -> None:
    ticks = iter(range(10))
    timing, result = common.measure(lambda: next(ticks), 3)
    assert result == 2 and len(timing.runs) == 3
    assert timing.best == min(timing.runs) and timing.median == sorted(timing.runs)[1]
    with pytest.raises(ValueError):
        common.measure(lambda: None, 0)


def test_bench_decrypt_times_approvals_apart(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "decrypt", "--values", "3000", "--repeat", "1", "--seed", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["quorum"] == 4  # ⌈(5 + 2 + 1)/2⌉ members approve
    assert 0 < result["approve_s"] <= result["approve_max_s"]
    assert result["committee_s"] == pytest.approx(result["approve_max_s"] + result["decrypt_only_s"])
    assert result["decrypt_only_s"] == pytest.approx(result["share_max_s"] + result["combine_s"])
    assert result["max_abs_error"] <= result["error_bound"]


E2E = ["bench", "e2e", "--clients", "3", "--values", "3000", "--distinct", "2", "--parties", "4",
       "--threshold", "2", "--seed", "2"]


def _check_mode(result: dict[str, Any], prefix: str) -> None:
    assert result[f"{prefix}_quorum"] == 3  # ⌈(4 + 1 + 1)/2⌉
    assert 0 < result[f"{prefix}_approve_s"] <= result[f"{prefix}_approve_max_s"]
    assert result[f"{prefix}_committee_decrypt_s"] == pytest.approx(
        result[f"{prefix}_approve_max_s"] + result[f"{prefix}_decrypt_only_s"])
    assert result[f"{prefix}_decrypt_only_s"] == pytest.approx(result[f"{prefix}_share_max_s"]
                                                               + result[f"{prefix}_combine_s"])
    # a member's time per round: its approval plus, in the active set, its share
    assert result[f"{prefix}_member_round_max_s"] <= result[f"{prefix}_approve_max_s"] + result[f"{prefix}_share_max_s"]
    assert result[f"{prefix}_member_round_s"] <= result[f"{prefix}_member_round_max_s"]
    assert result[f"{prefix}_max_abs_error"] < 1e-6
    assert result[f"{prefix}_client_encrypt_s"] > 0 and result[f"{prefix}_server_aggregate_s"] > 0


@pytest.mark.parametrize("mode, prefix, absent", [("enrolled", "enrolled", "public_key"),
                                                  ("public-key", "public_key", "enrolled")])
def test_bench_e2e_each_mode(mode: str, prefix: str, absent: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*E2E, "--mode", mode, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mode"] == mode
    _check_mode(result, prefix)
    assert not any(key.startswith(absent) for key in result)
    assert result["tenseal_client_encrypt_s"] > 0 and result["tenseal_max_abs_error"] < 1e-6
    if mode == "enrolled":
        assert result["enrolled_max_abs_error"] <= result["enrolled_error_bound"]
        # c0 only: one ciphertext (4096 slots) on two 60-bit primes, plus envelope and ticket
        assert 2 * 8192 * 8 < result["enrolled_bytes_per_client"] < 2 * 8192 * 8 + 4096
        assert result["enrolled_encrypt_speedup_vs_tenseal"] == pytest.approx(
            result["tenseal_client_encrypt_s"] / result["enrolled_client_encrypt_s"])
        assert result["enrolled_enrollment_s"] > 0 and result["enrolled_dealing_bytes"] > 0
    else:
        assert result["public_key_bytes_per_client"] > 2 * 2 * 8192 * 8  # (c0, c1)


def test_bench_e2e_both_modes_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "e2e.png"
    assert cli.main([*E2E, "--clients", "4", "--plot", str(png)]) == 0  # --mode both is the default
    out = capsys.readouterr().out
    assert "he_agg enrolled" in out and "he_agg public-key" in out and "TenSEAL alone" in out
    assert "member time" in out and "faster than TenSEAL" in out
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_bench_e2e_refuses_too_few_clients(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*E2E[:3], "2", *E2E[4:]]) == 2  # the members' default policy would refuse
    assert "--clients" in capsys.readouterr().err
