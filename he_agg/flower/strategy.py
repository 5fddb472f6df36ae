"""The server side: a Message-API strategy wrapper that sees only the decrypted weighted mean."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..aggregator import Aggregator
from ..context import EnrolledContext, PublicContext
from ..enrolled import key_lookup
from ..errors import EnrollmentError, HeAggError, QuorumError, UsageError
from ..hazmat.replicated import MAX_MEMBERS
from ..params import AGGREGATION, ENROLLED
from ..quorum import QuorumCertificate, quorum_size
from . import _records as rec
from .node import DEFAULT_MAX_CLIENTS, EPOCH

__all__ = ["EncryptedFedAvg", "MODES"]

MODES = ("enrolled", "public-key")

log = logging.getLogger("he_agg.flower")

try:
    from flwr.serverapp.strategy import Strategy as _Strategy
except ImportError:  # pragma: no cover - he_agg.flower needs flwr
    raise ImportError("he_agg.flower needs Flower: pip install 'he_agg[flower]'") from None


class _TrainingGrid:
    """The grid as the wrapped strategy sees it: only the enrolled training clients' node ids."""

    def __init__(self, grid: Any, nodes: Iterable[int]) -> None:
        self._grid = grid
        self._nodes = list(nodes)

    def get_node_ids(self) -> list[int]:
        live = set(self._grid.get_node_ids())
        return [n for n in self._nodes if n in live]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


class EncryptedFedAvg(_Strategy):  # type: ignore[misc]
    """Wrap a ``flwr.serverapp.strategy`` strategy so that it only ever sees the decrypted weighted
    mean of the training clients' updates (enrolled-client mode).

    ``start`` first runs the set-up over Flower messages: it learns each node's role, asks the
    ``members`` committee nodes for their public keys, publishes the :class:`EnrolledContext`,
    and relays every training client's enrollment (dealing → acks → accept/confirm). Each round,
    the training clients' uploads (ciphertext only) are summed on arrival, a quorum of members
    approves the request, the active set answers with decryption shares, and the wrapped
    strategy's ``aggregate_train`` receives one reply: the weighted mean and the total weight.
    """

    def __init__(self, strategy: Any, *, members: int = 3, threshold: int = 2, min_train_nodes: int = 3,
                 max_clients: int = DEFAULT_MAX_CLIENTS, mode: str = "enrolled", setup_timeout: float = 600.0,
                 message_timeout: float = 600.0) -> None:
        if mode not in MODES:
            raise UsageError(f"mode must be one of {MODES}")
        if not 2 <= threshold <= members <= MAX_MEMBERS:
            raise UsageError(f"need 2 <= threshold <= members <= {MAX_MEMBERS}")
        if min_train_nodes < 3 or max_clients < min_train_nodes:
            raise UsageError("need 3 <= min_train_nodes <= max_clients")
        self.strategy = strategy
        self.mode = mode
        self.public_context: PublicContext | None = None
        self.members, self.threshold = members, threshold
        self.min_train_nodes, self.max_clients = min_train_nodes, max_clients
        self.setup_timeout, self.message_timeout = setup_timeout, message_timeout
        self.weighted_by_key = getattr(strategy, "weighted_by_key", "num-examples")
        self.context: EnrolledContext | None = None
        self.member_nodes: list[int] = []  # node id of member i
        self.client_nodes: dict[int, str] = {}  # node id → enrolled client id
        self.client_keys: dict[str, bytes] = {}
        self._grid: Any = None
        self._dtypes: dict[str, np.dtype[Any]] = {}
        self._uploads: dict[str, bytes] = {}  # this round's accepted uploads (public-key members re-sum them)

    # -- Flower's Strategy interface --------------------------------------------------------

    def summary(self) -> None:
        log.info("EncryptedFedAvg: %d-of-%d committee, enrolled clients, wrapping %s",
                 self.threshold, self.members, type(self.strategy).__name__)
        self.strategy.summary()

    def start(self, grid: Any, initial_arrays: Any, num_rounds: int = 3, timeout: float = 3600,
              **kwargs: Any) -> Any:
        """Run the set-up (keys and enrollment), then the wrapped strategy's rounds."""
        self._grid = grid
        self.setup(grid)
        return super().start(grid, initial_arrays, num_rounds=num_rounds, timeout=timeout, **kwargs)

    def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Iterable[Any]:
        self._grid = grid
        self._dtypes = {key: array.numpy().dtype for key, array in arrays.items()}
        config["he-agg-max-clients"] = self.max_clients
        config["he-agg-weighted-by"] = self.weighted_by_key
        messages = list(self.strategy.configure_train(server_round, arrays, config, self._view(grid)))
        return [m for m in messages if m.metadata.dst_node_id in self.client_nodes]

    def aggregate_train(self, server_round: int, replies: Iterable[Any]) -> tuple[Any, Any]:
        """Sum the uploads, have the committee decrypt, hand the mean to the wrapped strategy."""
        from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

        aggregator = self._sum(server_round, replies)
        if aggregator is None:
            return None, None
        try:
            mean = self._release(server_round, aggregator)
        except HeAggError as exc:
            log.warning("round %d: the committee did not release the aggregate (%s: %s)",
                        server_round, type(exc).__name__, exc)
            return None, None
        total = float(aggregator.result.total_weight)
        arrays = ArrayRecord({key: Array(np.asarray(value, dtype=self._dtypes.get(key, np.float64)))
                              for key, value in mean.items()})
        key = getattr(self.strategy, "arrayrecord_key", "arrays")
        content = RecordDict({key: arrays, "metrics": MetricRecord({self.weighted_by_key: total})})
        return self.strategy.aggregate_train(server_round, [Message(content, 0, "train")])

    def configure_evaluate(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Iterable[Any]:
        messages = list(self.strategy.configure_evaluate(server_round, arrays, config, self._view(grid)))
        return [m for m in messages if m.metadata.dst_node_id in self.client_nodes]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Any]) -> Any:
        return self.strategy.aggregate_evaluate(server_round, replies)

    # -- set-up -------------------------------------------------------------------------------

    def setup(self, grid: Any) -> EnrolledContext | PublicContext:
        """Learn roles, form the committee, enroll every training client (all over ``grid``)."""
        nodes = self._wait_for_nodes(grid)
        roles = self._ask(grid, {n: rec.pack() for n in nodes}, "he_agg_role")
        members: dict[int, int] = {}
        for node, record in roles.items():
            if rec.field_text(record, "role", "role") == "member":
                members[rec.field_int(record, "index", "role")] = node
            else:
                self.client_nodes[node] = rec.field_text(record, "client-id", "role")
        if sorted(members) != list(range(self.members)):
            raise UsageError(f"expected committee members 0..{self.members - 1}, found {sorted(members)}")
        if len(set(self.client_nodes.values())) != len(self.client_nodes):
            raise UsageError("two training nodes share a client id")
        self.member_nodes = [members[i] for i in range(self.members)]
        keys = self._ask(grid, {n: rec.pack() for n in self.member_nodes}, "he_agg_identity")
        roster = tuple(rec.field_bytes(keys[n], "public-key", "identity") for n in self.member_nodes)
        if self.mode == "public-key":
            return self._keygen(grid, roster)
        self.context = EnrolledContext(ENROLLED, roster, self.threshold)
        wire = self.context.to_bytes()
        self._ask(grid, {n: rec.pack(context=wire) for n in self.member_nodes}, "he_agg_join")
        self._enroll(grid, wire)
        log.info("he_agg set-up: committee %s, %d enrolled clients", self.context.committee_id.hex()[:12],
                 len(self.client_nodes))
        return self.context

    def _keygen(self, grid: Any, roster: tuple[bytes, ...]) -> PublicContext:
        """Public-key mode: relay the three rounds of dealer-free key generation, then publish the key."""
        from ..keygen import KeygenConfig

        config = KeygenConfig.new(AGGREGATION, self.threshold, roster)
        ask = rec.pack(threshold=config.threshold, roster=list(roster), seed=config.seed)
        answers = self._ask(grid, {n: ask for n in self.member_nodes}, "he_agg_keygen1")
        for step in ("he_agg_keygen2", "he_agg_keygen3", "he_agg_keygen_finish"):
            messages = [rec.field_bytes(answers[n], "message", step) for n in self.member_nodes]
            answers = self._ask(grid, {n: rec.pack(messages=messages) for n in self.member_nodes}, step)
        contexts = {rec.field_bytes(answers[n], "context", "keygen") for n in self.member_nodes}
        if len(contexts) != 1:
            raise UsageError("the members ended key generation with different public keys")
        wire = contexts.pop()
        self.public_context = PublicContext.from_bytes(wire, AGGREGATION)
        self._ask(grid, {n: rec.pack(context=wire) for n in self.client_nodes}, "he_agg_public")
        log.info("he_agg set-up (public-key mode): committee %s, %d clients",
                 self.public_context.committee_id.hex()[:12], len(self.client_nodes))
        return self.public_context

    def _wait_for_nodes(self, grid: Any) -> list[int]:
        needed = self.members + self.min_train_nodes
        deadline = time.monotonic() + self.setup_timeout
        while len(nodes := list(grid.get_node_ids())) < needed:
            if time.monotonic() > deadline:
                raise UsageError(f"only {len(nodes)} of {needed} nodes connected before the set-up timeout")
            time.sleep(0.5)
        return nodes

    def _enroll(self, grid: Any, wire: bytes) -> None:
        offers = self._ask(grid, {n: rec.pack(context=wire) for n in self.client_nodes}, "he_agg_enroll")
        ids = [self.client_nodes[n] for n in self.client_nodes]
        for node, record in offers.items():
            if rec.field_text(record, "client-id", "enroll") != self.client_nodes[node]:
                raise EnrollmentError(f"node {node} enrolled under another client id")
        keys = [rec.field_bytes(offers[n], "public-key", "enroll") for n in self.client_nodes]
        dealings = [rec.field_bytes(offers[n], "dealing", "enroll") for n in self.client_nodes]
        deal = rec.pack(**{"client-ids": ids, "public-keys": keys, "dealings": dealings})
        answers = self._ask(grid, {n: deal for n in self.member_nodes}, "he_agg_deal")
        acks = {cid: [rec.field_list(answers[n], "acks", "deal", bytes)[k] for n in self.member_nodes]
                for k, cid in enumerate(ids)}
        accept = rec.pack(**{"client-ids": ids}, **{f"acks:{cid}": acks[cid] for cid in ids})
        accepted = self._ask(grid, {n: accept for n in self.member_nodes}, "he_agg_accept")
        everywhere = set(ids).intersection(*(rec.field_list(r, "accepted", "accept", str) for r in accepted.values()))
        self._ask(grid, {n: rec.pack(acks=acks[cid]) for n, cid in self.client_nodes.items() if cid in everywhere},
                  "he_agg_confirm")
        self.client_nodes = {n: cid for n, cid in self.client_nodes.items() if cid in everywhere}
        self.client_keys = {cid: key for cid, key in zip(ids, keys) if cid in everywhere}
        if len(self.client_nodes) < self.min_train_nodes:
            raise EnrollmentError(f"only {len(self.client_nodes)} clients enrolled with every member")

    # -- rounds -------------------------------------------------------------------------------

    def _view(self, grid: Any) -> _TrainingGrid:
        return _TrainingGrid(grid, self.client_nodes)

    def _sum(self, server_round: int, replies: Iterable[Any]) -> Any:
        if self.mode == "public-key":
            if self.public_context is None:
                raise UsageError("EncryptedFedAvg.setup has not run")
            aggregator = Aggregator(self.public_context, server_round, min_clients=self.min_train_nodes, retain=True)
        else:
            if self.context is None:
                raise UsageError("EncryptedFedAvg.setup has not run")
            aggregator = Aggregator(self.context, server_round, epoch=EPOCH, min_clients=self.min_train_nodes,
                                    client_keys=key_lookup(self.client_keys))
        self._uploads = {}
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error() or node not in self.client_nodes:
                log.info("round %d: no upload from node %d", server_round, node)
                continue
            try:
                blob = rec.field_bytes(rec.record_of(reply.content, "upload"), "upload", "upload")
                added = aggregator.add(blob)
                self._uploads[added.client_id] = blob
            except HeAggError as exc:
                log.warning("round %d: upload from node %d refused (%s: %s)", server_round, node,
                            type(exc).__name__, exc)
        if len(aggregator.contributors) < self.min_train_nodes:
            log.warning("round %d: %d uploads, fewer than %d: nothing released", server_round,
                        len(aggregator.contributors), self.min_train_nodes)
            return None
        return aggregator

    def _release(self, server_round: int, aggregator: Any) -> Any:
        """τ_r to every member, a quorum certificate of their approvals, shares from the active set."""
        context: Any = self.public_context if self.mode == "public-key" else self.context
        active = list(range(self.threshold))
        issued = aggregator.decryption_request(active_sets=[active])
        request = issued.to_bytes()
        extra: dict[str, Any] = {}
        if self.mode == "public-key":  # members re-sum the uploads the request names before they answer
            extra = {"client-ids": list(self._uploads), "uploads": list(self._uploads.values())}
        approvals = self._ask(self._grid, {n: rec.pack(request=request, **extra) for n in self.member_nodes},
                              "he_agg_approve", require_all=False)
        needed = quorum_size(context.parties, context.colluders)
        if len(approvals) < needed:
            raise QuorumError(f"round {server_round}: {len(approvals)} approvals, {needed} needed")
        signed = [rec.field_bytes(r, "approval", "approve") for r in approvals.values()]
        certificate = QuorumCertificate.collect(issued.round_id, issued.digest, signed).to_bytes()
        asks = {self.member_nodes[i]: rec.pack(request=request, certificate=certificate, **extra) for i in active}
        shares = self._ask(self._grid, asks, "he_agg_decrypt")
        return aggregator.finalize([rec.field_bytes(r, "share", "decrypt") for r in shares.values()])

    # -- transport ----------------------------------------------------------------------------

    def _ask(self, grid: Any, contents: dict[int, Any], name: str, *, require_all: bool = True) -> dict[int, Any]:
        """Send ``query.<name>`` to each node; its ``he_agg`` records by node id."""
        from flwr.app import Message

        messages = [Message(content, node, f"query.{name}") for node, content in contents.items()]
        answers: dict[int, Any] = {}
        for reply in grid.send_and_receive(messages, timeout=self.message_timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                log.warning("query.%s: node %d answered with an error: %s", name, node, reply.error.reason)
                continue
            if node in contents:
                answers[node] = rec.record_of(reply.content, f"query.{name}")
        missing = set(contents) - set(answers)
        if missing and require_all:
            raise UsageError(f"query.{name}: no answer from node(s) {sorted(missing)}")
        return answers

