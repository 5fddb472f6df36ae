"""Which role a Flower node plays, and where it keeps its state.

Deployment: ``flower-supernode --node-config "role='member' member-index=0 state-dir='/srv/m0'"``
(or ``role='client' client-id='hospital-3' state-dir=...``). Simulation: nodes carry only
``partition-id``; partition ids ``0 … members-1`` are the committee members, the rest are
training clients (data partition ``partition-id − members``), and each node keeps its state
under ``<state root>/node-<partition-id>``. The member count and the state root come from
the run config (``he-agg-members``, ``he-agg-state-root``) or, for ``run_simulation`` which
has no run config, from the environment (``HE_AGG_FLOWER_MEMBERS``, ``HE_AGG_FLOWER_STATE_ROOT``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError

__all__ = ["Role", "node_role", "DEFAULT_MEMBERS"]

DEFAULT_MEMBERS = 3


@dataclass(frozen=True)
class Role:
    """A node's role: ``kind`` is "member" or "client"; ``index`` the member index or the
    client's data partition; ``state_dir`` this run's private directory."""

    kind: str
    index: int
    client_id: str
    state_dir: Path
    simulated: bool
    node_config: dict[str, Any]
    partitions: int = 1

    @property
    def is_member(self) -> bool:
        return self.kind == "member"


def _setting(context: Any, key: str, env: str) -> Any:
    value = context.run_config.get(key)
    return os.environ.get(env) if value in (None, "") else value


def _integer(value: Any, what: str, low: int = 0) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be an integer, got {value!r}") from None
    if number < low or isinstance(value, bool) or (isinstance(value, float) and value != number):
        raise UsageError(f"{what} must be an integer >= {low}, got {value!r}")
    return number


def node_role(context: Any) -> Role:
    """The role of the node running ``context`` (UsageError for an incomplete configuration)."""
    config = dict(context.node_config)
    run = f"run-{int(context.run_id)}"
    if "role" in config:
        kind = config["role"]
        if kind not in ("member", "client") or not config.get("state-dir"):
            raise UsageError("node config needs role='member'|'client' and state-dir='...'")
        state = Path(str(config["state-dir"])) / run
        if kind == "member":
            return Role("member", _integer(config.get("member-index"), "member-index"), "", state, False, config)
        client_id = str(config.get("client-id") or f"node-{int(context.node_id)}")
        partition = _integer(config.get("partition-id", 0), "partition-id")
        partitions = _integer(config.get("num-partitions", partition + 1), "num-partitions", partition + 1)
        return Role("client", partition, client_id, state, False, config, partitions)
    if "partition-id" not in config:
        raise UsageError("a node needs role=... in its node config (or partition-id in simulation)")
    partition = _integer(config["partition-id"], "partition-id")
    members = _integer(_setting(context, "he-agg-members", "HE_AGG_FLOWER_MEMBERS") or DEFAULT_MEMBERS,
                       "he-agg-members", 2)
    root = _setting(context, "he-agg-state-root", "HE_AGG_FLOWER_STATE_ROOT")
    if not root:
        raise UsageError("simulation needs he-agg-state-root in the run config or HE_AGG_FLOWER_STATE_ROOT")
    state = Path(str(root)) / f"node-{partition}" / run
    if partition < members:
        return Role("member", partition, "", state, True, config)
    partitions = _integer(config.get("num-partitions", partition + 1), "num-partitions", partition + 1) - members
    return Role("client", partition - members, f"client-{partition - members}", state, True, config, partitions)
