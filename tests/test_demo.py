"""The main job, ``he-agg demo``, end to end at a smaller size, in both modes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from he_agg.cli import main
from he_agg.params import ENROLLED

PHASES = {"client encrypt", "server aggregate", "committee approve", "committee decrypt"}


def _demo(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    assert main(["demo", "--hospitals", "4", "--rounds", "2", "--local-epochs", "5", *extra, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _check_results(report: dict[str, Any]) -> None:
    assert report["committee"] == "3-of-5" and len(report["patients"]) == 4
    assert report["standardisation_max_error"] < 1e-6
    for r in report["rounds"]:
        assert abs(r["encrypted_accuracy"] - r["plaintext_accuracy"]) < 1e-9
        assert r["encrypted_accuracy"] > 0.85
        assert r["max_weight_difference"] < 1e-6
        assert r["bytes_per_client"] > 0
    q = report["query"]
    assert q["count"] == sum(report["patients"])
    assert abs(q["mean"] - q["plaintext_mean"]) < 1e-9
    assert abs(q["variance"] - q["plaintext_variance"]) < 1e-6
    assert sum(q["histogram_counts"]) <= q["count"]


def test_demo_enrolled_is_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    report = _demo(capsys)
    assert report["mode"] == "enrolled"
    _check_results(report)
    # c0 only: one ciphertext on two data primes plus envelope and ticket; public-key mode sends (c0, c1)
    one_ciphertext = len(ENROLLED.data_moduli) * ENROLLED.n * 8
    assert all(one_ciphertext < r["bytes_per_client"] < one_ciphertext + 4096 for r in report["rounds"])
    assert report["enrollment_message_bytes"] > 0 and "keygen_message_bytes" not in report
    assert set(report["seconds_per_phase"]) == PHASES | {"enrollment"}
    releases = len(report["rounds"]) + 2  # standardisation, training rounds, the query
    assert report["decryption_budget_unit"] == "coefficients"
    assert report["decryption_budget_used"] == releases * ENROLLED.n  # member 0 answers each one-ciphertext release


def test_demo_public_key_mode(capsys: pytest.CaptureFixture[str]) -> None:
    report = _demo(capsys, "--mode", "public-key")
    assert report["mode"] == "public-key"
    _check_results(report)
    assert report["keygen_message_bytes"] > 0
    assert set(report["seconds_per_phase"]) == PHASES | {"key generation"}
    assert report["decryption_budget_unit"] == "shares"
    assert report["decryption_budget_used"] == len(report["rounds"]) + 2  # member 0 answers every release once


def test_demo_renders_a_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--hospitals", "3", "--rounds", "1", "--local-epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "enrolled-client mode" in out and "Query 'mean radius'" in out and "coefficients" in out


def test_demo_rejects_an_unknown_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--mode", "plaintext"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'plaintext'" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["enrolled", "public-key"])
def test_demo_rejects_impossible_committee(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--mode", mode, "--parties", "2", "--threshold", "3"]) == 2
    assert "--threshold" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["enrolled", "public-key"])
def test_demo_rejects_threshold_one(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--mode", mode, "--parties", "3", "--threshold", "1"]) == 2  # t = 1 hands each member the key
    assert "--threshold" in capsys.readouterr().err
