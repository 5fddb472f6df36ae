"""Residue kernels: sum, NTT, pointwise arithmetic and CRT, behind one signature.

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
import warnings
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from he_agg.errors import (
    FormatError,
    NativeCoreError,
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
    "minimal_root",
    "mul",
    "mul_scalar",
    "muladd",
    "ntt_forward",
    "ntt_inverse",
    "ntt_tables",
    "sub",
    "sum_ciphertexts",
    "use_backend",
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


def _source_offsets(offsets: Any, index: int, count: int, nbytes: int, ct_bytes: int) -> np.ndarray:
    o = np.asarray(offsets)
    if o.size == 0:
        o = o.astype(np.uint64)  # np.asarray([]) is float64
    if o.shape != (count,) or o.dtype.kind not in "ui":
        raise ParameterMismatchError(
            f"source {index}: offsets must be {count} integers (one per ciphertext), "
            f"got {o.dtype} {o.shape}"
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


def _fault(
    fault: tuple[int, int], acc: np.ndarray, bufs: list[np.ndarray], offsets: np.ndarray,
    moduli: tuple[int, ...],
) -> ResidueRangeError:
    source, word = fault
    _, polys, nmod, n = acc.shape
    c, within = divmod(word, polys * nmod * n)
    p, rest = divmod(within, nmod * n)
    l, i = divmod(rest, n)
    if source == len(bufs):
        value, where = int(acc[c, p, l, i]), "the accumulator"
    else:
        start = int(offsets[source, c]) + 8 * within
        value, where = int.from_bytes(bufs[source][start : start + 8].tobytes(), "little"), f"source {source}"
    return ResidueRangeError(
        f"{where}, ciphertext {c}, polynomial {p}, prime {l}, coefficient {i}: residue "
        f"{value} is not below its prime {moduli[l]} (corrupt or forged data)"
    )


def sum_ciphertexts(
    acc: np.ndarray, sources: Sequence[tuple[Any, Any]], moduli: ModuliLike
) -> None:
    """acc += every source, elementwise mod q, in one validated pass.

    acc: uint64 C-contiguous (count, polys, nmod, n), every word < its prime.
    sources: (buffer, offsets) pairs; ciphertext c of a source is polys*nmod*n
    little-endian uint64 words at byte offsets[c] of buffer (any alignment).
    Raises FormatError if an offset runs past its buffer, ResidueRangeError (naming
    source, ciphertext, polynomial, prime and coefficient) if a word is not below its
    prime -- and then acc is exactly as it was before the call.
    """
    mods = _moduli(moduli)
    if not isinstance(acc, np.ndarray) or acc.ndim != 4:
        raise ParameterMismatchError("acc must be a uint64 array shaped (count, polys, nmod, n)")
    _residues("acc", acc, mods, writable=True)
    count, polys, nmod, n = acc.shape
    ct_bytes = polys * nmod * n * 8
    srcs = list(sources)
    bufs: list[np.ndarray] = []
    offsets = np.empty((len(srcs), count), dtype=np.uint64)
    for index, entry in enumerate(srcs):
        buf, offs = entry
        view = _byte_view(buf, index)
        offsets[index] = _source_offsets(offs, index, count, view.nbytes, ct_bytes)
        bufs.append(view)
    if not bufs or count == 0 or ct_bytes == 0:
        return
    fault = _impl().sum_ciphertexts(acc, bufs, offsets, mods)
    if fault is not None:
        raise _fault(fault, acc, bufs, offsets, mods)


# -- NTT ---------------------------------------------------------------------------------


def ntt_forward(data: np.ndarray, moduli: ModuliLike) -> None:
    """In-place negacyclic NTT of (..., nmod, n): natural order in, bit-reversed out (SEAL)."""
    mods = _moduli(moduli)
    d3 = _residues("data", data, mods, writable=True)
    tables.ntt_tables(mods, d3.shape[-1])  # ParameterError if a prime is not 1 mod 2n
    _impl().ntt_forward(d3, mods)


def ntt_inverse(data: np.ndarray, moduli: ModuliLike) -> None:
    """In-place inverse of ntt_forward, including the n^-1 scaling."""
    mods = _moduli(moduli)
    d3 = _residues("data", data, mods, writable=True)
    tables.ntt_tables(mods, d3.shape[-1])
    _impl().ntt_inverse(d3, mods)


# -- pointwise ---------------------------------------------------------------------------


def mul(out: np.ndarray, a: np.ndarray, b: np.ndarray, moduli: ModuliLike) -> None:
    """out = a * b mod q; b may be (nmod, n), broadcast over the rows of a."""
    mods = _moduli(moduli)
    out3, a3 = _output(out, a, mods)
    _impl().mul(out3, a3, _operand("b", b, out, mods), mods)


def muladd(
    out: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, moduli: ModuliLike
) -> None:
    """out = a * b + c mod q; b and c may each be (nmod, n), broadcast."""
    mods = _moduli(moduli)
    out3, a3 = _output(out, a, mods)
    b3, c3 = _operand("b", b, out, mods), _operand("c", c, out, mods)
    _impl().muladd(out3, a3, b3, c3, mods)


def add(out: np.ndarray, a: np.ndarray, b: np.ndarray, moduli: ModuliLike) -> None:
    """out = a + b mod q; b may be (nmod, n), broadcast."""
    mods = _moduli(moduli)
    out3, a3 = _output(out, a, mods)
    _impl().add(out3, a3, _operand("b", b, out, mods), mods)


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
    _impl().crt_to_double(out.reshape(-1, data.shape[-1]), d3, mods, radix)
    return out
