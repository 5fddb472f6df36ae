"""The noise kernels: signed integers -> residues, and the polar-method Gaussian sampler.

Every backend (and every native code path) gives the same bits: signed_to_rns against
Python integers, the sampler against the plain-Python reference (math.log per value)
and, on 10^6 values, native against numba. Then the sampler's protocol (produced /
consumed, continuation), its statistics, and the samplers of he_agg.hazmat.sampling
built on it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import pytest

from he_agg.errors import ParameterError, ParameterMismatchError
from he_agg.hazmat import kernels
from he_agg.hazmat.sampling import (
    GAUSSIAN_MAX,
    KeyedStream,
    dither_shift,
    gaussian_integers,
    standard_normal,
)

from .support import native_lib

BACKENDS = kernels.available_backends()
FAST = [b for b in BACKENDS if b != "numpy"]

SEAL60 = (1152921504606748673, 1152921504606830593, 1152921504606584833)
SEAL40 = (1099510890497, 1099511480321)
P61 = (2305843009213554689, 2305843009213489153)
MODULI_SETS = [SEAL60[:2], SEAL60, SEAL40, P61, (17,), (3, 5), (12289, 786433)]
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
KEY = bytes(range(32))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    with kernels.use_backend(request.param):
        yield request.param


def _words(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, size=count, dtype=np.uint64)


def _word(coordinate_raw: int) -> int:
    """A word whose top 53 bits are coordinate_raw (x = raw·2^-52 − 1), low bits set."""
    return (coordinate_raw << 11) | 0x5A5


# -- signed_to_rns ---------------------------------------------------------------------------


def _special_signed(moduli: tuple[int, ...]) -> list[int]:
    vals = [0, 1, -1, I64_MIN, I64_MAX, I64_MIN + 1, I64_MAX - 1, 2**62, -(2**62), 2**53, -(2**53)]
    for q in moduli:
        vals += [q, -q, q - 1, -(q - 1), q + 1, -(q + 1), 2 * q, -2 * q]
    return [v for v in vals if I64_MIN <= v <= I64_MAX]


def _expected_rns(values: np.ndarray, moduli: tuple[int, ...]) -> np.ndarray:
    flat = values.reshape(-1, values.shape[-1]).tolist()
    out = np.array([[[v % q for v in row] for q in moduli] for row in flat], dtype=np.uint64)
    return out.reshape(values.shape[:-1] + (len(moduli), values.shape[-1]))


@pytest.mark.parametrize("moduli", MODULI_SETS)
def test_signed_to_rns_matches_python_ints(backend: str, moduli: tuple[int, ...]) -> None:
    """Rows of small values (the branch-free path), rows with one large value (the exact
    path redoes that row), full-range rows and the special values, shaped (2, 3, n)."""
    rng = np.random.default_rng(len(moduli) + moduli[0] % 1000)
    n = 64
    small = min(moduli) - 1
    values = rng.integers(-small, small, size=(2, 3, n), endpoint=True, dtype=np.int64)
    values[0, 1] = rng.integers(I64_MIN, I64_MAX, size=n, endpoint=True, dtype=np.int64)
    values[1, 0, 17] = I64_MIN
    values[1, 2, 63] = small + 1
    special = np.array(_special_signed(moduli), dtype=np.int64)
    values[0, 2, : special.size] = special[:n]
    out = kernels.signed_to_rns(values, moduli)
    assert out.shape == (2, 3, len(moduli), n) and out.dtype == np.uint64
    assert np.array_equal(out, _expected_rns(values, moduli))


def test_signed_to_rns_paths_and_backends_agree() -> None:
    """(64, 8192) values at several magnitudes: every backend gives the same words."""
    rng = np.random.default_rng(5)
    for bits in (3, 40, 59, 62, 63):
        values = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=(64, 8192), dtype=np.int64)
        expected = None
        for name in FAST:
            with kernels.use_backend(name):
                got = kernels.signed_to_rns(values, SEAL60[:2] + SEAL40)
            expected = got if expected is None else expected
            assert np.array_equal(got, expected), (name, bits)
        with kernels.use_backend("numpy"):
            assert np.array_equal(kernels.signed_to_rns(values[:2], SEAL60[:2] + SEAL40), expected[:2])


def test_signed_to_rns_shapes_and_errors(backend: str) -> None:
    moduli = SEAL40
    one = np.array([-3, 5, I64_MIN, I64_MAX], dtype=np.int64)
    assert np.array_equal(kernels.signed_to_rns(one, moduli), _expected_rns(one, moduli))
    empty = kernels.signed_to_rns(np.zeros((0, 4), dtype=np.int64), moduli)
    assert empty.shape == (0, 2, 4)
    square = np.arange(-32, 32, dtype=np.int64).reshape(8, 8)
    assert np.array_equal(kernels.signed_to_rns(square.T, moduli), _expected_rns(square.T.copy(), moduli))
    with pytest.raises(ParameterMismatchError):
        kernels.signed_to_rns(one.astype(np.int32), moduli)
    with pytest.raises(ParameterMismatchError):
        kernels.signed_to_rns(one.astype(np.uint64), moduli)
    with pytest.raises(ParameterError):
        kernels.signed_to_rns(np.zeros(6, dtype=np.int64), moduli)  # n not a power of two
    with pytest.raises(TypeError):
        kernels.signed_to_rns([1, 2], moduli)  # type: ignore[arg-type]


# -- the polar kernel: bit-identical everywhere -------------------------------------------------


def _polar_python(words: np.ndarray, count: int, scale: float | None) -> tuple[list[float | int], int]:
    """The definition, written out independently of the kernels' reference."""
    out: list[float | int] = []
    i = 0
    w = [int(v) for v in words.tolist()]
    while len(out) < count and len(w) - i >= 2:
        x = (w[i] >> 11) * 2.0**-52 - 1.0
        y = (w[i + 1] >> 11) * 2.0**-52 - 1.0
        i += 2
        s = x * x + y * y
        if not 0.0 < s < 1.0:
            continue
        f = math.sqrt(-2.0 * math.log(s) / s)
        for v in (x * f, y * f):
            if len(out) < count:
                out.append(v if scale is None else round(v * scale))
    return out, i


SCALES = [1.0, 2.0**-20, 3.5, 2.0**48.46, 2.0**53 / GAUSSIAN_MAX, 2.0**58]


@pytest.mark.parametrize("scale", SCALES)
def test_gaussian_matches_definition(backend: str, scale: float) -> None:
    """2·10^4 values per backend (the numpy reference included) against the definition."""
    words = _words(int(scale) % 1000 + 1, 26_000)
    expected, used = _polar_python(words, 20_000, scale)
    got, consumed = kernels.gaussian_from_words(words, 20_000, scale)
    assert got.dtype == np.int64 and consumed == used
    assert got.tolist() == expected
    floats, consumed = kernels.normal_from_words(words, 20_000)
    reference, _ = _polar_python(words, 20_000, None)
    assert consumed == used
    assert np.array_equal(floats.view(np.uint64), np.array(reference).view(np.uint64))


@pytest.mark.parametrize("scale", [1.0, 2.0**48, 2.0**58])
def test_gaussian_native_numba_and_paths_agree_1e6(scale: float) -> None:
    """10^6 values: numba and every native code path give the same bits and word counts."""
    words = _words(77, 1_300_000)
    results = {}
    for name in FAST:
        with kernels.use_backend(name):
            results[name] = (
                kernels.gaussian_from_words(words, 1_000_000, scale),
                kernels.normal_from_words(words, 1_000_000),
            )
    if "native" in BACKENDS:
        for path in ("scalar", "avx512"):
            lib = native_lib()
            code = getattr(lib, f"HEAGG_NTT_{path.upper()}")
            if lib.heagg_simd_select(code) != code:
                continue
            try:
                with kernels.use_backend("native"):
                    results[path] = (
                        kernels.gaussian_from_words(words, 1_000_000, scale),
                        kernels.normal_from_words(words, 1_000_000),
                    )
            finally:
                lib.heagg_simd_select(lib.HEAGG_NTT_AUTO)
    (g0, c0), (f0, d0) = results[FAST[0]]
    assert g0.size == f0.size == 1_000_000 and c0 == d0
    for name, ((g, c), (f, d)) in results.items():
        assert c == c0 and d == d0, name
        assert np.array_equal(g, g0), name
        assert np.array_equal(f.view(np.uint64), f0.view(np.uint64)), name
    # gaussian = rint(normal · scale), bit for bit
    assert np.array_equal(g0, np.rint(f0 * scale).astype(np.int64))


def test_gaussian_extremes_and_rejections(backend: str) -> None:
    """Rejected pairs (s = 0, s = 1, s > 1) are skipped; the largest |z| (s = 2^-104) at the
    largest scale still fits; x = 0 and y = 0 give exact zeros."""
    half = 1 << 52  # coordinate 0
    words = np.array(
        [
            _word(0), _word(0),                  # x = y = -1: s = 2, rejected
            _word(half), _word(half),            # x = y = 0: s = 0, rejected
            _word(2**53 - 1), _word(2**53 - 1),  # x = y = 1 - 2^-52: s > 1, rejected
            _word(0), _word(half),               # x = -1, y = 0: s = 1 exactly, rejected
            _word(half + 1), _word(half),        # x = 2^-52, y = 0: s = 2^-104, |z| maximal
            _word(half), _word(half - 1),        # x = 0, y = -2^-52
        ],
        dtype=np.uint64,
    )
    for scale in (1.0, 2.0**58):
        got, consumed = kernels.gaussian_from_words(words, 4, scale)
        assert consumed == 12
        expected, _ = _polar_python(words, 4, scale)
        assert got.tolist() == expected
        assert got[1] == 0 and got[2] == 0 and got[3] < 0
        assert abs(got[0] / scale - GAUSSIAN_MAX) < 1e-9 * GAUSSIAN_MAX + 1 / scale
    floats, _ = kernels.normal_from_words(words, 4)
    assert floats[0] == pytest.approx(GAUSSIAN_MAX, rel=1e-15) and floats[1] == 0.0


def _native_paths() -> Iterator[str]:
    """Force each native code path in turn (those this CPU has), then restore AUTO."""
    if "native" not in BACKENDS:
        return
    lib = native_lib()
    try:
        for path in ("scalar", "avx2", "avx512"):
            code = getattr(lib, f"HEAGG_NTT_{path.upper()}")
            if lib.heagg_simd_select(code) == code:
                with kernels.use_backend("native"):
                    yield path
    finally:
        lib.heagg_simd_select(lib.HEAGG_NTT_AUTO)


def test_gaussian_special_pairs_inside_blocks() -> None:
    """The rejected and extreme pairs again, at many places in a long supply (inside the
    kernel's blocks and vectors, at their edges), on every backend and native path."""
    half = 1 << 52
    specials = [(0, 0), (half, half), (2**53 - 1, 2**53 - 1), (0, half), (half, 0),
                (half + 1, half), (half, half - 1), (2**53 - 1, half)]
    words = _words(12, 6000)
    rng = np.random.default_rng(12)
    for pos in list(range(0, 40, 2)) + sorted(rng.choice(np.arange(40, 5998, 2), 300, replace=False)):
        a, b = specials[int(rng.integers(0, len(specials)))]
        words[pos], words[pos + 1] = _word(a), _word(b)
    for scale in (None, 2.0**58):
        expected, used = _polar_python(words, 4600, scale)
        for name in itertools.chain(BACKENDS, _native_paths()):  # lazily: one path at a time
            with kernels.use_backend(name if name in BACKENDS else "native"):
                if scale is None:
                    got, consumed = kernels.normal_from_words(words, 4600)
                else:
                    got, consumed = kernels.gaussian_from_words(words, 4600, scale)
            assert consumed == used, name
            assert np.array_equal(got, np.array(expected, dtype=got.dtype)), name


# -- the protocol: produced / consumed and continuation -------------------------------------------


def test_gaussian_protocol_short_supply(backend: str) -> None:
    words = _words(3, 2001)  # odd: the last word is never used
    got, consumed = kernels.gaussian_from_words(words, 10**6, 2.0**30)
    expected, used = _polar_python(words, 10**6, 2.0**30)
    assert consumed == used == 2000
    assert got.tolist() == expected and 0 < got.size < 2000
    for few in (np.zeros(0, np.uint64), words[:1]):
        got, consumed = kernels.gaussian_from_words(few, 5, 1.0)
        assert got.size == 0 and consumed == 0
    got, consumed = kernels.gaussian_from_words(words, 0, 1.0)
    assert got.size == 0 and consumed == 0


def test_gaussian_protocol_odd_count_drops_second_value(backend: str) -> None:
    words = _words(4, 400)
    full, _ = kernels.gaussian_from_words(words, 100, 1e6)
    for count in (1, 7, 99):
        got, consumed = kernels.gaussian_from_words(words, count, 1e6)
        assert np.array_equal(got, full[:count])
        _, used = _polar_python(words, count, 1e6)
        assert consumed == used  # the pair of the last value is used up, its y dropped
        rest, _ = kernels.gaussian_from_words(words[consumed:], 100 - count - 1, 1e6)
        assert np.array_equal(rest, full[count + 1 :])


@pytest.mark.parametrize("seed", range(4))
def test_gaussian_continuation_equals_one_call(backend: str, seed: int) -> None:
    """Words arriving in random pieces (odd and even lengths, across the kernel's block
    size), each call continuing from words[consumed:]: the same values as one call."""
    rng = np.random.default_rng(seed)
    total = 4000 if backend == "numpy" else 40_000
    words = _words(10 + seed, total)
    count = int(total * 0.7)
    one, _ = kernels.gaussian_from_words(words, count, 2.0**40)
    got: list[np.ndarray] = []
    pending = np.zeros(0, np.uint64)
    pos = 0
    while pos < total:
        step = int(rng.integers(1, 1500))
        pending = np.concatenate([pending, words[pos : pos + step]])
        pos += step
        have = sum(g.size for g in got)
        values, consumed = kernels.gaussian_from_words(pending, count - have, 2.0**40)
        got.append(values.copy())
        pending = pending[consumed:]
    assert np.array_equal(np.concatenate(got), one)


def test_gaussian_out_argument(backend: str) -> None:
    """out receives the values and nothing past them is written."""
    words = _words(6, 700)
    for count, dtype, fn in ((1000, np.int64, "gaussian"), (1000, np.float64, "normal")):
        out = np.full(count + 3, -7, dtype=dtype)
        if fn == "gaussian":
            got, consumed = kernels.gaussian_from_words(words, count, 2.0**20, out=out)
            again, _ = kernels.gaussian_from_words(words, count, 2.0**20)
        else:
            got, consumed = kernels.normal_from_words(words, count, out=out)
            again, _ = kernels.normal_from_words(words, count)
        assert np.shares_memory(got, out) and np.array_equal(got, again)
        assert consumed == 700 and got.size < count
        assert (out[got.size :] == -7).all()


def test_gaussian_is_deterministic(backend: str) -> None:
    words = _words(8, 3000)
    a = kernels.gaussian_from_words(words, 2000, 2.0**45)
    b = kernels.gaussian_from_words(words.copy(), 2000, 2.0**45)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]


def test_gaussian_argument_errors() -> None:
    words = _words(9, 10)
    for scale in (0.0, -1.0, float("nan"), float("inf"), 2.0**58 * 1.0000001):
        with pytest.raises(ParameterError):
            kernels.gaussian_from_words(words, 4, scale)
    with pytest.raises(ParameterError):
        kernels.gaussian_from_words(words, -1, 1.0)
    with pytest.raises(ParameterMismatchError):
        kernels.gaussian_from_words(words.astype(np.int64), 4, 1.0)
    with pytest.raises(ParameterMismatchError):
        kernels.gaussian_from_words(words.reshape(2, 5), 4, 1.0)
    with pytest.raises(TypeError):
        kernels.gaussian_from_words(list(words), 4, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ParameterMismatchError):
        kernels.gaussian_from_words(words, 4, 1.0, out=np.empty(4, np.float64))
    with pytest.raises(ParameterMismatchError):
        kernels.gaussian_from_words(words, 4, 1.0, out=np.empty(3, np.int64))
    with pytest.raises(ParameterMismatchError):
        kernels.normal_from_words(words, 4, out=np.empty(4, np.int64))
    strided = _words(9, 20)[::2]
    assert np.array_equal(kernels.gaussian_from_words(strided, 4, 1.0)[0],
                          kernels.gaussian_from_words(strided.copy(), 4, 1.0)[0])


@pytest.mark.skipif("native" not in BACKENDS, reason="native core not built")
def test_native_gaussian_rejects_bad_arguments() -> None:
    from he_agg.hazmat.kernels import _native

    lib, ffi = _native.lib, _native.ffi
    out = ffi.new("int64_t[4]")
    words = ffi.new("uint64_t[4]", [1, 2, 3, 4])
    counts = ffi.new("size_t[2]", [99, 99])
    for scale in (0.0, -2.0, float("nan"), 2.0**59):
        assert lib.heagg_gaussian(out, 4, words, 4, scale, counts, counts + 1) == lib.HEAGG_ERR_ARGUMENT
    assert lib.heagg_gaussian(ffi.NULL, 4, words, 4, 1.0, counts, counts + 1) == lib.HEAGG_ERR_ARGUMENT
    assert lib.heagg_gaussian(out, 4, ffi.NULL, 4, 1.0, counts, counts + 1) == lib.HEAGG_ERR_ARGUMENT
    assert lib.heagg_gaussian(out, 4, words, 4, 1.0, ffi.NULL, counts + 1) == lib.HEAGG_ERR_ARGUMENT
    assert lib.heagg_normal(ffi.NULL, 4, words, 4, counts, counts + 1) == lib.HEAGG_ERR_ARGUMENT
    assert list(counts) == [99, 99]  # untouched on error
    assert lib.heagg_gaussian(ffi.NULL, 0, ffi.NULL, 0, 1.0, counts, counts + 1) == lib.HEAGG_OK
    assert list(counts) == [0, 0]
    v = ffi.new("int64_t[2]")
    assert lib.heagg_signed_to_rns(ffi.NULL, v, 1, 1, 2, ffi.new("uint64_t[1]", [17])) == lib.HEAGG_ERR_ARGUMENT
    assert lib.heagg_signed_to_rns(ffi.new("uint64_t[2]"), v, 1, 1, 2, ffi.new("uint64_t[1]", [16])) == (
        lib.HEAGG_ERR_ARGUMENT)


# -- statistics ---------------------------------------------------------------------------------


def _keyed_words(label: bytes, count: int) -> np.ndarray:
    return KeyedStream(KEY, label).words(count)


def test_normal_statistics_scale_1() -> None:
    from scipy import stats

    values, _ = kernels.normal_from_words(_keyed_words(b"stats.1", 2_600_000), 2_000_000)
    assert values.size == 2_000_000
    assert abs(values.std() - 1.0) < 0.01
    assert abs(values.mean()) < 0.01
    assert stats.kstest(values, "norm").pvalue > 1e-4
    assert np.abs(values).max() < GAUSSIAN_MAX


def test_gaussian_statistics_scale_1_is_a_rounded_normal() -> None:
    """At scale 1 the integers are rint(z): variance 1 + 1/12 (Sheppard), P(0) = erf(1/(2√2))."""
    values, _ = kernels.gaussian_from_words(_keyed_words(b"stats.int1", 1_300_000), 1_000_000, 1.0)
    assert abs(values.std() / math.sqrt(1 + 1 / 12) - 1) < 0.01
    assert abs(values.mean()) < 0.01
    assert abs(np.mean(values == 0) - math.erf(0.5 / math.sqrt(2))) < 0.003


def test_gaussian_statistics_scale_2_48() -> None:
    from scipy import stats

    scale = 2.0**48
    values, _ = kernels.gaussian_from_words(_keyed_words(b"stats.48", 2_600_000), 2_000_000, scale)
    z = values.astype(np.float64) / scale
    assert abs(z.std() - 1.0) < 0.01
    assert abs(z.mean()) < 0.01
    assert stats.kstest(z, "norm").pvalue > 1e-4


# -- the samplers built on the kernel (he_agg.hazmat.sampling) ----------------------------------


def test_keyed_stream_words_are_the_keystream() -> None:
    """words() (filled in 64 KiB pieces) is read()'s bytes, and both continue one stream."""
    a, b = KeyedStream(KEY, b"ks"), KeyedStream(KEY, b"ks")
    for count in (0, 1, 8191, 8192, 8193, 100_000):
        assert np.array_equal(a.words(count), np.frombuffer(b.read(8 * count), dtype="<u8"))
        assert a.read(5) == b.read(5)  # odd byte counts keep the streams in step
    assert not np.array_equal(KeyedStream(KEY, b"other").words(4), KeyedStream(KEY, b"ks").words(4))


def test_samplers_are_one_kernel_call_on_the_keystream() -> None:
    """Drawing in chunks changes nothing: the values are the kernel's on the keystream."""
    count, sigma = 300_000, 2.0**45
    high, shift = gaussian_integers(KeyedStream(KEY, b"s"), count, sigma)
    assert shift == 0
    words = KeyedStream(KEY, b"s").words(500_000)
    expected, _ = kernels.gaussian_from_words(words, count, sigma)
    assert np.array_equal(high, expected)
    z = standard_normal(KeyedStream(KEY, b"s"), count)
    assert np.array_equal(z, kernels.normal_from_words(words, count)[0])
    assert np.array_equal(high, np.rint(z * sigma).astype(np.int64))


@pytest.mark.parametrize("log_sigma", [20.0, 49.5, 61.0])
def test_gaussian_integers_same_on_every_backend(log_sigma: float) -> None:
    sigma = 2.0**log_sigma
    results = []
    for name in BACKENDS:
        count = 5_000 if name == "numpy" else 200_000
        with kernels.use_backend(name):
            results.append(gaussian_integers(KeyedStream(KEY, b"b"), count, sigma))
    for high, shift in results:
        assert shift == dither_shift(sigma)
        n = min(h.size for h, _ in results)
        assert np.array_equal(high[:n], results[0][0][:n])


def test_samplers_are_deterministic_in_the_stream() -> None:
    a = gaussian_integers(KeyedStream(KEY, b"d"), 10_001, 2.0**50)
    b = gaussian_integers(KeyedStream(KEY, b"d"), 10_001, 2.0**50)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] == 1
    assert not np.array_equal(a[0], gaussian_integers(KeyedStream(KEY, b"e"), 10_001, 2.0**50)[0])
    assert standard_normal(KeyedStream(KEY, b"d"), 0).shape == (0,)
    assert gaussian_integers(KeyedStream(KEY, b"d"), 0, 1.0)[0].shape == (0,)
