"""The negacyclic NTT: SEAL's convention, exact inverse, convolution theorem, backends agree.

Forward: out[j] = sum_i a[i] psi^((2 bitrev(j) + 1) i) mod q, psi the minimal primitive
2n-th root of unity (SEAL). Known answers below are SEAL's and Intel HEXL's unit tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from he_agg.errors import ParameterError, ParameterMismatchError
from he_agg.hazmat import kernels
from he_agg.hazmat.kernels import tables

from .support import forced_native_path, native_lib

BACKENDS = kernels.available_backends()
SEAL60 = (1152921504606748673, 1152921504606830593, 1152921504606584833)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    with kernels.use_backend(request.param):
        yield request.param


def _is_prime(q: int) -> bool:
    return q > 1 and all(q % d for d in range(2, int(q**0.5) + 1))


def small_ntt_primes(n: int, count: int, start: int = 0) -> tuple[int, ...]:
    """The `count` smallest primes q = 1 mod 2n above `start` (trial division)."""
    out, q = [], (start // (2 * n)) * 2 * n + 1
    while len(out) < count:
        if q > 2 and _is_prime(q):
            out.append(q)
        q += 2 * n
    return tuple(out)


def large_ntt_primes(bits: int, n: int, count: int) -> tuple[int, ...]:
    """The `count` largest primes q < 2^bits with q = 1 mod 2n."""
    out, q = [], (1 << bits) - 2 * n + 1
    while len(out) < count:
        if tables.is_prime(q):
            out.append(q)
        q -= 2 * n
    return tuple(out)


def brute_minimal_root(q: int, n: int) -> int:
    """min x with x^n = -1 mod q: exactly the primitive 2n-th roots (2n a power of two)."""
    return next(x for x in range(2, q) if pow(x, n, q) == q - 1)


def bitrev(j: int, n: int) -> int:
    bits = n.bit_length() - 1
    return int(format(j, f"0{bits}b")[::-1], 2) if bits else 0


def ntt_definition(a: list[int], q: int, psi: int) -> list[int]:
    n = len(a)
    return [sum(a[i] * pow(psi, (2 * bitrev(j, n) + 1) * i, q) for i in range(n)) % q for j in range(n)]


def random_poly(rng: np.random.Generator, moduli: tuple[int, ...], lead: tuple[int, ...], n: int) -> np.ndarray:
    return np.stack([rng.integers(0, q, size=lead + (n,), dtype=np.uint64) for q in moduli], axis=-2)


# -- roots -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("q", "n"), [(17, 8), (97, 16), (7681, 64), (12289, 256), (40961, 2), (257, 128)])
def test_minimal_root_brute_force(q: int, n: int) -> None:
    assert tables.minimal_root(q, n) == brute_minimal_root(q, n)


def test_minimal_root_known_answers() -> None:
    # SEAL numth tests: try_minimal_primitive_root(4, 29) = 12, (8, 1234565441) = 249725733
    assert tables.minimal_root(29, 2) == 12
    assert tables.minimal_root(1234565441, 4) == 249725733


@pytest.mark.parametrize("q", SEAL60)
def test_minimal_root_large_prime(q: int) -> None:
    """psi is a primitive 2n-th root and no odd power of it (all other primitive roots) is smaller."""
    n = 16
    psi = tables.minimal_root(q, n)
    assert pow(psi, n, q) == q - 1
    assert min(pow(psi, k, q) for k in range(1, 2 * n, 2)) == psi


def test_root_rejects_unfriendly_prime() -> None:
    with pytest.raises(ParameterError, match="not 1 mod 2n"):
        tables.minimal_root(12289, 8192)
    a = np.zeros((1, 8192), dtype=np.uint64)
    with pytest.raises(ParameterError):
        kernels.ntt_forward(a, (12289,))


# -- known answers -----------------------------------------------------------------------------

KNOWN = [
    # SEAL NTTTablesTest.NegacyclicNTTTest and Intel HEXL's NTT tests
    (0xFFFFFFFFFFC0001, [0, 0], [0, 0]),
    (0xFFFFFFFFFFC0001, [1, 0], [1, 1]),
    (0xFFFFFFFFFFC0001, [1, 1], [288794978602139553, 864126526004445282]),
    (281474976710897, [1, 1], [19842761023586, 261632215687313]),
    (113, [94, 109, 11, 18], [82, 2, 81, 98]),
    (113, [59, 50, 98, 50], [1, 2, 3, 4]),
    (281474976710897, [281474976710765, 49, 281474976710643, 275],
     [12006376116355, 216492038983166, 272441922811203, 62009615510542]),
]


@pytest.mark.parametrize(("q", "a", "expected"), KNOWN)
def test_known_answers(backend: str, q: int, a: list[int], expected: list[int]) -> None:
    x = np.array([a], dtype=np.uint64)
    kernels.ntt_forward(x, (q,))
    assert x[0].tolist() == expected
    kernels.ntt_inverse(x, (q,))
    assert x[0].tolist() == a


# -- the definition ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 8, 16, 64])
@pytest.mark.parametrize("kind", ["small", "seal60", "61bit"])
def test_forward_matches_definition(backend: str, n: int, kind: str) -> None:
    moduli = {
        "small": small_ntt_primes(n, 2),
        "seal60": SEAL60[:2],
        "61bit": large_ntt_primes(61, 8192, 2),
    }[kind]
    rng = np.random.default_rng(n)
    data = random_poly(rng, moduli, (2,), n)
    data[0, :, -1] = np.array([q - 1 for q in moduli], dtype=np.uint64)  # extremes
    expected = np.array(
        [[ntt_definition([int(v) for v in data[r, l]], q, brute_minimal_root(q, n) if q < 10**6
                         else tables.minimal_root(q, n)) for l, q in enumerate(moduli)]
         for r in range(2)],
        dtype=np.uint64,
    )
    out = data.copy()
    kernels.ntt_forward(out, moduli)
    assert np.array_equal(out, expected)
    kernels.ntt_inverse(out, moduli)
    assert np.array_equal(out, data)


# -- round trips, agreement, convolution ------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    logn=st.integers(1, 9),
    nmod=st.integers(1, 3),
    rows=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
    extreme=st.booleans(),
)
def test_round_trip(logn: int, nmod: int, rows: int, seed: int, extreme: bool) -> None:
    n = 1 << logn
    moduli = SEAL60[:nmod]
    rng = np.random.default_rng(seed)
    data = random_poly(rng, moduli, (rows,), n)
    if extreme:
        data[...] = np.array([q - 1 for q in moduli], dtype=np.uint64).reshape(-1, 1)
    results = []
    for name in BACKENDS:
        with kernels.use_backend(name):
            x = data.copy()
            kernels.ntt_forward(x, moduli)
            fwd = x.copy()
            kernels.ntt_inverse(x, moduli)
            assert np.array_equal(x, data), name
            y = data.copy()
            kernels.ntt_inverse(y, moduli)
            kernels.ntt_forward(y, moduli)
            assert np.array_equal(y, data), name
            assert (fwd < np.array(moduli, dtype=np.uint64).reshape(-1, 1)).all()
            results.append(fwd)
    for fwd in results:
        assert np.array_equal(fwd, results[0])


def test_backends_agree_n8192() -> None:
    moduli = SEAL60
    rng = np.random.default_rng(8192)
    data = random_poly(rng, moduli, (2,), 8192)
    data[1, :, :100] = np.array([q - 1 for q in moduli], dtype=np.uint64).reshape(-1, 1)
    fwd, inv = [], []
    for name in BACKENDS:
        with kernels.use_backend(name):
            x = data.copy()
            kernels.ntt_forward(x, moduli)
            fwd.append(x)
            y = data.copy()
            kernels.ntt_inverse(y, moduli)
            inv.append(y)
    for name, x, y in zip(BACKENDS, fwd, inv):
        assert np.array_equal(x, fwd[0]), name
        assert np.array_equal(y, inv[0]), name
    # spot-check one output of the forward transform against its definition
    q, psi = moduli[1], tables.minimal_root(moduli[1], 8192)
    j = 4321
    point = pow(psi, 2 * bitrev(j, 8192) + 1, q)
    value = 0
    for coeff in reversed(data[0, 1].tolist()):  # Horner: a(point)
        value = (value * point + coeff) % q
    assert int(fwd[0][0, 1, j]) == value


def negacyclic_product(a: list[int], b: list[int], q: int) -> list[int]:
    n = len(a)
    out = [0] * n
    for i in range(n):
        for j in range(n):
            k = i + j
            if k < n:
                out[k] += a[i] * b[j]
            else:
                out[k - n] -= a[i] * b[j]
    return [v % q for v in out]


@pytest.mark.parametrize("n", [4, 16, 32])
def test_convolution_theorem(backend: str, n: int) -> None:
    moduli = SEAL60[:2] + small_ntt_primes(n, 1, start=1000)
    rng = np.random.default_rng(n + 1)
    a, b = random_poly(rng, moduli, (), n), random_poly(rng, moduli, (), n)
    expected = np.array(
        [negacyclic_product([int(v) for v in a[l]], [int(v) for v in b[l]], q) for l, q in enumerate(moduli)],
        dtype=np.uint64,
    )
    fa, fb = a.copy(), b.copy()
    kernels.ntt_forward(fa, moduli)
    kernels.ntt_forward(fb, moduli)
    kernels.mul(fa, fa, fb, moduli)
    kernels.ntt_inverse(fa, moduli)
    assert np.array_equal(fa, expected)


# -- tables and arguments ----------------------------------------------------------------------------


def test_tables_layout() -> None:
    n, moduli = 16, SEAL60[:2]
    tab = kernels.ntt_tables(moduli, n)
    assert tab.shape == (2, tables.NTT_TABLE_WORDS, n) and tab.dtype == np.uint64
    assert not tab.flags.writeable
    assert kernels.ntt_tables(list(moduli), n) is tab  # cached
    for l, q in enumerate(moduli):
        psi = tables.minimal_root(q, n)
        w, wp, iw, iwp, s, sp = (tab[l, r].tolist() for r in range(6))
        assert w == [pow(psi, bitrev(k, n), q) for k in range(n)]
        assert iw == [pow(psi, -bitrev(k, n), q) for k in range(n)]
        assert wp == [(x << 64) // q for x in w] and iwp == [(x << 64) // q for x in iw]
        assert s[:2] == [pow(n, -1, q), iw[1] * pow(n, -1, q) % q]
        assert sp[:2] == [(x << 64) // q for x in s[:2]]


def test_ntt_argument_errors(backend: str) -> None:
    moduli = SEAL60[:2]
    with pytest.raises(ParameterMismatchError):
        kernels.ntt_forward(np.zeros((3, 16), dtype=np.uint64), moduli)
    with pytest.raises(ParameterMismatchError):
        kernels.ntt_forward(np.zeros((2, 16), dtype=np.int64), moduli)
    with pytest.raises(ParameterMismatchError):
        kernels.ntt_forward(np.zeros((2, 32), dtype=np.uint64)[:, ::2], moduli)
    ro = np.zeros((2, 16), dtype=np.uint64)
    ro.flags.writeable = False
    with pytest.raises(ParameterMismatchError):
        kernels.ntt_inverse(ro, moduli)
    with pytest.raises(ParameterError):
        kernels.ntt_forward(np.zeros((2, 12), dtype=np.uint64), moduli)
    with pytest.raises(ParameterError):
        kernels.ntt_forward(np.zeros((2, 1 << 18), dtype=np.uint64), moduli)


@pytest.mark.skipif("native" not in BACKENDS, reason="native core not built")
def test_native_rejects_foreign_tables() -> None:
    """The C kernel checks that the table's psi^(n/2) squares to -1 mod q."""
    from he_agg.hazmat.kernels import _native

    moduli = SEAL60[:1]
    data = np.zeros((1, 1, 16), dtype=np.uint64)
    wrong = kernels.ntt_tables(SEAL60[1:2], 16)
    rc = _native.lib.heagg_ntt_forward(
        _native.ffi.from_buffer("uint64_t[]", data, require_writable=True), 1, 1, 16,
        _native.ffi.from_buffer("uint64_t[]", np.array(moduli, dtype=np.uint64)),
        _native.ffi.from_buffer("uint64_t[]", wrong),
    )
    assert rc == _native.lib.HEAGG_ERR_ARGUMENT
    assert "argument" in _native.strerror(rc)


# -- native code paths (scalar, AVX2, AVX-512): each forced, all word-for-word equal ---------------

NATIVE_PATHS = ("scalar", "avx2", "avx512")


@pytest.fixture(params=NATIVE_PATHS)
def native_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """The native backend with its NTT forced onto one code path (skipped where missing)."""
    with forced_native_path("heagg_ntt_select", request.param):
        yield request.param


def _scalar_ntt(data: np.ndarray, moduli: tuple[int, ...], inverse: bool) -> np.ndarray:
    """data through the native scalar path (the reference the vector paths must match);
    the path in use before is in use again after."""
    lib = native_lib()
    previous = lib.heagg_ntt_select(-1)
    assert lib.heagg_ntt_select(lib.HEAGG_NTT_SCALAR) == lib.HEAGG_NTT_SCALAR
    try:
        out = data.copy()
        with kernels.use_backend("native"):
            (kernels.ntt_inverse if inverse else kernels.ntt_forward)(out, moduli)
        return out
    finally:
        assert lib.heagg_ntt_select(previous) == previous


def _extreme_poly(rng: np.random.Generator, moduli: tuple[int, ...], rows: int, n: int) -> np.ndarray:
    """Random residues with runs of q - 1, 0 and 1 (lazy reduction's worst and best cases)."""
    data = random_poly(rng, moduli, (rows,), n)
    top = np.array([q - 1 for q in moduli], dtype=np.uint64).reshape(-1, 1)
    if rows:
        data[0, :, : n // 2] = top
        data[-1, :, n // 4 : n // 2] = 0
        data[-1, :, n // 2 : n // 2 + n // 8] = 1
        data[-1, :, -(n // 8) :] = top
    return data


@pytest.mark.skipif("native" not in BACKENDS, reason="native core not built")
def test_ntt_select() -> None:
    lib = native_lib()
    try:
        best = lib.heagg_ntt_select(lib.HEAGG_NTT_AUTO)
        assert best in (lib.HEAGG_NTT_SCALAR, lib.HEAGG_NTT_AVX2, lib.HEAGG_NTT_AVX512)
        assert lib.heagg_ntt_select(-1) == best
        assert lib.heagg_ntt_select(lib.HEAGG_NTT_SCALAR) == lib.HEAGG_NTT_SCALAR
        assert lib.heagg_ntt_select(-1) == lib.HEAGG_NTT_SCALAR
        assert lib.heagg_ntt_select(99) == -1  # unknown: refused, nothing changed
        assert lib.heagg_ntt_select(-1) == lib.HEAGG_NTT_SCALAR
        for path in (lib.HEAGG_NTT_AVX2, lib.HEAGG_NTT_AVX512):  # the best is never refused
            if path <= best:
                assert lib.heagg_ntt_select(path) == path
    finally:
        assert lib.heagg_ntt_select(lib.HEAGG_NTT_AUTO) == best


@pytest.mark.parametrize(("q", "a", "expected"), KNOWN)
def test_paths_known_answers(native_path: str, q: int, a: list[int], expected: list[int]) -> None:
    x = np.array([a], dtype=np.uint64)
    kernels.ntt_forward(x, (q,))
    assert x[0].tolist() == expected
    kernels.ntt_inverse(x, (q,))
    assert x[0].tolist() == a


@pytest.mark.parametrize("n", [16, 32, 64, 128])
@pytest.mark.parametrize("kind", ["small", "seal60", "61bit"])
def test_paths_match_definition(native_path: str, n: int, kind: str) -> None:
    """The sizes where the vector paths start (AVX2 from 16, AVX-512 from 64) and just above."""
    moduli = {
        "small": small_ntt_primes(n, 2),
        "seal60": SEAL60[:2],
        "61bit": large_ntt_primes(61, 8192, 2),
    }[kind]
    rng = np.random.default_rng(1000 + n)
    data = _extreme_poly(rng, moduli, 2, n)
    expected = np.array(
        [[ntt_definition([int(v) for v in data[r, l]], q, tables.minimal_root(q, n))
          for l, q in enumerate(moduli)] for r in range(2)],
        dtype=np.uint64,
    )
    out = data.copy()
    kernels.ntt_forward(out, moduli)
    assert np.array_equal(out, expected)
    kernels.ntt_inverse(out, moduli)
    assert np.array_equal(out, data)


@pytest.mark.parametrize("logn", range(1, 18))
def test_paths_agree_every_degree(native_path: str, logn: int) -> None:
    """Every supported degree, the largest NTT primes below 2^61 and 2^60, extreme inputs."""
    n = 1 << logn
    moduli = large_ntt_primes(61, n, 1) + large_ntt_primes(60, n, 1)
    rng = np.random.default_rng(logn)
    data = _extreme_poly(rng, moduli, 2 if n <= 8192 else 1, n)
    for inverse in (False, True):
        expected = _scalar_ntt(data, moduli, inverse)
        out = data.copy()
        (kernels.ntt_inverse if inverse else kernels.ntt_forward)(out, moduli)
        assert np.array_equal(out, expected), (native_path, inverse)
        (kernels.ntt_forward if inverse else kernels.ntt_inverse)(out, moduli)
        assert np.array_equal(out, data)


@settings(max_examples=20, deadline=None)
@given(
    logn=st.integers(4, 13),
    bits=st.integers(9, 61),
    offset=st.integers(0, 2**40),
    seed=st.integers(0, 2**32 - 1),
)
def test_paths_agree_random_moduli(logn: int, bits: int, offset: int, seed: int) -> None:
    """Random NTT primes of 9 to 61 bits (mostly near the top of their range), every path."""
    if "native" not in BACKENDS:
        pytest.skip("native core not built")
    n = 1 << logn
    bits = max(bits, 2 * logn + 2)
    start = (1 << bits) - 1 - offset % (1 << (bits - 2))
    q = start - (start - 1) % (2 * n)  # q = 1 mod 2n, below 2^bits
    while not tables.is_prime(q):
        q -= 2 * n
    assert q > 2 * n and q.bit_length() <= bits
    moduli = (q,)
    data = _extreme_poly(np.random.default_rng(seed), moduli, 2, n)
    expected_fwd, expected_inv = _scalar_ntt(data, moduli, False), _scalar_ntt(data, moduli, True)
    lib = native_lib()
    try:
        for path in (lib.HEAGG_NTT_AVX2, lib.HEAGG_NTT_AVX512):
            if lib.heagg_ntt_select(path) != path:
                continue
            with kernels.use_backend("native"):
                fwd, inv = data.copy(), data.copy()
                kernels.ntt_forward(fwd, moduli)
                kernels.ntt_inverse(inv, moduli)
            assert np.array_equal(fwd, expected_fwd), path
            assert np.array_equal(inv, expected_inv), path
    finally:
        lib.heagg_ntt_select(lib.HEAGG_NTT_AUTO)
    if n <= 64:  # and the scalar path against the O(n^2) definition
        psi = tables.minimal_root(q, n)
        assert [int(v) for v in expected_fwd[0, 0]] == ntt_definition([int(v) for v in data[0, 0]], q, psi)


@pytest.mark.parametrize("n", [16384, 32768])
def test_backends_agree_large(n: int) -> None:
    """As test_backends_agree_n8192, for the larger SEAL degrees (numpy is too slow here)."""
    moduli = large_ntt_primes(60, n, 2)
    data = _extreme_poly(np.random.default_rng(n), moduli, 1, n)
    results = []
    for name in [b for b in BACKENDS if b != "numpy"]:
        with kernels.use_backend(name):
            fwd, inv = data.copy(), data.copy()
            kernels.ntt_forward(fwd, moduli)
            kernels.ntt_inverse(inv, moduli)
            results.append((name, fwd, inv))
    for name, fwd, inv in results:
        assert np.array_equal(fwd, results[0][1]), name
        assert np.array_equal(inv, results[0][2]), name
    q, psi, j = moduli[0], tables.minimal_root(moduli[0], n), 12345 % n
    point, value = pow(psi, 2 * bitrev(j, n) + 1, q), 0
    for coeff in reversed(data[0, 0].tolist()):  # Horner: a(point)
        value = (value * point + coeff) % q
    assert int(results[0][1][0, 0, j]) == value
