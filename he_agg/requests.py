"""Decryption requests and decryption shares: the bytes that travel between the
aggregator and the committee.

A :class:`DecryptionRequest` names a round, the committee, every contribution (client id
and ciphertext digest), the active sets that will answer, and carries the aggregate
ciphertext itself. Its digest binds everything a decryptor agrees to — it is the
statement members approve (:mod:`he_agg.quorum`) — so a share made for one request is
useless for any other. The request owns a read-only copy of the aggregate: the bytes a
member multiplies are the bytes the digest covers. A :class:`DecryptionShare` names its
member, the request digest and its active set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import blake3
import numpy as np

from .ciphertext import CiphertextBatch, view_from_meta
from .context import MAX_PARTIES, PublicContext
from .errors import FormatError, ShareBindingError
from .hazmat.wire import seal
from .hazmat.wire.envelope import Kind, Meta, body_words, open_envelope, seal_envelope

__all__ = ["Contribution", "DecryptionRequest", "DecryptionShare", "EnrolledRequest", "canonical_active_set",
           "canonical_active_sets", "check_client_id", "check_min_clients", "check_round_id"]

_REQUEST_DOMAIN = b"he_agg.request.v2\0"
MAX_CLIENT_ID = 256
MAX_ACTIVE_SETS = 64


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


def check_min_clients(min_clients: object) -> int:
    """A minimum contributor count: an integer ≥ 1 (bool excluded)."""
    if type(min_clients) is not int or min_clients < 1:
        raise ValueError("min_clients must be an integer >= 1")
    return min_clients


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


def canonical_active_sets(active_sets: Iterable[Iterable[int]] | None, context: PublicContext) -> tuple[tuple[int, ...], ...]:
    """Distinct canonical active sets, in order; the default is members 0 … t−1."""
    raw = [range(context.threshold)] if active_sets is None else list(active_sets)
    sets = tuple(canonical_active_set(a, context) for a in raw)
    if not 1 <= len(sets) <= MAX_ACTIVE_SETS or len(set(sets)) != len(sets):
        raise ShareBindingError(f"a request names 1 to {MAX_ACTIVE_SETS} distinct active sets")
    return sets


def _dp_statement(dp: Any, layout: Any) -> Any:
    """A request's DP statement from a :class:`~he_agg.dp.DPSpec`, a statement, its JSON, or None.

    The statement is (re-)derived from the request's own layout, never taken as stated."""
    if dp is None:
        return None
    from . import dp as dpm
    from .packing import Layout

    if isinstance(dp, dpm.DPStatement):
        dp = dp.spec
    if isinstance(dp, dpm.DPSpec):
        return dp.statement(Layout.from_json(layout) if layout is not None else None)
    return dpm.request_statement(dp, layout)


def _dp_meta(statement: Any) -> dict[str, Any]:
    """The request meta's "dp" entry (absent without DP: non-DP digests are unchanged)."""
    return {} if statement is None else {"dp": statement.to_json()}


def _dp_raw(meta: Meta) -> Any:
    """The request meta's raw DP statement, or None (validated by the request's constructor)."""
    return meta.raw("dp") if meta.has("dp") else None


class DecryptionRequest:
    """What the aggregator asks the committee to decrypt, and everything that binds it.

    ``active_sets``: the t-member sets that will answer (default: members 0 … t−1).
    Naming several (e.g. every t-subset of t+2 members, :func:`he_agg.committee.verification_sets`)
    lets the combiner cross-check members; each set costs every member in it one share.
    """

    def __init__(self, context: PublicContext, round_id: int, aggregate: CiphertextBatch,
                 contributions: Sequence[Contribution], layout: dict[str, Any] | None = None,
                 active_sets: Iterable[Iterable[int]] | None = None, dp: Any = None) -> None:
        if aggregate.params != context.params:
            raise ShareBindingError("the aggregate was made under other parameters than the committee's")
        check_round_id(round_id)
        ordered = tuple(sorted(contributions))
        ids = [c.client_id for c in ordered]
        if len(set(ids)) != len(ids):
            raise ValueError("a client appears twice in the contributions")
        if not ordered:
            raise ValueError("a decryption request needs at least one contribution")
        owned = np.array(aggregate.data, dtype=np.uint64, order="C", copy=True)
        owned.setflags(write=False)  # the digest covers these bytes; nobody can change them now
        self.context = context
        self.round_id = round_id
        self.aggregate = CiphertextBatch(context.params, owned, aggregate.length)
        self.contributions = ordered
        self.layout = layout
        self.active_sets = canonical_active_sets(active_sets, context)
        self.dp = _dp_statement(dp, layout)
        canonical = json.dumps(self._meta(), sort_keys=True, separators=(",", ":")).encode()
        self.digest = blake3.blake3(_REQUEST_DOMAIN + canonical).digest()

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
            "active": [list(a) for a in self.active_sets],
            **_dp_meta(self.dp),
        }

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
        raw_sets = meta.raw("active")
        if not isinstance(raw_sets, list) or len(raw_sets) > MAX_ACTIVE_SETS or not all(
                isinstance(a, list) and len(a) <= MAX_PARTIES and all(type(x) is int for x in a) for a in raw_sets):
            raise FormatError(f"{what}: active must be a list of member lists")
        try:
            return cls(context, meta.integer("round"), aggregate, _contributions(meta, what), layout, raw_sets,
                       _dp_raw(meta))
        except ValueError as exc:
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
    """Member ``party``'s share d = σ_i^A·c1 + e for one request and one active set.

    ``sigma`` is the standard deviation of the flooding noise e the member added (public).
    """

    __slots__ = ("party", "active", "request_digest", "committee_id", "residues", "sigma")

    def __init__(self, party: int, active: tuple[int, ...], request_digest: bytes, committee_id: bytes,
                 residues: np.ndarray, sigma: float) -> None:
        if party not in active:
            raise ShareBindingError(f"party {party} is not in its own active set {list(active)}")
        self.party = party
        self.active = active
        self.request_digest = request_digest
        self.committee_id = committee_id
        self.residues = residues
        self.sigma = float(sigma)

    def to_bytes(self) -> bytes:
        meta = {
            "party": self.party,
            "active": list(self.active),
            "request": self.request_digest.hex(),
            "committee": self.committee_id.hex(),
            "shape": list(self.residues.shape),
            "sigma": self.sigma,
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
        sigma = meta.number("sigma")
        if not 1.0 <= sigma < 2.0**100:
            raise FormatError(f"{what}: flooding sigma {sigma} out of range")
        try:
            return cls(meta.integer("party", 0, context.parties - 1), active, meta.hexbytes("request", 32),
                       context.committee_id, residues, sigma)
        except ShareBindingError as exc:
            raise FormatError(f"{what}: {exc}") from None

    def __repr__(self) -> str:
        return f"DecryptionShare(party {self.party}, active {list(self.active)}, request {self.request_digest[:6].hex()}…)"


_ENROLLED_DOMAIN = b"he_agg.enrolled-request.v1\0"
MAX_TICKET = 4096


class EnrolledRequest:
    """An enrolled-client round's decryption request: τ_r, the statement members approve.

    It names the committee, the key epoch, the round, the contributor set S (distinct
    client ids), each contributor's signed ticket (which binds its upload's digest and
    layout), the layout, the number of ciphertexts, the active sets, and the hash of the
    summed c0 (members never need Σc0 itself). It carries no ciphertext: members multiply
    the round's public polynomials, which nobody but the XOF chooses.
    """

    def __init__(self, context: Any, epoch: int, round_id: int, tickets: Mapping[str, bytes], layout: dict[str, Any],
                 count: int, aggregate_digest: bytes, active_sets: Iterable[Iterable[int]] | None = None,
                 dp: Any = None) -> None:
        check_round_id(round_id)
        check_round_id(epoch)
        if not tickets:
            raise ValueError("a decryption request needs at least one contribution")
        for client_id, ticket in tickets.items():
            check_client_id(client_id)
            if not isinstance(ticket, (bytes, bytearray)) or not 0 < len(ticket) <= MAX_TICKET:
                raise ValueError(f"the ticket of {client_id!r} must be 1 to {MAX_TICKET} bytes")
        if type(count) is not int or not 1 <= count <= 1 << 20:
            raise ValueError("count must be an integer in [1, 2^20]")
        if len(aggregate_digest) != 32:
            raise ValueError("the aggregate digest is 32 bytes")
        if not isinstance(layout, dict):
            raise ValueError("the layout must be a JSON object")
        self.context = context
        self.epoch = epoch
        self.round_id = round_id
        self.tickets = {k: bytes(tickets[k]) for k in sorted(tickets)}
        self.layout = layout
        self.count = count
        self.aggregate_digest = bytes(aggregate_digest)
        self.active_sets = canonical_active_sets(active_sets, context)
        self.dp = _dp_statement(dp, layout)
        canonical = json.dumps(self._meta(), sort_keys=True, separators=(",", ":")).encode()
        self.digest = blake3.blake3(_ENROLLED_DOMAIN + canonical).digest()

    @property
    def contributors(self) -> tuple[str, ...]:
        return tuple(self.tickets)

    @property
    def summed(self) -> int:
        return len(self.tickets)

    def _meta(self) -> dict[str, Any]:
        return {
            "committee": self.context.committee_id.hex(),
            "epoch": self.epoch,
            "round": self.round_id,
            "tickets": [[k, v.hex()] for k, v in self.tickets.items()],
            "layout": self.layout,
            "count": self.count,
            "aggregate": self.aggregate_digest.hex(),
            "active": [list(a) for a in self.active_sets],
            "params": self.context.params.fingerprint.hex(),
            **_dp_meta(self.dp),
        }

    def to_bytes(self) -> bytes:
        return seal_envelope(Kind.ENROLLED_REQUEST, self._meta())

    @classmethod
    def from_bytes(cls, data: object, context: Any) -> "EnrolledRequest":
        what = "he_agg enrolled decryption request"
        meta = open_envelope(data, Kind.ENROLLED_REQUEST, what).meta
        if meta.hexbytes("committee", 32) != context.committee_id:
            raise ShareBindingError(f"{what}: addressed to another committee")
        if meta.hexbytes("params", 32) != context.params.fingerprint:
            raise FormatError(f"{what}: made for other parameters")
        raw = meta.raw("tickets")
        if not isinstance(raw, list) or not 0 < len(raw) <= 1 << 20:
            raise FormatError(f"{what}: tickets must be a non-empty list")
        tickets: dict[str, bytes] = {}
        for item in raw:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                    and isinstance(item[1], str) and len(item[1]) <= 2 * MAX_TICKET):
                raise FormatError(f"{what}: each ticket is [client_id, hex]")
            if item[0] in tickets:
                raise FormatError(f"{what}: client {item[0]!r} is listed twice")
            try:
                tickets[item[0]] = bytes.fromhex(item[1])
            except ValueError:
                raise FormatError(f"{what}: a ticket is not hex") from None
        layout = meta.raw("layout")
        raw_sets = meta.raw("active")
        if not isinstance(raw_sets, list) or len(raw_sets) > MAX_ACTIVE_SETS or not all(
                isinstance(a, list) and len(a) <= MAX_PARTIES and all(type(x) is int for x in a) for a in raw_sets):
            raise FormatError(f"{what}: active must be a list of member lists")
        try:
            return cls(context, meta.integer("epoch"), meta.integer("round"), tickets, layout,
                       meta.integer("count", 1, 1 << 20), meta.hexbytes("aggregate", 32), raw_sets,
                       _dp_raw(meta))
        except ValueError as exc:
            raise FormatError(f"{what}: {exc}") from None

    def __repr__(self) -> str:
        return (f"EnrolledRequest(epoch {self.epoch}, round {self.round_id}, {self.summed} contributors, "
                f"{self.count} ciphertexts, digest {self.digest[:6].hex()}…)")
