"""Threshold CKKS decryption arithmetic: partial shares, combination, decoding, checks.

A party holding the Shamir share s_i (NTT form, data primes) makes, for an aggregate
(c0, c1) and an active set A of t parties,

    d_i = λ_i^A · s_i · c1 + e_i        (λ applied first, then the flooding noise)

where e_i is ONE integer polynomial per ciphertext from the exact discrete Gaussian
D_{Z,σ_actual} (docs/SAMPLER.md; σ_actual ≥ σ, :func:`he_agg.hazmat.sampling.sigma_actual`),
reduced modulo each prime and moved to NTT form. The combiner computes
c0 + Σ_{i∈A} d_i = m + v + Σ e_i, inverse NTT, exact CRT, centring, division by the
scale and CKKS decoding. No function here ever sees a full secret key.

Checks that need no secret:

* *agreement*: two active sets decode to values that differ only by flooding noise;
* *self-consistency*: with λ_i^A = N_A / D_A (small integers), a party's shares for two
  sets satisfy D_A·N_B·d_i(A) − D_B·N_A·d_i(B) = D_A·N_B·e_A − D_B·N_A·e_B — a small
  polynomial — whatever s_i is. A share altered after it was made breaks this.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import numpy as np

from ..params import Params
from . import ckks, kernels
from .ckks import scaled_to_rns
from .sampling import KeyedStream, discrete_gaussian
from .shamir import x_coordinate

__all__ = [
    "decode_phase",
    "flooding_noise",
    "lagrange_fraction",
    "make_share",
    "phase",
    "self_consistency_residual",
]


def flooding_noise(stream: KeyedStream, count: int, sigma: float, params: Params) -> np.ndarray:
    """``count`` flooding polynomials (one integer polynomial each) as NTT residues (count, L, N).

    Coefficients are independent draws from D_{Z,σ_actual} (:func:`discrete_gaussian`),
    each |e| ≤ :func:`he_agg.hazmat.sampling.flooding_max` (σ)."""
    n, moduli = params.n, params.data_moduli
    high, low = discrete_gaussian(stream, count * n, sigma)
    out = scaled_to_rns(high.reshape(count, n), 32, low.reshape(count, n), moduli)
    high.fill(0)
    low.fill(0)
    kernels.ntt_forward(out, moduli)
    return out


def make_share(secret: np.ndarray, lam: np.ndarray, c1: np.ndarray, noise: np.ndarray, params: Params) -> np.ndarray:
    """d = (λ·s)·c1 + e in NTT form, written over ``noise`` (which becomes the public share).

    ``secret`` (L, N); ``c1`` and ``noise`` (count, L, N).
    """
    moduli = params.data_moduli
    scaled = np.empty_like(secret)
    kernels.mul_scalar(scaled, secret, lam, moduli)
    kernels.muladd(noise, c1, scaled, noise, moduli)
    scaled.fill(0)
    return noise


def phase(c0: np.ndarray, shares: Sequence[np.ndarray], params: Params) -> np.ndarray:
    """c0 + Σ shares, NTT form (count, L, N): one validated pass of the summing kernel over
    every share (threads by ciphertext), not one pass per share."""
    out = c0.copy()
    count = out.shape[0]
    offsets = np.arange(count, dtype=np.uint64) * np.uint64(out[0].nbytes)
    kernels.sum_ciphertexts(out.reshape(count, 1, *out.shape[1:]),
                            [(np.ascontiguousarray(share), offsets) for share in shares], params.data_moduli)
    return out


def decode_phase(ntt_phase: np.ndarray, params: Params) -> np.ndarray:
    """Decrypted slot values (count, N/2) from a phase in NTT form (consumed in place)."""
    kernels.ntt_inverse(ntt_phase, params.data_moduli)
    coefficients = kernels.crt_to_double(ntt_phase, params.data_moduli, params.scale)
    return ckks.decode(coefficients)


def lagrange_fraction(active: Sequence[int], party: int) -> Fraction:
    """λ_party for the active set as an exact rational N/D of small integers."""
    xi = x_coordinate(party)
    value = Fraction(1)
    for other in active:
        if other != party:
            xj = x_coordinate(other)
            value *= Fraction(xj, xj - xi)
    return value


def self_consistency_residual(share_a: np.ndarray, active_a: Sequence[int], share_b: np.ndarray,
                              active_b: Sequence[int], party: int, params: Params) -> tuple[float, float]:
    """(max |D_A·N_B·d(A) − D_B·N_A·d(B)|, multiplier |D_A·N_B| + |D_B·N_A|) over all coefficients.

    For honest shares the residual is at most multiplier × max|e|. The caller compares.
    """
    moduli = params.data_moduli
    fa, fb = lagrange_fraction(active_a, party), lagrange_fraction(active_b, party)
    wa = fa.denominator * fb.numerator  # D_A·N_B (signs carried by the numerators)
    wb = fb.denominator * fa.numerator  # D_B·N_A
    residual = np.empty_like(share_a)
    kernels.mul_scalar(residual, share_a, np.array([wa % q for q in moduli], dtype=np.uint64), moduli)
    other = np.empty_like(share_b)
    kernels.mul_scalar(other, share_b, np.array([wb % q for q in moduli], dtype=np.uint64), moduli)
    kernels.sub(residual, residual, other, moduli)
    kernels.ntt_inverse(residual, moduli)
    values = kernels.crt_to_double(residual, moduli, 1.0)
    return float(np.abs(values).max()), float(abs(wa) + abs(wb))
