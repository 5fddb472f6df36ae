"""Threshold decryption: the audit surface for the claims in docs/SECURITY.md."""

from __future__ import annotations

import itertools
import math
import os
import pickle
import stat

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings
from hypothesis import strategies as st

from he_agg.ciphertext import CiphertextBatch
from he_agg.committee import Committee, combine, verification_sets
from he_agg.context import PublicContext
from he_agg.errors import (
    BudgetExhaustedError,
    ChecksumError,
    FormatError,
    InconsistentShareError,
    ReplayError,
    ShareBindingError,
    ThresholdError,
    TooFewContributorsError,
    VerificationError,
)
from he_agg.hazmat import kernels
from he_agg.hazmat.decryption import decode_phase, phase
from he_agg.hazmat.sampling import KeyedStream, gaussian_integers
from he_agg.hazmat.shamir import lagrange_at_zero
from he_agg.keyshare import KeyShare, Policy
from he_agg.params import Params
from he_agg.requests import Contribution, DecryptionRequest, DecryptionShare

VALUES = 3000


def encrypt_clients(context: PublicContext, plain: np.ndarray) -> list[CiphertextBatch]:
    ctx = context.to_tenseal()
    return [CiphertextBatch.from_tenseal(ts.ckks_vector(ctx, row.tolist()), context.params) for row in plain]


def request_for(context: PublicContext, batches: list[CiphertextBatch], round_id: int = 1) -> DecryptionRequest:
    aggregate = CiphertextBatch.sum(batches, context.params)
    contributions = [Contribution(f"site-{i}", b.digest) for i, b in enumerate(batches)]
    return DecryptionRequest(context, round_id, aggregate, contributions)


def documented_bound(request: DecryptionRequest) -> float:
    ctx = request.context
    return ctx.noise_model().error_bound(request.summed, request.aggregate.count * ctx.params.n, ctx.threshold,
                                         request.aggregate.length)


@pytest.fixture(scope="module")
def committee() -> Committee:
    return Committee.dealer_free(5, 3, policy=Policy(budget=1000))


@pytest.fixture(scope="module")
def setup(committee: Committee):  # type: ignore[no-untyped-def]
    plain = np.random.default_rng(5).uniform(-1, 1, (8, VALUES))
    batches = encrypt_clients(committee.context, plain)
    return plain, batches, request_for(committee.context, batches)


# -- any t of n decrypt; t-1 reveal nothing ---------------------------------------------------


@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 10), data=st.data())
def test_every_t_subset_decrypts(n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    maker = data.draw(st.sampled_from([Committee.generate, Committee.dealer_free]))
    committee = maker(n, t, policy=Policy(budget=1000))
    plain = np.random.default_rng(n * 31 + t).uniform(-1, 1, (3, 700))
    request = request_for(committee.context, encrypt_clients(committee.context, plain))
    bound = documented_bound(request)
    subsets = list(itertools.combinations(range(n), t))
    if len(subsets) > 12:  # all of them for small committees, a fixed spread otherwise
        subsets = subsets[:: len(subsets) // 12][:12]
    for active in subsets:
        values = committee.decrypt(request, active)
        assert np.abs(values - plain.sum(axis=0)).max() <= bound, (n, t, active)


def test_fewer_than_t_shares_reveal_nothing(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    plain, _, request = setup
    shares = [committee[p].decryption_share(request, (0, 1, 2)) for p in (0, 1)]
    with pytest.raises(ThresholdError, match="no active set has all 3 shares"):
        combine(request, shares)
    # Doing the arithmetic anyway: the result is unrelated to the message.
    params = committee.context.params
    garbage = decode_phase(phase(np.ascontiguousarray(request.aggregate.data[:, 0]), [s.residues for s in shares],
                                 params), params).reshape(-1)[:VALUES]
    expected = plain.sum(axis=0)
    assert np.abs(garbage).mean() > 1e6 * np.abs(expected).mean()
    assert abs(np.corrcoef(garbage, expected)[0, 1]) < 0.1


def test_final_error_within_documented_bound_1000_clients(committee: Committee) -> None:
    """The issue's precision target at the default parameters and 40-bit flooding."""
    context = committee.context
    ctx = context.to_tenseal()
    plain = np.random.default_rng(9).uniform(-1, 1, (4, 4096))
    fresh = [CiphertextBatch.from_tenseal(ts.ckks_vector(ctx, row.tolist()), context.params) for row in plain]
    # 1,000 clients: each fresh ciphertext counted 250 times (same noise law, far cheaper to make)
    aggregate = CiphertextBatch.sum([b for b in fresh for _ in range(250)], context.params)
    contributions = [Contribution(f"c{i}", fresh[i % 4].digest) for i in range(1000)]
    request = DecryptionRequest(context, 7, aggregate, contributions)
    values = committee.decrypt(request, (0, 1, 2))
    error = np.abs(values - 250 * plain.sum(axis=0)).max()
    assert error <= documented_bound(request) <= 1e-6


# -- dealer and dealer-free behave identically; TenSEAL clients work unmodified ----------------


@pytest.mark.parametrize("maker", [Committee.generate, Committee.dealer_free])
def test_both_key_generations_work_with_unmodified_tenseal(maker) -> None:  # type: ignore[no-untyped-def]
    committee = maker(4, 2, policy=Policy(budget=100))
    shipped = PublicContext.from_bytes(committee.context.to_bytes())
    assert shipped == committee.context
    client_ctx = ts.context_from(shipped.tenseal_bytes())  # what a client receives
    assert not client_ctx.has_secret_key()
    plain = np.random.default_rng(2).uniform(-5, 5, (3, 500))
    blobs = [ts.ckks_vector(client_ctx, row.tolist()).serialize() for row in plain]  # plain TenSEAL bytes
    batches = [CiphertextBatch.from_tenseal(b, shipped.params) for b in blobs]
    request = request_for(committee.context, batches)
    values = committee.decrypt(request, (1, 3))
    assert np.abs(values - plain.sum(axis=0)).max() <= documented_bound(request)
    assert committee.context.secret_terms == (1 if maker.__name__ == "generate" else 4)


def test_dealer_free_rounds_are_bytes_in_bytes_out() -> None:
    from he_agg.keygen import KeygenConfig, KeygenParty, PartyIdentity

    ids = [PartyIdentity.generate() for _ in range(3)]
    config = KeygenConfig.new(Params.from_bit_sizes(8192, [60, 60, 60], 2.0**90), 2, [i.public_key for i in ids])
    parties = [KeygenParty(config, i, ident) for i, ident in enumerate(ids)]
    messages = [p.round1() for p in parties]
    assert all(isinstance(m, bytes) for m in messages)
    assert parties[0].round1() == messages[0]  # retries resend, never resample
    shares = [p.finish(messages) for p in parties]
    assert len({s.context.committee_id for s in shares}) == 1  # everyone computes the same key
    with pytest.raises(ThresholdError, match="missing"):
        parties[0].finish(messages[:2])
    tampered = bytearray(messages[1])
    tampered[-40] ^= 1
    with pytest.raises(ChecksumError):
        parties[0].finish([messages[0], bytes(tampered), messages[2]])
    with pytest.raises(ValueError, match="not the roster"):
        KeygenParty(config, 1, ids[0])


# -- binding, retries, budget --------------------------------------------------------------


def test_share_bound_to_its_ciphertext(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    _, batches, request = setup
    other = request_for(committee.context, batches[:-1], round_id=2)
    shares = [committee[p].decryption_share(other, (0, 1, 2)) for p in (0, 1, 2)]
    with pytest.raises(ShareBindingError, match="another request or ciphertext"):
        combine(request, shares)
    assert np.isfinite(combine(other, shares)).all()


def test_identical_requests_give_identical_shares(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    _, _, request = setup
    first = committee[2].decryption_share(request, (0, 2, 4))
    used = committee[2].used
    again = committee[2].decryption_share(DecryptionRequest.from_bytes(request.to_bytes(), committee.context), (4, 2, 0))
    assert first.to_bytes() == again.to_bytes()
    assert committee[2].used == used  # a repeat costs no budget
    other_set = committee[2].decryption_share(request, (1, 2, 3))
    assert not np.array_equal(other_set.residues, first.residues)


def test_budget_enforced(setup) -> None:  # type: ignore[no-untyped-def]
    _, batches, _ = setup
    small = Committee.generate(3, 2, policy=Policy(budget=2))
    requests = [request_for(small.context, batches[:k], round_id=k) for k in (2, 3, 4)]
    small[0].decryption_share(requests[0], (0, 1))
    small[0].decryption_share(requests[1], (0, 2))
    small[0].decryption_share(requests[1], (0, 2))  # identical repeat: still allowed
    with pytest.raises(BudgetExhaustedError, match="2 of 2"):
        small[0].decryption_share(requests[2], (0, 1))
    assert small[0].remaining == 0


def test_corrupted_share_among_t_plus_1_named(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    plain, _, request = setup
    shares = committee.shares(request, [0, 1, 3, 4])  # 4 leave-one-out sets of 3
    assert np.abs(combine(request, shares) - plain.sum(axis=0)).max() <= documented_bound(request)
    victim = next(s for s in shares if s.party == 3)
    bad = victim.residues.copy()  # one NTT residue altered: an error spread over every coefficient
    q = committee.context.params.data_moduli[0]
    bad[0, 0, 5] = (int(bad[0, 0, 5]) + (1 << 40)) % q
    shares[shares.index(victim)] = DecryptionShare(3, victim.active, victim.request_digest, victim.committee_id, bad)
    with pytest.raises(InconsistentShareError, match="party 3") as info:
        combine(request, shares)
    assert info.value.party == 3


def _with_wrong_key(committee: Committee, party: int) -> KeyShare:
    honest = committee[party]
    secret = honest._secret.copy()
    secret[0, 0] = (int(secret[0, 0]) + 1) % committee.context.params.data_moduli[0]
    return KeyShare(committee.context, party, secret, os.urandom(32), Policy(budget=1000))


def test_wrong_key_share_named_with_t_plus_2(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    _, _, request = setup
    liar = _with_wrong_key(committee, 1)
    shares = []
    for active in verification_sets([0, 1, 2, 3, 4], 3):
        for p in active:
            shares.append((liar if p == 1 else committee[p]).decryption_share(request, active))
    with pytest.raises(InconsistentShareError, match="party 1") as info:
        combine(request, shares)
    assert info.value.party == 1


def test_wrong_key_share_detected_with_t_plus_1(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    _, _, request = setup
    liar = _with_wrong_key(committee, 4)
    shares = []
    for active in verification_sets([0, 1, 2, 4], 3):
        for p in active:
            shares.append((liar if p == 4 else committee[p]).decryption_share(request, active))
    with pytest.raises(InconsistentShareError, match="cannot be located") as info:
        combine(request, shares)
    assert info.value.party is None


# -- flooding noise ------------------------------------------------------------------------


@pytest.mark.parametrize("log_sigma", [20.0, 49.5, 58.3, 61.0])
def test_flooding_sampler_has_configured_sigma(log_sigma: float) -> None:
    from scipy import stats

    sigma = 2.0**log_sigma
    high, shift = gaussian_integers(KeyedStream.fresh(), 200_000, sigma)
    values = high.astype(np.float64) * 2.0**shift
    assert abs(values.std() / sigma - 1) < 0.01
    assert abs(values.mean()) < 0.01 * sigma
    assert stats.kstest(values / sigma, "norm").pvalue > 1e-4


def test_share_noise_has_configured_sigma(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    """Recover e = d − λ·s·c1 from a real share (the test knows s_i) and measure it."""
    _, _, request = setup
    context, params = committee.context, committee.context.params
    share = committee[0].decryption_share(request, (0, 1, 4))
    lam = lagrange_at_zero((0, 1, 4), 0, params.data_moduli)
    expected = np.empty_like(share.residues)
    scaled = np.empty_like(committee[0]._secret)
    kernels.mul_scalar(scaled, committee[0]._secret, lam, params.data_moduli)
    kernels.mul(expected, np.ascontiguousarray(request.aggregate.data[:, 1]), scaled, params.data_moduli)
    noise = np.empty_like(expected)
    kernels.sub(noise, share.residues, expected, params.data_moduli)
    kernels.ntt_inverse(noise, params.data_moduli)
    e = kernels.crt_to_double(noise, params.data_moduli, 1.0)
    for row in e:  # the same integer polynomial on every prime: the CRT lift is small
        assert np.abs(row).max() < 2.0**70
    sigma = context.noise_model().flooding_sigma(request.summed, request.aggregate.count * params.n)
    assert abs(e.std() / sigma - 1) < 0.03
    assert math.log2(sigma) > 40  # 2^40 · B with B > 1


# -- serialization and hygiene ---------------------------------------------------------------


def test_key_share_file_round_trip(tmp_path, committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    _, _, request = setup
    fresh = Committee.generate(3, 2, policy=Policy(budget=3, min_clients=2))
    path = tmp_path / "party0.key"
    fresh[0].save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = KeyShare.load(path, fresh.context)
    assert loaded.policy == fresh[0].policy and loaded.party == 0
    req = request_for(fresh.context, [CiphertextBatch.from_tenseal(
        ts.ckks_vector(fresh.context.to_tenseal(), [1.0, 2.0]), fresh.context.params) for _ in range(2)])
    a = loaded.decryption_share(req, (0, 1))
    assert KeyShare.load(path).used == 1  # state written before the share was released
    assert fresh[0].decryption_share(req, (0, 1)).to_bytes() == a.to_bytes()
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        KeyShare.load(path)
    os.chmod(path, 0o600)
    with pytest.raises(ShareBindingError):
        KeyShare.load(path, committee.context)


def test_no_secret_in_repr_pickle_or_errors(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    share = committee[0]
    secret_hex = share._secret[0, :4].tobytes().hex()
    noise_hex = share._noise_key.hex()
    for text in (repr(share), str(share), repr(committee)):
        assert secret_hex not in text and noise_hex not in text and "secret" not in text.lower()
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(share)


def test_wire_types_round_trip_and_reject_bad_bytes(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    _, _, request = setup
    context = committee.context
    again = DecryptionRequest.from_bytes(request.to_bytes(), context)
    assert again.digest == request.digest
    share = committee[1].decryption_share(request, (0, 1, 2))
    assert DecryptionShare.from_bytes(share.to_bytes(), context).to_bytes() == share.to_bytes()
    with pytest.raises(FormatError):
        DecryptionShare.from_bytes(request.to_bytes(), context)  # wrong kind
    blob = bytearray(share.to_bytes())
    blob[100] ^= 0x20
    with pytest.raises(ChecksumError):
        DecryptionShare.from_bytes(bytes(blob), context)
    with pytest.raises(ShareBindingError):
        DecryptionShare.from_bytes(share.to_bytes(), Committee.generate(5, 3).context)


# -- policy --------------------------------------------------------------------------------


def test_policy_min_clients_and_replay(setup) -> None:  # type: ignore[no-untyped-def]
    _, batches, _ = setup
    strict = Committee.generate(3, 2, policy=Policy(min_clients=3, budget=10))
    with pytest.raises(TooFewContributorsError, match="at least 3"):
        strict[0].decryption_share(request_for(strict.context, batches[:2], round_id=5), (0, 1))
    first = request_for(strict.context, batches[:3], round_id=6)
    strict[0].decryption_share(first, (0, 1))
    strict[0].decryption_share(first, (0, 2))  # the same request, another active set: fine
    with pytest.raises(ReplayError, match="round 6"):
        strict[0].decryption_share(request_for(strict.context, batches[:4], round_id=6), (0, 1))


def test_policy_verify_recomputes_the_aggregate(setup) -> None:  # type: ignore[no-untyped-def]
    _, batches, _ = setup
    checking = Committee.generate(3, 2, policy=Policy(verify=True, budget=10))
    request = request_for(checking.context, batches[:3])
    contributions = {f"site-{i}": b.to_bytes() for i, b in enumerate(batches[:3])}
    checking[0].decryption_share(request, (0, 1), contributions=contributions)
    with pytest.raises(VerificationError, match="pass the contributions"):
        checking[1].decryption_share(request, (0, 1))
    forged = dict(contributions)
    forged["site-2"] = batches[5].to_bytes()
    with pytest.raises(VerificationError, match="site-2"):
        checking[1].decryption_share(request, (0, 1), contributions=forged)
    # a tampered contribution list: the aggregate is not the sum of what the request lists
    lying = DecryptionRequest(checking.context, 2, request.aggregate,
                              [Contribution(f"site-{i}", b.digest) for i, b in enumerate(batches[:2])])
    with pytest.raises(VerificationError, match="not the sum"):
        checking[1].decryption_share(lying, (0, 1), contributions={k: contributions[k] for k in ("site-0", "site-1")})
