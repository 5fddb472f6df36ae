"""A committee member's key share: it makes decryption shares, and only when its policy allows.

A :class:`KeyShare` holds party i's Shamir share of the secret key (NTT form, data
primes), a 32-byte noise key, its :class:`Policy` and its state (which shares it made,
which request it answered for each round). Before it makes a share it checks, in order:

1. the request is for its committee, the active set has t distinct parties including i;
2. an identical earlier request (same request digest, same active set) is answered with
   the identical share — the noise comes from a keyed stream, not fresh randomness —
   and costs no budget;
3. at least ``min_clients`` distinct contributors (:class:`TooFewContributorsError`);
4. no *different* request was answered for the same round (:class:`ReplayError`);
5. with ``verify``, the aggregate is recomputed from the contributions with the native
   kernel and must match (:class:`VerificationError`);
6. the decryption budget is not exhausted (:class:`BudgetExhaustedError`).

When the key share was loaded from (or saved to) a file, the new state is written back
*before* the share is returned: a crash can waste budget but never exceed it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .ciphertext import CiphertextBatch, Submission, residue_view, view_digest
from .context import MAX_PARTIES, PublicContext
from .errors import (
    BudgetExhaustedError,
    FormatError,
    ReplayError,
    ShareBindingError,
    TooFewContributorsError,
    VerificationError,
)
from .hazmat.decryption import flooding_noise, make_share
from .hazmat.sampling import KEY_BYTES, KeyedStream
from .hazmat.shamir import lagrange_at_zero
from .hazmat.wire import seal
from .hazmat.wire.envelope import Kind, Meta, body_words, open_envelope, seal_envelope
from .requests import DecryptionRequest, DecryptionShare, canonical_active_set

__all__ = ["KeyShare", "Policy"]


@dataclass(frozen=True)
class Policy:
    """What a key share agrees to decrypt.

    ``min_clients``: fewest distinct contributors a request may name.
    ``budget``: most distinct shares (request × active set) this key share will ever make;
    each one releases a little information (see docs/SECURITY.md), so keep it small.
    ``verify``: recompute the aggregate from the contributions before answering.
    """

    min_clients: int = 1
    budget: int = 16
    verify: bool = False

    def __post_init__(self) -> None:
        if type(self.min_clients) is not int or self.min_clients < 1:
            raise ValueError("min_clients must be an integer >= 1")
        if type(self.budget) is not int or self.budget < 0:
            raise ValueError("budget must be a non-negative integer")


def _share_key(request_digest: bytes, active: tuple[int, ...]) -> str:
    return request_digest.hex() + ":" + ",".join(map(str, active))


class KeyShare:
    """Party ``party``'s share of the committee key. Never printed, pickled or logged."""

    __slots__ = ("context", "party", "policy", "_secret", "_noise_key", "_made", "_rounds", "_path")

    def __init__(self, context: PublicContext, party: int, secret: np.ndarray, noise_key: bytes,
                 policy: Policy | None = None) -> None:
        shape = (len(context.params.data_moduli), context.params.n)
        if secret.shape != shape or secret.dtype != np.uint64:
            raise ValueError(f"a key share's secret is uint64 of shape {shape}")
        if not 0 <= party < context.parties:
            raise ValueError(f"party must be in [0, {context.parties})")
        if len(noise_key) != KEY_BYTES:
            raise ValueError(f"the noise key is {KEY_BYTES} bytes")
        seal.check_residues(secret, context.params.data_moduli, "key share")
        self.context = context
        self.party = party
        self.policy = policy or Policy()
        self._secret = np.array(secret, dtype=np.uint64, order="C", copy=True)  # owned, wipeable
        self._noise_key = bytes(noise_key)
        self._made: set[str] = set()
        self._rounds: dict[int, str] = {}
        self._path: Path | None = None

    # -- the decryption share --------------------------------------------------------------

    @property
    def used(self) -> int:
        """Distinct shares made so far (each one spent one unit of budget)."""
        return len(self._made)

    @property
    def remaining(self) -> int:
        return max(self.policy.budget - self.used, 0)

    def decryption_share(self, request: DecryptionRequest, active: Sequence[int], *,
                         contributions: Mapping[str, Submission] | None = None) -> DecryptionShare:
        """The share for ``request`` and the active set ``active`` (party indices), if policy allows."""
        if request.context.committee_id != self.context.committee_id:
            raise ShareBindingError("the request is addressed to another committee")
        parties = canonical_active_set(active, self.context)
        if self.party not in parties:
            raise ShareBindingError(f"party {self.party} is not in the active set {list(parties)}")
        key = _share_key(request.digest, parties)
        if key not in self._made:
            self._authorize(request, contributions)
            self._made.add(key)
            self._rounds[request.round_id] = request.digest.hex()
            self._persist()
        return self._compute(request, parties)

    def _authorize(self, request: DecryptionRequest, contributions: Mapping[str, Submission] | None) -> None:
        policy = self.policy
        if request.summed < policy.min_clients:
            raise TooFewContributorsError(
                f"the request names {request.summed} contributors; this key share requires at least {policy.min_clients}"
            )
        answered = self._rounds.get(request.round_id)
        if answered is not None and answered != request.digest.hex():
            raise ReplayError(
                f"round {request.round_id} was already answered for request {answered[:12]}…; "
                "a different request for the same round is refused"
            )
        if policy.verify:
            self._verify(request, contributions)
        if self.used >= policy.budget:
            raise BudgetExhaustedError(
                f"decryption budget exhausted ({self.used} of {policy.budget} shares made); "
                "the committee must re-key to decrypt more"
            )

    def _verify(self, request: DecryptionRequest, contributions: Mapping[str, Submission] | None) -> None:
        params = self.context.params
        if contributions is None:
            raise VerificationError("this key share verifies aggregates: pass the contributions")
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
        total = CiphertextBatch.zeros(params, request.aggregate.length)
        total.accumulate(views)
        if total.digest != request.aggregate.digest:
            raise VerificationError("the aggregate is not the sum of the listed contributions")

    def _compute(self, request: DecryptionRequest, parties: tuple[int, ...]) -> DecryptionShare:
        params = self.context.params
        aggregate = request.aggregate
        sigma = self.context.noise_model().flooding_sigma(request.summed, aggregate.count * params.n)
        label = b"he_agg.flood.v1\0" + self.context.committee_id + request.digest + bytes(parties)
        noise = flooding_noise(KeyedStream(self._noise_key, label), aggregate.count, sigma, params)
        lam = lagrange_at_zero(parties, self.party, params.data_moduli)
        c1 = np.ascontiguousarray(aggregate.data[:, 1])
        residues = make_share(self._secret, lam, c1, noise, params)  # the noise array becomes the share
        return DecryptionShare(self.party, parties, request.digest, self.context.committee_id, residues)

    # -- storage ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key share (secret, state, public context) with owner-only permissions.

        Later decryption shares update this file before they are released.
        """
        self._path = Path(path)
        self._persist()

    def _persist(self) -> None:
        if self._path is None:
            return
        meta = {
            "party": self.party,
            "policy": asdict(self.policy),
            "made": sorted(self._made),
            "rounds": {str(k): v for k, v in self._rounds.items()},
            "context": self.context._meta(),
        }
        secret_words = np.concatenate([self._secret.reshape(-1), np.frombuffer(self._noise_key, dtype="<u8")])
        body = np.concatenate([self.context.public_key.reshape(-1), secret_words])
        data = seal_envelope(Kind.KEY_SHARE, meta, body)
        secret_words.fill(0)
        body.fill(0)
        _write_private(self._path, data)

    @classmethod
    def load(cls, path: str | os.PathLike[str], context: PublicContext | None = None) -> "KeyShare":
        """Read a key share file; with ``context`` given, it must belong to that committee."""
        path = Path(path)
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{path} is readable by others (mode {mode:o}); run chmod 600 on it")
        what = f"key share file {path}"
        env = open_envelope(path.read_bytes(), Kind.KEY_SHARE, what)
        meta = env.meta
        context_meta = _nested(meta, "context", what)
        moduli = context_meta.integers("moduli", 2, (1 << 61) - 1, max_len=64)
        public_words = 2 * len(moduli) * context_meta.integer("n", 1024, 32768)
        if len(env.body) < 8 * public_words:
            raise FormatError(f"{what}: truncated public key")
        own = PublicContext._from_meta(context_meta, env.body[: 8 * public_words], None, what)
        if context is not None and own != context:
            raise ShareBindingError(f"{what}: belongs to committee {own.committee_id[:6].hex()}…, not this one")
        nmod, n = len(own.params.data_moduli), own.params.n
        words = body_words(env.body[8 * public_words :], (nmod * n + KEY_BYTES // 8,), what)
        policy_raw = meta.raw("policy")
        if not isinstance(policy_raw, dict):
            raise FormatError(f"{what}: policy must be an object")
        try:
            policy = Policy(**policy_raw)
        except (TypeError, ValueError) as exc:
            raise FormatError(f"{what}: bad policy ({exc})") from None
        share = cls(own, meta.integer("party", 0, MAX_PARTIES - 1), np.array(words[: nmod * n]).reshape(nmod, n),
                    words[nmod * n :].tobytes(), policy)
        share._made = set(_strings(meta.raw("made"), what))
        rounds = meta.raw("rounds")
        if not isinstance(rounds, dict) or not all(isinstance(v, str) and k.isdigit() for k, v in rounds.items()):
            raise FormatError(f"{what}: bad round history")
        share._rounds = {int(k): v for k, v in rounds.items()}
        share._path = path
        return share

    def wipe(self) -> None:
        """Overwrite the secret material in memory (best effort: Python may hold copies)."""
        self._secret.fill(0)
        self._noise_key = bytes(KEY_BYTES)

    # -- hygiene ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (f"KeyShare(party {self.party} of {self.context.threshold}-of-{self.context.parties}, committee "
                f"{self.context.committee_id[:6].hex()}…, budget {self.used}/{self.policy.budget} used)")

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a KeyShare cannot be pickled; use save() to write it with owner-only permissions")


def _nested(meta: Meta, key: str, what: str) -> Meta:
    raw = meta.raw(key)
    if not isinstance(raw, dict):
        raise FormatError(f"{what}: {key} must be an object")
    return Meta(raw, what)


def _strings(raw: Any, what: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(x, str) and len(x) < 2048 for x in raw):
        raise FormatError(f"{what}: expected a list of strings")
    return raw


def _write_private(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600, fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".keyshare-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
