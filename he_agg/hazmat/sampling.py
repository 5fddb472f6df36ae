"""Randomness for secrets and noise: a CSPRNG, keyed streams, and the samplers built on them.

Every secret and every noise value in he_agg comes from here, and everything here comes
from ``os.urandom`` — directly, or through a *keyed stream*: ChaCha20 (from the
``cryptography`` package) keyed by a BLAKE3 key derivation from a 32-byte secret and a
label. Keyed streams make retries safe: the same party secret and the same label (a
ciphertext digest and an active set) give the same noise, so a repeated request gets the
identical share instead of a second, independent one.

numpy is used only for arithmetic on the random bytes, never as a random source.

Flooding noise comes from :func:`discrete_gaussian`, an exact, integer-only sampler of
D_{Z,σ_actual} (docs/SAMPLER.md); :func:`flooding_max` bounds its samples.

The one deterministic mode is :func:`INSECURE_deterministic_randomness`, a context manager
for known-answer tests: inside it, :func:`fresh_key` derives keys from a fixed seed.
"""

from __future__ import annotations

import contextlib
import decimal
import functools
import math
import os
import threading
from dataclasses import dataclass
from typing import Iterator

import blake3
import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from ..errors import ParameterError
from . import kernels

__all__ = [
    "INSECURE_deterministic_randomness",
    "KeyedStream",
    "DiscreteGaussianPlan",
    "cbd",
    "discrete_gaussian",
    "discrete_gaussian_plan",
    "flooding_max",
    "fresh_key",
    "sigma_actual",
    "ternary",
    "uniform_mod",
]

KEY_BYTES = 32
_state = threading.local()
_ZEROS = memoryview(bytes(1 << 16))  # keystream = ChaCha20 of zeros, 64 KiB per call


def fresh_key() -> bytes:
    """32 bytes from the operating system's CSPRNG (or the test hook's seed, see below)."""
    seed = getattr(_state, "insecure_seed", None)
    if seed is None:
        return os.urandom(KEY_BYTES)
    _state.insecure_counter += 1
    return blake3.blake3(_state.insecure_counter.to_bytes(8, "little"), key=seed).digest()


@contextlib.contextmanager
def INSECURE_deterministic_randomness(seed: bytes) -> Iterator[None]:  # noqa: N802 - the name is a warning
    """Test hook: make :func:`fresh_key` deterministic in this thread. Never use in production."""
    if len(seed) != KEY_BYTES:
        raise ValueError(f"seed must be {KEY_BYTES} bytes")
    previous = getattr(_state, "insecure_seed", None), getattr(_state, "insecure_counter", 0)
    _state.insecure_seed, _state.insecure_counter = seed, 0
    try:
        yield
    finally:
        _state.insecure_seed, _state.insecure_counter = previous


class KeyedStream:
    """A ChaCha20 keystream keyed by BLAKE3-derive(key, label): an extendable-output PRF.

    ``KeyedStream(key, label)`` is deterministic in (key, label); ``KeyedStream.fresh()``
    is keyed from the CSPRNG. Distinct labels give independent streams.
    """

    def __init__(self, key: bytes, label: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"stream key must be {KEY_BYTES} bytes")
        derived = blake3.blake3(label, key=key).digest()
        nonce = bytes(16)  # each derived key is used for exactly one stream
        self._encryptor = Cipher(algorithms.ChaCha20(derived, nonce), mode=None).encryptor()

    @classmethod
    def fresh(cls, label: bytes = b"he_agg.fresh") -> "KeyedStream":
        return cls(fresh_key(), label)

    def read(self, nbytes: int) -> bytes:
        return self._encryptor.update(bytes(nbytes))

    def words(self, count: int) -> np.ndarray:
        """``count`` uniform uint64 words (the next 8·count keystream bytes, little-endian)."""
        out = np.empty(count, dtype="<u8")
        self._fill(out.data.cast("B"))
        return out.astype(np.uint64, copy=False)

    def _fill(self, buf: memoryview) -> None:
        """Overwrite buf with the next len(buf) keystream bytes (as read() would return
        them), a cached block of zeros at a time: no zero input and no output bytes as
        large as buf (3x faster than read() for megabytes)."""
        step = len(_ZEROS)
        for start in range(0, len(buf), step):
            piece = buf[start : start + step]
            self._encryptor.update_into(_ZEROS[: len(piece)], piece)

    def __repr__(self) -> str:
        return "KeyedStream(<secret>)"


def uniform_mod(stream: KeyedStream, moduli: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Uniform residues of ``shape`` = (..., L, N), prime l on axis -2: exact rejection sampling."""
    out = np.empty(shape, dtype=np.uint64)
    for l, q in enumerate(moduli):
        target = out[..., l, :]
        need = target.size
        if need == 0:
            continue
        mask = np.uint64((1 << q.bit_length()) - 1)
        got: list[np.ndarray] = []
        have = 0
        while have < need:
            draw = stream.words(int((need - have) * 1.1) + 16) & mask
            draw = draw[draw < np.uint64(q)]
            got.append(draw)
            have += draw.size
        target[...] = np.concatenate(got)[:need].reshape(target.shape)
    return out


def ternary(stream: KeyedStream, count: int) -> np.ndarray:
    """``count`` independent uniform values in {-1, 0, 1} (int64): bytes < 255, mod 3."""
    parts: list[np.ndarray] = []
    have = 0
    while have < count:
        raw = np.frombuffer(stream.read(int((count - have) * 1.01) + 16), dtype=np.uint8)
        raw = raw[raw < 255]
        parts.append(raw)
        have += raw.size
    return (np.concatenate(parts)[:count] % 3).astype(np.int64) - 1


def cbd(stream: KeyedStream, count: int, k: int = 21) -> np.ndarray:
    """Centred binomial: popcount(k bits) − popcount(k bits), variance k/2 (SEAL's error law)."""
    if not 1 <= k <= 32:
        raise ValueError("k must be in [1, 32]")
    words = stream.words(count)
    mask = np.uint64((1 << k) - 1)
    a = np.bitwise_count(words & mask).astype(np.int64)
    b = np.bitwise_count((words >> np.uint64(32)) & mask).astype(np.int64)
    return a - b


# -- exact discrete Gaussian (the flooding sampler; docs/SAMPLER.md) ---------------------------

#: Requested σ the exact sampler accepts: [2, 2^64] (and σ_actual of 2^64, a hair above).
DG_SIGMA_MIN, DG_SIGMA_MAX = 2.0, 2.0**64 * (1 + 2.0**-40)
#: The base table is cut where its tail mass is at most 2^-DG_TAIL_BITS.
DG_TAIL_BITS = 100
_DG_CHUNK_WORDS = 1 << 16  # 512 KiB of keystream per kernel call (4 words per trial)
_ONE127 = 1 << 127


@dataclass(frozen=True)
class DiscreteGaussianPlan:
    """Everything the exact sampler needs for one requested σ (docs/SAMPLER.md §1).

    The sampler outputs D_{Z,σ_actual} (up to the bound of docs/SAMPLER.md) with
    σ_actual = 2^shift / sqrt(2·κ·ln 2), κ = kappa/2^64; ``rows`` is X, the largest base
    value, so every |sample| ≤ ``max_abs`` = (X+1)·2^shift − 1. ``words`` is the table
    handed to the kernels (read-only uint64).
    """

    sigma: float
    sigma_actual: float
    shift: int
    kappa: int
    rows: int
    max_abs: int
    words: np.ndarray

    def __repr__(self) -> str:
        return f"DiscreteGaussianPlan(sigma={self.sigma!r}, sigma_actual={self.sigma_actual!r})"


def _decimal_context() -> decimal.Context:
    return decimal.Context(prec=90, rounding=decimal.ROUND_HALF_EVEN)


def _round_scaled(value: decimal.Decimal, bits: int) -> int:
    """round(value · 2^bits) to the nearest integer (value ≥ 0)."""
    with decimal.localcontext(_decimal_context()):
        return int((value * (decimal.Decimal(2) ** bits)).to_integral_value(rounding=decimal.ROUND_HALF_EVEN))


def _split(value: int, low_bits: int) -> tuple[int, int]:
    return value >> low_bits, value & ((1 << low_bits) - 1)


@functools.lru_cache(maxsize=1)
def _fixed_constants() -> tuple[list[list[int]], list[int], list[int]]:
    """The acceptance step's constants, rounded to nearest (docs/SAMPLER.md §3):
    tables T_j[i] = 2^(−i·16^−j) (j = 1..DG_TABLES, i < 16) in Q127; the Taylor
    coefficients c_k = (ln 2)^k / k! of 2^−r, k < DG_POLY_WIDE in Q127, the rest up to
    DG_POLY in Q64."""
    with decimal.localcontext(_decimal_context()):
        d = decimal.Decimal
        ln2 = d(2).ln()
        radix = 1 << kernels.DG_TABLE_BITS
        tables = [[_round_scaled((-ln2 * i / d(radix) ** j).exp(), 127) for i in range(radix)]
                  for j in range(1, kernels.DG_TABLES + 1)]
        coeffs = [ln2**k / math.factorial(k) for k in range(kernels.DG_POLY + 1)]
        wide = [_round_scaled(c, 127) for c in coeffs[: kernels.DG_POLY_WIDE]]
        narrow = [_round_scaled(c, 64) for c in coeffs[kernels.DG_POLY_WIDE :]]
        return tables, wide, narrow


@functools.lru_cache(maxsize=256)
def discrete_gaussian_plan(sigma: float) -> DiscreteGaussianPlan:
    """The exact sampler's parameters for a requested σ in [2, 2^64] (σ_actual ≥ σ)."""
    sigma = float(sigma)
    if not (math.isfinite(sigma) and DG_SIGMA_MIN <= sigma <= DG_SIGMA_MAX):
        raise ParameterError(f"sigma must be in [2, 2^64], got {sigma!r}")
    mantissa, exponent = math.frexp(sigma)  # σ = m·2^e, m in [1/2, 1)
    shift = exponent - 2  # σ_base = σ / 2^shift in [2, 4)
    with decimal.localcontext(_decimal_context()):
        d = decimal.Decimal
        ln2 = d(2).ln()
        base = d(mantissa) * 4
        kappa = int((d(2) ** 64 / (2 * base * base * ln2)).to_integral_value(rounding=decimal.ROUND_FLOOR))
        k = d(kappa) / d(2) ** 64
        actual = d(2) ** shift / (2 * k * ln2).sqrt()
        rows = math.isqrt(DG_TAIL_BITS * (1 << 64) // kappa)  # X + 1 ≥ sqrt(tail/κ)
        while (rows * rows) * kappa < DG_TAIL_BITS << 64:
            rows += 1
        rows -= 1  # X: κ·(X+1)² ≥ DG_TAIL_BITS
        if rows >= kernels.DG_ROWS:
            raise AssertionError("base table longer than DG_ROWS")  # cannot happen for σ_base < 4
        weights, x = [], 0
        while True:
            w = (-(k * x * x) * ln2).exp()
            weights.append(w)
            if k * x * x > 4 * DG_TAIL_BITS:
                break
            x += 1
        total = sum(weights, d(0))
        tails, acc = [], d(0)
        for w in reversed(weights):
            tails.append(acc)
            acc += w
        tails.reverse()  # tails[i] = Σ_{j > i} w_j
        table = [_round_scaled(tails[i] / total, 96) if i < rows else 0 for i in range(kernels.DG_ROWS)]
    sigma_up = float(actual)
    if decimal.Decimal(sigma_up) < actual:
        sigma_up = math.nextafter(sigma_up, math.inf)
    tables, wide, narrow = _fixed_constants()
    flat = [shift, kappa]
    for t in table:
        flat.extend(_split(t, 32))
    for c in [c for row in tables for c in row] + wide:
        flat.extend(_split(c, 64))
    flat.extend(narrow)
    words = np.array(flat, dtype=np.uint64)
    words.flags.writeable = False
    return DiscreteGaussianPlan(sigma, sigma_up, shift, kappa, rows, ((rows + 1) << shift) - 1, words)


def sigma_actual(sigma: float) -> float:
    """The standard deviation parameter the exact sampler really uses for a requested σ
    (≥ σ, larger by a relative 2^-61 at most; rounded up to a float)."""
    return discrete_gaussian_plan(sigma).sigma_actual


def flooding_max(sigma: float) -> int:
    """A hard bound on |sample| of :func:`discrete_gaussian` for this σ: (X+1)·2^shift − 1.

    Non-decreasing in σ, so it may be called with the requested σ or with
    :func:`sigma_actual` of it; about 12.5·σ (never above 24.5·σ)."""
    return discrete_gaussian_plan(sigma).max_abs


def discrete_gaussian(stream: KeyedStream, count: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """``count`` integers from D_{Z,σ_actual} as (high, low) int64: value = high·2^32 + low,
    low in [0, 2^32). Integer-only, the same bits on every machine and backend
    (:func:`he_agg.hazmat.kernels.discrete_gaussian_from_words`); docs/SAMPLER.md states
    the distribution and its distance to the ideal one. Four keystream words per trial,
    about 1.1–1.2 trials per value; words are wiped after use."""
    if count < 0:
        raise ParameterError(f"count must be non-negative, got {count}")
    plan = discrete_gaussian_plan(sigma)
    high = np.empty(count, dtype=np.int64)
    low = np.empty(count, dtype=np.int64)
    have = 0
    while have < count:
        trials = int((count - have) * 1.3) + 16
        words = stream.words(min(4 * trials, _DG_CHUNK_WORDS))
        got, _, _ = kernels.discrete_gaussian_from_words(
            words, count - have, plan.words, out_high=high[have:], out_low=low[have:])
        words.fill(0)
        have += got.size
    return high, low
