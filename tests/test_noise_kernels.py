"""The noise kernels: signed integers -> residues, and the keyed stream the samplers read.

Every backend gives the same bits: signed_to_rns against Python integers, and native
against numba on every magnitude. The flooding sampler itself (the exact discrete
Gaussian) is tested in tests/test_sampler.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from he_agg.errors import ParameterError, ParameterMismatchError
from he_agg.hazmat import kernels
from he_agg.hazmat.sampling import KeyedStream

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


@pytest.mark.skipif("native" not in BACKENDS, reason="native core not built")
def test_native_signed_to_rns_rejects_bad_arguments() -> None:
    from he_agg.hazmat.kernels import _native

    lib, ffi = _native.lib, _native.ffi
    v = ffi.new("int64_t[2]")
    assert lib.heagg_signed_to_rns(ffi.NULL, v, 1, 1, 2, ffi.new("uint64_t[1]", [17])) == lib.HEAGG_ERR_ARGUMENT
    assert lib.heagg_signed_to_rns(ffi.new("uint64_t[2]"), v, 1, 1, 2, ffi.new("uint64_t[1]", [16])) == (
        lib.HEAGG_ERR_ARGUMENT)


# -- the keyed stream the samplers read (he_agg.hazmat.sampling) ---------------------------------


def test_keyed_stream_words_are_the_keystream() -> None:
    """words() (filled in 64 KiB pieces) is read()'s bytes, and both continue one stream."""
    a, b = KeyedStream(KEY, b"ks"), KeyedStream(KEY, b"ks")
    for count in (0, 1, 8191, 8192, 8193, 100_000):
        assert np.array_equal(a.words(count), np.frombuffer(b.read(8 * count), dtype="<u8"))
        assert a.read(5) == b.read(5)  # odd byte counts keep the streams in step
    assert not np.array_equal(KeyedStream(KEY, b"other").words(4), KeyedStream(KEY, b"ks").words(4))
