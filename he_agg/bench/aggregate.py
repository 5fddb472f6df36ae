"""Time summing K clients' encrypted vectors: TenSEAL's loop, he_agg native and numba, the memory floor.

One run, the same inputs for everyone:

* ``tenseal``: ``acc = ckks_vector_from(ctx, blobs[0]); acc += ckks_vector_from(ctx, b)`` for
  the rest, on TenSEAL's own ``serialize()`` bytes (zstd): what TenSEAL users do;
* ``native`` / ``numba``: ``CiphertextBatch.sum(inputs, params)`` with that kernel backend,
  on the inputs in ``--format`` (parse and validate every input, then one summing pass);
* ``floor``: plain numpy adding the same number of uint64 words from K pre-decoded,
  aligned arrays, no validation and no modular reduction. Several formulations are
  timed and the fastest is the floor (the hardest honest baseline).

Times are minimums over ``--repeat`` runs (medians are reported too).
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from he_agg.bench import common
from he_agg.bench.common import Timing, measure
from he_agg.params import AGGREGATION, Params

__all__ = [
    "FORMATS",
    "Workload",
    "add_arguments",
    "convert",
    "encrypt_clients",
    "floor_arrays",
    "floor_methods",
    "plot",
    "render",
    "run",
    "tenseal_sum",
]

FORMATS = ("tenseal-zstd", "tenseal-raw", "he_agg")
METHODS = ("tenseal", "native", "numba", "floor")


# -- command-line interface ----------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``he-agg bench aggregate``."""
    parser.add_argument("--clients", type=common.positive_int, default=16, metavar="K",
                        help="number of clients whose vectors are summed (default: 16)")
    parser.add_argument("--values", type=common.positive_int, default=65536, metavar="V",
                        help="values per client vector (default: 65536)")
    parser.add_argument("--repeat", type=common.positive_int, default=3, metavar="R",
                        help="timed runs per method; the minimum is reported (default: 3)")
    parser.add_argument("--format", choices=FORMATS, default="tenseal-zstd",
                        help="wire format of the inputs he_agg sums: tenseal-zstd is what "
                             "CKKSVector.serialize() gives (default), tenseal-raw the same "
                             "uncompressed, he_agg the CiphertextBatch envelope")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the plaintext data only (keys and encryption noise "
                             "are always fresh); default: random, reported in the output")
    parser.add_argument("--dask-workers", type=common.positive_int, default=None, metavar="W",
                        help="instead: he_agg.dask.ShardedAggregator on 1 and on W local Dask worker "
                             "processes beside a local Aggregator, same public-key uploads, one run "
                             "(needs pip install he_agg[dask])")
    parser.add_argument("--dask-store", metavar="DIR", default=None,
                        help="with --dask-workers: also time uploads handed to the workers through files in "
                             "DIR (e.g. /dev/shm) instead of scatter")


# -- setup ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """K clients' encrypted vectors as TenSEAL serializes them, and their plain sum."""

    blobs: list[bytes]
    plain_sum: np.ndarray
    seconds: float


def encrypt_clients(
    ctx: Any, clients: int, values: int, rng: np.random.Generator,
    on_client: Callable[[], object] | None = None,
) -> Workload:
    """Encrypt ``clients`` vectors of uniform [-1, 1] values with TenSEAL and serialize them."""
    import time

    import tenseal as ts

    plain_sum = np.zeros(values)
    blobs: list[bytes] = []
    start = time.perf_counter()
    with common.quiet_stdout():
        for _ in range(clients):
            x = rng.uniform(-1.0, 1.0, values)
            plain_sum += x
            blobs.append(ts.ckks_vector(ctx, x).serialize())
            if on_client is not None:
                on_client()
    return Workload(blobs, plain_sum, time.perf_counter() - start)


def convert(blob: bytes, fmt: str, params: Params) -> bytes:
    """One TenSEAL blob in wire format ``fmt`` (a lossless re-encoding of the same ciphertexts)."""
    from he_agg.ciphertext import CiphertextBatch

    if fmt == "tenseal-zstd":
        return blob
    batch = CiphertextBatch.from_tenseal(blob, params)
    if fmt == "tenseal-raw":
        return batch.to_tenseal_bytes(compress=False)
    if fmt == "he_agg":
        return batch.to_bytes()
    raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")


def floor_arrays(inputs: Sequence[object], params: Params) -> np.ndarray:
    """The inputs' residues decoded into one aligned (K, count, 2, L, N) uint64 array."""
    from he_agg.ciphertext import residue_view

    first = residue_view(inputs[0], params).residues(params)
    stacked = np.empty((len(inputs),) + first.shape, dtype=np.uint64)
    stacked[0] = first
    for k in range(1, len(inputs)):
        stacked[k] = residue_view(inputs[k], params).residues(params)
    return stacked


# -- the methods ---------------------------------------------------------------------------


def tenseal_sum(ctx: Any, blobs: Sequence[bytes]) -> Any:
    """TenSEAL users' aggregation: deserialize each vector and ``+=`` it into the first."""
    import tenseal as ts

    acc = ts.ckks_vector_from(ctx, blobs[0])
    for blob in blobs[1:]:
        acc += ts.ckks_vector_from(ctx, blob)
    return acc


def floor_methods(stacked: np.ndarray) -> dict[str, Callable[[], np.ndarray]]:
    """Plain-numpy ways to add K uint64 arrays (no checks, no reduction): the floor's candidates.

    * ``add-loop``: ``np.add(acc, x, out=acc)`` for each client's array (the textbook loop);
    * ``add-reduce``: ``np.add.reduce`` over the stacked array;
    * ``add-blocked``: the loop, one ciphertext at a time, so ``acc`` stays in cache
      (the order the native kernel uses).
    Each allocates its zeroed accumulator inside the timing, as ``CiphertextBatch.sum`` does.
    """
    shape = stacked.shape[1:]

    def add_loop() -> np.ndarray:
        acc = np.zeros(shape, dtype=np.uint64)
        for x in stacked:
            np.add(acc, x, out=acc)
        return acc

    def add_reduce() -> np.ndarray:
        acc = np.zeros(shape, dtype=np.uint64)
        np.add.reduce(stacked, axis=0, out=acc)
        return acc

    def add_blocked() -> np.ndarray:
        acc = np.zeros(shape, dtype=np.uint64)
        for c in range(shape[0]):
            block = acc[c]
            for x in stacked:
                np.add(block, x[c], out=block)
        return acc

    return {"add-loop": add_loop, "add-reduce": add_reduce, "add-blocked": add_blocked}


def floor_all_cores(stacked: np.ndarray, threads: int) -> Callable[[], np.ndarray]:
    """The all-cores floor: ``add-blocked`` on disjoint ranges of ciphertexts, one range per
    thread of a persistent pool (numpy releases the GIL in ``np.add``)."""
    from concurrent.futures import ThreadPoolExecutor

    shape = stacked.shape[1:]
    bounds = [shape[0] * k // threads for k in range(threads + 1)]
    pool = ThreadPoolExecutor(threads, thread_name_prefix="floor")

    def part(acc: np.ndarray, k: int) -> None:
        for c in range(bounds[k], bounds[k + 1]):
            block = acc[c]
            for x in stacked:
                np.add(block, x[c], out=block)

    def add_threads() -> np.ndarray:
        acc = np.zeros(shape, dtype=np.uint64)
        list(pool.map(lambda k: part(acc, k), range(threads)))
        return acc

    return add_threads


def _time_backends(backends: Sequence[str], inputs: Sequence[object], params: Params, repeat: int,
                   on_run: Callable[[], object]) -> tuple[dict[str, Timing], dict[str, Any]]:
    """``CiphertextBatch.sum`` per backend, runs interleaved round by round.

    Interleaving gives every backend the same conditions (allocator and page-cache state
    drift during a run: parsing zstd inputs allocates ~1 GB per sum), so the first
    backend timed is not penalized. One untimed warm-up each (numba's JIT).
    """
    from he_agg.ciphertext import CiphertextBatch
    from he_agg.hazmat import kernels

    def total() -> CiphertextBatch:
        return CiphertextBatch.sum(inputs, params)

    runs: dict[str, list[float]] = {b: [] for b in backends}
    results: dict[str, Any] = {}
    for backend in backends:
        with kernels.use_backend(backend):
            CiphertextBatch.sum(inputs[:1], params)
    for _ in range(repeat):
        for backend in backends:
            results[backend] = None
            with kernels.use_backend(backend):
                timing, results[backend] = measure(total, 1)
            runs[backend] += timing.runs
            on_run()
    return {b: Timing(tuple(r)) for b, r in runs.items()}, results


def _time_split(backends: Sequence[str], inputs: Sequence[object], params: Params,
                repeat: int) -> dict[str, Timing]:
    """Parse/locate every input (``residue_view``) vs the summing kernel alone, per backend."""
    from he_agg.ciphertext import residue_view
    from he_agg.hazmat import kernels

    def parse() -> list[Any]:
        return [residue_view(x, params, f"input {i}") for i, x in enumerate(inputs)]

    split: dict[str, Timing] = {}
    split["parse"], views = measure(parse, repeat)
    sources = [(v.buffer, v.offsets) for v in views]
    acc = np.zeros((views[0].count, 2, len(params.data_moduli), params.n), dtype=np.uint64)
    for backend in backends:
        with kernels.use_backend(backend):
            split[backend] = measure(lambda: kernels.sum_ciphertexts(acc, sources, params.data_moduli),
                                     repeat, setup=lambda: acc.fill(0))[0]
    with kernels.use_backend("native"), kernels.use_threads(1):  # the kernel on one core
        split["native-1t"] = measure(lambda: kernels.sum_ciphertexts(acc, sources, params.data_moduli),
                                     repeat, setup=lambda: acc.fill(0))[0]
    return split


def _max_abs_error(batch: Any, ctx: Any, plain_sum: np.ndarray) -> float:
    """Decrypt ``batch`` with the TenSEAL context's secret key; worst error against the plain sum."""
    with common.quiet_stdout():
        decrypted = np.asarray(batch.to_tenseal(ctx).decrypt())
    return float(np.max(np.abs(decrypted - plain_sum)))


# -- run -----------------------------------------------------------------------------------


def _memory_needed(clients: int, values: int, params: Params, fmt: str) -> int:
    """Peak bytes, roughly: TenSEAL blobs, converted inputs, the floor's arrays, decoded views."""
    count = -(-values // params.slots)
    per_client = count * (2 * len(params.data_moduli) * params.n * 8 + 256)
    copies = 3 if fmt == "tenseal-zstd" else 3.5
    return int(copies * clients * per_client) + (256 << 20)


def _time_tenseal(ctx: Any, work: Workload, repeat: int, bar: Any) -> tuple[Timing, float]:
    """TenSEAL's loop on its own zstd blobs; also its result's worst decryption error."""
    task = bar.add_task("timing TenSEAL's loop", total=repeat)
    with common.quiet_stdout():
        timing, acc = measure(lambda: tenseal_sum(ctx, work.blobs), repeat,
                              on_run=lambda: bar.advance(task))
        error = float(np.max(np.abs(np.asarray(acc.decrypt()) - work.plain_sum)))
    return timing, error


def _prepare_inputs(blobs: list[bytes], fmt: str, params: Params, bar: Any) -> list[bytes]:
    """The inputs in ``fmt``; converted blobs are released from ``blobs`` as we go."""
    if fmt == "tenseal-zstd":
        return blobs
    task = bar.add_task(f"converting to {fmt}", total=len(blobs))
    inputs = []
    for i in range(len(blobs)):
        inputs.append(convert(blobs[i], fmt, params))
        blobs[i] = b""
        bar.advance(task)
    return inputs


def _time_floor(inputs: Sequence[object], params: Params, repeat: int, bar: Any) -> tuple[dict[str, Timing], tuple[int, ...]]:
    """Every floor candidate on the decoded inputs (one thread), then the all-cores floor
    (key ``all-cores``, not a candidate); also the stacked array's shape."""
    from he_agg.hazmat import kernels

    stacked = floor_arrays(inputs, params)
    methods = floor_methods(stacked)
    task = bar.add_task("timing the numpy floor", total=(len(methods) + 1) * repeat)
    floors = {name: measure(fn, repeat, on_run=lambda: bar.advance(task))[0] for name, fn in methods.items()}
    floors["all-cores"] = measure(floor_all_cores(stacked, kernels.thread_count()), repeat,
                                  on_run=lambda: bar.advance(task))[0]
    return floors, stacked.shape


def _time_he_agg(backends: Sequence[str], inputs: Sequence[object], params: Params, repeat: int,
                 bar: Any) -> tuple[dict[str, Timing], dict[str, Any], dict[str, Timing]]:
    """``CiphertextBatch.sum`` per backend (timings and results), then the parse/kernel split."""
    task = bar.add_task(f"timing he_agg {' and '.join(backends)}", total=repeat * len(backends))
    timings, results = _time_backends(backends, inputs, params, repeat, lambda: bar.advance(task))
    task = bar.add_task("timing parse vs kernel", total=1)
    split = _time_split(backends, inputs, params, repeat)
    bar.advance(task)
    return timings, results, split


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Set up the inputs, time every method side by side and return the figures."""
    if getattr(args, "dask_workers", None):
        return run_dask(args)
    import tenseal as ts

    from he_agg.hazmat import kernels

    params = AGGREGATION
    clients, values, repeat, fmt = args.clients, args.values, args.repeat, args.format
    backends = [b for b in ("native", "numba") if b in kernels.available_backends()]
    if "native" not in backends:
        raise common.BenchError("he_agg's native core is not built; reinstall he_agg "
                                "(`pip install -e .` in a checkout) so that csrc/ compiles")
    common.check_memory(_memory_needed(clients, values, params, fmt), "lower --clients or --values")
    seed = args.seed if args.seed is not None else secrets.randbits(63)  # plaintext data only

    with common.make_progress(common.progress_wanted(args.json)) as bar:
        ctx = common.tenseal_context(params)
        task = bar.add_task("encrypting with TenSEAL", total=clients)
        work = encrypt_clients(ctx, clients, values, np.random.default_rng(seed),
                               lambda: bar.advance(task))
        t_tenseal, tenseal_error = _time_tenseal(ctx, work, repeat, bar)
        sizes = {f: len(convert(work.blobs[0], f, params)) for f in FORMATS}
        inputs = _prepare_inputs(work.blobs, fmt, params, bar)
        input_bytes = sum(len(b) for b in inputs)
        floors, shape = _time_floor(inputs, params, repeat, bar)
        timings, results, split = _time_he_agg(backends, inputs, params, repeat, bar)
        del inputs
        native_error = _max_abs_error(results["native"], ctx, work.plain_sum)

    all_cores = floors.pop("all-cores")
    floor_method = min(floors, key=lambda name: floors[name].best)
    timings.update(tenseal=t_tenseal, floor=floors[floor_method])
    return _report(
        args=args, seed=seed, count=shape[1], residue_bytes=int(np.prod(shape)) * 8,
        timings=timings, floors=floors, floor_method=floor_method, split=split, sizes=sizes,
        input_bytes=input_bytes, setup_s=work.seconds, native_error=native_error, all_cores=all_cores,
        tenseal_error=tenseal_error,
        identical=(results["native"] == results["numba"]) if "numba" in results else None,
        tenseal_version=ts.__version__,
    )


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def _report(*, args: argparse.Namespace, seed: int, count: int, residue_bytes: int,
            timings: dict[str, Timing], floors: dict[str, Timing], floor_method: str,
            split: dict[str, Timing], sizes: dict[str, int], input_bytes: int, setup_s: float,
            native_error: float, tenseal_error: float, identical: bool | None,
            tenseal_version: str, all_cores: Timing) -> dict[str, Any]:
    """The flat result dict (the JSON object of ``--json``)."""
    import numba

    from he_agg.hazmat import kernels

    best = {m: (timings[m].best if m in timings else None) for m in METHODS}
    median = {m: (timings[m].median if m in timings else None) for m in METHODS}
    gb = residue_bytes / 1e9
    values, clients = args.values, args.clients
    result: dict[str, Any] = {
        "clients": clients,
        "values": values,
        "ciphertexts_per_client": count,
        "format": args.format,
        "repeat": args.repeat,
        "seed": seed,
    }
    for m in METHODS:
        result[f"{m}_s"] = best[m]
    result.update({
        "speedup_vs_tenseal": _ratio(best["tenseal"], best["native"]),
        "fraction_of_floor": _ratio(best["floor"], best["native"]),
        "numba_speedup_vs_tenseal": _ratio(best["tenseal"], best["numba"]),
        "numba_fraction_of_floor": _ratio(best["floor"], best["numba"]),
        "parse_s": split["parse"].best,
        "kernel_s": split["native"].best,
        "numba_kernel_s": split["numba"].best if "numba" in split else None,
        "floor_method": floor_method,
        "floor_candidates_s": {name: t.best for name, t in floors.items()},
        "threads": kernels.thread_count(),
        "kernel_1t_s": split["native-1t"].best,
        "floor_all_cores_s": all_cores.best,
        "floor_gb_per_s_1t_all_cores": [_ratio(gb, best["floor"]), _ratio(gb, all_cores.best)],
        "kernel_gb_per_s_1t_all_cores": [_ratio(gb, split["native-1t"].best), _ratio(gb, split["native"].best)],
        "kernel_fraction_of_all_cores_floor": _ratio(all_cores.best, split["native"].best),
    })
    for m in METHODS:
        result[f"{m}_median_s"] = median[m]
    result.update({
        "parse_median_s": split["parse"].median,
        "kernel_median_s": split["native"].median,
        "residue_bytes": residue_bytes,
        **{f"{m}_gb_per_s": _ratio(gb, best[m]) for m in METHODS},
        "bytes_per_value": input_bytes / (clients * values),
        "tenseal_bytes_per_value": sizes["tenseal-zstd"] / values,
        "tenseal_raw_bytes_per_value": sizes["tenseal-raw"] / values,
        "he_agg_bytes_per_value": sizes["he_agg"] / values,
        "max_abs_error": native_error,
        "tenseal_max_abs_error": tenseal_error,
        "backends_bit_identical": identical,
        "setup_encrypt_s": setup_s,
        **common.machine_info(),
        "he_agg_version": common.he_agg_version(),
        "tenseal_version": tenseal_version,
        "numpy_version": np.__version__,
        "numba_version": numba.__version__,
    })
    return result


# -- presentation --------------------------------------------------------------------------

_LABELS = {"tenseal": "TenSEAL (deserialize, +=)", "native": "he_agg native",
           "numba": "he_agg numba", "floor": "numpy floor"}


def _title(result: dict[str, Any]) -> str:
    return (f"Summing {result['clients']} clients x {result['values']:,} values "
            f"({result['format']} inputs, min of {result['repeat']})")


def render(result: dict[str, Any]) -> Any:
    """The human-readable view: one row per method, then the derived figures."""
    if "dask_workers" in result:
        return common.key_value_table(result, f"Sharded summing on Dask: {result['clients']} clients x "
                                              f"{result['values']:,} values")
    from rich.console import Group
    from rich.table import Table

    table = Table(title=_title(result), caption="GB/s: residue bytes summed per second; "
                  "vs floor: floor_s / method_s (1.0 = memory speed)")
    table.add_column("method", no_wrap=True)
    for name in ("min s", "median s", "GB/s", "vs floor", "vs TenSEAL"):
        table.add_column(name, justify="right", no_wrap=True)
    for m in METHODS:
        if result[f"{m}_s"] is None:
            continue
        label = m + (f" ({result['floor_method']})" if m == "floor" else "")
        table.add_row(label, f"{result[f'{m}_s']:.4f}", f"{result[f'{m}_median_s']:.4f}",
                      f"{result[f'{m}_gb_per_s']:.2f}",
                      f"{result['floor_s'] / result[f'{m}_s']:.2f}",
                      f"{result['tenseal_s'] / result[f'{m}_s']:.1f}x")
    keys = ["format", "parse_s", "kernel_s", "numba_kernel_s", "floor_candidates_s", "threads", "kernel_1t_s",
            "floor_all_cores_s", "floor_gb_per_s_1t_all_cores", "kernel_gb_per_s_1t_all_cores",
            "kernel_fraction_of_all_cores_floor", "bytes_per_value",
            "tenseal_bytes_per_value", "he_agg_bytes_per_value", "max_abs_error",
            "tenseal_max_abs_error", "backends_bit_identical", "setup_encrypt_s", "cpu_model",
            "cpu_count", "he_agg_version", "tenseal_version", "seed"]
    details = common.key_value_table({k: result[k] for k in keys})
    return Group(table, "", details)


def plot(result: dict[str, Any], path: str) -> None:
    """A horizontal bar chart of seconds per method, annotated with residue GB/s."""
    plt = common.require_matplotlib()
    if "dask_workers" in result:
        _plot_dask(result, path, plt)
        return
    colors = {"tenseal": "#9e9e9e", "native": "#1f77b4", "numba": "#6baed6", "floor": "#2ca02c"}
    rows = [(_LABELS[m], result[f"{m}_s"], colors[m]) for m in METHODS if result[f"{m}_s"] is not None]
    rows.insert(2, ("native: kernel only", result["kernel_s"], "#aec7e8"))  # after native
    gb = result["residue_bytes"] / 1e9
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(rows) + 1.6))
    bars = ax.barh([r[0] for r in rows], [r[1] for r in rows], color=[r[2] for r in rows])
    ax.invert_yaxis()
    for bar, (_, secs, _) in zip(bars, rows):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                f"  {secs:.3f} s, {gb / secs:.1f} GB/s", va="center", fontsize=9)
    seconds = [r[1] for r in rows]
    ax.set_xlim(0, max(seconds) * 1.45)
    ax.set_xlabel("seconds (minimum over runs; lower is better)")
    ax.set_title(_title(result), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- Dask scale-out (--dask-workers) ---------------------------------------------------------------


def _dask_cluster(workers: int, scratch: str) -> tuple[Any, Any]:
    """A LocalCluster of ``workers`` single-threaded processes that can import this he_agg, and its client."""
    import os
    from pathlib import Path

    from distributed import Client, LocalCluster

    import he_agg

    root = str(Path(he_agg.__file__).resolve().parent.parent)
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "DASK_TEMPORARY_DIRECTORY")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, saved["PYTHONPATH"]]))
    os.environ["DASK_TEMPORARY_DIRECTORY"] = scratch
    try:  # the worker processes inherit the environment when they start
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    client = Client(cluster)
    client.wait_for_workers(workers, timeout=300)
    return cluster, client


def _round_seconds(make: Callable[[], Any], blobs: Sequence[bytes], clients: int) -> tuple[float, float, bytes]:
    """One round: seconds adding ``clients`` uploads (renamed copies of ``blobs``, renaming untimed),
    seconds issuing the request (the sharded sums gathered), and the request's bytes."""
    import time

    from he_agg.bench.e2e import _renamed

    aggregator = make()
    adding = 0.0
    for k in range(clients):
        blob = _renamed(blobs[k % len(blobs)], k)
        start = time.perf_counter()
        aggregator.add(blob)
        adding += time.perf_counter() - start
        del blob
    start = time.perf_counter()
    request = aggregator.decryption_request()
    return adding, time.perf_counter() - start, request.to_bytes()


def run_dask(args: argparse.Namespace) -> dict[str, Any]:
    """A local Aggregator (1 summing thread and all) vs ShardedAggregator on 1 and on W Dask workers,
    side by side in one run, on the same public-key uploads; requests checked byte-identical."""
    import tempfile

    import he_agg
    from he_agg.dask import ShardedAggregator
    from he_agg.hazmat import kernels

    try:
        import distributed  # noqa: F401
    except ImportError:
        raise common.BenchError("--dask-workers needs dask: pip install he_agg[dask]") from None
    clients, values, workers = args.clients, args.values, args.dask_workers
    distinct = min(clients, 2)
    common.check_memory(_memory_needed(distinct + 2, values, AGGREGATION, "he_agg"), "lower --values")
    seed = args.seed if args.seed is not None else secrets.randbits(63)
    rng = np.random.default_rng(seed)
    runs: dict[str, list[tuple[float, float]]] = {}
    requests: dict[str, bytes] = {}
    with common.make_progress(common.progress_wanted(args.json)) as bar, \
            tempfile.TemporaryDirectory(prefix="he_agg-dask-") as scratch:
        committee = he_agg.Committee.dealer_free(3, 2, AGGREGATION)
        ctx = committee.public_context
        task = bar.add_task("encrypting (public-key)", total=distinct)
        blobs = []
        for i in range(distinct):
            blobs.append(he_agg.encrypt(ctx, rng.uniform(-1, 1, values), client_id=f"c{i}", round_id=1,
                                        max_clients=clients).to_bytes())
            bar.advance(task)
        configs = [("local_1t", 0), ("local", 0), ("dask_1", 1)] + ([(f"dask_{workers}", workers)] if workers > 1 else [])
        transports = [("", None)] + ([("_store", args.dask_store)] if args.dask_store else [])
        task = bar.add_task(f"summing {clients} uploads: local, 1 and {workers} Dask workers",
                            total=(2 + (len(configs) - 2) * len(transports)) * args.repeat)
        for name, n in configs:
            if n == 0:
                runs[name] = []
                threads = 1 if name == "local_1t" else kernels.thread_count()
                with kernels.use_threads(threads):
                    for _ in range(args.repeat):
                        add_s, req_s, requests[name] = _round_seconds(
                            lambda: he_agg.Aggregator(ctx, 1, retain=False), blobs, clients)
                        runs[name].append((add_s, req_s))
                        bar.advance(task)
                continue
            cluster, client = _dask_cluster(n, scratch)
            try:
                for suffix, store in transports:
                    def make(client: Any = client, store: Any = store) -> Any:
                        return ShardedAggregator(ctx, 1, client=client, retain=False, store=store)
                    _round_seconds(make, blobs, 1)  # warm-up: workers import he_agg
                    runs[name + suffix] = []
                    for _ in range(args.repeat):
                        add_s, req_s, requests[name + suffix] = _round_seconds(make, blobs, clients)
                        runs[name + suffix].append((add_s, req_s))
                        bar.advance(task)
            finally:
                client.close()
                cluster.close()
    return _dask_report(args, seed, runs, requests, len(blobs[0]), workers)


def _dask_report(args: argparse.Namespace, seed: int, runs: dict[str, list[tuple[float, float]]],
                 requests: dict[str, bytes], upload_bytes: int, workers: int) -> dict[str, Any]:
    """The flat result of ``--dask-workers``: per configuration, the best round (add + request)."""
    best = {name: min(runs[name], key=sum) for name in runs}
    total = {name: sum(best[name]) for name in best}
    gb = args.clients * upload_bytes / 1e9
    many = f"dask_{workers}" if workers > 1 else "dask_1"
    result: dict[str, Any] = {"clients": args.clients, "values": args.values, "dask_workers": workers,
                              "repeat": args.repeat, "seed": seed, "upload_bytes": upload_bytes}
    for name in best:
        result[f"{name}_s"] = total[name]
        result[f"{name}_add_s"] = best[name][0]
        result[f"{name}_request_s"] = best[name][1]
        result[f"{name}_gb_per_s"] = gb / total[name]
    if f"{many}_store" in total:
        result["dask_store_speedup"] = total["dask_1_store"] / total[f"{many}_store"]
        result["dask_store_vs_local_1t"] = total["local_1t"] / total[f"{many}_store"]
    result.update({
        "dask_speedup": total["dask_1"] / total[many],
        "dask_per_worker_gb_per_s": gb / total["dask_1"],
        "dask_vs_local_1t": total["local_1t"] / total[many],
        "requests_identical": len(set(requests.values())) == 1,
        "under_load_note": "wall-clock on a shared machine: other processes compete for the same cores",
        **common.machine_info(),
        "he_agg_version": common.he_agg_version(),
    })
    return result


def _plot_dask(result: dict[str, Any], path: str, plt: Any) -> None:
    """Seconds per configuration of ``--dask-workers``."""
    names = [k[:-2] for k in result if k.endswith("_s") and k.startswith(("local", "dask_"))
             and not k.endswith(("_add_s", "_request_s"))]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    ax.barh(names, [result[f"{n}_s"] for n in names], color="#1f77b4")
    ax.invert_yaxis()
    ax.set_xlabel("seconds per round (add every upload + issue the request)")
    ax.set_title(f"{result['clients']} clients x {result['values']:,} values: Dask speed-up "
                 f"{result['dask_speedup']:.2f}x", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
