"""Federated survival counts: pooled KM, incidence and log-rank equal lifelines' on the pooled rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from he_agg.cli import main
from he_agg.errors import DecodeError, HeAggError, LayoutMismatchError, PackingError
from he_agg.survival import SurvivalCounts, TimeGrid, chi2_sf

lifelines = pytest.importorskip("lifelines")
from lifelines import KaplanMeierFitter  # noqa: E402
from lifelines.datasets import load_rossi, load_waltons  # noqa: E402
from lifelines.statistics import logrank_test, multivariate_logrank_test  # noqa: E402

ROSSI_GRID = TimeGrid.regular(1.0, 52.0)
GROUPS = ("no aid", "financial aid")


def _rossi() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame = load_rossi()
    labels = np.array([GROUPS[g] for g in frame["fin"]], dtype=object)
    return frame["week"].to_numpy(float), frame["arrest"].to_numpy(float), labels


def _pooled_over_sites(counts: SurvivalCounts, times: np.ndarray, events: np.ndarray, groups: np.ndarray,
                       sites: int) -> np.ndarray:
    parts = np.array_split(np.arange(times.size), sites)
    return np.sum([counts.encode(times[p], events[p], groups[p]) for p in parts], axis=0)


def _lifelines_km(times: np.ndarray, events: np.ndarray, at: np.ndarray) -> np.ndarray:
    return KaplanMeierFitter().fit(times, events).survival_function_at_times(at).to_numpy()


# -- equality with lifelines -----------------------------------------------------------------


def test_rossi_km_and_logrank_equal_lifelines_on_the_pooled_rows() -> None:
    times, events, groups = _rossi()
    counts = SurvivalCounts(ROSSI_GRID, GROUPS)
    table = counts.decode(_pooled_over_sites(counts, times, events, groups, 7))
    survival = table.kaplan_meier()
    for k, group in enumerate(GROUPS):
        mine = groups == group
        np.testing.assert_allclose(survival[k], _lifelines_km(times[mine], events[mine], table.times), atol=1e-6, rtol=0)
    a, b = groups == GROUPS[0], groups == GROUPS[1]
    reference = logrank_test(times[a], times[b], events[a], events[b])
    result = table.logrank()
    assert result.df == 1
    assert result.statistic == pytest.approx(reference.test_statistic, rel=1e-9)
    assert result.p_value == pytest.approx(reference.p_value, rel=1e-9)
    assert result.observed.sum() == events.sum()
    assert result.expected.sum() == pytest.approx(events.sum(), rel=1e-12)


def test_coarse_grid_equals_lifelines_on_the_quantised_rows() -> None:
    """waltons' days binned to 5-day intervals: the estimates are those of the rows rounded up."""
    frame = load_waltons()
    grid = TimeGrid.regular(5.0, 80.0)
    groups = frame["group"].to_numpy(object)
    counts = SurvivalCounts(grid, ("control", "miR-137"))
    table = counts.decode(_pooled_over_sites(counts, frame["T"].to_numpy(float), frame["E"].to_numpy(float), groups, 5))
    quantised, events = grid.quantise(frame["T"]), frame["E"].to_numpy(float)
    assert set(np.unique(quantised)) <= set(grid.ends) and np.all(quantised >= frame["T"])
    for k, group in enumerate(counts.groups):
        mine = groups == group
        np.testing.assert_allclose(table.kaplan_meier()[k], _lifelines_km(quantised[mine], events[mine], table.times),
                                   atol=1e-6, rtol=0)
    reference = multivariate_logrank_test(quantised, groups, events)
    assert table.logrank().statistic == pytest.approx(reference.test_statistic, rel=1e-9)


def test_incidence_counts_are_exact() -> None:
    times, events, groups = _rossi()
    counts = SurvivalCounts(ROSSI_GRID, GROUPS)
    incidence = counts.decode(_pooled_over_sites(counts, times, events, groups, 5)).incidence([13, 26, 39, 52])
    starts = [0, 13, 26, 39]
    for k, group in enumerate(GROUPS):
        for p, (lo, hi) in enumerate(zip(starts, incidence.period_ends)):
            rows = (groups == group) & (times > lo) & (times <= hi)
            assert incidence.events[k, p] == int(events[rows].sum())
            assert incidence.censored[k, p] == int((1 - events[rows]).sum())
            assert incidence.at_risk[k, p] == int(((groups == group) & (times > lo)).sum())
            assert incidence.risk[k, p] == incidence.events[k, p] / incidence.at_risk[k, p]
    assert incidence.events.sum() == events.sum() and incidence.censored.sum() == (1 - events).sum()


# -- laws ---------------------------------------------------------------------------------

GRID = TimeGrid((1.0, 2.5, 4.0, 7.0, 10.0))
LABELS = ("a", "b", "c")


@st.composite
def rows(draw: st.DrawFn, min_size: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    size = draw(st.integers(min_size, 40))
    times = draw(st.lists(st.floats(0.0, 10.0), min_size=size, max_size=size))
    events = draw(st.lists(st.integers(0, 1), min_size=size, max_size=size))
    groups = draw(st.lists(st.sampled_from(LABELS), min_size=size, max_size=size))
    return np.array(times), np.array(events, dtype=float), np.array(groups, dtype=object)


@settings(max_examples=60, deadline=None)
@given(data=rows(), cuts=st.lists(st.integers(0, 40), max_size=6))
def test_the_split_across_sites_does_not_change_the_pooled_counts(
        data: tuple[np.ndarray, np.ndarray, np.ndarray], cuts: list[int]) -> None:
    times, events, groups = data
    counts = SurvivalCounts(GRID, LABELS)
    pieces = np.split(np.arange(times.size), sorted(min(c, times.size) for c in cuts))
    summed = np.sum([counts.encode(times[p], events[p], groups[p]) for p in pieces], axis=0)
    np.testing.assert_array_equal(summed, counts.encode(times, events, groups))


@settings(max_examples=60, deadline=None)
@given(data=rows(), time=st.floats(0.0, 10.0), event=st.integers(0, 1), group=st.sampled_from(LABELS))
def test_one_row_changes_one_count_by_one(data: tuple[np.ndarray, np.ndarray, np.ndarray], time: float,
                                          event: int, group: str) -> None:
    times, events, groups = data
    counts = SurvivalCounts(GRID, LABELS)
    before = counts.encode(times, events, groups)
    after = counts.encode(np.append(times, time), np.append(events, event), np.append(groups, group))
    change = after - before
    assert np.abs(change).sum() == counts.sensitivity == 1.0
    assert np.sqrt((change**2).sum()) == counts.l2_sensitivity


@settings(max_examples=25, deadline=None)
@given(data=rows(min_size=2))
def test_random_rows_match_lifelines(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    times, events, groups = data
    counts = SurvivalCounts(GRID, LABELS)
    table = counts.decode(counts.encode(times, events, groups))
    quantised = GRID.quantise(times)
    for k, label in enumerate(LABELS):
        mine = groups == label
        if mine.any():
            np.testing.assert_allclose(table.kaplan_meier()[k], _lifelines_km(quantised[mine], events[mine], table.times),
                                       atol=1e-6, rtol=0)
    present = [k for k, label in enumerate(LABELS) if (groups == label).any()]
    if len(present) >= 2 and events.sum() > 0:
        sub = SurvivalCounts(GRID, tuple(LABELS[k] for k in present))
        keep = np.isin(groups, sub.groups)
        try:
            ours = sub.decode(sub.encode(times[keep], events[keep], groups[keep])).logrank()
        except DecodeError:
            return  # singular variance (e.g. one group has no one at risk at any event time)
        reference = multivariate_logrank_test(quantised[keep], groups[keep], events[keep])
        assert ours.statistic == pytest.approx(reference.test_statistic, rel=1e-7, abs=1e-9)
        assert ours.p_value == pytest.approx(reference.p_value, rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("x", [0.0, 0.01, 1.0, 3.84, 12.5, 60.0])
def test_chi2_sf_equals_scipy(df: int, x: float) -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    assert chi2_sf(x, df) == pytest.approx(scipy_stats.chi2.sf(x, df), rel=1e-9, abs=1e-300)


# -- DP seam: noisy counts are post-processed into a consistent table ----------------------------


def test_noisy_decode_rounds_clips_and_stays_consistent() -> None:
    times, events, groups = _rossi()
    counts = SurvivalCounts(ROSSI_GRID, GROUPS)
    exact = counts.encode(times, events, groups)
    noise = np.sin(np.arange(exact.size) * 12.9898) * 3.0  # deterministic stand-in for released noise
    table = counts.decode(exact + noise, noise_std=3.0)
    assert table.noise_std == 3.0
    # Rounded, not clipped: the released total (hence every rebuilt at-risk count) stays unbiased.
    assert table.events.sum() + table.censored.sum() == np.rint(exact + noise).sum()
    km = table.kaplan_meier()
    assert np.all((km >= 0) & (km <= 1)) and np.all(np.diff(km, axis=1) <= 0)
    with pytest.raises(DecodeError, match="integer"):
        counts.decode(exact + noise)  # an exact release refuses counts far from integers


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(("times", "events", "groups", "match"), [
    ([53.0], [1], ["no aid"], "horizon"),
    ([-1.0], [1], ["no aid"], "negative"),
    ([np.nan], [1], ["no aid"], "finite"),
    ([3.0], [2], ["no aid"], "0 or 1"),
    ([3.0], [1], ["other"], "public groups"),
    ([3.0, 4.0], [1], ["no aid"], "length"),
])
def test_bad_rows_are_refused(times: list[float], events: list[int], groups: list[str], match: str) -> None:
    with pytest.raises(PackingError, match=match):
        SurvivalCounts(ROSSI_GRID, GROUPS).encode(np.array(times), np.array(events), np.array(groups, dtype=object))


def test_bad_grids_groups_and_aggregates_are_refused() -> None:
    with pytest.raises(PackingError, match="increasing"):
        TimeGrid((1.0, 1.0, 2.0))
    with pytest.raises(PackingError, match="positive"):
        TimeGrid((0.0, 1.0))
    with pytest.raises(PackingError, match="width"):
        TimeGrid.regular(0.0, 5.0)
    with pytest.raises(PackingError, match="distinct"):
        SurvivalCounts(ROSSI_GRID, ("a", "a"))
    counts = SurvivalCounts(ROSSI_GRID, GROUPS)
    with pytest.raises(LayoutMismatchError):
        counts.decode(np.zeros(counts.length - 1))
    table = counts.decode(np.zeros(counts.length))
    with pytest.raises(PackingError, match="grid end"):
        table.incidence([13.5, 52])
    with pytest.raises(PackingError, match="horizon"):
        table.incidence([13, 26])
    with pytest.raises(DecodeError, match="singular"):
        table.logrank()
    with pytest.raises(DecodeError, match="two groups"):
        SurvivalCounts(ROSSI_GRID, ("all",)).decode(np.zeros(2 * 52)).logrank()
    assert all(issubclass(e, HeAggError) for e in (PackingError, DecodeError))


def test_an_empty_site_encodes_zeros_and_bad_types_are_refused() -> None:
    counts = SurvivalCounts(ROSSI_GRID, GROUPS)
    np.testing.assert_array_equal(counts.encode([], [], []), np.zeros(counts.length))
    with pytest.raises(PackingError, match="one-dimensional"):
        counts.encode([3.0], [1], "no aid")
    with pytest.raises(PackingError, match="number"):
        TimeGrid.regular("1", 52.0)  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="noise_std"):
        counts.decode(np.zeros(counts.length), noise_std=float("nan"))


def test_regular_grid_ends_at_the_horizon() -> None:
    assert TimeGrid.regular(1.0, 52.0).ends == tuple(float(w) for w in range(1, 53))
    assert TimeGrid.regular(5.0, 12.0).ends == (5.0, 10.0, 12.0)
    assert TimeGrid.regular(5.0, 12.0).quantise([0.0, 5.0, 5.1, 12.0]).tolist() == [5.0, 5.0, 10.0, 12.0]


# -- the command ------------------------------------------------------------------------------


def test_demo_survival_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "km.png"
    assert main(["demo", "survival", "--hospitals", "5", "--json", "--plot", str(png)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["story"] == "survival" and report["mode"] == "enrolled" and report["sites"] == 5
    assert sum(report["rows_per_site"]) == 432 and report["committee"] == "3-of-5"
    assert report["kaplan_meier_max_difference"] < 1e-6 and report["counts_equal_plaintext"]
    lr = report["logrank"]
    assert lr["statistic"] == pytest.approx(lr["lifelines_statistic"], rel=1e-9)
    assert lr["p_value"] == pytest.approx(lr["lifelines_p_value"], rel=1e-9)
    assert sum(r["events"] for r in report["incidence"]) == 114  # rossi's re-arrests
    assert report["noise_std"] is None and report["decryption_budget_used"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and report["plot"] == str(png)


def test_demo_survival_renders_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "survival", "--dataset", "waltons", "--mode", "public-key", "--hospitals", "5"]) == 0
    out = capsys.readouterr().out
    assert "Kaplan–Meier" in out and "Incidence per group and period" in out and "Log-rank test" in out


def test_demo_survival_refusals(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["demo", "survival", "--hospitals", "4"]) == 2
    assert "--hospitals >= 5" in capsys.readouterr().err
    assert main(["demo", "--plot", str(tmp_path / "x.png")]) == 2  # the FedAvg story draws no chart
    assert "demo survival" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "mortality"])


def test_demo_survival_with_committee_dp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--dp EPS``: every member enforces the budget and adds its part of the noise; the
    released counts scatter around the exact ones with the calibrated spread (208 counts:
    the sample std is within ~5% of σ, 25% allowed), the budget spent is reported, and the
    plot carries the noise band."""
    pytest.importorskip("dp_accounting")
    pytest.importorskip("matplotlib")
    png = tmp_path / "km_dp.png"
    assert main(["demo", "survival", "--hospitals", "5", "--dp", "2.0", "--json", "--plot", str(png)]) == 0
    report = json.loads(capsys.readouterr().out)
    dp = report["dp"]
    assert 0 < dp["epsilon"] <= 2.0 + 1e-9 and dp["delta"] == pytest.approx(1e-5)
    assert dp["noise_std"] > 1.0 and report["noise_std"] == dp["noise_std"]
    assert 0.75 * dp["noise_std"] < dp["count_error_std"] < 1.25 * dp["noise_std"]
    for curve in report["kaplan_meier"].values():
        lower, upper, released = (np.array(curve[k]) for k in ("band_lower", "band_upper", "survival"))
        assert np.all(lower <= released + 1e-12) and np.all(released <= upper + 1e-12)
        assert np.all((np.array(released) >= 0) & (np.array(released) <= 1))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dp_band_widens_with_the_noise() -> None:
    counts = SurvivalCounts(ROSSI_GRID, GROUPS)
    times, events, groups = _rossi()
    exact = counts.encode(times, events, groups)
    assert counts.decode(exact).kaplan_meier_band() is None
    widths = []
    for sigma in (0.5, 2.0, 8.0):
        lower, upper = counts.decode(exact, noise_std=sigma).kaplan_meier_band()
        widths.append(float(np.mean(upper - lower)))
    assert widths[0] < widths[1] < widths[2]
