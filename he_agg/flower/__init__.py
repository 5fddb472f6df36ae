"""he_agg inside Flower (Message API, flwr >= 1.41): encrypted FedAvg with the committee as Flower nodes.

* :class:`EncryptedFedAvg` — server-side wrapper around any ``flwr.serverapp.strategy`` strategy.
* :func:`install` — registers the ``query.he_agg_*`` handlers (set-up, approve, decrypt) on a ClientApp.
* :func:`encrypted_train_mod` — ClientApp mod: a train reply leaves as one enrolled upload.
* :func:`node_role` — a node's role and state directory (node config, or partition-id in simulation).

See docs/FLOWER.md. Importing this module imports flwr.
"""

from ._roles import Role, node_role
from .node import QUERIES, encrypt_reply, encrypted_train_mod, install
from .strategy import EncryptedFedAvg

__all__ = ["EncryptedFedAvg", "QUERIES", "Role", "encrypt_reply", "encrypted_train_mod", "install", "node_role"]
