"""Threshold decryption: the audit surface for the claims in docs/SECURITY.md.

A decryption takes two steps: a quorum of members approves the request (each member at
most one request per round), then the members of the request's active sets answer with
shares against that quorum certificate. Every request below gets a fresh round id from
:data:`_ROUNDS`, because a member never approves two requests for one round.
"""

from __future__ import annotations

import itertools
import math
import os
import pickle
import stat
from collections.abc import Sequence

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings
from hypothesis import strategies as st

from he_agg.ciphertext import CiphertextBatch
from he_agg.committee import Committee, combine, run_keygen, verification_sets
from he_agg.context import PublicContext
from he_agg.errors import (
    StateError,
    AuthenticationError,
    BudgetExhaustedError,
    ChecksumError,
    EquivocationError,
    FormatError,
    InconsistentShareError,
    InsecureFileError,
    KeygenError,
    QuorumError,
    ReplayError,
    ShareBindingError,
    ThresholdError,
    TooFewContributorsError,
    VerificationError,
)
from he_agg.hazmat.decryption import decode_phase, phase
from he_agg.hazmat import kernels
from he_agg.hazmat.sampling import KeyedStream, discrete_gaussian, sigma_actual
from he_agg.identity import PartyIdentity
from he_agg.keygen import KeygenConfig, KeygenParty
from he_agg.keyshare import KeyShare, Policy
from he_agg.params import AGGREGATION, Params
from he_agg.quorum import Approval, QuorumCertificate, quorum_size
from he_agg.requests import Contribution, DecryptionRequest, DecryptionShare

VALUES = 3000
_ROUNDS = itertools.count(1000)

Contributions = dict[str, CiphertextBatch]


def encrypt_clients(context: PublicContext, plain: np.ndarray) -> list[CiphertextBatch]:
    ctx = context.to_tenseal()
    return [CiphertextBatch.from_tenseal(ts.ckks_vector(ctx, row.tolist()), context.params) for row in plain]


def request_for(context: PublicContext, batches: list[CiphertextBatch], round_id: int | None = None,
                active_sets: Sequence[Sequence[int]] | None = None) -> tuple[DecryptionRequest, Contributions]:
    """A request for the sum of ``batches`` (a fresh round unless given) and the contributions it names."""
    aggregate = CiphertextBatch.sum(batches, context.params)
    contributions = {f"site-{i}": b for i, b in enumerate(batches)}
    listed = [Contribution(k, b.digest) for k, b in contributions.items()]
    round_id = next(_ROUNDS) if round_id is None else round_id
    return DecryptionRequest(context, round_id, aggregate, listed, active_sets=active_sets), contributions


def documented_bound(request: DecryptionRequest) -> float:
    ctx = request.context
    return ctx.noise_model().error_bound(request.summed, request.aggregate.count * ctx.params.n, ctx.threshold,
                                         request.aggregate.length)


def altered(share: DecryptionShare, delta: int = 1 << 40) -> DecryptionShare:
    """The share with one NTT residue moved by ``delta`` (an error spread over every coefficient)."""
    bad = share.residues.copy()
    q = AGGREGATION.data_moduli[0]
    bad[0, 0, 5] = (int(bad[0, 0, 5]) + delta) % q
    return DecryptionShare(share.party, share.active, share.request_digest, share.committee_id, bad, share.sigma)


@pytest.fixture(scope="module")
def committee() -> Committee:
    return Committee.dealer_free(5, 3, AGGREGATION, policy=Policy(budget=1000))


SETUP_SETS = [(0, 1, 2), (0, 1, 4), (0, 2, 4), (1, 2, 3)]


@pytest.fixture(scope="module")
def setup(committee: Committee):  # type: ignore[no-untyped-def]
    """Eight clients' vectors, a request for their sum naming four active sets, and its certificate."""
    plain = np.random.default_rng(5).uniform(-1, 1, (8, VALUES))
    batches = encrypt_clients(committee.context, plain)
    request, contributions = request_for(committee.context, batches, active_sets=SETUP_SETS)
    certificate = committee.certify(request, contributions=contributions)
    return plain, batches, request, contributions, certificate


# -- any t of n decrypt; t-1 reveal nothing ---------------------------------------------------


def _dealer_free_is_quick(n: int, t: int) -> bool:
    """Dealer-free generation expands n·C(n−1, t−1) seeds per member: keep the fast suite fast."""
    return n * math.comb(n - 1, t - 1) <= 150


@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 10), data=st.data())
def test_every_t_subset_decrypts(n: int, data: st.DataObject) -> None:
    t = 1 if n == 1 else data.draw(st.integers(2, n))
    makers = [Committee.generate] + ([Committee.dealer_free] if _dealer_free_is_quick(n, t) else [])
    maker = data.draw(st.sampled_from(makers))
    committee = maker(n, t, policy=Policy(budget=1000))
    plain = np.random.default_rng(n * 31 + t).uniform(-1, 1, (3, 700))
    subsets = list(itertools.combinations(range(n), t))
    if len(subsets) > 12:  # all of them for small committees, a fixed spread otherwise
        subsets = subsets[:: len(subsets) // 12][:12]
    request, contributions = request_for(committee.context, encrypt_clients(committee.context, plain),
                                         active_sets=subsets)
    assert request.active_sets == tuple(subsets)
    bound = documented_bound(request)
    certificate = committee.certify(request, contributions=contributions)
    assert len(certificate.approvals) == quorum_size(n, committee.context.colluders)
    shares = committee.shares(request, certificate, contributions=contributions)
    for active in subsets:
        values = combine(request, [s for s in shares if s.active == active])
        assert np.abs(values - plain.sum(axis=0)).max() <= bound, (n, t, active)
    assert np.abs(combine(request, shares) - plain.sum(axis=0)).max() <= bound  # all sets cross-checked


def test_dealer_free_decrypts_at_a_larger_committee() -> None:
    """One dealer-free committee beyond the hypothesis test's cost cap (every member's sets)."""
    committee = Committee.dealer_free(7, 4, policy=Policy(budget=100))
    plain = np.random.default_rng(74).uniform(-1, 1, (2, 300))
    sets = [(0, 1, 2, 3), (3, 4, 5, 6), (0, 2, 4, 6)]
    request, contributions = request_for(committee.context, encrypt_clients(committee.context, plain),
                                         active_sets=sets)
    values = committee.decrypt(request, contributions=contributions)
    assert np.abs(values - plain.sum(axis=0)).max() <= documented_bound(request)


def test_threshold_one_refused_for_committees() -> None:
    with pytest.raises(ValueError, match="t = 1"):
        Committee.generate(3, 1)
    with pytest.raises(ValueError, match="t = 1"):
        KeygenConfig.new(Params.from_bit_sizes(8192, [60, 60, 60], 2.0**90), 1,
                         [PartyIdentity.generate().public_key for _ in range(3)])
    with pytest.raises(ValueError, match="n <= 12"):
        Committee.generate(13, 3)


def test_fewer_than_t_shares_reveal_nothing(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    plain, _, request, _, certificate = setup
    shares = [committee[p].decryption_share(request, certificate, (0, 1, 2)) for p in (0, 1)]
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
    """The issue's precision target at the default parameters and 40-bit flooding: 1,000 distinct
    fresh TenSEAL ciphertexts (independent noise, as the flooding's model assumes)."""
    context = committee.context
    ctx = context.to_tenseal()
    plain = np.random.default_rng(9).uniform(-1, 1, (1000, 4096))
    fresh = [CiphertextBatch.from_tenseal(ts.ckks_vector(ctx, row.tolist()), context.params) for row in plain]
    aggregate = CiphertextBatch.sum(fresh, context.params)
    contributions = {f"c{i}": fresh[i] for i in range(1000)}
    request = DecryptionRequest(context, next(_ROUNDS), aggregate,
                                [Contribution(k, b.digest) for k, b in contributions.items()])
    certificate = committee.certify(request, contributions=contributions)  # each member re-sums 1,000
    values = combine(request, committee.shares(request, certificate))  # approved: verified already
    error = np.abs(values - plain.sum(axis=0)).max()
    assert error <= documented_bound(request) <= 1e-6


# -- dealer and dealer-free behave identically; TenSEAL clients work unmodified ----------------


@pytest.mark.parametrize("maker", [Committee.generate, Committee.dealer_free])
def test_both_key_generations_work_with_unmodified_tenseal(maker) -> None:  # type: ignore[no-untyped-def]
    committee = maker(4, 2, policy=Policy(budget=100))
    shipped = PublicContext.from_bytes(committee.context.to_bytes())
    assert shipped == committee.context and shipped.roster == committee.context.roster
    client_ctx = ts.context_from(shipped.tenseal_bytes())  # what a client receives
    assert not client_ctx.has_secret_key()
    plain = np.random.default_rng(2).uniform(-5, 5, (3, 500))
    blobs = [ts.ckks_vector(client_ctx, row.tolist()).serialize() for row in plain]  # plain TenSEAL bytes
    batches = [CiphertextBatch.from_tenseal(b, shipped.params) for b in blobs]
    request, contributions = request_for(committee.context, batches, active_sets=[(1, 3)])
    values = committee.decrypt(request, contributions=contributions)
    assert np.abs(values - plain.sum(axis=0)).max() <= documented_bound(request)
    subsets = math.comb(4, 2 - 1)  # one sub-secret per (t−1)-subset; dealer-free: n contributions to each
    assert committee.context.secret_terms == (subsets if maker.__name__ == "generate" else 4 * subsets)


def test_dealer_free_rounds_are_bytes_in_bytes_out() -> None:
    ids = [PartyIdentity.generate() for _ in range(3)]
    config = KeygenConfig.new(Params.from_bit_sizes(8192, [60, 60, 60], 2.0**90), 2, [i.public_key for i in ids])
    parties = [KeygenParty(config, i, ident) for i, ident in enumerate(ids)]
    first = [p.round1() for p in parties]
    assert all(isinstance(m, bytes) for m in first)
    assert parties[0].round1() == first[0]  # retries resend, never resample
    with pytest.raises(KeygenError, match="one key generation round-1 message from each"):
        parties[0].round2(first[:2])
    tampered = bytearray(first[1])
    tampered[-40] ^= 1
    with pytest.raises(ChecksumError):
        parties[0].round2([first[0], bytes(tampered), first[2]])
    second = [p.round2(first) for p in parties]
    assert all(isinstance(m, bytes) for m in second) and parties[1].round2(first) == second[1]
    third = [p.round3(second) for p in parties]
    assert all(isinstance(m, bytes) for m in third) and parties[2].round3(second) == third[2]
    with pytest.raises(KeygenError, match="from each"):
        parties[0].finish(third[:2])
    shares = [p.finish(third) for p in parties]
    assert parties[0].finish(third) is shares[0]  # a retry returns the first result
    assert len({s.context.committee_id for s in shares}) == 1  # everyone computes the same key
    assert [s.identity_public_key for s in shares] == list(config.roster)
    with pytest.raises(ValueError, match="not the roster"):
        KeygenParty(config, 1, ids[0])
    # run_keygen relays the same rounds in one process
    relayed = run_keygen([KeygenParty(config, i, ident) for i, ident in enumerate(ids)])
    assert len({s.context.committee_id for s in relayed}) == 1
    assert relayed[0].context.committee_id != shares[0].context.committee_id  # fresh seeds, another key


def test_keygen_message_from_another_member_key_refused() -> None:
    """A round message re-sealed (valid checksum) under a key not in the roster does not verify."""
    from he_agg.hazmat.wire.envelope import Kind, open_envelope, seal_envelope

    ids = [PartyIdentity.generate() for _ in range(3)]
    config = KeygenConfig.new(Params.from_bit_sizes(8192, [60, 60, 60], 2.0**90), 2, [i.public_key for i in ids])
    parties = [KeygenParty(config, i, ident) for i, ident in enumerate(ids)]
    first = [p.round1() for p in parties]
    env = open_envelope(first[1], Kind.KEYGEN_MESSAGE, "t")
    meta = env.meta.as_dict()
    meta["commitments"] = list(reversed(meta["commitments"]))  # edited, checksum recomputed
    forged = seal_envelope(Kind.KEYGEN_MESSAGE, meta, env.body)
    with pytest.raises(AuthenticationError, match="signature"):
        parties[0].round2([first[0], forged, first[2]])


# -- binding, retries, budget --------------------------------------------------------------


def test_share_bound_to_its_ciphertext(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    _, batches, request, _, _ = setup
    other, contributions = request_for(committee.context, batches[:-1], active_sets=[(0, 1, 2)])
    certificate = committee.certify(other, contributions=contributions)
    shares = [committee[p].decryption_share(other, certificate, (0, 1, 2)) for p in (0, 1, 2)]
    with pytest.raises(ShareBindingError, match="another request or ciphertext"):
        combine(request, shares)
    assert np.isfinite(combine(other, shares)).all()
    with pytest.raises(QuorumError, match="another request"):  # a certificate approves one request only
        committee[0].decryption_share(request, certificate, (0, 1, 2))


def test_identical_requests_give_identical_shares(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    _, _, request, _, certificate = setup
    first = committee[2].decryption_share(request, certificate, (0, 2, 4))
    used = committee[2].used
    again = committee[2].decryption_share(DecryptionRequest.from_bytes(request.to_bytes(), committee.context),
                                          QuorumCertificate.from_bytes(certificate.to_bytes()), (4, 2, 0))
    assert first.to_bytes() == again.to_bytes()
    assert committee[2].used == used  # a repeat costs no budget
    other_set = committee[2].decryption_share(request, certificate, (1, 2, 3))
    assert not np.array_equal(other_set.residues, first.residues)
    assert committee[2].used == used + 1
    with pytest.raises(ShareBindingError, match="say which one"):  # member 2 is in several named sets
        committee[2].decryption_share(request, certificate)
    with pytest.raises(ShareBindingError, match="not one the request names"):
        committee[2].decryption_share(request, certificate, (2, 3, 4))


def test_budget_enforced(setup) -> None:  # type: ignore[no-untyped-def]
    _, batches, _, _, _ = setup
    small = Committee.generate(3, 2, policy=Policy(budget=2))
    made = [request_for(small.context, batches[:k], active_sets=[(0, 1), (0, 2)]) for k in (2, 3, 4)]
    certificates = [small.certify(r, contributions=c) for r, c in made]  # approving costs no budget
    assert small[0].used == 0
    requests = [r for r, _ in made]
    small[0].decryption_share(requests[0], certificates[0], (0, 1))
    small[0].decryption_share(requests[1], certificates[1], (0, 2))
    small[0].decryption_share(requests[1], certificates[1], (0, 2))  # identical repeat: still allowed
    with pytest.raises(BudgetExhaustedError, match="(?i)budget"):
        small[0].decryption_share(requests[2], certificates[2], (0, 1))
    assert small[0].remaining == 0 and small[0].used == 2
    small[0].decryption_share(requests[0], certificates[0], (0, 1))  # a repeat after exhaustion: free


# -- detecting and locating a faulty member ---------------------------------------------------
#
# Replicated sharing reconstructs with 0/1 coefficients, so there is no Shamir
# self-consistency check; the combiner cross-checks the active sets the request names by
# agreement only. With every t-subset of t+2 members, a member whose shares are all wrong
# is the one member absent from every agreeing set: it is named. With t+1 members one set
# disagreeing is explained as well by the member it lacks as by any member it holds:
# detected, not located.


def _verification_round(committee: Committee, setup, members: list[int]):  # type: ignore[no-untyped-def]
    plain, batches, _, _, _ = setup
    request, contributions = request_for(committee.context, batches,
                                         active_sets=verification_sets(members, committee.context.threshold))
    certificate = committee.certify(request, contributions=contributions)
    return plain, request, certificate, contributions


def test_altered_shares_named_with_t_plus_2(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    plain, request, certificate, contributions = _verification_round(committee, setup, [0, 1, 2, 3, 4])
    shares = committee.shares(request, certificate, contributions=contributions)
    assert len(shares) == 10 * 3
    assert np.abs(combine(request, shares) - plain.sum(axis=0)).max() <= documented_bound(request)
    one = list(shares)  # one altered share: detected, not located (any member of its set could have)
    victim = next(i for i, s in enumerate(one) if s.party == 3)
    one[victim] = altered(one[victim])
    with pytest.raises(InconsistentShareError, match="cannot be located") as info:
        combine(request, one)
    assert info.value.party is None
    every = [altered(s, (1 << 40) + 7 * k) if s.party == 3 else s for k, s in enumerate(shares)]
    with pytest.raises(InconsistentShareError, match="member 3") as info:
        combine(request, every)
    assert info.value.party == 3


def test_altered_share_detected_with_t_plus_1(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    plain, request, certificate, contributions = _verification_round(committee, setup, [0, 1, 3, 4])
    shares = committee.shares(request, certificate, contributions=contributions)
    assert np.abs(combine(request, shares) - plain.sum(axis=0)).max() <= documented_bound(request)
    victim = next(i for i, s in enumerate(shares) if s.party == 3)  # member 3's share in the set (0, 1, 3)
    shares[victim] = altered(shares[victim])
    try:
        combine(request, shares)
    except InconsistentShareError as exc:
        assert exc.party is None, f"member {exc.party} named, but member 3 altered its share"
    else:
        pytest.fail("an altered share was not detected")


def _with_wrong_key(committee: Committee, party: int) -> KeyShare:
    """Member ``party`` with every sub-secret it holds off by one coefficient."""
    honest = committee[party]
    wrong = {k: v.copy() for k, v in honest._subsecrets.items()}
    for poly in wrong.values():
        poly[0] += 1
    return KeyShare(committee.context, party, honest._identity, wrong, os.urandom(32), Policy(budget=1000))


def _shares_with_liar(committee: Committee, liar: KeyShare, request: DecryptionRequest,
                      certificate: QuorumCertificate, contributions: Contributions) -> list[DecryptionShare]:
    return [(liar if p == liar.party else committee[p]).decryption_share(request, certificate, active,
                                                                         contributions=contributions)
            for active in request.active_sets for p in active]


def test_wrong_key_share_named_with_t_plus_2(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    _, request, certificate, contributions = _verification_round(committee, setup, [0, 1, 2, 3, 4])
    liar = _with_wrong_key(committee, 1)
    with pytest.raises(InconsistentShareError, match="member 1") as info:
        combine(request, _shares_with_liar(committee, liar, request, certificate, contributions))
    assert info.value.party == 1


def test_wrong_key_share_detected_with_t_plus_1(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    _, request, certificate, contributions = _verification_round(committee, setup, [0, 1, 2, 4])
    liar = _with_wrong_key(committee, 4)
    with pytest.raises(InconsistentShareError) as info:
        combine(request, _shares_with_liar(committee, liar, request, certificate, contributions))
    # Not located: with t+1 members every member explains the disagreement equally well.
    assert info.value.party is None
    assert "cannot be located" in str(info.value)


# -- flooding noise ------------------------------------------------------------------------


@pytest.mark.parametrize("log_sigma", [20.0, 49.5, 58.3, 61.0])
def test_flooding_sampler_has_configured_sigma(log_sigma: float) -> None:
    """The flooding sampler's integers v = high·2^32 + low have variance σ_actual² (≥ σ²).

    n = 2·10^5 fresh samples of D_{Z,σ_actual}: z_var = (mean(v²)/σ_actual² − 1)·sqrt(n/2)
    and z_mean = mean(v)·sqrt(n)/σ_actual are ≈ N(0, 1) (at σ ≥ 2^20 the discrete law's
    variance is σ_actual²(1 ± 10^-30)), and P(|z| > 6) ≈ 2·10^-9 each (mean(v²)'s slight
    χ² skew raises that by under 1.3x); the KS test against the normal law fails with
    probability 10^-9. A false failure of the four cases is below 3·10^-8. |z_var| < 6
    pins the variance to ±1.9% (the standard deviation to ±0.95%).
    """
    from scipy import stats

    sigma = 2.0**log_sigma
    n = 200_000
    high, low = discrete_gaussian(KeyedStream.fresh(), n, sigma)
    values = high.astype(np.float64) * 2.0**32 + low.astype(np.float64)  # relative error ≤ 2^-53
    s_act = sigma_actual(sigma)
    assert sigma <= s_act <= sigma * (1 + 2.0**-50)
    z_var = (float(np.mean(values**2)) / s_act**2 - 1) * math.sqrt(n / 2)
    z_mean = float(values.mean()) * math.sqrt(n) / s_act
    assert abs(z_var) < 6 and abs(z_mean) < 6
    assert stats.kstest(values / s_act, "norm").pvalue > 1e-9


def test_share_noise_has_configured_sigma(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    """Recover e = d − σ_i^A·c1 from a real share (the test knows member 0's sub-secrets) and measure it."""
    _, _, request, _, certificate = setup
    context, params = committee.context, committee.context.params
    share = committee[0].decryption_share(request, certificate, (0, 1, 4))
    secret = committee[0].assigned_secret((0, 1, 4))  # Σ of the sub-secrets assigned to member 0, NTT form
    expected = np.empty_like(share.residues)
    kernels.mul(expected, np.ascontiguousarray(request.aggregate.data[:, 1]), secret, params.data_moduli)
    secret.fill(0)
    noise = np.empty_like(expected)
    kernels.sub(noise, share.residues, expected, params.data_moduli)
    kernels.ntt_inverse(noise, params.data_moduli)
    e = kernels.crt_to_double(noise, params.data_moduli, 1.0)
    for row in e:  # the same integer polynomial on every prime: the CRT lift is small
        assert np.abs(row).max() < 2.0**70
    sigma = context.noise_model().flooding_sigma(request.summed, request.aggregate.count * params.n)
    assert share.sigma == sigma
    assert abs(e.std() / sigma - 1) < 0.03
    assert math.log2(sigma) > 40  # 2^40 · B with B > 1


# -- serialization and hygiene ---------------------------------------------------------------


def _small_round(fresh: Committee) -> tuple[DecryptionRequest, Contributions]:
    ctx = fresh.context.to_tenseal()
    batches = [CiphertextBatch.from_tenseal(ts.ckks_vector(ctx, [1.0, 2.0]), fresh.context.params) for _ in range(2)]
    return request_for(fresh.context, batches, active_sets=[(0, 1)])


def test_key_share_file_round_trip(tmp_path, committee: Committee) -> None:  # type: ignore[no-untyped-def]
    fresh = Committee.generate(3, 2, policy=Policy(budget=3, min_clients=2))
    path = tmp_path / "party0.key"
    with pytest.raises(InsecureFileError):  # secrets are never written unprotected by default
        fresh[0].save(path)
    fresh[0].save(path, passphrase=b"correct horse battery staple")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = KeyShare.load(path, fresh.context, passphrase=b"correct horse battery staple")
    assert loaded.policy == fresh[0].policy and loaded.party == 0
    assert loaded.identity_public_key == fresh[0].identity_public_key
    plain = tmp_path / "party1.key"
    fresh[1].save(plain, insecure_plaintext=True)
    assert KeyShare.load(plain, fresh.context).party == 1
    request, contributions = _small_round(fresh)
    approvals = [loaded.approve(request, contributions=contributions)]
    approvals += [fresh[i].approve(request, contributions=contributions) for i in (1, 2)]
    certificate = QuorumCertificate.collect(request.round_id, request.digest, [a.to_bytes() for a in approvals])
    a = loaded.decryption_share(request, certificate, (0, 1))
    assert loaded.used == 1
    assert fresh[0].decryption_share(request, certificate, (0, 1), contributions=contributions).to_bytes() \
        == a.to_bytes()  # the same secrets and noise key: the identical share
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        KeyShare.load(path, passphrase=b"correct horse battery staple")
    os.chmod(path, 0o600)
    with pytest.raises(ShareBindingError):
        KeyShare.load(path, committee.context, passphrase=b"correct horse battery staple")
    with pytest.raises(StateError, match="save it right after"):  # answers made in memory would be lost
        fresh[2].save(tmp_path / "party2.key", insecure_plaintext=True)


def test_key_share_state_survives_reload(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fresh = Committee.generate(3, 2, policy=Policy(budget=3))
    path = tmp_path / "party0.key"
    fresh[0].save(path, insecure_plaintext=True)
    request, contributions = _small_round(fresh)
    certificate = fresh.certify(request, contributions=contributions)
    fresh[0].decryption_share(request, certificate, (0, 1))
    reloaded = KeyShare.load(path)
    assert reloaded.used == 1  # state written before the share was released
    other = DecryptionRequest(fresh.context, request.round_id, request.aggregate, list(request.contributions),
                              active_sets=[(0, 2)])
    with pytest.raises(EquivocationError):  # the approval of this round was persisted too
        reloaded.approve(other, contributions=contributions)


def test_no_secret_in_repr_pickle_or_errors(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    _, _, request, _, certificate = setup
    share = committee[0]
    first = share._subsecrets[min(share._subsecrets)]
    secrets = [first[:16].tobytes().hex(), share._noise_key.hex(), share._identity.private_bytes().hex()]
    texts = [repr(share), str(share), repr(committee), repr(share._identity)]
    for call in (lambda: share.decryption_share(request, certificate, (1, 2, 3)),  # not in that set
                 lambda: share.decryption_share(request, certificate, (0, 1, 3)),  # a set not named
                 lambda: share.approve(request)):  # verifies: contributions missing
        with pytest.raises(Exception) as info:
            call()
        texts.append(str(info.value) + repr(info.value))
    for text in texts:
        assert not any(s in text for s in secrets) and "secret" not in text.lower()
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(share)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(share._identity)


def test_wire_types_round_trip_and_reject_bad_bytes(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    _, _, request, _, certificate = setup
    context = committee.context
    again = DecryptionRequest.from_bytes(request.to_bytes(), context)
    assert again.digest == request.digest and again.active_sets == request.active_sets
    share = committee[1].decryption_share(request, certificate, (0, 1, 2))
    parsed = DecryptionShare.from_bytes(share.to_bytes(), context)
    assert parsed.to_bytes() == share.to_bytes() and parsed.sigma == share.sigma
    assert QuorumCertificate.from_bytes(certificate.to_bytes()) == certificate
    approval = certificate.approvals[0]
    assert Approval.from_bytes(approval.to_bytes()) == approval
    with pytest.raises(FormatError):
        DecryptionShare.from_bytes(request.to_bytes(), context)  # wrong kind
    with pytest.raises(FormatError):
        QuorumCertificate.from_bytes(approval.to_bytes())  # wrong kind
    blob = bytearray(share.to_bytes())
    blob[100] ^= 0x20
    with pytest.raises(ChecksumError):
        DecryptionShare.from_bytes(bytes(blob), context)
    with pytest.raises(ShareBindingError):
        DecryptionShare.from_bytes(share.to_bytes(), Committee.generate(5, 3).context)


# -- approvals, quorum and policy -----------------------------------------------------------


def test_quorum_certificate_needs_q_distinct_approvals(committee: Committee, setup) -> None:  # type: ignore[no-untyped-def]
    _, batches, _, _, _ = setup
    request, contributions = request_for(committee.context, batches[:3])
    q = quorum_size(5, committee.context.colluders)
    assert q == 4  # ⌈(5 + 2 + 1)/2⌉
    approvals = [committee[i].approve(request, contributions=contributions) for i in range(q - 1)]
    short = QuorumCertificate.collect(request.round_id, request.digest, approvals + approvals[:1])
    assert len(short.approvals) == q - 1  # one per member
    with pytest.raises(QuorumError, match="3 approvals"):
        committee[0].decryption_share(request, short, (0, 1, 2))
    assert committee[0].approve(request, contributions=contributions) == approvals[0]  # a retry re-sends
    full = QuorumCertificate.collect(request.round_id, request.digest,
                                     approvals + [committee[q - 1].approve(request, contributions=contributions)])
    assert committee[0].decryption_share(request, full, (0, 1, 2)).request_digest == request.digest


def test_policy_min_clients_and_replay(setup) -> None:  # type: ignore[no-untyped-def]
    _, batches, _, _, _ = setup
    strict = Committee.generate(3, 2, policy=Policy(min_clients=3, budget=10))
    few, few_contributions = request_for(strict.context, batches[:2], round_id=5)
    with pytest.raises(TooFewContributorsError, match="at least 3"):
        strict[0].approve(few, contributions=few_contributions)
    first, contributions = request_for(strict.context, batches[:3], round_id=6, active_sets=[(0, 1), (0, 2)])
    certificate = strict.certify(first, contributions=contributions)
    strict[0].decryption_share(first, certificate, (0, 1))
    strict[0].decryption_share(first, certificate, (0, 2))  # the same request, another named set: fine
    second, more = request_for(strict.context, batches[:4], round_id=6, active_sets=[(0, 1)])
    with pytest.raises(EquivocationError, match="round 6"):
        strict[0].approve(second, contributions=more)
    assert issubclass(EquivocationError, ReplayError)
    with pytest.raises(QuorumError):  # no certificate can exist for it: first's does not transfer
        strict[1].decryption_share(second, certificate, (0, 1), contributions=more)


def test_policy_verify_recomputes_the_aggregate(setup) -> None:  # type: ignore[no-untyped-def]
    _, batches, _, _, _ = setup
    checking = Committee.generate(3, 2, policy=Policy(verify=True, budget=10))
    assert Policy().verify and Policy().min_clients == 2  # the defaults verify and refuse a lone client
    request, contributions = request_for(checking.context, batches[:3], active_sets=[(0, 1)])
    as_bytes = {k: b.to_bytes() for k, b in contributions.items()}
    checking[0].approve(request, contributions=as_bytes)
    with pytest.raises(VerificationError, match="pass the contributions"):
        checking[1].approve(request)
    forged = dict(as_bytes)
    forged["site-2"] = batches[5].to_bytes()
    with pytest.raises(VerificationError, match="site-2"):
        checking[1].approve(request, contributions=forged)
    certificate = checking.certify(request, [1, 2, 0], contributions=as_bytes)
    with pytest.raises(VerificationError, match="site-2"):  # answering re-verifies what it is given
        checking[1].decryption_share(request, certificate, (0, 1), contributions=forged)
    # a tampered contribution list: the aggregate is not the sum of what the request lists
    lying = DecryptionRequest(checking.context, next(_ROUNDS), request.aggregate,
                              [Contribution(f"site-{i}", b.digest) for i, b in enumerate(batches[:2])])
    with pytest.raises(VerificationError, match="not the sum"):
        checking[1].approve(lying, contributions={k: as_bytes[k] for k in ("site-0", "site-1")})
