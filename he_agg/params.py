"""CKKS encryption parameters: ring degree, RNS primes, scale — validated at construction.

The primes are chosen exactly as SEAL's ``CoeffModulus::Create`` chooses them, so a
:class:`Params` made from bit sizes describes the same ring as a TenSEAL context made
from the same bit sizes (and :meth:`Params.from_tenseal` reads them from a context).

The default preset, :data:`AGGREGATION`, is N=8192 with primes [60, 60, 60] and scale
2^90. Why: a ciphertext lives on the two data primes (Q ≈ 2^120; the third prime is
SEAL's special key-level prime). A value x is stored as round(x·scale), and the centred
lift recovers it while |x·scale| < Q/2, so sums up to |x| < 2^29 decrypt (2^28 with a
safety bit). Threshold decryption adds flooding noise of standard deviation σ ≈ 2^s·B
(s = 40 statistical bits, B the aggregate's noise bound, see
:mod:`he_agg.hazmat.noise`); its effect on a decrypted value is about σ·√(N·t)/scale.
At scale 2^80 that exceeds 1e-6 for a 1,000-client sum; at 2^90 it is about 1e-7.
Raising the scale buys precision and costs headroom one-for-one (bits).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Sequence

from .errors import ParameterError

__all__ = [
    "AGGREGATION",
    "COMPACT",
    "ENROLLED",
    "MAX_MODULUS_BITS_128",
    "PK_COMPACT",
    "Params",
    "is_prime",
    "seal_primes",
]

#: Largest total coefficient-modulus size (bits, special prime included) that keeps
#: 128-bit classical security for ternary secrets (HomomorphicEncryption.org standard,
#: Table 1; the same table SEAL enforces).
MAX_MODULUS_BITS_128: dict[int, int] = {
    1024: 27,
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
}

#: SEAL accepts primes of at most 60 bits (its Modulus limit is 61 bits).
MAX_PRIME_BITS = 60
_CKKS_SCHEME_ID = 2  # SEAL's scheme_type::ckks


def is_prime(value: int) -> bool:
    """Deterministic Miller–Rabin, exact for every value below 3.3·10^24."""
    if value < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for p in small:
        if value % p == 0:
            return value == p
    d, r = value - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in small:
        x = pow(a, d, value)
        if x in (1, value - 1):
            continue
        for _ in range(r - 1):
            x = x * x % value
            if x == value - 1:
                break
        else:
            return False
    return True


def seal_primes(n: int, bit_sizes: Sequence[int]) -> tuple[int, ...]:
    """The primes SEAL's ``CoeffModulus::Create(n, bit_sizes)`` returns.

    For each distinct size b asked for k times, SEAL takes the k largest primes
    q < 2^b with q ≡ 1 (mod 2n); the positions asking for b receive them smallest first.
    """
    _check_degree(n)
    for bits in bit_sizes:
        if not 2 <= bits <= MAX_PRIME_BITS:
            raise ParameterError(f"prime bit size {bits} is outside SEAL's range [2, {MAX_PRIME_BITS}]")
    step = 2 * n
    pools: dict[int, list[int]] = {}
    for bits, count in Counter(bit_sizes).items():
        found: list[int] = []
        candidate = (1 << bits) - step + 1  # largest value ≡ 1 (mod 2n) below 2^bits
        while len(found) < count:
            if candidate < (1 << (bits - 1)):
                raise ParameterError(f"not enough {bits}-bit primes ≡ 1 mod {step}")
            if is_prime(candidate):
                found.append(candidate)
            candidate -= step
        pools[bits] = found  # descending
    return tuple(pools[bits].pop() for bits in bit_sizes)


def _check_degree(n: int) -> None:
    if n not in MAX_MODULUS_BITS_128:
        raise ParameterError(
            f"poly_modulus_degree {n} is not supported; choose one of {sorted(MAX_MODULUS_BITS_128)}"
        )


def parms_id(n: int, moduli: Iterable[int]) -> bytes:
    """SEAL's parms_id for CKKS parameters at the level holding exactly ``moduli``.

    SEAL hashes the u64 words [scheme, n, q_0 … q_{L-1}, plain_modulus=0] with BLAKE2b-256.
    """
    words = [_CKKS_SCHEME_ID, n, *moduli, 0]
    return hashlib.blake2b(struct.pack(f"<{len(words)}Q", *words), digest_size=32).digest()


@dataclass(frozen=True)
class Params:
    """CKKS parameters: ring degree ``n``, RNS ``moduli`` (special prime last), ``scale``.

    Construction validates everything: ``n`` a supported power of two, every modulus a
    distinct prime ≡ 1 (mod 2n) of at most 60 bits, the total size within the 128-bit
    security bound, and a scale that leaves headroom below the data modulus.
    """

    n: int
    moduli: tuple[int, ...]
    scale: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "moduli", tuple(int(q) for q in self.moduli))
        object.__setattr__(self, "scale", float(self.scale))
        _check_degree(self.n)
        moduli = self.moduli
        if len(moduli) < 2:
            raise ParameterError(
                "need at least two primes: one or more data primes and SEAL's special prime (last)"
            )
        if len(set(moduli)) != len(moduli):
            raise ParameterError("the primes must be distinct")
        for q in moduli:
            if q.bit_length() > MAX_PRIME_BITS:
                raise ParameterError(f"prime {q} has {q.bit_length()} bits; SEAL allows at most {MAX_PRIME_BITS}")
            if q % (2 * self.n) != 1:
                raise ParameterError(f"{q} is not ≡ 1 mod 2N = {2 * self.n}: no negacyclic NTT exists")
            if not is_prime(q):
                raise ParameterError(f"{q} is not prime")
        bound = MAX_MODULUS_BITS_128[self.n]
        if self.total_bits > bound:
            raise ParameterError(
                f"total modulus size {self.total_bits} bits exceeds the 128-bit security bound of "
                f"{bound} bits for N={self.n} (HomomorphicEncryption.org standard); "
                "use fewer or smaller primes, or a larger N"
            )
        if not (math.isfinite(self.scale) and self.scale >= 1.0):
            raise ParameterError(f"scale must be a finite number >= 1, got {self.scale!r}")
        headroom = self.data_bits - 1 - math.log2(self.scale)
        if headroom < 1:
            raise ParameterError(
                f"scale 2^{math.log2(self.scale):.1f} leaves no headroom below the "
                f"{self.data_bits}-bit data modulus; lower the scale or add a data prime"
            )

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_bit_sizes(cls, n: int, bit_sizes: Sequence[int], scale: float) -> "Params":
        """Parameters with the primes SEAL/TenSEAL pick for ``coeff_mod_bit_sizes``."""
        _check_degree(n)
        total = sum(bit_sizes)
        if total > MAX_MODULUS_BITS_128[n]:  # refuse before searching for primes
            raise ParameterError(
                f"total modulus size {total} bits exceeds the 128-bit security bound of "
                f"{MAX_MODULUS_BITS_128[n]} bits for N={n} (HomomorphicEncryption.org standard)"
            )
        return cls(n=n, moduli=seal_primes(n, bit_sizes), scale=scale)

    @classmethod
    def from_tenseal(cls, context: object) -> "Params":
        """Read N, primes and global scale from a TenSEAL context (or its serialized bytes)."""
        from .hazmat.wire.tenseal import read_context_params

        return read_context_params(context)

    # -- derived values -------------------------------------------------------------------

    @property
    def slots(self) -> int:
        """Values one ciphertext carries (N/2)."""
        return self.n // 2

    @property
    def data_moduli(self) -> tuple[int, ...]:
        """The primes a fresh ciphertext lives on (all but SEAL's special prime)."""
        return self.moduli[:-1]

    @property
    def special_modulus(self) -> int:
        return self.moduli[-1]

    @property
    def total_bits(self) -> int:
        return sum(q.bit_length() for q in self.moduli)

    @property
    def data_bits(self) -> float:
        """log2 of the data modulus Q = prod(data primes)."""
        return sum(math.log2(q) for q in self.data_moduli)

    @cached_property
    def data_modulus(self) -> int:
        return math.prod(self.data_moduli)

    @cached_property
    def headroom_bits(self) -> float:
        """log2 of the largest |value| that still decrypts: Q / (2·scale)."""
        return self.data_bits - 1 - math.log2(self.scale)

    @cached_property
    def key_parms_id(self) -> bytes:
        """SEAL parms_id of the key level (every prime): keys live here."""
        return parms_id(self.n, self.moduli)

    @cached_property
    def data_parms_id(self) -> bytes:
        """SEAL parms_id of the first data level: fresh ciphertexts live here."""
        return parms_id(self.n, self.data_moduli)

    def level_parms_ids(self) -> list[bytes]:
        """parms_id of every level, key level first, down to one prime."""
        return [parms_id(self.n, self.moduli[:k]) for k in range(len(self.moduli), 0, -1)]

    @cached_property
    def fingerprint(self) -> bytes:
        """32 bytes naming these parameters, scale included (he_agg wire objects carry it)."""
        body = struct.pack("<4sQd", b"HEAP", self.n, self.scale) + self.key_parms_id
        return hashlib.blake2b(body, digest_size=32, person=b"he_agg.params").digest()

    def describe(self) -> str:
        bits = [q.bit_length() for q in self.moduli]
        return (
            f"N={self.n}, primes {bits} bits ({self.total_bits} of {MAX_MODULUS_BITS_128[self.n]} "
            f"allowed for 128-bit security), scale 2^{math.log2(self.scale):g}, "
            f"headroom 2^{self.headroom_bits:.1f}"
        )

    def to_tenseal_bit_sizes(self) -> list[int]:
        return [q.bit_length() for q in self.moduli]


#: The default preset: N=8192, primes [60, 60, 60] (two data primes + special prime),
#: scale 2^90 — room for 40-bit flooding noise and sums up to about 2^28.
AGGREGATION = Params.from_bit_sizes(8192, [60, 60, 60], 2.0**90)

#: The enrolled-client preset: the same ring and primes with scale 2^94. Enrolled members
#: flood for a whole key epoch (σ ≈ 2^61 at 1,000 clients and 2^30 coefficients answered,
#: see :class:`he_agg.hazmat.noise.EnrolledNoiseModel`); 2^94 keeps a 1,000-client sum of
#: |x| ≤ 1 within 1e-7 and leaves sums up to about 2^24.
ENROLLED = Params.from_bit_sizes(8192, [60, 60, 60], 2.0**94)

#: The compact enrolled preset for dense packing: data primes of 52 and 51 bits (103 bits of
#: Q, the least that holds a 1,000-client sum of |x| ≤ 1 at epoch-sized flooding) and scale
#: 2^86. With packed residues an upload is 12.9 bytes per value; the error bound of a
#: 1,000-client dense sum at σ ≈ 2^60.7 and t = 3 is 3.8e-7. Sums must stay below 2^15.
COMPACT = Params.from_bit_sizes(8192, [52, 51, 60], 2.0**86)

#: The compact public-key preset for dense packing (:func:`he_agg.client.encrypt` with
#: ``packing="dense"``): data primes of 48 and 47 bits (Q ≈ 2^95), SEAL's 60-bit special prime,
#: scale 2^82. With packed residues an upload is 2·95/8 = 23.75 bytes per value (plus a
#: ~200-byte envelope). Derivation (:class:`he_agg.hazmat.noise.NoiseModel`, s = f = 40): the
#: members' flooding for K = 1,000 clients over 2^20 values is σ ≈ 2^56.3 for a dealer-free
#: (5, 3) committee (h = 50 secret terms), and the dense error bound √(tσ² + K·v)·tail/Δ is
#: ≤ 1e-6 from Δ = 2^80.3 (2^81.6 for a dealer-free (7, 4) committee; 2^78.7 for (3, 2)).
#: Δ = 2^82 gives 2.9e-7 at (5, 3) and leaves 12 bits of headroom: a 1,000-client sum of
#: |x| ≤ 2 still decrypts (check_range with max_clients=1000).
PK_COMPACT = Params.from_bit_sizes(8192, [48, 47, 60], 2.0**82)
