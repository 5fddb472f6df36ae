"""Federated statistics: per-site encoders, decoders of the summed encoding, sensitivities.

Each statistic turns a site's local data into a short float64 vector (``encode``); the
aggregate is the plain sum of the sites' vectors (encrypted, summed, threshold-decrypted);
``decode`` turns that sum into the pooled result. ``sensitivity`` is the L1 change of one
site's encoding when one record is added or removed (for a later differential-privacy
noise layer).

Decrypted sums are only approximately the plaintext sums (error about 1e-8), so decoders
**round counts to the nearest integer** and raise :class:`~he_agg.errors.DecodeError` when
a count lies 0.25 or more from every integer (or is negative): the aggregate is then
corrupt, or its noise too large to trust.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .errors import DecodeError, LayoutMismatchError, PackingError

__all__ = [
    "COUNT_TOLERANCE",
    "Count",
    "Histogram",
    "HistogramResult",
    "KaplanMeier",
    "KaplanMeierResult",
    "Moments",
    "MomentsResult",
    "Statistic",
    "Sum",
    "round_counts",
]

#: A decrypted count must lie closer than this to an integer.
COUNT_TOLERANCE = 0.25


class Statistic(Protocol):
    """What every statistic offers (``encode`` takes statistic-specific local data)."""

    @property
    def length(self) -> int: ...

    @property
    def sensitivity(self) -> float: ...

    def decode(self, aggregated: np.ndarray, *, noise_std: float | None = None) -> object: ...


# -- shared checks ------------------------------------------------------------------------


def _records(name: str, data: object) -> np.ndarray:
    """A site's records as a finite 1-D float64 array (may be empty)."""
    array = np.asarray(data)
    if array.dtype.kind not in "biuf":
        raise PackingError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.ndim != 1:
        raise PackingError(f"{name} must be one-dimensional (one value per record), got shape {array.shape}")
    values = array.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise PackingError(f"{name}[{int(bad[0])}] is {values[bad[0]]}: every value must be finite")
    return values


def _bound(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise PackingError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise PackingError(f"{name} must be finite, got {value!r}")
    return number


def _interval(lo: object, hi: object) -> tuple[float, float]:
    low, high = _bound("lo", lo), _bound("hi", hi)
    if not low < high:
        raise PackingError(f"need lo < hi, got lo={low!r}, hi={high!r}")
    return low, high


class _Bounded:
    """Shared validation for statistics clipped to [lo, hi] (finite, lo < hi)."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        lo, hi = _interval(self.lo, self.hi)
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)


def _grid(name: str, values: object, minimum: int) -> tuple[float, ...]:
    array = _records(name, values)
    if array.size < minimum:
        raise PackingError(f"{name} needs at least {minimum} values, got {array.size}")
    if np.any(np.diff(array) <= 0):
        raise PackingError(f"{name} must be strictly increasing")
    return tuple(float(v) for v in array)


def _aggregate(aggregated: object, length: int, what: str) -> np.ndarray:
    array = np.asarray(aggregated)
    if array.dtype.kind not in "biuf" or array.ndim != 1:
        raise PackingError(f"the {what} aggregate must be a 1-D real vector, got {array.dtype} {array.shape}")
    if array.shape[0] != length:
        raise LayoutMismatchError(f"the aggregate has {array.shape[0]} slots; {what} uses {length}")
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise DecodeError(f"the {what} aggregate holds non-finite values: it is corrupt")
    return values


def round_counts(values: np.ndarray, what: str, *, noise_std: float | None = None) -> np.ndarray:
    """Round decrypted counts to the nearest integer (int64), refusing suspicious ones.

    Raises :class:`DecodeError` if a value lies COUNT_TOLERANCE or more from every
    integer, or rounds to a negative count. A DP release (``noise_std`` = the noise's std
    per value, as the aggregator reports it) carries noise on purpose: its counts are
    rounded and clipped at 0 (post-processing, no privacy cost), never refused.
    """
    if noise_std is not None:
        if not (math.isfinite(noise_std) and noise_std >= 0):
            raise DecodeError(f"noise_std must be a finite non-negative number, got {noise_std!r}")
        return np.maximum(np.rint(values), 0).astype(np.int64)
    rounded = np.rint(values)
    residue = np.abs(values - rounded)
    if residue.size:
        worst = int(np.argmax(residue))
        if residue[worst] >= COUNT_TOLERANCE:
            raise DecodeError(
                f"{what}[{worst}] decrypted to {values[worst]!r}, {residue[worst]:.3g} from the nearest "
                f"integer (limit {COUNT_TOLERANCE}): the aggregate is corrupt or its noise too large"
            )
        if rounded.min() < 0:
            raise DecodeError(f"{what}[{int(np.argmin(rounded))}] is negative: the aggregate is corrupt")
    counts: np.ndarray = rounded.astype(np.int64)
    return counts


# -- count and sum ------------------------------------------------------------------------


@dataclass(frozen=True)
class Count:
    """Number of records. Encodes ``[n]``; sensitivity 1; decodes to the rounded int."""

    @property
    def length(self) -> int:
        return 1

    @property
    def sensitivity(self) -> float:
        return 1.0

    def encode(self, values: object) -> np.ndarray:
        return np.array([_records("values", values).size], dtype=np.float64)

    def decode(self, aggregated: np.ndarray, *, noise_std: float | None = None) -> int:
        return int(round_counts(_aggregate(aggregated, 1, "Count"), "count", noise_std=noise_std)[0])


@dataclass(frozen=True)
class Sum(_Bounded):
    """Sum of values clipped to [lo, hi]. Encodes ``[Σ clip(x)]``.

    Sensitivity max(|lo|, |hi|). Decodes to the float sum (no rounding).
    """

    lo: float
    hi: float

    @property
    def length(self) -> int:
        return 1

    @property
    def sensitivity(self) -> float:
        return max(abs(self.lo), abs(self.hi))

    def encode(self, values: object) -> np.ndarray:
        clipped = np.clip(_records("values", values), self.lo, self.hi)
        return np.array([np.sum(clipped)], dtype=np.float64)

    def decode(self, aggregated: np.ndarray, *, noise_std: float | None = None) -> float:
        return float(_aggregate(aggregated, 1, "Sum")[0])  # a DP sum is used as released


# -- moments ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MomentsResult:
    """Pooled count, mean, population and sample (ddof=1) variance and std.

    With a single record the sample variance and std are NaN (as ``np.var(ddof=1)``).
    """

    count: int
    mean: float
    variance: float
    sample_variance: float
    std: float
    sample_std: float


@dataclass(frozen=True)
class Moments(_Bounded):
    """Count, mean, variance and std of values clipped to [lo, hi] at each site.

    Values are centred on c = (lo + hi) / 2 before summing — this keeps the sums small
    (headroom) and avoids cancellation in the variance. Encodes
    ``[n, Σ(x − c), Σ(x − c)²]`` with x clipped to [lo, hi]. With h = (hi − lo) / 2,
    one record changes the encoding by at most 1 + h + h² in L1 (the sensitivity).
    Decoding rounds the count; a count of 0 raises :class:`DecodeError` (no records).
    """

    lo: float
    hi: float

    @property
    def center(self) -> float:
        return (self.lo + self.hi) / 2

    @property
    def length(self) -> int:
        return 3

    @property
    def sensitivity(self) -> float:
        half = (self.hi - self.lo) / 2
        return 1.0 + half + half * half

    def encode(self, values: object) -> np.ndarray:
        shifted = np.clip(_records("values", values), self.lo, self.hi) - self.center
        return np.array([shifted.size, np.sum(shifted), np.sum(shifted * shifted)], dtype=np.float64)

    def decode(self, aggregated: np.ndarray, *, noise_std: float | None = None) -> MomentsResult:
        total = _aggregate(aggregated, 3, "Moments")
        count = int(round_counts(total[:1], "count", noise_std=noise_std)[0])
        if count < 1:
            raise DecodeError("the aggregate counts no records: mean and variance are undefined")
        shift = total[1] / count
        variance = max(total[2] / count - shift * shift, 0.0)  # noise can push it just below 0
        sample = variance * count / (count - 1) if count > 1 else math.nan
        return MomentsResult(
            count=count,
            mean=self.center + shift,
            variance=variance,
            sample_variance=sample,
            std=math.sqrt(variance),
            sample_std=math.sqrt(sample),
        )


# -- histogram ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class HistogramResult:
    """Pooled counts: ``counts[i]`` for bin [edges[i], edges[i+1]) (last bin closed, like
    ``np.histogram``), plus the values below edges[0] and above edges[-1]."""

    edges: np.ndarray
    counts: np.ndarray
    underflow: int
    overflow: int

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.underflow + self.overflow


@dataclass(frozen=True)
class Histogram:
    """Counts in fixed bins given by strictly increasing finite ``edges`` (k+1 edges, k bins).

    Bins follow ``np.histogram``: [e_i, e_{i+1}), the last one closed. Values below the
    first edge or above the last are counted in explicit underflow/overflow slots.
    Encodes ``[underflow, bin_0, …, bin_{k-1}, overflow]`` (k + 2 slots); sensitivity 1.
    Decoding rounds every count.
    """

    edges: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "edges", _grid("edges", self.edges, 2))

    @property
    def bins(self) -> int:
        return len(self.edges) - 1

    @property
    def length(self) -> int:
        return self.bins + 2

    @property
    def sensitivity(self) -> float:
        return 1.0

    def encode(self, values: object) -> np.ndarray:
        data = _records("values", values)
        edges = np.asarray(self.edges)
        slot = np.searchsorted(edges, data, side="right")  # 0 below, k+1 at or above the last edge
        slot[data == edges[-1]] = self.bins  # the last bin is closed
        return np.bincount(slot, minlength=self.length).astype(np.float64)

    def decode(self, aggregated: np.ndarray, *, noise_std: float | None = None) -> HistogramResult:
        counts = round_counts(_aggregate(aggregated, self.length, "Histogram"), "histogram count",
                              noise_std=noise_std)
        return HistogramResult(
            edges=np.asarray(self.edges),
            counts=counts[1:-1],
            underflow=int(counts[0]),
            overflow=int(counts[-1]),
        )


# -- Kaplan–Meier -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class KaplanMeierResult:
    """Pooled Kaplan–Meier estimate on the grid: events d_j, at risk n_j, censored c_j
    (left the risk set at t_j without an event) and survival S(t_j)."""

    times: np.ndarray
    events: np.ndarray
    at_risk: np.ndarray
    censored: np.ndarray
    survival: np.ndarray


@dataclass(frozen=True)
class KaplanMeier:
    """Kaplan–Meier survival on a public, strictly increasing grid t_1 < … < t_m.

    Each site encodes, per grid time, the events d_j (duration == t_j with event = 1)
    and the number at risk n_j (duration ≥ t_j): ``[d_1, …, d_m, n_1, …, n_m]``
    (2m slots). Durations must lie exactly on the grid. One record adds 1 to n_1…n_k
    and at most 1 to d_k, so the sensitivity is m + 1. Decoding rounds the counts and
    returns S(t_j) = Π_{i≤j} (1 − d_i / n_i), skipping grid times with n_i = 0.
    """

    times: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "times", _grid("times", self.times, 1))

    @property
    def length(self) -> int:
        return 2 * len(self.times)

    @property
    def sensitivity(self) -> float:
        return float(len(self.times) + 1)

    def encode(self, durations: object, events: object) -> np.ndarray:
        """Encode one site's ``durations`` (on the grid) and ``events`` (1 event, 0 censored)."""
        duration = _records("durations", durations)
        event = _records("events", events)
        if event.shape != duration.shape:
            raise PackingError(f"durations has {duration.size} records but events has {event.size}")
        not_binary = np.flatnonzero((event != 0) & (event != 1))
        if not_binary.size:
            raise PackingError(f"events[{int(not_binary[0])}] is {event[not_binary[0]]}; events must be 0 or 1")
        grid = np.asarray(self.times)
        slot = self._grid_slots(duration, grid)
        d = np.bincount(slot[event == 1], minlength=grid.size)
        leaving = np.bincount(slot, minlength=grid.size)
        at_risk = np.cumsum(leaving[::-1])[::-1]  # n_j = #(duration >= t_j)
        return np.concatenate([d, at_risk]).astype(np.float64)

    @staticmethod
    def _grid_slots(duration: np.ndarray, grid: np.ndarray) -> np.ndarray:
        slot = np.searchsorted(grid, duration)
        on_grid = slot < grid.size
        on_grid[on_grid] = grid[slot[on_grid]] == duration[on_grid]
        off = np.flatnonzero(~on_grid)
        if off.size:
            raise PackingError(
                f"durations[{int(off[0])}] = {duration[off[0]]!r} is not a grid time; round every duration "
                "to the shared time grid (e.g. up to the next grid time) before encoding"
            )
        return slot

    def decode(self, aggregated: np.ndarray, *, noise_std: float | None = None) -> KaplanMeierResult:
        if noise_std is not None:
            raise DecodeError("KaplanMeier sends at-risk counts (one record changes up to m + 1 of them) and "
                             "checks their consistency; for a DP release use he_agg.survival.SurvivalCounts")
        m = len(self.times)
        counts = round_counts(_aggregate(aggregated, 2 * m, "KaplanMeier"), "Kaplan–Meier count")
        events, at_risk = counts[:m], counts[m:]
        leaving = at_risk - np.append(at_risk[1:], 0)
        bad = np.flatnonzero(leaving < events)
        if bad.size:
            j = int(bad[0])
            raise DecodeError(
                f"at grid time {self.times[j]!r}: {events[j]} events but only {leaving[j]} records leave the "
                "risk set: the aggregate is corrupt"
            )
        factors = np.ones(m)
        risk = at_risk > 0
        factors[risk] = 1.0 - events[risk] / at_risk[risk]
        return KaplanMeierResult(
            times=np.asarray(self.times),
            events=events,
            at_risk=at_risk,
            censored=leaving - events,
            survival=np.cumprod(factors),
        )
