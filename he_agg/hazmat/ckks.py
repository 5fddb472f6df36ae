"""CKKS decoding in SEAL's slot order, and the small-integer ↔ RNS conversions around it.

After decryption a ciphertext yields a polynomial m (CRT-lifted, centred, divided by the
scale: :func:`he_agg.hazmat.kernels.crt_to_double`). Slot i holds m(ζ^(3^i mod 2N)) with
ζ = exp(iπ/N), for i in [0, N/2); real data is the real part. Evaluating m at every odd
power ζ^(2j+1) is one FFT of the "twisted" coefficients m_k·ζ^k, and SEAL's slot i is
the evaluation at j = (3^i mod 2N − 1)/2.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import kernels

__all__ = ["decode", "signed_to_rns", "slot_indices"]


@lru_cache(maxsize=8)
def slot_indices(n: int) -> np.ndarray:
    """j such that SEAL's slot i is the evaluation at ζ^(2j+1), for i in [0, N/2)."""
    exponents = _slot_exponents(n)
    out = (exponents - 1) // 2
    out.setflags(write=False)
    return out


def _slot_exponents(n: int) -> np.ndarray:
    exponents = np.empty(n // 2, dtype=np.int64)
    power = 1
    for i in range(n // 2):
        exponents[i] = power
        power = power * 3 % (2 * n)
    return exponents


@lru_cache(maxsize=8)
def _half_plan(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Twist ζ^k (k < N/2) and, per slot, the index j into the half-size transform.

    For real m, m(ζ^e) with e ≡ 1 (mod 4), e = 4j+1, equals Σ_{k<N/2} (m_k + i·m_{k+N/2})·ζ^k·ω^{jk}
    with ω = ζ^4 (because ζ^{eN/2} = i): one complex FFT of size N/2. An exponent
    e ≡ 3 (mod 4) is the conjugate of the evaluation at 2N − e ≡ 1 (mod 4), and a real
    slot only needs the real part, which conjugation keeps.
    """
    exponents = _slot_exponents(n)
    folded = np.where(exponents % 4 == 1, exponents, 2 * n - exponents)
    index = (folded - 1) // 4
    twist = np.exp(1j * np.pi * np.arange(n // 2) / n)
    twist.setflags(write=False)
    index.setflags(write=False)
    return twist, index


def decode(coefficients: np.ndarray) -> np.ndarray:
    """Real slot values of polynomials given as float coefficients, shape (..., N) → (..., N/2)."""
    n = coefficients.shape[-1]
    half = n // 2
    twist, index = _half_plan(n)
    packed = (coefficients[..., :half] + 1j * coefficients[..., half:]) * twist
    evaluations = np.fft.ifft(packed, axis=-1) * half
    return evaluations.real[..., index]


def signed_to_rns(values: np.ndarray, moduli: tuple[int, ...]) -> np.ndarray:
    """Signed integers (int64 of any magnitude, shape (..., N)) → residues (..., L, N)
    modulo each prime (:func:`he_agg.hazmat.kernels.signed_to_rns`)."""
    return kernels.signed_to_rns(np.asarray(values, dtype=np.int64), moduli)


def scaled_to_rns(high: np.ndarray, shift: int, low: np.ndarray, moduli: tuple[int, ...]) -> np.ndarray:
    """Residues of high·2^shift + low for int64 arrays high, low of shape (..., N)."""
    out = signed_to_rns(high, moduli)
    if shift:
        kernels.mul_scalar(out, out, np.array([pow(2, shift, q) for q in moduli], dtype=np.uint64), moduli)
        kernels.add(out, out, signed_to_rns(low, moduli), moduli)
    return out
