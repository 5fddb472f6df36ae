"""Run every benchmark across client counts and model sizes; write results.json and PNG plots to --out.

One progress bar over the whole plan. Each point runs the existing commands' own code
(``bench aggregate``, ``bench decrypt``, ``bench e2e``) with their defaults for everything
the plan does not set, so the figures are the ones those commands report. Written to
``--out``:

* ``results.json``: the plan, every run's full figures, the machine (CPU model, cores,
  SIMD flags such as AVX2 / AVX-512, memory) and the total time;
* ``throughput_vs_clients.png``: residue GB/s summed vs number of clients (he_agg native,
  TenSEAL's loop, the numpy memory floor);
* ``time_vs_model_size.png``: seconds vs values per client (summing and committee decryption,
  each beside TenSEAL);
* ``he_agg_vs_tenseal_vs_floor.png``: the largest summing run, method by method
  (``bench aggregate --plot``'s chart).

``--quick`` runs a small plan (under 3 minutes on a 2-core machine); the default plan
goes to a million values per client and takes several minutes more.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from he_agg.bench import aggregate, common, decrypt, e2e

__all__ = ["FULL", "PLOTS", "QUICK", "Plan", "add_arguments", "machine", "plot_all", "render", "run", "run_plan"]

PLOTS = ("throughput_vs_clients.png", "time_vs_model_size.png", "he_agg_vs_tenseal_vs_floor.png")


@dataclass(frozen=True)
class Plan:
    """The points measured: summing at ``clients`` × ``values`` (each axis varied around the other's
    ``base``), committee decryption at each of ``values``, end to end at ``e2e`` (clients, values)."""

    clients: tuple[int, ...]
    values: tuple[int, ...]
    base_clients: int
    base_values: int
    e2e: tuple[tuple[int, int], ...]
    repeat: int = 1

    def aggregate_points(self) -> list[tuple[int, int]]:
        points = [(k, self.base_values) for k in self.clients] + [(self.base_clients, v) for v in self.values]
        return sorted(set(points), key=points.index)

    def steps(self) -> int:
        return len(self.aggregate_points()) + len(self.values) + len(self.e2e)


QUICK = Plan(clients=(2, 8, 32), values=(16384, 65536, 262144), base_clients=8, base_values=65536,
             e2e=((4, 65536),), repeat=2)
FULL = Plan(clients=(4, 16, 64), values=(65536, 262144, 1 << 20), base_clients=16, base_values=262144,
            e2e=((10, 65536), (10, 262144)), repeat=3)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for results.json and the PNG plots "
                                                                     "(created if missing)")
    parser.add_argument("--quick", action="store_true", help="the small plan (under 3 minutes on 2 cores)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the plaintext data only (never keys)")


# -- machine ---------------------------------------------------------------------------------

_FLAGS = ("sse4_2", "avx", "avx2", "fma", "bmi2", "adx", "avx512f", "avx512dq", "avx512bw", "avx512vl",
          "avx512ifma", "avx512_vbmi2", "sha_ni", "aes")


def machine() -> dict[str, Any]:
    """Where the numbers were measured: common.machine_info() plus SIMD flags, memory and kernel threads."""
    from he_agg.hazmat import kernels

    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    info = common.machine_info()
    info.update({
        "cpu_flags": [f for f in _FLAGS if f in flags],
        "memory_available_bytes": common.available_memory(),
        "summing_threads": kernels.thread_count(),
        "kernel_backends": list(kernels.available_backends()),
        "he_agg_version": common.he_agg_version(),
    })
    return info


# -- running ---------------------------------------------------------------------------------


def _namespace(module: Any, **given: Any) -> argparse.Namespace:
    """A command's own defaults (from its add_arguments), overridden by ``given``; --json (no inner bars)."""
    parser = argparse.ArgumentParser(add_help=False)
    module.add_arguments(parser)
    args = parser.parse_args([])
    for key, value in given.items():
        setattr(args, key, value)
    args.json = True
    return args


def run_plan(plan: Plan, out: str | Path, *, seed: int | None = None, show: bool = False) -> dict[str, Any]:
    """Measure every point of ``plan``, write results.json and the plots to ``out``; return the results."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    common.require_matplotlib()  # fail now, not after the runs
    start = time.perf_counter()
    results: dict[str, Any] = {"plan": asdict(plan), "machine": machine(), "aggregate": [], "decrypt": [], "e2e": []}
    with common.make_progress(show) as bar:
        task = bar.add_task("he-agg bench all", total=plan.steps())

        def point(kind: str, label: str, fn: Callable[[], dict[str, Any]]) -> None:
            bar.update(task, description=f"{kind} {label}")
            results[kind].append(fn())
            bar.advance(task)

        for clients, values in plan.aggregate_points():
            point("aggregate", f"{clients}x{values}", lambda: aggregate.run(_namespace(
                aggregate, clients=clients, values=values, repeat=plan.repeat, seed=seed)))
        for values in plan.values:
            point("decrypt", f"{values}", lambda: decrypt.run(_namespace(
                decrypt, values=values, repeat=plan.repeat, seed=seed)))
        for clients, values in plan.e2e:
            point("e2e", f"{clients}x{values}", lambda: e2e.run(_namespace(
                e2e, clients=clients, values=values, distinct=min(2, clients), seed=seed)))
    results["elapsed_s"] = time.perf_counter() - start
    results["plots"] = plot_all(results, folder)
    text = json.dumps(common.to_jsonable(results), indent=2, allow_nan=False)
    (folder / "results.json").write_text(text + "\n", encoding="utf-8")
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    """``he-agg bench all``: the plan of ``--quick`` or the full one; a flat summary for the terminal."""
    plan = QUICK if args.quick else FULL
    results = run_plan(plan, args.out, seed=args.seed, show=common.progress_wanted(args.json))
    largest = max(results["aggregate"], key=lambda r: r["clients"] * r["values"])
    return {
        "out": str(Path(args.out) / "results.json"),
        "plots": results["plots"],
        "runs": {k: len(results[k]) for k in ("aggregate", "decrypt", "e2e")},
        "elapsed_s": results["elapsed_s"],
        "largest_sum": f"{largest['clients']} x {largest['values']}",
        "native_gb_per_s": largest["native_gb_per_s"],
        "speedup_vs_tenseal": largest["speedup_vs_tenseal"],
        "fraction_of_floor": largest["fraction_of_floor"],
        "cpu_model": results["machine"]["cpu_model"],
        "cpu_flags": " ".join(results["machine"]["cpu_flags"]),
    }


def render(result: dict[str, Any]) -> Any:
    return common.key_value_table(result, "he-agg bench all")


# -- plots -----------------------------------------------------------------------------------


def plot_all(results: dict[str, Any], folder: Path) -> list[str]:
    """The three PNGs (see the module docstring); returns their paths."""
    plt = common.require_matplotlib()
    plan = results["plan"]
    paths = [str(folder / name) for name in PLOTS]
    runs = results["aggregate"]

    by_clients = sorted((r for r in runs if r["values"] == plan["base_values"]), key=lambda r: r["clients"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("native", "he_agg native"), ("tenseal", "TenSEAL (deserialize, +=)"), ("floor", "numpy floor")):
        ax.plot([r["clients"] for r in by_clients], [r[f"{key}_gb_per_s"] for r in by_clients], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("clients")
    ax.set_ylabel("residue GB/s summed")
    ax.set_title(f"Summing throughput, {plan['base_values']:,} values per client", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    by_values = sorted((r for r in runs if r["clients"] == plan["base_clients"]), key=lambda r: r["values"])
    dec = sorted(results["decrypt"], key=lambda r: r["values"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("native_s", "he_agg sum"), ("tenseal_s", "TenSEAL sum"), ("floor_s", "numpy floor sum")):
        ax.plot([r["values"] for r in by_values], [r[key] for r in by_values], "o-", label=label)
    for key, label in (("committee_s", "he_agg 3-of-5 decrypt"), ("tenseal_decrypt_s", "TenSEAL decrypt")):
        ax.plot([r["values"] for r in dec], [r[key] for r in dec], "s--", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("values per client")
    ax.set_ylabel("seconds")
    ax.set_title(f"Time vs model size (sums of {plan['base_clients']} clients; decryption of one vector)",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)

    aggregate.plot(max(runs, key=lambda r: r["clients"] * r["values"]), paths[2])
    return paths
