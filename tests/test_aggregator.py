"""The drop-in aggregator: structures in, only the (weighted) aggregate out, every refusal."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import he_agg
from he_agg import stats
from he_agg.errors import (
    AggregationError,
    DuplicateContributionError,
    LayoutMismatchError,
    ParameterMismatchError,
    EquivocationError,
    QuorumError,
    ReplayError,
    ResidueRangeError,
    RoundMismatchError,
    ShareBindingError,
    TooFewContributorsError,
    VerificationError,
)
from he_agg.hazmat.wire.envelope import Kind, open_envelope, seal_envelope


@pytest.fixture(scope="module")
def committee() -> he_agg.Committee:
    return he_agg.Committee.dealer_free(5, 3, policy=he_agg.Policy(budget=10_000))


def decrypt_round(committee: he_agg.Committee, agg: he_agg.Aggregator, active: list[int]):  # type: ignore[no-untyped-def]
    """What the committee does with a closed round: a quorum approves, the active set answers (as bytes)."""
    request = agg.decryption_request(active_sets=[active])
    approvals = [committee[i].approve(request, contributions=agg.contributions).to_bytes()
                 for i in range(he_agg.quorum_size(len(committee), committee.context.colluders))]
    certificate = he_agg.QuorumCertificate.collect(request.round_id, request.digest, approvals).to_bytes()
    shares = [committee[i].decryption_share(request, certificate, contributions=agg.contributions).to_bytes()
              for i in active]
    return agg.finalize(shares)


def run_round(committee: he_agg.Committee, submissions, round_id: int, **kwargs):  # type: ignore[no-untyped-def]
    agg = he_agg.Aggregator(committee.public_context, round_id, **kwargs)
    for item in submissions:
        agg.add(item)
    return agg, decrypt_round(committee, agg, [0, 2, 4])


def bound_for(agg: he_agg.Aggregator) -> float:
    request = agg.decryption_request()
    ctx = request.context
    return ctx.noise_model().error_bound(request.summed, request.aggregate.count * ctx.params.n, ctx.threshold,
                                         request.aggregate.length)


shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=9)
structures = st.dictionaries(st.text("abcdefgh.", min_size=1, max_size=6), shapes, min_size=1, max_size=4)

_round_counter = iter(range(1000, 10**6))


@settings(max_examples=12, deadline=None)
@given(layout=structures, clients=st.integers(2, 5), dtype=st.sampled_from(["float64", "float32"]), data=st.data())
def test_weighted_mean_matches_plaintext(committee: he_agg.Committee, layout: dict, clients: int, dtype: str,
                                         data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    updates = [{name: rng.uniform(-3, 3, shape).astype(dtype) for name, shape in layout.items()} for _ in range(clients)]
    weights = [data.draw(st.floats(0.5, 500.0)) for _ in range(clients)]
    round_id = next(_round_counter)
    encrypted = [he_agg.encrypt(committee.public_context, u, weight=w, client_id=f"c{i}", round_id=round_id)
                 for i, (u, w) in enumerate(zip(updates, weights))]
    agg, mean = run_round(committee, [e.to_bytes() if i % 2 else e for i, e in enumerate(encrypted)], round_id)
    assert list(mean) == list(layout)
    tolerance = bound_for(agg) / sum(weights) + (1e-6 if dtype == "float32" else 0.0) * 3
    for name in layout:
        expected = np.average(np.stack([u[name].astype(np.float64) for u in updates]), axis=0, weights=weights)
        assert mean[name].dtype == np.dtype(dtype) and mean[name].shape == expected.shape
        assert np.abs(mean[name].astype(np.float64) - expected).max() <= tolerance * max(1.0, np.abs(expected).max())
    assert agg.result is not None and abs(agg.result.total_weight - sum(weights)) < 1e-6


def test_list_of_arrays_unweighted_sum(committee: he_agg.Committee) -> None:
    rng = np.random.default_rng(1)
    updates = [[rng.normal(size=(5, 5)), rng.integers(-50, 50, size=7)] for _ in range(3)]
    encrypted = [he_agg.encrypt(committee.public_context, u, client_id=f"s{i}", round_id=2) for i, u in enumerate(updates)]
    _, total = run_round(committee, encrypted, 2)
    assert isinstance(total, list) and total[1].dtype == updates[0][1].dtype
    assert np.abs(total[0] - sum(u[0] for u in updates)).max() < 1e-8
    assert np.array_equal(total[1], sum(u[1] for u in updates))  # integers come back exact


def test_tenseal_vectors_accepted_with_client_id_and_layout(committee: he_agg.Committee) -> None:
    ctx = committee.public_context
    vectors = np.random.default_rng(2).uniform(-1, 1, (3, 100))
    _, layout = he_agg.packing.flatten(vectors[0])
    agg = he_agg.Aggregator(ctx, 3, layout=layout)
    tenseal_ctx = ctx.to_tenseal()
    agg.add(ts.ckks_vector(tenseal_ctx, vectors[0].tolist()), client_id="a")
    agg.add(ts.ckks_vector(tenseal_ctx, vectors[1].tolist()).serialize(), client_id="b")
    agg.add(he_agg.CiphertextBatch.from_tenseal(ts.ckks_vector(tenseal_ctx, vectors[2].tolist()), ctx.params),
            client_id="c")
    with pytest.raises(AggregationError, match="client_id"):
        agg.add(ts.ckks_vector(tenseal_ctx, vectors[0].tolist()))
    total = decrypt_round(committee, agg, [1, 2, 3])
    assert np.abs(total - vectors.sum(axis=0)).max() < 1e-8


# -- refusals ---------------------------------------------------------------------------


@pytest.fixture()
def two_updates(committee: he_agg.Committee):  # type: ignore[no-untyped-def]
    ctx = committee.public_context
    return [he_agg.encrypt(ctx, {"w": np.ones((3, 3)) * k}, weight=2.0, client_id=f"site-{k}", round_id=9)
            for k in range(2)]


def test_duplicate_client_rejected(committee: he_agg.Committee, two_updates) -> None:  # type: ignore[no-untyped-def]
    agg = he_agg.Aggregator(committee.public_context, 9)
    agg.add(two_updates[0])
    with pytest.raises(DuplicateContributionError, match="site-0"):
        agg.add(two_updates[0].to_bytes())
    assert agg.contributors == ("site-0",)


def test_wrong_round_and_layout_rejected(committee: he_agg.Committee, two_updates) -> None:  # type: ignore[no-untyped-def]
    ctx = committee.public_context
    agg = he_agg.Aggregator(ctx, 10)
    with pytest.raises(RoundMismatchError, match="round 9"):
        agg.add(two_updates[0])
    agg = he_agg.Aggregator(ctx, 9)
    agg.add(two_updates[0])
    other_shape = he_agg.encrypt(ctx, {"w": np.ones((3, 4))}, weight=1.0, client_id="x", round_id=9)
    with pytest.raises(LayoutMismatchError, match="w"):
        agg.add(other_shape)
    other_name = he_agg.encrypt(ctx, {"v": np.ones((3, 3))}, weight=1.0, client_id="y", round_id=9)
    with pytest.raises(LayoutMismatchError):
        agg.add(other_name.to_bytes())
    assert len(agg) == 1


def test_other_committee_or_parameters_rejected(committee: he_agg.Committee, two_updates) -> None:  # type: ignore[no-untyped-def]
    stranger = he_agg.Committee.generate(3, 2)
    agg = he_agg.Aggregator(stranger.public_context, 9)
    with pytest.raises(ShareBindingError, match="another committee"):
        agg.add(two_updates[0].to_bytes())
    small = he_agg.Committee.generate(3, 2, he_agg.Params.from_bit_sizes(8192, [60, 40, 40, 60], 2.0**40))
    vec = ts.ckks_vector(small.public_context.to_tenseal(), [1.0] * 10)
    agg = he_agg.Aggregator(committee.public_context, 9, layout=he_agg.packing.flatten(np.ones(10))[1])
    with pytest.raises(ParameterMismatchError):
        agg.add(vec, client_id="z")


def test_corrupt_residue_rejected_and_sum_intact(committee: he_agg.Committee, two_updates) -> None:  # type: ignore[no-untyped-def]
    ctx = committee.public_context
    agg = he_agg.Aggregator(ctx, 9)
    agg.add(two_updates[0])
    env = open_envelope(two_updates[1].to_bytes(), Kind.ENCRYPTED_UPDATE, "t")
    body = np.frombuffer(env.body, dtype=np.uint64).copy()
    body[-1] = ctx.params.data_moduli[-1]  # the last residue equals its prime: re-sealed, checksum valid
    forged = seal_envelope(Kind.ENCRYPTED_UPDATE, env.meta.as_dict(), body)
    with pytest.raises(ResidueRangeError):
        agg.add(forged)
    agg.add(two_updates[1])  # the honest resubmission still works, and nothing was lost
    mean = decrypt_round(committee, agg, [0, 1, 2])
    assert np.abs(mean["w"] - 0.5).max() < 1e-8


def test_round_closes_and_min_clients(committee: he_agg.Committee, two_updates) -> None:  # type: ignore[no-untyped-def]
    agg = he_agg.Aggregator(committee.public_context, 9, min_clients=3)
    for update in two_updates:
        agg.add(update)
    with pytest.raises(TooFewContributorsError, match="at least 3"):
        agg.decryption_request()
    agg = he_agg.Aggregator(committee.public_context, 9)
    agg.add(two_updates[0])
    agg.decryption_request()
    with pytest.raises(AggregationError, match="closed"):
        agg.add(two_updates[1])


def test_decryptor_policy_through_the_aggregator(two_updates) -> None:  # type: ignore[no-untyped-def]
    guarded = he_agg.Committee.generate(3, 2, policy=he_agg.Policy(min_clients=2, verify=True, budget=10))
    ctx = guarded.public_context
    updates = [he_agg.encrypt(ctx, {"w": np.ones(4) * k}, weight=1.0, client_id=f"h{k}", round_id=1) for k in range(3)]
    lonely = he_agg.Aggregator(ctx, 1)
    lonely.add(updates[0])
    with pytest.raises(TooFewContributorsError):  # the key share refuses, whatever the aggregator allowed
        guarded[0].approve(lonely.decryption_request(), contributions=lonely.contributions)
    agg = he_agg.Aggregator(ctx, 1)
    for update in updates[:2]:
        agg.add(update.to_bytes())
    request = agg.decryption_request(active_sets=[[0, 1], [0, 2]])
    assert agg.decryption_request() is request  # the round's request never changes
    with pytest.raises(AggregationError, match="already names the active sets"):
        agg.decryption_request(active_sets=[[1, 2]])
    certificate = guarded.certify(request, contributions=agg.contributions)
    shares = [guarded[i].decryption_share(request, certificate, [0, 1], contributions=agg.contributions)
              for i in (0, 1)]
    assert np.abs(agg.finalize(shares)["w"] - 0.5).max() < 1e-8
    replay = he_agg.Aggregator(ctx, 1)
    for update in updates:
        replay.add(update)
    with pytest.raises(ReplayError, match="round 1") as info:  # one approved request per round, ever
        guarded[0].approve(replay.decryption_request(), contributions=replay.contributions)
    assert isinstance(info.value, EquivocationError)
    with pytest.raises(QuorumError):  # the first round's certificate does not carry over
        guarded[0].decryption_share(replay.decryption_request(), certificate, [0, 1],
                                    contributions=replay.contributions)
    tampered = dict(agg.contributions)
    tampered["h1"] = updates[2]
    with pytest.raises(VerificationError):
        guarded[2].decryption_share(request, certificate, [0, 2], contributions=tampered)
    with pytest.raises(VerificationError):
        guarded[2].approve(request, contributions=tampered)
    unretained = he_agg.Aggregator(ctx, 1, retain=False)
    unretained.add(updates[0])
    with pytest.raises(AggregationError, match="retain"):
        unretained.contributions


# -- statistics through the encrypted path -----------------------------------------------------


def test_federated_statistics(committee: he_agg.Committee) -> None:
    rng = np.random.default_rng(4)
    sites = [rng.normal(50, 10, rng.integers(20, 60)) for _ in range(4)]
    moments, histogram = stats.Moments(0, 100), stats.Histogram(np.linspace(0, 100, 11))
    for stat, round_id in ((moments, 20), (histogram, 21)):
        encrypted = [he_agg.encrypt(committee.public_context, stat.encode(x), client_id=f"h{i}", round_id=round_id)
                     for i, x in enumerate(sites)]
        _, summed = run_round(committee, encrypted, round_id)
        result = stat.decode(summed)
        pooled = np.clip(np.concatenate(sites), 0, 100)
        if stat is moments:
            assert result.count == pooled.size
            assert abs(result.mean - pooled.mean()) < 1e-9 and abs(result.sample_variance - pooled.var(ddof=1)) < 1e-7
        else:
            assert np.array_equal(result.counts, np.histogram(pooled, np.linspace(0, 100, 11))[0])


def test_kaplan_meier_from_encrypted_counts_matches_lifelines(committee: he_agg.Committee) -> None:
    from lifelines import KaplanMeierFitter

    rng = np.random.default_rng(8)
    grid = np.arange(1, 61, dtype=float)
    sites = []
    for _ in range(5):
        size = int(rng.integers(30, 80))
        sites.append((rng.integers(1, 61, size).astype(float), rng.integers(0, 2, size)))
    km = stats.KaplanMeier(grid)
    encrypted = [he_agg.encrypt(committee.public_context, km.encode(d, e), client_id=f"reg-{i}", round_id=30)
                 for i, (d, e) in enumerate(sites)]
    _, summed = run_round(committee, encrypted, 30)
    result = km.decode(summed)
    durations = np.concatenate([d for d, _ in sites])
    events = np.concatenate([e for _, e in sites])
    fitter = KaplanMeierFitter().fit(durations, events)
    expected = fitter.survival_function_at_times(grid).to_numpy()
    assert np.abs(result.survival - expected).max() < 1e-6
