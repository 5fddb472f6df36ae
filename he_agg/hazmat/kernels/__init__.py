"""Residue kernels: sum, NTT, pointwise arithmetic, CRT, signed integers to residues and
exact discrete Gaussian samples from uniform words, behind one signature.

Three backends compute the same bits:

* ``native`` -- the C core (``csrc/``, via cffi), the default;
* ``numba``  -- a JIT mirror, used (with a warning) when the C core is unavailable;
* ``numpy``  -- slow exact references, the truth for tests.

``HE_AGG_BACKEND=native|numba|numpy`` overrides the default. Every function validates
its arguments here, once, then hands C-contiguous ``(rows, nmod, n)`` views to the
backend. Residue arrays are uint64 shaped ``(..., nmod, n)``; inputs must already be
reduced (``< q``) except where a function says it checks them (``sum_ciphertexts``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy as np

from he_agg.errors import (
    FormatError,
    NativeCoreError,
    ParameterError,
    ParameterMismatchError,
    ResidueRangeError,
)

from . import tables
from .tables import ModuliLike, crt_radix, crt_tables, minimal_root, ntt_tables

__all__ = [
    "BACKENDS",
    "active_backend",
    "add",
    "available_backends",
    "crt_radix",
    "crt_tables",
    "crt_to_double",
    "DG_PLAN_WORDS",
    "DG_POLY",
    "DG_POLY_WIDE",
    "DG_ROWS",
    "DG_TABLE_BITS",
    "DG_TABLES",
    "discrete_gaussian_from_words",
    "minimal_root",
    "mul",
    "mul_scalar",
    "muladd",
    "ntt_forward",
    "ntt_inverse",
    "ntt_tables",
    "packed_ct_bytes",
    "packed_row_words",
    "signed_to_rns",
    "sub",
    "sum_ciphertexts",
    "sum_hashed",
    "undo_hashed",
    "sum_packed",
    "thread_count",
    "unpack_residues",
    "use_backend",
    "use_threads",
]

BACKENDS = ("native", "numba", "numpy")
ENV_VAR = "HE_AGG_BACKEND"

_MODULES = {"native": "._native", "numba": "._numba", "numpy": "._reference"}
_loaded: dict[str, ModuleType | None] = {}
_load_errors: dict[str, str] = {}
_override: str | None = None
_warned = False


# -- backend selection -------------------------------------------------------------------


def _load(name: str) -> ModuleType | None:
    if name not in _loaded:
        try:
            _loaded[name] = importlib.import_module(_MODULES[name], __name__)
        except (ImportError, OSError, NativeCoreError) as exc:
            _loaded[name] = None
            _load_errors[name] = f"{type(exc).__name__}: {exc}"
    return _loaded[name]


def _reset_backend_state() -> None:
    """Forget imported backends, the use_backend override and the fallback warning (tests)."""
    global _override, _warned
    _loaded.clear()
    _load_errors.clear()
    _override = None
    _warned = False


def available_backends() -> tuple[str, ...]:
    """The backends that import on this host, in order of preference."""
    return tuple(name for name in BACKENDS if _load(name) is not None)


def _require(name: str, origin: str) -> str:
    if name not in BACKENDS:
        raise NativeCoreError(f"unknown kernel backend {name!r} ({origin}); choose one of {BACKENDS}")
    if _load(name) is None:
        raise NativeCoreError(
            f"kernel backend {name!r} ({origin}) is unavailable: {_load_errors.get(name)}"
        )
    return name


def active_backend() -> str:
    """The backend the kernels use now: use_backend(), else $HE_AGG_BACKEND, else the best."""
    global _warned
    if _override is not None:
        return _override
    requested = os.environ.get(ENV_VAR, "").strip().lower()
    if requested:
        return _require(requested, f"from ${ENV_VAR}")
    if _load("native") is not None:
        return "native"
    fallback = "numba" if _load("numba") is not None else "numpy"
    if not _warned:
        _warned = True
        warnings.warn(
            f"he_agg's native core is unavailable ({_load_errors.get('native')}); "
            f"using the slower {fallback} kernels",
            RuntimeWarning,
            stacklevel=3,
        )
    return fallback


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the block with backend `name` (for tests and benchmarks; not thread-safe)."""
    global _override
    previous = _override
    _override = _require(name, "requested with use_backend")
    try:
        yield
    finally:
        _override = previous


def _impl() -> Any:
    return _loaded[active_backend()]


# -- argument checks ---------------------------------------------------------------------


def _moduli(moduli: ModuliLike) -> tuple[int, ...]:
    return tables.normalize_moduli(moduli)


def _residues(name: str, x: Any, moduli: tuple[int, ...], *, writable: bool = False) -> np.ndarray:
    """Check a uint64 C-contiguous (..., nmod, n) array and return it as (rows, nmod, n)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.uint64:
        raise ParameterMismatchError(f"{name} must have dtype uint64 (native order), got {x.dtype}")
    if x.ndim < 2 or x.shape[-2] != len(moduli):
        raise ParameterMismatchError(
            f"{name} has shape {x.shape}; expected (..., {len(moduli)}, n) for {len(moduli)} moduli"
        )
    if not x.flags.c_contiguous:
        raise ParameterMismatchError(f"{name} must be C-contiguous")
    if writable and not x.flags.writeable:
        raise ParameterMismatchError(f"{name} is read-only")
    tables.check_degree(x.shape[-1])
    return x.reshape(-1, len(moduli), x.shape[-1])


def _same_memory(x: np.ndarray, y: np.ndarray) -> bool:
    return x.__array_interface__["data"][0] == y.__array_interface__["data"][0] and x.shape == y.shape


def _operand(name: str, x: Any, out: np.ndarray, moduli: tuple[int, ...]) -> np.ndarray:
    """A same-shape or broadcast (nmod, n) operand as (rows or 1, nmod, n).

    An operand that overlaps `out` without being exactly `out` (for instance a broadcast
    row that is a view into out) is copied first, so the kernel never reads what it wrote.
    """
    x3 = _residues(name, x, moduli)
    if x.shape != out.shape and x.shape != out.shape[-2:]:
        raise ParameterMismatchError(
            f"{name} has shape {x.shape}; expected {out.shape} or {out.shape[-2:]} (broadcast)"
        )
    if np.may_share_memory(x, out) and not (x.shape == out.shape and _same_memory(x, out)):
        x3 = x3.copy()
    return x3


def _output(out: Any, a: Any, moduli: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    a3 = _residues("a", a, moduli)
    out3 = _residues("out", out, moduli, writable=True)
    if out.shape != a.shape:
        raise ParameterMismatchError(f"out has shape {out.shape} but a has shape {a.shape}")
    if np.may_share_memory(a, out) and not _same_memory(a, out):
        a3 = a3.copy()
    return out3, a3


# -- sum ---------------------------------------------------------------------------------


def _byte_view(buf: Any, index: int) -> np.ndarray:
    """A zero-copy uint8 view of a buffer-protocol object."""
    if isinstance(buf, np.ndarray):
        if not buf.flags.c_contiguous:
            raise FormatError(f"source {index}: the buffer is not C-contiguous")
        return buf.reshape(-1).view(np.uint8)
    try:
        view = memoryview(buf)
    except TypeError:
        raise TypeError(f"source {index}: {type(buf).__name__} does not expose a buffer") from None
    if not view.c_contiguous:
        raise FormatError(f"source {index}: the buffer is not C-contiguous")
    return np.frombuffer(view.cast("B"), dtype=np.uint8)


def _source_offsets(o: np.ndarray, index: int, count: int, nbytes: int, ct_bytes: int) -> np.ndarray:
    if o.size == 0:
        o = o.astype(np.uint64)  # np.asarray([]) is float64
    if o.shape != (count,) or o.dtype.kind not in "ui":
        raise ParameterMismatchError(
            f"source {index}: expected {count} integer offsets (one per ciphertext) or "
            f"({count}, nseg, 2) integer segments, got {o.dtype} {o.shape}"
        )
    if o.dtype.kind == "i" and count and int(o.min()) < 0:
        c = int(np.flatnonzero(o < 0)[0])
        raise FormatError(f"source {index}, ciphertext {c}: negative offset {int(o[c])}")
    o = o.astype(np.uint64, copy=False)
    bad = np.flatnonzero(o > nbytes - ct_bytes) if nbytes >= ct_bytes else np.arange(count)
    if bad.size:
        c = int(bad[0])
        raise FormatError(
            f"source {index}, ciphertext {c}: offset {int(o[c])} + {ct_bytes} bytes "
            f"runs past the end of the {nbytes}-byte buffer"
        )
    return o


def _source_segments(g: np.ndarray, index: int, count: int, nbytes: int, ct_bytes: int) -> np.ndarray:
    """Check a (count, nseg, 2) table of (byte offset, byte length) segments."""
    if g.shape[0] != count or g.shape[2] != 2 or (g.size and g.dtype.kind not in "ui"):
        raise ParameterMismatchError(
            f"source {index}: segments must be ({count}, nseg, 2) integers "
            f"(byte offset, byte length), got {g.dtype} {g.shape}"
        )
    if g.dtype.kind == "i" and g.size and int(g.min()) < 0:
        c, k, field = (int(x[0]) for x in np.nonzero(g < 0))
        raise FormatError(
            f"source {index}, ciphertext {c}: segment {k} has a negative "
            f"{('offset', 'length')[field]} {int(g[c, k, field])}"
        )
    g = g.astype(np.uint64, copy=False)
    size = np.uint64(nbytes)
    offs, lens = g[..., 0], g[..., 1]
    outside = (lens > size) | (offs > size - np.minimum(lens, size))  # offs + lens > nbytes
    if outside.any():
        c, k = (int(x[0]) for x in np.nonzero(outside))
        raise FormatError(
            f"source {index}, ciphertext {c}: segment {k} (offset {int(offs[c, k])}, "
            f"{int(lens[c, k])} bytes) runs past the end of the {nbytes}-byte buffer"
        )
    # every length <= nbytes, so the sums are exact in uint64 unless nseg * nbytes is huge
    exact = g.shape[1] * nbytes < 2**64
    totals = lens.sum(axis=1, dtype=np.uint64 if exact else object)
    wrong = np.flatnonzero(totals != ct_bytes)
    if wrong.size:
        c = int(wrong[0])
        raise FormatError(
            f"source {index}, ciphertext {c}: the segments hold {int(totals[c])} bytes; "
            f"one ciphertext is {ct_bytes}"
        )
    return g


def _segment_table(layouts: list[np.ndarray], count: int, ct_bytes: int) -> np.ndarray:
    """Every source's layout as (nsrc, count, nseg, 2) segments: offsets become one
    segment, shorter tables are padded with zero-length segments."""
    nseg = max(1 if g.ndim == 1 else g.shape[1] for g in layouts)
    table = np.zeros((len(layouts), count, nseg, 2), dtype=np.uint64)
    for s, g in enumerate(layouts):
        if g.ndim == 1:
            table[s, :, 0, 0] = g
            table[s, :, 0, 1] = ct_bytes
        else:
            table[s, :, : g.shape[1]] = g
    return table


def _read_word(buf: np.ndarray, layout: np.ndarray, pos: int) -> int:
    """The little-endian word at byte `pos` of one ciphertext: layout is its offset or
    its (nseg, 2) segments."""
    if layout.ndim == 0:
        return int.from_bytes(buf[int(layout) + pos : int(layout) + pos + 8].tobytes(), "little")
    out, start = b"", 0
    for off, length in layout.tolist():
        lo, hi = max(pos, start), min(pos + 8, start + length)
        if lo < hi:
            out += buf[off + lo - start : off + hi - start].tobytes()
        start += length
    return int.from_bytes(out, "little")


def _fault(
    fault: tuple[int, int], acc: np.ndarray, bufs: list[np.ndarray], layout: np.ndarray,
    moduli: tuple[int, ...],
) -> ResidueRangeError:
    """layout: (nsrc, count) offsets or (nsrc, count, nseg, 2) segments."""
    source, word = fault
    _, polys, nmod, n = acc.shape
    c, within = divmod(word, polys * nmod * n)
    p, rest = divmod(within, nmod * n)
    l, i = divmod(rest, n)
    if source == len(bufs):
        value, where = int(acc[c, p, l, i]), "the accumulator"
    else:
        value, where = _read_word(bufs[source], layout[source, c], 8 * within), f"source {source}"
    return ResidueRangeError(
        f"{where}, ciphertext {c}, polynomial {p}, prime {l}, coefficient {i}: residue "
        f"{value} is not below its prime {moduli[l]} (corrupt or forged data)"
    )


def sum_ciphertexts(
    acc: np.ndarray, sources: Sequence[tuple[Any, Any]], moduli: ModuliLike
) -> None:
    """acc += every source, elementwise mod q, in one validated pass.

    acc: uint64 C-contiguous (count, polys, nmod, n), every word < its prime.
    sources: (buffer, layout) pairs. Ciphertext c of a source is polys*nmod*n
    little-endian uint64 words (ct_bytes = polys*nmod*n*8 bytes) of buffer, laid out as
    either
      * offsets, shape (count,): the words are contiguous at byte offsets[c]; or
      * segments, shape (count, nseg, 2) of (byte offset, byte length): the words are the
        concatenation of segments[c, 0], segments[c, 1], ... (e.g. the raw blocks of a
        zstd frame); lengths add up to ct_bytes, zero-length segments are allowed, and
        words may straddle segments.
    Any alignment; both kinds may be mixed in one call; nothing is copied.
    Raises FormatError if an offset or segment runs past its buffer or the segments of a
    ciphertext do not add up to ct_bytes, ResidueRangeError (naming source, ciphertext,
    polynomial, prime and coefficient) if a word is not below its prime -- and then acc
    is exactly as it was before the call.
    """
    mods = _moduli(moduli)
    if not isinstance(acc, np.ndarray) or acc.ndim != 4:
        raise ParameterMismatchError("acc must be a uint64 array shaped (count, polys, nmod, n)")
    _residues("acc", acc, mods, writable=True)
    count, polys, nmod, n = acc.shape
    ct_bytes = polys * nmod * n * 8
    srcs = list(sources)
    bufs: list[np.ndarray] = []
    layouts: list[np.ndarray] = []
    offsets = np.empty((len(srcs), count), dtype=np.uint64)  # used if no source is segmented
    segmented = False
    for index, entry in enumerate(srcs):
        buf, layout = entry
        view = _byte_view(buf, index)
        g = np.asarray(layout)
        if g.ndim == 3:
            layouts.append(_source_segments(g, index, count, view.nbytes, ct_bytes))
            segmented = True
        else:
            layouts.append(_source_offsets(g, index, count, view.nbytes, ct_bytes))
            offsets[index] = layouts[-1]
        bufs.append(view)
    if not bufs or count == 0 or ct_bytes == 0:
        return
    if segmented:
        table = _segment_table(layouts, count, ct_bytes)
        fault = _sliced("segmented", acc, bufs, table, mods)
    else:
        table = offsets
        fault = _sliced("contiguous", acc, bufs, table, mods)
    if fault is not None:
        raise _fault(fault, acc, bufs, table, mods)


def sum_hashed(acc: np.ndarray, words: np.ndarray, moduli: ModuliLike) -> bytes:
    """acc += words mod q, range-checked, and the body digest of words' bytes, in ONE read.

    ``words``: one upload's residues, uint64 C-contiguous, acc's shape (validated sizes,
    residues unchecked). The digest is :func:`he_agg.hazmat.wire.digest.body_digest` of
    the words' bytes: each 1 MiB segment is hashed right before the ciphertexts that start
    in it are added, so they are summed from cache, and segments are split over the
    summing threads. On a bad residue ResidueRangeError names it (the single-threaded
    fault) and acc is exactly as it was. The caller compares the digest with what the
    upload claims and, on a mismatch, takes the words back out with :func:`undo_hashed`.
    """
    from ..wire.digest import SEGMENT, body_digest, root, segment_count, segment_digests

    mods = _moduli(moduli)
    if not isinstance(acc, np.ndarray) or acc.ndim != 4:
        raise ParameterMismatchError("acc must be a uint64 array shaped (count, polys, nmod, n)")
    _residues("acc", acc, mods, writable=True)
    if not isinstance(words, np.ndarray) or words.dtype != np.uint64 or not words.flags.c_contiguous \
            or words.size != acc.size:
        raise ParameterMismatchError(f"words must be C-contiguous uint64 of {acc.size} words (acc's shape)")
    count, polys, nmod, n = acc.shape
    ct_words = polys * nmod * n
    ct_bytes = 8 * ct_words
    buf = words.reshape(-1).view(np.uint8)
    view = memoryview(buf)
    table = (np.arange(count, dtype=np.uint64) * np.uint64(ct_bytes))[None]
    nseg = segment_count(buf.nbytes)
    parts = min(thread_count(), nseg)
    if active_backend() != "native" or count == 0:
        digest = body_digest(view)
        sum_ciphertexts(acc, [(buf, table[0])], mods)
        return digest
    impl = _impl()

    def run(first: int, last: int) -> tuple[list[bytes], list[tuple[int, int]], tuple[int, int] | None]:
        digests: list[bytes] = []
        done: list[tuple[int, int]] = []
        for k in range(first, last):
            digests += segment_digests(view, k, k + 1)
            a, b = -(-k * SEGMENT // ct_bytes), min(count, -(-(k + 1) * SEGMENT // ct_bytes))
            if a < b:  # the ciphertexts that start in segment k
                fault = impl.sum_ciphertexts(acc[a:b], [buf], np.ascontiguousarray(table[:, a:b]), mods)
                if fault is not None:
                    return digests, done, (fault[0], fault[1] + a * ct_words)
                done.append((a, b))
        return digests, done, None

    ranges = _slices(nseg, parts) if parts >= 2 and buf.nbytes >= 8 * PARALLEL_MIN_WORDS else [(0, nseg)]
    outcomes = run_everywhere([lambda lo=lo, hi=hi: run(lo, hi) for lo, hi in ranges])
    failed = [o for o in outcomes if isinstance(o, BaseException) or o[2] is not None]
    if not failed:
        return root(buf.nbytes, [d for o in outcomes for d in o[0]])
    for outcome in outcomes:
        if not isinstance(outcome, BaseException):
            for a, b in outcome[1]:  # added: undo exactly
                impl.sum_undo(acc[a:b], [buf], np.ascontiguousarray(table[:, a:b]), mods, "contiguous")
    raise_first(outcomes)
    raise _fault(min(o[2] for o in failed), acc, [buf], table, mods)


def undo_hashed(acc: np.ndarray, words: np.ndarray, moduli: ModuliLike) -> None:
    """acc -= words: the exact undo of a successful :func:`sum_hashed` (e.g. when the digest
    it returned does not match what the upload claims)."""
    if acc.size:
        sub(acc, acc, words.reshape(acc.shape), moduli)


# -- packed residues ---------------------------------------------------------------------


def packed_row_words(n: int, moduli: ModuliLike) -> tuple[int, ...]:
    """64-bit words of one packed row of n residues, per prime: ceil(n * bitlen(q) / 64)."""
    return tuple(-(-n * q.bit_length() // 64) for q in _moduli(moduli))


def packed_ct_bytes(polys: int, n: int, moduli: ModuliLike) -> int:
    """Bytes of one packed ciphertext of ``polys`` polynomials (the wire formula)."""
    return 8 * polys * sum(packed_row_words(n, moduli))


def _packed_padding(
    view: np.ndarray, index: int, offsets: np.ndarray, polys: int, n: int, mods: tuple[int, ...]
) -> None:
    """FormatError unless every row's padding bits (only for n*b % 64 != 0) are zero."""
    words = packed_row_words(n, mods)
    starts = np.cumsum((0,) + words[:-1])
    for l, q in enumerate(mods):
        used = n * q.bit_length() % 64
        if used == 0:
            continue
        last = 8 * (np.arange(polys) * sum(words) + int(starts[l]) + words[l] - 1)  # per polynomial
        where = (offsets.astype(np.int64)[:, None] + last[None, :]).reshape(-1)
        tail = view[where[:, None] + np.arange(8)].view("<u8").reshape(-1)
        bad = np.flatnonzero(tail >> np.uint64(used))
        if bad.size:
            c, p = divmod(int(bad[0]), polys)
            raise FormatError(
                f"source {index}, ciphertext {c}, polynomial {p}, prime {l}: nonzero padding bits "
                "in a packed row (non-canonical encoding)"
            )


def _packed_value(buf: np.ndarray, offset: int, polys_row: tuple[int, int, int], n: int,
                  mods: tuple[int, ...]) -> int:
    """Residue i of row (p, l) of the packed ciphertext at byte `offset` (for messages)."""
    p, l, i = polys_row
    words = packed_row_words(n, mods)
    b = mods[l].bit_length()
    row = offset + 8 * (p * sum(words) + sum(words[:l]))
    lo = row + (i * b) // 8
    chunk = int.from_bytes(buf[lo : lo + 9].tobytes(), "little")
    return (chunk >> ((i * b) % 8)) & ((1 << b) - 1)


def sum_packed(acc: np.ndarray, sources: Sequence[tuple[Any, Any]], moduli: ModuliLike) -> None:
    """acc += every PACKED source, elementwise mod q, unpacking inside one validated pass.

    As :func:`sum_ciphertexts` with offsets layouts (shape (count,)), but ciphertext c of
    a source is :func:`packed_ct_bytes` bytes at byte offsets[c]: its polys*nmod rows in
    order, row (p, l) holding n residues of bitlen(q_l) bits as a little-endian bit string
    padded with zero bits to whole 64-bit words. Raises FormatError for an offset that
    runs past its buffer or nonzero padding bits, ResidueRangeError for a residue not
    below its prime -- and then acc is exactly as it was before the call.
    """
    mods = _moduli(moduli)
    if not isinstance(acc, np.ndarray) or acc.ndim != 4:
        raise ParameterMismatchError("acc must be a uint64 array shaped (count, polys, nmod, n)")
    _residues("acc", acc, mods, writable=True)
    count, polys, nmod, n = acc.shape
    ct_bytes = packed_ct_bytes(polys, n, mods)
    srcs = list(sources)
    bufs: list[np.ndarray] = []
    offsets = np.empty((len(srcs), count), dtype=np.uint64)
    for index, (buf, layout) in enumerate(srcs):
        view = _byte_view(buf, index)
        offsets[index] = _source_offsets(np.asarray(layout), index, count, view.nbytes, ct_bytes)
        _packed_padding(view, index, offsets[index], polys, n, mods)
        bufs.append(view)
    if not bufs or count == 0 or ct_bytes == 0:
        return
    fault = _sliced("packed", acc, bufs, offsets, mods)
    if fault is not None:
        source, word = fault
        if source == len(bufs):
            raise _fault(fault, acc, bufs, offsets, mods)
        c, within = divmod(word, polys * nmod * n)
        p, rest = divmod(within, nmod * n)
        l, i = divmod(rest, n)
        value = _packed_value(bufs[source], int(offsets[source, c]), (p, l, i), n, mods)
        raise ResidueRangeError(
            f"source {source}, ciphertext {c}, polynomial {p}, prime {l}, coefficient {i}: packed "
            f"residue {value} is not below its prime {mods[l]} (corrupt or forged data)"
        )


def unpack_residues(out: np.ndarray, data: Any, moduli: ModuliLike) -> None:
    """out (..., nmod, n) <- packed rows (the layout of :func:`sum_packed`), not range-checked.

    ``data`` must hold exactly rows * sum(packed_row_words) words (FormatError otherwise).
    """
    mods = _moduli(moduli)
    out3 = _residues("out", out, mods, writable=True)
    view = _byte_view(data, 0)
    expected = 8 * out3.shape[0] * sum(packed_row_words(out3.shape[2], mods))
    if view.nbytes != expected:
        raise FormatError(f"packed residues are {view.nbytes} bytes; {expected} expected for {out.shape}")
    if out3.size:
        _impl().unpack_residues(out3, view, mods)


# -- threads -----------------------------------------------------------------------------

THREADS_ENV = "HE_AGG_THREADS"
#: Source words below which a sum runs on the calling thread alone (threads cost ~0.1 ms).
PARALLEL_MIN_WORDS = 1 << 19

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()
_threads_override: int | None = None


def thread_count() -> int:
    """Threads the native sum uses: use_threads(), else $HE_AGG_THREADS, else the CPUs
    this process may run on (os.sched_getaffinity)."""
    if _threads_override is not None:
        return _threads_override
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or not 1 <= int(raw) <= 1024:
            raise ParameterError(f"${THREADS_ENV} must be an integer in [1, 1024], got {raw[:20]!r}")
        return int(raw)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@contextlib.contextmanager
def use_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` summing threads (tests and benchmarks; not thread-safe)."""
    global _threads_override
    if type(count) is not int or not 1 <= count <= 1024:
        raise ParameterError(f"thread count must be an integer in [1, 1024], got {count!r}")
    previous = _threads_override
    _threads_override = count
    try:
        yield
    finally:
        _threads_override = previous


def _executor(size: int) -> ThreadPoolExecutor:
    """The persistent pool, grown to at least ``size`` workers."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < size:
            old, _pool, _pool_size = _pool, ThreadPoolExecutor(size, thread_name_prefix="he_agg-sum"), size
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _slices(count: int, parts: int) -> list[tuple[int, int]]:
    """``count`` ciphertexts cut into ``parts`` contiguous, nearly equal, nonempty ranges."""
    bounds = [count * k // parts for k in range(parts + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(parts)]


def run_everywhere(tasks: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run ``tasks`` at once: the first on this thread, the rest on the summing pool. Waits
    for every task (a slice must finish before anything is rolled back) and returns each
    one's result or the exception it raised, in order."""
    pool = _executor(len(tasks) - 1) if len(tasks) > 1 else None
    futures = [pool.submit(task) for task in tasks[1:]] if pool is not None else []
    outcomes: list[Any] = []
    try:
        outcomes.append(tasks[0]())
    except BaseException as exc:  # noqa: BLE001 -- every task must finish first
        outcomes.append(exc)
    for future in futures:
        try:
            outcomes.append(future.result())
        except BaseException as exc:  # noqa: BLE001
            outcomes.append(exc)
    return outcomes


def raise_first(outcomes: Sequence[Any]) -> None:
    """Raise the first exception among :func:`run_everywhere`'s outcomes, if any."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _canonical(faults: list[tuple[int, int]], nsrc: int) -> tuple[int, int]:
    """The single-threaded fault from the slices' (global) faults: a bad accumulator word
    first, else the lowest source, then its lowest word (every slice reports its own
    canonical fault, and slices are disjoint ranges of ciphertexts)."""
    on_acc = [f for f in faults if f[0] == nsrc]
    return min(on_acc) if on_acc else min(faults)


def _sliced(
    kind: str, acc: np.ndarray, bufs: list[np.ndarray], table: np.ndarray, mods: tuple[int, ...]
) -> tuple[int, int] | None:
    """Run one sum kind (contiguous / segmented / packed) on the active backend, split by
    ciphertext over the summing threads when the backend is native and the work is large.

    Slices are disjoint ranges of ciphertexts (of acc and of every source), each summed by
    the C core with the GIL released. Each slice rolls itself back on a bad residue; the
    slices that succeeded are then undone exactly (heagg_sum_undo), so on any failure acc
    is exactly as it was. The fault reported is the single-threaded one.
    """
    impl = _impl()
    run: Callable[..., tuple[int, int] | None] = getattr(
        impl, {"contiguous": "sum_ciphertexts", "segmented": "sum_segmented", "packed": "sum_packed"}[kind]
    )
    count = acc.shape[0]
    ct_words = acc[0].size
    parts = min(thread_count(), count)
    if active_backend() != "native" or parts < 2 or ct_words * count * len(bufs) < PARALLEL_MIN_WORDS:
        return run(acc, bufs, table, mods)
    ranges = _slices(count, parts)
    pieces = [(acc[lo:hi], np.ascontiguousarray(table[:, lo:hi])) for lo, hi in ranges]
    outcomes = run_everywhere([lambda part=part, sub=sub: run(part, bufs, sub, mods) for part, sub in pieces])
    if all(outcome is None for outcome in outcomes):
        return None
    for (part, sub), outcome in zip(pieces, outcomes):
        if outcome is None:  # this slice added everything: undo it exactly
            impl.sum_undo(part, bufs, sub, mods, kind)
    raise_first(outcomes)
    faults = [(o[0], o[1] + lo * ct_words) for (lo, _), o in zip(ranges, outcomes) if isinstance(o, tuple)]
    return _canonical(faults, len(bufs))


#: Words (rows × primes × n) below which a row-wise kernel runs on the calling thread alone.
PARALLEL_MIN_ROW_WORDS = 1 << 17


def _by_rows(run: Callable[..., Any], rows: int, row_words: int, *arrays: np.ndarray) -> None:
    """Call ``run(*arrays)`` split into contiguous row ranges over the summing threads.

    Row-wise kernels (NTT, pointwise ops, CRT) treat every leading row independently, so a
    split gives the same bits as one call. An array whose leading axis is not ``rows`` (a
    broadcast operand) is passed whole to every slice. The C core releases the GIL.
    """
    parts = min(thread_count(), rows)
    if active_backend() != "native" or parts < 2 or rows * row_words < PARALLEL_MIN_ROW_WORDS:
        run(*arrays)
        return
    ranges = _slices(rows, parts)

    def piece(lo: int, hi: int) -> list[np.ndarray]:
        return [x[lo:hi] if x.shape[0] == rows else x for x in arrays]

    raise_first(run_everywhere([lambda lo=lo, hi=hi: run(*piece(lo, hi)) for lo, hi in ranges]))


# -- NTT ---------------------------------------------------------------------------------


def ntt_forward(data: np.ndarray, moduli: ModuliLike) -> None:
    """In-place negacyclic NTT of (..., nmod, n): natural order in, bit-reversed out (SEAL)."""
    mods = _moduli(moduli)
    d3 = _residues("data", data, mods, writable=True)
    tables.ntt_tables(mods, d3.shape[-1])  # ParameterError if a prime is not 1 mod 2n
    _by_rows(lambda x: _impl().ntt_forward(x, mods), d3.shape[0], d3.shape[1] * d3.shape[2], d3)


def ntt_inverse(data: np.ndarray, moduli: ModuliLike) -> None:
    """In-place inverse of ntt_forward, including the n^-1 scaling."""
    mods = _moduli(moduli)
    d3 = _residues("data", data, mods, writable=True)
    tables.ntt_tables(mods, d3.shape[-1])
    _by_rows(lambda x: _impl().ntt_inverse(x, mods), d3.shape[0], d3.shape[1] * d3.shape[2], d3)


# -- pointwise ---------------------------------------------------------------------------


def mul(out: np.ndarray, a: np.ndarray, b: np.ndarray, moduli: ModuliLike) -> None:
    """out = a * b mod q; b may be (nmod, n), broadcast over the rows of a."""
    mods = _moduli(moduli)
    out3, a3 = _output(out, a, mods)
    b3 = _operand("b", b, out, mods)
    _by_rows(lambda o, x, y: _impl().mul(o, x, y, mods), out3.shape[0], out3.shape[1] * out3.shape[2], out3, a3, b3)


def muladd(
    out: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, moduli: ModuliLike
) -> None:
    """out = a * b + c mod q; b and c may each be (nmod, n), broadcast."""
    mods = _moduli(moduli)
    out3, a3 = _output(out, a, mods)
    b3, c3 = _operand("b", b, out, mods), _operand("c", c, out, mods)
    _by_rows(lambda o, x, y, z: _impl().muladd(o, x, y, z, mods), out3.shape[0], out3.shape[1] * out3.shape[2], out3, a3, b3, c3)


def add(out: np.ndarray, a: np.ndarray, b: np.ndarray, moduli: ModuliLike) -> None:
    """out = a + b mod q; b may be (nmod, n), broadcast."""
    mods = _moduli(moduli)
    out3, a3 = _output(out, a, mods)
    b3 = _operand("b", b, out, mods)
    _by_rows(lambda o, x, y: _impl().add(o, x, y, mods), out3.shape[0], out3.shape[1] * out3.shape[2], out3, a3, b3)


def sub(out: np.ndarray, a: np.ndarray, b: np.ndarray, moduli: ModuliLike) -> None:
    """out = a - b mod q; b may be (nmod, n), broadcast."""
    mods = _moduli(moduli)
    out3, a3 = _output(out, a, mods)
    _impl().sub(out3, a3, _operand("b", b, out, mods), mods)


def mul_scalar(out: np.ndarray, a: np.ndarray, scalars: Sequence[int] | np.ndarray, moduli: ModuliLike) -> None:
    """out = a * scalars[l] mod q_l, one scalar per prime (each < q_l)."""
    mods = _moduli(moduli)
    out3, a3 = _output(out, a, mods)
    values = [int(s) for s in (scalars.tolist() if isinstance(scalars, np.ndarray) else scalars)]
    if len(values) != len(mods):
        raise ParameterMismatchError(f"{len(values)} scalars given for {len(mods)} moduli")
    for l, (s, q) in enumerate(zip(values, mods)):
        if not 0 <= s < q:
            raise ResidueRangeError(f"scalar {l} ({s}) is not in [0, {q})")
    _impl().mul_scalar(out3, a3, np.array(values, dtype=np.uint64), mods)


# -- signed integers and discrete Gaussian samples ---------------------------------------------------

def signed_to_rns(values: np.ndarray, moduli: ModuliLike) -> np.ndarray:
    """int64 values (..., n) -> residues (..., nmod, n): v mod q_l in [0, q_l), any int64."""
    mods = _moduli(moduli)
    if not isinstance(values, np.ndarray):
        raise TypeError(f"values must be a numpy array, got {type(values).__name__}")
    if values.dtype != np.int64:
        raise ParameterMismatchError(f"values must have dtype int64, got {values.dtype}")
    if values.ndim < 1:
        raise ParameterMismatchError("values must have at least one axis (..., n)")
    n = values.shape[-1]
    tables.check_degree(n)
    out = np.empty(values.shape[:-1] + (len(mods), n), dtype=np.uint64)
    if out.size:
        v2 = np.ascontiguousarray(values).reshape(-1, n)
        _impl().signed_to_rns(out.reshape(-1, len(mods), n), v2, mods)
    return out


def _words(words: Any) -> np.ndarray:
    if not isinstance(words, np.ndarray):
        raise TypeError(f"words must be a numpy array, got {type(words).__name__}")
    if words.dtype != np.uint64 or words.ndim != 1:
        raise ParameterMismatchError(f"words must be a 1-D uint64 array, got {words.dtype} {words.shape}")
    return np.ascontiguousarray(words)


def _sample_output(out: np.ndarray | None, count: int, dtype: type) -> np.ndarray:
    if count < 0:
        raise ParameterError(f"count must be non-negative, got {count}")
    if out is None:
        return np.empty(count, dtype=dtype)
    if not isinstance(out, np.ndarray) or out.dtype != dtype or out.ndim != 1:
        raise ParameterMismatchError(f"out must be a 1-D {np.dtype(dtype)} array")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ParameterMismatchError("out must be C-contiguous and writable")
    if out.size < count:
        raise ParameterMismatchError(f"out holds {out.size} values; {count} requested")
    return out[:count]


# -- exact discrete Gaussian (docs/SAMPLER.md) -------------------------------------------

#: Plan layout (uint64 words): shift b, κ·2^64; DG_ROWS base thresholds (hi64, lo32 of a
#: 96-bit value); DG_TABLES tables of 2^DG_TABLE_BITS entries T_j[i] = 2^(−i·16^−j)
#: (Q127 as hi64, lo64); the Taylor coefficients (ln 2)^k/k! of 2^−r for k < DG_POLY_WIDE
#: (Q127, hi64, lo64) and for DG_POLY_WIDE ≤ k ≤ DG_POLY (Q64, one word each).
#: :func:`he_agg.hazmat.sampling.discrete_gaussian_plan` builds it.
DG_ROWS = 48
DG_TABLES = 3
DG_TABLE_BITS = 4
DG_POLY = 6
DG_POLY_WIDE = 4
DG_PLAN_WORDS = 2 + 2 * DG_ROWS + 2 * DG_TABLES * (1 << DG_TABLE_BITS) + 2 * DG_POLY_WIDE + (DG_POLY + 1 - DG_POLY_WIDE)
DG_WORDS_PER_TRIAL = 4


def discrete_gaussian_from_words(
    words: np.ndarray, count: int, plan: np.ndarray, *,
    out_high: np.ndarray | None = None, out_low: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact discrete Gaussian integers from uniform words (docs/SAMPLER.md §2).

    Words are taken four at a time (one trial each), in order; an accepted trial gives one
    value v = high·2^32 + low (low in [0, 2^32)). Stops after ``count`` values or when
    fewer than four words are left. Returns (high, low, consumed): views of the values
    produced (int64; of out_high/out_low if given) and the number of words used, a
    multiple of 4; a second call on words[consumed:] continues exactly. Integer-only: every
    backend gives the same bits. ``plan`` is a DG_PLAN_WORDS uint64 array from
    :func:`he_agg.hazmat.sampling.discrete_gaussian_plan`.
    """
    w = _words(words)
    if not isinstance(plan, np.ndarray) or plan.dtype != np.uint64 or plan.shape != (DG_PLAN_WORDS,):
        raise ParameterMismatchError(f"plan must be a uint64 array of {DG_PLAN_WORDS} words")
    if int(plan[0]) > 63:
        raise ParameterError(f"plan shift must be at most 63, got {int(plan[0])}")
    plan = np.ascontiguousarray(plan)
    high = _sample_output(out_high, int(count), np.int64)
    low = _sample_output(out_low, int(count), np.int64)
    produced, consumed = _impl().discrete_gaussian(high, low, w, plan)
    return high[:produced], low[:produced], consumed


# -- CRT ---------------------------------------------------------------------------------


def crt_to_double(data: np.ndarray, moduli: ModuliLike, scale: float) -> np.ndarray:
    """(..., nmod, n) residues -> float64 (..., n): exact CRT lift, centred, divided by scale.

    The lift x in [0, Q) maps to x if x <= (Q-1)/2 else x - Q; the result's relative
    error is about nmod * 2^-52 (Garner digits, no cancellation; see csrc/crt.c).
    """
    mods = _moduli(moduli)
    d3 = _residues("data", data, mods)
    radix = crt_radix(mods, scale)
    out = np.empty(data.shape[:-2] + (data.shape[-1],), dtype=np.float64)
    _by_rows(lambda o, x: _impl().crt_to_double(o, x, mods, radix), d3.shape[0], d3.shape[1] * d3.shape[2],
             out.reshape(-1, data.shape[-1]), d3)
    return out
