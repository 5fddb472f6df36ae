"""he_agg inside a real Flower simulation: 3 committee nodes (t = 2) and 4 training clients.

The ClientApp and the server's pieces are the ones shipped in examples/flower. The wrapped
FedAvg records everything it receives: one reply per round, the decrypted weighted mean,
which must equal plaintext FedAvg of the same local models within the documented bound.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")
pytest.importorskip("sklearn")

from flwr.serverapp import ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from he_agg.hazmat.noise import EnrolledNoiseModel  # noqa: E402
from he_agg.params import ENROLLED  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "flower"
MEMBERS, THRESHOLD, CLIENTS, ROUNDS, EPOCHS = 3, 2, 4, 3, 20


class RecordingFedAvg(FedAvg):  # type: ignore[misc]
    """FedAvg that keeps the global model it sends and every reply it is given."""

    def __init__(self) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=CLIENTS,
                         min_available_nodes=CLIENTS)
        self.sent: dict[int, dict[str, np.ndarray]] = {}
        self.received: dict[int, list[dict[str, Any]]] = {}

    def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
        self.sent[server_round] = {k: v.numpy().copy() for k, v in arrays.items()}
        self.nodes_seen = list(grid.get_node_ids())
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Any) -> Any:
        replies = list(replies)
        self.received[server_round] = [{
            "arrays": {k: v.numpy().copy() for rec in r.content.array_records.values() for k, v in rec.items()},
            "metrics": {k: v for rec in r.content.metric_records.values() for k, v in rec.items()},
            "configs": list(r.content.config_records.keys()),
        } for r in replies]
        return super().aggregate_train(server_round, replies)


def _mean_bound(total_weight: float, values: int, mean_abs: float) -> float:
    """The documented bound on a decrypted weighted mean: the sum bound B (EnrolledNoiseModel,
    flooding σ of the members' default policy) on Σw·x and on Σw, carried through the ratio."""
    from he_agg.flower.node import DEFAULT_EPOCH_COEFFICIENTS, DEFAULT_MAX_CLIENTS

    model = EnrolledNoiseModel(ENROLLED)
    sigma = model.flooding_sigma(DEFAULT_MAX_CLIENTS, DEFAULT_EPOCH_COEFFICIENTS)
    bound = model.error_bound(sigma, THRESHOLD, CLIENTS, values)
    return (bound + mean_abs * bound) / (total_weight - bound)


def test_encrypted_fedavg_in_a_flower_simulation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray's socket paths must stay under 107 bytes: a short directory of our own, removed after.
    ray_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    try:
        _simulate(tmp_path, ray_dir, monkeypatch)
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)


def _simulate(tmp_path: Path, ray_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.simulation import run_simulation

    for name, value in {"FLWR_HOME": tmp_path / "flwr", "HE_AGG_FLOWER_STATE_ROOT": tmp_path / "state"}.items():
        value.mkdir()
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("RAY_TMPDIR", str(ray_dir))
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("HE_AGG_FLOWER_MEMBERS", str(MEMBERS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(EXAMPLE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from he_agg_flower_example import client_app, server_app, task

    recorder = RecordingFedAvg()
    outcome: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def main(grid: Any, context: Any) -> None:
        outcome["result"] = server_app.run(grid, context, inner=recorder)

    run_simulation(server_app=server, client_app=client_app.app, num_supernodes=MEMBERS + CLIENTS,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    assert "result" in outcome, "the ServerApp did not finish"
    assert sorted(recorder.received) == list(range(1, ROUNDS + 1))
    assert len(recorder.nodes_seen) == CLIENTS  # the wrapped strategy never sees member nodes

    parts = [task.load_partition(k, CLIENTS) for k in range(CLIENTS)]
    sizes = np.array([len(y) for _, y in parts], dtype=float)
    errors: list[float] = []
    for r in range(1, ROUNDS + 1):
        replies = recorder.received[r]
        # One reply: the decrypted mean, weighted by the decrypted total of the clients' weights.
        assert len(replies) == 1
        got = replies[0]
        assert got["configs"] == [] and set(got["arrays"]) == {"w", "b"}
        assert got["metrics"]["num-examples"] == pytest.approx(sizes.sum(), abs=1e-6)
        local = [task.train(recorder.sent[r], x, y, EPOCHS) for x, y in parts]
        flat = np.concatenate([got["arrays"]["w"], got["arrays"]["b"]])
        models = [np.concatenate([m["w"], m["b"]]) for m in local]
        plain = np.average(models, axis=0, weights=sizes)
        bound = _mean_bound(sizes.sum(), task.FEATURES + 2, float(np.abs(plain).max()))
        errors.append(float(np.abs(flat - plain).max()))
        assert errors[-1] <= bound, (r, errors[-1], bound)
        assert all(np.abs(flat - m).max() > 100 * bound for m in models)  # no single client's update
        if r > 1:  # the next round starts from what the strategy received
            assert all(np.array_equal(recorder.sent[r][k], recorder.received[r - 1][0]["arrays"][k]) for k in "wb")
    print(f"max |encrypted - plaintext FedAvg| per round: {errors}, bound {bound:.2e}")
    final = outcome["result"].arrays
    assert np.array_equal(final["w"].numpy(), recorder.received[ROUNDS][0]["arrays"]["w"])
