"""The FFI seam: the only module that imports the compiled core (he_agg._he_agg_native).

Thin wrappers: check dtype / contiguity, pass pointers (never copies), call ``lib`` and
turn a non-OK return code into a he_agg exception carrying ``heagg_strerror``'s text.
Arguments arrive validated and reshaped by :mod:`he_agg.hazmat.kernels`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from he_agg._he_agg_native import ffi, lib
from he_agg.errors import NativeCoreError, ParameterError, ParameterMismatchError, ResidueRangeError

from . import tables

_ERRORS: dict[int, type[Exception]] = {
    lib.HEAGG_ERR_RESIDUE: ResidueRangeError,
    lib.HEAGG_ERR_ARGUMENT: ParameterError,
    lib.HEAGG_ERR_PLATFORM: NativeCoreError,
}


#: Functions added to the ABI after its first release, checked at import.
_ENTRY_POINTS = ("heagg_simd_select", "heagg_signed_to_rns", "heagg_discrete_gaussian", "heagg_sum_packed",
                 "heagg_sum_undo", "heagg_unpack_residues")


def strerror(code: int) -> str:
    """The native core's description of a return code."""
    return str(ffi.string(lib.heagg_strerror(code)).decode("ascii"))


def _check(rc: int, what: str) -> None:
    if rc != lib.HEAGG_OK:
        raise _ERRORS.get(rc, NativeCoreError)(f"{what}: {strerror(rc)} (native code {rc})")


def _self_check() -> None:
    missing = [name for name in _ENTRY_POINTS if not hasattr(lib, name)]
    if missing:  # an extension built from older sources: refuse it rather than fail later
        raise NativeCoreError(f"the native core is out of date (lacks {', '.join(missing)}); rebuild it")
    _check(lib.heagg_self_check(), "native core self-check")
    if lib.HEAGG_NTT_TABLE_WORDS != tables.NTT_TABLE_WORDS:
        raise NativeCoreError("native core and tables.py disagree on the NTT table layout")
    if lib.HEAGG_MAX_MODULUS_BITS != tables.MAX_MODULUS_BITS or lib.HEAGG_MAX_NMOD != tables.MAX_NMOD:
        raise NativeCoreError("native core and tables.py disagree on the supported moduli")


_self_check()


def _ptr(arr: np.ndarray, ctype: str = "uint64_t[]", *, writable: bool = False) -> Any:
    """A pointer into arr's own memory (no copy); arr must be C-contiguous."""
    if not arr.flags.c_contiguous:
        raise ParameterMismatchError("native kernels need C-contiguous arrays")
    if ctype == "uint64_t[]" and arr.dtype != np.uint64:
        raise ParameterMismatchError(f"native kernels need uint64 arrays, got {arr.dtype}")
    return ffi.from_buffer(ctype, arr, require_writable=writable)


def _dims(a: np.ndarray) -> tuple[int, int, int]:
    rows, nmod, n = a.shape
    return rows, nmod, n


# -- sum -------------------------------------------------------------------------------------


def _bases(bufs: list[np.ndarray]) -> tuple[list[Any], Any]:
    """The sources' base pointers; keep the first element alive until the call returns."""
    keep = [ffi.from_buffer("uint8_t[]", b) for b in bufs]
    return keep, ffi.new("const uint8_t *[]", keep)


def _fault(rc: int, fault: Any, what: str) -> tuple[int, int] | None:
    if rc == lib.HEAGG_ERR_RESIDUE:
        return int(fault.source), int(fault.word)
    _check(rc, what)
    return None


def _summed(entry: Any, what: str, acc: np.ndarray, bufs: list[np.ndarray], table: np.ndarray,
            moduli: tuple[int, ...], *extra: int) -> tuple[int, int] | None:
    """Call one C summing entry point: (acc, shape, moduli, sources, table, *extra, nsrc, fault)."""
    count, polys, nmod, n = acc.shape
    keep, bases = _bases(bufs)
    fault = ffi.new("heagg_fault *")
    rc = entry(_ptr(acc, writable=True), count, polys, nmod, n, _ptr(tables.moduli_array(moduli)),
               bases, _ptr(table), *extra, len(bufs), fault)
    del keep
    return _fault(rc, fault, what)


def sum_ciphertexts(
    acc: np.ndarray, bufs: list[np.ndarray], offsets: np.ndarray, moduli: tuple[int, ...]
) -> tuple[int, int] | None:
    """acc += sum of the sources mod q; on a bad word return (source, flat word), acc restored."""
    return _summed(lib.heagg_sum_ciphertexts, "sum_ciphertexts", acc, bufs, offsets, moduli)


def sum_segmented(
    acc: np.ndarray, bufs: list[np.ndarray], segments: np.ndarray, moduli: tuple[int, ...]
) -> tuple[int, int] | None:
    """As sum_ciphertexts; segments is (nsrc, count, nseg, 2): byte offset, byte length.

    The C core takes (byte offset, cumulative end) so that it can binary-search a word's
    segment; a wrapped sum shows as a decreasing end, which the core refuses.
    """
    table = _cumulative(segments)
    return _summed(lib.heagg_sum_segmented, "sum_segmented", acc, bufs, table, moduli, table.shape[2])


def _cumulative(segments: np.ndarray) -> np.ndarray:
    """(offset, length) segments -> the core's (offset, cumulative end) table (a copy)."""
    table = np.array(segments, dtype=np.uint64, order="C", copy=True)
    np.cumsum(table[..., 1], axis=-1, dtype=np.uint64, out=table[..., 1])
    return table


def sum_packed(
    acc: np.ndarray, bufs: list[np.ndarray], offsets: np.ndarray, moduli: tuple[int, ...]
) -> tuple[int, int] | None:
    """As sum_ciphertexts for packed sources (residues unpacked inside the pass)."""
    return _summed(lib.heagg_sum_packed, "sum_packed", acc, bufs, offsets, moduli)


def sum_undo(
    acc: np.ndarray, bufs: list[np.ndarray], layout: np.ndarray, moduli: tuple[int, ...], kind: str
) -> None:
    """acc -= the sources: the exact undo of a successful sum of kind contiguous /
    segmented / packed with the same arguments."""
    count, polys, nmod, n = acc.shape
    keep, bases = _bases(bufs)
    table = _cumulative(layout) if kind == "segmented" else layout
    nseg = table.shape[2] if kind == "segmented" else 0
    rc = lib.heagg_sum_undo(
        _ptr(acc, writable=True), count, polys, nmod, n, _ptr(tables.moduli_array(moduli)),
        bases, _ptr(table), nseg, len(bufs), int(kind == "packed"),
    )
    del keep
    _check(rc, "sum_undo")


def unpack_residues(out: np.ndarray, src: np.ndarray, moduli: tuple[int, ...]) -> None:
    """out (rows, nmod, n) <- the packed rows at src (uint8, sizes checked by the caller)."""
    rows, nmod, n = _dims(out)
    rc = lib.heagg_unpack_residues(
        _ptr(out, writable=True), ffi.from_buffer("uint8_t[]", src), rows, nmod, n,
        _ptr(tables.moduli_array(moduli)),
    )
    _check(rc, "unpack_residues")


# -- NTT -------------------------------------------------------------------------------------


def ntt_forward(data: np.ndarray, moduli: tuple[int, ...]) -> None:
    rows, nmod, n = _dims(data)
    qs, tab = tables.moduli_array(moduli), tables.ntt_tables(moduli, n)
    rc = lib.heagg_ntt_forward(_ptr(data, writable=True), rows, nmod, n, _ptr(qs), _ptr(tab))
    _check(rc, "ntt_forward")


def ntt_inverse(data: np.ndarray, moduli: tuple[int, ...]) -> None:
    rows, nmod, n = _dims(data)
    qs, tab = tables.moduli_array(moduli), tables.ntt_tables(moduli, n)
    rc = lib.heagg_ntt_inverse(_ptr(data, writable=True), rows, nmod, n, _ptr(qs), _ptr(tab))
    _check(rc, "ntt_inverse")


# -- pointwise -------------------------------------------------------------------------------


def mul(out: np.ndarray, a: np.ndarray, b: np.ndarray, moduli: tuple[int, ...]) -> None:
    rows, nmod, n = _dims(a)
    rc = lib.heagg_mul(
        _ptr(out, writable=True), _ptr(a), _ptr(b), b.shape[0], rows, nmod, n,
        _ptr(tables.moduli_array(moduli)),
    )
    _check(rc, "mul")


def muladd(
    out: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, moduli: tuple[int, ...]
) -> None:
    rows, nmod, n = _dims(a)
    rc = lib.heagg_muladd(
        _ptr(out, writable=True), _ptr(a), _ptr(b), b.shape[0], _ptr(c), c.shape[0],
        rows, nmod, n, _ptr(tables.moduli_array(moduli)),
    )
    _check(rc, "muladd")


def add(out: np.ndarray, a: np.ndarray, b: np.ndarray, moduli: tuple[int, ...]) -> None:
    rows, nmod, n = _dims(a)
    rc = lib.heagg_add(
        _ptr(out, writable=True), _ptr(a), _ptr(b), b.shape[0], rows, nmod, n,
        _ptr(tables.moduli_array(moduli)),
    )
    _check(rc, "add")


def sub(out: np.ndarray, a: np.ndarray, b: np.ndarray, moduli: tuple[int, ...]) -> None:
    rows, nmod, n = _dims(a)
    rc = lib.heagg_sub(
        _ptr(out, writable=True), _ptr(a), _ptr(b), b.shape[0], rows, nmod, n,
        _ptr(tables.moduli_array(moduli)),
    )
    _check(rc, "sub")


def mul_scalar(
    out: np.ndarray, a: np.ndarray, scalars: np.ndarray, moduli: tuple[int, ...]
) -> None:
    rows, nmod, n = _dims(a)
    rc = lib.heagg_mul_scalar(
        _ptr(out, writable=True), _ptr(a), _ptr(scalars), rows, nmod, n,
        _ptr(tables.moduli_array(moduli)),
    )
    _check(rc, "mul_scalar")


def signed_to_rns(out: np.ndarray, values: np.ndarray, moduli: tuple[int, ...]) -> None:
    rows, nmod, n = _dims(out)
    if values.dtype != np.int64:
        raise ParameterMismatchError(f"signed_to_rns reads int64, got {values.dtype}")
    rc = lib.heagg_signed_to_rns(
        _ptr(out, writable=True), _ptr(values, "int64_t[]"), rows, nmod, n,
        _ptr(tables.moduli_array(moduli)),
    )
    _check(rc, "signed_to_rns")


# -- discrete Gaussian --------------------------------------------------------------------------------


def discrete_gaussian(high: np.ndarray, low: np.ndarray, words: np.ndarray, plan: np.ndarray) -> tuple[int, int]:
    """Exact discrete Gaussian into int64 high/low (count = high.size); (produced, consumed)."""
    if lib.HEAGG_DG_PLAN_WORDS != plan.size:
        raise NativeCoreError("native core and kernels disagree on the discrete Gaussian plan")
    counts = ffi.new("size_t[2]")
    rc = lib.heagg_discrete_gaussian(
        _ptr(high, "int64_t[]", writable=True), _ptr(low, "int64_t[]", writable=True), high.size,
        _ptr(words), words.size, _ptr(plan), counts, counts + 1,
    )
    _check(rc, "discrete_gaussian")
    return int(counts[0]), int(counts[1])


# -- CRT -------------------------------------------------------------------------------------


def crt_to_double(
    out: np.ndarray, data: np.ndarray, moduli: tuple[int, ...], radix: np.ndarray
) -> None:
    rows, nmod, n = _dims(data)
    if out.dtype != np.float64 or radix.dtype != np.float64:
        raise ParameterMismatchError("crt_to_double writes float64")
    rc = lib.heagg_crt_to_double(
        _ptr(out, "double[]", writable=True), _ptr(data), rows, nmod, n,
        _ptr(tables.moduli_array(moduli)), _ptr(tables.crt_tables(moduli)),
        _ptr(radix, "double[]"),
    )
    _check(rc, "crt_to_double")
