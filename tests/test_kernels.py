"""Kernels against Python big integers, across every backend, bit for bit.

Covers sum_ciphertexts (lazy reduction, validation, rollback, bounds), the pointwise
operations (broadcasting, aliasing, each native code path forced), crt_to_double (exact
fractions) and backend selection. NTT tests live in test_ntt.py; signed_to_rns and the
Gaussian sampler in test_noise_kernels.py.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Iterator, Sequence
from fractions import Fraction

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from he_agg.errors import (
    FormatError,
    NativeCoreError,
    ParameterError,
    ParameterMismatchError,
    ResidueRangeError,
)
from he_agg.hazmat import kernels
from he_agg.params import is_prime

from .support import forced_native_path, native_lib

BACKENDS = kernels.available_backends()

# SEAL's 60-bit primes for N = 8192 (q = 1 mod 2^14).
SEAL60 = (1152921504606748673, 1152921504606830593, 1152921504606584833)
SEAL40 = (1099510890497, 1099511480321)


def ntt_primes(bits: int, n: int, count: int) -> tuple[int, ...]:
    """The `count` largest primes q < 2^bits with q = 1 mod 2n."""
    out, q = [], (1 << bits) - 2 * n + 1
    while len(out) < count:
        if is_prime(q):
            out.append(q)
        q -= 2 * n
    return tuple(out)


P61 = ntt_primes(61, 8192, 2)  # 61-bit: the tightest lazy-reduction window (7)
SMALL = (12289, 786433)
MODULI_SETS = [SEAL60[:2], SEAL60, P61, SMALL, (17,), SEAL40 + SEAL60[:1]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    with kernels.use_backend(request.param):
        yield request.param


def test_native_core_is_built() -> None:
    """The C core must be importable unless explicitly waived (HE_AGG_ALLOW_NO_NATIVE=1)."""
    if os.environ.get("HE_AGG_ALLOW_NO_NATIVE") == "1":
        pytest.skip("native core explicitly waived")
    assert "native" in BACKENDS, kernels._load_errors.get("native")


# -- helpers -------------------------------------------------------------------------------


def residues(rng: np.random.Generator, shape: tuple[int, ...], moduli: Sequence[int],
             near: float = 0.0) -> np.ndarray:
    """Uniform residues (..., nmod, n); a fraction `near` replaced by q - 1 - small."""
    lead, n = shape[:-2], shape[-1]
    planes = []
    for q in moduli:
        x = rng.integers(0, q, size=lead + (n,), dtype=np.uint64)
        if near:
            mask = rng.random(x.shape) < near
            x[mask] = np.uint64(q - 1) - rng.integers(0, min(q, 4), size=int(mask.sum()), dtype=np.uint64)
        planes.append(x)
    return np.stack(planes, axis=-2)


def pack(cts: np.ndarray, rng: np.random.Generator, prefix: int) -> tuple[bytes, np.ndarray]:
    """Ciphertexts (count, polys, nmod, n) into one bytes object: a `prefix`-byte head,
    then the ciphertexts in shuffled order with random gaps; returns (bytes, offsets)."""
    count = cts.shape[0]
    order = rng.permutation(count)
    parts, offsets, pos = [bytes(rng.integers(0, 256, prefix, dtype=np.uint8))], [0] * count, prefix
    for c in order:
        gap = int(rng.integers(0, 3))
        parts.append(b"\xee" * gap)
        pos += gap
        offsets[c] = pos
        blob = cts[c].astype("<u8").tobytes()
        parts.append(blob)
        pos += len(blob)
    return b"".join(parts), np.array(offsets, dtype=np.uint64)


def big_sum(acc: np.ndarray, srcs: Sequence[np.ndarray], moduli: Sequence[int]) -> np.ndarray:
    """(acc + sum srcs) mod q with Python integers."""
    q = np.array(moduli, dtype=object).reshape(-1, 1)
    total = acc.astype(object)
    for s in srcs:
        total = total + s.astype(object)
    return (total % q).astype(np.uint64)


def run_all_backends(fn, *arrays: np.ndarray) -> list[list[np.ndarray]]:  # type: ignore[no-untyped-def]
    """Call fn(*copies) once per backend; returns the (mutated) copies per backend."""
    results = []
    for name in BACKENDS:
        copies = [a.copy() for a in arrays]
        with kernels.use_backend(name):
            fn(*copies)
        results.append(copies)
    return results


# -- sum_ciphertexts ------------------------------------------------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    moduli=st.sampled_from(MODULI_SETS),
    nsrc=st.sampled_from([1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 40]),
    count=st.integers(1, 3),
    polys=st.integers(1, 2),
    n=st.sampled_from([2, 8, 64]),
    near=st.sampled_from([0.0, 0.5, 1.0]),
    aligned=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_sum_matches_big_ints(moduli: tuple[int, ...], nsrc: int, count: int, polys: int,
                              n: int, near: float, aligned: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (count, polys, len(moduli), n)
    acc = residues(rng, shape, moduli, near)
    cts = [residues(rng, shape, moduli, near) for _ in range(nsrc)]
    sources = [pack(c, rng, 0 if aligned else 1 + 2 * int(rng.integers(0, 4))) for c in cts]
    expected = big_sum(acc, cts, moduli)
    for name in BACKENDS:
        got = acc.copy()
        with kernels.use_backend(name):
            kernels.sum_ciphertexts(got, sources, moduli)
        assert np.array_equal(got, expected), name


def test_sum_large_degree_all_near_modulus(backend: str) -> None:
    """n = 8192 (several blocks), 40 sources of q-1: every lazy window overflows if wrong."""
    moduli = P61
    shape = (2, 2, 2, 8192)
    q = np.array(moduli, dtype=np.uint64).reshape(2, 1)
    acc = np.broadcast_to(q - np.uint64(1), shape).copy()
    ct = np.broadcast_to(q - np.uint64(1), shape).copy()
    blob = b"\x07" + ct.tobytes()
    offs = 1 + ct[0].nbytes * np.arange(2, dtype=np.uint64)
    kernels.sum_ciphertexts(acc, [(blob, offs)] * 40, moduli)
    # (q-1) * 41 mod q = -41 mod q
    assert np.array_equal(acc, np.broadcast_to(q - np.uint64(41), shape))


def test_sum_buffer_kinds(backend: str) -> None:
    moduli = SEAL60[:2]
    rng = np.random.default_rng(7)
    shape = (2, 2, 2, 16)
    acc = residues(rng, shape, moduli)
    cts = [residues(rng, shape, moduli) for _ in range(6)]
    offs = cts[0][0].nbytes * np.arange(2, dtype=np.uint64)
    sources = [
        (cts[0].tobytes(), offs),
        (bytearray(b"\x00" + cts[1].tobytes()), offs + 1),
        (memoryview(b"abc" + cts[2].tobytes()), (offs + 3).astype(np.int64)),
        (cts[3], offs),  # a uint64 ndarray
        (np.frombuffer(b"\x01" + cts[4].tobytes(), dtype=np.uint8), offs + 1),
        (memoryview(cts[5]), list(offs.tolist())),  # format 'Q', offsets as a list
    ]
    got = acc.copy()
    kernels.sum_ciphertexts(got, sources, moduli)
    assert np.array_equal(got, big_sum(acc, cts, moduli))


def test_sum_empty_is_noop(backend: str) -> None:
    acc = np.zeros((2, 2, 1, 8), dtype=np.uint64)
    kernels.sum_ciphertexts(acc, [], (17,))
    kernels.sum_ciphertexts(np.zeros((0, 2, 1, 8), dtype=np.uint64), [(b"", [])], (17,))
    assert not acc.any()


def _fault_setup(nsrc: int = 9) -> tuple[tuple[int, ...], np.ndarray, list[np.ndarray], list[np.ndarray]]:
    moduli = SEAL60[:2]
    rng = np.random.default_rng(11)
    shape = (2, 2, 2, 8192)
    acc = residues(rng, shape, moduli, near=0.3)
    cts = [residues(rng, shape, moduli, near=0.3) for _ in range(nsrc)]
    return moduli, acc, cts, [np.uint64(q) for q in moduli]


def _sources(cts: Sequence[np.ndarray]) -> list[tuple[bytes, np.ndarray]]:
    offs = 1 + cts[0][0].nbytes * np.arange(cts[0].shape[0], dtype=np.uint64)
    return [(b"\x55" + c.tobytes(), offs) for c in cts]


def _assert_bad_residue_rolls_back(build_sources: Any, where: tuple[int, int, int, int, int], value: str) -> None:
    """Plant one bad word; the error names it exactly and the accumulator is untouched."""
    moduli, acc, cts, qs = _fault_setup()
    s, c, p, l, i = where
    bad = int(qs[l]) if value == "q" else 2**64 - 1
    cts[s][c, p, l, i] = np.uint64(bad)
    before = acc.copy()
    with pytest.raises(ResidueRangeError) as info:
        kernels.sum_ciphertexts(acc, build_sources(cts), moduli)
    msg = str(info.value)
    for part in (f"source {s}", f"ciphertext {c}", f"polynomial {p}", f"prime {l}",
                 f"coefficient {i}", str(bad)):
        assert part in msg, (part, msg)
    assert np.array_equal(acc, before)


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ((0, 0, 0, 0, 0), "q"),                # the very first word
        ((8, 1, 1, 1, 8191), "q"),             # the very last word: every block rolled back
        ((3, 1, 0, 1, 4000), "max"),           # inside a 4-way sweep, 2^64 - 1
        ((8, 0, 1, 0, 2047), "max"),           # a tail source, end of a block
        ((5, 1, 1, 0, 2048), "q"),             # first word of a later block
    ],
)
def test_sum_bad_residue_rolls_back(backend: str, where: tuple[int, int, int, int, int],
                                     value: str) -> None:
    _assert_bad_residue_rolls_back(_sources, where, value)


def test_sum_fault_is_canonical_across_backends() -> None:
    """Several bad words: every backend names the lowest source, then its lowest word."""
    moduli, acc, cts, qs = _fault_setup()
    cts[6][0, 0, 0, 5] = qs[0]            # early block, higher source
    cts[2][1, 1, 1, 8000] = qs[1]         # late block, lowest bad source
    cts[2][1, 1, 1, 9] = qs[1] + np.uint64(1)  # a lower word in the same ciphertext of source 2
    messages = set()
    for name in BACKENDS:
        with kernels.use_backend(name):
            got = acc.copy()
            with pytest.raises(ResidueRangeError) as info:
                kernels.sum_ciphertexts(got, _sources(cts), moduli)
            assert np.array_equal(got, acc), name
            messages.add(str(info.value))
    assert len(messages) == 1
    assert "source 2, ciphertext 1, polynomial 1, prime 1, coefficient 9:" in messages.pop()


def test_sum_bad_accumulator(backend: str) -> None:
    moduli, acc, cts, qs = _fault_setup(nsrc=2)
    acc[1, 0, 1, 77] = qs[1]
    before = acc.copy()
    with pytest.raises(ResidueRangeError, match="accumulator, ciphertext 1, polynomial 0, prime 1, coefficient 77"):
        kernels.sum_ciphertexts(acc, _sources(cts), moduli)
    assert np.array_equal(acc, before)


def test_sum_offsets_out_of_bounds(backend: str) -> None:
    moduli = (17, 97)
    acc = np.zeros((3, 1, 2, 4), dtype=np.uint64)
    ct_bytes = 2 * 4 * 8
    good = (bytes(3 * ct_bytes + 1), 1 + ct_bytes * np.arange(3, dtype=np.uint64))
    cases = [
        (np.array([0, ct_bytes, 2 * ct_bytes + 2], dtype=np.uint64), "source 1, ciphertext 2"),
        (np.array([0, 2**64 - 1, 0], dtype=np.uint64), "source 1, ciphertext 1"),
        (np.array([0, -8, 0], dtype=np.int64), "source 1, ciphertext 1"),
    ]
    for offs, where in cases:
        with pytest.raises(FormatError, match=where):
            kernels.sum_ciphertexts(acc, [good, (bytes(3 * ct_bytes + 1), offs)], moduli)
    with pytest.raises(FormatError, match="source 0, ciphertext 0"):
        kernels.sum_ciphertexts(acc, [(bytes(ct_bytes - 1), np.zeros(3, np.uint64))], moduli)
    with pytest.raises(ParameterMismatchError, match="source 0"):
        kernels.sum_ciphertexts(acc, [(bytes(4 * ct_bytes), np.zeros(2, np.uint64))], moduli)
    strided = np.zeros(8 * ct_bytes, dtype=np.uint8)[::2]
    with pytest.raises(FormatError, match="contiguous"):
        kernels.sum_ciphertexts(acc, [(strided, np.zeros(3, np.uint64))], moduli)
    assert not acc.any()


def test_sum_rejects_bad_arguments() -> None:
    buf = (bytes(64), np.zeros(1, np.uint64))
    with pytest.raises(ParameterMismatchError):
        kernels.sum_ciphertexts(np.zeros((1, 1, 1, 8), dtype=np.int64), [buf], (17,))
    with pytest.raises(ParameterMismatchError):
        kernels.sum_ciphertexts(np.zeros((1, 1, 8), dtype=np.uint64), [buf], (17,))
    with pytest.raises(ParameterMismatchError):
        kernels.sum_ciphertexts(np.zeros((1, 1, 2, 8), dtype=np.uint64), [buf], (17,))
    ro = np.zeros((1, 1, 1, 8), dtype=np.uint64)
    ro.flags.writeable = False
    with pytest.raises(ParameterMismatchError, match="read-only"):
        kernels.sum_ciphertexts(ro, [buf], (17,))
    with pytest.raises(ParameterError):
        kernels.sum_ciphertexts(np.zeros((1, 1, 1, 6), dtype=np.uint64), [buf], (17,))


# -- sum_ciphertexts over segmented sources (TenSEAL's zstd raw blocks) ---------------------

TENSEAL_CUTS = (131072 - 97, 2 * 131072 - 97)  # raw blocks of a (2, 2, 8192) ciphertext


def pack_segments(cts: np.ndarray, rng: np.random.Generator, cuts: Sequence[Sequence[int]],
                  shuffle: bool = True) -> tuple[bytes, np.ndarray]:
    """Ciphertexts (count, polys, nmod, n) into one bytes object as segments: ciphertext c
    is cut at the sorted byte positions cuts[c] (repeats make zero-length segments); the
    pieces follow a 1-byte head, each after 0-3 junk bytes (3 if not shuffle), in random
    order (in order if not shuffle). Returns (bytes, segments of shape (count, nseg, 2))."""
    pieces = []
    for c, ct in enumerate(cts):
        blob = ct.astype("<u8").tobytes()
        bounds = [0, *cuts[c], len(blob)]
        pieces += [(c, k, blob[a:b]) for k, (a, b) in enumerate(itertools.pairwise(bounds))]
    order = rng.permutation(len(pieces)) if shuffle else range(len(pieces))
    segments = np.zeros((len(cts), len(cuts[0]) + 1, 2), dtype=np.uint64)
    parts, pos = [b"\x99"], 1
    for index in order:
        c, k, piece = pieces[index]
        gap = int(rng.integers(0, 4)) if shuffle else 3
        parts += [b"\xee" * gap, piece]
        pos += gap
        segments[c, k] = (pos, len(piece))
        pos += len(piece)
    return b"".join(parts), segments


def random_cuts(rng: np.random.Generator, ct_bytes: int, count: int, nseg: int) -> list[list[int]]:
    """nseg - 1 cut points per ciphertext: uniform, inside a word (odd), or repeated."""
    out = []
    for _ in range(count):
        cuts: list[int] = []
        for _ in range(nseg - 1):
            kind = int(rng.integers(0, 3))
            if kind == 2 and cuts:
                cuts.append(cuts[-1])  # a zero-length segment
            elif kind == 1:
                cuts.append(min(8 * int(rng.integers(0, ct_bytes // 8)) + 1 + 2 * int(rng.integers(0, 3)), ct_bytes))
            else:
                cuts.append(int(rng.integers(0, ct_bytes + 1)))
        out.append(sorted(cuts))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    moduli=st.sampled_from(MODULI_SETS),
    nsrc=st.integers(1, 20),
    count=st.integers(1, 3),
    polys=st.integers(1, 2),
    n=st.sampled_from([2, 8, 64, 4096]),
    near=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_sum_segmented_matches_big_ints(moduli: tuple[int, ...], nsrc: int, count: int, polys: int,
                                        n: int, near: float, seed: int) -> None:
    """Random cut points (odd bytes, zero-length segments, 1-5 segments), sources of either
    kind in one call: every backend equals the big-int sum and the contiguous path."""
    rng = np.random.default_rng(seed)
    shape = (count, polys, len(moduli), n)
    ct_bytes = polys * len(moduli) * n * 8
    acc = residues(rng, shape, moduli, near)
    cts = [residues(rng, shape, moduli, near) for _ in range(nsrc)]
    kinds = rng.integers(0, 6, size=nsrc)  # 0: offsets, else that many segments
    sources = [pack(c, rng, 1) if k == 0 else pack_segments(c, rng, random_cuts(rng, ct_bytes, count, k))
               for c, k in zip(cts, kinds)]
    contiguous = [pack(c, rng, 3) for c in cts]
    expected = big_sum(acc, cts, moduli)
    for name in BACKENDS:
        got, flat = acc.copy(), acc.copy()
        with kernels.use_backend(name):
            kernels.sum_ciphertexts(got, sources, moduli)
            kernels.sum_ciphertexts(flat, contiguous, moduli)
        assert np.array_equal(got, expected), name
        assert np.array_equal(got, flat), name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nsrc=st.integers(1, 12),
    n=st.sampled_from([8, 64, 4096]),
    nbad=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_sum_segmented_random_faults(nsrc: int, n: int, nbad: int, seed: int) -> None:
    """Bad words anywhere, random segmentations: every backend names the canonical fault
    and leaves acc as it was."""
    moduli = P61
    rng = np.random.default_rng(seed)
    shape = (2, 2, len(moduli), n)
    acc = residues(rng, shape, moduli, near=0.5)
    cts = [residues(rng, shape, moduli, near=0.5) for _ in range(nsrc)]
    faults = []
    for _ in range(nbad):
        s, word = int(rng.integers(0, nsrc)), int(rng.integers(0, cts[0].size))
        c, p, l, i = np.unravel_index(word, shape)
        value = int(rng.integers(moduli[l], 2**64, dtype=np.uint64))
        cts[s][c, p, l, i] = np.uint64(value)
        faults.append((s, word, f"source {s}, ciphertext {c}, polynomial {p}, prime {l}, coefficient {i}: "))
    s0, w0, _ = min(faults)
    expected = next(text for s, w, text in faults if (s, w) == (s0, w0))
    expected += f"residue {int(cts[s0].reshape(-1)[w0])} "
    ct_bytes = cts[0][0].nbytes
    sources = [pack(c, rng, 1) if rng.random() < 0.3 else
               pack_segments(c, rng, random_cuts(rng, ct_bytes, 2, int(rng.integers(1, 6)))) for c in cts]
    for name in BACKENDS:
        got = acc.copy()
        with kernels.use_backend(name), pytest.raises(ResidueRangeError) as info:
            kernels.sum_ciphertexts(got, sources, moduli)
        assert expected in str(info.value), (name, expected, str(info.value))
        assert np.array_equal(got, acc), name


def test_sum_segmented_byte_pieces(backend: str) -> None:
    """Every word straddles eight 1-byte segments, with zero-length ones around them."""
    moduli = SEAL60[:2]
    rng = np.random.default_rng(21)
    shape = (2, 1, 2, 8)
    acc = residues(rng, shape, moduli, near=0.5)
    cts = [residues(rng, shape, moduli, near=0.5) for _ in range(6)]
    cuts = [[0, 0, *range(1, 128), 128, 128]] * 2
    sources = [pack_segments(c, rng, cuts) for c in cts]
    got = acc.copy()
    kernels.sum_ciphertexts(got, sources, moduli)
    assert np.array_equal(got, big_sum(acc, cts, moduli))


def test_sum_segmented_one_byte_segments_full_ciphertext() -> None:
    """A full-size ciphertext cut into 262,144 one-byte segments (TenSEAL frames of 1-byte
    zstd blocks): every backend gives the same exact sum, and the native core finds each
    word's segment by binary search (the former linear scan took ~8 s here)."""
    import time

    moduli = SEAL60[:2]
    rng = np.random.default_rng(29)
    shape = (1, 2, 2, 8192)
    acc = residues(rng, shape, moduli)
    cts = [residues(rng, shape, moduli) for _ in range(2)]
    ct_bytes = cts[0][0].nbytes
    one_byte = np.stack([np.arange(ct_bytes), np.ones(ct_bytes, dtype=np.int64)], axis=-1)[None].astype(np.uint64)
    sources = [(cts[0].tobytes(), one_byte), (cts[1].tobytes(), np.zeros(1, dtype=np.uint64))]
    expected = big_sum(acc, cts, moduli)
    for name in BACKENDS:
        got = acc.copy()
        with kernels.use_backend(name):
            kernels.sum_ciphertexts(got, sources, moduli)  # warm-up (numba compiles)
            got = acc.copy()
            start = time.perf_counter()
            kernels.sum_ciphertexts(got, sources, moduli)
            elapsed = time.perf_counter() - start
        assert np.array_equal(got, expected), name
        assert elapsed < 3.0, (name, elapsed)  # a generous sanity cap, not a benchmark


@pytest.mark.skipif("native" not in BACKENDS, reason="native core not built")
def test_native_segment_ends_must_not_decrease() -> None:
    """Lengths whose running sum wraps past 2^64 back to one ciphertext are refused, untouched."""
    from he_agg.hazmat.kernels import _native

    acc = np.ones((1, 1, 1, 8), dtype=np.uint64)
    segs = np.array([[[[0, 2**64 - 8], [0, 72]]]], dtype=np.uint64)  # ends 2^64 - 8, then 64
    with pytest.raises(ParameterError, match="sum_segmented"):
        _native.sum_segmented(acc, [np.zeros(64, np.uint8)], segs, (17,))
    assert (acc == 1).all()


def _zstd_raw_segments(frame: bytes, base: int, skip: int) -> list[tuple[int, int]]:
    """(offset, length) of the raw blocks of the zstd frame at frame[base:], dropping the
    first `skip` payload bytes (SEAL's ciphertext header)."""
    assert frame[base : base + 4] == b"\x28\xb5\x2f\xfd"
    fhd = frame[base + 4]
    single = (fhd >> 5) & 1
    pos = base + 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    pos += (single, 2, 4, 8)[fhd >> 6]
    out, last = [], 0
    while not last:
        header = int.from_bytes(frame[pos : pos + 3], "little")
        last, kind, size = header & 1, (header >> 1) & 3, header >> 3
        assert kind == 0, "TenSEAL-like data is stored in raw blocks"
        take = min(skip, size)
        out.append((pos + 3 + take, size - take))
        skip -= take
        pos += 3 + size
    return out


def test_sum_zstd_raw_blocks(backend: str) -> None:
    """Sum straight out of real zstd frames (as SEAL writes them: a 97-byte header, then
    the residues), one frame per ciphertext, zero-copy."""
    zstandard = pytest.importorskip("zstandard")
    moduli = SEAL60[:2]
    rng = np.random.default_rng(23)
    shape = (2, 2, 2, 8192)
    acc = residues(rng, shape, moduli)
    cts = [residues(rng, shape, moduli) for _ in range(5)]
    sources = []
    for ct in cts:
        blob, segments = b"\x0a\x05junk", []
        for c in range(ct.shape[0]):
            frame = zstandard.ZstdCompressor(level=3).compress(bytes(97) + ct[c].tobytes())
            segments.append(_zstd_raw_segments(blob + frame, len(blob), 97))
            blob += frame
        sources.append((blob, np.array(segments, dtype=np.uint64)))
    assert [length for _, length in sources[0][1][0].tolist()] == [131072 - 97, 131072, 97]
    got = acc.copy()
    kernels.sum_ciphertexts(got, sources, moduli)
    assert np.array_equal(got, big_sum(acc, cts, moduli))


def _segmented_sources(cts: Sequence[np.ndarray]) -> list[tuple[bytes, np.ndarray]]:
    """TenSEAL-like raw-block splits (3-byte gaps, odd offsets); sources 1 and 6 contiguous."""
    rng = np.random.default_rng(0)
    flat = _sources(cts)
    return [flat[s] if s in (1, 6) else pack_segments(c, rng, [TENSEAL_CUTS] * c.shape[0], shuffle=False)
            for s, c in enumerate(cts)]


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ((0, 0, 0, 0, 0), "q"),                # the very first word
        ((3, 1, 0, 1, 8179), "q"),             # straddles the first block boundary
        ((8, 0, 1, 1, 8179), "max"),           # straddles the second, in a tail source
        ((5, 1, 0, 1, 8000), "max"),           # read in place inside a block that straddles
        ((2, 1, 1, 1, 8191), "q"),             # the last word, in the 97-byte block
    ],
)
def test_sum_segmented_bad_residue_rolls_back(backend: str, where: tuple[int, int, int, int, int],
                                              value: str) -> None:
    _assert_bad_residue_rolls_back(_segmented_sources, where, value)


def test_sum_segmented_fault_is_canonical_across_backends() -> None:
    moduli, acc, cts, qs = _fault_setup()
    cts[1][0, 0, 0, 5] = qs[0]                      # early word of a higher (contiguous) source
    cts[0][1, 1, 1, 8179] = qs[1]                   # straddling, late
    cts[0][1, 0, 1, 8179] = qs[1] + np.uint64(3)    # straddling, the lowest bad word
    messages = set()
    for name in BACKENDS:
        with kernels.use_backend(name):
            got = acc.copy()
            with pytest.raises(ResidueRangeError) as info:
                kernels.sum_ciphertexts(got, _segmented_sources(cts), moduli)
            assert np.array_equal(got, acc), name
            messages.add(str(info.value))
    assert len(messages) == 1
    assert f"source 0, ciphertext 1, polynomial 0, prime 1, coefficient 8179: residue {qs[1] + 3}" in messages.pop()


def test_sum_segments_out_of_bounds(backend: str) -> None:
    moduli = (17, 97)
    acc = np.zeros((3, 1, 2, 4), dtype=np.uint64)
    ct_bytes = 2 * 4 * 8
    buf = bytes(3 * ct_bytes + 5)
    good = np.array([[[1 + ct_bytes * c, 30], [31 + ct_bytes * c, 34]] for c in range(3)], dtype=np.uint64)

    def edited(c: int, k: int, field: int, value: int, dtype: type = np.uint64) -> np.ndarray:
        g = good.astype(dtype)
        g[c, k, field] = value
        return g

    cases = [
        (edited(2, 1, 0, len(buf) - 33), "ciphertext 2: segment 1 .* runs past the end"),
        (edited(1, 0, 0, 2**64 - 1), "ciphertext 1: segment 0 .* runs past the end"),
        (edited(1, 0, 1, 2**64 - 1), "ciphertext 1: segment 0 .* runs past the end"),
        (edited(0, 1, 0, len(buf) + 1) * np.array([1, 0], dtype=np.uint64), "ciphertext 0: segment 1"),
        (edited(1, 1, 0, -8, np.int64), "ciphertext 1: segment 1 has a negative offset"),
        (edited(0, 1, 1, 33), "ciphertext 0: the segments hold 63 bytes"),
        (edited(2, 0, 1, 31), "ciphertext 2: the segments hold 65 bytes"),
        (np.zeros((3, 0, 2), dtype=np.uint64), "ciphertext 0: the segments hold 0 bytes"),
    ]
    for segs, where in cases:
        with pytest.raises(FormatError, match=f"source 1, {where}"):
            kernels.sum_ciphertexts(acc, [(buf, good), (buf, segs)], moduli)
    for segs in (good[:2], good[:, :, :1], good.astype(np.float64)):
        with pytest.raises(ParameterMismatchError, match="source 0: segments"):
            kernels.sum_ciphertexts(acc, [(buf, segs)], moduli)
    assert not acc.any()


@pytest.mark.skipif("native" not in BACKENDS, reason="native core not built")
def test_native_segments_must_add_up() -> None:
    """The C core refuses, untouched, segments that do not add up to one ciphertext."""
    from he_agg.hazmat.kernels import _native

    acc = np.ones((1, 1, 1, 8), dtype=np.uint64)
    segs = np.array([[[[0, 32], [32, 31]]]], dtype=np.uint64)
    with pytest.raises(ParameterError, match="sum_segmented"):
        _native.sum_segmented(acc, [np.zeros(64, np.uint8)], segs, (17,))
    assert (acc == 1).all()


# -- moduli validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "moduli",
    [(2**61 + 1,), (2**64 + 13,), (16,), (15,), (1,), (17, 17), (), tuple([17] * 17)],
)
def test_unsupported_moduli(moduli: tuple[int, ...]) -> None:
    a = np.zeros((max(len(moduli), 1), 8), dtype=np.uint64)
    with pytest.raises(ParameterError):
        kernels.add(a, a, a, moduli)


def test_moduli_as_array(backend: str) -> None:
    a = np.ones((2, 8), dtype=np.uint64)
    out = np.empty_like(a)
    kernels.add(out, a, a, np.array([17, 97], dtype=np.uint64))
    assert (out == 2).all()


# -- pointwise --------------------------------------------------------------------------------

_OPS = {
    "mul": lambda a, b, c: a * b,
    "muladd": lambda a, b, c: a * b + c,
    "add": lambda a, b, c: a + b,
    "sub": lambda a, b, c: a - b,
}


def _call(op: str, out: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray,
          moduli: tuple[int, ...]) -> None:
    if op == "muladd":
        kernels.muladd(out, a, b, c, moduli)
    else:
        getattr(kernels, op)(out, a, b, moduli)


def _expected(op: str, a: np.ndarray, b: np.ndarray, c: np.ndarray, moduli: Sequence[int]) -> np.ndarray:
    q = np.array(moduli, dtype=object).reshape(-1, 1)
    value = _OPS[op](a.astype(object), b.astype(object), c.astype(object)) % q
    return np.broadcast_to(value, a.shape).astype(np.uint64)


@settings(max_examples=40, deadline=None)
@given(
    op=st.sampled_from(sorted(_OPS)),
    moduli=st.sampled_from(MODULI_SETS),
    lead=st.sampled_from([(), (1,), (3,), (2, 2)]),
    n=st.sampled_from([2, 16]),
    b_bcast=st.booleans(),
    c_bcast=st.booleans(),
    near=st.sampled_from([0.0, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_pointwise_matches_big_ints(op: str, moduli: tuple[int, ...], lead: tuple[int, ...], n: int,
                                    b_bcast: bool, c_bcast: bool, near: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = lead + (len(moduli), n)
    a = residues(rng, shape, moduli, near)
    b = residues(rng, shape[-2:] if b_bcast else shape, moduli, near)
    c = residues(rng, shape[-2:] if c_bcast else shape, moduli, near)
    expected = _expected(op, a, b, c, moduli)
    for name in BACKENDS:
        out = np.empty_like(a)
        with kernels.use_backend(name):
            _call(op, out, a, b, c, moduli)
        assert np.array_equal(out, expected), name


@pytest.mark.parametrize("op", sorted(_OPS))
def test_pointwise_aliasing(backend: str, op: str) -> None:
    moduli = SEAL60
    rng = np.random.default_rng(3)
    a, b, c = (residues(rng, (4, 3, 32), moduli) for _ in range(3))
    expected = _expected(op, a, b, c, moduli)
    for alias in ("a", "b", "c"):
        x, y, z = a.copy(), b.copy(), c.copy()
        out = {"a": x, "b": y, "c": z}[alias]
        _call(op, out, x, y, z, moduli)
        assert np.array_equal(out, expected), alias
    # a broadcast operand that is a view into out (its row 0) must read its old value
    out = b.copy()
    row = out[0]
    bexp = _expected(op, a, b[0], c, moduli)
    _call(op, out, a, row, c, moduli)
    assert np.array_equal(out, bexp)
    # out overlapping a, shifted by one row
    buf = np.concatenate([a, a[:1]])
    shifted_in, shifted_out = buf[:4], buf[1:5]
    exp = _expected(op, a, b, c, moduli)
    _call(op, shifted_out, shifted_in, b, c, moduli)
    assert np.array_equal(shifted_out, exp)


def test_mul_scalar(backend: str) -> None:
    moduli = SEAL60
    rng = np.random.default_rng(5)
    a = residues(rng, (2, 3, 3, 16), moduli, near=0.5)
    for scalars in ([0, 1, 2], [q - 1 for q in moduli], [12345678901234567, 3, moduli[2] - 2]):
        out = np.empty_like(a)
        kernels.mul_scalar(out, a, scalars, moduli)
        expect = a.astype(object) * np.array(scalars, dtype=object).reshape(-1, 1) % np.array(
            moduli, dtype=object).reshape(-1, 1)
        assert np.array_equal(out, expect.astype(np.uint64))
    kernels.mul_scalar(a, a, np.array([5, 6, 7], dtype=np.uint64), moduli)  # in place
    with pytest.raises(ResidueRangeError):
        kernels.mul_scalar(out, a, [moduli[0], 1, 1], moduli)
    with pytest.raises(ParameterMismatchError):
        kernels.mul_scalar(out, a, [1, 1], moduli)



# -- pointwise: the native code paths (scalar, AVX2, AVX-512), each forced --------------------

SIMD_PATHS = ("scalar", "avx2", "avx512")


@pytest.fixture(params=SIMD_PATHS)
def simd_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """The native backend with heagg_simd_select forced to one path (skipped where missing)."""
    with forced_native_path("heagg_simd_select", request.param):
        yield request.param


def _prime_near(x: int, step: int) -> int:
    while not is_prime(x):
        x += step
    return x


# Per bit length k = 2 .. 61 the largest prime below 2^k and the smallest above 2^(k-1): the
# vector Barrett shifts by 63 - k and 62 - k, and its bounds are tightest at the ends.
PRIME_PAIRS = [
    tuple(sorted({_prime_near((1 << k) - 1, -1), _prime_near((1 << (k - 1)) + 1, 1)}))
    for k in range(3, 62)
]


@pytest.mark.skipif("native" not in BACKENDS, reason="native core not built")
def test_simd_select() -> None:
    lib = native_lib()
    ntt_path = lib.heagg_ntt_select(-1)
    try:
        best = lib.heagg_simd_select(lib.HEAGG_NTT_AUTO)
        assert best in (lib.HEAGG_NTT_SCALAR, lib.HEAGG_NTT_AVX2, lib.HEAGG_NTT_AVX512)
        assert lib.heagg_simd_select(-1) == best
        assert lib.heagg_simd_select(lib.HEAGG_NTT_SCALAR) == lib.HEAGG_NTT_SCALAR
        assert lib.heagg_ntt_select(-1) == ntt_path  # a setting of its own
        assert lib.heagg_simd_select(99) == -1  # unknown: refused, nothing changed
        assert lib.heagg_simd_select(-1) == lib.HEAGG_NTT_SCALAR
    finally:
        assert lib.heagg_simd_select(lib.HEAGG_NTT_AUTO) == best


@pytest.mark.parametrize("n", [2, 4, 8, 16, 256, 8192])
@pytest.mark.parametrize("near", [0.0, 0.5, 1.0])
def test_pointwise_paths_match_big_ints(simd_path: str, n: int, near: float) -> None:
    """mul, muladd (b and c broadcast or not) and mul_scalar on one forced path, for every
    moduli set and (n <= 256) primes of every bit length; n < 8 leaves words to the
    scalar tail."""
    rng = np.random.default_rng(n + int(10 * near))
    for moduli in MODULI_SETS + (PRIME_PAIRS if n <= 256 else []):
        shape = (3, len(moduli), n)
        a = residues(rng, shape, moduli, near)
        b, c = residues(rng, shape, moduli, near), residues(rng, shape, moduli, near)
        for op in ("mul", "muladd"):
            for bb in (b, b[0]):
                out = np.empty_like(a)
                _call(op, out, a, bb, c[1], moduli)
                assert np.array_equal(out, _expected(op, a, bb, c[1], moduli)), (op, moduli)
        scalars = [int(x) for x in residues(rng, (len(moduli), 1), moduli, near)[:, 0]]
        out = np.empty_like(a)
        kernels.mul_scalar(out, a, scalars, moduli)
        expect = a.astype(object) * np.array(scalars, dtype=object).reshape(-1, 1) % np.array(
            moduli, dtype=object).reshape(-1, 1)
        assert np.array_equal(out, expect.astype(np.uint64)), ("mul_scalar", moduli)


def test_pointwise_paths_agree_in_place(simd_path: str) -> None:
    """Aliased operands (out is a, b or c) on every path, against the scalar path."""
    moduli = P61
    rng = np.random.default_rng(11)
    a, b, c = (residues(rng, (5, 2, 64), moduli, 0.3) for _ in range(3))
    expected = _expected("muladd", a, b, c, moduli)
    for alias in ("a", "b", "c"):
        x, y, z = a.copy(), b.copy(), c.copy()
        out = {"a": x, "b": y, "c": z}[alias]
        kernels.muladd(out, x, y, z, moduli)
        assert np.array_equal(out, expected), alias

def test_pointwise_argument_errors() -> None:
    moduli = (17, 97)
    a = np.zeros((3, 2, 8), dtype=np.uint64)
    with pytest.raises(ParameterMismatchError):
        kernels.mul(np.zeros((2, 2, 8), np.uint64), a, a, moduli)      # out shape
    with pytest.raises(ParameterMismatchError):
        kernels.mul(a.copy(), a, a[:2], moduli)                        # b rows
    with pytest.raises(ParameterMismatchError):
        kernels.add(a.copy(), a, a.astype(np.int64), moduli)           # dtype
    with pytest.raises(ParameterMismatchError):
        kernels.add(a.copy(), a, np.zeros((3, 2, 16), np.uint64)[..., ::2], moduli)  # strides
    with pytest.raises(ParameterMismatchError):
        kernels.add(a.copy(), a, a, (17,))                             # nmod
    with pytest.raises(ParameterError):
        kernels.add(np.zeros((2, 6), np.uint64), np.zeros((2, 6), np.uint64),
                    np.zeros((2, 6), np.uint64), moduli)               # n not a power of two
    with pytest.raises(TypeError):
        kernels.add(a.copy(), a, [[0] * 8] * 2, moduli)


# -- crt_to_double ---------------------------------------------------------------------------


def _crt_inputs(moduli: Sequence[int], values: Sequence[int]) -> np.ndarray:
    """Residues (nmod, len(values)) of the given integers."""
    return np.array([[v % q for v in values] for q in moduli], dtype=np.uint64)


def _centered_exact(moduli: Sequence[int], values: Sequence[int], scale: float) -> list[float]:
    Q = 1
    for q in moduli:
        Q *= q
    out = []
    for v in values:
        x = v % Q
        x = x - Q if x > (Q - 1) // 2 else x
        out.append(float(Fraction(x) / Fraction(scale)))
    return out


def _special_values(moduli: Sequence[int], rng: np.random.Generator, count: int) -> list[int]:
    Q = 1
    for q in moduli:
        Q *= q
    h = (Q - 1) // 2
    vals = [0, 1, -1, 2, -2, h, h - 1, -h, -h + 1, h + 1, moduli[0], -moduli[0], Q // moduli[-1],
            -(Q // moduli[-1]), 2**52 + 1, -(2**60)]
    vals += [int(rng.integers(0, 2**62)) * int(rng.integers(0, 2**62)) % Q - h for _ in range(count)]
    vals += [int(rng.integers(-1000, 1000)) for _ in range(count)]
    return vals


@pytest.mark.parametrize("moduli", [SEAL60[:1], SEAL60[:2], SEAL60, SMALL, SEAL40 + SEAL60[:1], P61])
@pytest.mark.parametrize("scale", [1.0, 2.0**40, 2.0**80, 3.7e12, 2.0**-10])
def test_crt_to_double_exact(moduli: tuple[int, ...], scale: float) -> None:
    rng = np.random.default_rng(len(moduli) + int(scale % 1000))
    vals = _special_values(moduli, rng, 40)
    vals += [0] * (128 - len(vals))  # n must be a power of two
    data = _crt_inputs(moduli, vals)
    exact = np.array(_centered_exact(moduli, vals, scale))
    outs = []
    for name in BACKENDS:
        with kernels.use_backend(name):
            outs.append(kernels.crt_to_double(data, moduli, scale))
    for name, got in zip(BACKENDS, outs):
        assert got.shape == (128,)
        tol = 1e-15 * np.maximum(np.abs(exact), 2.0**-60)
        assert (np.abs(got - exact) <= tol).all(), (name, np.max(np.abs(got - exact) / tol))
        assert np.array_equal(got.view(np.uint64), outs[0].view(np.uint64)), name  # bit-identical
    # signs are exact: no rounding crosses zero
    assert (np.sign(outs[0]) == np.sign(exact)).all()


@settings(max_examples=30, deadline=None)
@given(moduli=st.sampled_from(MODULI_SETS), seed=st.integers(0, 2**32 - 1),
       lead=st.sampled_from([(), (3,), (2, 2)]))
def test_crt_to_double_random(moduli: tuple[int, ...], seed: int, lead: tuple[int, ...]) -> None:
    rng = np.random.default_rng(seed)
    data = residues(rng, lead + (len(moduli), 8), moduli, near=0.2)
    Q = 1
    for q in moduli:
        Q *= q
    outs = []
    for name in BACKENDS:
        with kernels.use_backend(name):
            outs.append(kernels.crt_to_double(data, moduli, 2.0**30))
    assert outs[0].shape == lead + (8,)
    flat = data.reshape(-1, len(moduli), 8)
    coeffs = []
    for r in range(flat.shape[0]):
        for i in range(8):
            # the CRT lift by brute-force reconstruction with Python ints
            x = 0
            for l, q in enumerate(moduli):
                m = Q // q
                x += int(flat[r, l, i]) * m * pow(m, -1, q)
            coeffs.append(x % Q)
    exact = np.array(_centered_exact(moduli, coeffs, 2.0**30)).reshape(outs[0].shape)
    for got in outs:
        assert np.array_equal(got.view(np.uint64), outs[0].view(np.uint64))
        assert (np.abs(got - exact) <= 1e-15 * np.maximum(np.abs(exact), 2.0**-60)).all()


def test_crt_rejects_bad_scale() -> None:
    data = np.zeros((1, 8), dtype=np.uint64)
    for scale in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ParameterError):
            kernels.crt_to_double(data, (17,), scale)


# -- backend selection -------------------------------------------------------------------------


@pytest.fixture
def fresh_backends(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    kernels._reset_backend_state()
    yield
    monkeypatch.undo()
    kernels._reset_backend_state()


def test_env_selects_backend(monkeypatch: pytest.MonkeyPatch, fresh_backends: None) -> None:
    for name in BACKENDS:
        monkeypatch.setenv("HE_AGG_BACKEND", name)
        assert kernels.active_backend() == name
    monkeypatch.setenv("HE_AGG_BACKEND", " NumPy ")
    assert kernels.active_backend() == "numpy"
    monkeypatch.delenv("HE_AGG_BACKEND")
    assert kernels.active_backend() == BACKENDS[0]


def test_env_unknown_backend(monkeypatch: pytest.MonkeyPatch, fresh_backends: None) -> None:
    monkeypatch.setenv("HE_AGG_BACKEND", "cuda")
    with pytest.raises(NativeCoreError, match="unknown kernel backend 'cuda'"):
        kernels.active_backend()
    a = np.zeros((1, 8), dtype=np.uint64)
    with pytest.raises(NativeCoreError):
        kernels.add(a, a, a, (17,))
    with pytest.raises(NativeCoreError), kernels.use_backend("fortran"):
        pass


def test_unavailable_native_falls_back(monkeypatch: pytest.MonkeyPatch, fresh_backends: None) -> None:
    monkeypatch.setitem(kernels._MODULES, "native", "._no_such_extension")
    monkeypatch.delenv("HE_AGG_BACKEND", raising=False)
    assert "native" not in kernels.available_backends()
    with pytest.warns(RuntimeWarning, match="native core is unavailable"):
        first = kernels.active_backend()
    assert first in ("numba", "numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert kernels.active_backend() == first
    monkeypatch.setenv("HE_AGG_BACKEND", "native")
    with pytest.raises(NativeCoreError, match="unavailable"):
        kernels.active_backend()


def test_use_backend_restores(fresh_backends: None) -> None:
    before = kernels.active_backend()
    with kernels.use_backend("numpy"):
        assert kernels.active_backend() == "numpy"
        with kernels.use_backend(BACKENDS[0]):
            assert kernels.active_backend() == BACKENDS[0]
        assert kernels.active_backend() == "numpy"
    assert kernels.active_backend() == before
