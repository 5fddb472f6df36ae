"""Peak memory of the server summing K enrolled uploads read one by one from files.

Enrolled clients first write their uploads (bytes, as they would arrive) to files in a
temporary directory; nothing is measured then. A fresh Python process then opens an
:class:`~he_agg.aggregator.EnrolledAggregator`, reads the files one at a time, adds each
upload and closes the round (the decryption request hashes Σc0). It reports its resident
set size right before the aggregation (the baseline), the peak during it
(the kernel's high-water mark VmHWM, reset at the baseline — Linux ≥ 4.0; elsewhere
``resource.getrusage().ru_maxrss``, which on Linux also counts the image the process was
forked from, hence not used there), the time, and the ratio (peak − baseline) / one client's upload
bytes. The server holds the accumulator (one upload's residues, unpacked) plus the upload
being added: about 2x.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from he_agg.bench import common
from he_agg.bench.common import BenchError

__all__ = ["add_arguments", "measure_aggregation", "render", "run", "upload_bytes", "write_uploads"]

ROUND = 1
CONTEXT_FILE = "context.bin"
_PROGRESS = "upload"
_RESULT = "result "


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``he-agg bench memory``."""
    parser.add_argument("--clients", type=common.positive_int, default=50, metavar="K",
                        help="uploads summed (default: 50)")
    parser.add_argument("--values", type=common.positive_int, default=65536, metavar="V",
                        help="values per client (default: 65536)")
    parser.add_argument("--packing", choices=("slots", "dense"), default="slots",
                        help="slots (N/2 values per ciphertext) or dense (N per ciphertext: half the bytes)")
    parser.add_argument("--packed", action="store_true", help="residues packed to ⌈log2 q⌉ bits on the wire")
    parser.add_argument("--preset", choices=("enrolled", "compact"), default="enrolled",
                        help="parameter preset (default: enrolled)")
    parser.add_argument("--dir", default=None, metavar="PATH",
                        help="where the upload files are written (default: the system's temporary directory)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the plaintext values (never of keys)")


# -- writing the uploads (not measured) ---------------------------------------------------------


def _params(preset: str) -> Any:
    from he_agg.params import COMPACT, ENROLLED

    return COMPACT if preset == "compact" else ENROLLED


def upload_bytes(values: int, params: Any, packing: str, packed: bool) -> int:
    """The residue bytes of one upload (without its envelope header): what the server receives."""
    from he_agg.enrolled import ciphertext_count

    words = ciphertext_count(values, params, packing) * len(params.data_moduli) * params.n
    if not packed:
        return words * 8
    bits = sum(q.bit_length() for q in params.data_moduli) * ciphertext_count(values, params, packing) * params.n
    return -(-bits // 8)


def write_uploads(directory: Path, clients: int, values: int, *, packing: str = "slots", packed: bool = False,
                  preset: str = "enrolled", seed: int | None = None,
                  on_client: Callable[[], object] | None = None) -> dict[str, Any]:
    """Enroll ``clients`` clients with a (3, 2) committee and write each one's upload to ``directory``.

    Also writes the public context. Returns the upload size and the seconds it took.
    """
    import numpy as np

    from he_agg.member import EnrolledCommittee, EnrolledPolicy

    params = _params(preset)
    committee = EnrolledCommittee.generate(3, 2, params, policy=EnrolledPolicy(min_clients=2,
                                                                                max_clients=max(clients, 2)))
    (directory / CONTEXT_FILE).write_bytes(committee.context.to_bytes())
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    size = 0
    for k in range(clients):
        client = committee.client(f"client-{k:06d}")
        data = client.encrypt(rng.uniform(-1.0, 1.0, values), round_id=ROUND, packing=packing, packed=packed,
                              max_clients=max(clients, 2))
        (directory / f"upload-{k:06d}.bin").write_bytes(data)
        size = len(data)
        client.wipe()
        if on_client is not None:
            on_client()
    return {"file_bytes": size, "write_seconds": time.perf_counter() - start}


# -- the measured server, in a fresh process -------------------------------------------------------


def _status(field: str) -> int | None:
    """A size from /proc/self/status in bytes (``VmRSS``: now; ``VmHWM``: the high-water mark), if known."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _rss_now() -> int | None:
    return _status("VmRSS")


def _reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux ≥ 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _max_rss() -> int:
    """getrusage's ru_maxrss in bytes. On Linux it also counts the pre-exec image (the forked
    parent's high-water mark), so the worker prefers VmHWM, which the reset clears."""
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _worker(directory: str) -> None:
    """The server, run with ``python -c``: sum the uploads in ``directory``, print the figures as JSON."""
    import gc

    import numpy as np

    import he_agg.enrolled  # noqa: F401  (every module the aggregation uses is loaded before the baseline)
    import he_agg.hazmat.wire.packed  # noqa: F401
    from he_agg.aggregator import EnrolledAggregator
    from he_agg.context import EnrolledContext
    from he_agg.hazmat import kernels  # noqa: F401

    folder = Path(directory)
    context = EnrolledContext.from_bytes((folder / CONTEXT_FILE).read_bytes())
    paths = sorted(folder.glob("upload-*.bin"))
    np.zeros(1)
    gc.collect()
    reset = _reset_peak()
    baseline = _rss_now() or _max_rss()  # the current RSS: an upper bound on the increase even without a reset
    start = time.perf_counter()
    agg = EnrolledAggregator(context, ROUND, min_clients=1)
    for path in paths:
        data = path.read_bytes()
        agg.add(data)
        del data
        print(_PROGRESS, flush=True)
    request = agg.decryption_request()
    seconds = time.perf_counter() - start
    hwm = _status("VmHWM")
    peak = hwm if reset and hwm is not None else _max_rss()
    figures = {"baseline_rss": baseline, "peak_rss": peak, "peak_reset": reset,
               "ru_maxrss": _max_rss(),
               "aggregate_seconds": seconds, "summed": len(agg), "accumulator_bytes": int(agg._accumulator.sum.nbytes),
               "request_bytes": len(request.to_bytes())}
    print(_RESULT + json.dumps(figures), flush=True)


def measure_aggregation(directory: Path, on_upload: Callable[[], object] | None = None) -> dict[str, Any]:
    """Run :func:`_worker` on ``directory`` in a fresh interpreter; its figures."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    code = "import sys; from he_agg.bench.memory import _worker; _worker(sys.argv[1])"
    with subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        result: dict[str, Any] | None = None
        for line in proc.stdout:
            if line.startswith(_RESULT):
                result = json.loads(line[len(_RESULT):])
            elif line.strip() == _PROGRESS and on_upload is not None:
                on_upload()
        errors = proc.stderr.read()
    if proc.returncode != 0 or result is None:
        last = errors.strip().splitlines()[-1] if errors.strip() else f"exit code {proc.returncode}"
        raise BenchError(f"the measuring process failed: {last}")
    return result


# -- the command ------------------------------------------------------------------------------------


def _check_disk(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > 0.9 * free:
        raise BenchError(f"the upload files need about {needed / 1e9:.1f} GB and {folder} has {free / 1e9:.1f} GB "
                         "free; use --packing dense, --packed, fewer --clients or another --dir")


def run(args: argparse.Namespace) -> dict[str, Any]:
    params = _params(args.preset)
    residue_bytes = upload_bytes(args.values, params, args.packing, args.packed)
    parent = Path(args.dir) if args.dir else Path(tempfile.gettempdir())
    if not parent.is_dir():
        raise BenchError(f"--dir {parent}: not a directory")
    _check_disk(parent, args.clients * (residue_bytes + 4096))
    with tempfile.TemporaryDirectory(prefix="he_agg-memory-", dir=parent) as name, \
            common.make_progress(common.progress_wanted(args.json)) as progress:
        folder = Path(name)
        task = progress.add_task("clients write uploads", total=args.clients)
        written = write_uploads(folder, args.clients, args.values, packing=args.packing, packed=args.packed,
                                preset=args.preset, seed=args.seed, on_client=lambda: progress.advance(task))
        task = progress.add_task("server sums the files", total=args.clients)
        figures = measure_aggregation(folder, on_upload=lambda: progress.advance(task))
    above = max(0, figures["peak_rss"] - figures["baseline_rss"])
    return {
        "clients": args.clients, "values": args.values, "packing": args.packing, "packed": args.packed,
        "preset": args.preset, "upload_bytes": written["file_bytes"], "residue_bytes": residue_bytes,
        "accumulator_bytes": figures["accumulator_bytes"], "files_bytes": written["file_bytes"] * args.clients,
        "baseline_rss": figures["baseline_rss"], "peak_rss": figures["peak_rss"], "peak_above_baseline": above,
        "ratio": above / written["file_bytes"], "peak_reset": figures["peak_reset"],
        "aggregate_seconds": figures["aggregate_seconds"], "write_seconds": written["write_seconds"],
        "summed": figures["summed"], "machine": common.machine_info(),
    }


def render(result: dict[str, Any]) -> Any:
    from rich.table import Table

    mb = 1 << 20
    table = Table(title=f"server memory: {result['clients']} uploads × {result['values']} values "
                        f"({result['packing']}{', packed' if result['packed'] else ''}, {result['preset']})")
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    rows = [
        ("one upload", f"{result['upload_bytes'] / mb:,.1f} MiB"),
        ("accumulator (Σc0)", f"{result['accumulator_bytes'] / mb:,.1f} MiB"),
        ("baseline RSS", f"{result['baseline_rss'] / mb:,.1f} MiB"),
        ("peak RSS", f"{result['peak_rss'] / mb:,.1f} MiB"),
        ("peak above baseline", f"{result['peak_above_baseline'] / mb:,.1f} MiB"),
        ("peak / one upload", f"{result['ratio']:.2f}x"),
        ("aggregation time", f"{result['aggregate_seconds']:.2f} s"),
        ("throughput", f"{result['files_bytes'] / max(result['aggregate_seconds'], 1e-9) / 1e9:.2f} GB/s"),
        ("writing the files (not measured)", f"{result['write_seconds']:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
