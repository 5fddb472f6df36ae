"""Kernel micro-benchmarks per backend (pytest-benchmark; no timing assertions).

Run:  pytest benchmarks/bench_kernels.py --benchmark-enable -p no:cacheprovider
      (pyproject's addopts disable benchmarks by default; they then run once as tests)

The sum is compared with numpy's "memory floor": for s in sources: np.add(acc, s, out=acc)
over aligned uint64 arrays of the same size, which neither validates nor reduces.

The tenseal_* benchmarks sum 64 clients x 64 ciphertexts of (2, 2, 8192) words (1 GiB of
sources) three ways: segmented as TenSEAL stores them (zstd raw blocks: 131072 - 97, 131072
and 97 bytes of residues, each behind a 3-byte block header, at arbitrary alignment),
contiguous (the same words, one aligned run per ciphertext) and the numpy floor. They
need ~2.2 GiB of memory.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from he_agg.hazmat import kernels

Q3 = (1152921504606748673, 1152921504606830593, 1152921504606584833)
Q2 = Q3[:2]
N = 8192
SUM_SOURCES, SUM_COUNT = 16, 8  # 16 clients x 8 ciphertexts of (2, 2, 8192) words: 32 MiB
FAST = [b for b in kernels.available_backends() if b != "numpy"]


def _residues(rng: np.random.Generator, lead: tuple[int, ...], moduli: tuple[int, ...]) -> np.ndarray:
    return np.stack([rng.integers(0, q, size=lead + (N,), dtype=np.uint64) for q in moduli], axis=-2)


@pytest.fixture(scope="module")
def sum_inputs() -> tuple[np.ndarray, list[tuple[bytes, np.ndarray]], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    shape = (SUM_COUNT, 2)
    aligned = [_residues(rng, shape, Q2) for _ in range(SUM_SOURCES)]
    offsets = 1 + aligned[0][0].nbytes * np.arange(SUM_COUNT, dtype=np.uint64)
    sources = [(b"\x01" + a.tobytes(), offsets) for a in aligned]  # odd offsets, like TenSEAL
    return _residues(rng, shape, Q2), sources, aligned


TS_SOURCES, TS_COUNT = 64, 64
TS_SPLIT = (131072 - 97, 131072, 97)  # residue bytes per raw block of one ciphertext
TS_HEAD = 9 + 3 + 97  # zstd frame header, block header, SEAL ciphertext header


@pytest.fixture(scope="module")
def tenseal_inputs() -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
    """acc, segmented sources, and the same residues as aligned arrays."""
    rng = np.random.default_rng(4)
    acc = _residues(rng, (TS_COUNT, 2), Q2)
    ct_bytes = acc[0].nbytes
    aligned, segmented = [], []
    for s in range(TS_SOURCES):
        a = _residues(rng, (TS_COUNT, 2), Q2)
        words = a.reshape(TS_COUNT, -1).view(np.uint8)
        blob = np.zeros(s % 7 + TS_COUNT * (TS_HEAD + 4 + 2 * 3 + ct_bytes), dtype=np.uint8)
        segments = np.zeros((TS_COUNT, len(TS_SPLIT), 2), dtype=np.uint64)
        pos = s % 7  # protobuf framing: any alignment
        for c in range(TS_COUNT):
            pos += TS_HEAD + c % 5
            start = 0
            for k, length in enumerate(TS_SPLIT):
                pos += 3 if k else 0
                blob[pos : pos + length] = words[c, start : start + length]
                segments[c, k] = (pos, length)
                pos, start = pos + length, start + length
        aligned.append(a)
        segmented.append((blob, segments))
    return acc, segmented, aligned


@pytest.fixture(params=FAST)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    with kernels.use_backend(request.param):
        yield request.param


def test_sum_ciphertexts(benchmark, backend: str, sum_inputs) -> None:  # type: ignore[no-untyped-def]
    acc0, sources, _ = sum_inputs
    acc = acc0.copy()
    kernels.sum_ciphertexts(acc, sources[:1], Q2)  # warm up (numba compiles)
    benchmark.extra_info["source_bytes"] = SUM_SOURCES * acc.nbytes
    benchmark(kernels.sum_ciphertexts, acc, sources, Q2)


def test_sum_numpy_memory_floor(benchmark, sum_inputs) -> None:  # type: ignore[no-untyped-def]
    acc0, _, aligned = sum_inputs
    acc = acc0.copy()

    def floor() -> None:
        for s in aligned:
            np.add(acc, s, out=acc)

    benchmark.extra_info["source_bytes"] = SUM_SOURCES * acc.nbytes
    benchmark(floor)


@pytest.mark.parametrize("layout", ["segmented", "contiguous"])
def test_sum_tenseal(benchmark, backend: str, layout: str, tenseal_inputs) -> None:  # type: ignore[no-untyped-def]
    acc0, segmented, aligned = tenseal_inputs
    acc = acc0.copy()
    offsets = acc[0].nbytes * np.arange(TS_COUNT, dtype=np.uint64)
    sources = segmented if layout == "segmented" else [(a, offsets) for a in aligned]
    kernels.sum_ciphertexts(acc, sources[:1], Q2)  # warm up (numba compiles)
    benchmark.extra_info["source_bytes"] = TS_SOURCES * acc.nbytes
    benchmark(kernels.sum_ciphertexts, acc, sources, Q2)


def test_sum_tenseal_numpy_memory_floor(benchmark, tenseal_inputs) -> None:  # type: ignore[no-untyped-def]
    acc0, _, aligned = tenseal_inputs
    acc = acc0.copy()

    def floor() -> None:
        for s in aligned:
            np.add(acc, s, out=acc)

    benchmark.extra_info["source_bytes"] = TS_SOURCES * acc.nbytes
    benchmark(floor)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_ntt(benchmark, backend: str, direction: str) -> None:  # type: ignore[no-untyped-def]
    data = _residues(np.random.default_rng(1), (2,), Q3)
    fn = kernels.ntt_forward if direction == "forward" else kernels.ntt_inverse
    fn(data.copy(), Q3)  # warm up
    benchmark.extra_info["prime_polys"] = 2 * len(Q3)
    benchmark(fn, data, Q3)  # in place: the input stays reduced, values do not matter


NTT_PATHS = ("scalar", "avx2", "avx512")


def _ntt_primes(n: int, count: int = 3, bits: int = 60) -> tuple[int, ...]:
    """The `count` largest primes q < 2^bits with q = 1 mod 2n."""
    from he_agg.hazmat.kernels import tables

    out, q = [], (1 << bits) - 2 * n + 1
    while len(out) < count:
        if tables.is_prime(q):
            out.append(q)
        q -= 2 * n
    return tuple(out)


@pytest.mark.skipif("native" not in FAST, reason="native core not built")
@pytest.mark.parametrize("n", [8192, 16384])
@pytest.mark.parametrize("path", NTT_PATHS)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_ntt_native_path(benchmark, direction: str, path: str, n: int) -> None:  # type: ignore[no-untyped-def]
    """The native NTT forced onto one code path (csrc/ntt.c); time / prime_polys is the
    cost of one (prime, polynomial)."""
    from he_agg.hazmat.kernels import _native

    lib = _native.lib
    code = getattr(lib, f"HEAGG_NTT_{path.upper()}")
    if lib.heagg_ntt_select(code) != code:
        pytest.skip(f"no {path} NTT on this CPU or build")
    try:
        moduli = Q3 if n == N else _ntt_primes(n)
        rng = np.random.default_rng(5)
        data = np.stack([rng.integers(0, q, size=(2, n), dtype=np.uint64) for q in moduli], axis=-2)
        fn = kernels.ntt_forward if direction == "forward" else kernels.ntt_inverse
        with kernels.use_backend("native"):
            fn(data.copy(), moduli)  # warm up (tables)
            benchmark.extra_info["prime_polys"] = 2 * len(moduli)
            benchmark(fn, data, moduli)  # in place: the input stays reduced
    finally:
        lib.heagg_ntt_select(lib.HEAGG_NTT_AUTO)


@pytest.mark.parametrize("op", ["mul", "add"])
def test_pointwise(benchmark, backend: str, op: str) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(2)
    a, b = _residues(rng, (2,), Q3), _residues(rng, (2,), Q3)
    out = np.empty_like(a)
    fn = getattr(kernels, op)
    fn(out, a, b, Q3)
    benchmark(fn, out, a, b, Q3)


def test_crt_to_double(benchmark, backend: str) -> None:  # type: ignore[no-untyped-def]
    data = _residues(np.random.default_rng(3), (1,), Q3)
    kernels.crt_to_double(data, Q3, 2.0**80)
    benchmark(kernels.crt_to_double, data, Q3, 2.0**80)


# -- noise kernels and the multiplications of a decryption share ----------------------------------
# One share for 2^20 values at N = 8192 is 256 ciphertexts: 2^21 Gaussian integers, their
# residues (256, 2, 8192), one NTT and one muladd of that size.

SHARE_ROWS, SHARE_VALUES = 256, 256 * N
SIMD_PATHS = ("scalar", "avx2", "avx512")


def _simd_path(path: str):  # type: ignore[no-untyped-def]
    """The native lib with heagg_simd_select forced to `path` (skip if missing)."""
    from he_agg.hazmat.kernels import _native

    lib = _native.lib
    code = getattr(lib, f"HEAGG_NTT_{path.upper()}")
    if lib.heagg_simd_select(code) != code:
        pytest.skip(f"no {path} code path on this CPU or build")
    return lib


DG_SIGMA = 2.0**48.5  # a typical flooding σ; the cost hardly depends on σ


@pytest.fixture(scope="module")
def gaussian_words() -> np.ndarray:
    from he_agg.hazmat.sampling import KeyedStream

    return KeyedStream(bytes(32), b"bench").words(4 * int(SHARE_VALUES * 1.25))


def test_discrete_gaussian_from_words(benchmark, backend: str, gaussian_words: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """2^21 exact discrete Gaussian values (the kernel alone, words given)."""
    from he_agg.hazmat.sampling import discrete_gaussian_plan

    plan = discrete_gaussian_plan(DG_SIGMA).words
    high, low = np.empty(SHARE_VALUES, dtype=np.int64), np.empty(SHARE_VALUES, dtype=np.int64)
    kernels.discrete_gaussian_from_words(gaussian_words[:4000], 100, plan)  # warm up (numba compiles)
    benchmark.extra_info["values"] = SHARE_VALUES
    benchmark(kernels.discrete_gaussian_from_words, gaussian_words, SHARE_VALUES, plan,
              out_high=high, out_low=low)


@pytest.mark.skipif("native" not in FAST, reason="native core not built")
@pytest.mark.parametrize("path", ["scalar", "avx2"])
def test_discrete_gaussian_native_path(benchmark, path: str, gaussian_words: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    from he_agg.hazmat.sampling import discrete_gaussian_plan

    lib = _simd_path(path)
    try:
        plan = discrete_gaussian_plan(DG_SIGMA).words
        high, low = np.empty(SHARE_VALUES, dtype=np.int64), np.empty(SHARE_VALUES, dtype=np.int64)
        with kernels.use_backend("native"):
            benchmark(kernels.discrete_gaussian_from_words, gaussian_words, SHARE_VALUES, plan,
                      out_high=high, out_low=low)
    finally:
        lib.heagg_simd_select(lib.HEAGG_NTT_AUTO)


def test_discrete_gaussian(benchmark, backend: str) -> None:  # type: ignore[no-untyped-def]
    """The sampler a share uses: keystream (ChaCha20) and kernel, in 512 KiB chunks."""
    from he_agg.hazmat.sampling import KeyedStream, discrete_gaussian

    stream = KeyedStream(bytes(32), b"bench")
    discrete_gaussian(stream, 1000, DG_SIGMA)  # warm up
    benchmark(discrete_gaussian, stream, SHARE_VALUES, DG_SIGMA)


def test_keyed_stream_words(benchmark) -> None:  # type: ignore[no-untyped-def]
    from he_agg.hazmat.sampling import KeyedStream

    stream = KeyedStream(bytes(32), b"bench")
    benchmark.extra_info["bytes"] = 8 * int(SHARE_VALUES * 1.3)
    benchmark(stream.words, int(SHARE_VALUES * 1.3))


@pytest.mark.parametrize("bits", [50, 63])
def test_signed_to_rns(benchmark, backend: str, bits: int) -> None:  # type: ignore[no-untyped-def]
    """(256, 8192) int64 -> (256, 2, 8192) residues; 50-bit values take the branch-free
    path, 63-bit ones the exact one."""
    values = np.random.default_rng(6).integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=(SHARE_ROWS, N))
    kernels.signed_to_rns(values[:1], Q2)  # warm up
    benchmark(kernels.signed_to_rns, values, Q2)


@pytest.mark.skipif("native" not in FAST, reason="native core not built")
@pytest.mark.parametrize("path", SIMD_PATHS)
@pytest.mark.parametrize("op", ["mul", "muladd", "mul_scalar"])
def test_pointwise_native_path(benchmark, op: str, path: str) -> None:  # type: ignore[no-untyped-def]
    """A share's product: (256, 2, 8192) times a broadcast (2, 8192) row (plus noise)."""
    lib = _simd_path(path)
    try:
        rng = np.random.default_rng(7)
        a, c = _residues(rng, (SHARE_ROWS,), Q2), _residues(rng, (SHARE_ROWS,), Q2)
        b = _residues(rng, (), Q2)
        out = np.empty_like(a)
        with kernels.use_backend("native"):
            if op == "mul":
                benchmark(kernels.mul, out, a, b, Q2)
            elif op == "muladd":
                benchmark(kernels.muladd, out, a, b, c, Q2)
            else:
                benchmark(kernels.mul_scalar, out, a, [3, 5], Q2)
    finally:
        lib.heagg_simd_select(lib.HEAGG_NTT_AUTO)
