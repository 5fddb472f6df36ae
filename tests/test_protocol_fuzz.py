"""Every protocol message from another party, fuzzed: only he_agg errors may come out.

Random bytes, byte mutations and re-sealed meta edits (tests/fuzzing.py) against the
entry points of key generation, enrollment, approvals, quorum certificates, enrolled
uploads, tickets, enrolled requests and shares, contexts and key-share files.
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from he_agg.committee import Committee
from he_agg.context import EnrolledContext
from he_agg.enrolled import EnrolledUpload, Ticket
from he_agg.enrollment import EnrollmentAck
from he_agg.identity import PartyIdentity
from he_agg.keygen import KeygenConfig, KeygenParty
from he_agg.keyshare import KeyShare
from he_agg.member import EnrolledCommittee
from he_agg.params import AGGREGATION
from he_agg.quorum import Approval, QuorumCertificate
from he_agg.requests import DecryptionShare, EnrolledRequest

from .fuzzing import EXAMPLES, assert_only_heagg_errors, enrolled_round, enrollment_messages

SMALL = max(EXAMPLES // 4, 25)


@pytest.fixture(scope="module")
def enrolled():  # type: ignore[no-untyped-def]
    built = enrolled_round()
    return tuple(built[k] for k in ("committee", "clients", "uploads", "request", "certificate", "share"))


def test_fuzz_enrolled_context(enrolled) -> None:  # type: ignore[no-untyped-def]
    committee = enrolled[0]
    assert_only_heagg_errors(EnrolledContext.from_bytes, committee.context.to_bytes(), examples=SMALL)


def test_fuzz_enrolled_request_approve_and_share(enrolled) -> None:  # type: ignore[no-untyped-def]
    committee, _, _, request, certificate, _ = enrolled
    context = committee.context
    member = committee[2]  # approved round 1 already: mutated requests meet every check

    def parse(blob: bytes) -> None:
        parsed = EnrolledRequest.from_bytes(blob, context)
        member.approve(parsed)

    assert_only_heagg_errors(parse, request.to_bytes(), examples=SMALL)


def test_fuzz_approval_and_certificate(enrolled) -> None:  # type: ignore[no-untyped-def]
    committee, _, _, request, certificate, _ = enrolled
    context = committee.context

    def check(blob: bytes) -> None:
        QuorumCertificate.from_bytes(blob).check(context.roster, context.committee_id, context.colluders,
                                                 request.round_id, request.digest)

    assert_only_heagg_errors(check, certificate.to_bytes(), examples=SMALL)
    assert_only_heagg_errors(lambda b: Approval.from_bytes(b).check(context.roster, context.committee_id),
                             certificate.approvals[0].to_bytes(), examples=SMALL)


def test_fuzz_enrolled_upload_and_ticket(enrolled) -> None:  # type: ignore[no-untyped-def]
    committee, clients, uploads, _, _, _ = enrolled
    context = committee.context
    key = clients[0].public_key
    assert_only_heagg_errors(lambda b: EnrolledUpload.from_bytes(b, context.params, context.committee_id,
                                                                 verify_key=key), uploads[0], examples=SMALL)
    ticket = EnrolledUpload.from_bytes(uploads[0], context.params, context.committee_id, verify_key=key).ticket
    assert_only_heagg_errors(lambda b: Ticket.from_bytes(b).verify(key), ticket.to_bytes(), examples=SMALL)


def test_fuzz_the_servers_add(enrolled) -> None:  # type: ignore[no-untyped-def]
    """The server's add opens an upload with its hash deferred to the summing pass: mutated
    bytes, first or second in a round, raise only he_agg errors and never change the sum."""
    from he_agg.aggregator import Aggregator

    committee, _, uploads, _, _, _ = enrolled
    ctx = committee.public_context
    base = Aggregator(ctx, 1, min_clients=2)
    base.add(uploads[0])
    before = base._accumulator.sum.copy()

    def add(blob: bytes) -> None:
        try:
            Aggregator(ctx, 1, min_clients=2).add(blob)  # first upload: it sizes the round
        finally:
            try:
                base.add(blob)  # second: the sum must be untouched on refusal
            except Exception:
                assert np.array_equal(base._accumulator.sum, before) and len(base) == 1
                raise
            base._accumulator = None  # accepted (a mutation that is still a valid upload): start over
            base.add(uploads[0])

    assert_only_heagg_errors(add, uploads[1], examples=SMALL)


def test_fuzz_enrolled_share(enrolled) -> None:  # type: ignore[no-untyped-def]
    committee, _, _, _, _, share = enrolled
    assert_only_heagg_errors(lambda b: DecryptionShare.from_bytes(b, committee.context), share.to_bytes(),
                             examples=SMALL)


def test_fuzz_enrollment_messages() -> None:
    committee, dealing, acks = enrollment_messages()
    fresh = EnrolledCommittee.generate(3, 2)  # receive() of a fresh member must refuse cleanly
    target = committee[0].enrollment
    assert_only_heagg_errors(target.receive, dealing, examples=SMALL)
    info = committee[0].enrollment._committee
    assert_only_heagg_errors(lambda b: EnrollmentAck.from_bytes(b, info), acks[1], examples=SMALL)
    assert_only_heagg_errors(lambda b: committee[1].enrollment.accept([acks[0], b, acks[2]]), acks[1],
                             examples=SMALL)
    assert fresh is not None


def test_fuzz_key_generation_rounds() -> None:
    identities = [PartyIdentity.generate() for _ in range(3)]
    config = KeygenConfig.new(AGGREGATION, 2, [i.public_key for i in identities])
    parties = [KeygenParty(config, i, identity) for i, identity in enumerate(identities)]
    first = [p.round1() for p in parties]
    second = [p.round2(first) for p in parties]
    third = [p.round3(second) for p in parties]

    def early(b: bytes) -> None:
        party = KeygenParty(config, 0, identities[0])
        party.round2([party.round1(), first[1], b])

    assert_only_heagg_errors(early, first[2], examples=SMALL // 2)

    def late(b: bytes) -> None:  # round 3 and finish against a party that completed round 2 honestly
        party = KeygenParty(config, 0, identities[0])
        party._messages, party._held = dict(parties[0]._messages), parties[0]._held
        party._transcripts, party._commitments = list(parties[0]._transcripts[:1]), dict(parties[0]._commitments)
        party._pieces = dict(parties[0]._pieces)
        party._messages.pop(3, None)
        party.round3([second[0], second[1], b])

    assert_only_heagg_errors(late, second[2], examples=SMALL // 2)
    assert third


def test_fuzz_key_share_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    committee = Committee.generate(3, 2)
    path = tmp_path / "member.key"
    committee[0].save(path, insecure_plaintext=True)
    valid = path.read_bytes()
    counter = iter(range(1 << 30))

    def load(blob: bytes) -> None:
        target = tmp_path / f"fuzz{next(counter)}.key"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        KeyShare.load(target)

    assert_only_heagg_errors(load, valid, examples=SMALL)
