"""The committee's public context: parameters, collective public key, threshold settings.

This is what clients receive. ``to_tenseal()`` gives a public-only TenSEAL context that
encrypts under the committee's collective key, so clients can use unmodified TenSEAL;
``to_bytes()`` ships it. Nothing in it is secret.
"""

from __future__ import annotations

import struct
from typing import Any

import blake3
import numpy as np

from .errors import FormatError, HeAggError, ParameterMismatchError
from .hazmat.noise import NoiseModel
from .hazmat.wire import seal, tenseal as tenseal_wire
from .hazmat.wire.envelope import Kind, body_words, open_envelope, seal_envelope
from .params import Params

__all__ = ["MAX_PARTIES", "PublicContext"]

MAX_PARTIES = 255
_DOMAIN = b"he_agg.committee.v1\0"


class PublicContext:
    """Parameters, collective public key (pk0, pk1) and the committee's (n, t) settings.

    ``secret_terms`` is how many ternary secrets the collective key sums (1 for a trusted
    dealer, n for dealer-free generation): it enters the noise bound.
    ``statistical_bits`` is the flooding security parameter s every decryptor uses.
    """

    __slots__ = ("params", "public_key", "parties", "threshold", "secret_terms", "statistical_bits",
                 "committee_id", "_tenseal")

    def __init__(self, params: Params, public_key: np.ndarray, *, parties: int, threshold: int,
                 secret_terms: int, statistical_bits: int = 40) -> None:
        shape = (2, len(params.moduli), params.n)
        if public_key.shape != shape or public_key.dtype != np.uint64:
            raise ParameterMismatchError(f"public key must be uint64 of shape {shape}, got {public_key.dtype} {public_key.shape}")
        if not 1 <= threshold <= parties <= MAX_PARTIES:
            raise ValueError(f"need 1 <= t <= n <= {MAX_PARTIES}, got t={threshold}, n={parties}")
        if not 1 <= secret_terms <= parties:
            raise ValueError("secret_terms must be between 1 and the number of parties")
        seal.check_residues(public_key, params.moduli, "public key")
        key = np.ascontiguousarray(public_key)
        key.setflags(write=False)
        self.params = params
        self.public_key = key
        self.parties = parties
        self.threshold = threshold
        self.secret_terms = secret_terms
        self.statistical_bits = statistical_bits
        NoiseModel(params, secret_terms, statistical_bits)  # validates the settings
        header = struct.pack("<HHHH", parties, threshold, secret_terms, statistical_bits)
        self.committee_id = blake3.blake3(_DOMAIN + params.fingerprint + header + key.tobytes()).digest()
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
        moduli = meta.integers("moduli", 2, (1 << 61) - 1, max_len=64)
        parsed = Params(n=meta.integer("n", 1024, 32768), moduli=tuple(moduli), scale=meta.number("scale"))
        if parsed.fingerprint != meta.hexbytes("params", 32):
            raise ParameterMismatchError(f"{what}: parameter fingerprint does not match its own parameters")
        if params is not None and parsed != params:
            raise ParameterMismatchError(f"{what}: made for {parsed.describe()}, expected {params.describe()}")
        key = np.array(body_words(body, (2, len(moduli), parsed.n), what))
        parties = meta.integer("parties", 1, MAX_PARTIES)
        threshold = meta.integer("threshold", 1, MAX_PARTIES)
        secret_terms = meta.integer("secret_terms", 1, MAX_PARTIES)
        statistical_bits = meta.integer("statistical_bits", 16, 128)
        if threshold > parties or secret_terms > parties:
            raise FormatError(f"{what}: threshold {threshold} and secret_terms {secret_terms} must not exceed "
                              f"parties {parties}")
        try:
            context = cls(parsed, key, parties=parties, threshold=threshold, secret_terms=secret_terms,
                          statistical_bits=statistical_bits)
        except ValueError as exc:  # a constructor check on parsed fields: the bytes are at fault
            if isinstance(exc, HeAggError):
                raise
            raise FormatError(f"{what}: {exc}") from None
        if context.committee_id != meta.hexbytes("committee", 32):
            raise ParameterMismatchError(f"{what}: committee id does not match the key and settings")
        return context

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicContext) and other.committee_id == self.committee_id

    def __hash__(self) -> int:
        return hash(self.committee_id)

    def __repr__(self) -> str:
        return (f"PublicContext({self.threshold}-of-{self.parties}, committee {self.committee_id[:6].hex()}…, "
                f"{self.params.describe()})")
