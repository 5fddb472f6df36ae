"""Enrollment of clients with the committee: each test plays an honest run or an adversary.

Adversaries: a relay that flips bytes, re-seals edited meta, re-encodes JSON, forges or
misroutes acks; a client that deals inconsistently, replays its own boxes across epochs,
client ids and committees, or signs two dealings; an unadmitted or impersonating client.
"""

from __future__ import annotations

import itertools
import json
import math
import pickle
from dataclasses import dataclass

import blake3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from he_agg.enrollment import (ClientEnrollment, CommitteeInfo, Dealing, EnrollmentAck, EnrollmentMember,
                               MemoryStore, dealing_size, subsecret_label)
from he_agg.errors import (AuthenticationError, ChecksumError, ClientStateError, EnrollmentError, FormatError,
                           NotEnrolledError, ParameterError, ResourceLimitError)
from he_agg.hazmat.replicated import MAX_MEMBERS, assignment, expand_ternary, held_subsets, subsets
from he_agg.hazmat.sampling import fresh_key
from he_agg.hazmat.wire import envelope as wire
from he_agg.hazmat.wire.envelope import Kind, open_envelope, seal_envelope
from he_agg.identity import PartyIdentity
from he_agg.signed import seal_signed

RING = 64  # N: every property here is per coefficient, so a small ring suffices
EPOCH = 1


@dataclass
class Committee:
    info: CommitteeInfo
    identities: list[PartyIdentity]
    stores: list[MemoryStore]
    members: list[EnrollmentMember]

    def admit(self, client_id: str, key: bytes) -> None:
        for member in self.members:
            member.admit(client_id, key)

    def receive_all(self, dealing: bytes) -> list[bytes]:
        return [member.receive(dealing) for member in self.members]


def make_committee(n: int = 5, t: int = 3, identities: list[PartyIdentity] | None = None,
                   committee_id: bytes | None = None) -> Committee:
    identities = identities or [PartyIdentity.generate() for _ in range(n)]
    info = CommitteeInfo(committee_id or fresh_key(), tuple(i.public_key for i in identities), t, RING)
    stores = [MemoryStore() for _ in range(n)]
    members = [EnrollmentMember(identity, i, info, store) for i, (identity, store) in enumerate(zip(identities, stores))]
    return Committee(info, identities, stores, members)


def new_client(com: Committee, client_id: str, epoch: int = EPOCH,
               identity: PartyIdentity | None = None) -> tuple[PartyIdentity, ClientEnrollment]:
    identity = identity or PartyIdentity.generate()
    com.admit(client_id, identity.public_key)
    return identity, ClientEnrollment.create(identity, client_id, com.info, epoch)


def enroll(com: Committee, client: ClientEnrollment) -> list[bytes]:
    acks = com.receive_all(client.dealing())
    for member in com.members:
        assert member.accept(acks) == client.client_id
    client.confirm(acks)
    return acks


def combined_seeds(com: Committee, client_id: str, epoch: int = EPOCH) -> dict[int, bytes]:
    """Test-only: pool what the members hold; every holder of s_T must hold the same seed."""
    pooled: dict[int, bytes] = {}
    for i, member in enumerate(com.members):
        held = member.seeds(client_id, epoch)
        assert sorted(held) == list(held_subsets(i, com.info.members, com.info.threshold))
        for index, seed in held.items():
            assert pooled.setdefault(index, seed) == seed
    assert sorted(pooled) == list(range(com.info.subset_count))
    return pooled


def expand(com: Committee, client_id: str, index: int, seed: bytes, epoch: int = EPOCH) -> np.ndarray:
    return expand_ternary(seed, subsecret_label(com.info.committee_id, client_id, epoch, index), RING).astype(np.int64)


def check_reconstruction(com: Committee, client: ClientEnrollment) -> None:
    secret = client.secret_coefficients().astype(np.int64)
    pooled = combined_seeds(com, client.client_id, client.epoch)
    total = sum(expand(com, client.client_id, k, seed, client.epoch) for k, seed in pooled.items())
    np.testing.assert_array_equal(total, secret)
    n, t = com.info.members, com.info.threshold
    for active in itertools.combinations(range(n), t):
        assigned = [k for i in active for k in assignment(active, i, n, t)]
        assert sorted(assigned) == list(range(com.info.subset_count))  # each subset exactly once
        share_sum = np.zeros(RING, dtype=np.int64)
        for i in active:
            held = com.members[i].seeds(client.client_id, client.epoch)
            for k in assignment(active, i, n, t):
                share_sum += expand(com, client.client_id, k, held[k], client.epoch)
        np.testing.assert_array_equal(share_sum, secret)


def resign(dealing: bytes, identity: PartyIdentity, *, boxes: dict[int, bytes] | None = None,
           meta: dict | None = None) -> bytes:
    """A malicious client re-signs its own dealing with some boxes or meta fields replaced."""
    env = open_envelope(dealing, Kind.ENROLLMENT, "test")
    fields = {k: v for k, v in env.meta.as_dict().items() if k != "signature"}
    fields.update(meta or {})
    body = bytearray(env.body)
    committee_subsets = math.comb(fields["members"], fields["threshold"] - 1)
    size = (len(body) - 32 * committee_subsets) // fields["members"]
    for j, box in (boxes or {}).items():
        start = 32 * committee_subsets + size * j
        assert len(box) == size
        body[start : start + size] = box
    return seal_signed(Kind.ENROLLMENT, fields, bytes(body), identity)


def box_of(dealing: bytes, com: Committee, member: int) -> bytes:
    key = open_envelope(dealing, Kind.ENROLLMENT, "test").meta.hexbytes("client_key", 32)
    return Dealing.from_bytes(dealing, com.info, lambda _: key).boxes[member]


def store_holds(store: MemoryStore, secret: bytes) -> bool:
    return any(secret in value for space in store._data.values() for value in space.values())


def assert_refused_everywhere(com: Committee, client_id: str, acks: list[bytes]) -> None:
    for member in com.members:
        with pytest.raises(EnrollmentError) as info:
            member.accept(acks)
        assert info.value.client_id == client_id
        assert client_id in str(info.value)
        assert member.enrolled(EPOCH) == []
        with pytest.raises(NotEnrolledError):
            member.seeds(client_id, EPOCH)


# -- honest runs ---------------------------------------------------------------------------


def test_several_clients_enroll_and_members_hold_exactly_their_replicated_shares() -> None:
    com = make_committee(5, 3)
    clients = [new_client(com, f"client-{k}")[1] for k in range(3)]
    for client in clients:
        acks = enroll(com, client)
        parsed = [EnrollmentAck.from_bytes(a, com.info) for a in acks]
        assert {a.verdict for a in parsed} == {"ok"} and {a.dealing_digest for a in parsed} == {client.dealing_digest}
    for member in com.members:
        assert member.enrolled(EPOCH) == sorted(c.client_id for c in clients)
        assert member.enrolled(EPOCH + 1) == []
    for client in clients:
        check_reconstruction(com, client)
    secrets = [c.secret_coefficients() for c in clients]
    assert secrets[0].dtype == np.int16 and np.abs(secrets[0]).max() <= com.info.subset_count
    assert not np.array_equal(secrets[0], secrets[1])
    # receiving the same dealing again is idempotent: the same signed ack, state unchanged
    assert com.members[2].receive(clients[0].dealing()) == com.members[2].receive(clients[0].dealing())
    assert clients[0].dealing() == clients[0].dealing()


@settings(max_examples=25)
@given(st.integers(2, 7).flatmap(lambda n: st.tuples(st.just(n), st.integers(2, n))))
def test_any_committee_shape_reconstructs_each_client_secret(shape: tuple[int, int]) -> None:
    n, t = shape
    com = make_committee(n, t)
    _, client = new_client(com, "c")
    enroll(com, client)
    check_reconstruction(com, client)
    assert len(client.dealing()) - dealing_size(com.info, "c") < 1024  # envelope, meta and signature


def test_labels_are_injective() -> None:
    committee = bytes(32)
    seen = {}
    for client, epoch, index in itertools.product(["a", "ab", "a\u00e9", "b"], [0, 1, 12, 1 << 40], [0, 1, 2, 11, 256]):
        label = subsecret_label(committee, client, epoch, index)
        assert seen.setdefault(label, (client, epoch, index)) == (client, epoch, index)
    assert subsecret_label(bytes(32), "a", 1, 12) != subsecret_label(bytes(31) + b"\1", "a", 1, 12)


def test_committee_shape_and_inputs_are_checked() -> None:
    keys = tuple(PartyIdentity.generate().public_key for _ in range(MAX_MEMBERS + 1))
    with pytest.raises(ParameterError, match="shard"):
        CommitteeInfo(bytes(32), keys, 3, RING)
    with pytest.raises(ParameterError, match="t = 1"):
        CommitteeInfo(bytes(32), keys[:3], 1, RING)
    with pytest.raises(ParameterError, match="twice"):
        CommitteeInfo(bytes(32), (keys[0], keys[0], keys[1]), 2, RING)
    with pytest.raises(ParameterError, match="power of two"):
        CommitteeInfo(bytes(32), keys[:3], 2, 100)
    with pytest.raises(ParameterError):
        CommitteeInfo(bytes(31), keys[:3], 2, RING)
    com = make_committee(3, 2)
    with pytest.raises(FormatError):
        ClientEnrollment.create(PartyIdentity.generate(), "", com.info, 0)
    with pytest.raises(FormatError):
        ClientEnrollment.create(PartyIdentity.generate(), "bad\nid", com.info, 0)
    with pytest.raises(FormatError):
        ClientEnrollment.create(PartyIdentity.generate(), "c", com.info, -1)
    with pytest.raises(ValueError):
        EnrollmentMember(com.identities[0], 1, com.info, MemoryStore())


def test_client_secrets_are_wiped_hidden_and_restorable() -> None:
    com = make_committee(4, 2)
    identity, client = new_client(com, "c")
    saved = client.private_bytes()
    restored = ClientEnrollment.restore(identity, com.info, saved)
    assert restored.dealing() == client.dealing()
    np.testing.assert_array_equal(restored.secret_coefficients(), client.secret_coefficients())
    assert saved[:32].hex() not in repr(client) and "hidden" in repr(client)
    with pytest.raises(TypeError):
        pickle.dumps(client)
    tampered = bytearray(saved)
    tampered[0] ^= 1
    with pytest.raises(FormatError, match="do not match"):
        ClientEnrollment.restore(identity, com.info, bytes(tampered))
    with client:
        pass
    with pytest.raises(ClientStateError):
        client.secret_coefficients()


# -- a relay that edits messages -----------------------------------------------------------


def test_tampered_dealing_is_refused_and_changes_nothing() -> None:
    com = make_committee()
    _, client = new_client(com, "alice")
    new_client(com, "bob")
    dealing = client.dealing()
    member = com.members[1]
    for position in (3, 20, 40, len(dealing) // 2, len(dealing) - 40, len(dealing) - 1):
        flipped = bytearray(dealing)
        flipped[position] ^= 0x10
        with pytest.raises(FormatError):
            member.receive(bytes(flipped))
    with pytest.raises(ResourceLimitError):
        member.receive(dealing + bytes(1 << 17))
    with pytest.raises(FormatError):
        member.receive("not bytes")  # type: ignore[arg-type]
    body_flip = bytearray(dealing)
    body_flip[len(dealing) - 100] ^= 1
    with pytest.raises(ChecksumError):
        member.receive(bytes(body_flip))
    env = open_envelope(dealing, Kind.ENROLLMENT, "test")
    for edit in ({"epoch": 2}, {"client": "bob"}, {"threshold": 2}, {"committee": bytes(32).hex()}):
        meta = env.meta.as_dict() | edit  # the old signature stays, the checksum is recomputed
        with pytest.raises(AuthenticationError):
            member.receive(seal_envelope(Kind.ENROLLMENT, meta, bytes(env.body)))
    body = bytearray(env.body)
    body[5] ^= 1  # a commitment, re-sealed with a valid checksum
    with pytest.raises(AuthenticationError):
        member.receive(seal_envelope(Kind.ENROLLMENT, env.meta.as_dict(), bytes(body)))
    assert com.stores[1].items("he_agg.enroll.epoch.%020d" % EPOCH) == []
    enroll(com, client)  # the genuine dealing still goes through


def _reencoded(data: bytes, kind: Kind) -> bytes:
    """The same envelope with non-canonical meta JSON (spaces, reordered keys, escaped ASCII)."""
    env = open_envelope(data, kind, "test")
    meta = env.meta.as_dict()
    text = json.dumps(dict(reversed(list(meta.items()))), separators=(" , ", " : "))
    meta_bytes = text.replace('"client"', '"\\u0063lient"').encode()
    body = bytes(env.body)
    head = wire._FIXED.pack(wire.MAGIC, wire.VERSION, int(kind), len(meta_bytes), 0, len(body))
    pad = b"\0" * (wire._body_offset(len(meta_bytes)) - wire._FIXED.size - len(meta_bytes))
    checksum = blake3.blake3(head + meta_bytes + pad + wire.body_hash(body)).digest()
    return head + meta_bytes + pad + body + checksum


def test_a_relay_that_reencodes_a_dealing_cannot_frame_the_client_as_equivocating() -> None:
    com = make_committee()
    _, client = new_client(com, "alice")
    other = _reencoded(client.dealing(), Kind.ENROLLMENT)
    assert other != client.dealing()
    acks = [m.receive(other if i % 2 else client.dealing()) for i, m in enumerate(com.members)]
    for member in com.members:
        member.accept(acks)
    check_reconstruction(com, client)


def test_forged_misrouted_or_missing_acks_are_refused_and_change_nothing() -> None:
    com = make_committee()
    _, client = new_client(com, "alice")
    _, bob = new_client(com, "bob")
    acks = com.receive_all(client.dealing())
    bob_acks = com.receive_all(bob.dealing())
    relay = PartyIdentity.generate()
    member = com.members[0]
    forged = seal_signed(Kind.ENROLLMENT_ACK, {"committee": com.info.committee_id.hex(), "client": "alice",
                                               "epoch": EPOCH, "member": 3, "dealing": client.dealing_digest.hex(),
                                               "verdict": "ok", "reason": ""}, b"", relay)
    with pytest.raises(AuthenticationError):
        member.accept(acks[:3] + [forged] + acks[4:])
    flipped = json.loads(json.dumps(open_envelope(acks[2], Kind.ENROLLMENT_ACK, "t").meta.as_dict()))
    flipped["verdict"] = "reject"  # framing an honest client: the member's signature no longer verifies
    with pytest.raises(AuthenticationError):
        member.accept(acks[:2] + [seal_envelope(Kind.ENROLLMENT_ACK, flipped)] + acks[3:])
    with pytest.raises(AuthenticationError, match="different clients"):
        member.accept(acks[:4] + bob_acks[4:])  # member 4's ack for another client
    foreign = make_committee(identities=com.identities)  # same member keys, another committee
    foreign.admit("alice", client._identity.public_key)
    foreign_acks = foreign.receive_all(ClientEnrollment.create(client._identity, "alice", foreign.info, EPOCH).dealing())
    with pytest.raises(AuthenticationError, match="another committee"):
        member.accept(acks[:4] + foreign_acks[4:])
    with pytest.raises(EnrollmentError, match="no ack yet") as info:
        member.accept(acks[:4])
    assert info.value.client_id == "alice"
    with pytest.raises(FormatError):
        member.accept([])
    assert member.enrolled(EPOCH) == []
    for m in com.members:  # nothing was dropped: the genuine acks still enroll alice
        assert m.accept(list(reversed(acks))) == "alice"
    check_reconstruction(com, client)
    # a malicious member signs a second verdict later: an enrolled client stays enrolled
    second = EnrollmentAck.sign(com.identities[4], 4, com.info, "alice", EPOCH, bytes(32), "reject", "lie").to_bytes()
    with pytest.raises(AuthenticationError, match="two verdicts"):
        member.accept(acks[:4] + [second])
    assert member.enrolled(EPOCH) == ["alice"]
    check_reconstruction(com, client)


# -- clients that are not who they say -----------------------------------------------------


def test_unadmitted_revoked_or_impersonating_clients_are_refused() -> None:
    com = make_committee()
    stranger = ClientEnrollment.create(PartyIdentity.generate(), "stranger", com.info, EPOCH)
    with pytest.raises(EnrollmentError, match="not admitted") as info:
        com.members[0].receive(stranger.dealing())
    assert info.value.client_id == "stranger"
    alice_identity, alice = new_client(com, "alice")
    impostor = ClientEnrollment.create(PartyIdentity.generate(), "alice", com.info, EPOCH)
    with pytest.raises(AuthenticationError, match="admitted key"):
        com.members[0].receive(impostor.dealing())
    # the impostor lists alice's key but cannot sign with it
    forged = open_envelope(impostor.dealing(), Kind.ENROLLMENT, "t").meta.as_dict()
    forged["client_key"] = alice_identity.public_key.hex()
    with pytest.raises(AuthenticationError, match="signature"):
        com.members[0].receive(seal_envelope(Kind.ENROLLMENT, forged, bytes(open_envelope(
            impostor.dealing(), Kind.ENROLLMENT, "t").body)))
    com.members[0].revoke("alice")
    with pytest.raises(EnrollmentError, match="revoked"):
        com.members[0].receive(alice.dealing())
    assert "alice" not in com.members[0].admitted() and "alice" in com.members[1].admitted()


# -- clients that deal inconsistently ------------------------------------------------------


def test_a_box_seed_that_misses_its_commitment_gets_a_reject_and_refuses_the_client() -> None:
    com = make_committee()
    mallory_identity, honest = new_client(com, "mallory")
    victim = 2
    plain = bytearray(com.identities[victim].open_from(mallory_identity.public_key,
                                                      box_of(honest.dealing(), com, victim), "t"))
    plain[-1] ^= 1  # the last seed in member 2's box no longer matches its commitment
    bad_box = mallory_identity.seal_to(com.info.roster[victim], bytes(plain))
    dealing = resign(honest.dealing(), mallory_identity, boxes={victim: bad_box})
    acks = com.receive_all(dealing)
    verdicts = [EnrollmentAck.from_bytes(a, com.info) for a in acks]
    assert [v.verdict for v in verdicts] == ["ok", "ok", "reject", "ok", "ok"]
    assert "commitment" in verdicts[victim].reason and "mallory" in verdicts[victim].reason
    assert com.members[victim].receive(dealing) == acks[victim]  # the verdict is stable
    with pytest.raises(EnrollmentError, match="reject"):
        ClientEnrollment.restore(mallory_identity, com.info, honest.private_bytes()).confirm(acks)
    assert_refused_everywhere(com, "mallory", acks)
    for store in com.stores:  # the seeds were dropped from every store
        assert not any(store_holds(store, honest.private_bytes()[32 * k : 32 * k + 32])
                       for k in range(com.info.subset_count))
    with pytest.raises(EnrollmentError, match="second, different dealing"):
        com.members[0].receive(ClientEnrollment.create(mallory_identity, "mallory", com.info, EPOCH).dealing())


def test_a_box_replayed_to_another_member_epoch_client_or_committee_gets_a_reject() -> None:
    com = make_committee()
    identity, _ = new_client(com, "alice")
    com.admit("alic2", identity.public_key)  # one client key, two client ids (of one length, so the boxes fit)
    target = 1
    current = ClientEnrollment.create(identity, "alice", com.info, EPOCH)
    foreign = make_committee(identities=com.identities)
    sources = {
        "member": box_of(current.dealing(), com, 3),  # member 3's box in member 1's slot
        "epoch": box_of(ClientEnrollment.create(identity, "alice", com.info, EPOCH + 1).dealing(), com, target),
        "client": box_of(ClientEnrollment.create(identity, "alic2", com.info, EPOCH).dealing(), com, target),
        "committee": ClientEnrollment.create(identity, "alice", foreign.info, EPOCH)._dealing.boxes[target],
    }
    for what, box in sources.items():
        fresh = make_committee(identities=com.identities, committee_id=com.info.committee_id)
        fresh.admit("alice", identity.public_key)
        dealing = resign(current.dealing(), identity, boxes={target: box})
        acks = fresh.receive_all(dealing)
        verdict = EnrollmentAck.from_bytes(acks[target], fresh.info)
        assert verdict.verdict == "reject", what
        assert ("does not open" if what == "member" else "bound to another") in verdict.reason, what
        assert_refused_everywhere(fresh, "alice", acks)


def test_whole_dealings_replayed_to_another_committee_or_an_ended_epoch_are_refused() -> None:
    com = make_committee()
    identity, client = new_client(com, "alice")
    foreign = make_committee(identities=com.identities)
    foreign.admit("alice", identity.public_key)
    with pytest.raises(AuthenticationError, match="another committee"):
        foreign.members[0].receive(client.dealing())
    smaller = make_committee(identities=com.identities, committee_id=com.info.committee_id, t=2)
    smaller.admit("alice", identity.public_key)
    with pytest.raises(AuthenticationError, match="this committee has"):
        smaller.members[0].receive(client.dealing())
    com.members[0].end_epoch(EPOCH)
    with pytest.raises(EnrollmentError, match="ended") as info:
        com.members[0].receive(client.dealing())
    assert info.value.client_id == "alice"


def test_a_client_that_signs_two_dealings_is_refused_by_every_member() -> None:
    com = make_committee()
    identity, first = new_client(com, "eve")
    second = ClientEnrollment.create(identity, "eve", com.info, EPOCH)
    acks = [m.receive(first.dealing() if i < 3 else second.dealing()) for i, m in enumerate(com.members)]
    assert {EnrollmentAck.from_bytes(a, com.info).verdict for a in acks} == {"ok"}
    with pytest.raises(EnrollmentError, match="second, different dealing") as info:
        com.members[0].receive(second.dealing())
    assert info.value.client_id == "eve"
    with pytest.raises(EnrollmentError, match="different dealings"):
        second.confirm(acks)
    assert_refused_everywhere(com, "eve", acks)
    for i, store in enumerate(com.stores):
        own = first if i < 3 else second
        assert not store_holds(store, own.private_bytes()[:32])


# -- state across restarts, revocation and epochs ------------------------------------------


def test_the_registry_persists_across_restarts() -> None:
    com = make_committee()
    _, alice = new_client(com, "alice")
    _, bob = new_client(com, "bob")
    enroll(com, alice)
    bob_acks = com.receive_all(bob.dealing())  # bob is pending when the members restart
    restarted = [EnrollmentMember(com.identities[i], i, com.info, store) for i, store in enumerate(com.stores)]
    com.members = restarted
    for member in restarted:
        assert member.enrolled(EPOCH) == ["alice"]
        assert member.accept(bob_acks) == "bob"
        assert member.enrolled(EPOCH) == ["alice", "bob"]
    check_reconstruction(com, alice)
    check_reconstruction(com, bob)


def test_revoke_and_end_epoch_erase_seeds_and_clients_re_enroll_for_a_new_epoch() -> None:
    com = make_committee()
    identity, alice = new_client(com, "alice")
    _, bob = new_client(com, "bob")
    enroll(com, alice)
    enroll(com, bob)
    alice_seeds = [alice.private_bytes()[32 * k : 32 * k + 32] for k in range(com.info.subset_count)]
    bob_seeds = [bob.private_bytes()[32 * k : 32 * k + 32] for k in range(com.info.subset_count)]
    for member, store in zip(com.members, com.stores):
        member.revoke("alice")
        assert member.enrolled(EPOCH) == ["bob"]
        with pytest.raises(NotEnrolledError):
            member.seeds("alice", EPOCH)
        assert not any(store_holds(store, s) for s in alice_seeds)
        assert any(store_holds(store, s) for s in bob_seeds)
    com.admit("alice", identity.public_key)  # the operators re-admit alice: she enrolls again
    again = ClientEnrollment.create(identity, "alice", com.info, EPOCH)
    enroll(com, again)
    next_bob = ClientEnrollment.create(bob._identity, "bob", com.info, EPOCH + 1)
    enroll(com, next_bob)
    for member, store in zip(com.members, com.stores):
        member.end_epoch(EPOCH)
        assert member.enrolled(EPOCH) == [] and member.enrolled(EPOCH + 1) == ["bob"]
        with pytest.raises(NotEnrolledError):
            member.seeds("bob", EPOCH)
        assert not any(store_holds(store, s) for s in bob_seeds)
        with pytest.raises(EnrollmentError, match="ended"):
            member.receive(again.dealing())
        member.end_epoch(0)  # ending an older epoch does not reopen anything
        assert member.enrolled(EPOCH + 1) == ["bob"]
    check_reconstruction(com, next_bob)
    assert not np.array_equal(next_bob.secret_coefficients(), bob.secret_coefficients())


def test_dealing_size_matches_the_documented_cost() -> None:
    for n, t in [(5, 3), (10, 5), (12, 7)]:
        keys = tuple(PartyIdentity.generate().public_key for _ in range(n))
        info = CommitteeInfo(bytes(32), keys, t, RING)
        c, c_held = len(subsets(n, t)), math.comb(n - 1, t - 1)
        assert dealing_size(info, "client-01") == 32 * c + n * (106 + len("client-01") + 34 * c_held)
