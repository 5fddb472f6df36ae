"""The exact discrete Gaussian flooding sampler (docs/SAMPLER.md).

* Every backend gives the same integers from the same keystream (≥ 10^5 values), and
  known-answer vectors in tests/data/discrete_gaussian_kat.json pin them across machines
  and library versions.
* The plan's tables are exactly the rounded values of the ideal quantities (recomputed
  here with Decimal at 120 digits), and the acceptance threshold of the kernels is within
  the error bound SAMPLER.md uses (2^-94) of 2^(−κ·u·(u+2x)).
* The samples have variance σ_actual² (a variance test whose false-failure probability is
  below 10^-8), the exact pmf at small σ (χ² goodness of fit), and never exceed flooding_max.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import math
import random
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from he_agg.errors import ParameterError, ParameterMismatchError
from he_agg.hazmat import kernels
from he_agg.hazmat.kernels import _reference
from he_agg.hazmat.sampling import (
    DG_TAIL_BITS,
    KeyedStream,
    discrete_gaussian,
    discrete_gaussian_plan,
    flooding_max,
    sigma_actual,
)

from .support import native_lib

BACKENDS = kernels.available_backends()
FAST = [b for b in BACKENDS if b != "numpy"]
KEY = bytes(range(32))
KAT_FILE = Path(__file__).parent / "data" / "discrete_gaussian_kat.json"
SIGMAS = [2.0, 3.0, 3.999, 1000.0, 2.0**40, 2.0**48, 2.0**49.4, 2.0**55.5, 2.0**63, 2.0**63.99, 2.0**64]


def _words(label: bytes, count: int) -> np.ndarray:
    return KeyedStream(KEY, label).words(count)


def _values(high: np.ndarray, low: np.ndarray) -> list[int]:
    return [(int(h) << 32) + int(l) for h, l in zip(high.tolist(), low.tolist())]


def _draw(backend: str, words: np.ndarray, count: int, sigma: float) -> tuple[np.ndarray, np.ndarray, int]:
    with kernels.use_backend(backend):
        return kernels.discrete_gaussian_from_words(words, count, discrete_gaussian_plan(sigma).words)


# -- bit-identical backends and known answers -------------------------------------------------


@pytest.mark.parametrize("sigma", [3.0, 2.0**40, 2.0**63.5])
def test_fast_backends_identical_on_200k_values(sigma: float) -> None:
    if len(FAST) < 2:
        pytest.skip("needs the native and numba backends")
    words = _words(b"identical", 4 * 250_000)
    results = [_draw(b, words, 200_000, sigma) for b in FAST]
    for high, low, consumed in results[1:]:
        assert consumed == results[0][2]
        assert np.array_equal(high, results[0][0]) and np.array_equal(low, results[0][1])
    assert results[0][0].size == 200_000


def test_reference_identical_on_100k_values() -> None:
    """The plain-Python definition against the fast backends, 10^5 values at σ = 2^48."""
    words = _words(b"reference", 4 * 125_000)
    ref = _draw("numpy", words, 100_000, 2.0**48)
    for backend in FAST:
        got = _draw(backend, words, 100_000, 2.0**48)
        assert got[2] == ref[2]
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])


@pytest.mark.parametrize("sigma", SIGMAS)
def test_every_backend_identical_at_every_octave_edge(sigma: float) -> None:
    words = _words(b"edges", 4 * 3000)
    results = [_draw(b, words, 2500, sigma) for b in BACKENDS]
    for high, low, consumed in results[1:]:
        assert consumed == results[0][2]
        assert np.array_equal(high, results[0][0]) and np.array_equal(low, results[0][1])


def _kat_entry(sigma: float) -> dict[str, object]:
    high, low = discrete_gaussian(KeyedStream(KEY, b"he_agg.kat.dgauss"), 4096, sigma)
    values = _values(high, low)
    plan = discrete_gaussian_plan(sigma)
    return {
        "sigma": sigma.hex(),
        "sigma_actual": plan.sigma_actual.hex(),
        "max_abs": str(plan.max_abs),
        "plan_sha256": hashlib.sha256(plan.words.tobytes()).hexdigest(),
        "first": [str(v) for v in values[:16]],
        "values_sha256": hashlib.sha256(",".join(map(str, values)).encode()).hexdigest(),
    }


def _kat_file() -> list[dict[str, object]]:
    return [_kat_entry(s) for s in (2.5, 1e6, 2.0**40, 2.0**52.25, 2.0**63.7)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_known_answers(backend: str) -> None:
    """Regenerate with: python -c 'from tests.test_sampler import _write_kat; _write_kat()'."""
    expected = json.loads(KAT_FILE.read_text())
    with kernels.use_backend(backend):
        assert _kat_file() == expected


def _write_kat() -> None:
    with kernels.use_backend("numpy"):
        KAT_FILE.write_text(json.dumps(_kat_file(), indent=1) + "\n")


# -- kernel protocol ------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    with kernels.use_backend(request.param):
        yield request.param


def test_continuation_and_stopping(backend: str) -> None:
    plan = discrete_gaussian_plan(2.0**45).words
    words = _words(b"cont", 4 * 400)
    full_h, full_l, full_c = kernels.discrete_gaussian_from_words(words, 300, plan)
    assert full_c % 4 == 0 and full_h.size == 300
    for first in (0, 1, 31, 32, 33, 150, 299):
        h1, l1, c1 = kernels.discrete_gaussian_from_words(words, first, plan)
        h2, l2, c2 = kernels.discrete_gaussian_from_words(words[c1:], 300 - first, plan)
        assert c1 + c2 == full_c
        assert np.array_equal(np.concatenate([h1, h2]), full_h) and np.array_equal(np.concatenate([l1, l2]), full_l)
    short_h, _, short_c = kernels.discrete_gaussian_from_words(words[:42], 300, plan)
    assert short_c == 40 and short_h.size <= 10  # whole trials only
    empty = kernels.discrete_gaussian_from_words(words, 0, plan)
    assert empty[0].size == 0 and empty[2] == 0


def test_output_views_and_argument_errors(backend: str) -> None:
    plan = discrete_gaussian_plan(2.0**45).words
    words = _words(b"args", 400)
    high, low = np.full(120, 7, np.int64), np.full(120, 7, np.int64)
    h, l, _ = kernels.discrete_gaussian_from_words(words, 50, plan, out_high=high, out_low=low)
    assert np.shares_memory(h, high) and np.array_equal(h, kernels.discrete_gaussian_from_words(words, 50, plan)[0])
    assert (high[51:] == 7).all() and (low[51:] == 7).all()  # one scratch slot at most
    assert ((l >= 0) & (l < 2**32)).all()
    with pytest.raises(ParameterMismatchError):
        kernels.discrete_gaussian_from_words(words, 4, plan[:-1])
    with pytest.raises(ParameterMismatchError):
        kernels.discrete_gaussian_from_words(words, 4, plan.astype(np.int64))
    bad = plan.copy()
    bad[0] = 64
    with pytest.raises(ParameterError):
        kernels.discrete_gaussian_from_words(words, 4, bad)
    with pytest.raises(ParameterMismatchError):
        kernels.discrete_gaussian_from_words(words.astype(np.int64), 4, plan)
    with pytest.raises(ParameterMismatchError):
        kernels.discrete_gaussian_from_words(words, 4, plan, out_high=np.empty(3, np.int64))
    with pytest.raises(ParameterError):
        kernels.discrete_gaussian_from_words(words, -1, plan)


def test_native_refuses_null_and_bad_shift() -> None:
    if "native" not in BACKENDS:
        pytest.skip("native core not built")
    lib = native_lib()
    from he_agg.hazmat.kernels._native import ffi

    plan = discrete_gaussian_plan(2.0**45).words.copy()
    words = ffi.new("uint64_t[8]")
    out = ffi.new("int64_t[2]")
    counts = ffi.new("size_t[2]")
    p = ffi.cast("uint64_t *", plan.ctypes.data)
    assert lib.heagg_discrete_gaussian(out, out, 2, words, 8, ffi.NULL, counts, counts + 1) == lib.HEAGG_ERR_ARGUMENT
    assert lib.heagg_discrete_gaussian(ffi.NULL, out, 2, words, 8, p, counts, counts + 1) == lib.HEAGG_ERR_ARGUMENT
    assert lib.heagg_discrete_gaussian(out, out, 2, ffi.NULL, 8, p, counts, counts + 1) == lib.HEAGG_ERR_ARGUMENT
    assert lib.heagg_discrete_gaussian(out, out, 2, words, 8, p, ffi.NULL, counts + 1) == lib.HEAGG_ERR_ARGUMENT
    plan[0] = 64
    assert lib.heagg_discrete_gaussian(out, out, 2, words, 8, p, counts, counts + 1) == lib.HEAGG_ERR_ARGUMENT
    assert lib.heagg_discrete_gaussian(ffi.NULL, ffi.NULL, 0, ffi.NULL, 0, ffi.cast("uint64_t *", discrete_gaussian_plan(8.0).words.ctypes.data), counts, counts + 1) == lib.HEAGG_OK


# -- the plan is exact -----------------------------------------------------------------------------

_HP = decimal.Context(prec=120)


def _ideal_tails(kappa: int, rows: int) -> list[decimal.Decimal]:
    """2^96·P(x > i) for the base law P(x) ∝ 2^(−κ x²), x ≥ 0, at 120 digits."""
    with decimal.localcontext(_HP):
        d = decimal.Decimal
        k, ln2 = d(kappa) / d(2) ** 64, d(2).ln()
        weights = [(-(k * x * x) * ln2).exp() for x in range(200)]
        total = sum(weights, d(0))
        return [sum(weights[i + 1 :], d(0)) / total * d(2) ** 96 for i in range(rows)]


@pytest.mark.parametrize("sigma", SIGMAS)
def test_base_table_reproduces_the_dyadic_gaussian(sigma: float) -> None:
    plan = discrete_gaussian_plan(sigma)
    b, kappa, rows, *_ = _reference._plan_values(plan.words)
    assert (b, kappa) == (plan.shift, plan.kappa)
    ideal = _ideal_tails(kappa, plan.rows)
    for i, row in enumerate(rows):
        if i < plan.rows:
            assert abs(decimal.Decimal(row) - ideal[i]) <= decimal.Decimal("0.5000001")
        else:
            assert row == 0
    assert all(a >= c for a, c in zip(rows, rows[1:]))  # non-increasing (the last may round to 0)
    with decimal.localcontext(_HP):  # the cut tail: P(x > X) ≤ 2^-100
        tail_weight = (-(decimal.Decimal(kappa) / decimal.Decimal(2) ** 64) * (plan.rows + 1) ** 2 * decimal.Decimal(2).ln()).exp()
        assert tail_weight <= decimal.Decimal(2) ** -DG_TAIL_BITS
    # σ_actual = 2^b / sqrt(2κ ln 2) ≥ σ, within 2^-60 relative
    with decimal.localcontext(_HP):
        exact = decimal.Decimal(2) ** b / (2 * decimal.Decimal(kappa) / decimal.Decimal(2) ** 64 * decimal.Decimal(2).ln()).sqrt()
    assert decimal.Decimal(plan.sigma_actual) >= exact >= decimal.Decimal(sigma)
    assert plan.sigma_actual / sigma - 1 < 2.0**-52 * 4
    assert plan.max_abs == ((plan.rows + 1) << b) - 1


def test_fixed_point_constants_are_correctly_rounded() -> None:
    _, _, _, tables, wide, narrow = _reference._plan_values(discrete_gaussian_plan(10.0).words)
    assert len(tables) == kernels.DG_TABLES and len(wide) + len(narrow) == kernels.DG_POLY + 1
    with decimal.localcontext(_HP):
        d, ln2 = decimal.Decimal, decimal.Decimal(2).ln()
        radix = 1 << kernels.DG_TABLE_BITS
        for j, table in enumerate(tables, start=1):
            assert len(table) == radix and table[0] == 1 << 127
            for i, c in enumerate(table):
                assert abs(d(c) - (-ln2 * i / d(radix) ** j).exp() * d(2) ** 127) <= d("0.5000001")
        for k, c in enumerate(wide + narrow):
            bits = 127 if k < kernels.DG_POLY_WIDE else 64
            assert abs(d(c) - ln2**k / math.factorial(k) * d(2) ** bits) <= d("0.5000001")


def test_base_law_is_exact_enumerated() -> None:
    """At b = 0 the sampler is the base table itself: the pmf it implies, as exact
    fractions of 2^96, is within 2^-96 of D_{Z+,σ0} for every x (Decimal, 120 digits)."""
    plan = discrete_gaussian_plan(3.0)
    assert plan.shift == 0
    _, kappa, rows, *_ = _reference._plan_values(plan.words)
    cdf_tail = rows[: plan.rows] + [0]
    implied = [Fraction((1 << 96) if x == 0 else cdf_tail[x - 1], 1) - cdf_tail[x] for x in range(plan.rows + 1)]
    with decimal.localcontext(_HP):
        d = decimal.Decimal
        k, ln2 = d(kappa) / d(2) ** 64, d(2).ln()
        weights = [(-(k * x * x) * ln2).exp() for x in range(200)]
        total = sum(weights, d(0))
        for x, got in enumerate(implied):
            ideal = weights[x] / total * d(2) ** 96
            assert abs(d(got.numerator) - ideal) <= (1 if x < plan.rows else 1 + sum(weights[plan.rows + 1 :], d(0)) / total * d(2) ** 96)


def _threshold_cases(plan_rows: int, b: int, rng: random.Random) -> list[tuple[int, int]]:
    """Edge (x, y) and 300 random ones."""
    ymax = (1 << b) - 1
    cases = [(x, y) for x in (0, 1, plan_rows) for y in {0, 1, ymax // 2, ymax}]
    cases += [(rng.randint(0, plan_rows), rng.randint(0, ymax)) for _ in range(300)]
    return cases


@pytest.mark.parametrize("sigma", [2.0, 3.7, 2.0**20 + 12345.0, 2.0**48, 2.0**63.99])
def test_acceptance_threshold_within_2_pow_minus_94(sigma: float) -> None:
    """|A/2^96 − 2^(−κ·u(u+2x))| ≤ 2^-94 on edge and random (x, y): the bound SAMPLER.md uses."""
    plan = discrete_gaussian_plan(sigma)
    b, kappa, _, tables, wide, narrow = _reference._plan_values(plan.words)
    with decimal.localcontext(_HP):
        d = decimal.Decimal
        k, ln2d = d(kappa) / d(2) ** 64, d(2).ln()
        for x, y in _threshold_cases(plan.rows, b, random.Random(int(sigma))):
            u = d(y) / d(2) ** b
            ideal = (-(k * u * (u + 2 * x)) * ln2d).exp()
            got = d(_reference._accept_threshold(x, y, b, kappa, tables, wide, narrow)) / d(2) ** 96
            assert abs(got - ideal) <= d(2) ** -94, (x, y)


def test_exponential_steps_within_their_bounds() -> None:
    """The pieces of A on their own, at 120 digits, over every table index and the whole
    range of the polynomial's argument r < 2^-12 (its ends included):
    2^-r within 2^-99 (SAMPLER.md §3.2: Taylor remainder ≤ 2^-100, Horner ≤ 2^-108),
    and the products T1·T2·T3·P (Q124) below the exact product of their inputs by less
    than 6 units (2^-121.4)."""
    _, _, _, tables, wide, narrow = _reference._plan_values(discrete_gaussian_plan(5.0).words)
    rng = random.Random(7)
    rests = [0, 1, (1 << 84) - 1, (1 << 83), (1 << 84) - (1 << 40)] + [rng.getrandbits(84) for _ in range(300)]
    with decimal.localcontext(_HP):
        d, ln2 = decimal.Decimal, decimal.Decimal(2).ln()
        one = d(2) ** 127
        for rest in rests:
            poly = _reference._exp2_poly(rest, wide, narrow)
            assert poly <= 1 << 127
            assert abs(d(poly) / one - (-ln2 * d(rest) / d(2) ** 96).exp()) <= d(2) ** -99, rest
        for _ in range(300):
            t1, t2, t3 = (rng.choice(t) for t in tables)
            poly = _reference._exp2_poly(rng.getrandbits(84), wide, narrow)
            mul = _reference._mul_hi
            got = mul(mul(mul(t1, t2), t3), poly)
            exact = d(t1) * d(t2) * d(t3) * d(poly) / d(2) ** (3 * 128)
            assert 0 <= exact - d(got) < 6 and got <= 1 << 124


# -- statistics and bounds ------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [2.5, 2.0**40, 2.0**63.5])
def test_variance_is_sigma_actual_squared(sigma: float) -> None:
    """n = 2·10^5: (s²/σ² − 1)·sqrt(n/2) and mean·sqrt(n)/σ are ≈ N(0, 1) for D_{Z,σ}
    (σ ≥ 2: the discrete law's variance is σ²(1 ± 10^-30)); |z| > 6 has probability
    < 2·10^-9 each, so a false failure of this test is below 10^-8."""
    n = 200_000
    high, low = discrete_gaussian(KeyedStream(KEY, b"variance" + sigma.hex().encode()), n, sigma)
    values = high.astype(np.float64) * 2.0**32 + low.astype(np.float64)  # relative error 2^-53
    s_act = sigma_actual(sigma)
    z_var = (float(np.mean(values**2)) / s_act**2 - 1) * math.sqrt(n / 2)
    z_mean = float(values.mean()) * math.sqrt(n) / s_act
    assert abs(z_var) < 6 and abs(z_mean) < 6


def test_small_sigma_matches_the_exact_pmf() -> None:
    from scipy import stats

    sigma = 2.75
    n = 200_000
    high, low = discrete_gaussian(KeyedStream(KEY, b"pmf"), n, sigma)
    values = (high << 32) + low
    s_act = sigma_actual(sigma)
    support = np.arange(-14, 15)
    weights = np.exp(-(support.astype(np.float64) ** 2) / (2 * s_act**2))
    expected = weights / weights.sum() * n
    observed = np.array([(values == z).sum() for z in support])
    assert observed.sum() >= n - 2  # |v| > 14 = 5.1σ: probability 3·10^-7 each
    keep = expected > 20
    other = observed.sum() - observed[keep].sum()
    stat, pvalue = stats.chisquare(np.append(observed[keep], other), np.append(expected[keep], n - expected[keep].sum()))
    assert pvalue > 1e-6


@pytest.mark.parametrize("sigma", SIGMAS)
def test_samples_never_exceed_flooding_max(sigma: float) -> None:
    words = _words(b"max", 4 * 30_000)
    high, low, _ = kernels.discrete_gaussian_from_words(words, 25_000, discrete_gaussian_plan(sigma).words)
    biggest = max(abs(v) for v in _values(high, low))
    assert biggest <= flooding_max(sigma) <= 24.5 * sigma_actual(sigma) + 1
    assert flooding_max(sigma) <= 12.6 * sigma_actual(sigma) + 2**25 or sigma < 2**20


def test_flooding_max_is_monotone_and_accepts_sigma_actual() -> None:
    rng = random.Random(5)
    sigmas = sorted([2.0 ** rng.uniform(1, 64) for _ in range(60)] + [2.0**e for e in range(1, 65)]
                    + [math.nextafter(2.0**e, 0) for e in range(2, 65)])
    bounds = [flooding_max(s) for s in sigmas]
    assert bounds == sorted(bounds)
    for s in sigmas:
        assert flooding_max(sigma_actual(s)) >= flooding_max(s)
        assert sigma_actual(s) >= s


@pytest.mark.parametrize("bad", [0.0, -1.0, 1.999, math.nan, math.inf, 2.0**64 * 1.0000001, 1e300])
def test_sigma_outside_the_range_is_refused(bad: float) -> None:
    with pytest.raises(ParameterError):
        discrete_gaussian_plan(bad)
    with pytest.raises(ParameterError):
        discrete_gaussian(KeyedStream(KEY, b"x"), 4, bad)


def test_stream_determinism_and_repr() -> None:
    a = discrete_gaussian(KeyedStream(KEY, b"d"), 5001, 2.0**50)
    b = discrete_gaussian(KeyedStream(KEY, b"d"), 5001, 2.0**50)
    c = discrete_gaussian(KeyedStream(KEY, b"e"), 5001, 2.0**50)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert discrete_gaussian(KeyedStream(KEY, b"d"), 0, 8.0)[0].shape == (0,)
    assert "words" not in repr(discrete_gaussian_plan(8.0))


def test_flooding_noise_is_the_sampler_in_ntt_form(params) -> None:  # type: ignore[no-untyped-def]
    from he_agg.hazmat.decryption import flooding_noise

    sigma = 2.0**62.5
    noise = flooding_noise(KeyedStream(KEY, b"flood"), 2, sigma, params)
    high, low = discrete_gaussian(KeyedStream(KEY, b"flood"), 2 * params.n, sigma)
    values = np.array(_values(high, low), dtype=object).reshape(2, params.n)
    kernels.ntt_inverse(noise, params.data_moduli)
    for l, q in enumerate(params.data_moduli):
        assert np.array_equal(noise[:, l, :].astype(object), values % q)
    assert max(abs(v) for v in values.ravel()) > 2**63  # beyond int64: the 2^32 split is used


@pytest.mark.parametrize("path", ["scalar", "avx2"])
def test_native_code_paths_identical(path: str) -> None:
    from .support import forced_native_path

    words = _words(b"paths", 4 * 40_000)
    expected = _draw("numba" if "numba" in BACKENDS else "numpy", words[: 4 * 3000], 2500, 2.0**47)
    with forced_native_path("heagg_simd_select", path):
        got = kernels.discrete_gaussian_from_words(words[: 4 * 3000], 2500, discrete_gaussian_plan(2.0**47).words)
    assert got[2] == expected[2]
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
