"""Randomness for secrets and noise: a CSPRNG, keyed streams, and the samplers built on them.

Every secret and every noise value in he_agg comes from here, and everything here comes
from ``os.urandom`` — directly, or through a *keyed stream*: ChaCha20 (from the
``cryptography`` package) keyed by a BLAKE3 key derivation from a 32-byte secret and a
label. Keyed streams make retries safe: the same party secret and the same label (a
ciphertext digest and an active set) give the same noise, so a repeated request gets the
identical share instead of a second, independent one.

numpy is used only for arithmetic on the random bytes, never as a random source.

The one deterministic mode is :func:`INSECURE_deterministic_randomness`, a context manager
for known-answer tests: inside it, :func:`fresh_key` derives keys from a fixed seed.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from typing import Iterator

import blake3
import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = [
    "INSECURE_deterministic_randomness",
    "KeyedStream",
    "cbd",
    "fresh_key",
    "gaussian_integers",
    "ternary",
    "uniform_mod",
]

KEY_BYTES = 32
_state = threading.local()


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
        """``count`` uniform uint64 words."""
        return np.frombuffer(self.read(8 * count), dtype="<u8").astype(np.uint64, copy=False)

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


def gaussian_integers(stream: KeyedStream, count: int, sigma: float) -> tuple[np.ndarray, int]:
    """Integer flooding noise of standard deviation ``sigma``: returns (high, shift).

    The value is ``high · 2^shift + low`` where ``high`` is a rounded continuous Gaussian
    (Box–Muller on 53-bit uniforms) on a grid of 2^shift and ``low`` is uniform in
    [−2^(shift−1), 2^(shift−1)) — returned folded into ``high``'s grid when shift is 0,
    and otherwise added by the caller through :func:`gaussian_residues`. ``shift`` is the
    smallest power of two that keeps every ``high`` exact in float64 (|z| ≤ 8.6 always),
    so the distribution has no gaps at any σ: it is a Gaussian of variance σ² smoothed by
    a uniform of width 2^shift ≪ σ (its extra variance 2^(2·shift)/6 is negligible).
    """
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError("sigma must be positive and finite")
    shift = max(0, math.ceil(math.log2(sigma * 9.0)) - 52)
    pairs = (count + 1) // 2
    raw = stream.words(2 * pairs) >> np.uint64(11)  # 53-bit integers
    u1 = (raw[:pairs].astype(np.float64) + 1.0) * 2.0**-53  # (0, 1]: log is finite
    u2 = raw[pairs:].astype(np.float64) * 2.0**-53
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * math.pi * u2
    z = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]
    high = np.rint(z * (sigma / 2.0**shift)).astype(np.int64)
    return high, shift


def uniform_low_bits(stream: KeyedStream, count: int, shift: int) -> np.ndarray:
    """Uniform integers in [−2^(shift−1), 2^(shift−1)) (int64); zeros when shift is 0."""
    if shift == 0:
        return np.zeros(count, dtype=np.int64)
    words = stream.words(count) & np.uint64((1 << shift) - 1)
    return words.astype(np.int64) - (1 << (shift - 1))
