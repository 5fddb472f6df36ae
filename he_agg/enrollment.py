r"""Client enrollment for the enrolled-client mode: each client deals its own key to the committee.

Client k's secret is s_k = Σ_T s_{k,T} over the (t−1)-subsets T of the n members
(:mod:`he_agg.hazmat.replicated`); member i holds every s_{k,T} with i ∉ T, each a
ternary polynomial expanded from a 32-byte seed under the label
:func:`subsecret_label` (committee id, length-prefixed client id, 8-byte epoch, 4-byte
subset index: injective, so one seed never stands for two sub-secrets).

Protocol (bytes in / bytes out, one object per party):

* the committee's operators admit the client's Ed25519 key (:meth:`EnrollmentMember.admit`;
  the registry belongs to the members, never to the server);
* the client (:class:`ClientEnrollment`) samples one fresh seed per subset and signs ONE
  :class:`Dealing`: committee id, client id and key, epoch, n, t, N, a commitment
  (:func:`~he_agg.hazmat.replicated.seed_commitment`) to every seed, and for every member j a
  box sealed to j holding the seeds j holds, whose plaintext binds (committee, client,
  j, epoch, subset indices);
* every member (:class:`EnrollmentMember`) receives the same dealing, checks the client's
  signature against the admitted key and the binding, opens its box, checks its seeds
  against the commitments, keeps them *pending* and returns a signed
  :class:`EnrollmentAck` — verdict "ok", or "reject" when the client dealt inconsistently;
* every member then accepts against the acks of all n members: same dealing digest, all
  "ok" → the client is enrolled for the epoch. A reject, or two digests (the client signed
  two dealings), refuses the client (:class:`~he_agg.errors.EnrollmentError` naming it)
  and drops its seeds. Since each commitment is signed once and every holder of s_T checks
  the same commitment, all holders of s_T hold the same seed once all acks say "ok".

The dealing digest is what the client's signature covers (kind, canonical meta, body
hash), not the raw bytes, so a relay that re-encodes the JSON cannot make one dealing look
like two and frame the client as an equivocator.

Epochs: a client enrolls per epoch; :meth:`EnrollmentMember.end_epoch` erases the epoch's
seeds (forward secrecy: t members' stored seeds would decrypt every c0 the server kept) and
refuses dealings for it afterwards. Seeds live only in the member's :class:`Store`.

Cost, with C = C(n, t−1) sub-secrets per client and C' = C(n−1, t−1) held per member
(6 of 10 at (5, 3), 126 of 210 at (10, 5), 84 of 210 at (10, 7), 462 of 924 at (12, 7)):

* a member stores 32·C' bytes of seeds per enrolled client and expands C' ternary
  polynomials per client when it computes a share;
* one dealing is 32·C commitment bytes plus n boxes of 106 + |client id| + 34·C' bytes,
  plus ~500 bytes of envelope, meta and signature: 2.4 KB at (5, 3), 51 KB at (10, 5),
  37 KB at (10, 7), 220 KB at (12, 7) — one message per client per epoch, to every member;
* an ack is ~480 bytes; the client's secret s_k has coefficients in [−C, C].

n is capped at :data:`~he_agg.hazmat.replicated.MAX_MEMBERS` (12); shard larger deployments.

Limits: a member that signs a false "reject" refuses an honest client for the epoch (the
client cannot prove its box right without revealing it), so a lying member costs
liveness, not privacy. Erasure overwrites the store's values; physical erasure (no old
copies in a journal) is the store's job.
"""

from __future__ import annotations

import contextlib
import copy
import struct
import threading
from dataclasses import dataclass, field
from contextlib import AbstractContextManager
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from .errors import AuthenticationError, ClientStateError, EnrollmentError, FormatError, NotEnrolledError, \
    ParameterError, ResourceLimitError, StateError
from .hazmat.replicated import check_committee_shape, expand_ternary, held_subsets, seed_commitment, subsets
from .hazmat.sampling import KEY_BYTES, fresh_key
from .hazmat.wire.envelope import Kind, Meta
from .identity import PartyIdentity, check_public_key
from .signed import open_signed, seal_signed, signed_digest

__all__ = [
    "ClientEnrollment",
    "CommitteeInfo",
    "Dealing",
    "EnrollmentAck",
    "EnrollmentMember",
    "MemoryStore",
    "Store",
    "check_client_id",
    "dealing_size",
    "subsecret_label",
]

MAX_CLIENT_ID_BYTES = 128
MAX_EPOCH = (1 << 63) - 1
MAX_REASON = 200
_LABEL_DOMAIN = b"he_agg.enroll.subsecret.v1\0"
_BOX_DOMAIN = b"he_agg.enroll.box.v1\0"
_BOX_OVERHEAD = 40  # XSalsa20-Poly1305 box: 24-byte nonce + 16-byte tag
_VERSION = 1
_ENVELOPE_SLACK = 1 << 16  # header, meta (~400 B with a 128-byte id), padding, checksum: far below this
OK, REJECT = "ok", "reject"


# -- public parameters ---------------------------------------------------------------------


@dataclass(frozen=True)
class CommitteeInfo:
    """What a client and a member must agree on: committee id, roster, t and the ring degree N."""

    committee_id: bytes  # 32 bytes naming the committee (and, through it, its parameters)
    roster: tuple[bytes, ...]  # Ed25519 verify keys, member i at index i
    threshold: int
    ring_degree: int  # N, the number of coefficients of a sub-secret

    def __post_init__(self) -> None:
        if not isinstance(self.committee_id, bytes) or len(self.committee_id) != KEY_BYTES:
            raise ParameterError(f"a committee id is {KEY_BYTES} bytes")
        if not isinstance(self.roster, tuple):
            raise ParameterError("the roster must be a tuple of verify keys")
        try:
            check_committee_shape(len(self.roster), self.threshold)
            keys = [check_public_key(key, f"roster key {i}") for i, key in enumerate(self.roster)]
        except ValueError as exc:
            raise ParameterError(f"committee: {exc}") from None
        if len(set(keys)) != len(keys):
            raise ParameterError("the roster lists a verify key twice")
        degree = self.ring_degree
        if type(degree) is not int or degree < 2 or degree > 1 << 17 or degree & (degree - 1):
            raise ParameterError(f"the ring degree N must be a power of two in [2, 2^17], got {degree!r}")

    @property
    def members(self) -> int:
        return len(self.roster)

    @property
    def subset_count(self) -> int:
        """C(n, t−1): sub-secrets per client."""
        return len(subsets(self.members, self.threshold))

    def held(self, member: int) -> tuple[int, ...]:
        """Indices of the subsets ``member`` holds (C(n−1, t−1) of them)."""
        return held_subsets(member, self.members, self.threshold)


def check_client_id(client_id: object) -> str:
    """A client id: non-empty printable text of at most 128 UTF-8 bytes (FormatError otherwise)."""
    if not isinstance(client_id, str) or not client_id or not client_id.isprintable():
        raise FormatError("a client id is non-empty printable text")
    if len(client_id.encode()) > MAX_CLIENT_ID_BYTES:
        raise FormatError(f"a client id is at most {MAX_CLIENT_ID_BYTES} UTF-8 bytes")
    return client_id


def _check_epoch(epoch: object) -> int:
    if type(epoch) is not int or not 0 <= epoch <= MAX_EPOCH:
        raise FormatError(f"an epoch is an integer in [0, 2^63), got {epoch!r}")
    return epoch


def _id_bytes(client_id: str) -> bytes:
    raw = client_id.encode()
    return struct.pack("<H", len(raw)) + raw


def subsecret_label(committee_id: bytes, client_id: str, epoch: int, subset_index: int) -> bytes:
    """The label of s_{k,T}: committee id ‖ len ‖ client id ‖ epoch (8 B) ‖ subset index (4 B).

    Used both to expand the seed (:func:`~he_agg.hazmat.replicated.expand_ternary`) and to
    commit to it; the encoding is injective.
    """
    if len(committee_id) != KEY_BYTES:
        raise ValueError(f"a committee id is {KEY_BYTES} bytes")
    return (_LABEL_DOMAIN + committee_id + _id_bytes(check_client_id(client_id))
            + struct.pack("<QI", _check_epoch(epoch), subset_index))


def _box_header(committee: CommitteeInfo, client_id: str, member: int, epoch: int) -> bytes:
    held = committee.held(member)
    return (_BOX_DOMAIN + committee.committee_id + _id_bytes(client_id) + struct.pack("<BQH", member, epoch, len(held))
            + struct.pack(f"<{len(held)}H", *held))


def _box_size(committee: CommitteeInfo, client_id: str) -> int:
    held = len(committee.held(0))
    return _BOX_OVERHEAD + len(_box_header(committee, client_id, 0, 0)) + KEY_BYTES * held


def dealing_size(committee: CommitteeInfo, client_id: str) -> int:
    """Bytes of a dealing's body: 32·C(n, t−1) commitments + n boxes (the envelope adds ~600)."""
    return KEY_BYTES * committee.subset_count + committee.members * _box_size(committee, client_id)


# -- the durable store -------------------------------------------------------------------


class Store(Protocol):
    """A member's durable key-value area (he_agg.state.MemberState provides one)."""

    def get(self, namespace: str, key: str) -> bytes | None: ...

    def put(self, namespace: str, key: str, value: bytes) -> None: ...

    def items(self, namespace: str) -> list[tuple[str, bytes]]: ...

    def transaction(self) -> AbstractContextManager[object]: ...


class MemoryStore:
    """A dict-backed :class:`Store` for tests and simulations: not durable.

    ``transaction()`` is exclusive (a lock) and atomic (rolled back on an exception).
    """

    def __init__(self) -> None:
        self._data: dict[str, dict[str, bytes]] = {}
        self._lock = threading.RLock()

    def get(self, namespace: str, key: str) -> bytes | None:
        return self._data.get(namespace, {}).get(key)

    def put(self, namespace: str, key: str, value: bytes) -> None:
        if not isinstance(value, bytes):
            raise TypeError("store values are bytes")
        self._data.setdefault(namespace, {})[key] = value

    def items(self, namespace: str) -> list[tuple[str, bytes]]:
        return sorted(self._data.get(namespace, {}).items())

    @contextlib.contextmanager
    def transaction(self) -> Iterator[object]:
        with self._lock:
            saved = copy.deepcopy(self._data)
            try:
                yield self
            except BaseException:
                self._data = saved
                raise

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._data)} namespaces)"


# -- messages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dealing:
    """A client's signed enrollment message (Kind.ENROLLMENT), parsed and authenticated."""

    committee_id: bytes
    client_id: str
    client_key: bytes
    epoch: int
    commitments: tuple[bytes, ...]  # one per subset, in subsets(n, t) order
    boxes: tuple[bytes, ...]  # one per member, sealed to roster[j]
    digest: bytes  # what the client's signature covers: names this dealing
    raw: bytes = field(repr=False)

    @classmethod
    def sign(cls, identity: PartyIdentity, committee: CommitteeInfo, client_id: str, epoch: int,
             commitments: Sequence[bytes], boxes: Sequence[bytes]) -> "Dealing":
        """Sign a dealing made of these commitments and boxes (no consistency check: that is the members' job)."""
        meta = {"committee": committee.committee_id.hex(), "client": check_client_id(client_id),
                "client_key": identity.public_key.hex(), "epoch": _check_epoch(epoch),
                "members": committee.members, "threshold": committee.threshold,
                "ring_degree": committee.ring_degree, "version": _VERSION}
        raw = seal_signed(Kind.ENROLLMENT, meta, b"".join(commitments) + b"".join(boxes), identity)
        return cls.from_bytes(raw, committee, lambda _: identity.public_key)

    def to_bytes(self) -> bytes:
        return self.raw

    @classmethod
    def from_bytes(cls, data: object, committee: CommitteeInfo, client_key: Callable[[str], bytes]) -> "Dealing":
        """Parse and authenticate a dealing meant for ``committee``.

        ``client_key(client_id)`` returns the admitted verify key (raising for an unknown
        client). FormatError/ChecksumError for bad bytes, AuthenticationError for a bad
        signature or a dealing made for another committee or shape.
        """
        what = "he_agg enrollment dealing"
        try:
            length = memoryview(data).nbytes  # type: ignore[arg-type]
        except TypeError:
            raise FormatError(f"{what}: expected bytes, got {type(data).__name__}") from None
        longest = dealing_size(committee, "x" * MAX_CLIENT_ID_BYTES) + _ENVELOPE_SLACK
        if length > longest:
            raise ResourceLimitError(f"{what}: {length} bytes, more than any dealing for this committee ({longest})")
        claimed: list[str] = []

        def signer(meta: Meta) -> bytes:
            claimed.append(check_client_id(meta.text("client", 4 * MAX_CLIENT_ID_BYTES)))
            key = client_key(claimed[0])
            if meta.hexbytes("client_key", KEY_BYTES) != key:
                raise AuthenticationError(f"{what}: client {claimed[0]!r} signed with a key other than its admitted key")
            return key

        env = open_signed(data, Kind.ENROLLMENT, what, signer)
        meta = env.meta
        committee_id = meta.hexbytes("committee", KEY_BYTES)
        if committee_id != committee.committee_id:
            raise AuthenticationError(f"{what}: made for another committee ({committee_id[:6].hex()}…)")
        shape = (meta.integer("members"), meta.integer("threshold"), meta.integer("ring_degree"), meta.integer("version"))
        if shape != (committee.members, committee.threshold, committee.ring_degree, _VERSION):
            raise AuthenticationError(f"{what}: made for (n, t, N, version) = {shape}, this committee has "
                                      f"{(committee.members, committee.threshold, committee.ring_degree, _VERSION)}")
        client_id, epoch = claimed[0], meta.integer("epoch", 0, MAX_EPOCH)
        body = bytes(env.body)
        if len(body) != dealing_size(committee, client_id):
            raise FormatError(f"{what}: body of {len(body)} bytes, expected {dealing_size(committee, client_id)} "
                              f"for n={committee.members}, t={committee.threshold}")
        count, size = committee.subset_count, _box_size(committee, client_id)
        commitments = tuple(body[KEY_BYTES * k : KEY_BYTES * (k + 1)] for k in range(count))
        start = KEY_BYTES * count
        boxes = tuple(body[start + size * j : start + size * (j + 1)] for j in range(committee.members))
        digest = signed_digest(Kind.ENROLLMENT, meta.as_dict(), env.body_hash)
        return cls(committee_id, client_id, meta.hexbytes("client_key", KEY_BYTES), epoch, commitments, boxes,
                   digest, bytes(data))  # type: ignore[arg-type]

    def open_box(self, identity: PartyIdentity, member: int, committee: CommitteeInfo) -> dict[int, bytes]:
        """The seeds in ``member``'s box, checked against binding and commitments.

        Raises EnrollmentError (naming the client) when the box does not open, is bound to
        anything else, or holds a seed that does not match its commitment.
        """
        fault = f"client {self.client_id!r} dealt an inconsistent box to member {member}"
        try:
            plain = identity.open_from(self.client_key, self.boxes[member], "enrollment box")
        except AuthenticationError:
            raise EnrollmentError(f"{fault}: it does not open", self.client_id) from None
        header = _box_header(committee, self.client_id, member, self.epoch)
        held = committee.held(member)
        if len(plain) != len(header) + KEY_BYTES * len(held) or plain[: len(header)] != header:
            raise EnrollmentError(f"{fault}: it is bound to another committee, client, member or epoch",
                                  self.client_id)
        seeds = {}
        for position, index in enumerate(held):
            seed = plain[len(header) + KEY_BYTES * position : len(header) + KEY_BYTES * (position + 1)]
            label = subsecret_label(self.committee_id, self.client_id, self.epoch, index)
            if seed_commitment(seed, label) != self.commitments[index]:
                raise EnrollmentError(f"{fault}: the seed of subset {index} does not match its commitment",
                                      self.client_id)
            seeds[index] = seed
        return seeds


@dataclass(frozen=True)
class EnrollmentAck:
    """A member's signed verdict (Kind.ENROLLMENT_ACK) on one dealing."""

    committee_id: bytes
    client_id: str
    epoch: int
    member: int
    dealing_digest: bytes
    verdict: str  # "ok" or "reject"
    reason: str  # empty for "ok"; public text for "reject"
    raw: bytes = field(repr=False)

    @classmethod
    def sign(cls, identity: PartyIdentity, member: int, committee: CommitteeInfo, client_id: str, epoch: int,
             dealing_digest: bytes, verdict: str, reason: str = "") -> "EnrollmentAck":
        if verdict not in (OK, REJECT):
            raise ValueError(f"verdict must be {OK!r} or {REJECT!r}")
        meta = {"committee": committee.committee_id.hex(), "client": client_id, "epoch": epoch, "member": member,
                "dealing": dealing_digest.hex(), "verdict": verdict, "reason": reason[:MAX_REASON]}
        return cls.from_bytes(seal_signed(Kind.ENROLLMENT_ACK, meta, b"", identity), committee)

    def to_bytes(self) -> bytes:
        return self.raw

    @classmethod
    def from_bytes(cls, data: object, committee: CommitteeInfo) -> "EnrollmentAck":
        """Parse an ack and verify it was signed by the roster's member for this committee."""
        what = "he_agg enrollment ack"

        def signer(meta: Meta) -> bytes:
            member = meta.integer("member", 0, 255)
            if member >= committee.members:
                raise AuthenticationError(f"{what}: from member {member}, not in the roster")
            return committee.roster[member]

        env = open_signed(data, Kind.ENROLLMENT_ACK, what, signer)
        meta = env.meta
        if meta.hexbytes("committee", KEY_BYTES) != committee.committee_id:
            raise AuthenticationError(f"{what}: made for another committee")
        verdict = meta.text("verdict", 8)
        if verdict not in (OK, REJECT):
            raise FormatError(f"{what}: verdict {verdict!r}")
        return cls(committee.committee_id, check_client_id(meta.text("client", 4 * MAX_CLIENT_ID_BYTES)),
                   meta.integer("epoch", 0, MAX_EPOCH), meta.integer("member"), meta.hexbytes("dealing", 32),
                   verdict, meta.text("reason", MAX_REASON), bytes(data))  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Outcome:
    client_id: str
    epoch: int
    digest: bytes | None  # the one digest every member acked "ok", or None when the client is at fault
    fault: str


def _judge(committee: CommitteeInfo, acks: Sequence[bytes | EnrollmentAck]) -> _Outcome:
    """Check one ack from every member for one (client, epoch).

    Relay faults raise (FormatError, AuthenticationError; EnrollmentError for missing acks)
    and prove nothing about the client; client faults come back in the outcome.
    """
    parsed = [a if isinstance(a, EnrollmentAck) else EnrollmentAck.from_bytes(a, committee) for a in acks]
    if not parsed:
        raise FormatError("no enrollment acks")
    client_id, epoch = parsed[0].client_id, parsed[0].epoch
    by_member: dict[int, EnrollmentAck] = {}
    for ack in parsed:
        if (ack.client_id, ack.epoch) != (client_id, epoch):
            raise AuthenticationError(f"acks for different clients or epochs ({client_id!r}/{epoch} and "
                                      f"{ack.client_id!r}/{ack.epoch}): replayed or misrouted")
        if ack.member in by_member and by_member[ack.member] != ack:
            raise FormatError(f"two different acks from member {ack.member}")
        by_member[ack.member] = ack
    missing = sorted(set(range(committee.members)) - set(by_member))
    if missing:
        raise EnrollmentError(f"client {client_id!r}: no ack yet from members {missing}; every member "
                              "holds sub-secrets and must ack", client_id)
    rejects = [(m, a.reason) for m, a in sorted(by_member.items()) if a.verdict == REJECT]
    digests = {a.dealing_digest for a in by_member.values()}
    if len(digests) > 1:
        return _Outcome(client_id, epoch, None, f"client {client_id!r} signed {len(digests)} different dealings "
                                                f"for epoch {epoch} (equivocation)")
    if rejects:
        return _Outcome(client_id, epoch, None, f"client {client_id!r} dealt inconsistently for epoch {epoch}: "
                                                f"members {[m for m, _ in rejects]} reject ({rejects[0][1]})")
    return _Outcome(client_id, epoch, digests.pop(), "")


# -- the client --------------------------------------------------------------------------


class ClientEnrollment:
    """A client's side of enrollment for one epoch: its sub-secret seeds and its one dealing.

    The dealing is made once (its boxes use random nonces): :meth:`dealing` returns the
    same bytes on every call, so a retry can never look like a second dealing.
    """

    __slots__ = ("client_id", "committee", "epoch", "_dealing", "_identity", "_seeds")

    def __init__(self, identity: PartyIdentity, client_id: str, committee: CommitteeInfo, epoch: int,
                 seeds: bytearray, dealing: Dealing) -> None:
        self._identity = identity
        self.client_id = client_id
        self.committee = committee
        self.epoch = epoch
        self._seeds = seeds
        self._dealing = dealing

    @classmethod
    def create(cls, identity: PartyIdentity, client_id: str, committee: CommitteeInfo, epoch: int) -> "ClientEnrollment":
        """Sample one fresh seed per (t−1)-subset and sign the dealing."""
        check_client_id(client_id)
        _check_epoch(epoch)
        seeds = bytearray(b"".join(fresh_key() for _ in range(committee.subset_count)))
        view = memoryview(seeds)
        commitments = [seed_commitment(bytes(view[KEY_BYTES * k : KEY_BYTES * (k + 1)]),
                                       subsecret_label(committee.committee_id, client_id, epoch, k))
                       for k in range(committee.subset_count)]
        boxes = []
        for member, key in enumerate(committee.roster):
            plain = bytearray(_box_header(committee, client_id, member, epoch))
            for index in committee.held(member):
                plain += view[KEY_BYTES * index : KEY_BYTES * (index + 1)]
            boxes.append(identity.seal_to(key, bytes(plain)))
            plain[:] = bytes(len(plain))
        dealing = Dealing.sign(identity, committee, client_id, epoch, commitments, boxes)
        return cls(identity, client_id, committee, epoch, seeds, dealing)

    @classmethod
    def restore(cls, identity: PartyIdentity, committee: CommitteeInfo, data: bytes) -> "ClientEnrollment":
        """Rebuild from :meth:`private_bytes` (the seeds are checked against the dealing's commitments)."""
        size = KEY_BYTES * committee.subset_count
        if len(data) <= size:
            raise FormatError("saved client enrollment: too short")
        dealing = Dealing.from_bytes(data[size:], committee, lambda _: identity.public_key)
        seeds = bytearray(data[:size])
        for k in range(committee.subset_count):
            label = subsecret_label(committee.committee_id, dealing.client_id, dealing.epoch, k)
            if seed_commitment(bytes(seeds[KEY_BYTES * k : KEY_BYTES * (k + 1)]), label) != dealing.commitments[k]:
                raise FormatError("saved client enrollment: the seeds do not match the dealing")
        return cls(identity, dealing.client_id, committee, dealing.epoch, seeds, dealing)

    def private_bytes(self) -> bytes:
        """Seeds ‖ dealing, for the caller to store securely (secret!)."""
        self._check_live()
        return bytes(self._seeds) + self._dealing.raw

    def dealing(self) -> bytes:
        """The signed dealing, to broadcast to every member (identical bytes on every call)."""
        return self._dealing.raw

    @property
    def dealing_digest(self) -> bytes:
        return self._dealing.digest

    def secret_coefficients(self) -> np.ndarray:
        """s_k = Σ_T expand_ternary(seed_T, label_T): int16, N coefficients in [−C, C]."""
        self._check_live()
        out = np.zeros(self.committee.ring_degree, dtype=np.int16)
        for k in range(self.committee.subset_count):
            label = subsecret_label(self.committee.committee_id, self.client_id, self.epoch, k)
            part = expand_ternary(bytes(self._seeds[KEY_BYTES * k : KEY_BYTES * (k + 1)]), label,
                                  self.committee.ring_degree)
            out += part
            part.fill(0)
        return out

    def confirm(self, acks: Sequence[bytes]) -> None:
        """EnrollmentError unless every member acked this dealing "ok" (then the client may upload)."""
        outcome = _judge(self.committee, acks)
        if (outcome.client_id, outcome.epoch) != (self.client_id, self.epoch):
            raise AuthenticationError("the acks are for another client or epoch")
        if outcome.digest is None:
            raise EnrollmentError(outcome.fault, self.client_id)
        if outcome.digest != self._dealing.digest:
            raise EnrollmentError(f"the members acked another dealing of client {self.client_id!r}", self.client_id)

    def wipe(self) -> None:
        """Zero the seeds; the object cannot compute its secret afterwards."""
        self._seeds[:] = bytes(len(self._seeds))
        self._seeds = bytearray()

    def _check_live(self) -> None:
        if not self._seeds:
            raise ClientStateError("this client enrollment was wiped")

    def __enter__(self) -> "ClientEnrollment":
        return self

    def __exit__(self, *exc: object) -> None:
        self.wipe()

    def __repr__(self) -> str:
        return f"ClientEnrollment({self.client_id!r}, epoch {self.epoch}, seeds hidden)"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a ClientEnrollment holds secrets: use private_bytes() and store it securely")


# -- the member ----------------------------------------------------------------------------

_ADMITTED = "he_agg.enroll.admitted"  # client id → verify key (b"" once revoked)
_EPOCHS = "he_agg.enroll.epochs"  # "floor" → first open epoch (u64); "%020d" → b"\x01" for each epoch with records
_PENDING, _ENROLLED, _REFUSED = b"P", b"E", b"R"  # record = status ‖ dealing digest ‖ payload (seeds or reason)


def _epoch_namespace(epoch: int) -> str:
    return f"he_agg.enroll.epoch.{epoch:020d}"


class EnrollmentMember:
    """Member ``member_index``'s side of enrollment: admits clients, checks dealings, keeps seeds.

    Everything it knows lives in ``store`` (one :meth:`Store.transaction` per call), so a
    new object on the same store after a restart continues where the old one stopped.
    """

    __slots__ = ("_committee", "_identity", "_index", "_store")

    def __init__(self, identity: PartyIdentity, member_index: int, committee: CommitteeInfo, store: Store) -> None:
        if type(member_index) is not int or not 0 <= member_index < committee.members:
            raise ValueError(f"member index {member_index!r} is not in the roster of {committee.members}")
        if committee.roster[member_index] != identity.public_key:
            raise ValueError(f"this identity is not member {member_index} of the roster")
        self._identity = identity
        self._index = member_index
        self._committee = committee
        self._store = store

    # operators' registry

    def admit(self, client_id: str, client_verify_key: bytes) -> None:
        """Authorize a client's key (the operator's decision; the server never decides this)."""
        check_client_id(client_id)
        key = check_public_key(client_verify_key, "client verify key")
        with self._store.transaction():
            self._store.put(_ADMITTED, client_id, key)

    def revoke(self, client_id: str) -> None:
        """Withdraw a client: erase its seeds in every open epoch and refuse its dealings."""
        check_client_id(client_id)
        with self._store.transaction():
            self._store.put(_ADMITTED, client_id, b"")
            for epoch in self._open_epochs():
                if self._store.get(_epoch_namespace(epoch), client_id):
                    self._store.put(_epoch_namespace(epoch), client_id, b"")

    def admitted(self) -> list[str]:
        return [client for client, key in self._store.items(_ADMITTED) if key]

    def client_key(self, client_id: str) -> bytes:
        """The admitted client's verify key (EnrollmentError if it is not admitted or was revoked)."""
        return self._admitted_key(check_client_id(client_id))

    # the protocol

    def receive(self, dealing: bytes) -> bytes:
        """Check a dealing and return this member's signed ack ("ok", or "reject" if the client dealt inconsistently).

        Raises (and changes nothing) for bytes that are corrupt, unauthenticated, made for
        another committee, for an ended epoch or an unadmitted client, or for a second,
        different dealing of a client for one epoch (EnrollmentError naming the client).
        """
        with self._store.transaction():
            parsed = Dealing.from_bytes(dealing, self._committee, self._admitted_key)
            self._check_open(parsed.epoch, parsed.client_id)
            namespace = _epoch_namespace(parsed.epoch)
            record = self._store.get(namespace, parsed.client_id)
            if record:
                return self._repeat(parsed, record)
            try:
                seeds = parsed.open_box(self._identity, self._index, self._committee)
            except EnrollmentError as exc:
                self._store.put(namespace, parsed.client_id, _REFUSED + parsed.digest + str(exc).encode())
                self._touch(parsed.epoch)
                return self._ack(parsed.client_id, parsed.epoch, parsed.digest, REJECT, str(exc))
            self._store.put(namespace, parsed.client_id, _PENDING + parsed.digest + self._pack(seeds))
            self._touch(parsed.epoch)
            return self._ack(parsed.client_id, parsed.epoch, parsed.digest, OK)

    def accept(self, acks: Sequence[bytes]) -> str:
        """Enroll the client once every member acked the same dealing "ok"; returns its id.

        A reject or two different dealing digests → EnrollmentError naming the client, and
        its seeds are dropped. Forged, misrouted or missing acks raise and change nothing.
        """
        with self._store.transaction():
            outcome = _judge(self._committee, acks)
            client_id, epoch = outcome.client_id, outcome.epoch
            self._check_open(epoch, client_id)
            namespace = _epoch_namespace(epoch)
            record = self._store.get(namespace, client_id)
            if not record:
                raise EnrollmentError(f"client {client_id!r}: this member holds no dealing for epoch {epoch}", client_id)
            status, digest = record[:1], record[1:33]
            fault = outcome.fault
            if not fault and status == _REFUSED:
                fault = f"client {client_id!r} was refused by this member for epoch {epoch}"
            if not fault and digest != outcome.digest:
                fault = f"client {client_id!r} gave this member another dealing than the one the others acked"
            if status == _ENROLLED:
                if fault:  # the client was enrolled on n unanimous acks: some member has signed two verdicts
                    raise AuthenticationError(f"acks contradict those client {client_id!r} was enrolled with for "
                                              f"epoch {epoch}: a member signed two verdicts; nothing changed")
                return client_id
            if fault:
                reason = record[33:] if status == _REFUSED else fault.encode()
                self._store.put(namespace, client_id, _REFUSED + digest + reason)
            else:
                self._store.put(namespace, client_id, _ENROLLED + record[1:])
        if fault:
            raise EnrollmentError(f"enrollment refused: {fault}; its seeds were dropped", client_id)
        return client_id

    # what decryption needs

    def enrolled(self, epoch: int) -> list[str]:
        """The client ids enrolled with this member for ``epoch`` (sorted)."""
        _check_epoch(epoch)
        if epoch < self._floor():
            return []
        return [client for client, record in self._store.items(_epoch_namespace(epoch))
                if record[:1] == _ENROLLED]

    def seeds(self, client_id: str, epoch: int) -> dict[int, bytes]:
        """{subset index: seed} of an enrolled client (secret: never log it). NotEnrolledError otherwise."""
        check_client_id(client_id)
        _check_epoch(epoch)
        record = self._store.get(_epoch_namespace(epoch), client_id) if epoch >= self._floor() else None
        if not record or record[:1] != _ENROLLED:
            raise NotEnrolledError(f"client {client_id!r} is not enrolled with member {self._index} for epoch {epoch}")
        return self._unpack(record[33:])

    def end_epoch(self, epoch: int) -> None:
        """Erase the seeds of ``epoch`` and every earlier epoch, and refuse dealings for them from now on."""
        _check_epoch(epoch)
        with self._store.transaction():
            self._store.put(_EPOCHS, "floor", struct.pack("<Q", max(self._floor(), epoch + 1)))
            for old in self._open_epochs(below=epoch + 1):
                for client, record in self._store.items(_epoch_namespace(old)):
                    if record:
                        self._store.put(_epoch_namespace(old), client, b"")
                self._store.put(_EPOCHS, f"{old:020d}", b"")

    # helpers

    def _admitted_key(self, client_id: str) -> bytes:
        key = self._store.get(_ADMITTED, client_id)
        if not key:
            state = "was revoked" if key == b"" else "is not admitted"
            raise EnrollmentError(f"client {client_id!r} {state} by member {self._index}'s operator", client_id)
        return key

    def _floor(self) -> int:
        raw = self._store.get(_EPOCHS, "floor")
        if raw is None:
            return 0
        if len(raw) != 8:
            raise StateError("enrollment state: corrupt epoch floor")
        return int(struct.unpack("<Q", raw)[0])

    def _check_open(self, epoch: int, client_id: str) -> None:
        if epoch < self._floor():
            raise EnrollmentError(f"epoch {epoch} has ended at member {self._index}: client {client_id!r} must "
                                  "enroll for a current epoch", client_id)

    def _open_epochs(self, below: int = MAX_EPOCH + 1) -> list[int]:
        return [int(key) for key, mark in self._store.items(_EPOCHS) if key != "floor" and mark and int(key) < below]

    def _touch(self, epoch: int) -> None:
        self._store.put(_EPOCHS, f"{epoch:020d}", b"\x01")

    def _repeat(self, parsed: Dealing, record: bytes) -> bytes:
        """A dealing for a (client, epoch) this member already has a record of."""
        status, digest = record[:1], record[1:33]
        if digest != parsed.digest:
            raise EnrollmentError(f"client {parsed.client_id!r} signed a second, different dealing for epoch "
                                  f"{parsed.epoch}; this member keeps the first", parsed.client_id)
        if status == _REFUSED:
            return self._ack(parsed.client_id, parsed.epoch, digest, REJECT, record[33:].decode())
        return self._ack(parsed.client_id, parsed.epoch, digest, OK)

    def _ack(self, client_id: str, epoch: int, digest: bytes, verdict: str, reason: str = "") -> bytes:
        return EnrollmentAck.sign(self._identity, self._index, self._committee, client_id, epoch, digest,
                                  verdict, reason).raw

    def _pack(self, seeds: dict[int, bytes]) -> bytes:
        return b"".join(seeds[index] for index in self._committee.held(self._index))

    def _unpack(self, blob: bytes) -> dict[int, bytes]:
        held = self._committee.held(self._index)
        if len(blob) != KEY_BYTES * len(held):
            raise StateError("enrollment state: a seed record has the wrong length")
        return {index: blob[KEY_BYTES * p : KEY_BYTES * (p + 1)] for p, index in enumerate(held)}

    def __repr__(self) -> str:
        return f"EnrollmentMember(member {self._index} of {self._committee.members}, t={self._committee.threshold})"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("an EnrollmentMember holds an identity: rebuild it from its key and store")
