"""The ServerApp: FedAvg wrapped by he_agg's EncryptedFedAvg (it sees only the decrypted mean)."""

from __future__ import annotations

from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from he_agg.flower import EncryptedFedAvg

from .task import initial_model

app = ServerApp()


def _get(context: Context, key: str, default: int) -> int:
    return int(context.run_config.get(key, default))


def make_strategy(context: Context, inner: Any = None) -> EncryptedFedAvg:
    """EncryptedFedAvg around ``inner`` (default FedAvg on every enrolled client)."""
    clients = _get(context, "he-agg-clients", 4)
    inner = inner or FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=clients,
                            min_available_nodes=clients)
    return EncryptedFedAvg(inner, members=_get(context, "he-agg-members", 3),
                           threshold=_get(context, "he-agg-threshold", 2), min_train_nodes=clients,
                           max_clients=_get(context, "he-agg-max-clients", 100),
                           mode=str(context.run_config.get("he-agg-mode", "enrolled")))


def run(grid: Grid, context: Context, inner: Any = None) -> Any:
    """Set up the committee and enrollment, then run the rounds; returns Flower's Result."""
    strategy = make_strategy(context, inner)
    return strategy.start(grid=grid, initial_arrays=ArrayRecord({k: Array(v) for k, v in initial_model().items()}),
                          num_rounds=_get(context, "num-server-rounds", 3), train_config=ConfigRecord())


@app.main()
def main(grid: Grid, context: Context) -> None:
    result = run(grid, context)
    print(result)
