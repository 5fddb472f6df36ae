"""The main job, ``he-agg demo``, end to end at a smaller size."""

from __future__ import annotations

import json

import pytest

from he_agg.cli import main


def test_demo_runs_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--hospitals", "4", "--rounds", "2", "--local-epochs", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
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
    assert set(report["seconds_per_phase"]) >= {"key generation", "client encrypt", "server aggregate",
                                                "committee approve", "committee decrypt"}
    assert report["decryption_budget_used"] == len(report["rounds"]) + 2  # member 0 answers every release once


def test_demo_rejects_impossible_committee(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--parties", "2", "--threshold", "3"]) == 2
    assert "--threshold" in capsys.readouterr().err


def test_demo_rejects_threshold_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--parties", "3", "--threshold", "1"]) == 2  # t = 1 hands each member the key
    assert "--threshold" in capsys.readouterr().err
