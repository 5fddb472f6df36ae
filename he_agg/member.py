r"""A member of an enrolled-client committee: enrollment, approvals, decryption shares.

Enrolled mode is he_agg's default. Each client k replicated-shares its own secret s_k with
the members at enrollment (:mod:`he_agg.enrollment`); in round r it uploads only
c0_{k,j} = −a_{r,j}·s_k + Encode(w·m_{k,j}) + e_{k,j}, where a_{r,j} is expanded from
(committee, epoch, r, j) by a XOF (:mod:`he_agg.hazmat.rounds`) — no client and no
server chooses what a member multiplies its key material by.

For a request τ_r = (committee, epoch, r, S, A, layout, …) (:class:`~he_agg.requests.EnrolledRequest`)
member i

1. checks that S holds at least ``min_clients`` distinct clients enrolled with it for the
   epoch and not revoked, each with a valid ticket signed by the client's enrolled key for
   this committee, epoch, round and layout, and approves τ_r — at most one τ per round,
   persisted before the signature leaves (:meth:`EnrolledMember.approve`);
2. against a quorum certificate (:mod:`he_agg.quorum`), records the release against its
   epoch budget of coefficients and returns d_{i,j} = a_{r,j}·σ_i + f_{i,j}, σ_i the sum,
   over k ∈ S, of the sub-secrets s_{k,T} assigned to it in the active set A
   (:meth:`EnrolledMember.decryption_share`).

The flood f has σ from :class:`~he_agg.hazmat.noise.EnrolledNoiseModel`: sized so that
every coefficient this member answers in the whole epoch stays within 2^-s. Its keyed
stream is labelled by (committee, epoch, r, S, A, layout) only — nothing the server
computed — so a retry of the same request returns identical bytes and a different active
set draws fresh noise (and spends budget).
"""

from __future__ import annotations

import dataclasses
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import blake3
import numpy as np

from . import dp as _dp
from .context import EnrolledContext
from .enrolled import Ticket
from .enrollment import CommitteeInfo, EnrollmentMember, subsecret_label
from .errors import (
    FormatError,
    NotEnrolledError,
    PrivacyBudgetError,
    ShareBindingError,
    StateError,
    TooFewContributorsError,
)
from .hazmat import kernels
from .hazmat.ckks import signed_to_rns
from .hazmat.decryption import flooding_noise
from .hazmat.noise import EnrolledNoiseModel, dp_noise
from .hazmat.replicated import assignment, expand_ternary_many
from .hazmat.rounds import round_polynomials
from .hazmat.sampling import KEY_BYTES, KeyedStream, fresh_key
from .hazmat.wire.envelope import Kind, open_envelope, seal_envelope
from .identity import PartyIdentity
from .packing import PACKINGS, Layout, PackingMismatchError
from .params import Params
from .quorum import Approval, QuorumCertificate, check_release
from .requests import DecryptionShare, EnrolledRequest, canonical_active_set
from .state import MemberState

__all__ = ["EnrolledCommittee", "EnrolledMember", "EnrolledPolicy"]

_BUDGET = "he_agg.member.epoch-coefficients"


@dataclass(frozen=True)
class EnrolledPolicy:
    """What an enrolled-mode member agrees to decrypt.

    ``min_clients``: fewest distinct enrolled contributors (privacy holds while at most
    min_clients − 2 of them are corrupt identities; default 3).
    ``max_clients``: most contributors one release may sum; the flooding is sized for it.
    ``epoch_coefficients``: coefficients this member answers per key epoch (every answer of
    a request × active set counts count·N); the flooding keeps the whole epoch within 2^-s.
    ``min_statistical_bits``: the flooding floor this member enforces.
    ``dp``: a :class:`~he_agg.dp.DPPolicy` — this member's (ε, δ) budget for DP releases
    (None: no DP; then DP requests are refused).
    """

    min_clients: int = 3
    max_clients: int = 1000
    epoch_coefficients: int = 1 << 30
    min_statistical_bits: int = 40
    dp: _dp.DPPolicy | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dp", _dp.DPPolicy.coerce(self.dp))
        if type(self.min_clients) is not int or self.min_clients < 2:
            raise ValueError("min_clients must be an integer >= 2: one client's value is never released alone")
        if type(self.max_clients) is not int or not self.min_clients <= self.max_clients <= 1 << 20:
            raise ValueError("max_clients must be an integer in [min_clients, 2^20]")
        if type(self.epoch_coefficients) is not int or not 1 <= self.epoch_coefficients <= 1 << 50:
            raise ValueError("epoch_coefficients must be an integer in [1, 2^50]")
        if type(self.min_statistical_bits) is not int or not 16 <= self.min_statistical_bits <= 128:
            raise ValueError("min_statistical_bits must be an integer in [16, 128]")


class EnrolledMember:
    """Member ``index`` of an enrolled-client committee. Never printed, pickled or logged."""

    __slots__ = ("context", "index", "policy", "_identity", "_noise_key", "_state", "enrollment", "_path")

    def __init__(self, context: EnrolledContext, index: int, identity: PartyIdentity, noise_key: bytes,
                 policy: EnrolledPolicy | None = None, state: MemberState | None = None) -> None:
        if not 0 <= index < context.parties:
            raise ValueError(f"index must be in [0, {context.parties})")
        if identity.public_key != context.roster[index]:
            raise ValueError(f"this identity is not the roster's member {index}")
        if len(noise_key) != KEY_BYTES:
            raise ValueError(f"the noise key is {KEY_BYTES} bytes")
        self.policy = policy or EnrolledPolicy()
        if context.statistical_bits < self.policy.min_statistical_bits:
            raise ValueError(f"the committee floods at s={context.statistical_bits} bits; this member's policy "
                             f"requires at least {self.policy.min_statistical_bits}")
        self.context = context
        self.index = index
        self._identity = identity
        self._noise_key = bytes(noise_key)
        self._state = state or MemberState.open(None, owner=_owner(context, index))
        info = CommitteeInfo(context.committee_id, context.roster, context.threshold, context.params.n)
        self.enrollment = EnrollmentMember(identity, index, info, self._state)
        self._path: Path | None = None

    @classmethod
    def create(cls, context: EnrolledContext, index: int, identity: PartyIdentity,
               policy: EnrolledPolicy | None = None) -> "EnrolledMember":
        """A new member with a fresh noise key (in memory until :meth:`save`)."""
        return cls(context, index, identity, fresh_key(), policy)

    @property
    def sigma(self) -> float:
        """σ of this member's flooding: sized by its own policy for its whole epoch."""
        model = EnrolledNoiseModel(self.context.params, self.context.statistical_bits)
        return model.flooding_sigma(self.policy.max_clients, self.policy.epoch_coefficients)

    def spent(self, epoch: int) -> int:
        """Coefficients answered so far in ``epoch``."""
        raw = self._state.get(_BUDGET, f"{epoch:020d}")
        return 0 if raw is None else int.from_bytes(raw, "little")

    # -- step 1: approve -----------------------------------------------------------------------

    def approve(self, request: EnrolledRequest) -> Approval:
        """Check τ_r against the policy, the registry and the tickets; sign it (one τ per round, ever)."""
        self._check(request)
        if request.dp is not None:  # refuse early (nothing recorded) when the budget cannot cover it
            for parties in request.active_sets:
                if self.index in parties:
                    _dp.spend(self._state, self.policy.dp, self._release_key(request, parties), request.dp, record=False)
        signature = self._state.approve(request.round_id, request.digest, lambda: Approval.sign(
            self._identity, self.index, self.context.committee_id, request.round_id, request.digest).signature)
        return Approval(self.index, request.round_id, request.digest, signature)

    def _check(self, request: EnrolledRequest) -> Layout:
        if request.context.committee_id != self.context.committee_id:
            raise ShareBindingError("the request is addressed to another committee")
        policy = self.policy
        if request.summed < policy.min_clients:
            raise TooFewContributorsError(f"the request names {request.summed} distinct contributors; this member "
                                          f"requires at least {policy.min_clients}")
        if request.summed > policy.max_clients:
            raise TooFewContributorsError(f"the request names {request.summed} contributors; this member's flooding "
                                          f"is sized for at most {policy.max_clients}")
        try:
            layout = Layout.from_json(request.layout)
        except ValueError as exc:
            raise FormatError(f"the request's layout is invalid ({exc})") from None
        if layout.ciphertexts(self.context.params) != request.count:
            raise FormatError(f"the request names {request.count} ciphertexts; its layout ({layout.packing} "
                              f"packing) needs {layout.ciphertexts(self.context.params)}")
        other_packings = {p: dataclasses.replace(layout, packing=p).digest for p in PACKINGS if p != layout.packing}
        enrolled = set(self.enrollment.enrolled(request.epoch))
        for client_id, raw in request.tickets.items():
            if client_id not in enrolled:
                raise NotEnrolledError(f"client {client_id!r} is not enrolled with member {self.index} for epoch "
                                       f"{request.epoch}, or was revoked")
            ticket = Ticket.from_bytes(raw)
            for packing, digest in other_packings.items():
                if ticket.layout_digest == digest:
                    raise PackingMismatchError(f"client {client_id!r} packed its update as {packing!r}; the "
                                               f"request's layout is packed as {layout.packing!r}: a round never "
                                               "mixes slot and dense packing")
            ticket.verify(self.enrollment.client_key(client_id), committee_id=self.context.committee_id,
                          epoch=request.epoch, round_id=request.round_id, client_id=client_id,
                          layout_digest=layout.digest)
        _dp.check(policy.dp, request.dp)
        return layout

    # -- step 2: the decryption share ----------------------------------------------------------

    def decryption_share(self, request: EnrolledRequest, certificate: QuorumCertificate | bytes,
                         active: Sequence[int] | None = None) -> DecryptionShare:
        """d_{i,j} = a_{r,j}·σ_i + f_{i,j} for every ciphertext j, against a quorum certificate."""
        parties = self._active_set(request, active)
        check_release(certificate, self.context, request.round_id, request.digest, self._state.approval(request.round_id))
        self._check(request)
        self._spend(request, parties)
        return self._compute(request, parties)

    def _active_set(self, request: EnrolledRequest, active: Sequence[int] | None) -> tuple[int, ...]:
        if request.context.committee_id != self.context.committee_id:
            raise ShareBindingError("the request is addressed to another committee")
        if active is None:
            mine = [a for a in request.active_sets if self.index in a]
            if len(mine) != 1:
                raise ShareBindingError(f"member {self.index} is in {len(mine)} of the request's active sets; "
                                        "say which one with active=")
            return mine[0]
        parties = canonical_active_set(active, self.context)
        if parties not in request.active_sets or self.index not in parties:
            raise ShareBindingError(f"member {self.index} cannot answer for the active set {list(parties)}")
        return parties

    def _spend(self, request: EnrolledRequest, parties: tuple[int, ...]) -> None:
        """Record this answer against the epoch budget before it leaves (a retry is free)."""
        key = self._release_key(request, parties)
        cost = request.count * self.context.params.n
        name = f"{request.epoch:020d}"
        with self._state.transaction():
            if self._state.released(key):
                return
            spent = self.spent(request.epoch)
            if spent + cost > self.policy.epoch_coefficients:
                raise PrivacyBudgetError(
                    f"answering would release {spent + cost} coefficients in epoch {request.epoch}; this member's "
                    f"flooding covers {self.policy.epoch_coefficients}. Start a new epoch (re-enroll the clients)")
            if request.dp is not None:  # checked and recorded in this same transaction
                _dp.spend(self._state, self.policy.dp, key, request.dp)
            self._state.release(key, 0, 0)
            self._state.put(_BUDGET, name, (spent + cost).to_bytes(8, "little"))

    @staticmethod
    def _release_key(request: EnrolledRequest, parties: tuple[int, ...]) -> bytes:
        return blake3.blake3(b"he_agg.enrolled.release\0" + request.digest + bytes(parties)).digest()

    def dp_budget(self) -> _dp.DPBudget | None:
        """This member's DP account (releases, ε spent at its δ, budget); None without a DP policy."""
        return _dp.budget(self._state, self.policy.dp)

    def _label(self, request: EnrolledRequest, parties: tuple[int, ...]) -> bytes:
        h = blake3.blake3(b"he_agg.enrolled.flood.v1\0" + self.context.committee_id)
        h.update(struct.pack("<QQI", request.epoch, request.round_id, len(request.tickets)))
        for client_id in request.tickets:
            raw = client_id.encode("utf-8")
            h.update(struct.pack("<H", len(raw)) + raw)
        h.update(bytes(parties) + Layout.from_json(request.layout).digest)
        return h.digest()

    def assigned_secret(self, request: EnrolledRequest, parties: tuple[int, ...]) -> np.ndarray:
        """σ_i = Σ_{k∈S} Σ_{T assigned to i in A} s_{k,T}, NTT form over the data primes (caller wipes)."""
        params, context = self.context.params, self.context
        subsets = assignment(parties, self.index, context.parties, context.threshold)
        total = np.zeros(params.n, dtype=np.int64)
        batch_seeds: list[bytes] = []
        batch_labels: list[bytes] = []
        for client_id in request.tickets:
            seeds = self.enrollment.seeds(client_id, request.epoch)
            for k in subsets:
                batch_seeds.append(seeds[k])
                batch_labels.append(subsecret_label(context.committee_id, client_id, request.epoch, k))
            if len(batch_seeds) >= 256 or client_id == request.contributors[-1]:
                polys = expand_ternary_many(batch_seeds, batch_labels, params.n)
                total += polys.sum(axis=0, dtype=np.int64)
                polys.fill(0)
                batch_seeds, batch_labels = [], []
        out = signed_to_rns(total, params.data_moduli)
        total.fill(0)
        kernels.ntt_forward(out, params.data_moduli)
        return out

    def _compute(self, request: EnrolledRequest, parties: tuple[int, ...]) -> DecryptionShare:
        params = self.context.params
        sigma = self.sigma
        label = self._label(request, parties)
        noise = flooding_noise(KeyedStream(self._noise_key, label), request.count, sigma, params)
        if request.dp is not None:  # this member's part of the DP noise, from its keyed stream
            part_sigma = _dp.coefficient_sigma(request.dp, self.context, dense=Layout.from_json(request.layout).dense)
            part = dp_noise(KeyedStream(self._noise_key, b"he_agg.dp.v1\0" + label), request.count, part_sigma, params)
            kernels.add(noise, noise, part, params.data_moduli)
            part.fill(0)
        a = round_polynomials(self.context.committee_id, request.epoch, request.round_id, request.count, params)
        secret = self.assigned_secret(request, parties)
        kernels.muladd(noise, a, np.broadcast_to(secret, a.shape).copy(), noise, params.data_moduli)
        secret.fill(0)
        return DecryptionShare(self.index, parties, request.digest, self.context.committee_id, noise, sigma)

    # -- storage ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, passphrase: bytes | None = None,
             insecure_plaintext: bool = False) -> None:
        """Write the member's identity and noise key (sealed with ``passphrase``); its registry,
        approvals and budget live in ``path``.state, written before anything leaves."""
        from .hazmat.files import write_private

        path = Path(path)
        if self._path is None and (self._state.highest_round() is not None or self._state.items(_BUDGET)
                                   or self.enrollment.admitted()):
            raise StateError("this member already holds state in memory; save it right after creating it")
        meta = {"index": self.index, "policy": _policy_meta(self.policy), "context": self.context._meta()}
        secret = self._identity.private_bytes() + self._noise_key
        write_private(path, seal_envelope(Kind.KEY_SHARE, dict(meta, mode="enrolled"), secret),
                      passphrase=passphrase, insecure_plaintext=insecure_plaintext)
        if self._path is None:
            self._state = MemberState.open(path.with_name(path.name + ".state"), owner=_owner(self.context, self.index))
            info = CommitteeInfo(self.context.committee_id, self.context.roster, self.context.threshold,
                                 self.context.params.n)
            self.enrollment = EnrollmentMember(self._identity, self.index, info, self._state)
        self._path = path

    @classmethod
    def load(cls, path: str | os.PathLike[str], context: EnrolledContext, *,
             passphrase: bytes | None = None) -> "EnrolledMember":
        """Read a member file and open its state; it must belong to ``context``."""
        from .hazmat.files import read_private

        path = Path(path)
        what = f"member file {path}"
        env = open_envelope(read_private(path, passphrase=passphrase), Kind.KEY_SHARE, what)
        meta = env.meta
        if meta.text("mode", 16) != "enrolled" or len(env.body) != 2 * KEY_BYTES:
            raise FormatError(f"{what}: not an enrolled-mode member file")
        raw_context = meta.raw("context")
        if not isinstance(raw_context, dict) or raw_context.get("committee") != context.committee_id.hex():
            raise ShareBindingError(f"{what}: belongs to another committee")
        index = meta.integer("index", 0, context.parties - 1)
        policy_raw = meta.raw("policy")
        secret = bytes(env.body)
        try:
            policy = EnrolledPolicy(**policy_raw) if isinstance(policy_raw, dict) else None
            if policy is None:
                raise ValueError("policy must be an object")
            identity = PartyIdentity.from_private_bytes(secret[:KEY_BYTES])
            state = MemberState.open(path.with_name(path.name + ".state"), owner=_owner(context, index))
            member = cls(context, index, identity, secret[KEY_BYTES:], policy, state)
        except (TypeError, ValueError) as exc:
            raise FormatError(f"{what}: {exc}") from None
        member._path = path
        return member

    def __repr__(self) -> str:
        return (f"EnrolledMember({self.index} of {self.context.threshold}-of-{self.context.parties}, committee "
                f"{self.context.committee_id[:6].hex()}…)")

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("an EnrolledMember cannot be pickled; use save()")


def _policy_meta(policy: EnrolledPolicy) -> dict[str, Any]:
    meta = asdict(policy)
    if meta["dp"] is None:
        del meta["dp"]  # files of members without DP stay as they were
    return meta


def _owner(context: EnrolledContext, index: int) -> bytes:
    return blake3.blake3(b"he_agg.enrolled-member\0" + context.committee_id + bytes([index])).digest()



class EnrolledCommittee:
    """Every member of an enrolled committee in one process (simulations, tests, the demo).

    Real deployments run each :class:`EnrolledMember` on its own machine and relay the
    bytes; this class relays them in memory, in the same order.
    """

    def __init__(self, context: EnrolledContext, members: Sequence[EnrolledMember]) -> None:
        if [m.index for m in members] != list(range(context.parties)) or any(m.context != context for m in members):
            raise ValueError("members must be given for indices 0 … n−1 of this committee, in order")
        self.context = context
        self.members = list(members)

    @classmethod
    def generate(cls, n: int = 5, t: int = 3, params: Params | None = None, *, policy: EnrolledPolicy | None = None,
                 colluders: int | None = None, statistical_bits: int = 40) -> "EnrolledCommittee":
        """n fresh members (each with its own Ed25519 identity) under ``params`` (default ENROLLED)."""
        from .params import ENROLLED

        identities = [PartyIdentity.generate() for _ in range(n)]
        context = EnrolledContext(params or ENROLLED, tuple(i.public_key for i in identities), t,
                                  colluders=colluders, statistical_bits=statistical_bits)
        return cls(context, [EnrolledMember.create(context, i, identity, policy) for i, identity in enumerate(identities)])

    @property
    def public_context(self) -> EnrolledContext:
        return self.context

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[EnrolledMember]:
        return iter(self.members)

    def __getitem__(self, index: int) -> EnrolledMember:
        return self.members[index]

    def enroll(self, client: Any) -> None:
        """Admit ``client`` (an :class:`~he_agg.enrolled.EnrolledClient`) at every member and run its enrollment."""
        for member in self.members:
            member.enrollment.admit(client.client_id, client.public_key)
        dealing = client.dealing()
        acks = [member.enrollment.receive(dealing) for member in self.members]
        for member in self.members:
            member.enrollment.accept(acks)
        client.confirm(acks)

    def client(self, client_id: str, epoch: int = 0, *, state_path: Any = None) -> Any:
        """A new client, enrolled with every member for ``epoch``."""
        from .enrolled import EnrolledClient

        client = EnrolledClient.create(self.context, client_id, epoch, state_path=state_path)
        self.enroll(client)
        return client

    def certify(self, request: EnrolledRequest, members: Sequence[int] | None = None) -> QuorumCertificate:
        """Approvals from ``members`` (default: the first q) as a quorum certificate."""
        from .quorum import quorum_size

        chosen = list(members) if members is not None else list(range(quorum_size(self.context.parties,
                                                                                 self.context.colluders)))
        return QuorumCertificate.collect(request.round_id, request.digest,
                                         [self.members[i].approve(request) for i in chosen])

    def shares(self, request: EnrolledRequest, certificate: QuorumCertificate | None = None) -> list[DecryptionShare]:
        """Every share of every active set the request names (certifying it first if needed)."""
        certificate = certificate or self.certify(request)
        return [self.members[i].decryption_share(request, certificate, active)
                for active in request.active_sets for i in active]

    def __repr__(self) -> str:
        return f"EnrolledCommittee({self.context!r})"
