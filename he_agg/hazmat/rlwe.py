"""RLWE key material in SEAL's layout: secrets, the common polynomial, public-key shares.

Polynomials are residue arrays of shape (L, N) in NTT form over ``params.moduli`` (the
key level: every prime, the special one included), as SEAL stores keys. A public key is
(pk0, pk1) = (−(a·s + e), a): SEAL's own convention, so TenSEAL encrypts under it.
For a committee, s = Σ s_i and e = Σ e_i over the parties, and pk0 = Σ pk0_i for the
common a: each party publishes only pk0_i = −(a·s_i + e_i).
"""

from __future__ import annotations

import numpy as np

from ..params import Params
from . import kernels
from .ckks import signed_to_rns
from .sampling import KeyedStream, cbd, ternary, uniform_mod

__all__ = ["common_polynomial", "public_key_share", "sample_secret"]


def sample_secret(stream: KeyedStream, params: Params) -> np.ndarray:
    """A uniform ternary secret in NTT form at the key level, shape (L_all, N)."""
    coefficients = ternary(stream, params.n)
    try:
        out = signed_to_rns(coefficients, params.moduli)
    finally:
        coefficients.fill(0)
    kernels.ntt_forward(out, params.moduli)
    return out


def common_polynomial(seed: bytes, params: Params) -> np.ndarray:
    """The public uniform polynomial a (NTT form, key level) expanded from a shared seed."""
    stream = KeyedStream(seed, b"he_agg.crs.v1" + params.fingerprint)
    return uniform_mod(stream, params.moduli, (len(params.moduli), params.n))


def public_key_share(secret: np.ndarray, a: np.ndarray, stream: KeyedStream, params: Params) -> np.ndarray:
    """pk0_i = −(a·s_i + e_i) with e_i from SEAL's error law (centred binomial, variance 10.5)."""
    error = cbd(stream, params.n)
    try:
        e = signed_to_rns(error, params.moduli)
    finally:
        error.fill(0)
    kernels.ntt_forward(e, params.moduli)
    out = np.empty_like(a)
    kernels.muladd(out, a, secret, e, params.moduli)
    kernels.sub(out, np.zeros_like(out), out, params.moduli)
    e.fill(0)
    return out
