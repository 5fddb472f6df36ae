"""Kernels against Python big integers, across every backend, bit for bit.

Covers sum_ciphertexts (lazy reduction, validation, rollback, bounds), the pointwise
operations (broadcasting, aliasing), crt_to_double (exact fractions) and backend
selection. NTT tests live in test_ntt.py.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from fractions import Fraction

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

BACKENDS = kernels.available_backends()

# SEAL's 60-bit primes for N = 8192 (q = 1 mod 2^14).
SEAL60 = (1152921504606748673, 1152921504606830593, 1152921504606584833)
SEAL40 = (1099510890497, 1099511480321)


def _is_prime(q: int) -> bool:
    if q < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    if q in small:
        return True
    if any(q % p == 0 for p in small):
        return False
    d, s = q - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in small:
        x = pow(a, d, q)
        if x in (1, q - 1):
            continue
        for _ in range(s - 1):
            x = x * x % q
            if x == q - 1:
                break
        else:
            return False
    return True


def ntt_primes(bits: int, n: int, count: int) -> tuple[int, ...]:
    """The `count` largest primes q < 2^bits with q = 1 mod 2n."""
    out, q = [], (1 << bits) - 2 * n + 1
    while len(out) < count:
        if _is_prime(q):
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
    moduli, acc, cts, qs = _fault_setup()
    s, c, p, l, i = where
    bad = int(qs[l]) if value == "q" else 2**64 - 1
    cts[s][c, p, l, i] = np.uint64(bad)
    before = acc.copy()
    with pytest.raises(ResidueRangeError) as info:
        kernels.sum_ciphertexts(acc, _sources(cts), moduli)
    msg = str(info.value)
    for part in (f"source {s}", f"ciphertext {c}", f"polynomial {p}", f"prime {l}",
                 f"coefficient {i}", str(bad)):
        assert part in msg, (part, msg)
    assert np.array_equal(acc, before)


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
