"""Shamir secret sharing of polynomials in RNS/NTT form, and Lagrange coefficients.

A secret polynomial in NTT form is a vector of residues, one per (prime, coefficient).
Each residue is shared independently over its prime field Z_q with a random polynomial
f of degree t−1, f(0) = secret: party j (x-coordinate x_j = j+1) receives f(x_j). Any t
parties recover the secret as Σ λ_j·f(x_j) with the Lagrange coefficients at zero —
but he_agg never does that: each party multiplies its own share by its λ_j inside a
decryption share, so the full secret is never reassembled anywhere.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import kernels
from .sampling import KeyedStream, uniform_mod

__all__ = ["deal", "lagrange_at_zero", "x_coordinate"]


def x_coordinate(party: int) -> int:
    """The evaluation point of party ``party`` (0-based index): party + 1, never zero."""
    return party + 1


def deal(secret: np.ndarray, moduli: tuple[int, ...], parties: int, threshold: int,
         stream: KeyedStream) -> list[np.ndarray]:
    """Shares of ``secret`` (shape (L, N), residues mod ``moduli``) for ``parties`` parties.

    Evaluates f(x) = secret + a_1·x + … + a_{t−1}·x^{t−1} by Horner's rule with the
    native kernels; the random coefficients are wiped before returning.
    """
    if not 1 <= threshold <= parties:
        raise ValueError(f"need 1 <= t <= n, got t={threshold}, n={parties}")
    coefficients = uniform_mod(stream, moduli, (threshold - 1,) + secret.shape)
    try:
        shares = []
        for party in range(parties):
            x = np.array([x_coordinate(party) % q for q in moduli], dtype=np.uint64)
            acc = np.zeros_like(secret)
            for k in range(threshold - 2, -1, -1):  # Horner over a_{t-1} … a_1
                kernels.add(acc, acc, coefficients[k], moduli)
                kernels.mul_scalar(acc, acc, x, moduli)
            kernels.add(acc, acc, secret, moduli)
            shares.append(acc)
        return shares
    finally:
        coefficients.fill(0)


def lagrange_at_zero(active: Sequence[int], party: int, moduli: tuple[int, ...]) -> np.ndarray:
    """λ for ``party`` in the active set (0-based indices), one value per prime."""
    if party not in active:
        raise ValueError(f"party {party} is not in the active set {sorted(active)}")
    if len(set(active)) != len(active):
        raise ValueError("the active set has duplicate parties")
    xi = x_coordinate(party)
    out = []
    for q in moduli:
        num, den = 1, 1
        for other in active:
            if other == party:
                continue
            xj = x_coordinate(other)
            num = num * xj % q
            den = den * (xj - xi) % q
        out.append(num * pow(den, -1, q) % q)
    return np.array(out, dtype=np.uint64)
