r"""Native public-key encryption of dense (coefficient-packed) plaintexts, exactly as SEAL encrypts.

SEAL's asymmetric encryption, with he_agg's exact dense encoding:

1. at the key level (every prime, special prime p last), with u ternary and e1, e2 from
   SEAL's error law (centred binomial, variance 10.5), all from one CSPRNG stream:
   ``(C0, C1) = (pk0·u + e1, pk1·u + e2)``;
2. divide both by p with rounding (SEAL's ``divide_and_round_q_last``):
   ``c_j = (C_j − T_j)/p`` over the data primes, T_j the centred residue of C_j mod p;
3. add the message: ``c0 += m``, m = :func:`~he_agg.hazmat.ckks.encode_dense_split` (value k
   in coefficient k, x·Δ rounded to ⌊·⌋ or ⌈·⌉ without bias; exact).

Steps 2 and 3 are fused per data prime q_i: ``c_j = (C_j + W_j)·p⁻¹`` with
``W_0 = e1 − T_0 + p·m`` and ``W_1 = e2 − T_1`` formed in coefficient form and moved to NTT
form once. T_j needs only the special-prime part of pk_j·u in coefficient form (one inverse
NTT), and e_j enters that part in coefficient form: 9 NTTs of one prime per ciphertext (u at
3 primes, 2 inverse at p, 4 forward at the data primes) instead of SEAL's 17.

Noise (derivation in :mod:`he_agg.hazmat.noise`, ``dense=True``). With pk = (−(a·s + e), a):
``c0 + c1·s = m + (−e·u + e1 + e2·s)/p − T_0/p − (T_1/p)·s``, |T_j/p| ≤ 1/2 — SEAL's own
decryption noise. The dense message adds no decoding error; its randomized rounding ρ
(|ρ| < 1, zero mean, sub-Gaussian proxy 1/4) is part of m − x·Δ, counted in the noise bound.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ParameterMismatchError, SlotRangeError
from ..params import Params
from . import kernels
from .ckks import encode_dense_split
from .sampling import KeyedStream, cbd, ternary

__all__ = ["CHUNK", "encrypt_dense"]

#: Ciphertexts encrypted together (bounds the working memory: ~1 MiB per array at N = 8192).
CHUNK = 16


def encrypt_dense(public_key: np.ndarray, values: np.ndarray, params: Params, *,
                  stream: KeyedStream | None = None) -> np.ndarray:
    """Encrypt real ``values`` densely under ``public_key``: (count, 2, L_data, N) uint64, NTT form.

    ``public_key``: (2, L_all, N) uint64 NTT residues at the key level (pk0, pk1), as
    :attr:`he_agg.context.PublicContext.public_key`. Value k of ciphertext c is coefficient
    k of its plaintext (count = ⌈len/N⌉; unused coefficients of the last hold 0).
    ``stream``: randomness for u, e1, e2 and the rounding (default: a fresh CSPRNG stream;
    pass one only in tests). A coefficient at or beyond Q/2 raises SlotRangeError.
    """
    key = _check_key(public_key, params)
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size == 0:
        raise ParameterMismatchError("nothing to encrypt")
    n, data = params.n, params.data_moduli
    count = -(-flat.size // n)
    stream = stream if stream is not None else KeyedStream.fresh(b"he_agg.pk.client-noise")
    out = np.empty((count, 2, len(data), n), dtype=np.uint64)
    for start in range(0, count, CHUNK):
        stop = min(count, start + CHUNK)
        chunk = np.zeros((stop - start, n), dtype=np.float64)
        piece = flat[start * n : stop * n]
        chunk.reshape(-1)[: piece.size] = piece
        _encrypt_chunk(key, chunk, params, stream, out[start:stop])
        chunk.fill(0.0)
    return out


class _Key:
    """pk split into its data-prime part (2, L_data, N) and special-prime part (2, 1, N), contiguous."""

    __slots__ = ("data", "special")

    def __init__(self, data: np.ndarray, special: np.ndarray) -> None:
        self.data, self.special = data, special


def _check_key(public_key: np.ndarray, params: Params) -> _Key:
    shape = (2, len(params.moduli), params.n)
    if not isinstance(public_key, np.ndarray) or public_key.dtype != np.uint64 or public_key.shape != shape:
        raise ParameterMismatchError(f"the public key must be uint64 of shape {shape}")
    nd = len(params.data_moduli)
    return _Key(np.ascontiguousarray(public_key[:, :nd]), np.ascontiguousarray(public_key[:, nd:]))


def _encrypt_chunk(key: _Key, chunk: np.ndarray, params: Params, stream: KeyedStream, out: np.ndarray) -> None:
    """Encrypt ``chunk`` (rows, N) into ``out`` (rows, 2, L_data, N); every secret wiped."""
    rows, n = chunk.shape
    data, p = params.data_moduli, params.special_modulus
    special = (p,)
    m = _encode(chunk, params, stream)
    u = ternary(stream, rows * n).reshape(rows, n)
    errors = cbd(stream, 2 * rows * n).reshape(rows, 2, n)
    u_data = kernels.signed_to_rns(u, data)
    u_special = kernels.signed_to_rns(u, special)
    u.fill(0)
    try:
        kernels.ntt_forward(u_data, data)
        kernels.ntt_forward(u_special, special)
        p_mod = np.array([p % q for q in data], dtype=np.uint64)
        p_inv = np.array([pow(p, -1, q) for q in data], dtype=np.uint64)
        kernels.mul_scalar(m, m, p_mod, data)  # p·m: folded into W_0 (see the module docstring)
        for j in range(2):
            w = _rounding_correction(key.special[j], u_special, errors[:, j], p)
            big_w = kernels.signed_to_rns(w, data)
            w.fill(0)
            if j == 0:
                kernels.add(big_w, big_w, m, data)
            kernels.ntt_forward(big_w, data)
            kernels.muladd(big_w, u_data, key.data[j], big_w, data)  # C_j + W_j over the data primes
            kernels.mul_scalar(big_w, big_w, p_inv, data)
            out[:, j] = big_w
            big_w.fill(0)
    finally:
        u_data.fill(0)
        u_special.fill(0)
        errors.fill(0)
        m.fill(0)


def _rounding_correction(pk_special: np.ndarray, u_special: np.ndarray, error: np.ndarray, p: int) -> np.ndarray:
    """e − T as int64 (rows, N): T the centred residue of C = pk·u + e modulo p (|T| ≤ (p−1)/2)."""
    c = np.empty_like(u_special)
    kernels.mul(c, u_special, pk_special, (p,))
    kernels.ntt_inverse(c, (p,))
    value = c.reshape(c.shape[0], -1).view(np.int64) + error  # < p + 21 < 2^61: no overflow
    c.fill(0)
    half = p >> 1
    value %= p
    value += half
    value %= p
    value -= half  # T in [−(p−1)/2, (p−1)/2]
    np.subtract(error, value, out=value)
    return value


def _encode(chunk: np.ndarray, params: Params, stream: KeyedStream) -> np.ndarray:
    """Dense encoding of ``chunk`` as coefficient-form residues (rows, L_data, N)."""
    encoded = encode_dense_split(chunk, params.scale, stream)
    try:
        limit = float(params.data_modulus // 2)
        magnitude = np.abs(encoded.high).astype(np.float64) * 2.0**encoded.shift + np.abs(encoded.low)
        peak = float(magnitude.max())
        if peak >= limit * (1 - 2.0**-40):
            index = int(np.argmax(magnitude.reshape(-1)))
            raise SlotRangeError(f"value {index} reaches 2^{math.log2(peak):.2f} after scaling, beyond Q/2 = "
                                 f"2^{math.log2(limit):.2f}: too large for this scale", index, limit / params.scale)
        return encoded.to_rns(params.data_moduli)
    finally:
        encoded.wipe()
