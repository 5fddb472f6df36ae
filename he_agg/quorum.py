r"""One release per round, agreed by the committee: approvals and quorum certificates.

Members never talk to each other, so a member-local "one request per round" lets a lying
server send request R1 for round r to one group of t members and R2 to another; with
contributor sets that differ by one client, the two releases differ by that client's
value. Each reconstruction needs t − c honest answers (c colluding members), so the local
rule alone is safe only when c < 2t − n.

The fix: a member releases a share only against a *quorum certificate* — approvals
(Ed25519 signatures) from at least q = ⌈(n + c + 1)/2⌉ distinct members on the same
request digest, each member approving at most one request per round and persisting that
approval before it signs (:meth:`he_agg.state.MemberState.approve`). Two quorums of size q
overlap in 2q − n ≥ c + 1 members, hence in at least one honest member, who approved only
one of them: two different requests for one round can never both be certified.

Bytes in, bytes out: :class:`Approval` and :class:`QuorumCertificate` serialize to
he_agg envelopes; :meth:`QuorumCertificate.check` is what every member runs.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .errors import AuthenticationError, EquivocationError, FormatError, QuorumError
from .hazmat.wire.envelope import Kind, open_envelope, seal_envelope
from .identity import SIGNATURE_BYTES, PartyIdentity, verify_signature

__all__ = ["Approval", "QuorumCertificate", "check_release", "quorum_size"]

_DOMAIN = b"he_agg.approve.v1"


def quorum_size(parties: int, colluders: int) -> int:
    """q = ⌈(n + c + 1)/2⌉: any two quorums share at least c + 1 members."""
    if not 0 <= colluders < parties:
        raise ValueError(f"the colluder bound c must be in [0, n), got c={colluders}, n={parties}")
    return math.ceil((parties + colluders + 1) / 2)


def _message(committee_id: bytes, round_id: int, request_digest: bytes) -> bytes:
    return committee_id + struct.pack("<Q", round_id) + request_digest


@dataclass(frozen=True)
class Approval:
    """Member ``member``'s signature on (committee, round, request digest)."""

    member: int
    round_id: int
    request_digest: bytes
    signature: bytes

    @classmethod
    def sign(cls, identity: PartyIdentity, member: int, committee_id: bytes, round_id: int,
             request_digest: bytes) -> "Approval":
        message = _message(committee_id, round_id, request_digest)
        return cls(member, round_id, request_digest, identity.sign(_DOMAIN, message))

    def check(self, roster: Sequence[bytes], committee_id: bytes) -> None:
        """AuthenticationError unless the roster's member signed exactly this."""
        if not 0 <= self.member < len(roster):
            raise AuthenticationError(f"approval from member {self.member}, not in the roster")
        verify_signature(roster[self.member], _DOMAIN, _message(committee_id, self.round_id, self.request_digest),
                         self.signature, f"the approval of member {self.member}")

    def to_bytes(self) -> bytes:
        meta = {"member": self.member, "round": self.round_id, "request": self.request_digest.hex(),
                "signature": self.signature.hex()}
        return seal_envelope(Kind.APPROVAL, meta)

    @classmethod
    def from_bytes(cls, data: object) -> "Approval":
        env = open_envelope(data, Kind.APPROVAL, "he_agg approval")
        meta = env.meta
        return cls(meta.integer("member", 0, 255), meta.integer("round"), meta.hexbytes("request", 32),
                   meta.hexbytes("signature", SIGNATURE_BYTES))


@dataclass(frozen=True)
class QuorumCertificate:
    """Approvals of one request digest by distinct members."""

    round_id: int
    request_digest: bytes
    approvals: tuple[Approval, ...]

    @classmethod
    def collect(cls, round_id: int, request_digest: bytes, approvals: Iterable[Approval | bytes]) -> "QuorumCertificate":
        """Keep the approvals of this request (one per member); others are ignored."""
        chosen: dict[int, Approval] = {}
        for item in approvals:
            approval = item if isinstance(item, Approval) else Approval.from_bytes(item)
            if approval.round_id == round_id and approval.request_digest == request_digest:
                chosen.setdefault(approval.member, approval)
        return cls(round_id, request_digest, tuple(chosen[m] for m in sorted(chosen)))

    def check(self, roster: Sequence[bytes], committee_id: bytes, colluders: int, round_id: int,
              request_digest: bytes) -> None:
        """QuorumError unless ≥ q distinct roster members signed this round's request digest."""
        if self.round_id != round_id or self.request_digest != request_digest:
            raise QuorumError("the quorum certificate approves another request")
        needed = quorum_size(len(roster), colluders)
        members = [a.member for a in self.approvals]
        if len(set(members)) != len(members):
            raise QuorumError("the quorum certificate lists a member twice")
        for approval in self.approvals:
            if approval.round_id != round_id or approval.request_digest != request_digest:
                raise QuorumError(f"the approval of member {approval.member} is for another request")
            try:
                approval.check(roster, committee_id)
            except AuthenticationError as exc:
                raise QuorumError(f"invalid approval in the quorum certificate: {exc}") from None
        if len(members) < needed:
            raise QuorumError(f"the quorum certificate has {len(members)} approvals; {needed} members "
                              f"(⌈(n + c + 1)/2⌉ with n={len(roster)}, c={colluders}) must approve a request")

    def to_bytes(self) -> bytes:
        meta = {"round": self.round_id, "request": self.request_digest.hex(),
                "approvals": [[a.member, a.signature.hex()] for a in self.approvals]}
        return seal_envelope(Kind.QUORUM_CERTIFICATE, meta)

    @classmethod
    def from_bytes(cls, data: object) -> "QuorumCertificate":
        what = "he_agg quorum certificate"
        env = open_envelope(data, Kind.QUORUM_CERTIFICATE, what)
        meta = env.meta
        round_id, digest = meta.integer("round"), meta.hexbytes("request", 32)
        raw = meta.raw("approvals")
        if not isinstance(raw, list) or len(raw) > 255:
            raise FormatError(f"{what}: approvals must be a list of at most 255 entries")
        approvals = []
        for item in raw:
            if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int and 0 <= item[0] < 256
                    and isinstance(item[1], str) and len(item[1]) == 2 * SIGNATURE_BYTES):
                raise FormatError(f"{what}: each approval is [member, signature hex]")
            try:
                signature = bytes.fromhex(item[1])
            except ValueError:
                raise FormatError(f"{what}: bad signature hex") from None
            approvals.append(Approval(item[0], round_id, digest, signature))
        return cls(round_id, digest, tuple(approvals))


def check_release(certificate: QuorumCertificate | bytes, context: Any, round_id: int, request_digest: bytes,
                  own_approval: tuple[bytes, bytes] | None) -> bool:
    """The gate before any share leaves a member: a valid certificate of this request, and no
    approval of this member for another request of the round. Returns whether the member
    approved this request itself (its own checks ran then)."""
    if not isinstance(certificate, QuorumCertificate):
        certificate = QuorumCertificate.from_bytes(certificate)
    certificate.check(context.roster, context.committee_id, context.colluders, round_id, request_digest)
    if own_approval is not None and own_approval[0] != request_digest:
        raise EquivocationError(f"this member approved another request for round {round_id}; it answers no other")
    return own_approval is not None
