"""One ClientApp for every node: committee members answer he_agg queries, training clients train.

The training function below is ordinary Flower code; ``encrypted_train_mod`` turns its reply
into one encrypted upload, so the server never sees this client's arrays or metrics.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from he_agg.flower import encrypted_train_mod, install, node_role

from .task import evaluate, load_partition, train

app = install(ClientApp(mods=[encrypted_train_mod]))


def _data(context: Context) -> tuple[np.ndarray, np.ndarray]:
    role = node_role(context)
    return load_partition(role.index, role.partitions)


@app.train()
def train_fn(msg: Message, context: Context) -> Message:
    x, y = _data(context)
    model = {key: array.numpy() for key, array in msg.content["arrays"].items()}
    epochs = int(context.run_config.get("local-epochs", 20))
    local = train(model, x, y, epochs)
    arrays = ArrayRecord({key: Array(value) for key, value in local.items()})
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": len(y)})})
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate_fn(msg: Message, context: Context) -> Message:
    x, y = _data(context)
    model = {key: array.numpy() for key, array in msg.content["arrays"].items()}
    loss, accuracy = evaluate(model, x, y)
    metrics = MetricRecord({"loss": loss, "accuracy": accuracy, "num-examples": len(y)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
