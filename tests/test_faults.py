"""Dropouts and faults in one round (issue 12, part 5): what a round survives and what it refuses.

Members offline (up to n − t, as long as a quorum q = ⌈(n+c+1)/2⌉ is online to approve), a
member answering garbage or a share made for another request (named with t+2 members' sets;
``robust=True`` still decrypts from the honest ones and records whom it excluded), a client
dropping mid-upload (refused, round intact), and the aggregator replaced between the request
and the shares (finalize from the request's and Σc0's bytes). Enrolled mode throughout;
public-key mode where the fault applies to it.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import tenseal as ts

from he_agg.aggregator import Aggregator, EnrolledAggregator
from he_agg.ciphertext import CiphertextBatch
from he_agg.committee import Combined, Committee, combine_enrolled, verification_sets
from he_agg.errors import FormatError, InconsistentShareError, QuorumError, ShareBindingError
from he_agg.hazmat.noise import EnrolledNoiseModel
from he_agg.keyshare import Policy
from he_agg.member import EnrolledCommittee, EnrolledPolicy
from he_agg.packing import flatten
from he_agg.params import AGGREGATION, ENROLLED
from he_agg.quorum import quorum_size
from he_agg.requests import DecryptionShare, EnrolledRequest

VALUES = 4096  # one ciphertext (slot packing)
CLIENTS = 3


def plain_values(seed: int, rows: int = CLIENTS, width: int = VALUES) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (rows, width))


def enrolled_round(committee: EnrolledCommittee, clients: list, round_id: int, values: np.ndarray,
                   active_sets=None) -> tuple[EnrolledAggregator, EnrolledRequest]:  # type: ignore[no-untyped-def]
    agg = Aggregator(committee.public_context, round_id, min_clients=CLIENTS)
    for client, row in zip(clients, values):
        agg.add(client.encrypt(row, round_id=round_id))
    return agg, agg.decryption_request(active_sets)


def enrolled_bound(committee: EnrolledCommittee, clients: int = CLIENTS, values: int = VALUES) -> float:
    t = committee.context.threshold
    return EnrolledNoiseModel(ENROLLED).error_bound(committee[0].sigma, t, clients, values)


def garbage(share: DecryptionShare) -> DecryptionShare:
    """The share with uniformly random (in-range) residues: a member answering noise."""
    raw = np.frombuffer(os.urandom(share.residues.nbytes), dtype=np.uint64).reshape(share.residues.shape)
    moduli = np.array(ENROLLED.data_moduli if share.residues.shape[1] == len(ENROLLED.data_moduli)
                      else AGGREGATION.data_moduli, dtype=np.uint64)
    residues = raw % moduli.reshape(1, -1, 1)
    return DecryptionShare(share.party, share.active, share.request_digest, share.committee_id, residues, share.sigma)


def relabeled(share: DecryptionShare, digest: bytes) -> DecryptionShare:
    """A share computed for another request, its header rewritten to claim ``digest``."""
    return DecryptionShare(share.party, share.active, digest, share.committee_id, share.residues, share.sigma)


@pytest.fixture(scope="module")
def five() -> tuple[EnrolledCommittee, list]:
    """A (5, 3) enrolled committee (default c = t − 1) and three enrolled clients."""
    committee = EnrolledCommittee.generate(5, 3, policy=EnrolledPolicy(min_clients=CLIENTS))
    return committee, [committee.client(f"site-{i}") for i in range(CLIENTS)]


_ROUNDS = itertools.count(100)


# -- members offline ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n, t, c", [(5, 3, 0), (7, 5, 2)])
def test_n_minus_t_members_offline_round_succeeds(n: int, t: int, c: int) -> None:
    """With c ≤ 2t − n − 1 the quorum fits in t members: n − t offline, the round still finishes."""
    assert quorum_size(n, c) <= t
    committee = EnrolledCommittee.generate(n, t, colluders=c, policy=EnrolledPolicy(min_clients=CLIENTS))
    clients = [committee.client(f"site-{i}") for i in range(CLIENTS)]
    online = list(range(n - t, n))  # the first n − t members are offline
    values = plain_values(n)
    agg, request = enrolled_round(committee, clients, 1, values, [online])
    certificate = committee.certify(request, online)
    shares = [committee[i].decryption_share(request, certificate) for i in online]
    out = agg.finalize(shares)
    assert np.abs(out - values.sum(axis=0)).max() <= enrolled_bound(committee)
    assert agg.result is not None and agg.result.faulty is None


def test_quorum_boundary_with_members_offline(five) -> None:  # type: ignore[no-untyped-def]
    """q online members certify; q − 1 cannot, and the error says how many must approve. With the
    default c = t − 1 a (5, 3) committee has q = 4: n − t = 2 offline members block approval."""
    committee, clients = five
    context = committee.context
    q = quorum_size(context.parties, context.colluders)
    assert q == 4 > context.threshold
    values = plain_values(1)
    agg, request = enrolled_round(committee, clients, next(_ROUNDS), values, [(1, 2, 3)])
    short = committee.certify(request, list(range(1, q)))  # q − 1 online members approve
    with pytest.raises(QuorumError, match=f"has {q - 1} approvals; {q} members"):
        committee[1].decryption_share(request, short)
    certificate = committee.certify(request, list(range(1, q + 1)))  # member 0 offline: q = 4 online
    out = agg.finalize([committee[i].decryption_share(request, certificate) for i in (1, 2, 3)])
    assert np.abs(out - values.sum(axis=0)).max() <= enrolled_bound(committee)


# -- a faulty member among t + 2 --------------------------------------------------------------------


def _verification_round(five, seed: int):  # type: ignore[no-untyped-def]
    committee, clients = five
    values = plain_values(seed)
    sets = verification_sets(range(5), committee.context.threshold)
    agg, request = enrolled_round(committee, clients, next(_ROUNDS), values, sets)
    return committee, values, agg, request, committee.shares(request)


def test_garbage_shares_named_and_robust_decrypts(five) -> None:  # type: ignore[no-untyped-def]
    committee, values, agg, request, shares = _verification_round(five, 2)
    bad = [garbage(s) if s.party == 3 else s for s in shares]
    with pytest.raises(InconsistentShareError, match="member 3") as info:
        agg.finalize(bad)
    assert info.value.party == 3
    out = agg.finalize(bad, robust=True)
    assert np.abs(out - values.sum(axis=0)).max() <= enrolled_bound(committee)
    assert agg.result is not None and agg.result.faulty == 3
    # the same shares as bytes, and honest shares: nobody is excluded
    assert agg.finalize([s.to_bytes() for s in shares], robust=True) is not None and agg.result.faulty is None


def test_share_for_another_request_named_and_robust_decrypts(five) -> None:  # type: ignore[no-untyped-def]
    committee, values, agg, request, shares = _verification_round(five, 3)
    _, _, _, other, other_shares = _verification_round(five, 4)
    from_other = {(s.party, s.active): s for s in other_shares}
    # member 1 answers with its shares of another round's request, as made
    stale = [from_other[(s.party, s.active)] if s.party == 1 else s for s in shares]
    with pytest.raises(ShareBindingError, match="member 1 .*another request"):
        agg.finalize(stale)
    out = agg.finalize(stale, robust=True)
    assert np.abs(out - values.sum(axis=0)).max() <= enrolled_bound(committee)
    assert agg.result.faulty == 1
    # ... or relabelled to claim this request: its residues disagree, and it is named all the same
    forged = [relabeled(from_other[(s.party, s.active)], request.digest) if s.party == 1 else s for s in shares]
    with pytest.raises(InconsistentShareError, match="member 1") as info:
        agg.finalize(forged)
    assert info.value.party == 1
    out = agg.finalize(forged, robust=True)
    assert np.abs(out - values.sum(axis=0)).max() <= enrolled_bound(committee)
    assert agg.result.faulty == 1


def test_robust_still_raises_without_a_unique_suspect(five) -> None:  # type: ignore[no-untyped-def]
    committee, values, agg, request, shares = _verification_round(five, 5)
    two = [garbage(s) if s.party in (1, 3) else s for s in shares]  # two faulty members
    with pytest.raises(InconsistentShareError) as info:
        agg.finalize(two, robust=True)
    assert info.value.party is None
    assert agg.result is None
    # two members with shares for another request: not excluded either
    wrong = [relabeled(s, bytes(32)) if s.party in (0, 4) else s for s in shares]
    with pytest.raises(ShareBindingError, match=r"members \[0, 4\]"):
        agg.finalize(wrong, robust=True)
    # a misbound member plus a second one answering garbage: the rest disagree, raise
    mixed = [relabeled(s, bytes(32)) if s.party == 0 else garbage(s) if s.party == 2 else s for s in shares]
    with pytest.raises(InconsistentShareError):
        agg.finalize(mixed, robust=True)
    # t + 1 members: every set but one holds the faulty member, and any member explains it: not excluded
    t1 = [garbage(s) if s.party == 3 else s for s in shares if 4 not in s.active]
    with pytest.raises(InconsistentShareError, match="cannot be located") as info:
        combine_enrolled(request, agg._accumulator.sum, t1, robust=True)
    assert info.value.party is None


def test_public_key_mode_garbage_member_named_and_excluded() -> None:
    committee = Committee.dealer_free(5, 3, AGGREGATION, policy=Policy(budget=1000))
    values = plain_values(6, width=64)
    tenseal = committee.context.to_tenseal()
    agg = Aggregator(committee.context, 7, min_clients=CLIENTS, layout=flatten(values[0])[1])
    for i, row in enumerate(values):
        agg.add(CiphertextBatch.from_tenseal(ts.ckks_vector(tenseal, row.tolist()), AGGREGATION), client_id=f"c{i}")
    request = agg.decryption_request(verification_sets(range(5), 3))
    shares = committee.shares(request, contributions=agg.contributions)
    bad = [garbage(s) if s.party == 2 else s for s in shares]
    with pytest.raises(InconsistentShareError, match="member 2"):
        agg.finalize(bad)
    out = agg.finalize(bad, robust=True)
    bound = committee.context.noise_model().error_bound(CLIENTS, request.aggregate.count * AGGREGATION.n, 3, 64)
    assert np.abs(np.asarray(out) - values.sum(axis=0)).max() <= bound
    assert agg.result.faulty == 2
    stale = [relabeled(s, bytes(32)) if s.party == 4 else s for s in shares]
    agg.finalize(stale, robust=True)
    assert agg.result.faulty == 4


# -- a client dropping mid-upload --------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0, 7, 100, 0.5, -1])
def test_truncated_upload_refused_round_intact(five, keep) -> None:  # type: ignore[no-untyped-def]
    committee, clients = five
    round_id = next(_ROUNDS)
    values = plain_values(7)
    agg = Aggregator(committee.public_context, round_id, min_clients=CLIENTS)
    for client, row in zip(clients[:2], values[:2]):
        agg.add(client.encrypt(row, round_id=round_id))
    before = np.array(agg._accumulator.sum, copy=True)
    whole = clients[2].encrypt(values[2], round_id=round_id)
    cut = int(len(whole) * keep) if isinstance(keep, float) else keep % len(whole)
    with pytest.raises(FormatError, match="truncated|bytes|magic|header"):
        agg.add(whole[:cut])
    assert agg.contributors == ("site-0", "site-1")
    assert np.array_equal(agg._accumulator.sum, before)
    agg.add(clients[2].resend(round_id))  # the client reconnects and resends the identical bytes
    request = agg.decryption_request()
    out = agg.finalize(committee.shares(request))
    assert np.abs(out - values.sum(axis=0)).max() <= enrolled_bound(committee)


def test_truncated_upload_public_key_mode() -> None:
    committee = Committee.generate(3, 2, AGGREGATION, policy=Policy(budget=10))
    tenseal = committee.context.to_tenseal()
    agg = Aggregator(committee.context, 1, min_clients=2, layout=flatten(np.zeros(8))[1])
    blobs = [CiphertextBatch.from_tenseal(ts.ckks_vector(tenseal, [float(i)] * 8), AGGREGATION).to_bytes()
             for i in range(2)]
    agg.add(blobs[0], client_id="a")
    with pytest.raises(FormatError):
        agg.add(blobs[1][: len(blobs[1]) // 2], client_id="b")
    assert agg.contributors == ("a",)
    agg.add(blobs[1], client_id="b")
    assert np.abs(np.asarray(agg.finalize(committee.shares(agg.decryption_request(),
                                                          contributions=agg.contributions))) - 1.0).max() < 1e-3


# -- the aggregator replaced between the request and the shares --------------------------------------


def test_aggregator_replaced_between_request_and_shares(five) -> None:  # type: ignore[no-untyped-def]
    committee, clients = five
    values = plain_values(8)
    agg, request = enrolled_round(committee, clients, next(_ROUNDS), values, verification_sets(range(5), 3))
    request_bytes, c0_bytes = request.to_bytes(), np.asarray(agg._accumulator.sum).tobytes()
    del agg, request  # the server restarts; only the bytes survive
    rebuilt = EnrolledRequest.from_bytes(request_bytes, committee.context)
    assert rebuilt.to_bytes() == request_bytes
    shares = [s.to_bytes() for s in committee.shares(rebuilt)]  # members answer the bytes they approved
    c0_sum = np.frombuffer(c0_bytes, dtype=np.uint64)
    out = combine_enrolled(EnrolledRequest.from_bytes(request_bytes, committee.context), c0_sum, shares)
    assert np.abs(out - values.sum(axis=0)).max() <= enrolled_bound(committee)
    robust = combine_enrolled(rebuilt, c0_sum, shares, robust=True)
    assert robust.faulty is None and np.array_equal(robust.values, out)
    tampered = c0_sum.copy()
    tampered[0] ^= 1
    with pytest.raises(ShareBindingError, match="not the one the request names"):
        combine_enrolled(rebuilt, tampered, shares)
