"""he_agg.dask.ShardedAggregator on a real LocalCluster (2 worker processes): shard sums and
requests bit-identical to a local Aggregator, bad uploads refused in any shard with nothing lost."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("distributed")

import he_agg  # noqa: E402
from he_agg.dask import ShardedAggregator, shard_bounds  # noqa: E402
from he_agg.enrolled import EnrolledUpload, Ticket, c0_digest  # noqa: E402
from he_agg.errors import (  # noqa: E402
    AggregationError,
    DuplicateContributionError,
    ParameterError,
    ResidueRangeError,
    RoundMismatchError,
    ShareBindingError,
)
from he_agg.hazmat.wire.envelope import Kind, as_bytes, body_hash, open_envelope, seal_envelope  # noqa: E402
from he_agg.identity import PartyIdentity  # noqa: E402
from he_agg.member import EnrolledCommittee  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VALUES = 10_000  # 3 ciphertexts in slot packing: room for up to 3 shards
DENSE = 3 * 8192  # 3 ciphertexts in dense packing
ROUNDS = itertools.count(1)  # enrolled clients' rounds only go forward: one counter for every test
HYP = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def client(tmp_path_factory):  # type: ignore[no-untyped-def]
    from distributed import Client, LocalCluster

    scratch = tmp_path_factory.mktemp("dask")
    saved = {k: os.environ.get(k) for k in ("DASK_TEMPORARY_DIRECTORY", "PYTHONPATH")}
    os.environ["DASK_TEMPORARY_DIRECTORY"] = str(scratch)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), saved["PYTHONPATH"]]))  # workers import he_agg
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    dask_client = Client(cluster)
    dask_client.wait_for_workers(2, timeout=120)
    try:
        yield dask_client
    finally:
        dask_client.close()
        cluster.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def committee() -> he_agg.Committee:
    return he_agg.Committee.dealer_free(5, 3, policy=he_agg.Policy(budget=10_000))


@pytest.fixture(scope="module")
def updates(committee: he_agg.Committee) -> list[bytes]:
    ctx = committee.public_context
    return [he_agg.encrypt(ctx, np.linspace(-1, 1, VALUES) * (k + 1), weight=float(k + 1), client_id=f"site-{k}",
                           round_id=7).to_bytes() for k in range(4)]


@pytest.fixture(scope="module")
def enrolled():  # type: ignore[no-untyped-def]
    committee = EnrolledCommittee.generate(5, 3)
    clients = [committee.client(f"site-{i}") for i in range(4)]
    return committee, clients


def local_and_sharded(context, round_id, items, client, shards=None, store=None, **kwargs):  # type: ignore[no-untyped-def]
    local = he_agg.Aggregator(context, round_id, **kwargs)
    sharded = ShardedAggregator(context, round_id, client=client, shards=shards, store=store, **kwargs)
    for item in items:
        local.add(item)
        sharded.add(item)
    return local, sharded


def test_shard_bounds_cover_in_order() -> None:
    for count in range(1, 12):
        for shards in range(1, 6):
            bounds = shard_bounds(count, shards)
            assert bounds[0][0] == 0 and bounds[-1][1] == count
            assert all(a < b for a, b in bounds) and all(bounds[i][1] == bounds[i + 1][0] for i in range(len(bounds) - 1))
            assert len(bounds) == min(count, shards)


@HYP
@given(clients=st.integers(1, 4), shards=st.integers(1, 4))
def test_public_key_sum_and_request_bit_identical(client, committee, updates, clients: int, shards: int) -> None:  # type: ignore[no-untyped-def]
    ctx = committee.public_context
    local = he_agg.Aggregator(ctx, 7)
    sharded = ShardedAggregator(ctx, 7, client=client, shards=shards)
    for item in updates[:clients]:
        assert local.add(item) == sharded.add(item)
    assert sharded.contributors == local.contributors
    assert sharded.decryption_request().to_bytes() == local.decryption_request().to_bytes()
    assert np.array_equal(sharded._accumulator.data, local._accumulator.data)


def test_public_key_round_decrypts_like_local(client, committee, updates) -> None:  # type: ignore[no-untyped-def]
    local, sharded = local_and_sharded(committee.public_context, 7, updates, client)

    def decrypt(agg):  # type: ignore[no-untyped-def]
        request = agg.decryption_request(active_sets=[[0, 2, 4]])
        approvals = [committee[i].approve(request, contributions=agg.contributions).to_bytes() for i in range(4)]
        cert = he_agg.QuorumCertificate.collect(request.round_id, request.digest, approvals).to_bytes()
        return agg.finalize([committee[i].decryption_share(request, cert, contributions=agg.contributions).to_bytes()
                             for i in (0, 2, 4)])

    mean = decrypt(sharded)
    expected = np.linspace(-1, 1, VALUES) * (1 * 1 + 2 * 2 + 3 * 3 + 4 * 4) / 10
    assert np.abs(np.asarray(mean) - expected).max() < 1e-6
    assert sharded.result.total_weight == pytest.approx(10.0)


def test_public_key_dense_and_packed_bytes(client, committee) -> None:  # type: ignore[no-untyped-def]
    ctx = committee.public_context
    items = []
    for k in range(3):
        update = he_agg.encrypt(ctx, np.full(DENSE, 0.25 * k), client_id=f"d{k}", round_id=8, packing="dense")
        items.append(update.to_bytes(packed=k == 1) if k else update)  # object, packed bytes, plain bytes
    local, sharded = local_and_sharded(ctx, 8, items, client, shards=3)
    assert sharded.decryption_request().to_bytes() == local.decryption_request().to_bytes()


def forged_public(update: bytes, ctx, index: int) -> bytes:  # type: ignore[no-untyped-def]
    """``update`` with the residue at word ``index`` of the body set to its prime (checksum re-sealed)."""
    env = open_envelope(update, Kind.ENCRYPTED_UPDATE, "t")
    body = np.frombuffer(env.body, dtype=np.uint64).copy()
    n, moduli = ctx.params.n, ctx.params.data_moduli
    body[index] = moduli[(index % (len(moduli) * n)) // n]
    return seal_envelope(Kind.ENCRYPTED_UPDATE, env.meta.as_dict(), body)


@pytest.mark.parametrize("where", ["first", "last"])
def test_bad_residue_in_any_shard_refused_nothing_lost(client, committee, updates, where: str) -> None:  # type: ignore[no-untyped-def]
    ctx = committee.public_context
    words = len(open_envelope(updates[1], Kind.ENCRYPTED_UPDATE, "t").body) // 8
    forged = forged_public(updates[1], ctx, 0 if where == "first" else words - 1)
    local, sharded = local_and_sharded(ctx, 7, updates[:1], client, shards=3)
    with pytest.raises(ResidueRangeError, match=f"shard {0 if where == 'first' else 2} "):
        sharded.add(forged)
    for agg in (local, sharded):
        with pytest.raises(ResidueRangeError):
            agg.add(forged)
        assert agg.contributors == ("site-0",)
        agg.add(updates[1])  # the honest resubmission is accepted: nothing was half-added
    assert sharded.decryption_request().to_bytes() == local.decryption_request().to_bytes()


def test_workers_too_slow_or_gone_leave_the_sums_unchanged(client, committee, updates) -> None:  # type: ignore[no-untyped-def]
    ctx = committee.public_context
    local, sharded = local_and_sharded(ctx, 7, updates[:1], client, shards=2)
    sharded._shards.timeout = 1e-9  # no worker answers this fast: as if a worker were gone
    with pytest.raises(AggregationError, match="unchanged"):
        sharded.add(updates[1])
    assert sharded.contributors == ("site-0",)
    del sharded._shards.timeout
    for agg in (local, sharded):
        agg.add(updates[1])
    assert sharded.decryption_request().to_bytes() == local.decryption_request().to_bytes()


def test_shared_store_instead_of_scatter(client, committee, updates, enrolled, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctx = committee.public_context
    words = len(open_envelope(updates[1], Kind.ENCRYPTED_UPDATE, "t").body) // 8
    local, sharded = local_and_sharded(ctx, 7, updates[:2], client, shards=3, store=None)
    stored = ShardedAggregator(ctx, 7, client=client, shards=3, store=tmp_path)
    stored.add(updates[0])
    with pytest.raises(ResidueRangeError, match="shard 2 "):
        stored.add(forged_public(updates[1], ctx, words - 1))
    stored.add(updates[1])
    assert stored.decryption_request().to_bytes() == local.decryption_request().to_bytes()
    committee_e, members = enrolled
    round_id = next(ROUNDS)
    uploads = [c.encrypt(np.full(VALUES, 0.5), round_id=round_id) for c in members[:3]]
    local_e = he_agg.Aggregator(committee_e.public_context, round_id, min_clients=3)
    stored_e = ShardedAggregator(committee_e.public_context, round_id, client=client, store=tmp_path, min_clients=3)
    for item in uploads:
        local_e.add(item)
        stored_e.add(item)
    assert stored_e.decryption_request().to_bytes() == local_e.decryption_request().to_bytes()
    assert list(tmp_path.iterdir()) == []  # each upload's file is removed once summed (or refused)
    with pytest.raises(ParameterError, match="store"):
        ShardedAggregator(ctx, 7, client=client, store=tmp_path / "missing")


def test_refusals_match_local(client, committee, updates) -> None:  # type: ignore[no-untyped-def]
    ctx = committee.public_context
    other = he_agg.Committee.dealer_free(3, 2).public_context
    sharded = ShardedAggregator(ctx, 7, client=client)
    sharded.add(updates[0])
    with pytest.raises(DuplicateContributionError):
        sharded.add(updates[0])
    with pytest.raises(RoundMismatchError):
        ShardedAggregator(ctx, 6, client=client).add(updates[0])
    with pytest.raises(ShareBindingError):
        ShardedAggregator(other, 7, client=client).add(updates[0])
    sharded.decryption_request()
    with pytest.raises(AggregationError, match="closed"):
        sharded.add(updates[1])
    with pytest.raises(ParameterError):
        ShardedAggregator(ctx, 7)
    with pytest.raises(ParameterError):
        ShardedAggregator(ctx, 7, client=client, shards=0)


# -- enrolled rounds -------------------------------------------------------------------------


@HYP
@given(clients=st.integers(3, 4), shards=st.integers(1, 4), packed=st.booleans())
def test_enrolled_sum_and_request_bit_identical(client, enrolled, clients: int, shards: int, packed: bool) -> None:  # type: ignore[no-untyped-def]
    committee, members = enrolled
    round_id = next(ROUNDS)
    uploads = [EnrolledUpload.from_bytes(c.encrypt(np.full(VALUES, 0.5), round_id=round_id),
                                         committee.context.params, committee.context.committee_id, verify_key=None)
               for c in members[:clients]]
    items = [u.to_bytes(packed=packed) if k % 2 else u for k, u in enumerate(uploads)]  # bytes and objects
    local = he_agg.Aggregator(committee.public_context, round_id, min_clients=3)
    sharded = ShardedAggregator(committee.public_context, round_id, client=client, shards=shards, min_clients=3)
    for item in items:
        assert local.add(item) == sharded.add(item)
    assert sharded.decryption_request().to_bytes() == local.decryption_request().to_bytes()
    assert np.array_equal(sharded._accumulator.sum, local._accumulator.sum)


def test_enrolled_round_decrypts(client, enrolled) -> None:  # type: ignore[no-untyped-def]
    committee, members = enrolled
    round_id = next(ROUNDS)
    sharded = ShardedAggregator(committee.public_context, round_id, client=client, min_clients=3)
    for k, c in enumerate(members):
        sharded.add(c.encrypt(np.full(VALUES, 0.25 * k), round_id=round_id))
    mean = sharded.finalize(committee.shares(sharded.decryption_request()))
    assert np.abs(np.asarray(mean) - 0.25 * (0 + 1 + 2 + 3)).max() < 1e-6


def forged_enrolled(committee, good: bytes, index: int) -> bytes:  # type: ignore[no-untyped-def]
    """A correctly signed upload whose c0 has one residue equal to its prime (word ``index``)."""
    params, cid = committee.context.params, committee.context.committee_id
    upload = EnrolledUpload.from_bytes(good, params, cid, verify_key=None)
    c0 = upload.c0.copy()
    flat = c0.reshape(-1)
    flat[index] = params.data_moduli[(index % (len(params.data_moduli) * params.n)) // params.n]
    t = upload.ticket
    ticket = Ticket.sign(PartyIdentity.generate(), committee_id=cid, epoch=t.epoch, round_id=t.round_id,
                         client_id="forger", layout_digest=t.layout_digest,
                         c0_digest=c0_digest(params, upload.layout.length, body_hash(as_bytes(c0))))
    return EnrolledUpload(params, ticket, upload.layout, c0).to_bytes()


@pytest.mark.parametrize("where", ["first", "last"])
def test_enrolled_bad_residue_in_any_shard_refused_nothing_lost(client, enrolled, where: str) -> None:  # type: ignore[no-untyped-def]
    committee, members = enrolled
    round_id = next(ROUNDS)
    good = [c.encrypt(np.full(VALUES, 1.0), round_id=round_id) for c in members[:3]]
    words = 3 * len(committee.context.params.data_moduli) * committee.context.params.n
    forged = forged_enrolled(committee, good[0], 0 if where == "first" else words - 1)
    local, sharded = local_and_sharded(committee.public_context, round_id, good[:1], client, shards=3, min_clients=3)
    for agg in (local, sharded):
        with pytest.raises(ResidueRangeError):
            agg.add(forged)
        assert agg.contributors == ("site-0",)
        for item in good[1:]:
            agg.add(item)
    assert sharded.decryption_request().to_bytes() == local.decryption_request().to_bytes()


def test_enrolled_refuses_state_dir(client, enrolled, tmp_path) -> None:  # type: ignore[no-untyped-def]
    committee, _ = enrolled
    with pytest.raises(AggregationError, match="state_dir"):
        ShardedAggregator(committee.public_context, 1, client=client, state_dir=tmp_path)


@pytest.mark.slow  # starts two more clusters (~20 s under load)
def test_bench_dask_workers_side_by_side(capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from he_agg import cli

    assert cli.main(["bench", "aggregate", "--dask-workers", "2", "--clients", "2", "--values", "5000",
                     "--repeat", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["requests_identical"] is True and result["dask_workers"] == 2
    for name in ("local_1t", "local", "dask_1", "dask_2"):
        assert result[f"{name}_s"] > 0
    assert result["dask_speedup"] == pytest.approx(result["dask_1_s"] / result["dask_2_s"])
    assert result["upload_bytes"] > 5000 * 64
