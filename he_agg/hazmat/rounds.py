"""The public polynomial of each (committee, epoch, round, ciphertext index) in enrolled mode.

In enrolled mode a client uploads only c0 = −a·s_k + Encode(w·m) + e, where
a = a_{r,j} is public and fixed by the round: anyone (client, server, members) expands it
from its label, and no party chooses it. Two uploads under one a would leak m − m', so the
label must be *injective*: :func:`round_label` encodes a domain string, the committee id
length-prefixed (u64), then epoch, round and index as fixed-width little-endian u64, then
the parameter fingerprint (32 bytes). Its BLAKE3 hash keys a ChaCha20 stream
(:class:`~he_agg.hazmat.sampling.KeyedStream`) from which each data prime's residues are
drawn uniformly by exact rejection (:func:`~he_agg.hazmat.sampling.uniform_mod`). A
uniform polynomial is uniform in either domain, so the residues are used as NTT form.
"""

from __future__ import annotations

import struct

import blake3
import numpy as np

from ..errors import ParameterError
from ..params import Params
from .sampling import KeyedStream, uniform_mod

__all__ = ["MAX_COMMITTEE_ID", "MAX_ROUND_POLYNOMIALS", "round_label", "round_polynomial", "round_polynomials"]

_DOMAIN = b"he_agg.enrolled.round-polynomial.v1\0"
_STREAM_LABEL = b"he_agg.enrolled.round-polynomial.stream.v1"
_U64 = struct.Struct("<Q")
#: Longest committee id accepted (bytes).
MAX_COMMITTEE_ID = 255
#: Most polynomials one batch call expands (2^24 ciphertexts = 2^36 values at N=8192).
MAX_ROUND_POLYNOMIALS = 1 << 24


def _u64(value: object, name: str) -> int:
    if type(value) is not int or not 0 <= value < 1 << 64:
        raise ParameterError(f"{name} must be an integer in [0, 2^64), got {value!r}")
    return value


def _committee(committee_id: object) -> bytes:
    if not isinstance(committee_id, (bytes, bytearray)) or not 1 <= len(committee_id) <= MAX_COMMITTEE_ID:
        raise ParameterError(f"committee_id must be 1 to {MAX_COMMITTEE_ID} bytes")
    return bytes(committee_id)


def round_label(committee_id: bytes, epoch: int, round_id: int, index: int, params: Params) -> bytes:
    """The injective encoding of (committee id, epoch, round, index, parameters)."""
    cid = _committee(committee_id)
    return b"".join([
        _DOMAIN, _U64.pack(len(cid)), cid, _U64.pack(_u64(epoch, "epoch")),
        _U64.pack(_u64(round_id, "round_id")), _U64.pack(_u64(index, "index")), params.fingerprint,
    ])


def _expand(label: bytes, params: Params, out: np.ndarray) -> None:
    stream = KeyedStream(blake3.blake3(label).digest(), _STREAM_LABEL)
    out[...] = uniform_mod(stream, params.data_moduli, out.shape)


def round_polynomial(committee_id: bytes, epoch: int, round_id: int, index: int, params: Params) -> np.ndarray:
    """a_{r,j}: uniform residues (L_data, N) uint64 over the data primes, NTT form."""
    out = np.empty((len(params.data_moduli), params.n), dtype=np.uint64)
    _expand(round_label(committee_id, epoch, round_id, index, params), params, out)
    return out


def round_polynomials(committee_id: bytes, epoch: int, round_id: int, count: int, params: Params, *,
                      start: int = 0) -> np.ndarray:
    """a_{r,j} for j = start … start+count−1, shape (count, L_data, N): each one bit for bit
    :func:`round_polynomial` of its index (one keyed stream per index)."""
    if type(count) is not int or not 0 <= count <= MAX_ROUND_POLYNOMIALS:
        raise ParameterError(f"count must be an integer in [0, {MAX_ROUND_POLYNOMIALS}], got {count!r}")
    _u64(start, "start")
    _u64(start + count, "start + count")
    prefix = round_label(committee_id, epoch, round_id, 0, params)
    head = prefix[: -(_U64.size + len(params.fingerprint))]  # everything before the index
    tail = params.fingerprint
    out = np.empty((count, len(params.data_moduli), params.n), dtype=np.uint64)
    for j in range(count):
        _expand(head + _U64.pack(start + j) + tail, params, out[j])
    return out
