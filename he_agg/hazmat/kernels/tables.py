"""Precomputed tables for the kernels, built with Python integers and cached.

Everything returned here is a read-only numpy array shared between callers (cached per
moduli tuple and ring degree with :func:`functools.lru_cache`): never write to it.

NTT tables, one block of ``NTT_TABLE_WORDS`` rows of ``n`` words per prime (the layout
is private to the kernels, see ``csrc/ntt.c``):

====  =========================================================
row   contents
====  =========================================================
0     ``w[k] = psi^bitrev(k)``
1     Shoup companions ``floor(w[k] * 2^64 / q)``
2     ``iw[k] = psi^-bitrev(k)``
3     Shoup companions of row 2
4     ``[n^-1, iw[1] * n^-1, 0, ...]``
5     Shoup companions of row 4
====  =========================================================

``psi`` is the minimal primitive 2n-th root of unity modulo ``q`` (SEAL's choice).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache

import numpy as np

from he_agg.params import is_prime

from he_agg.errors import ParameterError

NTT_TABLE_WORDS = 6
MAX_MODULUS_BITS = 61
MAX_NMOD = 16
MIN_N, MAX_N = 2, 1 << 17

ModuliLike = Sequence[int] | np.ndarray

def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


# -- moduli ------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _checked(moduli: tuple[int, ...]) -> tuple[int, ...]:
    if not 1 <= len(moduli) <= MAX_NMOD:
        raise ParameterError(f"between 1 and {MAX_NMOD} moduli are supported, got {len(moduli)}")
    for index, q in enumerate(moduli):
        if not 3 <= q < 1 << MAX_MODULUS_BITS or q % 2 == 0 or not is_prime(q):
            raise ParameterError(
                f"modulus {index} ({q}) is not an odd prime below 2^{MAX_MODULUS_BITS}"
            )
    if len(set(moduli)) != len(moduli):
        raise ParameterError(f"the moduli are not distinct: {moduli}")
    return moduli


def normalize_moduli(moduli: ModuliLike) -> tuple[int, ...]:
    """The moduli as a tuple of Python ints, checked: distinct odd primes below 2^61."""
    if isinstance(moduli, np.ndarray):
        if moduli.ndim != 1 or moduli.dtype.kind not in "ui":
            raise ParameterError(f"moduli must be a 1-D integer array, got {moduli.dtype} {moduli.shape}")
        key = tuple(int(q) for q in moduli.tolist())
    else:
        try:
            key = tuple(moduli)
        except TypeError:
            raise TypeError("moduli must be a sequence of ints or a 1-D integer array") from None
        for q in key:
            if isinstance(q, bool) or not isinstance(q, (int, np.integer)):
                raise TypeError(f"moduli must be ints, got {type(q).__name__}")
        key = tuple(int(q) for q in key)
    return _checked(key)


@lru_cache(maxsize=256)
def moduli_array(moduli: tuple[int, ...]) -> np.ndarray:
    """The (checked) moduli as a read-only uint64 array."""
    return _readonly(np.array(moduli, dtype=np.uint64))


def check_degree(n: int) -> None:
    """Raise ParameterError unless n is a power of two in [2, 2^17]."""
    if not MIN_N <= n <= MAX_N or n & (n - 1):
        raise ParameterError(f"n = {n} is not a power of two in [{MIN_N}, {MAX_N}]")


@lru_cache(maxsize=256)
def barrett_constants(moduli: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per prime: (mu = floor(2^2k / q), k = bitlen(q), m64 = floor(2^64 / q)) as uint64."""
    ks = [q.bit_length() for q in moduli]
    mu = [(1 << (2 * k)) // q for q, k in zip(moduli, ks)]
    m64 = [(1 << 64) // q for q in moduli]
    return (
        _readonly(np.array(mu, dtype=np.uint64)),
        _readonly(np.array(ks, dtype=np.uint64)),
        _readonly(np.array(m64, dtype=np.uint64)),
    )


# -- NTT -----------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def minimal_root(q: int, n: int) -> int:
    """The minimal primitive 2n-th root of unity mod prime q (q = 1 mod 2n), as SEAL picks."""
    check_degree(n)
    if (q - 1) % (2 * n):
        raise ParameterError(f"modulus {q} is not 1 mod 2n = {2 * n}: no negacyclic NTT of size {n}")
    cofactor = (q - 1) // (2 * n)
    for x in range(2, q):
        root = pow(x, cofactor, q)
        if pow(root, n, q) == q - 1:  # order exactly 2n (2n is a power of two)
            break
    else:  # pragma: no cover - impossible for a prime q = 1 mod 2n
        raise ParameterError(f"no primitive {2 * n}-th root of unity mod {q}")
    square, power, best = root * root % q, root, root
    for _ in range(n - 1):  # the primitive 2n-th roots are the odd powers of root
        power = power * square % q
        best = min(best, power)
    return best


@lru_cache(maxsize=32)
def bitrev_permutation(n: int) -> np.ndarray:
    """bitrev(k) over log2(n) bits for k in [0, n), as a read-only int64 array."""
    check_degree(n)
    bits = n.bit_length() - 1
    k = np.arange(n, dtype=np.int64)
    out = np.zeros(n, dtype=np.int64)
    for b in range(bits):
        out |= ((k >> b) & 1) << (bits - 1 - b)
    return _readonly(out)


def _powers(base: int, q: int, n: int) -> list[int]:
    out, x = [0] * n, 1
    for i in range(n):
        out[i] = x
        x = x * base % q
    return out


def _shoup(values: Sequence[int], q: int) -> list[int]:
    return [(v << 64) // q for v in values]


@lru_cache(maxsize=64)
def _prime_block(q: int, n: int) -> np.ndarray:
    psi = minimal_root(q, n)
    rev = bitrev_permutation(n).tolist()
    pw, ipw = _powers(psi, q, n), _powers(pow(psi, -1, q), q, n)
    w = [pw[r] for r in rev]
    iw = [ipw[r] for r in rev]
    ninv = pow(n, -1, q)
    scalars = [ninv, iw[1] * ninv % q] + [0] * (n - 2)
    rows = [w, _shoup(w, q), iw, _shoup(iw, q), scalars, _shoup(scalars, q)]
    return np.array(rows, dtype=np.uint64)


@lru_cache(maxsize=64)
def _ntt_tables(moduli: tuple[int, ...], n: int) -> np.ndarray:
    check_degree(n)
    return _readonly(np.stack([_prime_block(q, n) for q in moduli]))


def ntt_tables(moduli: ModuliLike, n: int) -> np.ndarray:
    """NTT tables (nmod, NTT_TABLE_WORDS, n) uint64 for the native and numba kernels."""
    return _ntt_tables(normalize_moduli(moduli), int(n))


@lru_cache(maxsize=64)
def ntt_powers(q: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(psi^bitrev(k), psi^-bitrev(k)) for k in [0, n) as object arrays (reference NTT)."""
    block = _prime_block(q, n)
    w = np.array([int(x) for x in block[0].tolist()], dtype=object)
    iw = np.array([int(x) for x in block[2].tolist()], dtype=object)
    w.flags.writeable = False
    iw.flags.writeable = False
    return w, iw


# -- CRT -------------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _crt_tables(moduli: tuple[int, ...]) -> np.ndarray:
    nmod = len(moduli)
    crt = np.zeros((nmod, nmod), dtype=np.uint64)
    for l, q in enumerate(moduli):
        prefix = 1
        for j in range(l):
            crt[l, j] = prefix % q
            prefix *= moduli[j]
        crt[l, l] = pow(prefix % q, -1, q)
    return _readonly(crt)


def crt_tables(moduli: ModuliLike) -> np.ndarray:
    """(nmod, nmod) uint64: crt[l][j] = prod(q_0..q_{j-1}) mod q_l (j < l), crt[l][l] its inverse."""
    return _crt_tables(normalize_moduli(moduli))


@lru_cache(maxsize=256)
def _crt_radix(moduli: tuple[int, ...], scale: float) -> np.ndarray:
    radix, prefix = [], 1
    for q in moduli:
        try:
            radix.append(float(Fraction(prefix) / Fraction(scale)))  # correctly rounded
        except OverflowError:
            raise ParameterError(f"scale {scale!r} is too small for these moduli") from None
        prefix *= q
    return _readonly(np.array(radix, dtype=np.float64))


def crt_radix(moduli: ModuliLike, scale: float) -> np.ndarray:
    """nmod float64: radix[l] = prod(q_0..q_{l-1}) / scale, correctly rounded."""
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0.0:
        raise ParameterError(f"scale must be a positive finite number, got {scale!r}")
    return _crt_radix(normalize_moduli(moduli), scale)
