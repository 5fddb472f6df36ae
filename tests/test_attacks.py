"""The committee against its attackers: each test plays the adversary a docs/SECURITY.md claim names.

t−1 colluding members with the server choosing active sets (Lagrange amplification),
whoever relays key-generation messages (forgery, substitution, equivocation), a member
that deals or reveals inconsistently, a lying server sending different requests for one
round to different members (equivocation), and a caller who edits a request after parsing.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings
from hypothesis import strategies as st

from he_agg.ciphertext import CiphertextBatch
from he_agg.committee import Committee, run_keygen
from he_agg.context import PublicContext
from he_agg.errors import (
    AuthenticationError,
    EquivocationError,
    FormatError,
    KeygenError,
    ParameterMismatchError,
    QuorumError,
    TooFewContributorsError,
)
from he_agg.hazmat import kernels
from he_agg.hazmat.ckks import signed_to_rns
from he_agg.hazmat.replicated import assignment, subsets
from he_agg.hazmat.wire.envelope import Kind, open_envelope, seal_envelope
from he_agg.identity import PartyIdentity
from he_agg.keygen import KeygenConfig, KeygenParty
from he_agg.keyshare import Policy
from he_agg.params import AGGREGATION
from he_agg.quorum import Approval, QuorumCertificate, quorum_size
from he_agg.requests import Contribution, DecryptionRequest
from he_agg.signed import seal_signed

OPEN = Policy(min_clients=1, verify=False, budget=1000, max_clients=64)


def encrypt(context: PublicContext, rows: np.ndarray) -> list[CiphertextBatch]:
    ctx = context.to_tenseal()
    return [CiphertextBatch.from_tenseal(ts.ckks_vector(ctx, r.tolist()), context.params) for r in rows]


def request_for(context: PublicContext, batches: list[CiphertextBatch], round_id: int = 1,
                active_sets=None) -> DecryptionRequest:  # type: ignore[no-untyped-def]
    aggregate = CiphertextBatch.sum(batches, context.params)
    contributions = [Contribution(f"site-{i}", b.digest) for i, b in enumerate(batches)]
    return DecryptionRequest(context, round_id, aggregate, contributions, None, active_sets)


def coefficients(residues: np.ndarray, moduli: tuple[int, ...]) -> np.ndarray:
    """Centred integer coefficients (as float64) of NTT-form residues."""
    work = np.array(residues, copy=True)
    kernels.ntt_inverse(work, moduli)
    return kernels.crt_to_double(work, moduli, 1.0)


# -- finding 1: t−1 colluders and the server cannot strip an honest member's flooding ----------


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 9), data=st.data())
def test_reconstruction_coefficients_are_zero_or_one(n: int, data: st.DataObject) -> None:
    """For every active set, the sub-secrets assigned to its members partition all sub-secrets:
    each sub-secret enters the release exactly once, with coefficient 1, and each member's share
    holds each sub-secret with coefficient 0 or 1 — nothing can amplify or divide anything."""
    t = data.draw(st.integers(2, n))
    active = tuple(sorted(data.draw(st.permutations(range(n)))[:t]))
    seen: list[int] = []
    for member in active:
        mine = assignment(active, member, n, t)
        assert all(member not in subsets(n, t)[k] for k in mine)  # a member only uses what it holds
        seen.extend(mine)
    assert sorted(seen) == list(range(len(subsets(n, t))))


@pytest.mark.parametrize("n,t", [(5, 3), (6, 4), (7, 3)])
def test_colluders_choosing_active_sets_leave_full_flooding(n: int, t: int) -> None:
    """The attack of finding 1: t−1 colluders and the server ask an honest member h for shares under
    active sets of their choosing and subtract everything their own key material explains. With
    Shamir sharing the flooding left was e_h/κ (6.3 bits removed at n=5, t=3). Here the only term
    they cannot explain is s_C·c1 with coefficient 1 (C the coalition), so the flooding left on it
    is e_h at full σ, for every honest member and every active set."""
    committee = Committee.generate(n, t, policy=OPEN)
    context, params = committee.context, committee.context.params
    moduli = params.data_moduli
    batches = encrypt(context, np.random.default_rng(1).uniform(-1, 1, (2, 64)))
    coalition = tuple(range(t - 1))  # colluding members 0 … t−2
    lacking = subsets(n, t).index(coalition)  # the one sub-secret they do not hold: s_C
    known = {k: v for member in coalition for k, v in committee[member]._subsecrets.items()}
    assert set(known) == set(range(len(subsets(n, t)))) - {lacking}
    honest_sets = [a for a in itertools.combinations(range(n), t) if not set(a) <= set(coalition)]
    for round_id, active in enumerate(honest_sets[:6], start=1):
        request = request_for(context, batches, round_id, [active])
        certificate = committee.certify(request, list(range(n)))
        c1 = np.ascontiguousarray(request.aggregate.data[:, 1])
        for h in active:
            if h in coalition:
                continue
            share = committee[h].decryption_share(request, certificate)
            sigma = share.sigma
            residual = share.residues.copy()
            for k in assignment(active, h, n, t):
                if k == lacking:
                    continue  # the coalition cannot explain this term
                s = signed_to_rns(known[k].astype(np.int64), moduli)
                kernels.ntt_forward(s, moduli)
                product = np.empty_like(residual)
                kernels.mul(product, c1, np.broadcast_to(s, residual.shape).copy(), moduli)
                kernels.sub(residual, residual, product, moduli)
            # What is left is s_C·c1 (coefficient 1, if s_C was assigned to h) plus e_h. Measure e_h
            # with the oracle s_C: the flooding on the coalition's unknown is still σ, not σ/κ.
            if lacking in assignment(active, h, n, t):
                s = signed_to_rns(committee[h]._subsecrets[lacking].astype(np.int64), moduli)
                kernels.ntt_forward(s, moduli)
                product = np.empty_like(residual)
                kernels.mul(product, c1, np.broadcast_to(s, residual.shape).copy(), moduli)
                kernels.sub(residual, residual, product, moduli)
            noise = coefficients(residual, moduli)
            removed_bits = math.log2(sigma / noise.std())  # sampling error on 8,192 values: ~0.011 bits
            assert abs(removed_bits) < 0.08, f"{removed_bits:.3f} bits of flooding removed at h={h}, A={active}"


# -- finding 2: key generation against its relay and a cheating member -----------------------


def keygen_parties(n: int = 5, t: int = 3):  # type: ignore[no-untyped-def]
    identities = [PartyIdentity.generate() for _ in range(n)]
    config = KeygenConfig.new(AGGREGATION, t, [i.public_key for i in identities])
    return identities, config, [KeygenParty(config, i, identity) for i, identity in enumerate(identities)]


def resealed(message: bytes, kind: Kind, edit) -> bytes:  # type: ignore[no-untyped-def]
    """What a relay can do without keys: edit the meta or body and recompute the checksum."""
    env = open_envelope(message, kind, "relayed")
    meta = env.meta.as_dict()
    body = bytearray(env.body)
    edit(meta, body)
    return seal_envelope(kind, meta, bytes(body))


def test_relay_cannot_edit_or_forge_key_generation_messages() -> None:
    identities, _, parties = keygen_parties()
    first = [p.round1() for p in parties]

    def flip_commitment(meta, body):  # type: ignore[no-untyped-def]
        meta["commitments"][0] = "00" * 32

    def flip_body(meta, body):  # type: ignore[no-untyped-def]
        body[-1] ^= 1

    for edit in (flip_commitment, flip_body):
        forged = first[:4] + [resealed(first[4], Kind.KEYGEN_MESSAGE, edit)]
        with pytest.raises(AuthenticationError):
            parties[0].round2(forged)
    # a message signed by a key outside the roster, claiming to be member 4
    outsider = PartyIdentity.generate()
    env = open_envelope(first[4], Kind.KEYGEN_MESSAGE, "m")
    fake = seal_signed(Kind.KEYGEN_MESSAGE, {k: v for k, v in env.meta.as_dict().items() if k != "signature"},
                       bytes(env.body), outsider)
    with pytest.raises(AuthenticationError):
        parties[0].round2(first[:4] + [fake])
    # a genuine message of member 4, replayed from another session of the same members
    other = KeygenConfig.new(AGGREGATION, 3, [i.public_key for i in identities])
    with pytest.raises(ParameterMismatchError):
        parties[0].round2(first[:4] + [KeygenParty(other, 4, identities[4]).round1()])


def test_relay_substituting_public_key_pieces_is_caught() -> None:
    """The attack of finding 2: the relay swaps in public-key material of its choosing. Round-3
    pieces are signed and must match the commitments every holder made in round 2."""
    _, _, parties = keygen_parties()
    first = [p.round1() for p in parties]
    second = [p.round2(first) for p in parties]
    third = [p.round3(second) for p in parties]
    designated = next(i for i, m in enumerate(third) if len(open_envelope(m, Kind.KEYGEN_REVEAL, "m").body))

    def replace_piece(meta, body):  # type: ignore[no-untyped-def]
        body[:8] = (12345).to_bytes(8, "little")

    forged = list(third)
    forged[designated] = resealed(third[designated], Kind.KEYGEN_REVEAL, replace_piece)
    with pytest.raises(AuthenticationError):
        parties[0].finish(forged)
    shares = [p.finish(third) for p in parties]
    assert len({s.context.committee_id for s in shares}) == 1


def test_cheating_designated_member_caught_by_the_other_holders() -> None:
    """A member who signs and reveals a public-key piece other than the one it committed to
    (e.g. P_T − P_C, to make a key whose secret the colluders know) is named."""
    identities, config, parties = keygen_parties()
    first = [p.round1() for p in parties]
    second = [p.round2(first) for p in parties]
    third = [p.round3(second) for p in parties]
    cheater = next(i for i, m in enumerate(third) if len(open_envelope(m, Kind.KEYGEN_REVEAL, "m").body))
    env = open_envelope(third[cheater], Kind.KEYGEN_REVEAL, "m")
    body = bytearray(env.body)
    body[:8] = (int.from_bytes(body[:8], "little") ^ 1).to_bytes(8, "little")
    meta = {k: v for k, v in env.meta.as_dict().items() if k != "signature"}
    third[cheater] = seal_signed(Kind.KEYGEN_REVEAL, meta, bytes(body), identities[cheater])
    honest = next(i for i in range(len(parties)) if i != cheater)
    with pytest.raises(KeygenError) as caught:
        parties[honest].finish(third)
    assert caught.value.party == cheater


def test_inconsistent_dealing_names_the_dealer_before_any_key_share() -> None:
    """A dealer whose sealed seed does not match its signed commitment is named in round 2."""
    identities, config, parties = keygen_parties()
    first = [p.round1() for p in parties]
    env = open_envelope(first[2], Kind.KEYGEN_MESSAGE, "m")
    meta = {k: v for k, v in env.meta.as_dict().items() if k != "signature"}
    meta["commitments"] = ["ab" * 32] * len(meta["commitments"])  # commitments to other seeds
    first[2] = seal_signed(Kind.KEYGEN_MESSAGE, meta, bytes(env.body), identities[2])
    with pytest.raises(KeygenError) as caught:
        parties[0].round2(first)
    assert caught.value.party == 2


def test_relay_showing_members_different_rounds_is_caught() -> None:
    """Equivocation by the relay: two members see different (validly signed) round-1 sets."""
    identities, config, parties = keygen_parties(4, 2)
    first = [p.round1() for p in parties]
    twin = KeygenParty(config, 3, identities[3])  # member 3 signs a second, different dealing
    alternative = first[:3] + [twin.round1()]
    second = [p.round2(first if i != 1 else alternative) for i, p in enumerate(parties)]
    with pytest.raises(KeygenError, match="different messages"):
        parties[0].round3(second)


def test_finish_twice_returns_the_first_key_share_and_rounds_never_resample() -> None:
    _, _, parties = keygen_parties(4, 3)
    first = [p.round1() for p in parties]
    assert [p.round1() for p in parties] == first
    second = [p.round2(first) for p in parties]
    third = [p.round3(second) for p in parties]
    shares = [p.finish(third) for p in parties]
    assert all(p.finish(third) is s for p, s in zip(parties, shares))


def test_each_member_enforces_its_own_flooding_floor_and_t_above_one() -> None:
    identities = [PartyIdentity.generate() for _ in range(3)]
    weak = KeygenConfig.new(AGGREGATION, 2, [i.public_key for i in identities], statistical_bits=16)
    with pytest.raises(ValueError, match="at least 40"):
        KeygenParty(weak, 0, identities[0])
    with pytest.raises(ValueError, match="t = 1"):
        KeygenConfig.new(AGGREGATION, 1, [i.public_key for i in identities])
    with pytest.raises(ValueError, match="t = 1"):
        Committee.generate(3, 1)
    with pytest.raises(ValueError, match="n <= 12"):
        Committee.generate(13, 3)


# -- finding 9: a lying server sends different requests for one round to different members -----


@pytest.mark.parametrize("n,t", [(5, 3), (6, 3), (7, 4)])
def test_equivocating_server_never_gets_two_certificates(n: int, t: int) -> None:
    """The server shows request R1 for round r to some members and R2 to the others; the c = t−1
    colluding members approve both. Whatever the split, at most one request is certified, and no
    member releases a share for the other one."""
    committee = Committee.generate(n, t, policy=OPEN)
    context = committee.context
    c = context.colluders
    q = quorum_size(n, c)
    batches = encrypt(context, np.random.default_rng(2).uniform(-1, 1, (3, 16)))
    colluders = list(range(c))
    honest = [i for i in range(n) if i not in colluders]
    r1 = request_for(context, batches[:3], 7, [tuple(range(n - t, n))])
    r2 = request_for(context, batches[:2], 7, [tuple(range(n - t, n))])  # differs by one client: differencing
    for split in itertools.product((0, 1), repeat=len(honest)):
        fresh = Committee(context, [type(k)(context, k.party, k._identity, k._subsecrets, k._noise_key, OPEN)
                                    for k in committee])
        approvals = {0: [], 1: []}  # type: ignore[var-annotated]
        for member, side in zip(honest, split):
            approvals[side].append(fresh[member].approve((r1, r2)[side]))
        for member in colluders:  # colluders sign both: their keys are the server's
            approvals[0].append(Approval.sign(committee[member]._identity, member, context.committee_id, 7, r1.digest))
            approvals[1].append(Approval.sign(committee[member]._identity, member, context.committee_id, 7, r2.digest))
        certified = [side for side in (0, 1) if len(approvals[side]) >= q]
        assert len(certified) <= 1
        for side, request in ((0, r1), (1, r2)):
            certificate = QuorumCertificate.collect(7, request.digest, approvals[side])
            for member in honest:
                if member not in request.active_sets[0]:
                    continue
                if side in certified and split[honest.index(member)] == side:
                    fresh[member].decryption_share(request, certificate)
                else:
                    with pytest.raises((QuorumError, EquivocationError)):
                        fresh[member].decryption_share(request, certificate)


def test_member_approves_one_request_per_round_and_needs_a_quorum() -> None:
    committee = Committee.generate(5, 3, policy=OPEN)
    context = committee.context
    batches = encrypt(context, np.random.default_rng(3).uniform(-1, 1, (3, 16)))
    r1, r2 = request_for(context, batches, 4), request_for(context, batches[:2], 4)
    approval = committee[0].approve(r1)
    assert committee[0].approve(r1) == approval  # a retry gets the same signature
    with pytest.raises(EquivocationError):
        committee[0].approve(r2)
    short = QuorumCertificate.collect(4, r1.digest, [committee[i].approve(r1) for i in range(3)])
    with pytest.raises(QuorumError, match="4 members"):
        committee[1].decryption_share(r1, short)
    twice = QuorumCertificate(4, r1.digest, short.approvals + short.approvals[:1])
    with pytest.raises(QuorumError, match="twice"):
        committee[1].decryption_share(r1, twice)
    forged = Approval(3, 4, r1.digest, bytes(64))
    with pytest.raises(QuorumError, match="invalid approval"):
        committee[1].decryption_share(r1, QuorumCertificate(4, r1.digest, short.approvals + (forged,)))
    full = QuorumCertificate.collect(4, r1.digest, list(short.approvals) + [committee[3].approve(r1)])
    assert QuorumCertificate.from_bytes(full.to_bytes()) == full
    committee[1].decryption_share(r1, full.to_bytes())
    with pytest.raises(QuorumError):
        committee[1].decryption_share(r2, full)  # a certificate for another request


def test_default_policy_refuses_a_single_client() -> None:
    committee = Committee.generate(3, 2)
    batches = encrypt(committee.context, np.ones((1, 8)))
    with pytest.raises(TooFewContributorsError):
        committee[0].approve(request_for(committee.context, batches))


# -- finding 5: the bytes multiplied are the bytes the digest covers ----------------------------


def test_editing_the_buffer_after_parsing_changes_nothing() -> None:
    committee = Committee.generate(3, 2, policy=OPEN)
    batches = encrypt(committee.context, np.random.default_rng(4).uniform(-1, 1, (2, 16)))
    wire = bytearray(request_for(committee.context, batches).to_bytes())
    request = DecryptionRequest.from_bytes(wire, committee.context)
    certificate = committee.certify(request)
    before = committee[0].decryption_share(request, certificate).residues.copy()
    wire[-200:-40] = bytes(160)  # the attacker rewrites c1 in the caller's buffer
    with pytest.raises(ValueError):
        request.aggregate.data[0, 1, 0, 0] = 1  # the request owns a read-only copy
    after = committee[0].decryption_share(request, certificate).residues
    assert np.array_equal(before, after)
    with pytest.raises(FormatError):
        DecryptionRequest.from_bytes(wire, committee.context)


def test_flooding_is_sized_by_the_member_not_by_the_server() -> None:
    """σ depends on what the member checked (verify) or its own max_clients — never on how many
    contributors an unverifying member is told about."""
    committee = Committee.generate(3, 2, policy=OPEN)
    batches = encrypt(committee.context, np.random.default_rng(6).uniform(-1, 1, (3, 16)))
    few = request_for(committee.context, batches[:2], 1)
    many = request_for(committee.context, batches, 2)
    sigmas = {committee[0].decryption_share(r, committee.certify(r)).sigma for r in (few, many)}
    assert sigmas == {committee.context.noise_model().flooding_sigma(OPEN.max_clients, 1 * 8192)}


def test_dealer_free_keys_decrypt_through_every_active_set() -> None:
    identities, config, parties = keygen_parties(5, 3)
    shares = run_keygen(parties, OPEN)
    committee = Committee(shares[0].context, shares)
    plain = np.random.default_rng(7).uniform(-1, 1, (3, 32))
    batches = encrypt(committee.context, plain)
    sets = list(itertools.combinations(range(5), 3))
    request = request_for(committee.context, batches, 1, sets)
    values = committee.decrypt(request)
    assert np.abs(values - plain.sum(axis=0)).max() < 1e-6


# -- finding 3: one key-share file in several processes --------------------------------------


def _approve_in_process(path: str, context_bytes: bytes, request_bytes: bytes, barrier, results) -> None:  # type: ignore[no-untyped-def]
    from he_agg.context import PublicContext
    from he_agg.errors import EquivocationError
    from he_agg.keyshare import KeyShare
    from he_agg.requests import DecryptionRequest

    context = PublicContext.from_bytes(context_bytes)
    share = KeyShare.load(path, context, passphrase=b"correct horse")
    request = DecryptionRequest.from_bytes(request_bytes, context)
    barrier.wait()
    try:
        results.put(share.approve(request).signature.hex())
    except EquivocationError:
        results.put("refused")


def test_two_processes_sharing_a_key_share_file_approve_one_request_per_round(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Finding 3: two processes loaded one key-share file and answered two different requests for
    round 7. The state now lives in a locked SQLite file written before anything leaves."""
    import multiprocessing

    committee = Committee.generate(3, 2, policy=OPEN)
    path = tmp_path / "member0.key"
    committee[0].save(path, passphrase=b"correct horse")
    batches = encrypt(committee.context, np.random.default_rng(8).uniform(-1, 1, (3, 16)))
    requests = [request_for(committee.context, batches, 7).to_bytes(),
                request_for(committee.context, batches[:2], 7).to_bytes()]
    spawn = multiprocessing.get_context("spawn")
    for attempt in range(2):
        fresh = tmp_path / f"copy{attempt}.key"
        fresh.write_bytes(path.read_bytes())
        fresh.chmod(0o600)
        barrier, results = spawn.Barrier(2), spawn.Queue()
        workers = [spawn.Process(target=_approve_in_process,
                                 args=(str(fresh), committee.context.to_bytes(), r, barrier, results)) for r in requests]
        for w in workers:
            w.start()
        outcomes = [results.get(timeout=60) for _ in workers]
        for w in workers:
            w.join(timeout=60)
        assert sorted(o == "refused" for o in outcomes) == [False, True]


def test_key_share_files_sealed_at_rest(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from he_agg.errors import AuthenticationError, InsecureFileError
    from he_agg.keyshare import KeyShare

    committee = Committee.generate(3, 2, policy=OPEN)
    path = tmp_path / "m.key"
    with pytest.raises(InsecureFileError):
        committee[1].save(path)
    committee[1].save(path, passphrase=b"pw")
    with pytest.raises(AuthenticationError):
        KeyShare.load(path, committee.context, passphrase=b"wrong")
    loaded = KeyShare.load(path, committee.context, passphrase=b"pw")
    assert loaded.party == 1 and loaded.identity_public_key == committee[1].identity_public_key
    data = path.read_bytes()
    assert committee[1]._noise_key not in data and committee[1]._identity.private_bytes() not in data
