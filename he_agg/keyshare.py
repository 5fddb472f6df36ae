r"""A committee member: it approves requests and makes decryption shares, only when its policy allows.

Three parts, kept apart (as Lattigo keeps protocol, policy and state apart):

* **what it holds** — :class:`KeyShare`: its replicated sub-secrets s_T (one small
  polynomial per (t−1)-subset it holds), its Ed25519 identity, a 32-byte noise key;
* **who may ask** — :class:`Policy`: min_clients, verify, the budget, the flooding floor;
* **what it remembers** — :class:`he_agg.state.MemberState`: the one request approved per
  round and every share released, durably and atomically across processes, *before*
  anything leaves the member.

A decryption takes two steps. :meth:`KeyShare.approve` checks the request against the
policy and signs it — at most one request per round, ever. :meth:`KeyShare.decryption_share`
then requires a quorum certificate (approvals from q = ⌈(n + c + 1)/2⌉ members, see
:mod:`he_agg.quorum`), re-checks the policy, records the release and returns
d_i = σ_i^A·c1 + e_i, where σ_i^A is the sum of the sub-secrets assigned to this member
in the active set A (reconstruction coefficients 0/1: nothing divides the flooding e_i).
The noise comes from a keyed stream labelled by the request digest, the active set and a
hash of the very c1 bytes multiplied, so a retry returns the identical share and any
other input gets independent noise.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import blake3
import numpy as np

from .ciphertext import CiphertextBatch, Submission, residue_view, view_digest
from . import dp as _dp
from .context import PublicContext
from .errors import (
    FormatError,
    ShareBindingError,
    StateError,
    TooFewContributorsError,
    VerificationError,
)
from .hazmat import kernels
from .hazmat.ckks import signed_to_rns
from .hazmat.decryption import flooding_noise
from .hazmat.noise import dp_noise
from .hazmat.replicated import assignment, held_subsets
from .hazmat.sampling import KEY_BYTES, KeyedStream
from .hazmat.wire.envelope import Kind, Meta, open_envelope, seal_envelope
from .identity import PartyIdentity
from .quorum import Approval, QuorumCertificate, check_release
from .requests import DecryptionRequest, DecryptionShare, canonical_active_set
from .state import MemberState

__all__ = ["KeyShare", "Policy"]


@dataclass(frozen=True)
class Policy:
    """What a member agrees to decrypt.

    ``min_clients``: fewest distinct contributors a request may name (default 2: a
    default policy never decrypts a single client's ciphertext).
    ``verify``: recompute the aggregate from the contributions before approving or
    answering (default True: a default policy never decrypts an aggregate it has not
    verified).
    ``budget``: most distinct shares (request × active set) this member ever makes.
    ``max_clients``: without verification, the flooding is sized for this many summed
    ciphertexts — never for a count the server declares.
    ``min_statistical_bits``: the flooding floor this member enforces on its committee.
    ``dp``: a :class:`~he_agg.dp.DPPolicy` — this member's (ε, δ) budget for DP releases
    (None: no DP; then DP requests are refused).
    """

    min_clients: int = 2
    budget: int = 16
    verify: bool = True
    max_clients: int = 10_000
    min_statistical_bits: int = 40
    dp: _dp.DPPolicy | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dp", _dp.DPPolicy.coerce(self.dp))
        if type(self.min_clients) is not int or self.min_clients < 1:
            raise ValueError("min_clients must be an integer >= 1")
        if type(self.budget) is not int or self.budget < 0:
            raise ValueError("budget must be a non-negative integer")
        if type(self.verify) is not bool:
            raise ValueError("verify must be True or False")
        if type(self.max_clients) is not int or not self.min_clients <= self.max_clients <= 1 << 24:
            raise ValueError("max_clients must be an integer in [min_clients, 2^24]")
        if type(self.min_statistical_bits) is not int or not 16 <= self.min_statistical_bits <= 128:
            raise ValueError("min_statistical_bits must be an integer in [16, 128]")


def _release_key(request: DecryptionRequest, parties: tuple[int, ...]) -> bytes:
    return blake3.blake3(b"he_agg.release\0" + request.digest + bytes(parties)).digest()


class KeyShare:
    """Member ``party``'s share of the committee key. Never printed, pickled or logged."""

    __slots__ = ("context", "party", "policy", "_identity", "_subsecrets", "_noise_key", "_state", "_path")

    def __init__(self, context: PublicContext, party: int, identity: PartyIdentity,
                 subsecrets: Mapping[int, np.ndarray], noise_key: bytes, policy: Policy | None = None,
                 state: MemberState | None = None) -> None:
        if not 0 <= party < context.parties:
            raise ValueError(f"party must be in [0, {context.parties})")
        if identity.public_key != context.roster[party]:
            raise ValueError(f"this identity is not the roster's member {party}")
        held = held_subsets(party, context.parties, context.threshold)
        if sorted(subsecrets) != list(held):
            raise ValueError(f"member {party} holds exactly the sub-secrets {list(held)}")
        for k, poly in subsecrets.items():
            if poly.shape != (context.params.n,) or poly.dtype != np.int8:
                raise ValueError(f"sub-secret {k} must be int8 of {context.params.n} coefficients")
        if len(noise_key) != KEY_BYTES:
            raise ValueError(f"the noise key is {KEY_BYTES} bytes")
        self.context = context
        self.party = party
        self.policy = policy or Policy()
        if context.statistical_bits < self.policy.min_statistical_bits:
            raise ValueError(f"the committee floods at s={context.statistical_bits} bits; this member's policy "
                             f"requires at least {self.policy.min_statistical_bits}")
        self._identity = identity
        self._subsecrets = {k: np.array(v, dtype=np.int8, copy=True) for k, v in subsecrets.items()}
        self._noise_key = bytes(noise_key)
        self._state = state or MemberState.open(None, owner=self._owner())
        self._path: Path | None = None

    def _owner(self) -> bytes:
        return blake3.blake3(b"he_agg.member\0" + self.context.committee_id + bytes([self.party])).digest()

    @property
    def identity_public_key(self) -> bytes:
        return self._identity.public_key

    @property
    def used(self) -> int:
        """Distinct shares made so far (each one spent one unit of budget)."""
        return self._state.spent()

    @property
    def remaining(self) -> int:
        return max(self.policy.budget - self.used, 0)

    def dp_budget(self) -> _dp.DPBudget | None:
        """This member's DP account (releases, ε spent at its δ, budget); None without a DP policy."""
        return _dp.budget(self._state, self.policy.dp)

    # -- step 1: approve -----------------------------------------------------------------------

    def approve(self, request: DecryptionRequest, *,
                contributions: Mapping[str, Submission] | None = None) -> Approval:
        """Check the request against this member's policy and sign it (one request per round, ever)."""
        self._check_request(request, contributions)
        if request.dp is not None:  # refuse early (nothing recorded) when the budget cannot cover it
            for parties in request.active_sets:
                if self.party in parties:
                    _dp.spend(self._state, self.policy.dp, _release_key(request, parties), request.dp, record=False)
        signature = self._state.approve(request.round_id, request.digest, lambda: Approval.sign(
            self._identity, self.party, self.context.committee_id, request.round_id, request.digest).signature)
        return Approval(self.party, request.round_id, request.digest, signature)

    # -- step 2: the decryption share ----------------------------------------------------------

    def decryption_share(self, request: DecryptionRequest, certificate: QuorumCertificate | bytes,
                         active: Sequence[int] | None = None, *,
                         contributions: Mapping[str, Submission] | None = None) -> DecryptionShare:
        """The share for ``request`` and one of its active sets, against a quorum certificate."""
        parties = self._active_set(request, active)
        approved = check_release(certificate, self.context, request.round_id, request.digest,
                                 self._state.approval(request.round_id))
        summed = self._check_request(request, contributions, verified_before=approved)
        key = _release_key(request, parties)
        with self._state.transaction():  # the DP budget is checked and recorded with the release
            if request.dp is not None:
                _dp.spend(self._state, self.policy.dp, key, request.dp)
            self._state.release(key, 1, self.policy.budget)
        return self._compute(request, parties, summed)

    def _active_set(self, request: DecryptionRequest, active: Sequence[int] | None) -> tuple[int, ...]:
        if request.context.committee_id != self.context.committee_id:
            raise ShareBindingError("the request is addressed to another committee")
        if active is None:
            mine = [a for a in request.active_sets if self.party in a]
            if len(mine) != 1:
                raise ShareBindingError(f"member {self.party} is in {len(mine)} of the request's active sets; "
                                        "say which one with active=")
            return mine[0]
        parties = canonical_active_set(active, self.context)
        if parties not in request.active_sets:
            raise ShareBindingError(f"the active set {list(parties)} is not one the request names")
        if self.party not in parties:
            raise ShareBindingError(f"member {self.party} is not in the active set {list(parties)}")
        return parties

    def _check_request(self, request: DecryptionRequest, contributions: Mapping[str, Submission] | None, *,
                       verified_before: bool = False) -> int:
        """Policy checks; returns the contributor count the flooding is sized for."""
        if request.context.committee_id != self.context.committee_id:
            raise ShareBindingError("the request is addressed to another committee")
        policy = self.policy
        _dp.check(policy.dp, request.dp)
        if request.summed < policy.min_clients:
            raise TooFewContributorsError(
                f"the request names {request.summed} contributors; this member requires at least {policy.min_clients}")
        if request.summed > policy.max_clients:
            raise TooFewContributorsError(
                f"the request names {request.summed} contributors; this member's policy allows at most "
                f"{policy.max_clients} (raise max_clients)")
        if policy.verify:
            if not verified_before or contributions is not None:
                self._verify(request, contributions)
            return request.summed  # counted by this member from contributions it checked
        return policy.max_clients

    def _verify(self, request: DecryptionRequest, contributions: Mapping[str, Submission] | None) -> None:
        params = self.context.params
        if contributions is None:
            raise VerificationError("this member verifies aggregates: pass the contributions")
        expected = {c.client_id: c.digest for c in request.contributions}
        if set(contributions) != set(expected):
            raise VerificationError("the contributions given are not exactly those the request names")
        views = []
        for client_id, submission in contributions.items():
            view = residue_view(submission, params, f"contribution of {client_id!r}")
            if view_digest(view, params) != expected[client_id]:
                raise VerificationError(f"the contribution of {client_id!r} does not match its digest in the request")
            if view.length != request.aggregate.length:
                raise VerificationError(f"the contribution of {client_id!r} has {view.length} values")
            views.append(view)
        total = CiphertextBatch.zeros(params, request.aggregate.length, request.aggregate.packing)
        total.accumulate(views)
        if total.digest != request.aggregate.digest:
            raise VerificationError("the aggregate is not the sum of the listed contributions")

    def assigned_secret(self, parties: tuple[int, ...]) -> np.ndarray:
        """σ_i^A in NTT form over the data primes (hazmat: the caller must wipe it)."""
        params, context = self.context.params, self.context
        total = np.zeros(params.n, dtype=np.int64)
        for k in assignment(parties, self.party, context.parties, context.threshold):
            total += self._subsecrets[k]
        out = signed_to_rns(total, params.data_moduli)
        total.fill(0)
        kernels.ntt_forward(out, params.data_moduli)
        return out

    def _compute(self, request: DecryptionRequest, parties: tuple[int, ...], summed: int) -> DecryptionShare:
        params = self.context.params
        aggregate = request.aggregate
        sigma = self.context.noise_model().flooding_sigma(summed, aggregate.count * params.n)
        c1 = np.ascontiguousarray(aggregate.data[:, 1])
        label = (b"he_agg.flood.v2\0" + self.context.committee_id + request.digest + bytes(parties)
                 + blake3.blake3(c1.tobytes()).digest())
        noise = flooding_noise(KeyedStream(self._noise_key, label), aggregate.count, sigma, params)
        if request.dp is not None:  # this member's part of the DP noise, from its keyed stream
            from .packing import Layout

            dense = Layout.from_json(request.layout).dense  # the DP statement needs the layout: never None here
            part = dp_noise(KeyedStream(self._noise_key, b"he_agg.dp.v1\0" + label), aggregate.count,
                            _dp.coefficient_sigma(request.dp, self.context, dense=dense), params)
            kernels.add(noise, noise, part, params.data_moduli)
            part.fill(0)
        secret = self.assigned_secret(parties)
        kernels.muladd(noise, c1, secret, noise, params.data_moduli)  # the noise array becomes the share
        secret.fill(0)
        return DecryptionShare(self.party, parties, request.digest, self.context.committee_id, noise, sigma)

    # -- storage ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, passphrase: bytes | None = None,
             insecure_plaintext: bool = False) -> None:
        """Write the key share (secrets, policy, public context) owner-only; its state goes to ``path``.state.

        The secrets are sealed with ``passphrase`` (Argon2id + XChaCha20-Poly1305); saving
        them unsealed needs ``insecure_plaintext=True``. From now on this member's approvals
        and releases are recorded in the state file before they leave.
        """
        from .hazmat.files import write_private

        path = Path(path)
        if self._path is None and (self._state.highest_round() is not None or self._state.spent() > 0):
            raise StateError("this key share already approved or released in memory; save it right after key "
                             "generation, before it answers anything, so its file records every answer")
        policy_meta = asdict(self.policy)
        if policy_meta["dp"] is None:
            del policy_meta["dp"]  # files of members without DP stay as they were
        meta = {"party": self.party, "policy": policy_meta, "context": self.context._meta(),
                "subsets": sorted(self._subsecrets)}
        secret = np.concatenate([np.frombuffer(self._identity.private_bytes() + self._noise_key, dtype=np.uint8)]
                                + [self._subsecrets[k].view(np.uint8) for k in sorted(self._subsecrets)])
        body = np.concatenate([self.context.public_key.reshape(-1).view(np.uint8), secret])
        data = seal_envelope(Kind.KEY_SHARE, meta, body)
        secret.fill(0)
        body.fill(0)
        write_private(path, data, passphrase=passphrase, insecure_plaintext=insecure_plaintext)
        if self._path is None:
            self._state = MemberState.open(_state_path(path), owner=self._owner())
        self._path = path

    @classmethod
    def load(cls, path: str | os.PathLike[str], context: PublicContext | None = None, *,
             passphrase: bytes | None = None) -> "KeyShare":
        """Read a key share file (and its state); with ``context`` given it must belong to that committee."""
        from .hazmat.files import read_private

        path = Path(path)
        what = f"key share file {path}"
        env = open_envelope(read_private(path, passphrase=passphrase), Kind.KEY_SHARE, what)
        meta = env.meta
        context_meta = _nested(meta, "context", what)
        moduli = context_meta.integers("moduli", 2, (1 << 61) - 1, max_len=64)
        n = context_meta.integer("n", 1024, 32768)
        public_bytes = 8 * 2 * len(moduli) * n
        if len(env.body) < public_bytes:
            raise FormatError(f"{what}: truncated public key")
        own = PublicContext._from_meta(context_meta, env.body[:public_bytes], None, what)
        if context is not None and own != context:
            raise ShareBindingError(f"{what}: belongs to committee {own.committee_id[:6].hex()}…, not this one")
        party = meta.integer("party", 0, own.parties - 1)
        held = list(held_subsets(party, own.parties, own.threshold))
        if meta.integers("subsets", 0, 1 << 16, max_len=len(held) + 1) != held:
            raise FormatError(f"{what}: lists other sub-secrets than member {party} holds")
        secret = _bytes_view(env.body[public_bytes:], 2 * KEY_BYTES + len(held) * n, what)
        raw = bytes(secret[: 2 * KEY_BYTES])
        subsecrets = {k: np.array(secret[2 * KEY_BYTES + x * n : 2 * KEY_BYTES + (x + 1) * n]).view(np.int8)
                      for x, k in enumerate(held)}
        if any(np.abs(v.astype(np.int16)).max() > own.parties for v in subsecrets.values()):
            raise FormatError(f"{what}: a sub-secret has coefficients larger than the committee allows")
        policy_raw = meta.raw("policy")
        if not isinstance(policy_raw, dict):
            raise FormatError(f"{what}: policy must be an object")
        try:
            policy = Policy(**policy_raw)
            identity = PartyIdentity.from_private_bytes(raw[:KEY_BYTES])
            state = MemberState.open(_state_path(path), owner=_owner_for(own, party))
            share = cls(own, party, identity, subsecrets, raw[KEY_BYTES:], policy, state)
        except (TypeError, ValueError) as exc:
            raise FormatError(f"{what}: {exc}") from None
        share._path = path
        return share

    def wipe(self) -> None:
        """Overwrite the secret material in memory (best effort: Python may hold copies)."""
        for poly in self._subsecrets.values():
            poly.fill(0)
        self._noise_key = bytes(KEY_BYTES)

    # -- hygiene ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (f"KeyShare(member {self.party} of {self.context.threshold}-of-{self.context.parties}, committee "
                f"{self.context.committee_id[:6].hex()}…, budget {self.used}/{self.policy.budget} used)")

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a KeyShare cannot be pickled; use save() to write it with owner-only permissions")


def _owner_for(context: PublicContext, party: int) -> bytes:
    return blake3.blake3(b"he_agg.member\0" + context.committee_id + bytes([party])).digest()


def _state_path(path: Path) -> Path:
    return path.with_name(path.name + ".state")


def _nested(meta: Meta, key: str, what: str) -> Meta:
    raw = meta.raw(key)
    if not isinstance(raw, dict):
        raise FormatError(f"{what}: {key} must be an object")
    return Meta(raw, what)


def _bytes_view(body: memoryview, size: int, what: str) -> memoryview:
    if len(body) != size:
        raise FormatError(f"{what}: {len(body)} bytes of secrets, expected {size}")
    return body

