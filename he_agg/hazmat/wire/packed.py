"""Packed residues: each residue in ceil(log2 q) bits instead of a 64-bit word.

Layout of packed residues shaped (rows, nmod, n) (a ciphertext is its polynomials' rows):
row (r, l) holds the n residues modulo q_l, residue i at bits [i*b_l, (i+1)*b_l) of the
row read as one little-endian bit string, b_l = bitlen(q_l) = ceil(log2 q_l) (q_l is an
odd prime), the row padded with zero bits to whole 64-bit words. Size::

    packed_size(shape) = 8 * rows * sum_l ceil(n * b_l / 64)

(no padding for n >= 64: 60-bit primes take 7.5 bytes per residue). The encoding is
canonical: a residue must be < q_l and padding bits zero, so each array has exactly one
packed form. The summing kernel (:func:`he_agg.hazmat.kernels.sum_packed`) reads it in
place, unpacking inside the pass that validates and adds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import blake3
import numpy as np

from ...errors import FormatError, ParameterMismatchError
from .. import kernels
from ..kernels.tables import ModuliLike, normalize_moduli
from . import digest
from .tenseal import ResidueView

__all__ = ["PackedView", "hash_unpacked", "pack_residues", "packed_body", "packed_flag", "packed_size", "unpack_residues"]

#: Scratch bytes :func:`hash_unpacked` unpacks into at a time, per thread (at least one row).
#: A row count (16 rows) was a whole upload's unpacked size at ≤ 16 rows (8 ciphertexts):
#: the server's peak then held the accumulator, the packed upload and a full unpacked copy.
_HASH_SCRATCH = 1 << 18


def packed_size(shape: tuple[int, ...], moduli: ModuliLike) -> int:
    """Bytes of the packed form of a (..., nmod, n) residue array (the wire formula)."""
    mods = normalize_moduli(moduli)
    if len(shape) < 2 or shape[-2] != len(mods):
        raise ParameterMismatchError(f"shape {shape} is not (..., {len(mods)}, n)")
    rows = math.prod(shape[:-2])
    return 8 * rows * sum(kernels.packed_row_words(shape[-1], mods))


def _pack_rows(values: np.ndarray, b: int, words: int) -> np.ndarray:
    """(R, n) residues < 2^b -> (R, words) packed uint64 rows."""
    rows, n = values.shape
    p = np.arange(n, dtype=np.int64) * b
    k, sh = p >> 6, (p & 63).astype(np.uint64)
    out = np.zeros((rows, words + 1), dtype=np.uint64)
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])  # residues are in word order
    out[:, k[starts]] = np.bitwise_or.reduceat(values << sh, starts, axis=1)
    spill = np.flatnonzero((p & 63) + b > 64)  # at most one residue spills into each word
    if spill.size:
        out[:, k[spill] + 1] |= values[:, spill] >> (np.uint64(64) - sh[spill])
    return out[:, :words]


def pack_residues(array: np.ndarray, moduli: ModuliLike) -> bytes:
    """The packed bytes of a (..., nmod, n) uint64 array; every residue must be < its prime."""
    mods = normalize_moduli(moduli)
    if not isinstance(array, np.ndarray) or array.dtype != np.uint64 or array.ndim < 2 \
            or array.shape[-2] != len(mods):
        raise ParameterMismatchError(f"expected a uint64 (..., {len(mods)}, n) array")
    n = array.shape[-1]
    kernels.tables.check_degree(n)
    flat = np.ascontiguousarray(array).reshape(-1, len(mods), n)
    qs = np.array(mods, dtype=np.uint64).reshape(1, -1, 1)
    if flat.size and bool((flat >= qs).any()):
        raise FormatError("a residue is not below its prime: it has no packed form")
    words = kernels.packed_row_words(n, mods)
    rows = [_pack_rows(flat[:, l], q.bit_length(), words[l]) for l, q in enumerate(mods)]
    return np.concatenate(rows, axis=1).astype("<u8", copy=False).tobytes()


def unpack_residues(data: Any, shape: tuple[int, ...], moduli: ModuliLike, *, check: bool = True) -> np.ndarray:
    """The (..., nmod, n) uint64 array of packed bytes; FormatError for a wrong size,
    ResidueRangeError (``check``) for a residue not below its prime."""
    mods = normalize_moduli(moduli)
    out = np.empty(shape, dtype=np.uint64)
    if len(memoryview(data).cast("B")) != packed_size(shape, mods):
        raise FormatError(f"packed residues are {len(memoryview(data).cast('B'))} bytes; "
                          f"{packed_size(shape, mods)} expected for shape {shape}")
    kernels.unpack_residues(out, data, mods)
    if check:
        from .seal import check_residues

        check_residues(out, mods, "packed residues")
    return out


def hash_unpacked(data: Any, shape: tuple[int, ...], moduli: ModuliLike) -> bytes:
    """The body digest of the UNPACKED little-endian words of packed ``data`` (size checked):
    the digest an unpacked body would have. Each 1 MiB segment of the unpacked words is
    hashed from rows unpacked a few at a time into a small per-thread scratch; segments
    are split over the summing threads."""
    mods = normalize_moduli(moduli)
    view = memoryview(data).cast("B")
    if len(view) != packed_size(shape, mods):
        raise FormatError(f"packed residues are {len(view)} bytes; {packed_size(shape, mods)} expected")
    n = shape[-1]
    rows = math.prod(shape[:-2])
    row_bytes = 8 * sum(kernels.packed_row_words(n, mods))  # one polynomial, every prime: packed ...
    unpacked_row = 8 * len(mods) * n  # ... and unpacked
    total = rows * unpacked_row
    step = max(1, min(rows, _HASH_SCRATCH // unpacked_row))

    def run(first: int, last: int) -> list[bytes]:
        scratch = np.empty((step, len(mods), n), dtype=np.uint64)
        flat = scratch.reshape(-1).view(np.uint8)
        digests = []
        for k in range(first, last):
            lo, hi = k * digest.SEGMENT, min(total, (k + 1) * digest.SEGMENT)
            hasher = blake3.blake3()
            end = -(-hi // unpacked_row)  # the segment's last row, exclusive: unpack no row beyond it
            for r0 in range(lo // unpacked_row, end, step):
                r1 = min(end, r0 + step)
                kernels.unpack_residues(scratch[: r1 - r0], view[r0 * row_bytes : r1 * row_bytes], mods)
                base = r0 * unpacked_row
                hasher.update(flat[max(lo, base) - base : min(hi, r1 * unpacked_row) - base])
            digests.append(hasher.digest())
        return digests

    return digest.root(total, digest.over_segments(run, digest.segment_count(total)))


@dataclass(frozen=True)
class PackedView(ResidueView):
    """A :class:`ResidueView` of PACKED residues: ciphertext c is
    :func:`he_agg.hazmat.kernels.packed_ct_bytes` bytes at ``offsets[c]`` of ``buffer``.
    ``body_hash`` is that of the packed bytes; :meth:`unpacked_hash` gives the digest an
    unpacked body would have (what ciphertext and c0 digests are defined over)."""

    polys: int = 2

    def residues(self, params: Any, what: str = "encrypted vector") -> np.ndarray:
        """The residues unpacked into an aligned, range-checked (count, polys, L, N) array."""
        shape = (self.count, self.polys, len(params.data_moduli), params.n)
        return unpack_residues(self._bytes(shape, params), shape, params.data_moduli)

    def chunks(self, params: Any) -> list[bytes | memoryview]:  # pragma: no cover - not for packed views
        raise FormatError("a packed view has no unpacked byte chunks; use residues() or unpacked_hash()")

    def unpacked_hash(self, params: Any) -> bytes:
        """The body digest of the unpacked residue words, in order (a bounded scratch, no full copy)."""
        shape = (self.count, self.polys, len(params.data_moduli), params.n)
        return hash_unpacked(self._bytes(shape, params), shape, params.data_moduli)

    def _bytes(self, shape: tuple[int, ...], params: Any) -> memoryview:
        whole = memoryview(self.buffer).cast("B") if not isinstance(self.buffer, np.ndarray) \
            else memoryview(np.ascontiguousarray(self.buffer).reshape(-1).view(np.uint8))
        size = packed_size(shape, params.data_moduli)
        start = int(self.offsets[0]) if self.count else 0
        return whole[start : start + size]


def packed_body(body: memoryview, shape: tuple[int, ...], moduli: ModuliLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Check a packed envelope body against ``shape`` (count, polys, L, N) BEFORE use: its
    size must equal the formula exactly. Returns (the body as uint8, per-ciphertext byte
    offsets) for :func:`he_agg.hazmat.kernels.sum_packed`; residues are left for the
    summing kernel (or :func:`unpack_residues`) to range-check."""
    expected = packed_size(shape, moduli)
    if len(body) != expected:
        raise FormatError(f"{what}: packed body is {len(body)} bytes, expected exactly {expected} for shape {shape}")
    step = expected // shape[0] if shape[0] else 0
    return np.frombuffer(body, dtype=np.uint8), np.arange(shape[0], dtype=np.uint64) * np.uint64(step)


def packed_flag(meta: Any, what: str) -> bool:
    """The meta's ``"packed"`` flag: absent = 64-bit words, ``true`` = packed; anything
    else is refused (one canonical spelling per form)."""
    if not meta.has("packed"):
        return False
    if meta.raw("packed") is not True:
        raise FormatError(f"{what}: field 'packed' must be true when present")
    return True
