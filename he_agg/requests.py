"""Decryption requests and decryption shares: the bytes that travel between the
aggregator and the committee.

A :class:`DecryptionRequest` names a round, the committee, every contribution (client id
and ciphertext digest) and carries the aggregate ciphertext itself. Its digest binds
everything a decryptor agrees to, so a share made for one request is useless for any
other. A :class:`DecryptionShare` names its party, the request digest and the active set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable, Sequence

import blake3
import numpy as np

from .ciphertext import CiphertextBatch, view_from_meta
from .context import MAX_PARTIES, PublicContext
from .errors import FormatError, HeAggError, ShareBindingError
from .hazmat.wire import seal
from .hazmat.wire.envelope import Kind, Meta, body_words, open_envelope, seal_envelope

__all__ = ["Contribution", "DecryptionRequest", "DecryptionShare", "canonical_active_set", "check_client_id",
           "check_round_id"]

_REQUEST_DOMAIN = b"he_agg.request.v1\0"
MAX_CLIENT_ID = 256


def check_client_id(client_id: object) -> str:
    """A client id: a non-empty string of at most MAX_CLIENT_ID characters."""
    if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID:
        raise ValueError(f"client ids are non-empty strings of at most {MAX_CLIENT_ID} characters")
    return client_id


def check_round_id(round_id: object) -> int:
    """A round id: a non-negative integer (bool excluded)."""
    if type(round_id) is not int or round_id < 0:
        raise ValueError("round_id must be a non-negative integer")
    return round_id


def canonical_active_set(active: Iterable[int], context: PublicContext) -> tuple[int, ...]:
    """Sorted tuple of exactly t distinct party indices in [0, n); ValueError otherwise."""
    parties = tuple(sorted(int(p) for p in active))
    if len(parties) != context.threshold or len(set(parties)) != len(parties):
        raise ShareBindingError(f"the active set must name {context.threshold} distinct parties, got {list(parties)}")
    if parties[0] < 0 or parties[-1] >= context.parties:
        raise ShareBindingError(f"party indices must be in [0, {context.parties}), got {list(parties)}")
    return parties


@dataclass(frozen=True, order=True)
class Contribution:
    """One client's ciphertext in a round: its id and the BLAKE3 digest of its ciphertext."""

    client_id: str
    digest: bytes

    def __post_init__(self) -> None:
        check_client_id(self.client_id)
        if len(self.digest) != 32:
            raise ValueError("a contribution digest is 32 bytes")


class DecryptionRequest:
    """What the aggregator asks the committee to decrypt, and everything that binds it."""

    def __init__(self, context: PublicContext, round_id: int, aggregate: CiphertextBatch,
                 contributions: Sequence[Contribution], layout: dict[str, Any] | None = None) -> None:
        if aggregate.params != context.params:
            raise ShareBindingError("the aggregate was made under other parameters than the committee's")
        check_round_id(round_id)
        ordered = tuple(sorted(contributions))
        ids = [c.client_id for c in ordered]
        if len(set(ids)) != len(ids):
            raise ValueError("a client appears twice in the contributions")
        if not ordered:
            raise ValueError("a decryption request needs at least one contribution")
        self.context = context
        self.round_id = round_id
        self.aggregate = aggregate
        self.contributions = ordered
        self.layout = layout

    @property
    def summed(self) -> int:
        """How many fresh ciphertexts the aggregate sums (one per contribution)."""
        return len(self.contributions)

    def _meta(self) -> dict[str, Any]:
        return {
            "committee": self.context.committee_id.hex(),
            "round": self.round_id,
            "aggregate": self.aggregate.digest.hex(),
            "contributions": [[c.client_id, c.digest.hex()] for c in self.contributions],
            "layout": self.layout,
            "params": self.context.params.fingerprint.hex(),
            "n": self.context.params.n,
            "nmod": len(self.context.params.data_moduli),
            "length": self.aggregate.length,
        }

    @cached_property
    def digest(self) -> bytes:
        """BLAKE3 over the canonical request: committee, round, contributions, layout, aggregate."""
        canonical = json.dumps(self._meta(), sort_keys=True, separators=(",", ":")).encode()
        return blake3.blake3(_REQUEST_DOMAIN + canonical).digest()

    def to_bytes(self) -> bytes:
        return seal_envelope(Kind.DECRYPTION_REQUEST, self._meta(), self.aggregate.data)

    @classmethod
    def from_bytes(cls, data: object, context: PublicContext) -> "DecryptionRequest":
        what = "he_agg decryption request"
        env = open_envelope(data, Kind.DECRYPTION_REQUEST, what)
        meta = env.meta
        if meta.hexbytes("committee", 32) != context.committee_id:
            raise ShareBindingError(f"{what}: addressed to another committee")
        view = view_from_meta(meta, env.body, context.params, what)
        aggregate = CiphertextBatch(context.params, view.residues(context.params), view.length)
        if aggregate.digest != meta.hexbytes("aggregate", 32):
            raise FormatError(f"{what}: the aggregate does not match its digest")
        layout = meta.raw("layout")
        if layout is not None and not isinstance(layout, dict):
            raise FormatError(f"{what}: layout must be an object or null")
        contributions = _contributions(meta, what)
        try:
            return cls(context, meta.integer("round"), aggregate, contributions, layout)
        except ValueError as exc:  # a constructor check on parsed fields: the bytes are at fault
            if isinstance(exc, HeAggError):
                raise
            raise FormatError(f"{what}: {exc}") from None

    def __repr__(self) -> str:
        return (f"DecryptionRequest(round {self.round_id}, {self.summed} contributions, "
                f"{self.aggregate.length} values, digest {self.digest[:6].hex()}…)")


def _contributions(meta: Meta, what: str) -> list[Contribution]:
    raw = meta.raw("contributions")
    if not isinstance(raw, list) or len(raw) > 1 << 20:
        raise FormatError(f"{what}: contributions must be a list")
    out = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise FormatError(f"{what}: each contribution is [client_id, digest hex]")
        try:
            out.append(Contribution(item[0], bytes.fromhex(item[1])))
        except ValueError as exc:
            raise FormatError(f"{what}: bad contribution ({exc})") from None
    if not out:
        raise FormatError(f"{what}: no contributions (a request sums at least one)")
    if len({c.client_id for c in out}) != len(out):
        raise FormatError(f"{what}: a client appears twice in the contributions")
    return out


class DecryptionShare:
    """Party ``party``'s share d = λ·s_i·c1 + e for one request and one active set."""

    __slots__ = ("party", "active", "request_digest", "committee_id", "residues")

    def __init__(self, party: int, active: tuple[int, ...], request_digest: bytes, committee_id: bytes,
                 residues: np.ndarray) -> None:
        if party not in active:
            raise ShareBindingError(f"party {party} is not in its own active set {list(active)}")
        self.party = party
        self.active = active
        self.request_digest = request_digest
        self.committee_id = committee_id
        self.residues = residues

    def to_bytes(self) -> bytes:
        meta = {
            "party": self.party,
            "active": list(self.active),
            "request": self.request_digest.hex(),
            "committee": self.committee_id.hex(),
            "shape": list(self.residues.shape),
        }
        return seal_envelope(Kind.DECRYPTION_SHARE, meta, self.residues)

    @classmethod
    def from_bytes(cls, data: object, context: PublicContext) -> "DecryptionShare":
        what = "he_agg decryption share"
        env = open_envelope(data, Kind.DECRYPTION_SHARE, what)
        meta = env.meta
        if meta.hexbytes("committee", 32) != context.committee_id:
            raise ShareBindingError(f"{what}: made by another committee")
        active = canonical_active_set(meta.integers("active", 0, MAX_PARTIES, max_len=MAX_PARTIES), context)
        nmod, n = len(context.params.data_moduli), context.params.n
        shape = tuple(meta.integers("shape", 1, 1 << 32, max_len=3))
        if len(shape) != 3 or shape[1:] != (nmod, n):
            raise FormatError(f"{what}: shape {list(shape)} does not match (count, {nmod}, {n})")
        residues = np.array(body_words(env.body, shape, what))
        seal.check_residues(residues, context.params.data_moduli, what)
        return cls(meta.integer("party", 0, context.parties - 1), active, meta.hexbytes("request", 32),
                   context.committee_id, residues)

    def __repr__(self) -> str:
        return f"DecryptionShare(party {self.party}, active {list(self.active)}, request {self.request_digest[:6].hex()}…)"
