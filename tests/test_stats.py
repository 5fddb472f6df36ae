"""Federated statistics: summed per-site encodings decode to the pooled result."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from he_agg.errors import LayoutMismatchError
from he_agg.errors import DecodeError, PackingError
from he_agg.stats import COUNT_TOLERANCE, Count, Histogram, KaplanMeier, Moments, Sum, round_counts

seeds = st.integers(0, 2**32 - 1)


def _partition(rng: np.random.Generator, n: int, sites: int) -> list[np.ndarray]:
    """Random disjoint index sets covering range(n); some sites may be empty."""
    owner = rng.integers(0, sites, size=n)
    return [np.flatnonzero(owner == s) for s in range(sites)]


def _noise(rng: np.random.Generator, length: int) -> np.ndarray:
    """Decryption-like error: up to ±1e-7 on every slot."""
    return rng.uniform(-1e-7, 1e-7, size=length)


# -- Moments ------------------------------------------------------------------------------


@given(seed=seeds, n=st.integers(1, 300), sites=st.integers(1, 6), noisy=st.booleans())
def test_moments_match_pooled_numpy(seed: int, n: int, sites: int, noisy: bool) -> None:
    rng = np.random.default_rng(seed)
    lo, hi = sorted(rng.uniform(-1e3, 1e3, size=2))
    data = rng.normal((lo + hi) / 2, (hi - lo) / 3, size=n)  # some values fall outside [lo, hi]
    stat = Moments(lo, hi)
    total = sum(stat.encode(data[part]) for part in _partition(rng, n, sites))
    assert total.shape == (stat.length,)
    if noisy:
        total = total + _noise(rng, stat.length)
    result = stat.decode(total)
    pooled = np.clip(data, lo, hi)
    width = hi - lo
    # Slot noise e moves the mean by e/n and the variance by at most e·(1 + width)/n;
    # |√a − √b| ≤ √|a − b| bounds the std's error.
    noise = 2e-7 * (1 + width) / n if noisy else 0.0
    mean_tol, var_tol = 1e-9 * width + noise, 1e-9 * width**2 + noise
    assert result.count == n
    assert result.mean == pytest.approx(np.mean(pooled), abs=mean_tol)
    assert result.variance == pytest.approx(np.var(pooled), abs=var_tol)
    assert result.std == pytest.approx(np.std(pooled), abs=math.sqrt(var_tol))
    if n > 1:
        sample_tol = var_tol * n / (n - 1)
        assert result.sample_variance == pytest.approx(np.var(pooled, ddof=1), abs=sample_tol)
        assert result.sample_std == pytest.approx(np.std(pooled, ddof=1), abs=math.sqrt(sample_tol))
    else:
        assert math.isnan(result.sample_variance) and math.isnan(result.sample_std)


def test_moments_known_answer_and_sensitivity() -> None:
    stat = Moments(0.0, 10.0)
    encoding = stat.encode([1.0, 2.0, 3.0, 20.0])  # 20 is clipped to 10
    assert encoding.tolist() == [4.0, (1 + 2 + 3 + 10) - 4 * 5.0, 16 + 9 + 4 + 25]
    result = stat.decode(encoding)
    assert result.mean == 4.0 and result.variance == pytest.approx(np.var([1, 2, 3, 10]))
    assert stat.sensitivity == 1 + 5 + 25
    # One added record moves the encoding by at most the sensitivity (L1).
    for x in (-100.0, 0.0, 5.0, 10.0, 7.3):
        assert np.abs(stat.encode([1.0, 2.0, x]) - stat.encode([1.0, 2.0])).sum() <= stat.sensitivity


def test_moments_refuses_empty_aggregates_and_bad_bounds() -> None:
    stat = Moments(-1.0, 1.0)
    with pytest.raises(DecodeError, match="no records"):
        stat.decode(stat.encode([]))
    for lo, hi in ((1.0, 1.0), (2.0, 1.0), (-math.inf, 1.0), (0.0, math.nan)):
        with pytest.raises(PackingError):
            Moments(lo, hi)
    with pytest.raises(PackingError, match=r"values\[1\]"):
        stat.encode([0.0, math.nan])


# -- Histogram ----------------------------------------------------------------------------

edge_lists = st.lists(st.floats(-100, 100), min_size=2, max_size=12, unique=True).map(sorted)


@given(seed=seeds, edges=edge_lists, n=st.integers(0, 400), sites=st.integers(1, 6), noisy=st.booleans())
def test_histogram_matches_numpy(seed: int, edges: list[float], n: int, sites: int, noisy: bool) -> None:
    rng = np.random.default_rng(seed)
    data = rng.uniform(-120, 120, size=n)
    data[: n // 4] = rng.choice(edges, size=n // 4)  # values exactly on edges, the last one included
    stat = Histogram(edges)
    total = sum((stat.encode(data[part]) for part in _partition(rng, n, sites)), np.zeros(stat.length))
    if noisy:
        total = total + _noise(rng, stat.length)
    result = stat.decode(total)
    expected, _ = np.histogram(data, bins=np.asarray(edges))
    assert result.counts.tolist() == expected.tolist()
    assert result.underflow == int(np.sum(data < edges[0]))
    assert result.overflow == int(np.sum(data > edges[-1]))
    assert result.total == n


def test_histogram_slots_and_validation() -> None:
    stat = Histogram([0.0, 1.0, 2.0])
    assert stat.length == 4 and stat.sensitivity == 1.0
    assert stat.encode([-1.0, 0.0, 0.5, 1.0, 2.0, 2.5]).tolist() == [1, 2, 2, 1]
    for edges in ([1.0], [0.0, 0.0], [1.0, 0.0], [0.0, math.inf], [[0.0, 1.0]]):
        with pytest.raises(PackingError):
            Histogram(edges)  # type: ignore[arg-type]
    with pytest.raises(LayoutMismatchError, match="4"):
        stat.decode(np.zeros(3))


# -- Kaplan–Meier -------------------------------------------------------------------------


def _lifelines_survival(durations: np.ndarray, events: np.ndarray, times: np.ndarray) -> np.ndarray:
    from lifelines import KaplanMeierFitter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitter = KaplanMeierFitter().fit(durations, event_observed=events)
        return fitter.survival_function_at_times(times).to_numpy()


@given(
    seed=seeds,
    m=st.integers(1, 15),
    n=st.integers(1, 250),
    sites=st.integers(1, 5),
    noisy=st.booleans(),
)
def test_kaplan_meier_matches_lifelines(seed: int, m: int, n: int, sites: int, noisy: bool) -> None:
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.uniform(0.1, 3.0, size=m))
    durations = rng.choice(times, size=n)
    events = rng.integers(0, 2, size=n)
    stat = KaplanMeier(times)
    parts = _partition(rng, n, sites)
    total = sum((stat.encode(durations[p], events[p]) for p in parts), np.zeros(stat.length))
    if noisy:
        total = total + _noise(rng, stat.length)
    result = stat.decode(total)
    np.testing.assert_allclose(result.survival, _lifelines_survival(durations, events, times), rtol=0, atol=1e-6)
    assert result.events.tolist() == [int(np.sum((durations == t) & (events == 1))) for t in times]
    assert result.at_risk.tolist() == [int(np.sum(durations >= t)) for t in times]
    assert result.censored.tolist() == [int(np.sum((durations == t) & (events == 0))) for t in times]


def test_kaplan_meier_known_answer() -> None:
    stat = KaplanMeier([1.0, 2.0, 3.0])
    assert stat.length == 6 and stat.sensitivity == 4.0
    encoding = stat.encode([1.0, 1.0, 2.0, 3.0], [1, 0, 1, True])
    assert encoding.tolist() == [1, 1, 1, 4, 2, 1]
    assert stat.decode(encoding).survival.tolist() == pytest.approx([3 / 4, 3 / 4 * 1 / 2, 0.0])
    empty = stat.decode(stat.encode([], []))
    assert empty.survival.tolist() == [1.0, 1.0, 1.0]  # no one at risk: nothing to skip past


def test_kaplan_meier_rejects_off_grid_durations() -> None:
    stat = KaplanMeier([1.0, 2.0, 3.0])
    for bad in (2.5, 0.5, 4.0):
        with pytest.raises(PackingError, match=r"durations\[1\].*round every duration"):
            stat.encode([1.0, bad], [1, 1])
    with pytest.raises(PackingError, match="events must be 0 or 1"):
        stat.encode([1.0, 2.0], [1, 2])
    with pytest.raises(PackingError, match="records"):
        stat.encode([1.0, 2.0], [1])
    with pytest.raises(PackingError, match="increasing"):
        KaplanMeier([1.0, 1.0])


def test_kaplan_meier_refuses_inconsistent_counts() -> None:
    stat = KaplanMeier([1.0, 2.0])
    with pytest.raises(DecodeError, match="corrupt"):
        stat.decode(np.array([3.0, 0.0, 2.0, 1.0]))  # 3 events, 1 leaving at t=1
    with pytest.raises(DecodeError, match="corrupt"):
        stat.decode(np.array([0.0, 0.0, 1.0, 2.0]))  # the risk set grows


# -- rounding: small noise decodes, large perturbations are refused -----------------------


@pytest.mark.parametrize(
    "stat, encode",
    [
        (Count(), lambda s: s.encode(np.arange(7.0))),
        (Moments(0.0, 1.0), lambda s: s.encode(np.linspace(0, 1, 9))),
        (Histogram([0.0, 0.5, 1.0]), lambda s: s.encode(np.linspace(-1, 2, 13))),
        (KaplanMeier([1.0, 2.0]), lambda s: s.encode([1.0, 2.0, 2.0], [1, 0, 1])),
    ],
    ids=["count", "moments", "histogram", "kaplan-meier"],
)
def test_large_perturbation_of_a_count_raises(stat: object, encode: object) -> None:
    exact = encode(stat)  # type: ignore[operator]
    stat.decode(exact + 1e-7)  # type: ignore[attr-defined]
    stat.decode(exact - 1e-7)  # type: ignore[attr-defined]
    perturbed = exact.copy()
    perturbed[0] += 0.4  # slot 0 is a count in every one of these encodings
    with pytest.raises(DecodeError, match="corrupt or its noise too large"):
        stat.decode(perturbed)  # type: ignore[attr-defined]


@given(values=st.lists(st.integers(0, 10**6), min_size=1, max_size=20), seed=seeds)
def test_round_counts_tolerates_small_noise(values: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    noisy = np.asarray(values, dtype=np.float64) + rng.uniform(-0.2, 0.2, size=len(values))
    assert round_counts(noisy, "x").tolist() == values
    corrupt = np.asarray(values, dtype=np.float64)
    corrupt[rng.integers(len(values))] += rng.choice([-1.0, 1.0]) * rng.uniform(COUNT_TOLERANCE, 0.5)
    with pytest.raises(DecodeError, match="from the nearest integer"):
        round_counts(corrupt, "x")


def test_negative_counts_and_non_finite_aggregates_are_refused() -> None:
    with pytest.raises(DecodeError, match="negative"):
        Count().decode(np.array([-1.0]))
    with pytest.raises(DecodeError, match="non-finite"):
        Histogram([0.0, 1.0]).decode(np.array([0.0, math.nan, 0.0]))


# -- Count and Sum ------------------------------------------------------------------------


@given(seed=seeds, n=st.integers(0, 200), sites=st.integers(1, 5))
def test_count_and_sum_match_pooled(seed: int, n: int, sites: int) -> None:
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 10, size=n)
    counter, summer = Count(), Sum(-15.0, 15.0)
    parts = _partition(rng, n, sites)
    assert counter.decode(sum(counter.encode(data[p]) for p in parts)) == n
    total = summer.decode(sum(summer.encode(data[p]) for p in parts))
    assert total == pytest.approx(np.sum(np.clip(data, -15, 15)), abs=1e-9)
    assert summer.sensitivity == 15.0 and counter.sensitivity == 1.0


# -- DP releases: noise on purpose ------------------------------------------------------------


def _dp_noise(size: int, sigma: float) -> np.ndarray:
    """A deterministic stand-in for a DP release's noise (the committee adds the real one)."""
    return sigma * np.sin(np.arange(1, size + 1) * 12.9898) * math.sqrt(2)


def test_dp_noised_statistics_decode_with_noise_std() -> None:
    """A DP release is far from integers on purpose: without ``noise_std`` the decoders
    refuse it as corrupt; with it, counts are rounded and clipped at 0 (post-processing)."""
    values = np.linspace(0.0, 10.0, 200)
    histogram = Histogram((0.0, 2.5, 5.0, 7.5, 10.0))
    exact = histogram.encode(values)
    noisy = exact + _dp_noise(exact.size, 3.0)
    with pytest.raises(DecodeError, match="integer"):
        histogram.decode(noisy)
    released = histogram.decode(noisy, noise_std=3.0)
    assert released.counts.min() >= 0 and released.underflow >= 0 and released.overflow >= 0
    assert np.abs(released.counts - exact[1:-1]).max() <= 3.0 * 3 * math.sqrt(2) + 1
    assert Count().decode(np.array([200.0 + 2.7]), noise_std=3.0) == 203
    assert Count().decode(np.array([-4.2]), noise_std=3.0) == 0
    moments = Moments(0.0, 10.0)
    encoded = moments.encode(values) + _dp_noise(3, 0.4)
    pooled = moments.decode(encoded, noise_std=0.4)
    assert pooled.count in (199, 200, 201) and abs(pooled.mean - values.mean()) < 0.05
    with pytest.raises(DecodeError, match="SurvivalCounts"):
        KaplanMeier((1.0, 2.0)).decode(np.zeros(4), noise_std=1.0)
    with pytest.raises(DecodeError, match="noise_std"):
        round_counts(np.zeros(2), "count", noise_std=float("inf"))
