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


@pytest.mark.slow  # ~35-45 s on 2 loaded cores (Ray start-up); the in-process grid tests below are the fast variant
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


# -- the same protocol in one process (no Ray): a grid that calls the ClientApp directly ----


class DirectGrid:
    """A Flower Grid stand-in: each message runs the node's ClientApp in this process;
    exceptions come back as error replies, as in Flower. ``tamper`` may rewrite a reply."""

    def __init__(self, app: Any, nodes: int, tamper: Any = None) -> None:
        from flwr.app import Context, RecordDict

        self.app, self.tamper = app, tamper
        self.contexts = {1000 + k: Context(run_id=1, node_id=1000 + k, state=RecordDict(), run_config={},
                                           node_config={"partition-id": k, "num-partitions": nodes})
                         for k in range(nodes)}
        self.sent: list[str] = []

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Any, timeout: float | None = None) -> list[Any]:
        from flwr.app import Error, Message

        replies = []
        for msg in messages:
            self.sent.append(msg.metadata.message_type)
            try:
                reply = self.app(msg, self.contexts[msg.metadata.dst_node_id])
            except Exception as exc:  # Flower turns a ClientApp exception into an error reply
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            replies.append(self.tamper(msg, reply) if self.tamper else reply)
        return replies


@pytest.fixture()
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 0)):  # as a ServerApp process has them
        monkeypatch.setattr(TaskIdentity, name, value)
    monkeypatch.setenv("HE_AGG_FLOWER_STATE_ROOT", str(tmp_path / "state"))
    monkeypatch.setenv("HE_AGG_FLOWER_MEMBERS", str(MEMBERS))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from he_agg_flower_example import client_app, server_app, task

    return client_app, server_app, task


def _run_direct(example: Any, recorder: RecordingFedAvg, tamper: Any = None, rounds: int = 2,
                mode: str = "enrolled") -> DirectGrid:
    from flwr.app import Context, RecordDict

    client_app, server_app, _ = example
    grid = DirectGrid(client_app.app, MEMBERS + CLIENTS + 1, tamper)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config={"num-server-rounds": rounds, "he-agg-clients": CLIENTS, "he-agg-mode": mode})
    server_app.run(grid, context, inner=recorder)
    return grid


def test_direct_grid_runs_setup_and_rounds_and_the_strategy_sees_one_mean(example: Any) -> None:
    _, _, task = example
    recorder = RecordingFedAvg()
    grid = _run_direct(example, recorder)
    parts = [task.load_partition(k, CLIENTS + 1) for k in range(CLIENTS + 1)]
    sizes = np.array([len(y) for _, y in parts], dtype=float)
    for r in (1, 2):
        (got,) = recorder.received[r]
        local = [task.train(recorder.sent[r], x, y, EPOCHS) for x, y in parts]
        plain = np.average([np.concatenate([m["w"], m["b"]]) for m in local], axis=0, weights=sizes)
        flat = np.concatenate([got["arrays"]["w"], got["arrays"]["b"]])
        assert np.abs(flat - plain).max() <= _mean_bound(sizes.sum(), task.FEATURES + 2, float(np.abs(plain).max()))
    # Each node's directory holds only its own key material, private to its owner.
    state = Path(os.environ["HE_AGG_FLOWER_STATE_ROOT"])
    for k in range(MEMBERS + CLIENTS + 1):
        run = state / f"node-{k}" / "run-1"
        names = {p.name for p in run.iterdir()}
        own = {"identity", "member", "member.state"} if k < MEMBERS else {"client", "client.rounds"}
        assert own <= names and not ({"identity", "member", "client"} - own) & names, (k, names)
        for name in own - {"member.state", "client.rounds"}:
            assert (run / name).stat().st_mode & 0o077 == 0
    # Set-up and release travel as he_agg queries; train messages go to the 5 clients only.
    assert grid.sent.count("train") == 2 * (CLIENTS + 1)
    assert {"query.he_agg_role", "query.he_agg_join", "query.he_agg_deal", "query.he_agg_accept",
            "query.he_agg_confirm", "query.he_agg_approve", "query.he_agg_decrypt"} <= set(grid.sent)


def test_public_key_mode_keygen_and_rounds_over_messages(example: Any) -> None:
    """Dealer-free key generation relayed as messages (each member replays its rounds from a
    sealed checkpoint), TenSEAL uploads, members re-summing the uploads before they answer."""
    from he_agg.context import PublicContext
    from he_agg.params import AGGREGATION

    _, _, task = example
    recorder = RecordingFedAvg()
    grid = _run_direct(example, recorder, rounds=1, mode="public-key")
    assert {"query.he_agg_keygen1", "query.he_agg_keygen2", "query.he_agg_keygen3", "query.he_agg_keygen_finish",
            "query.he_agg_public"} <= set(grid.sent) and "query.he_agg_enroll" not in grid.sent
    parts = [task.load_partition(k, CLIENTS + 1) for k in range(CLIENTS + 1)]
    sizes = np.array([len(y) for _, y in parts], dtype=float)
    (got,) = recorder.received[1]
    local = [task.train(recorder.sent[1], x, y, EPOCHS) for x, y in parts]
    plain = np.average([np.concatenate([m["w"], m["b"]]) for m in local], axis=0, weights=sizes)
    flat = np.concatenate([got["arrays"]["w"], got["arrays"]["b"]])
    state = Path(os.environ["HE_AGG_FLOWER_STATE_ROOT"])
    ctx = PublicContext.from_bytes((state / "node-0" / "run-1" / "public-context").read_bytes(), AGGREGATION)
    values = task.FEATURES + 2  # w, b and the weight slot: one ciphertext
    sum_bound = ctx.noise_model().error_bound(CLIENTS + 1, ctx.params.n, THRESHOLD, values)
    bound = (sum_bound + float(np.abs(plain).max()) * sum_bound) / (sizes.sum() - sum_bound)
    assert got["metrics"]["num-examples"] == pytest.approx(sizes.sum(), abs=sum_bound)
    assert np.abs(flat - plain).max() <= bound
    for k in range(MEMBERS):  # the round-1 secret is erased once the key share exists
        run = state / f"node-{k}" / "run-1"
        assert (run / "keyshare").exists() and not (run / "keygen-checkpoint").exists()


def test_a_bad_upload_is_left_out_and_the_round_still_releases(example: Any) -> None:
    from flwr.app import ConfigRecord, RecordDict

    def tamper(msg: Any, reply: Any) -> Any:
        if msg.metadata.message_type == "train" and msg.metadata.dst_node_id == 1000 + MEMBERS:
            blob = bytearray(reply.content["he_agg"]["upload"])
            blob[-1] ^= 1
            reply.content = RecordDict({"he_agg": ConfigRecord({"upload": bytes(blob)})})
        return reply

    recorder = RecordingFedAvg()
    _run_direct(example, recorder, tamper, rounds=1)
    (got,) = recorder.received[1]
    _, _, task = example
    sizes = [len(task.load_partition(k, CLIENTS + 1)[1]) for k in range(1, CLIENTS + 1)]
    assert got["metrics"]["num-examples"] == pytest.approx(sum(sizes), abs=1e-6)  # client 0 left out


def test_too_few_clients_release_nothing(example: Any) -> None:
    def drop(msg: Any, reply: Any) -> Any:
        from flwr.app import Error, Message

        if msg.metadata.message_type == "train" and msg.metadata.dst_node_id > 1000 + MEMBERS + 1:
            return Message(Error(code=0, reason="offline"), reply_to=msg)
        return reply

    recorder = RecordingFedAvg()
    _run_direct(example, recorder, drop, rounds=1)
    assert 1 not in recorder.received  # the wrapped strategy was never asked: nothing was decrypted


def test_node_roles_from_partition_id_and_from_node_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.app import Context, RecordDict

    from he_agg.errors import UsageError
    from he_agg.flower import node_role

    def ctx(node_config: dict[str, Any], run_config: dict[str, Any] | None = None) -> Any:
        return Context(run_id=5, node_id=9, node_config=node_config, state=RecordDict(), run_config=run_config or {})

    monkeypatch.delenv("HE_AGG_FLOWER_STATE_ROOT", raising=False)
    with pytest.raises(UsageError):
        node_role(ctx({"partition-id": 0, "num-partitions": 7}))
    run = {"he-agg-state-root": str(tmp_path), "he-agg-members": 3}
    member = node_role(ctx({"partition-id": 2, "num-partitions": 7}, run))
    client = node_role(ctx({"partition-id": 3, "num-partitions": 7}, run))
    assert (member.kind, member.index, member.state_dir) == ("member", 2, tmp_path / "node-2" / "run-5")
    assert (client.kind, client.index, client.partitions, client.client_id) == ("client", 0, 4, "client-0")
    deployed = node_role(ctx({"role": "member", "member-index": 1, "state-dir": str(tmp_path)}))
    assert (deployed.kind, deployed.index, deployed.simulated) == ("member", 1, False)
    for bad in ({"role": "member", "state-dir": str(tmp_path)}, {"role": "chair", "state-dir": "x"},
                {"role": "member", "member-index": -1, "state-dir": "x"}, {"role": "client"}, {}):
        with pytest.raises(UsageError):
            node_role(ctx(bad))


def test_records_refuse_wrong_types() -> None:
    from flwr.app import ConfigRecord, RecordDict

    from he_agg.errors import FormatError
    from he_agg.flower import _records as rec

    record = rec.record_of(rec.pack(a=b"x", n=3, s="t", l=[b"1"]), "test")
    assert rec.field_bytes(record, "a", "t") == b"x" and rec.field_int(record, "n", "t") == 3
    for call in (lambda: rec.field_bytes(record, "n", "t"), lambda: rec.field_int(record, "a", "t"),
                 lambda: rec.field_text(record, "missing", "t"), lambda: rec.field_list(record, "l", "t", str),
                 lambda: rec.record_of(RecordDict({"other": ConfigRecord({})}), "t")):
        with pytest.raises(FormatError):
            call()


def test_members_do_not_train_and_clients_do_not_decrypt(example: Any) -> None:
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

    from he_agg.flower._records import pack

    client_app, _, _ = example
    grid = DirectGrid(client_app.app, MEMBERS + CLIENTS)
    content = RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(30)), "b": Array(np.zeros(1))}),
                          "config": ConfigRecord({"server-round": 1})})
    to_member = Message(content, 1000, "train")
    to_client = Message(pack(request=b"x", certificate=b"y"), 1000 + MEMBERS, "query.he_agg_decrypt")
    not_set_up = Message(pack(request=b"x"), 1001, "query.he_agg_approve")
    replies = grid.send_and_receive([to_member, to_client, not_set_up])
    reasons = [r.error.reason for r in replies]
    assert "UsageError: a committee member does not train" in reasons[0]
    assert "UsageError: a client node does not answer query.he_agg_decrypt" in reasons[1]
    assert "no committee context" in reasons[2]


def test_keygen_checkpoint_resumes_to_identical_messages_and_refuses_misuse() -> None:
    from he_agg.errors import FormatError, KeygenError
    from he_agg.identity import PartyIdentity
    from he_agg.keygen import KeygenConfig, KeygenParty
    from he_agg.params import AGGREGATION

    ids = [PartyIdentity.generate() for _ in range(3)]
    config = KeygenConfig.new(AGGREGATION, 2, [i.public_key for i in ids])
    parties = [KeygenParty(config, i, ident) for i, ident in enumerate(ids)]
    with pytest.raises(KeygenError):
        parties[0].checkpoint()  # before round 1
    first = [p.round1() for p in parties]
    saved = [p.checkpoint() for p in parties]
    second = [p.round2(first) for p in parties]
    resumed = [KeygenParty.resume(config, i, ids[i], saved[i]) for i in range(3)]
    assert [r.round1() for r in resumed] == first and [r.round2(first) for r in resumed] == second
    assert [r.round3(second) for r in resumed] == [p.round3(second) for p in parties]
    with pytest.raises(KeygenError):
        parties[0].checkpoint()  # after round 2
    for bad in (saved[0][:-1], saved[0] + b"x", b"\xff\xff\xff\xff"):
        with pytest.raises(FormatError):
            KeygenParty.resume(config, 0, ids[0], bad)
