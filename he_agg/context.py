"""The committee's public context: parameters, collective public key, roster, threshold settings.

This is what clients receive, and what binds a committee: its id is a hash of the
parameters, (n, t, c), the members' Ed25519 keys (the roster), the key-generation
transcript and the public key, so approvals, requests and shares made for one committee
are useless for any other. ``to_tenseal()`` gives a public-only TenSEAL context that
encrypts under the committee's collective key, so clients can use unmodified TenSEAL;
``to_bytes()`` ships it. Nothing in it is secret.
"""

from __future__ import annotations

import struct
from typing import Any

import blake3
import numpy as np

from .errors import FormatError, ParameterMismatchError
from .hazmat.noise import NoiseModel
from .hazmat.replicated import MAX_MEMBERS, check_committee_shape, subsets
from .hazmat.wire import seal, tenseal as tenseal_wire
from .hazmat.wire.envelope import Kind, body_words, open_envelope, seal_envelope
from .params import Params

__all__ = ["MAX_PARTIES", "EnrolledContext", "PublicContext"]

MAX_PARTIES = MAX_MEMBERS
_DOMAIN = b"he_agg.committee.v2\0"


class _ByCommitteeId:
    """Contexts are equal exactly when their committee ids are (the id binds everything else)."""

    __slots__ = ()
    committee_id: bytes

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.committee_id == self.committee_id

    def __hash__(self) -> int:
        return hash(self.committee_id)


class PublicContext(_ByCommitteeId):
    """Parameters, collective public key (pk0, pk1), roster and the committee's (n, t, c) settings.

    ``roster``: the n members' Ed25519 verify keys (member i at index i).
    ``colluders``: c, the most members assumed to collude (default t − 1); approvals from
    q = ⌈(n + c + 1)/2⌉ members certify a request (:mod:`he_agg.quorum`).
    ``secret_terms`` is how many ternary polynomials the collective key sums (one per
    (t−1)-subset for a trusted dealer, n per subset for dealer-free generation): it
    enters the noise bound. ``statistical_bits`` is the flooding security parameter s.
    ``transcript``: 32 bytes binding the key generation that made the key.
    """

    __slots__ = ("params", "public_key", "parties", "threshold", "colluders", "roster", "secret_terms",
                 "statistical_bits", "transcript", "committee_id", "_tenseal")

    def __init__(self, params: Params, public_key: np.ndarray, *, parties: int, threshold: int,
                 roster: tuple[bytes, ...], secret_terms: int, statistical_bits: int = 40,
                 colluders: int | None = None, transcript: bytes = bytes(32), allow_single: bool = False) -> None:
        shape = (2, len(params.moduli), params.n)
        if public_key.shape != shape or public_key.dtype != np.uint64:
            raise ParameterMismatchError(f"public key must be uint64 of shape {shape}, got {public_key.dtype} {public_key.shape}")
        check_committee_shape(parties, threshold, allow_single=allow_single)
        colluders = threshold - 1 if colluders is None else colluders
        if type(colluders) is not int or not 0 <= colluders < threshold:
            raise ValueError(f"the colluder bound c must be in [0, t), got c={colluders}, t={threshold}")
        roster = tuple(bytes(k) for k in roster)
        if len(roster) != parties or any(len(k) != 32 for k in roster) or len(set(roster)) != parties:
            raise ValueError(f"the roster must list {parties} distinct 32-byte member keys")
        if not 1 <= secret_terms <= parties * len(subsets(parties, threshold)):
            raise ValueError("secret_terms must be between 1 and n × C(n, t−1)")
        if len(transcript) != 32:
            raise ValueError("the key-generation transcript hash is 32 bytes")
        seal.check_residues(public_key, params.moduli, "public key")
        key = np.ascontiguousarray(public_key)
        key.setflags(write=False)
        self.params = params
        self.public_key = key
        self.parties = parties
        self.threshold = threshold
        self.colluders = colluders
        self.roster = roster
        self.secret_terms = secret_terms
        self.statistical_bits = statistical_bits
        self.transcript = bytes(transcript)
        NoiseModel(params, secret_terms, statistical_bits)  # validates the settings
        header = struct.pack("<HHHIH", parties, threshold, colluders, secret_terms, statistical_bits)
        self.committee_id = blake3.blake3(_DOMAIN + params.fingerprint + header + b"".join(roster)
                                          + self.transcript + key.tobytes()).digest()
        self._tenseal: Any = None

    def noise_model(self) -> NoiseModel:
        return NoiseModel(self.params, self.secret_terms, self.statistical_bits)

    # -- TenSEAL ---------------------------------------------------------------------------

    def tenseal_bytes(self) -> bytes:
        """Serialized public-only TenSEAL context (``tenseal.context_from`` loads it)."""
        return tenseal_wire.write_context(self.params, self.public_key)

    def to_tenseal(self) -> Any:
        """A public-only TenSEAL context encrypting under the collective key (cached)."""
        if self._tenseal is None:
            import tenseal as ts

            self._tenseal = ts.context_from(self.tenseal_bytes())
        return self._tenseal

    # -- he_agg wire form ------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return {
            "params": self.params.fingerprint.hex(),
            "n": self.params.n,
            "moduli": list(self.params.moduli),
            "scale": self.params.scale,
            "parties": self.parties,
            "threshold": self.threshold,
            "colluders": self.colluders,
            "roster": [k.hex() for k in self.roster],
            "transcript": self.transcript.hex(),
            "secret_terms": self.secret_terms,
            "statistical_bits": self.statistical_bits,
            "committee": self.committee_id.hex(),
        }

    def to_bytes(self) -> bytes:
        return seal_envelope(Kind.PUBLIC_CONTEXT, self._meta(), self.public_key)

    @classmethod
    def from_bytes(cls, data: object, params: Params | None = None) -> "PublicContext":
        """Parse and validate; with ``params`` given, the context must use exactly those."""
        what = "he_agg public context"
        env = open_envelope(data, Kind.PUBLIC_CONTEXT, what)
        return cls._from_meta(env.meta, env.body, params, what)

    @classmethod
    def _from_meta(cls, meta: Any, body: memoryview, params: Params | None, what: str) -> "PublicContext":
        parsed = _params_from_meta(meta, params, what)
        key = np.array(body_words(body, (2, len(parsed.moduli), parsed.n), what))
        parties = meta.integer("parties", 1, MAX_PARTIES)
        roster = _roster_from_meta(meta, what)
        if len(roster) != parties:
            raise FormatError(f"{what}: the roster must list {parties} member keys")
        try:
            context = cls(parsed, key, parties=parties, threshold=meta.integer("threshold", 1, MAX_PARTIES),
                          colluders=meta.integer("colluders", 0, MAX_PARTIES), roster=tuple(roster),
                          secret_terms=meta.integer("secret_terms", 1, 1 << 20),
                          statistical_bits=meta.integer("statistical_bits", 16, 128),
                          transcript=meta.hexbytes("transcript", 32), allow_single=True)
        except ValueError as exc:
            raise FormatError(f"{what}: inconsistent committee settings ({exc})") from None
        if context.committee_id != meta.hexbytes("committee", 32):
            raise ParameterMismatchError(f"{what}: committee id does not match the key and settings")
        return context

    def __repr__(self) -> str:
        return (f"PublicContext({self.threshold}-of-{self.parties}, c={self.colluders}, committee {self.committee_id[:6].hex()}…, "
                f"{self.params.describe()})")


def _params_from_meta(meta: Any, params: Params | None, what: str) -> Params:
    """The parameters a context's meta names, checked against their fingerprint (and ``params``)."""
    moduli = meta.integers("moduli", 2, (1 << 61) - 1, max_len=64)
    parsed = Params(n=meta.integer("n", 1024, 32768), moduli=tuple(moduli), scale=meta.number("scale"))
    if parsed.fingerprint != meta.hexbytes("params", 32):
        raise ParameterMismatchError(f"{what}: parameter fingerprint does not match its own parameters")
    if params is not None and parsed != params:
        raise ParameterMismatchError(f"{what}: made for {parsed.describe()}, expected {params.describe()}")
    return parsed


def _roster_from_meta(meta: Any, what: str) -> tuple[bytes, ...]:
    """The members' 32-byte keys, from a list of 1 to MAX_PARTIES hex strings."""
    roster = meta.raw("roster")
    if not isinstance(roster, list) or not 1 <= len(roster) <= MAX_PARTIES or not all(
            isinstance(k, str) and len(k) == 64 for k in roster):
        raise FormatError(f"{what}: the roster must list 1 to {MAX_PARTIES} member keys as hex")
    try:
        return tuple(bytes.fromhex(k) for k in roster)
    except ValueError:
        raise FormatError(f"{what}: a roster entry is not hex") from None


_ENROLLED_DOMAIN = b"he_agg.enrolled-committee.v1\0"


class EnrolledContext(_ByCommitteeId):
    """The public description of an enrolled-client committee: what clients and the server need.

    No collective public key exists: each client encrypts under its own secret, which it
    replicated-shared with the members at enrollment (:mod:`he_agg.enrollment`), against a
    public polynomial per round (:mod:`he_agg.hazmat.rounds`). ``committee_id`` binds the
    parameters, (n, t, c), the flooding parameter and the roster.
    """

    __slots__ = ("params", "parties", "threshold", "colluders", "roster", "statistical_bits", "committee_id")

    def __init__(self, params: Params, roster: tuple[bytes, ...], threshold: int, *, colluders: int | None = None,
                 statistical_bits: int = 40) -> None:
        parties = len(roster)
        check_committee_shape(parties, threshold)
        colluders = threshold - 1 if colluders is None else colluders
        if type(colluders) is not int or not 0 <= colluders < threshold:
            raise ValueError(f"the colluder bound c must be in [0, t), got c={colluders}, t={threshold}")
        roster = tuple(bytes(k) for k in roster)
        if any(len(k) != 32 for k in roster) or len(set(roster)) != parties:
            raise ValueError(f"the roster must list {parties} distinct 32-byte member keys")
        if type(statistical_bits) is not int or not 16 <= statistical_bits <= 128:
            raise ValueError("statistical_bits must be in [16, 128]")
        self.params = params
        self.parties = parties
        self.threshold = threshold
        self.colluders = colluders
        self.roster = roster
        self.statistical_bits = statistical_bits
        header = struct.pack("<HHHH", parties, threshold, colluders, statistical_bits)
        self.committee_id = blake3.blake3(_ENROLLED_DOMAIN + params.fingerprint + header + b"".join(roster)).digest()

    def _meta(self) -> dict[str, Any]:
        return {
            "params": self.params.fingerprint.hex(),
            "n": self.params.n,
            "moduli": list(self.params.moduli),
            "scale": self.params.scale,
            "threshold": self.threshold,
            "colluders": self.colluders,
            "roster": [k.hex() for k in self.roster],
            "statistical_bits": self.statistical_bits,
            "committee": self.committee_id.hex(),
        }

    def to_bytes(self) -> bytes:
        return seal_envelope(Kind.PUBLIC_CONTEXT, dict(self._meta(), mode="enrolled"))

    @classmethod
    def from_bytes(cls, data: object, params: Params | None = None) -> "EnrolledContext":
        what = "he_agg enrolled committee context"
        meta = open_envelope(data, Kind.PUBLIC_CONTEXT, what).meta
        if meta.text("mode", 16) != "enrolled":
            raise FormatError(f"{what}: this is a public-key committee's context")
        parsed = _params_from_meta(meta, params, what)
        roster = _roster_from_meta(meta, what)
        try:
            context = cls(parsed, roster, meta.integer("threshold", 1, MAX_PARTIES),
                          colluders=meta.integer("colluders", 0, MAX_PARTIES),
                          statistical_bits=meta.integer("statistical_bits", 16, 128))
        except ValueError as exc:
            raise FormatError(f"{what}: inconsistent committee settings ({exc})") from None
        if context.committee_id != meta.hexbytes("committee", 32):
            raise ParameterMismatchError(f"{what}: committee id does not match its settings")
        return context

    def __repr__(self) -> str:
        return (f"EnrolledContext({self.threshold}-of-{self.parties}, c={self.colluders}, committee "
                f"{self.committee_id[:6].hex()}…, {self.params.describe()})")
