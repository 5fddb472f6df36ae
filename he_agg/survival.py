"""Federated survival analysis: per-group, per-interval counts on a public time grid.

Every site encodes its rows (time, event, group) as counts on a **public, data-independent
time grid** — interval ends g_1 < … < g_m fixed by the study protocol (weeks of follow-up,
months since diagnosis), never derived from the data. A time t falls in the interval
(g_{j−1}, g_j] and is quantised *up* to g_j (g_0 = −∞ for the first interval): a patient
stays at risk for the whole interval in which they left, and events in one interval count
as tied at its end, as in a registry that records follow-up in whole weeks or months.
Why agreed bins rather than, say, pooled quantiles: quantiles (or the distinct observed
times lifelines uses) are patients' own times, so publishing them would leak raw data and
need another secure round; an agreed grid leaks nothing and is known before any data.
When the grid holds every distinct time (rossi's integer weeks 1…52) the pooled estimates
equal those on the raw data exactly.

:class:`SurvivalCounts` encodes, per group g and interval j, the events d_gj and the
censored c_gj (rows that left the risk set in interval j without an event):
``[d_{1,1..m}, c_{1,1..m}, d_{2,1..m}, c_{2,1..m}, …]`` (2·G·m slots). The number at risk is
not encoded but derived, n_gj = Σ_{i≥j} (d_gi + c_gi): encoding it directly would let one
row change up to m + 1 slots; this way **one patient's row changes exactly one slot by
exactly 1**, so the sensitivity under adding or removing a row is 1 in L1, L2 and L∞ (2 in
L1 and √2 in L2 when a row is replaced). For a Gaussian DP release the derived at-risk
count n_gj then carries noise variance (m − j + 1)·σ², never more than the (m + 1)·σ² of a
directly encoded one. :meth:`SurvivalCounts.decode` returns a :class:`SurvivalTable`,
from which everything else is post-processing (no further release, no further budget):
Kaplan–Meier curves per group, incidence per group and period, the log-rank test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DecodeError, PackingError
from .stats import _aggregate, _bound, _grid, _records, round_counts

__all__ = [
    "Incidence",
    "LogRank",
    "SurvivalCounts",
    "SurvivalTable",
    "TimeGrid",
    "chi2_sf",
]


# -- the public time grid ------------------------------------------------------------------


@dataclass(frozen=True)
class TimeGrid:
    """Public interval ends g_1 < … < g_m; a time t belongs to the first interval with t ≤ g_j.

    Times must be ≥ 0 and ≤ g_m (the horizon): censor follow-up past the horizon at g_m
    before encoding (administrative censoring), so no site's extreme times leave it.
    """

    ends: tuple[float, ...]

    def __post_init__(self) -> None:
        ends = _grid("grid ends", self.ends, 1)
        if ends[0] <= 0:
            raise PackingError(f"grid ends must be positive, got {ends[0]!r} first")
        object.__setattr__(self, "ends", ends)

    @classmethod
    def regular(cls, width: float, horizon: float) -> TimeGrid:
        """Intervals of ``width`` up to ``horizon``: ends width, 2·width, …, horizon."""
        width, horizon = _bound("width", width), _bound("horizon", horizon)
        if not 0 < width <= horizon:
            raise PackingError(f"need 0 < width <= horizon, got width={width!r}, horizon={horizon!r}")
        count = math.ceil(horizon / width - 1e-9)
        return cls(tuple(min(width * (k + 1), horizon) for k in range(count)))

    @property
    def size(self) -> int:
        return len(self.ends)

    def interval(self, times: object) -> np.ndarray:
        """The interval index (0…m−1) of each time; PackingError for times outside [0, g_m]."""
        t = _records("times", times)
        negative = np.flatnonzero(t < 0)
        if negative.size:
            raise PackingError(f"times[{int(negative[0])}] = {t[negative[0]]!r} is negative")
        index = np.searchsorted(np.asarray(self.ends), t, side="left")
        late = np.flatnonzero(index >= self.size)
        if late.size:
            raise PackingError(
                f"times[{int(late[0])}] = {t[late[0]]!r} is past the grid's horizon {self.ends[-1]!r}: "
                "censor follow-up at the horizon before encoding")
        return index

    def quantise(self, times: object) -> np.ndarray:
        """Each time rounded up to its interval's end (what the pooled estimates see)."""
        return np.asarray(self.ends)[self.interval(times)]


# -- the encoder ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SurvivalCounts:
    """Per-group, per-interval events and censored rows on a public :class:`TimeGrid`.

    ``groups`` are the public group labels (compared as ``str``). ``encode`` takes one
    site's rows; ``decode`` the sum over sites (see the module docstring for the layout).
    Sensitivity: one row changes one slot by 1 (``sensitivity`` = L1 = ``l2_sensitivity``
    = 1 for adding or removing a row).
    """

    grid: TimeGrid
    groups: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.grid, TimeGrid):
            raise PackingError(f"grid must be a TimeGrid, got {type(self.grid).__name__}")
        labels = tuple(str(g) for g in self.groups)
        if not labels:
            raise PackingError("need at least one group label")
        if len(set(labels)) != len(labels):
            raise PackingError(f"group labels must be distinct, got {labels}")
        object.__setattr__(self, "groups", labels)

    @property
    def length(self) -> int:
        return 2 * len(self.groups) * self.grid.size

    @property
    def sensitivity(self) -> float:
        """L1 change of the encoding when one row is added or removed."""
        return 1.0

    @property
    def l2_sensitivity(self) -> float:
        """L2 change of the encoding when one row is added or removed."""
        return 1.0

    def encode(self, times: object, events: object, groups: object) -> np.ndarray:
        """One site's rows: follow-up ``times``, ``events`` (1 event, 0 censored), ``groups`` labels."""
        index = self.grid.interval(times)
        event = _records("events", events)
        labels = np.asarray(groups, dtype=object)
        if labels.ndim != 1:
            raise PackingError(f"groups must be one-dimensional (one label per row), got shape {labels.shape}")
        if not event.size == labels.size == index.size:
            raise PackingError(f"times, events and groups differ in length: {index.size}, {event.size}, {labels.size}")
        not_binary = np.flatnonzero((event != 0) & (event != 1))
        if not_binary.size:
            raise PackingError(f"events[{int(not_binary[0])}] is {event[not_binary[0]]}; events must be 0 or 1")
        group = self._group_index(labels)
        m = self.grid.size
        slot = group * 2 * m + (1 - event.astype(np.int64)) * m + index  # d block, then c block, per group
        return np.bincount(slot, minlength=self.length).astype(np.float64)

    def _group_index(self, labels: np.ndarray) -> np.ndarray:
        lookup = {label: k for k, label in enumerate(self.groups)}
        index = np.empty(labels.size, dtype=np.int64)
        for row, label in enumerate(labels):
            k = lookup.get(str(label))
            if k is None:
                raise PackingError(f"groups[{row}] is {str(label)!r}, not one of the public groups {self.groups}")
            index[row] = k
        return index

    def decode(self, aggregated: np.ndarray, *, noise_std: float | None = None) -> SurvivalTable:
        """The pooled counts from the summed encodings.

        Exact release (``noise_std`` None): every count is rounded and checked
        (:func:`he_agg.stats.round_counts`: DecodeError if far from an integer or negative).
        DP release (``noise_std`` = σ per slot): counts are rounded but not clipped, so the
        at-risk counts rebuilt from them stay unbiased (clipping each noisy zero at 0 would
        add about 0.4σ per count, hundreds of phantom rows at risk); the estimators clip
        what must lie in [0, 1]. σ is kept for error bands.
        """
        total = _aggregate(aggregated, self.length, "SurvivalCounts")
        if noise_std is None:
            counts = round_counts(total, "survival count")
        else:
            if not (math.isfinite(noise_std) and noise_std >= 0):
                raise DecodeError(f"noise_std must be a finite non-negative number, got {noise_std!r}")
            counts = np.rint(total).astype(np.int64)
        blocks = counts.reshape(len(self.groups), 2, self.grid.size)
        return SurvivalTable(grid=self.grid, groups=self.groups, events=blocks[:, 0, :].copy(),
                             censored=blocks[:, 1, :].copy(), noise_std=noise_std)


# -- the pooled table and its estimators -------------------------------------------------


@dataclass(frozen=True)
class Incidence:
    """Per group (rows) and period (columns): events, rows censored, at risk at the period's
    start, and the risk events / at-risk (NaN where nobody is at risk)."""

    period_ends: np.ndarray
    events: np.ndarray
    censored: np.ndarray
    at_risk: np.ndarray
    risk: np.ndarray


@dataclass(frozen=True)
class LogRank:
    """Log-rank test of equal survival across groups: χ² ``statistic`` with ``df`` = G − 1
    degrees of freedom, its ``p_value``, and observed/expected events per group."""

    statistic: float
    p_value: float
    df: int
    observed: np.ndarray
    expected: np.ndarray


@dataclass(frozen=True, eq=False)
class SurvivalTable:
    """Pooled per-group, per-interval events and censored counts (G × m int64 arrays)."""

    grid: TimeGrid
    groups: tuple[str, ...]
    events: np.ndarray
    censored: np.ndarray
    noise_std: float | None = None

    @property
    def times(self) -> np.ndarray:
        return np.asarray(self.grid.ends)

    @property
    def at_risk(self) -> np.ndarray:
        """n_gj = rows of group g still followed at the start of interval j."""
        leaving = self.events + self.censored
        return np.cumsum(leaving[:, ::-1], axis=1)[:, ::-1]

    def kaplan_meier(self) -> np.ndarray:
        """S_g(g_j) = Π_{i≤j} (1 − d_gi / n_gi) per group (G × m), intervals with n ≤ 0 skipped.

        From DP-noised counts (``noise_std`` set) a factor may exceed 1; clipping factors
        would bias S downward (only the upward moves would be cut), so the raw product is
        projected instead onto non-increasing curves in [0, 1] (isotonic regression,
        scikit-learn): post-processing, no privacy cost.
        """
        n = self.at_risk
        factors = np.ones(n.shape)
        risk = n > 0
        factors[risk] = np.maximum(1.0 - self.events[risk] / n[risk], 0.0)
        curves = np.cumprod(factors, axis=1)
        if self.noise_std is None:
            return curves
        from sklearn.isotonic import IsotonicRegression

        steps = np.arange(curves.shape[1], dtype=np.float64)
        fit = IsotonicRegression(increasing=False, y_min=0.0, y_max=1.0)
        return np.array([fit.fit_transform(steps, curve) for curve in curves])

    def kaplan_meier_band(self, z: float = 1.96) -> tuple[np.ndarray, np.ndarray] | None:
        """The spread the DP noise gives each released curve: S·exp(∓z·sd(log S)) per group
        (G × m, capped at 1), None for an exact release.

        First order (delta method): every released count carries independent noise of std
        σ = ``noise_std``, so Var(log S_j) ≈ σ² ‖∇ log S_j‖² over the group's 2m counts (n
        is rebuilt from later counts, so every count moves every earlier n). The gradient is
        taken by central differences on the counts as released (post-processing only)."""
        if self.noise_std is None:
            return None
        events, censored = self.events.astype(np.float64), self.censored.astype(np.float64)
        released = self.kaplan_meier()
        lower, upper = np.empty(events.shape), np.empty(events.shape)
        for g in range(events.shape[0]):
            counts = np.concatenate([events[g], censored[g]])
            base = np.log(np.maximum(released[g], 1e-300))
            gradient = np.empty((counts.size, base.size))
            for k in range(counts.size):
                step = np.zeros(counts.size)
                step[k] = 0.5
                gradient[k] = (_log_km(counts + step) - _log_km(counts - step)) / 1.0
            sd = self.noise_std * np.sqrt((gradient**2).sum(axis=0))
            lower[g] = np.exp(base - z * sd)
            upper[g] = np.minimum(np.exp(base + z * sd), 1.0)
        return lower, upper

    def incidence(self, period_ends: object) -> Incidence:
        """Counts per group and period; ``period_ends`` must be grid ends, the last one g_m."""
        ends = np.asarray(_grid("period ends", period_ends, 1))
        position = np.searchsorted(self.times, ends)
        if np.any(position >= self.times.size) or np.any(self.times[np.minimum(position, self.times.size - 1)] != ends):
            raise PackingError("every period end must be a grid end")
        if position[-1] != self.times.size - 1:
            raise PackingError(f"the last period must end at the grid's horizon {self.times[-1]!r}")
        starts = np.concatenate([[0], position[:-1] + 1])
        events = np.add.reduceat(self.events, starts, axis=1)
        censored = np.add.reduceat(self.censored, starts, axis=1)
        at_risk = self.at_risk[:, starts]
        with np.errstate(divide="ignore", invalid="ignore"):
            risk = np.where(at_risk > 0, np.clip(events / np.maximum(at_risk, 1), 0.0, 1.0), np.nan)
        return Incidence(period_ends=ends, events=events, censored=censored, at_risk=at_risk, risk=risk)

    def logrank(self) -> LogRank:
        """The log-rank test (hypergeometric variance for ties, as lifelines), G ≥ 2 groups."""
        groups = len(self.groups)
        if groups < 2:
            raise DecodeError("the log-rank test needs at least two groups")
        n_g, d_g = self.at_risk.astype(np.float64), self.events.astype(np.float64)
        n, d = n_g.sum(axis=0), d_g.sum(axis=0)
        live = (d > 0) & (n > 0)
        n_g, d_g, n, d = n_g[:, live], d_g[:, live], n[live], d[live]
        share = n_g / n
        expected = (share * d).sum(axis=1)
        observed = d_g.sum(axis=1)
        spread = np.where(n > 1, d * (n - d) / np.maximum(n - 1, 1), 0.0)
        covariance = np.einsum("j,gj,hj->gh", spread, share, -share)
        covariance[np.diag_indices(groups)] += (spread * share).sum(axis=1)
        diff = (observed - expected)[:-1]
        reduced = covariance[:-1, :-1]
        if not np.all(np.isfinite(reduced)) or np.linalg.matrix_rank(reduced) < groups - 1:
            raise DecodeError("the log-rank variance is singular: some group has no one at risk at any event")
        statistic = float(diff @ np.linalg.solve(reduced, diff))
        return LogRank(statistic=statistic, p_value=chi2_sf(statistic, groups - 1), df=groups - 1,
                       observed=observed, expected=expected)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able counts per group."""
        return {
            "times": self.times.tolist(),
            "groups": {g: {"events": self.events[k].tolist(), "censored": self.censored[k].tolist(),
                           "at_risk": self.at_risk[k].tolist()} for k, g in enumerate(self.groups)},
            "noise_std": self.noise_std,
        }


def chi2_sf(x: float, df: int) -> float:
    """P(χ²_df ≥ x) for integer df ≥ 1, by the closed form (no SciPy needed).

    Uses Q(df + 2) = Q(df) + (x/2)^{df/2} e^{−x/2} / Γ(df/2 + 1) from Q(1) = erfc(√(x/2))
    and Q(2) = e^{−x/2}.
    """
    if df < 1 or not math.isfinite(x):
        raise DecodeError(f"chi2_sf needs df >= 1 and a finite x, got df={df}, x={x!r}")
    if x <= 0:
        return 1.0
    half = x / 2.0
    k = 2 if df % 2 == 0 else 1
    q = math.exp(-half) if k == 2 else math.erfc(math.sqrt(half))
    while k < df:
        q += math.exp((k / 2) * math.log(half) - half - math.lgamma(k / 2 + 1))
        k += 2
    return min(max(q, 0.0), 1.0)


def _log_km(counts: np.ndarray) -> np.ndarray:
    """log S_j from one group's float counts [events (m) ‖ censored (m)] (intervals with
    nobody at risk, or every one at risk failing, contribute nothing / are floored)."""
    m = counts.size // 2
    events = counts[:m]
    n = np.cumsum((counts[:m] + counts[m:])[::-1])[::-1]
    ratio = np.divide(events, n, out=np.zeros(m), where=n > 0)
    return np.cumsum(np.log(np.maximum(1.0 - ratio, 1e-12)))  # kaplan_meier's raw factors
