"""The federated registry query: pooled survival across sites, only encrypted counts leave a site.

``he-agg demo survival``: registry sites (``--hospitals``, default 10) each hold rows
(time, event, group) of a survival dataset bundled with lifelines — ``rossi`` (432 released
prisoners, weeks to re-arrest, grouped by financial aid; the default) or ``waltons`` (163
flies, days to death, control vs miR-137) — split across the sites. Every site encodes its
rows as per-group, per-interval event and censored counts on the study's public time grid
(:class:`he_agg.survival.SurvivalCounts`, one row changes one count by 1) and uploads them
encrypted; the committee (enrolled mode by default, as in the FedAvg story) approves and
releases only the sum. Everything else is computed from that one release: Kaplan–Meier
curves per group, incidence per group and period, and the log-rank test — each compared
with lifelines on the pooled rows.

The release step (:func:`release`) is the seam for a differentially private release: with
``--dp EPS`` the committee adds calibrated noise to the sum (sensitivity from the encoder)
and the decoder post-processes the noisy counts.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UsageError
from .survival import SurvivalCounts, SurvivalTable, TimeGrid

__all__ = ["DATASETS", "Dataset", "add_arguments", "plot", "release", "render", "run"]

MIN_SITES = 5


@dataclass(frozen=True)
class Dataset:
    """A lifelines dataset and the study's public protocol: grid, group labels, periods."""

    name: str
    loader: str
    time: str
    event: str
    group: str
    labels: dict[Any, str]  # raw group value -> public label
    grid: TimeGrid
    periods: tuple[float, ...]
    unit: str
    description: str


DATASETS: dict[str, Dataset] = {
    "rossi": Dataset("rossi", "load_rossi", "week", "arrest", "fin", {0: "no aid", 1: "financial aid"},
                     TimeGrid.regular(1.0, 52.0), (13.0, 26.0, 39.0, 52.0), "week",
                     "432 released prisoners followed 52 weeks; event: re-arrest; groups: financial aid"),
    "waltons": Dataset("waltons", "load_waltons", "T", "E", "group", {"control": "control", "miR-137": "miR-137"},
                       TimeGrid.regular(1.0, 80.0), (20.0, 40.0, 60.0, 80.0), "day",
                       "163 flies followed up to 80 days; event: death; groups: control vs miR-137"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the survival story (added to `he-agg demo`)."""
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="rossi",
                        help="survival story: the lifelines dataset split across the sites (default rossi)")


@dataclass(frozen=True)
class Site:
    """One site's rows."""

    times: np.ndarray
    events: np.ndarray
    groups: np.ndarray


def _load(dataset: Dataset) -> Any:
    try:
        from lifelines import datasets
    except ImportError:
        raise UsageError("the survival demo needs lifelines: pip install 'he_agg[demo]'") from None
    frame = getattr(datasets, dataset.loader)()
    return frame


def _split(frame: Any, dataset: Dataset, sites: int, seed: int) -> list[Site]:
    """Rows split at random across the sites (the seed drives the split only, never keys)."""
    from .demo import split_rows

    labels = np.array([dataset.labels[g] for g in frame[dataset.group]], dtype=object)
    times, events = frame[dataset.time].to_numpy(float), frame[dataset.event].to_numpy(float)
    return [Site(times[i], events[i], labels[i]) for i in split_rows(len(frame), sites, seed, margin=2)]


def release(session: Any, encodings: list[np.ndarray], round_id: int, timer: Any,
            sensitivity: float, dp: float | None = None) -> tuple[np.ndarray, Any, int]:
    """The committee's release of Σ encodings: the aggregate, the aggregator's result (ε, δ
    and noise std per count when DP) and the bytes one site uploaded.

    With ``dp`` = ε the request asks for one Gaussian release calibrated to ``sensitivity``
    (L2 change of one row) within (ε, δ); every member checks it against its own policy
    and adds its part of the noise inside its decryption share.
    """
    from .demo import DP_DELTA
    from .dp import DPSpec, noise_multiplier_for

    spec = None
    if dp is not None:
        spec = DPSpec(noise_multiplier_for(dp, DP_DELTA, releases=1), sensitivity=sensitivity, delta=DP_DELTA)
    summed, sent = session.round(encodings, round_id, timer, dp=spec)
    return np.asarray(summed, dtype=np.float64), session.last, sent


def dp_policy(epsilon: float | None) -> Any:
    """The members' policy for ``--dp EPS``: budget (ε, δ) and the σ floor of one release;
    every release of the story must ask for DP."""
    from .demo import DP_DELTA
    from .dp import DPPolicy, noise_multiplier_for

    if epsilon is None:
        return None
    if not epsilon > 0:
        raise UsageError("--dp must be positive")
    z = noise_multiplier_for(epsilon, DP_DELTA, releases=1)
    return DPPolicy(epsilon=epsilon, delta=DP_DELTA, min_noise_multiplier=z, require=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the survival story; returns every number it reports."""
    from .bench import common
    from .demo import _Timer, check_committee, open_session

    check_committee(args, MIN_SITES)
    dataset = DATASETS[args.dataset]
    frame = _load(dataset)
    sites = _split(frame, dataset, args.hospitals, args.seed)
    counts = SurvivalCounts(dataset.grid, tuple(dataset.labels.values()))
    timer = _Timer()
    with common.make_progress(common.progress_wanted(args.json)) as bar:
        task = bar.add_task("survival", total=3)
        bar.update(task, description="client enrollment" if args.mode == "enrolled" else "key generation")
        epsilon = getattr(args, "dp", None)
        session = open_session(args.mode, args.parties, args.threshold, args.hospitals, timer, dp_policy(epsilon))
        bar.advance(task)
        bar.update(task, description="sites encode their counts")
        start = time.perf_counter()
        encodings = [counts.encode(s.times, s.events, s.groups) for s in sites]
        timer.add("site encode", time.perf_counter() - start)
        bar.advance(task)
        bar.update(task, description="encrypted release")
        summed, result, sent = release(session, encodings, 0, timer, counts.l2_sensitivity, epsilon)
        bar.advance(task)
    noise_std = None if epsilon is None else float(result.noise_std)
    table = counts.decode(summed, noise_std=noise_std)
    pooled = _pooled(sites)
    report = _report(args, dataset, sites, counts, table, pooled)
    if epsilon is not None:
        plain = counts.encode(pooled.times, pooled.events, pooled.groups)
        band = table.kaplan_meier_band()
        assert band is not None
        for k, group in enumerate(table.groups):
            report["kaplan_meier"][group].update(band_lower=band[0][k].tolist(), band_upper=band[1][k].tolist())
        report["dp"] = {"epsilon": float(result.epsilon), "delta": float(result.delta), "noise_std": noise_std,
                        "count_error_std": float(np.std(summed - plain))}
    report.update(bytes_per_site=sent, seconds_per_phase=timer.phases, decryption_budget_used=session.budget_used(),
                  decryption_budget_unit=session.budget_unit)
    return report


def _pooled(sites: list[Site]) -> Site:
    return Site(np.concatenate([s.times for s in sites]), np.concatenate([s.events for s in sites]),
                np.concatenate([s.groups for s in sites]))


def _report(args: argparse.Namespace, dataset: Dataset, sites: list[Site], counts: SurvivalCounts,
            table: SurvivalTable, pooled: Site) -> dict[str, Any]:
    """The released estimates beside lifelines' on the pooled rows (quantised to the grid)."""
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import multivariate_logrank_test

    times = dataset.grid.quantise(pooled.times)
    survival = table.kaplan_meier()
    curves: dict[str, Any] = {}
    for k, group in enumerate(table.groups):
        mine = pooled.groups == group
        fitter = KaplanMeierFitter().fit(times[mine], pooled.events[mine])
        reference = fitter.survival_function_at_times(table.times).to_numpy()
        curves[group] = {"survival": survival[k].tolist(), "lifelines": reference.tolist(),
                         "at_risk": table.at_risk[k].tolist(), "events": table.events[k].tolist(),
                         "censored": table.censored[k].tolist()}
    logrank = table.logrank()
    reference_test = multivariate_logrank_test(times, pooled.groups, pooled.events)
    incidence = table.incidence(dataset.periods)
    plain = counts.decode(counts.encode(pooled.times, pooled.events, pooled.groups))
    return {
        "story": "survival", "mode": args.mode, "dataset": dataset.name, "description": dataset.description,
        "unit": dataset.unit, "sites": len(sites), "rows_per_site": [int(s.times.size) for s in sites],
        "committee": f"{args.threshold}-of-{args.parties}", "groups": list(table.groups),
        "grid": table.times.tolist(), "slots": counts.length, "sensitivity_l1": counts.sensitivity,
        "sensitivity_l2": counts.l2_sensitivity, "noise_std": table.noise_std,
        "kaplan_meier": curves,
        "kaplan_meier_max_difference": float(max(np.max(np.abs(np.subtract(c["survival"], c["lifelines"])))
                                                 for c in curves.values())),
        "counts_equal_plaintext": bool(np.array_equal(table.events, plain.events)
                                       and np.array_equal(table.censored, plain.censored)),
        "incidence": [{"group": g, "period_end": float(end), "at_risk": int(incidence.at_risk[k, p]),
                       "events": int(incidence.events[k, p]), "censored": int(incidence.censored[k, p]),
                       "risk": float(incidence.risk[k, p])}
                      for k, g in enumerate(table.groups) for p, end in enumerate(incidence.period_ends)],
        "logrank": {"statistic": logrank.statistic, "df": logrank.df, "p_value": logrank.p_value,
                    "observed": logrank.observed.tolist(), "expected": logrank.expected.tolist(),
                    "lifelines_statistic": float(reference_test.test_statistic),
                    "lifelines_p_value": float(reference_test.p_value)},
    }


def render(report: dict[str, Any]) -> Any:
    """Tables: survival at the period ends, incidence per group and period, the log-rank test."""
    from rich.console import Group
    from rich.table import Table

    unit, groups = report["unit"], report["groups"]
    lines: list[Any] = [
        f"[bold]{report['sites']} registry sites[/] ({sum(report['rows_per_site'])} rows; {report['description']}), "
        f"committee {report['committee']} in {report['mode']} mode; one release of {report['slots']} counts "
        f"({report['bytes_per_site']:,} bytes per site; one row changes one count by 1)",
        f"Pooled Kaplan–Meier within {report['kaplan_meier_max_difference']:.1e} of lifelines on the pooled rows; "
        f"counts equal the plaintext counts: {report['counts_equal_plaintext']}",
    ]
    if "dp" in report:
        dp = report["dp"]
        lines.append(f"[bold]DP release[/]: ε = {dp['epsilon']:.3g}, δ = {dp['delta']:.0e} spent; noise std "
                     f"{dp['noise_std']:.3g} per count (added by the committee; measured spread of the "
                     f"released counts around the exact ones: {dp['count_error_std']:.3g})")
    km = Table(title="Pooled Kaplan–Meier survival (encrypted counts | lifelines on pooled rows)")
    km.add_column(unit, justify="right")
    for g in groups:
        km.add_column(f"{g}: S(t)", justify="right")
        km.add_column("lifelines", justify="right")
        km.add_column("at risk", justify="right")
    grid = report["grid"]
    ends = sorted({r["period_end"] for r in report["incidence"]})
    for j, t in enumerate(grid):
        if t in ends or j == 0:
            cells = [f"{t:g}"]
            for g in groups:
                c = report["kaplan_meier"][g]
                cells += [f"{c['survival'][j]:.4f}", f"{c['lifelines'][j]:.4f}", str(c["at_risk"][j])]
            km.add_row(*cells)
    lines.append(km)
    inc = Table(title=f"Incidence per group and period (period ends in {unit}s)")
    for column in ("group", "period end", "at risk at start", "events", "censored", "risk"):
        inc.add_column(column, justify="right")
    for r in report["incidence"]:
        inc.add_row(r["group"], f"{r['period_end']:g}", str(r["at_risk"]), str(r["events"]), str(r["censored"]),
                    f"{r['risk']:.4f}")
    lines.append(inc)
    lr = report["logrank"]
    lines.append(f"Log-rank test ({' vs '.join(groups)}): χ² = {lr['statistic']:.4f} on {lr['df']} df, "
                 f"p = {lr['p_value']:.4g} (lifelines: χ² = {lr['lifelines_statistic']:.4f}, "
                 f"p = {lr['lifelines_p_value']:.4g})")
    from .demo import phase_table

    lines.append(phase_table(report["seconds_per_phase"]))
    return Group(*lines)


def plot(report: dict[str, Any], path: str) -> None:
    """PNG: the pooled Kaplan–Meier curve of each group (steps) over lifelines' on the pooled rows."""
    from .bench import common

    if report.get("story") != "survival":
        raise UsageError("--plot draws the pooled survival curves: use it with `he-agg demo survival`")
    plt = common.require_matplotlib()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    grid = np.concatenate([[0.0], report["grid"]])
    for k, group in enumerate(report["groups"]):
        curve = report["kaplan_meier"][group]
        colour = f"C{k}"
        axes.step(grid, np.concatenate([[1.0], curve["survival"]]), where="post", color=colour,
                  label=f"{group}: pooled from encrypted counts" + (" (DP)" if "dp" in report else ""))
        axes.plot(report["grid"], curve["lifelines"], "o", markersize=3, color=colour, alpha=0.6,
                  label=f"{group}: lifelines, pooled rows")
        if "band_lower" in curve:
            axes.fill_between(grid, np.concatenate([[1.0], curve["band_lower"]]),
                              np.concatenate([[1.0], curve["band_upper"]]), step="post", color=colour, alpha=0.15,
                              label=f"{group}: 95% spread of the DP noise")
    lr = report["logrank"]
    axes.set_title(f"{report['dataset']}: {report['sites']} sites, {report['committee']} committee "
                   f"(log-rank χ² {lr['statistic']:.2f}, p {lr['p_value']:.3g})", fontsize=10)
    axes.set_xlabel(report["unit"] + "s")
    axes.set_ylabel("survival S(t)")
    lowest = min(min(report["kaplan_meier"][g].get("band_lower", report["kaplan_meier"][g]["survival"]))
                 for g in report["groups"])
    axes.set_ylim(max(0.0, lowest - 0.1), 1.02)
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
