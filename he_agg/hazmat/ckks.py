"""CKKS decoding in SEAL's slot order, and the small-integer ↔ RNS conversions around it.

After decryption a ciphertext yields a polynomial m (CRT-lifted, centred, divided by the
scale: :func:`he_agg.hazmat.kernels.crt_to_double`). Slot i holds m(ζ^(3^i mod 2N)) with
ζ = exp(iπ/N), for i in [0, N/2); real data is the real part. Evaluating m at every odd
power ζ^(2j+1) is one FFT of the "twisted" coefficients m_k·ζ^k, and SEAL's slot i is
the evaluation at j = (3^i mod 2N − 1)/2.

Dense (coefficient) packing skips the transform: value k is coefficient k
(:func:`encode_dense_split`), and the decrypted coefficients divided by the scale are the values.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..errors import PackingError, SlotRangeError
from . import kernels
from .sampling import KeyedStream

__all__ = [
    "EncodedCoefficients",
    "decode",
    "encode",
    "encode_dense_split",
    "encode_rns",
    "encode_split",
    "round_split",
    "scaled_to_rns",
    "signed_to_rns",
    "slot_indices",
    "unit_coefficients",
]

#: Low parts of a split encoding stay below 2^LOW_BITS in magnitude (room to add small noise in int64).
LOW_BITS = 61


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


def unit_coefficients(values: np.ndarray) -> np.ndarray:
    """The exact inverse of :func:`decode` in float64: real slots (..., N/2) → coefficients (..., N).

    SEAL's slot i becomes the evaluation at ζ^(3^i mod 2N) (its conjugate for exponents
    ≡ 3 mod 4, the same value for real slots), so the N/2 evaluations at ζ^(4j+1) are a
    permutation of the slots and one half-size complex FFT inverts them. The result is
    the float64 transform: its error is about 2^-52·log2(N)·max|value| per coefficient.
    """
    z = np.asarray(values)
    if z.dtype.kind not in "biuf":
        raise PackingError(f"slot values must be real numbers, got dtype {z.dtype}")
    half = z.shape[-1] if z.ndim else 0
    if half < 1 or half & (half - 1):
        raise PackingError(f"the last axis holds {half} slots; it must be a power of two (N/2)")
    n = 2 * half
    twist, index = _half_plan(n)
    evaluations = np.zeros(z.shape, dtype=np.complex128)
    evaluations[..., index] = z
    packed = np.fft.fft(evaluations, axis=-1) * (np.conj(twist) / half)
    out = np.empty(z.shape[:-1] + (n,), dtype=np.float64)
    out[..., :half] = packed.real
    out[..., half:] = packed.imag
    return out


class EncodedCoefficients:
    """Integer coefficients held exactly as ``high · 2^shift + low`` (int64 arrays, shape (..., N)).

    ``shift`` is 0 (and ``high`` all zero) when every coefficient fits below 2^LOW_BITS;
    otherwise it is the smallest shift that keeps |high| < 2^LOW_BITS. |low| < 2^shift
    (≤ 2^LOW_BITS when shift is 0), so small noise can be added to ``low`` in int64.
    """

    __slots__ = ("high", "shift", "low")

    def __init__(self, high: np.ndarray, shift: int, low: np.ndarray) -> None:
        self.high, self.shift, self.low = high, shift, low

    def to_rns(self, moduli: tuple[int, ...]) -> np.ndarray:
        """Residues (..., L, N) of every coefficient modulo each prime (exact)."""
        if self.shift == 0:
            return signed_to_rns(self.low, moduli)
        return scaled_to_rns(self.high, self.shift, self.low, moduli)

    def to_int(self) -> np.ndarray:
        """The coefficients as Python integers (object array; for tests and small inputs)."""
        return self.high.astype(object) * (1 << self.shift) + self.low.astype(object)

    def wipe(self) -> None:
        self.high.fill(0)
        self.low.fill(0)

    def __repr__(self) -> str:
        return f"EncodedCoefficients(shape {self.low.shape}, shift {self.shift})"


def encode_split(values: np.ndarray, scale: float, stream: KeyedStream) -> EncodedCoefficients:
    """CKKS-encode real slots at ``scale`` with randomized rounding, exactly as high·2^shift + low.

    Each float64 coefficient y = unit_coefficients(values)·scale is rounded exactly as
    :func:`round_split` describes. Where |y| ≥ 2^53 the float has no fractional bits and
    the rounding is exact; the float transform's own error (see :func:`unit_coefficients`)
    is then the larger one.
    """
    scale = _check_scale(scale)
    y = unit_coefficients(values)
    with np.errstate(over="ignore", invalid="ignore"):
        y *= scale
    return round_split(y, stream)


def encode_dense_split(values: np.ndarray, scale: float, stream: KeyedStream) -> EncodedCoefficients:
    """Dense (coefficient) encoding: value k of each row becomes coefficient k, x·scale rounded.

    ``values`` (..., N) real numbers. No transform: for a power-of-two ``scale`` (every
    preset) y = x·scale is exact in float64 (a power-of-two product of a finite float that
    stays finite), and :func:`round_split` rounds it to ⌊y⌋ or ⌈y⌉ exactly, up with
    probability frac(y) (to within 2^-64). For another scale the product is rounded once
    in float64 (relative 2^-53) before that.
    """
    scale = _check_scale(scale)
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise PackingError(f"values must be real numbers, got dtype {array.dtype}")
    y = np.array(array, dtype=np.float64, copy=True)
    with np.errstate(over="ignore", invalid="ignore"):
        y *= scale
    return round_split(y, stream)


def _check_scale(scale: float) -> float:
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise PackingError(f"scale must be positive and finite, got {scale!r}")
    return scale


def round_split(y: np.ndarray, stream: KeyedStream) -> EncodedCoefficients:
    """Randomized rounding of float64 ``y`` (consumed: wiped) to integers high·2^shift + low, exactly.

    Each y is split exactly into high·2^shift (the bits at and above 2^shift, truncated
    toward zero) and a float remainder r of the same sign; |r| is rounded up with
    probability frac(|r|) (w < ⌊frac(|r|)·2^64⌋, w a uniform 64-bit stream word: bias below
    2^-64 per coefficient) and r takes its sign back — unbiased, and exact: |r| − ⌊|r|⌋ is
    computed exactly, where r − ⌊r⌋ is not for tiny negative r (1 − 2^-80 is 1.0 in float64).
    One stream word per coefficient is drawn whatever the values, so consumption is
    deterministic.
    """
    if not np.isfinite(y).all():
        y.fill(0.0)
        raise PackingError("a value is not finite, or too large for the scale")
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    shift = 0 if peak < 2.0**LOW_BITS else math.frexp(peak)[1] - LOW_BITS
    if shift:
        high_f = np.trunc(y * 2.0**-shift)  # exact: a power-of-two division of numbers ≥ 2^shift
        y -= high_f * 2.0**shift  # exact: the bits of y below 2^shift
        high = high_f.astype(np.int64)
        high_f.fill(0.0)
    else:
        high = np.zeros(y.shape, dtype=np.int64)
    negative = y < 0
    np.abs(y, out=y)
    low_f = np.floor(y)
    y -= low_f  # the fractional part of |r|, exact (Sterbenz for |r| ≥ 1; floor 0 below), in [0, 1)
    words = stream.words(y.size).reshape(y.shape)
    y *= 2.0**64  # frac·2^64 ≤ 2^64 − 2^11: exact, and exact as an integer when frac has ≤ 64 fractional bits
    up = words < y.astype(np.uint64)
    words.fill(0)
    y.fill(0.0)
    low = low_f.astype(np.int64)
    low_f.fill(0.0)
    low += up
    np.negative(low, out=low, where=negative)
    negative.fill(False)
    return EncodedCoefficients(high, shift, low)


def encode(values: np.ndarray, scale: float, stream: KeyedStream) -> np.ndarray:
    """The exact inverse of :func:`decode` at ``scale`` as int64 coefficients (..., N),
    randomized rounding (:func:`encode_split`). SlotRangeError if a coefficient would not fit
    below 2^LOW_BITS (use :func:`encode_rns` or :func:`encode_split` for large scales)."""
    encoded = encode_split(values, scale, stream)
    if encoded.shift:
        peak = np.abs(encoded.high)
        index = int(np.argmax(peak.reshape(-1)))
        encoded.wipe()
        raise SlotRangeError(
            f"coefficient {index} needs more than {LOW_BITS} bits at scale 2^{math.log2(scale):.1f}; "
            "encode to residues (encode_rns) instead", index, 2.0**LOW_BITS)
    return encoded.low


def encode_rns(values: np.ndarray, scale: float, stream: KeyedStream, moduli: tuple[int, ...],
               noise: np.ndarray | None = None) -> np.ndarray:
    """Encode real slots (..., N/2) at ``scale`` into residues (..., L, N) (coefficient form).

    ``noise``: optional int64 (..., N) added to the coefficients (small: |noise| < 2^61).
    SlotRangeError if a coefficient (noise included) reaches Q/2, Q the product of ``moduli``:
    its centred lift would wrap around.
    """
    encoded = encode_split(values, scale, stream)
    try:
        if noise is not None:
            encoded.low += noise
        limit = math.prod(moduli) // 2
        peak = np.abs(encoded.high).max(initial=0) * 2.0**encoded.shift + np.abs(encoded.low).max(initial=0) + 1.0
        if peak >= float(limit) * (1 - 2.0**-40):
            biggest = int(np.argmax(np.abs(encoded.high if encoded.shift else encoded.low).reshape(-1)))
            raise SlotRangeError(
                f"coefficient {biggest} reaches 2^{math.log2(peak):.2f}, beyond Q/2 = 2^{math.log2(limit):.2f} "
                "at this scale: the values are too large", biggest, float(limit))
        return encoded.to_rns(moduli)
    finally:
        encoded.wipe()


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
